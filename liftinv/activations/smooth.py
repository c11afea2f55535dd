r"""Smooth proximal activations of Legendre type: tanh and the logistic sigmoid.

Here :math:`\sigma = (\Phi')^{-1}` for a strictly convex :math:`\Phi` on a bounded interval
:math:`[lo, hi]`, and :math:`\Psi = \Phi - \tfrac12|\cdot|^2` is convex there (``inf`` outside).
The prox :math:`u = \operatorname{prox}_{\gamma\Psi}(v)` solves
:math:`u - v + \gamma(\Phi'(u) - u) = 0`; substituting :math:`u = \sigma(s)` (so :math:`s = \Phi'(u)`
ranges over the whole line) gives the well-conditioned scalar equation

.. math:: f(s) = (1-\gamma)\,\sigma(s) + \gamma s - v = 0,
   \qquad f'(s) = (1-\gamma)\,\sigma'(s) + \gamma > 0,

whose root lies in the bracket :math:`\gamma s \in v - (1-\gamma)[lo, hi]`. Both activations are
convex for :math:`s < 0` and concave for :math:`s > 0`; a vectorised Newton iteration started at
the bracket end (or 0) from which it is monotone converges to the root in float64 to roundoff
accuracy, typically in fewer than 10 steps.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Activation, Gamma, check_step

_EPS = torch.finfo(torch.float64).eps
_MAX_ITER = 100


def softplus(x: Tensor) -> Tensor:
    r"""Stable :math:`\log(1 + e^x)` (no linear cut-off, exact gradient :math:`\mathrm{sigmoid}(x)`)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def logcosh(x: Tensor) -> Tensor:
    r"""Stable :math:`\log\cosh x = \log(e^x + e^{-x}) - \log 2`."""
    return torch.logaddexp(x, -x) - math.log(2.0)


def kl_term(x: Tensor, y: Tensor, log_y: Tensor, diff: Tensor | None = None) -> Tensor:
    r"""Elementwise :math:`x\log(x/y) - x + y \ge 0` for probabilities :math:`x \in [0, 1]`,
    :math:`y \in (0, 1]` (``y`` may underflow to 0, ``log_y`` = :math:`\log y` may not), 0 where
    :math:`x = y` (exactly, for normal :math:`y`), with :math:`0\log 0 = 0`. ``diff`` is
    :math:`d = x - y` (with its graph) where the caller has it more accurately than the rounded
    ``x`` gives it, ``x - y`` if ``None``. Free of cancellation: it is :math:`x\,\ell - d` with
    the value

    .. math:: \ell = \log\frac{x}{y} = \begin{cases}
       \operatorname{log1p}\big(\frac{d}{y}\big) & \tfrac12 y \le x \le 2y
       \text{ (where } x - y \text{ is exact)},\\
       \log(x/y) & \text{otherwise},\\
       \log x - \log y & y \text{ subnormal},
       \end{cases}

    so its error is a few ulps of :math:`x|\ell| + |d|`; the rounding left where :math:`x` is
    within an ulp or two of :math:`y` is clamped at 0. The gradient is that of
    :math:`\ell = \log x - \log y` (through ``log_y``: no :math:`x/y^2` that overflows for small
    :math:`y`), exact: :math:`\partial_x = \ell`, :math:`\partial_y = 1 - x/y`, in reverse and
    forward mode (the value of :math:`\ell` carries no tangent).
    """
    d = x - y if diff is None else diff
    pos = x > 0
    x1 = torch.where(pos, x, 1.0)  # no inf or nan in unused values or gradients
    log_x = torch.log(x1)
    with torch.no_grad():  # detached: no_grad does not stop forward-mode (jvp) tangents
        xd, yd, dd, log_yd = x1.detach(), y.detach(), d.detach(), log_y.detach()
        normal = yd >= torch.finfo(yd.dtype).tiny
        y1 = torch.where(normal, yd, 1.0)
        r = xd / y1
        near = normal & (r >= 0.5) & (r <= 2)
        far = torch.where(normal, torch.log(r), log_x.detach() - log_yd)
        exact = torch.where(near, torch.log1p(dd / y1), far)
    # for the gradient: log x - log y, with a -inf or nan log y (<= 0 otherwise) replaced by 0
    log_ratio = log_x - torch.where(log_y > -math.inf, log_y, 0.0)
    log_ratio = exact + (log_ratio - log_ratio.detach())
    return (torch.where(pos, x * log_ratio, 0.0) - d).clamp_min(0)


