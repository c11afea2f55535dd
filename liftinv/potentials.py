r"""Potentials: terms on a network's input or output variables.

A potential is smooth (``value``, ``grad``, ``lipschitz``) or proximable (``value``, ``prox``).
Values are per sample, shape ``(B,)``; a potential never sees a network.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor

from liftinv.activations import check_step
from liftinv.penalty import per_sample
from liftinv.tv import GRAD_NORM_SQ, _project_ball, check_real_images, div2d, grad2d, prox_gap, tv
from liftinv.validation import box_bounds, check_fits_dtype, positive_finite, real_float
from operators.checks import check_tensor, is_integer, is_real


def _abs2(t: Tensor) -> Tensor:
    """:math:`|t|^2` entrywise, real also for complex ``t`` (where ``t**2`` is not the square of the modulus)."""
    return t.abs().square() if t.is_complex() else t**2


def _check_weight(weight: float, name: str = "weight") -> float:
    """``weight`` as a float: a finite real number >= 0 (bools and strings are refused; an integer
    beyond the float range is refused by name, where ``float()`` raised an ``OverflowError``)."""
    if not is_real(weight):
        raise TypeError(f"{name} must be a finite non-negative number, got {weight!r}")
    number = real_float(weight)
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{name} must be a finite non-negative number, got {number if math.isfinite(number) else weight}")
    return number


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
        r""":math:`\operatorname{prox}_{sT}(x) = \arg\min_u \tfrac12\|u - x\|^2 + s\,T(u)` for the step
        :math:`s` > 0 (a number, or a tensor, not inspected, as for the activations' ``gamma``:
        :func:`~liftinv.activations.check_step`; a number that is not finite and > 0 is refused
        naming ``step``)."""
        raise NotImplementedError(f"{type(self).__name__} has no prox")


class SquaredError(Potential):
    r""":math:`T(x) = \tfrac{w}{2}\|x - t\|^2` for a fixed target :math:`t` (the modulus for complex
    entries: the value is real). The target has the shape of ``x`` (one per sample), or that of
    one sample with a batch size of 1 (the same target for every sample); any other shape is
    refused (a ``ValueError`` naming both shapes) where broadcasting would give another sum."""

    def __init__(self, target: Tensor, weight: float = 1.0):
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
        self.target = target
        self.weight = _check_weight(weight)

    def _residual(self, x: Tensor) -> Tensor:
        """:math:`x - t` after checking the target's shape against ``x``'s."""
        t = self.target
        if t.ndim != x.ndim or t.ndim == 0 or t.shape[1:] != x.shape[1:] or t.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"the target has shape {tuple(t.shape)}, x {tuple(x.shape)}: the target must have the "
                             f"shape of x or of one sample with batch size 1 (nothing else is broadcast)")
        return x - t

    def value(self, x: Tensor) -> Tensor:
        return 0.5 * _per_sample_scale(self.weight, x) * per_sample(_abs2(self._residual(x)))

    def grad(self, x: Tensor) -> Tensor:
        return _per_sample_scale(self.weight, x) * self._residual(x)

    def lipschitz(self) -> float:
        return self.weight


class Box(Potential):
    r""":math:`T(x) = \iota_{[lo, hi]}(x)` (0 inside, :math:`+\infty` outside); prox = clamp."""

    smooth = False

    def __init__(self, lo: float = 0.0, hi: float = 1.0):
        for name, bound in (("lo", lo), ("hi", hi)):
            if not is_real(bound):  # strings would compare as text, True as 1
                raise TypeError(f"Box's {name} must be a real number, got {bound!r}")
        if not lo < hi:
            raise ValueError(f"Box needs lo < hi, got lo={lo}, hi={hi}")
        self.lo, self.hi = float(lo), float(hi)

    @staticmethod
    def _check_real(x: Tensor) -> None:
        if x.is_complex():
            raise TypeError(f"x must be real for a Box (an interval of real numbers), got dtype {x.dtype}")

    def value(self, x: Tensor) -> Tensor:
        self._check_real(x)
        inside = per_sample(~((x >= self.lo) & (x <= self.hi))) == 0  # no entry outside (NaN is)
        return torch.where(inside, 0.0, float("inf")).to(x.dtype)

    def prox(self, x: Tensor, step: float) -> Tensor:
        check_step("step", step)
        self._check_real(x)
        return x.clamp(*box_bounds(x, self.lo, self.hi))


def _check_weights(weight, name: str = "weight") -> float | Tensor | None:
    """``None``, a finite non-negative number, or a tensor of them (one per sample, shape ``(B,)``)."""
    if weight is None:
        return None
    if isinstance(weight, Tensor):
        if weight.ndim != 1 or not weight.is_floating_point():
            raise ValueError(f"{name} must be a number or a floating tensor of shape (B,), got shape {tuple(weight.shape)} and dtype {weight.dtype}")
        if not bool((torch.isfinite(weight) & (weight >= 0)).all()):
            raise ValueError(f"{name} must hold finite non-negative numbers, got {weight.tolist()}")
        return weight.detach()
    if not is_real(weight):
        raise TypeError(f"{name} must be None, a number or a tensor of shape (B,), got {type(weight).__name__}")
    return _check_weight(weight, name)


def _per_sample_scale(weight: float | Tensor, x: Tensor) -> float | Tensor:
    """``weight`` as a float, or a per-sample tensor shaped to broadcast against ``x``, in the real
    dtype of ``x`` (float64 for complex128: a weight stays real). A float weight larger than that
    dtype's largest number is refused (a ``ValueError`` naming ``weight``): it would multiply
    ``x``'s tensors as Inf, and Inf * 0 is NaN (tensors are not inspected: a host read)."""
    if isinstance(weight, Tensor):
        if weight.shape[0] != x.shape[0]:
            raise ValueError(f"the weight holds {weight.shape[0]} values but the batch has {x.shape[0]} samples")
        return weight.to(device=x.device, dtype=x.real.dtype).reshape(-1, *(1,) * (x.ndim - 1))
    check_fits_dtype("weight", weight, x.real.dtype, "x")
    return weight


