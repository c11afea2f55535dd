r"""Proximal neural network: the unrolled dual forward-backward denoiser.

For :math:`x = \arg\min_x \tfrac12\|x - z\|^2 + \lambda\|Lx\|_1` the dual iteration is
:math:`u_{k+1} = \operatorname{clip}_{[-\lambda,\lambda]}(u_k - \tau L(L^* u_k - z))` and the primal
solution :math:`x = z - L^* u`. Unrolled with one learnable convolution :math:`L_k` per step
(Hasannasab et al., *Parseval proximal neural networks*, 2020), each step is a layer with weight
:math:`I - \tau L_k L_k^*` on :math:`u_{k-1}`, data-dependent bias :math:`\tau L_k z` and the clip
activation (:math:`\operatorname{prox}_{\tau g^*}` for :math:`g = \lambda\|\cdot\|_1`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from liftinv.activations import Clip, Identity
from liftinv.affine import ConvAdjoint, NormalStep, ScaledConv
from liftinv.architectures._common import check_channels, normalised_conv, odd_int, positive_float, positive_int
from liftinv.layer import Layer
from liftinv.network import LiftedNetwork


class ProximalNeuralNetwork(LiftedNetwork):
    r"""Unrolled dual forward-backward denoiser :math:`z \mapsto x` on ``(B, C, H, W)`` images.

    With :math:`u_0 = 0` and bias-free 'same'-padded convolutions :math:`L_1..L_K`
    (``channels`` -> ``features``):

    .. math::
        u_k = \operatorname{clip}_{[-\lambda,\lambda]}\big(u_{k-1} - \tau L_k(L_k^* u_{k-1} - z)\big),
        \quad k = 1..K, \qquad x = z - L_K^* u_K.

    Variables: :math:`z` (input), :math:`u_1..u_K`, :math:`x` (identity-activation layer reading
    :math:`z` and :math:`u_K`). The first layer reads only :math:`z` (:math:`u_0 = 0`). The
    convolutions start with :math:`\|L_k\| = 1` (see ``conv_norm``), so the default
    :math:`\tau = 1/1.01` satisfies :math:`\tau \le 1/\|L_k\|^2` at initialisation.

    Args:
        channels: image channels :math:`C`.
        features: channels of :math:`L_k z` (the dual variables).
        n_layers: number of dual steps :math:`K`.
        kernel_size: odd kernel size of the :math:`L_k`.
        threshold: :math:`\lambda > 0`.
        tau: dual step :math:`\tau > 0`; ``None`` gives :math:`1/1.01`.
        generator: seeds the initialisation; ``None`` uses PyTorch's global generator.
    """

    def __init__(
        self,
        channels: int,
        features: int,
        n_layers: int,
        kernel_size: int = 3,
        threshold: float = 0.1,
        tau: float | None = None,
        *,
        generator: torch.Generator | None = None,
    ):
        channels, features = positive_int("channels", channels), positive_int("features", features)
        n_layers, kernel_size = positive_int("n_layers", n_layers), odd_int("kernel_size", kernel_size)
        threshold = positive_float("threshold", threshold)
        tau = 1 / 1.01 if tau is None else positive_float("tau", tau)
        convs = [normalised_conv(channels, features, kernel_size, generator) for _ in range(n_layers)]
        layers = [Layer([0], [ScaledConv(convs[0], tau)], Clip(-threshold, threshold))]
        for k in range(1, n_layers):
            maps = [NormalStep(convs[k], tau), ScaledConv(convs[k], tau)]
            layers.append(Layer([k, 0], maps, Clip(-threshold, threshold)))
        layers.append(Layer([0, n_layers], [nn.Identity(), ConvAdjoint(convs[-1], -1.0)], Identity()))
        super().__init__(layers)
        self.channels, self.threshold, self.tau = channels, threshold, tau

    def check_input(self, u: Tensor, name: str = "u") -> None:
        """Validate an input batch: as :class:`LiftedNetwork`, of shape ``(B, channels, H, W)``."""
        super().check_input(u, name)
        check_channels(u, self.channels, name)
