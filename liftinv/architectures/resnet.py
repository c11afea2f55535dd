r"""Residual network in lifted form.

A block is :math:`u_j = u_{j-1} + V_j\,\sigma(W_j u_{j-1} + b_j)`. It is lifted with two
variables: :math:`z_j = \sigma(W_j u_{j-1} + b_j)` (a layer with the activation, Bregman penalty
:math:`\lambda B_\Psi(z_j, W_j u_{j-1} + b_j)`) and :math:`u_j = u_{j-1} + V_j z_j` (a layer with
the identity activation and weight :math:`\rho`, whose Bregman penalty is the quadratic penalty
:math:`\tfrac\rho2\|u_j - u_{j-1} - V_j z_j\|^2`). With ``tied=True``, :math:`V_j = W_j^\top`
and each block :math:`u \mapsto u + W^\top\sigma(Wu + b)` is monotone.

With ``residual="exact"`` the residual relations hold exactly: the stream is eliminated,
:math:`u_{j-1} = u_0 + \sum_{i<j} V_i z_i` with :math:`u_0 = Px + p` (or :math:`x`), so the
variables are the input, :math:`z_1, \dots, z_J` and the output, and layer :math:`j` reads the
input and every earlier :math:`z_i`:

.. math:: z_j = \sigma\Big(W_j P x + W_j p + b_j + \sum_{i<j} W_j V_i z_i\Big),

then the output :math:`Q(u_0 + \sum_i V_i z_i) + q` (identity activation, weight :math:`\rho`).
The lifted problem then couples the output directly to every :math:`z_i` and to the input, where
the penalised chain passes information one layer per sweep and relaxes the network (inverting
the benchmark ResNet, ``python -m liftinv.bench inversion``, at a fixed TV weight and equal time:
higher PSNR and a discrepancy nearer the noise level with the exact form). Each map is a
:class:`~liftinv.affine.Chain` of two convolutions (or dense maps), so one sweep applies more
maps than the penalised chain does. :meth:`ResNet.with_residual` gives one form from the other,
sharing the parameters.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from liftinv.activations import Identity
from liftinv.affine import Chain, Transposed, Unbiased
from liftinv.architectures._common import check_channels, init_parameters_, odd_int, positive_float, positive_int
from liftinv.layer import Layer
from liftinv.network import LiftedNetwork
from liftinv.validation import check_flag


class ResNet(LiftedNetwork):
    r"""Residual network :math:`u_j = u_{j-1} + V_j\sigma(W_j u_{j-1} + b_j)`, :math:`j = 1..`
    ``depth``, optionally preceded by :math:`u_0 = P x + p` and followed by :math:`Q u_J + q`
    (identity-activation layers of weight :math:`\rho`).

    Dense maps on ``(B, n)`` tensors, or with ``kernel_size`` 'same'-padded convolutions on
    ``(B, C, H, W)`` tensors (then widths count channels). Variables: the input, then
    :math:`u_0` if ``in_features`` is set, then :math:`z_1, u_1, \dots, z_J, u_J`, then the output
    if ``out_features`` is set; with ``residual="exact"``: the input, :math:`z_1, \dots, z_J` and
    the output (:math:`Q u_J + q`, or :math:`u_J`).

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
        residual: ``"penalty"``: the residual relations (and :math:`P`) are layers with the
            quadratic penalty; ``"exact"``: they are eliminated (see the module docstring), only
            the output layer has the identity activation.
        generator: seeds the initialisation (the same network for either ``residual``);
            ``None`` keeps PyTorch's.
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
        residual: str = "penalty",
        generator: torch.Generator | None = None,
    ):
        width, depth = positive_int("width", width), positive_int("depth", depth)
        rho = positive_float("rho", rho)
        _check_residual(residual)
        k = None if kernel_size is None else odd_int("kernel_size", kernel_size)
        tied = check_flag("tied", tied)

        def affine(n_in: int, n_out: int, bias: bool = True) -> nn.Module:
            if k is None:
                return nn.Linear(n_in, n_out, bias=bias)
            return nn.Conv2d(n_in, n_out, k, padding=k // 2, bias=bias)

        p = None if in_features is None else affine(positive_int("in_features", in_features), width)
        ws = [affine(width, width) for _ in range(depth)]
        vs = [Transposed(w) if tied else affine(width, width, bias=False) for w in ws]
        q = None if out_features is None else affine(width, positive_int("out_features", out_features))
        parts = (p, tuple(ws), tuple(vs), q, activation, weight, rho)
        n_in = width if in_features is None else in_features
        super().__init__(_layers(residual, *parts), input_shape=(n_in,) if kernel_size is None else None)
        # drawn in the order P, W_1, V_1, ..., W_J, V_J, Q whatever the form, so one generator
        # gives one network in both forms (the exact form's layers hold the maps in another order)
        blocks = [m for w, v in zip(ws, vs) for m in (w, v)]
        init_parameters_(nn.ModuleList([m for m in (p, *blocks, q) if m is not None]), generator)
        self._parts = parts  # not registered: the layers hold the modules
        self.tied = tied
        self.residual = residual
        self.in_channels = None if kernel_size is None else n_in

    def with_residual(self, residual: str) -> ResNet:
        """This network lifted with ``residual`` (``"penalty"`` or ``"exact"``), sharing its
        parameters: e.g. to invert, in the exact form, a network trained in the penalised one.
        The penalty weights are those given at construction."""
        _check_residual(residual)
        other = ResNet.__new__(ResNet)
        LiftedNetwork.__init__(other, _layers(residual, *self._parts), input_shape=self.input_shape)
        other._parts, other.tied, other.residual, other.in_channels = self._parts, self.tied, residual, self.in_channels
        return other

    def check_input(self, u: Tensor, name: str = "u") -> None:
        """Validate an input batch: as :class:`LiftedNetwork`; convolutional networks also need
        shape ``(B, in_channels, H, W)``."""
        super().check_input(u, name)
        if self.in_channels is not None:
            check_channels(u, self.in_channels, name)


def _check_residual(residual: object) -> None:
    if residual not in ("penalty", "exact"):
        raise ValueError(f"residual must be 'penalty' or 'exact', got {residual!r}")


def _layers(residual: str, *parts) -> list[Layer]:
    return (_exact_layers if residual == "exact" else _penalty_layers)(*parts)


def _penalty_layers(p, ws, vs, q, activation, weight: float, rho: float) -> list[Layer]:
    """Variables ``x, [u_0], z_1, u_1, ..., z_J, u_J, [out]``: every relation a layer."""
    layers, u = [], 0
    if p is not None:
        layers.append(Layer([0], [p], Identity(), weight=rho))
        u = 1
    for w, v in zip(ws, vs):
        layers.append(Layer([u], [w], activation, weight=weight))
        layers.append(Layer([u, len(layers)], [nn.Identity(), v], Identity(), weight=rho))
        u = len(layers)
    if q is not None:
        layers.append(Layer([u], [q], Identity(), weight=rho))
    return layers


def _exact_layers(p, ws, vs, q, activation, weight: float, rho: float) -> list[Layer]:
    r"""Variables ``x, z_1, ..., z_J, out``: layer :math:`j` applies :math:`M` (the next
    :math:`W_j`, or :math:`Q`, with its bias on the input's map only) to the stream
    :math:`u_{j-1} = P x + p + \sum_{i<j} V_i z_i` term by term."""

    def reading_stream(m: nn.Module | None, inputs: int) -> list[nn.Module]:
        first = p if m is None else (m if p is None else Chain(p, m))
        rest = vs[:inputs - 1] if m is None else [Chain(v, Unbiased(m)) for v in vs[:inputs - 1]]
        return [nn.Identity() if first is None else first, *rest]

    layers = [Layer(range(j + 1), reading_stream(w, j + 1), activation, weight=weight) for j, w in enumerate(ws)]
    layers.append(Layer(range(len(ws) + 1), reading_stream(q, len(ws) + 1), Identity(), weight=rho))
    return layers