def bernoulli_kl(p: Tensor, q: Tensor, b: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(p \,\|\, s) = p\log\frac{p}{s} + q\log\frac{q}{1-s}` with
    :math:`s = \mathrm{sigmoid}(b)` and :math:`q = 1 - p` (passed: the caller computes it where
    it is accurate), as the sum of the two nonnegative terms :func:`kl_term` :math:`(p, s)` and
    :math:`(q, 1 - s)` (their :math:`-x + y` parts cancel): :math:`\ge 0` entry by entry, 0 where
    :math:`p = s`, with :math:`1 - s = \mathrm{sigmoid}(-b)`, :math:`\log s = -\mathrm{softplus}(-b)`
    and :math:`\log(1 - s) = -\mathrm{softplus}(b)` accurate in saturation. Both terms take the
    one difference :math:`d = p - s` (and :math:`q - (1 - s) = -d`) formed on the side of the
    smaller probability, :math:`p - \mathrm{sigmoid}(b)` where :math:`p \le \tfrac12`, else
    :math:`\mathrm{sigmoid}(-b) - q`: there the probability carries no absolute rounding of
    :math:`\tfrac12` eps (the other, e.g. :math:`1 - z` for a small :math:`z`, does), so no
    floor of about :math:`\mathrm{eps}^2` where :math:`p \approx s` is small."""
    s, t = torch.sigmoid(b), torch.sigmoid(-b)
    d = torch.where(p <= 0.5, p - s, t - q)
    return kl_term(p, s, -softplus(-b), d) + kl_term(q, t, -softplus(b), -d)


class LegendreActivation(Activation):
    r"""Base of smooth activations :math:`\sigma = (\Phi')^{-1}` with :math:`\operatorname{dom}\Phi = [lo, hi]`.

    Subclasses set ``lo``, ``hi`` and implement :meth:`forward`, :meth:`conjugate`
    (:math:`\Phi^*`, stable), :meth:`_phi` (:math:`\Phi` on :math:`[lo, hi]`), :meth:`_slope`
    (:math:`\sigma'` as a function of :math:`\sigma`) and :meth:`_bernoulli` (the divergence as a
    Bernoulli KL divergence).
    """

    lo: float
    hi: float

    def _phi(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def _slope(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _bernoulli(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""``(p, q, b)`` with :math:`B_\Psi(z, a) = \mathrm{KL}(p \,\|\, \mathrm{sigmoid}(b))`,
        :math:`q = 1 - p`."""
        raise NotImplementedError

    def psi(self, z: Tensor) -> Tensor:
        r""":math:`\Psi(z) = \Phi(z) - \tfrac12 z^2` on :math:`[lo, hi]`, ``inf`` outside."""
        zc = self.project_domain(z)
        return torch.where(self.in_domain(z), self._phi(zc) - 0.5 * zc**2, torch.inf)

    def envelope(self, a: Tensor) -> Tensor:
        r""":math:`\operatorname{env}_\Psi(a) = \tfrac12 a^2 - \Phi^*(a)`."""
        return 0.5 * a**2 - self.conjugate(a)

    def divergence(self, z: Tensor, a: Tensor) -> Tensor:
        r""":math:`B_\Psi(z, a) = \Phi(z) + \Phi^*(a) - za`, ``inf`` for :math:`z \notin [lo, hi]`.

        Computed as the Bernoulli KL divergence :func:`bernoulli_kl` of :meth:`_bernoulli`, a sum
        of terms each :math:`\ge 0`: no cancellation between :math:`\Phi(z)` and
        :math:`\Phi^*(a) - za`, so :math:`B \ge 0` in every dtype, 0 at :math:`z = \sigma(a)`,
        and accurate to a few ulps of its terms, also in saturation."""
        div = bernoulli_kl(*self._bernoulli(self.project_domain(z), a))
        return torch.where(self.in_domain(z), div, torch.inf)

    def in_domain(self, z: Tensor) -> Tensor:
        return (z >= self.lo) & (z <= self.hi)

    def project_domain(self, z: Tensor) -> Tensor:
        return z.clamp(self.lo, self.hi)

    def prox(self, v: Tensor, gamma: Gamma = 1.0) -> Tensor:
        r""":math:`\operatorname{prox}_{\gamma\Psi}(v) = \sigma(s)` with :math:`f(s) = 0` (module doc).

        Exactly :math:`\sigma(v)` where :math:`\gamma = 1`. Differentiable in ``v`` and ``gamma``
        (implicit differentiation through one final Newton step), also where :math:`\gamma = 1`:
        there :math:`\partial u/\partial\gamma = -(v - \sigma(v))\,\sigma'(v)`.
        """
        check_step("gamma", gamma)
        if not isinstance(gamma, Tensor) and gamma == 1:
            return self(v)
        u = self(self._solve(v.to(torch.float64), _float64(gamma, v))).to(v.dtype)
        if not isinstance(gamma, Tensor):
            return u
        # exactly sigma(v) where gamma == 1, with its derivative in gamma there (a zero term):
        # du/dgamma = -(v - sigma(v)) sigma'(v), 0 in the limit v = +-inf
        s = self(v)
        with torch.no_grad():
            d_gamma = ((s - v) * self._slope(s)).nan_to_num(0.0)
        return torch.where(gamma == 1, s + (gamma - gamma.detach()).to(v.dtype) * d_gamma, u)

    def _solve(self, v: Tensor, g: Gamma) -> Tensor:
        """Root of f(s) = (1-g) sigma(s) + g s - v, in float64."""
        with torch.no_grad():
            vb, gb = torch.broadcast_tensors(v, torch.as_tensor(g, dtype=v.dtype, device=v.device))
            c = 1 - gb
            lo = (vb - torch.maximum(c * self.lo, c * self.hi)) / gb
            hi = (vb - torch.minimum(c * self.lo, c * self.hi)) / gb
            # sigma is convex on s < 0 and concave on s > 0, so is f where c > 0 (flipped where
            # c < 0). Newton started on the side where f is concave from the left (f < 0), or
            # convex from the right (f > 0), moves monotonically to the root and stays there.
            zero = torch.zeros((), dtype=v.dtype, device=v.device)
            right = c * self(zero) < vb  # the root is positive
            from_left = right == (c > 0)
            s = torch.where(
                from_left,
                torch.where(right, lo.clamp_min(0), lo),
                torch.where(right, hi, hi.clamp_max(0)),
            )
            scale = max(abs(self.lo), abs(self.hi))
            for _ in range(_MAX_ITER):
                t = self(s)
                f = c * t + gb * s - vb
                slope_t = self._slope(t)
                step = f / (c * slope_t + gb)
                # f at the rounding noise of its terms (small near a root at 0, e.g. tanh with
                # g >> 1), or a step that moves s or u = sigma(s) by less than roundoff (u is tiny
                # where f ~ e^s and Newton advances s by about 1 per step)
                done = f.abs() <= 8 * _EPS * (vb.abs() + (c * t).abs() + (gb * s).abs())
                done |= step.abs() <= 2 * _EPS * s.abs()
                done |= (step * slope_t).abs() <= _EPS * scale
                if bool((done | f.isnan()).all()):
                    break
                s = torch.where(done, s, s - step)
            else:
                raise RuntimeError(f"{type(self).__name__}.prox: Newton did not converge")
            t = self(s)
            slope = c * self._slope(t) + gb
        # One Newton step with a graph in (v, g): exact first derivatives by the implicit function theorem.
        return s - ((1 - g) * t + g * s - v) / slope


def _float64(gamma: Gamma, like: Tensor) -> Gamma:
    return gamma.to(device=like.device, dtype=torch.float64) if isinstance(gamma, Tensor) else float(gamma)


class Tanh(LegendreActivation):
    r""":math:`\sigma = \tanh`, :math:`\Phi(u) = \tfrac12[(1+u)\log(1+u) + (1-u)\log(1-u)]` on
    :math:`[-1, 1]`, :math:`\Phi^*(a) = \log\cosh a`, :math:`\Psi(u) = \Phi(u) - u^2/2`,
    :math:`B_\Psi(z, a) = \tfrac12[(1+z)\log(1+z) + (1-z)\log(1-z)] + \log\cosh a - za
    = \mathrm{KL}\big(\tfrac{1+z}2 \,\|\, \mathrm{sigmoid}(2a)\big)`, as
    :math:`1 \pm \tanh a = 2\,\mathrm{sigmoid}(\pm 2a)`.
    """

    lo, hi = -1.0, 1.0

    def forward(self, a: Tensor) -> Tensor:
        return torch.tanh(a)

    def conjugate(self, a: Tensor) -> Tensor:
        return logcosh(a)

    def _phi(self, z: Tensor) -> Tensor:
        return 0.5 * (torch.special.xlog1py(1 + z, z) + torch.special.xlog1py(1 - z, -z))

    def _slope(self, t: Tensor) -> Tensor:
        return 1 - t * t

    def _bernoulli(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return 0.5 * (1 + z), 0.5 * (1 - z), 2 * a

    def divergence(self, z: Tensor, a: Tensor) -> Tensor:
        r""":math:`B_\Psi(z, a)` as the Bernoulli KL divergence (base class), except where
        :math:`|z| \le \tfrac12` and :math:`|s| \le \tfrac12`, :math:`s = \tanh a`: there
        :math:`p = (1+z)/2` would round :math:`z` by up to :math:`\tfrac12` eps absolute, and the
        KL terms, of the size of :math:`|z - s|`, cancel down to :math:`B \approx \tfrac12(z - s)^2`
        (a floor of about :math:`\mathrm{eps}^2` and an error of eps :math:`|z - s|`), so it is

        .. math:: B_\Psi(z, a) = \tfrac12\operatorname{log1p}\Big(-\frac{(z - s)(z + s)}{1 - s^2}\Big)
           + z\operatorname{atanh}\frac{z - s}{1 - zs}

        (:math:`\Phi(z) = \tfrac12\log(1 - z^2) + z\operatorname{atanh} z`,
        :math:`\log\cosh a = -\tfrac12\log(1 - s^2)`), whose two terms are of the size of
        :math:`|z|\,|z - s|` only: accurate to a few ulps of :math:`B + |a|\,|z - s|` (the
        rounding of :math:`\tanh a`) for small :math:`z` and :math:`a` too. Its inputs are
        clamped to :math:`[-\tfrac34, \tfrac34]` (no change where it is used, nor in its gradient, the
        bounds not being reached there; finite unused
        values and gradients elsewhere, and cheaper than masking)."""
        div = super().divergence(z, a)
        s = torch.tanh(a)
        mid = (z.abs() <= 0.5) & (s.abs() <= 0.5)
        zm, sm = z.clamp(-0.75, 0.75), s.clamp(-0.75, 0.75)  # no nan in unused gradients
        d = zm - sm
        small = 0.5 * torch.log1p(-d * (zm + sm) / (1 - sm * sm)) + zm * torch.atanh(d / (1 - zm * sm))
        return torch.where(mid, small.clamp_min(0), div)


class Sigmoid(LegendreActivation):
    r""":math:`\sigma(a) = 1/(1 + e^{-a})`, :math:`\Phi(u) = u\log u + (1-u)\log(1-u)` on :math:`[0, 1]`,
    :math:`\Phi^* = \mathrm{softplus}`, :math:`\Psi(u) = \Phi(u) - u^2/2`,
    :math:`B_\Psi(z, a) = z\log z + (1-z)\log(1-z) + \mathrm{softplus}(a) - za
    = \mathrm{KL}(z \,\|\, \sigma(a))`.
    """

    lo, hi = 0.0, 1.0

    def forward(self, a: Tensor) -> Tensor:
        return torch.sigmoid(a)

    def conjugate(self, a: Tensor) -> Tensor:
        return softplus(a)

    def _phi(self, z: Tensor) -> Tensor:
        return torch.xlogy(z, z) + torch.xlogy(1 - z, 1 - z)

    def _slope(self, t: Tensor) -> Tensor:
        return t * (1 - t)

    def _bernoulli(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return z, 1 - z, a
