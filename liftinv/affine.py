r"""Affine maps that feed a layer's activation.

A layer's pre-activation is :math:`a = \sum_j M_j x_{i_j} + c(y)`: each :math:`M_j` is an affine
``nn.Module`` (``nn.Linear``, ``nn.Conv2d``, ``nn.ConvTranspose2d``, chains of them with
``nn.Flatten``/``nn.Unflatten``, or the maps below) and :math:`c(y)` an optional affine map of the
measurements. Adjoints and parameter gradients are taken by autograd through one map at a time
(exact, since the maps are affine), so any affine module is admissible.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ScaledConv(nn.Module):
    r""":math:`x \mapsto s\,Lx` for a bias-free ``nn.Conv2d`` :math:`L` (shared, not copied) and a
    fixed scalar :math:`s`, computed as the convolution with the weight :math:`sW` (the scale
    touches the kernel, not the feature maps)."""

    def __init__(self, conv: nn.Conv2d, scale: float = 1.0):
        super().__init__()
        if conv.bias is not None:
            raise ValueError("conv must be a bias-free nn.Conv2d")
        self.conv = conv
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        return F.conv2d(x, self.scale * c.weight, None, c.stride, c.padding, c.dilation, c.groups)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class ConvAdjoint(nn.Module):
    r""":math:`L^*`: the transposed convolution sharing the weight of ``conv`` (a bias-free
    ``nn.Conv2d`` with ``padding = kernel // 2``, stride 1), times an optional fixed ``scale``
    (applied to the kernel)."""

    def __init__(self, conv: nn.Conv2d, scale: float = 1.0):
        super().__init__()
        if conv.bias is not None or conv.stride != (1, 1):
            raise ValueError("conv must be a bias-free stride-1 nn.Conv2d to have a transpose")
        self.conv = conv
        self.scale = float(scale)

    def forward(self, u: Tensor) -> Tensor:
        return F.conv_transpose2d(u, self.scale * self.conv.weight, padding=self.conv.padding)


class NormalStep(nn.Module):
    r""":math:`u \mapsto u - \tau L L^* u` for a convolution :math:`L` (dual forward-backward step
    of a proximal neural network); :math:`\tau` is a fixed step."""

    def __init__(self, conv: nn.Conv2d, tau: float):
        super().__init__()
        self.adjoint = ConvAdjoint(conv)
        self.step = ScaledConv(conv, -float(tau))
        self.tau = float(tau)

    def forward(self, u: Tensor) -> Tensor:
        return u + self.step(self.adjoint(u))


class GradientStep(nn.Module):
    r"""Linear part :math:`x \mapsto x - \tau A^*A x` of the gradient step
    :math:`x - \tau A^*(Ax - y)` on :math:`\tfrac12\|Ax-y\|^2`; its data part is
    :class:`MeasurementAdjoint` (:math:`\tau A^* y`). ``tau`` may be learnable."""

    def __init__(self, physics, tau: float, learnable: bool = False):
        super().__init__()
        self.bind(physics)
        self.tau = nn.Parameter(torch.tensor(float(tau)), requires_grad=learnable)

    def bind(self, physics) -> None:
        """Use ``physics`` from now on. It is held by reference, not registered as a submodule,
        so checkpoints stay small and one physics can serve many steps."""
        self.__dict__["physics"] = physics

    def forward(self, x: Tensor) -> Tensor:
        return x - self.tau * self.physics.A_adjoint(self.physics.A(x))


class MeasurementAdjoint(nn.Module):
    r""":math:`y \mapsto \tau A^* y`, sharing :math:`\tau` with a :class:`GradientStep`."""

    def __init__(self, step: GradientStep):
        super().__init__()
        self.step = step

    def forward(self, y: Tensor) -> Tensor:
        return self.step.tau * self.step.physics.A_adjoint(y)


def linear_part(module: nn.Module, x: Tensor) -> Tensor:
    r"""Apply the linear part of an affine ``module``: :math:`Mx = f(x) - f(0)`."""
    return module(x) - module(torch.zeros_like(x))
