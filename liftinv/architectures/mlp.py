r"""Multilayer perceptron in lifted form: :math:`x_k = \sigma_k(W_k x_{k-1} + b_k)`, one penalty
per layer."""
from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from liftinv.activations import Identity
from liftinv.architectures._common import init_parameters_, positive_int
from liftinv.layer import Layer, is_module_sequence
from liftinv.network import LiftedNetwork


class MLP(LiftedNetwork):
    r"""Dense network on ``(B, sizes[0])`` inputs,
    :math:`x_k = \sigma_k(W_k x_{k-1} + b_k)`, :math:`k = 1..L` with :math:`L` = ``len(sizes) - 1``
    and ``nn.Linear(sizes[k-1], sizes[k])`` maps.

    Args:
        sizes: widths :math:`(n_0, \dots, n_L)`, at least two.
        activations: the hidden activations :math:`\sigma_1..\sigma_{L-1}`, one for all or one
            per hidden layer in a sequence (also an ``nn.ModuleList``; proximal activations, or
            torch ones accepted by ``as_activation``).
        weights: penalty weights :math:`\lambda_k`, one for all or one per layer (numbers, or a
            tensor or array of them).
        output_activation: :math:`\sigma_L`; ``None`` means the identity.
        generator: seeds the initialisation (see ``init_parameters_``); ``None`` keeps PyTorch's.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activations: nn.Module | Sequence[nn.Module],
        weights: float | Sequence[float] = 1.0,
        output_activation: nn.Module | None = None,
        *,
        generator: torch.Generator | None = None,
    ):
        if not isinstance(sizes, Iterable):
            raise TypeError(f"sizes must be a sequence of widths (n_0, ..., n_L), got {sizes!r}")
        sizes = [positive_int(f"sizes[{i}]", s) for i, s in enumerate(sizes)]
        n = len(sizes) - 1
        if n < 1:
            raise ValueError(f"sizes must hold at least two widths, got {sizes}")
        if not isinstance(activations, (nn.Module, Sequence)) or isinstance(activations, str):
            raise TypeError(f"activations must be an activation module or a sequence of {n - 1}, got {activations!r}")
        one = isinstance(activations, nn.Module) and not is_module_sequence(activations)  # not an nn.ModuleList
        hidden = [activations] * (n - 1) if one else list(activations)
        if len(hidden) != n - 1:
            raise ValueError(f"activations must hold {n - 1} hidden activations, got {len(hidden)}")
        if isinstance(weights, (torch.Tensor, np.ndarray)):  # the weights as an array: their values
            weights = weights.tolist()
        if isinstance(weights, (str, bytes)) or not isinstance(weights, (numbers.Real, Sequence)):
            raise TypeError(f"weights must be a number or a sequence of {n} numbers, got {weights!r}")
        weights = [weights] * n if isinstance(weights, numbers.Real) else list(weights)
        if len(weights) != n:
            raise ValueError(f"weights must hold {n} penalty weights, got {len(weights)}")
        acts = hidden + [Identity() if output_activation is None else output_activation]
        layers = [
            Layer([k - 1], [nn.Linear(sizes[k - 1], sizes[k])], acts[k - 1], weight=weights[k - 1])
            for k in range(1, n + 1)
        ]
        super().__init__(layers, input_shape=(sizes[0],))
        init_parameters_(self, generator)
        self.sizes = tuple(sizes)
