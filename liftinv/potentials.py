r"""Potentials: terms on a network's input or output variables.

A potential is smooth (``value``, ``grad``, ``lipschitz``) or proximable (``value``, ``prox``).
Values are per sample, shape ``(B,)``; a potential never sees a network.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _per_sample(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


def _check_weight(weight: float, name: str = "weight") -> float:
    weight = float(weight)
    if not weight >= 0 or weight == float("inf"):
        raise ValueError(f"{name} must be a finite non-negative number, got {weight}")
    return weight


class Potential:
    """Base class: ``smooth`` potentials implement :meth:`grad` and :meth:`lipschitz`, the
    others :meth:`prox`."""

    smooth: bool = True

    def value(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def grad(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} is not smooth")

    def lipschitz(self) -> float:
        raise NotImplementedError(f"{type(self).__name__} is not smooth")

    def prox(self, x: Tensor, step: float) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no prox")


class SquaredError(Potential):
    r""":math:`T(x) = \tfrac{w}{2}\|x - t\|^2` for a fixed target :math:`t`."""

    def __init__(self, target: Tensor, weight: float = 1.0):
        self.target = target
        self.weight = _check_weight(weight)

    def value(self, x: Tensor) -> Tensor:
        return 0.5 * self.weight * _per_sample((x - self.target) ** 2)

    def grad(self, x: Tensor) -> Tensor:
        return self.weight * (x - self.target)

    def lipschitz(self) -> float:
        return self.weight


class Tikhonov(Potential):
    r""":math:`T(x) = \tfrac{w}{2}\|x\|^2`."""

    def __init__(self, weight: float):
        self.weight = _check_weight(weight)

    def value(self, x: Tensor) -> Tensor:
        return 0.5 * self.weight * _per_sample(x**2)

    def grad(self, x: Tensor) -> Tensor:
        return self.weight * x

    def lipschitz(self) -> float:
        return self.weight


class L1(Potential):
    r""":math:`T(x) = w\|x\|_1`, prox :math:`S_{\gamma w}` (soft-thresholding)."""

    smooth = False

    def __init__(self, weight: float):
        self.weight = _check_weight(weight)

    def value(self, x: Tensor) -> Tensor:
        return self.weight * _per_sample(x.abs())

    def prox(self, x: Tensor, step: float) -> Tensor:
        t = step * self.weight
        return torch.sign(x) * torch.clamp(x.abs() - t, min=0)


class Box(Potential):
    r""":math:`T(x) = \iota_{[lo, hi]}(x)` (0 inside, :math:`+\infty` outside); prox = clamp."""

    smooth = False

    def __init__(self, lo: float = 0.0, hi: float = 1.0):
        if not lo < hi:
            raise ValueError(f"Box needs lo < hi, got lo={lo}, hi={hi}")
        self.lo, self.hi = float(lo), float(hi)

    def value(self, x: Tensor) -> Tensor:
        inside = ((x >= self.lo) & (x <= self.hi)).reshape(x.shape[0], -1).all(1)
        return torch.where(inside, 0.0, float("inf")).to(x.dtype)

    def prox(self, x: Tensor, step: float) -> Tensor:
        return x.clamp(self.lo, self.hi)