class _Weighted(Potential):
    """Shared by potentials whose weight may be left to :func:`liftinv.invert` (``weight=None``)."""

    weight: float | Tensor | None

    def with_weight(self, weight: float | Tensor) -> Potential:
        """A copy with ``weight`` (a number or one per sample, shape ``(B,)``)."""
        raise NotImplementedError

    def _weight(self) -> float | Tensor:
        if self.weight is None:
            raise ValueError(
                f"{type(self).__name__} has weight None: give a weight, or let liftinv.invert choose it"
            )
        return self.weight

    def _scale(self, x: Tensor) -> float | Tensor:
        """:func:`_per_sample_scale` of the weight for ``x``, a per-sample weight of a dtype with a
        larger range than ``x``'s real dtype refused as a float one is (a ``ValueError`` naming
        ``weight``) where an entry would be Inf in it: once per weight and dtype (one host read)."""
        weight = self._weight()
        scaled = _per_sample_scale(weight, x)
        dtype = x.real.dtype
        if isinstance(weight, Tensor) and weight.numel() and torch.finfo(weight.dtype).max > torch.finfo(dtype).max:
            held, dtypes = self.__dict__.get("_fits", (None, set()))
            if held is not weight or dtype not in dtypes:
                check_fits_dtype("weight", _largest(weight), dtype, "x")
                self._fits = (weight, (dtypes if held is weight else set()) | {dtype})
        return scaled


class Tikhonov(_Weighted):
    r""":math:`T(x) = \tfrac{w}{2}\|x\|^2 = \tfrac{w}{2}\sum_i |x_i|^2` (the modulus for complex
    entries: the value is real, and the gradient :math:`wx` is that of the real and imaginary parts).

    Args:
        weight: :math:`w \ge 0`, one for all samples or a tensor ``(B,)``; ``None`` leaves it to
            :func:`liftinv.invert` (as for :class:`TV`).
    """

    def __init__(self, weight: float | Tensor | None = None):
        self.weight = _check_weights(weight)

    def with_weight(self, weight: float | Tensor) -> Tikhonov:
        return Tikhonov(weight)

    def value(self, x: Tensor) -> Tensor:
        return 0.5 * per_sample(self._scale(x) * _abs2(x))

    def grad(self, x: Tensor) -> Tensor:
        return self._scale(x) * x

    def lipschitz(self) -> float:
        return _largest(self._weight())


