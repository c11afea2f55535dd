r"""Piecewise-linear proximal activations: identity, ReLU, leaky ReLU, soft-threshold, clip.

Their envelopes and Bregman divergences use the generic forms of
:class:`~liftinv.activations.base.Activation`, which are exact here (leaky ReLU and
soft-threshold compute the divergence by nonnegative closed forms, free of cancellation):

========================  =====================================  ======================================
:math:`\sigma(a)`          :math:`\Psi(u)`                         :math:`\operatorname{env}_\Psi(a)`
========================  =====================================  ======================================
:math:`a`                  :math:`0`                               :math:`0`
:math:`\max(a, 0)`         :math:`\iota_{[0,\infty)}(u)`           :math:`\tfrac12\min(a,0)^2`
:math:`\max(a, ca)`        :math:`\tfrac{1-c}{2c}\min(u,0)^2`      :math:`\tfrac{1-c}{2}\min(a,0)^2`
:math:`S_t(a)`             :math:`t|u|`                            :math:`\mathrm{huber}_t(a)`
:math:`\mathrm{clip}(a)`   :math:`\iota_{[lo,hi]}(u)`              :math:`\tfrac12(a-\mathrm{clip}(a))^2`
========================  =====================================  ======================================
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from liftinv.validation import box_bounds, check_fits_dtype

from .base import Activation, Gamma, check_step, checked_hparam, real_hparam


def _indicator(mask: Tensor, like: Tensor) -> Tensor:
    """0 where ``mask`` holds, ``inf`` elsewhere, in the dtype of ``like``."""
    zero = torch.zeros((), dtype=like.dtype, device=like.device)
    return torch.where(mask, zero, torch.inf)


class Identity(Activation):
    r""":math:`\sigma(a) = a`, :math:`\Psi = 0`, :math:`B_\Psi(z, a) = \tfrac12(z-a)^2`."""

    def psi(self, z: Tensor) -> Tensor:
        return torch.zeros_like(z)

    def prox(self, v: Tensor, gamma: Gamma = 1.0) -> Tensor:
        check_step("gamma", gamma)
        return v

    def prox_phi_(self, v: Tensor, mu: Gamma) -> Tensor:
        check_step("mu", mu)
        return v.div_(1 + mu)

    def forward_(self, a: Tensor) -> Tensor:
        return a


class ReLU(Activation):
    r""":math:`\sigma(a) = \max(a, 0)`, :math:`\Psi = \iota_{[0,\infty)}`,
    :math:`B_\Psi(z, a) = \tfrac12(z - \sigma(a))^2 + z\max(-a, 0)` for :math:`z \ge 0`."""

    def psi(self, z: Tensor) -> Tensor:
        return _indicator(self.in_domain(z), z)

    def prox(self, v: Tensor, gamma: Gamma = 1.0) -> Tensor:
        check_step("gamma", gamma)
        return torch.relu(v)

    def prox_phi_(self, v: Tensor, mu: Gamma) -> Tensor:
        check_step("mu", mu)
        return v.div_(1 + mu).clamp_min_(0)

    def forward_(self, a: Tensor) -> Tensor:
        return a.clamp_min_(0)

    def in_domain(self, z: Tensor) -> Tensor:
        return z >= 0

    def project_domain(self, z: Tensor) -> Tensor:
        return z.clamp_min(0)

    def saturation(self) -> tuple[float, ...]:
        return (0.0,)


class LeakyReLU(Activation):
    r""":math:`\sigma(a) = \max(a, c\,a)` with slope :math:`0 < c < 1`,
    :math:`\Psi(u) = \tfrac{1-c}{2c}\min(u, 0)^2`,
    :math:`\operatorname{prox}_{\gamma\Psi}(v) = v` for :math:`v \ge 0`, else
    :math:`v / (1 + \gamma\tfrac{1-c}{c})`.

    Args:
        slope: the negative slope :math:`c \in (0, 1)` (also checked when assigned later). In a
            tensor's dtype it must be at least ``torch.finfo(dtype).tiny`` (a ``ValueError`` naming
            ``slope`` and the dtype at every computation otherwise): a smaller :math:`c` is a
            subnormal number there, rounded (``F.leaky_relu`` then scales by a slope up to twice
            off), and :math:`k = (1-c)/c` overflows to Inf (NaN where :math:`\min(z, 0) = 0`).
    """

    slope = checked_hparam("slope", lambda c: 0 < c < 1, "in (0, 1)", r"The negative slope :math:`c`.")

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.slope = slope

    def _check_dtype(self, x: Tensor) -> None:
        """A ``ValueError`` naming ``slope`` if it is below the smallest normal number of ``x``'s dtype."""
        tiny = torch.finfo(x.dtype).tiny
        if self.slope < tiny:
            raise ValueError(f"slope = {self.slope!r} is below the smallest normal number of {x.dtype} ({tiny:.3g}): "
                             f"the slope c and k = (1 - c)/c cannot be computed in it (use a larger slope or a wider "
                             f"dtype)")

    @property
    def _k(self) -> float:
        """k = (1 - c)/c of the current ``slope`` (Psi and the divergence follow a slope set after
        construction, as the forward pass and the prox do)."""
        return (1 - self.slope) / self.slope

    def psi(self, z: Tensor) -> Tensor:
        self._check_dtype(z)
        return 0.5 * self._k * z.clamp_max(0) ** 2

    def prox(self, v: Tensor, gamma: Gamma = 1.0) -> Tensor:
        check_step("gamma", gamma)
        self._check_dtype(v)
        # v / (1 + gamma k) written so that gamma = 1 gives exactly slope * v
        return torch.where(v >= 0, v, v * (self.slope / (self.slope + gamma * (1 - self.slope))))

    def forward(self, a: Tensor) -> Tensor:
        self._check_dtype(a)
        return F.leaky_relu(a, self.slope)

    def divergence(self, z: Tensor, a: Tensor) -> Tensor:
        r"""Nonnegative closed form, with :math:`s = \sigma(a)` and :math:`k = (1-c)/c`:
        :math:`\tfrac12(z-s)^2 + \tfrac k2(\min(z,0) - \min(s,0))^2 + k\max(-s,0)\max(z,0)`."""
        s = self(a)
        return (
            0.5 * (z - s) ** 2
            + 0.5 * self._k * (z.clamp_max(0) - s.clamp_max(0)) ** 2
            + self._k * torch.relu(-s) * torch.relu(z)
        )

    def hparams(self) -> dict[str, float]:
        return {"slope": self.slope}


