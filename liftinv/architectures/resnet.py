r"""Residual network in lifted form.

A block is :math:`u_j = u_{j-1} + V_j\,\sigma(W_j u_{j-1} + b_j)`. It is lifted with two
variables: :math:`z_j = \sigma(W_j u_{j-1} + b_j)` (a layer with the activation, Bregman penalty
:math:`\lambda B_\Psi(z_j, W_j u_{j-1} + b_j)`) and :math:`u_j = u_{j-1} + V_j z_j` (a layer with
the identity activation and weight :math:`\rho`, whose Bregman penalty is the quadratic penalty
:math:`\tfrac\rho2\|u_j - u_{j-1} - V_j z_j\|^2`). With ``tied=True``, :math:`V_j = W_j^\top`
and each block :math:`u \mapsto u + W^\top\sigma(Wu + b)` is monotone.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from liftinv.activations import Identity
from liftinv.affine import conv_adjoint
from liftinv.architectures._common import check_channels, init_parameters_, odd_int, positive_float, positive_int
from liftinv.layer import Layer
from liftinv.network import LiftedNetwork


class Transposed(nn.Module):
    r""":math:`x \mapsto W^\top x`: the adjoint of the linear part of ``module`` (an ``nn.Linear``,
    or an ``nn.Conv2d`` with stride 1 and padding ``kernel // 2``), sharing its weight; the bias
    is not used."""

    def __init__(self, module: nn.Linear | nn.Conv2d):
        super().__init__()
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"module must be an nn.Linear or nn.Conv2d, got {type(module).__name__}")
        if isinstance(module, nn.Conv2d) and (
            module.stride != (1, 1) or module.padding != tuple(k // 2 for k in module.kernel_size)
        ):
            raise ValueError(f"module must be a stride-1 conv with padding kernel // 2, got {module}")
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.module, nn.Linear):
            return x @ self.module.weight
        return conv_adjoint(x, self.module.weight, self.module.padding)


class ResNet(LiftedNetwork):
    r"""Residual network :math:`u_j = u_{j-1} + V_j\sigma(W_j u_{j-1} + b_j)`, :math:`j = 1..`
    ``depth``, optionally preceded by :math:`u_0 = P x + p` and followed by :math:`Q u_J + q`
    (identity-activation layers of weight :math:`\rho`).

    Dense maps on ``(B, n)`` tensors, or with ``kernel_size`` 'same'-padded convolutions on
    ``(B, C, H, W)`` tensors (then widths count channels). Variables: the input, then
    :math:`u_0` if ``in_features`` is set, then :math:`z_1, u_1, \dots, z_J, u_J`, then the output
    if ``out_features`` is set.

    Args:
        width: width (channels) :math:`n` of :math:`u_j` and :math:`z_j`.
        depth: number of blocks :math:`J`.
        activation: :math:`\sigma` (a proximal activation, shared by all blocks).
        in_features: input width of :math:`P`; ``None``: no input map, inputs have ``width``.
        out_features: output width of :math:`Q`; ``None``: no output map.
        kernel_size: odd kernel size for a convolutional network; ``None``: dense.
        tied: :math:`V_j = W_j^\top` (shared weight) instead of a free bias-free :math:`V_j`.
        weight: penalty weight :math:`\lambda` of the :math:`z_j` layers.
        rho: penalty weight :math:`\rho` of the linear (identity-activation) layers.
        generator: seeds the initialisation; ``None`` keeps PyTorch's.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        activation: nn.Module,
        *,
        in_features: int | None = None,
        out_features: int | None = None,
        kernel_size: int | None = None,
        tied: bool = False,
        weight: float = 1.0,
        rho: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        width, depth = positive_int("width", width), positive_int("depth", depth)
        rho = positive_float("rho", rho)
        k = None if kernel_size is None else odd_int("kernel_size", kernel_size)

        def affine(n_in: int, n_out: int, bias: bool = True) -> nn.Module:
            if k is None:
                return nn.Linear(n_in, n_out, bias=bias)
            return nn.Conv2d(n_in, n_out, k, padding=k // 2, bias=bias)

        layers, u = [], 0
        if in_features is not None:
            layers.append(Layer([0], [affine(positive_int("in_features", in_features), width)], Identity(), weight=rho))
            u = 1
        for _ in range(depth):
            w = affine(width, width)
            layers.append(Layer([u], [w], activation, weight=weight))
            v = Transposed(w) if tied else affine(width, width, bias=False)
            layers.append(Layer([u, len(layers)], [nn.Identity(), v], Identity(), weight=rho))
            u = len(layers)
        if out_features is not None:
            layers.append(Layer([u], [affine(width, positive_int("out_features", out_features))], Identity(), weight=rho))
        n_in = width if in_features is None else in_features
        super().__init__(layers, input_shape=(n_in,) if kernel_size is None else None)
        init_parameters_(self, generator)
        self.tied = bool(tied)
        self.in_channels = None if kernel_size is None else n_in

    def check_input(self, u: Tensor, name: str = "u") -> None:
        """Validate an input batch: as :class:`LiftedNetwork`; convolutional networks also need
        shape ``(B, in_channels, H, W)``."""
        super().check_input(u, name)
        if self.in_channels is not None:
            check_channels(u, self.in_channels, name)