class L1(_Weighted):
    r""":math:`T(x) = w\|x\|_1 = w\sum_i |x_i|`, prox :math:`S_{\gamma w}` (soft-thresholding)
    :math:`S_t(x)_i = x_i\max(0, 1 - t/|x_i|)`; for complex :math:`x`, :math:`|x_i|` is the modulus
    (the value is real and the prox shrinks each modulus, keeping the phase).

    Args:
        weight: :math:`w \ge 0`, one for all samples or a tensor ``(B,)``; ``None`` leaves it to
            :func:`liftinv.invert` (as for :class:`TV`).
    """

    smooth = False

    def __init__(self, weight: float | Tensor | None = None):
        self.weight = _check_weights(weight)

    def with_weight(self, weight: float | Tensor) -> L1:
        return L1(weight)

    def value(self, x: Tensor) -> Tensor:
        return per_sample(self._scale(x) * x.abs())

    def prox(self, x: Tensor, step: float) -> Tensor:
        check_step("step", step)
        t = step * self._scale(x)
        return torch.sgn(x) * torch.clamp(x.abs() - t, min=0)  # sgn(x) = x/|x| (0 at 0), also on C


def _largest(weight: float | Tensor) -> float:
    """The weight, or the largest of per-sample weights (a Lipschitz constant for all samples)."""
    return float(weight.max()) if isinstance(weight, Tensor) else weight