class SoftThreshold(Activation):
    r""":math:`\sigma(a) = S_t(a) = \operatorname{sign}(a)\max(|a| - t, 0)`, :math:`\Psi = t|\cdot|`,
    :math:`\operatorname{env}_\Psi = \mathrm{huber}_t`.

    Args:
        threshold: :math:`t > 0` (also checked when assigned later); the computations refuse a
            :math:`t` above the largest number of the tensor's dtype (``ValueError``: in float32
            :math:`t = 10^{39}` is Inf, :math:`\Psi(0) = \infty \cdot 0` NaN and the divergence's
            :math:`\mathrm{clip}(a, -t, t)` fails).
    """

    threshold = checked_hparam("threshold", lambda t: t > 0, "positive", r"The threshold :math:`t`.")

    def __init__(self, threshold: float = 0.1) -> None:
        super().__init__()
        self.threshold = threshold

    def _check_dtype(self, x: Tensor) -> None:
        """A ``ValueError`` naming ``threshold`` if it is above the largest number of ``x``'s dtype."""
        check_fits_dtype("threshold", self.threshold, x.dtype, "the tensor", "use a smaller threshold or a wider dtype")

    def psi(self, z: Tensor) -> Tensor:
        self._check_dtype(z)
        return self.threshold * z.abs()

    def divergence(self, z: Tensor, a: Tensor) -> Tensor:
        r"""Nonnegative closed form, with :math:`s = S_t(a)` and :math:`a - s = \mathrm{clip}(a, -t, t)`:
        :math:`\tfrac12(z - s)^2 + |z|\,\big(t - \operatorname{sign}(z)\,\mathrm{clip}(a, -t, t)\big)`,
        both terms :math:`\ge 0` (the generic three-point form's :math:`t|z| - t|s|` and
        :math:`(a - s)(z - s)` cancel: in float32 it was negative near :math:`z = s`)."""
        t = self.threshold
        return 0.5 * (z - self(a)) ** 2 + z.abs() * (t - z.sign() * a.clamp(-t, t))

    def prox(self, v: Tensor, gamma: Gamma = 1.0) -> Tensor:
        check_step("gamma", gamma)
        self._check_dtype(v)
        return v.sign() * torch.relu(v.abs() - gamma * self.threshold)

    def saturation(self) -> tuple[float, ...]:
        return (0.0,)

    def hparams(self) -> dict[str, float]:
        return {"threshold": self.threshold}


class Clip(Activation):
    r""":math:`\sigma(a) = \min(\max(a, lo), hi)` (hard-tanh, box), :math:`\Psi = \iota_{[lo, hi]}`.

    Args:
        lo: lower bound.
        hi: upper bound, ``hi > lo`` (also checked when either is assigned later).
    """

    def __init__(self, lo: float = -1.0, hi: float = 1.0) -> None:
        super().__init__()
        self._set_bounds(lo, hi)

    def _set_bounds(self, lo: float, hi: float) -> None:
        lo, hi = real_hparam("lo", lo), real_hparam("hi", hi)
        if not lo < hi:
            raise ValueError(f"lo must be smaller than hi, got lo={lo}, hi={hi}")
        self._lo, self._hi = lo, hi

    @property
    def lo(self) -> float:
        """The lower bound."""
        return self._lo

    @lo.setter
    def lo(self, value: float) -> None:
        self._set_bounds(value, self._hi)

    @property
    def hi(self) -> float:
        """The upper bound."""
        return self._hi

    @hi.setter
    def hi(self, value: float) -> None:
        self._set_bounds(self._lo, value)

    def psi(self, z: Tensor) -> Tensor:
        return _indicator(self.in_domain(z), z)

    def prox(self, v: Tensor, gamma: Gamma = 1.0) -> Tensor:
        check_step("gamma", gamma)
        return v.clamp(*box_bounds(v, self.lo, self.hi))

    def prox_phi_(self, v: Tensor, mu: Gamma) -> Tensor:
        check_step("mu", mu)
        return v.div_(1 + mu).clamp_(*box_bounds(v, self.lo, self.hi))

    def forward_(self, a: Tensor) -> Tensor:
        return a.clamp_(*box_bounds(a, self.lo, self.hi))

    def in_domain(self, z: Tensor) -> Tensor:
        return (z >= self.lo) & (z <= self.hi)

    def project_domain(self, z: Tensor) -> Tensor:
        return z.clamp(*box_bounds(z, self.lo, self.hi))

    def saturation(self) -> tuple[float, ...]:
        return (self.lo, self.hi)

    def hparams(self) -> dict[str, float]:
        return {"lo": self.lo, "hi": self.hi}