class TV(_Weighted):
    r"""Isotropic total variation :math:`T(x) = w\,\mathrm{TV}(x) + \iota_{[lo, hi]}(x)` on images
    ``(B, C, H, W)`` (forward differences, Neumann boundary; :func:`liftinv.tv.tv`), with an
    optional box constraint.

    The prox :math:`\arg\min_u \tfrac12\|u - v\|^2 + \gamma w\,\mathrm{TV}(u) + \iota_{[lo,hi]}(u)`
    is computed by fast gradient projection on the dual (Beck & Teboulle 2009, constrained
    version): with :math:`\lambda = \gamma w`, :math:`|p_{c,i,j}|_2 \le 1` and
    :math:`u(p) = \Pi_{[lo,hi]}(v + \lambda\operatorname{div} p)`,

    .. math:: p_k = \Pi_{|\cdot|\le 1}\big(r_k + \tfrac{1}{8\lambda}\nabla u(r_k)\big)

    with FISTA extrapolation :math:`r`. The dual is warm-started from the last call on a batch of
    the same shape (it is scale free, so it carries over across weights); a sample's dual stops
    moving once its duality gap :math:`P(u) - D(p) \le \text{tol}\cdot P(u)` (checked every 5
    iterations), or from the start where :math:`v = 0` (from :math:`p = 0`, not the warm start:
    :math:`u = \Pi_{[lo,hi]}(0)`, the prox) or :math:`4\lambda \le \epsilon^2\max|v|`
    (:math:`\epsilon` the dtype's machine epsilon: :math:`u(p)` is then within :math:`4\lambda` of
    :math:`\Pi_{[lo,hi]}(v)` per entry for every :math:`p`, below rounding, and the step would
    overflow), so that each sample's prox is the one of that sample alone, and the iteration
    stops when every sample's has, with :math:`P(u) = \tfrac12\|u-v\|^2 + \lambda\mathrm{TV}(u)` and
    :math:`D(p) = \tfrac12\|v\|^2 - \tfrac12\|y\|^2 + \tfrac12\|y - \Pi(y)\|^2`,
    :math:`y = v + \lambda\operatorname{div}p`; the gap bounds :math:`\tfrac12\|u - u^\star\|^2`. It is
    evaluated by :func:`liftinv.tv.prox_gap`, free of cancellation.

    Inside an iterative solver (the input block of lifted inversion) the warm-started dual keeps
    improving from one outer iteration to the next, so a few inner iterations per call suffice
    (the default 3: on the encoder benchmark at 1 % noise, 1200 sweeps of lifted inversion with the
    weight 1e-4 gave the same input, 27.25 dB, with at most 3 or 10 inner iterations, in 14.7 s or
    20.6 s). Pass a large
    ``max_inner`` and a small ``tol`` for an accurate stand-alone prox. A step times a weight beyond
    the largest number of ``x``'s dtype is refused (a ``ValueError`` naming both).

    Args:
        weight: :math:`w \ge 0`, one for all samples or a tensor ``(B,)``; ``None`` leaves it to
            :func:`liftinv.invert` (discrepancy principle or its default); such a potential has
            no value until :meth:`with_weight` gives it one.
        box: ``(lo, hi)`` (real numbers, ``lo < hi``) or ``None``.
        max_inner: maximal dual iterations per prox.
        tol: relative duality-gap tolerance of the prox.
    """

    smooth = False

    def __init__(self, weight: float | Tensor | None = None, *, box: tuple[float, float] | None = None,
                 max_inner: int = 3, tol: float = 1e-3):
        self.weight = _check_weights(weight)
        if box is not None:
            if not (isinstance(box, (tuple, list)) and len(box) == 2):
                raise ValueError(f"box must be None or a pair (lo, hi), got {box!r}")
            Box(*box)  # validates lo < hi
            box = (float(box[0]), float(box[1]))
        if not is_integer(max_inner) or max_inner < 1:
            raise ValueError(f"max_inner must be a positive int, got {max_inner!r}")
        if not is_real(tol) or not tol >= 0:
            raise ValueError(f"tol must be a number >= 0, got {tol!r}")
        self.box, self.max_inner, self.tol = box, int(max_inner), float(tol)
        self._dual: dict[tuple, Tensor] = {}

    def with_weight(self, weight: float | Tensor) -> TV:
        new = TV(weight, box=self.box, max_inner=self.max_inner, tol=self.tol)
        new._dual = self._dual  # the warm start carries over
        return new

    def cold(self) -> TV:
        """A copy whose prox starts from the zero dual: without the warm start of earlier calls."""
        return TV(self.weight, box=self.box, max_inner=self.max_inner, tol=self.tol)

    def _project(self, x: Tensor) -> Tensor:
        return x if self.box is None else x.clamp(*box_bounds(x, *self.box))

    @staticmethod
    def _check_images(x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"TV needs images (B, C, H, W), got shape {tuple(x.shape)}")
        if x.is_complex():
            check_real_images(x, "x")  # refused by name

    def value(self, x: Tensor) -> Tensor:
        r""":math:`w\,\mathrm{TV}(x)` per sample (``inf`` outside the box)."""
        self._check_images(x)
        val = tv(x)
        val = val * self._scale(val)
        if self.box is not None:
            val = val + Box(*self.box).value(x)
        return val

    def smooth_value(self, x: Tensor, eps: float) -> Tensor:
        r"""Charbonnier-smoothed :math:`w\sum_{c,i,j}\big(\sqrt{|(\nabla x)_{c,i,j}|^2 + \varepsilon^2} - \varepsilon\big)`
        per sample (differentiable; for gradient-based baselines), without the box.

        Raises:
            TypeError: ``eps`` is not a real number.
            ValueError: ``eps`` is not a finite positive number (with :math:`\varepsilon \le 0` the
                value is not a smoothing of TV, nonzero on constant images for
                :math:`\varepsilon < 0`, and its gradient NaN where :math:`\nabla x = 0` for 0).
        """
        if not is_real(eps):
            raise TypeError(f"eps must be a positive finite number, got {eps!r}")
        positive_finite("eps", eps)
        self._check_images(x)
        g = grad2d(x).pow(2).sum(2)
        val = ((g + eps**2).sqrt() - eps).flatten(1).sum(1)
        return val * self._scale(val)

    def prox(self, x: Tensor, step: float) -> Tensor:
        check_step("step", step)
        self._check_images(x)
        check_tensor(x, "x")
        lam = step * self._scale(x)
        if not isinstance(lam, Tensor):  # Inf in x's dtype: NaN below
            check_fits_dtype("step * weight", lam, x.dtype, "x", "take a smaller step")
        if not (bool((lam > 0).any()) if isinstance(lam, Tensor) else lam > 0):  # a host read for per-sample weights only
            return self._project(x)
        lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device).expand(x.shape[0], 1, 1, 1).reshape(-1, 1, 1, 1, 1)
        key = (tuple(x.shape), x.dtype, x.device)
        p_prev = self._dual.get(key)
        if p_prev is None:
            p_prev = x.new_zeros(*x.shape[:2], 2, *x.shape[2:])
        # as in prox_tv: u moves no entry of P(x) by more than 4 lam, below rounding where 4 lam <= eps^2 max|x|,
        # and there the step 1/(8 lam) grad would overflow: such samples, and zero ones, keep their dual (step 0)
        amax = x.detach().abs().flatten(1).amax(1) if x[0].numel() else x.new_zeros(x.shape[0])
        zero = amax == 0  # the prox of 0 is Pi(0): from the zero dual, not lam div of a warm start
        p_prev = torch.where(zero.view(-1, 1, 1, 1, 1), 0.0, p_prev)
        fixed = zero | (amax.double() * torch.finfo(x.dtype).eps ** 2 >= 4 * lam.flatten().double())
        safe = torch.where(lam > 0, lam, torch.ones_like(lam))
        step_dual = torch.where(fixed.view(-1, 1, 1, 1, 1), 0.0, 1.0 / (GRAD_NORM_SQ * safe))
        lam4, r, t, done = lam[..., 0], p_prev, 1.0, None
        for k in range(1, self.max_inner + 1):
            p = _project_ball(r + step_dual * grad2d(self._project(x + lam4 * div2d(r))), 1.0)
            if done is not None:  # the samples that passed the gap test keep their dual, as alone
                p = torch.where(done, p_prev, p)
            t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            r = p + ((t - 1.0) / t_next) * (p - p_prev)
            p_prev, t = p, t_next
            if k % 5 == 0 or k == self.max_inner:
                y = x + lam4 * div2d(p)
                u = self._project(y)
                if k == self.max_inner:  # the last iteration: no gap test (a reduction and a host sync)
                    break
                primal, gap = prox_gap(u, x, p, lam.flatten())
                passed = ((gap <= self.tol * primal) | fixed).reshape(-1, 1, 1, 1, 1)
                done = passed if done is None else done | passed
                if bool(done.all()):
                    break
        self._dual[key] = p
        return u


class DeepinvPrior(_Weighted):
    r"""A deepinv prior :math:`g` as a potential :math:`T(x) = w\,g(x)`.

    Proximable by default: :math:`\operatorname{prox}_{\gamma T}(x)` = ``prior.prox(x, gamma=gamma * w)``,
    with ``ths=1`` for priors whose prox takes a ``ths`` that scales :math:`g` too (deepinv's
    ``WaveletPrior.prox`` is the prox of ``ths * gamma * g``, ``ths`` 0.1 by default)
    (per-sample weights: one call with ``gamma`` of shape ``(B, 1, ..., 1)``, as deepinv's priors
    take it; one call per sample would let a prior with state, such as deepinv's TV with its warm
    start, carry one sample's iterate into the next). With ``lipschitz`` given, smooth instead:
    :math:`\nabla T = w` ``prior.grad(x)`` with Lipschitz constant :math:`w\,L`.

    Args:
        prior: an explicit ``deepinv.optim.Prior`` (``explicit_prior``: ``fn`` per sample,
            ``prox(x, gamma=...)``, ``grad``); implicit ones (``PnP``, ``RED``) are refused.
        weight: :math:`w \ge 0`, a tensor ``(B,)``, or ``None`` (left to :func:`liftinv.invert`).
        lipschitz: Lipschitz constant :math:`L` of :math:`\nabla g` (makes the potential smooth).
    """

    def __init__(self, prior, weight: float | Tensor | None = None, *, lipschitz: float | None = None):
        if not (callable(getattr(prior, "fn", None)) and callable(getattr(prior, "prox", None))):
            raise TypeError(f"prior must be a deepinv Prior (with fn and prox), got {type(prior).__name__}")
        if not getattr(prior, "explicit_prior", True):
            raise TypeError(f"prior must be an explicit deepinv prior (explicit_prior=True: fn gives its value), got "
                            f"{type(prior).__name__} (a plug-and-play or other implicit prior)")
        self.prior = prior
        self._unit = {"ths": 1.0} if "ths" in inspect.signature(prior.prox).parameters else {}
        self.weight = _check_weights(weight)
        self.lip = None if lipschitz is None else _check_weight(lipschitz, "lipschitz")
        self.smooth = lipschitz is not None

    def with_weight(self, weight: float | Tensor) -> DeepinvPrior:
        return DeepinvPrior(self.prior, weight, lipschitz=self.lip)

    def value(self, x: Tensor) -> Tensor:
        val = per_sample(self.prior.fn(x))
        return val * self._scale(val)

    def grad(self, x: Tensor) -> Tensor:
        if not self.smooth:
            return super().grad(x)
        return self._scale(x) * self.prior.grad(x)

    def lipschitz(self) -> float:
        if not self.smooth:
            return super().lipschitz()
        return self.lip * _largest(self._weight())

    def prox(self, x: Tensor, step: float) -> Tensor:
        check_step("step", step)
        weight = self._weight()
        gamma = step * (self._scale(x) if isinstance(weight, Tensor) else weight)
        return self.prior.prox(x, gamma=gamma, **self._unit)
