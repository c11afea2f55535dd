r"""Isotropic total variation: discrete gradient and divergence, TV prox, and TV-regularised
reconstruction by PDHG.

Conventions for images :math:`x` of shape (B, C, H, W): forward differences with Neumann boundary,

.. math::
    (\nabla x)_{0,i,j} = x_{i+1,j} - x_{i,j} \ (i < H-1), \quad
    (\nabla x)_{1,i,j} = x_{i,j+1} - x_{i,j} \ (j < W-1),

and zero on the last row / column; :math:`\operatorname{div} = -\nabla^*`. TV is isotropic per
channel and summed over channels:
:math:`\mathrm{TV}(x) = \sum_{c,i,j} \sqrt{(\nabla x)_{0,c,i,j}^2 + (\nabla x)_{1,c,i,j}^2}`.
:math:`\|\nabla\|_2^2 \le 8` (Chambolle 2004).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from liftinv.validation import box_bounds, check_fits_dtype
from operators.checks import check_tensor, is_integer, is_real, opnorm, values_trusted

GRAD_NORM_SQ = 8.0  # bound on ||grad||_2^2
_CHECK_EVERY = 10  # prox_tv evaluates its duality gap every _CHECK_EVERY iterations
_SIGMA_DATA = 0.1  # pdhg_tv's dual step on the data block (dimensionless; tuned on CT/blur/dense tests)


@dataclass(frozen=True)
class TVHistory:
    """What an iterative TV solver did.

    Attributes:
        objective: (n_iter, B) primal objective after each iteration.
        converged: whether the stopping tolerance was met before the iteration limit.
    """

    objective: Tensor
    converged: bool

    @property
    def n_iter(self) -> int:
        """Number of iterations run."""
        return self.objective.shape[0]


def grad2d(x: Tensor) -> Tensor:
    r"""Forward differences with Neumann boundary: (B, C, H, W) -> (B, C, 2, H, W), component 0
    along H, component 1 along W, last difference zero (see module docstring)."""
    g = x.new_zeros(*x.shape[:2], 2, *x.shape[2:])
    g[:, :, 0, :-1, :] = x[:, :, 1:, :] - x[:, :, :-1, :]
    g[:, :, 1, :, :-1] = x[:, :, :, 1:] - x[:, :, :, :-1]
    return g


def div2d(p: Tensor) -> Tensor:
    r"""Discrete divergence :math:`\operatorname{div} = -\nabla^*`: (B, C, 2, H, W) -> (B, C, H, W),

    .. math::
        (\operatorname{div} p)_{i,j} = p_{0,i,j} - p_{0,i-1,j} + p_{1,i,j} - p_{1,i,j-1}

    with :math:`p_{0,-1,j} = p_{0,H-1,j} = 0` and :math:`p_{1,i,-1} = p_{1,i,W-1} = 0`.
    """
    p0, p1 = p[:, :, 0], p[:, :, 1]
    d = torch.zeros_like(p0)
    d[:, :, :-1, :] += p0[:, :, :-1, :]
    d[:, :, 1:, :] -= p0[:, :, :-1, :]
    d[:, :, :, :-1] += p1[:, :, :, :-1]
    d[:, :, :, 1:] -= p1[:, :, :, :-1]
    return d


def check_real_images(x: Tensor, name: str) -> Tensor:
    """Check that ``x`` is a finite real floating tensor of images (B, C, H, W) and return it. TV
    is defined here on real images: complex ones (MRI) are refused with a ``TypeError`` naming
    ``name`` (their squares are not squared moduli; pass real and imaginary parts as channels)."""
    check_tensor(x, name, ndim=4)
    if x.is_complex():
        raise TypeError(f"{name} must be real images (B, C, H, W) for TV, got dtype {x.dtype}; pass complex "
                        "images as real and imaginary channels (MRI's real layout (B, 2, H, W))")
    return x


def _pointwise_norm(g: Tensor) -> Tensor:
    """Euclidean norm over the gradient component axis: (B, C, 2, H, W) -> (B, C, 1, H, W)."""
    return g.pow(2).sum(dim=2, keepdim=True).sqrt()


def tv(x: Tensor) -> Tensor:
    r"""Isotropic total variation per sample, :math:`\sum_{c,i,j} |(\nabla x)_{c,i,j}|_2`, shape (B,).

    Differentiable by autograd with the subgradient :math:`-\operatorname{div} q`,
    :math:`q_{c,i,j} = (\nabla x)_{c,i,j} / |(\nabla x)_{c,i,j}|_2` and :math:`q_{c,i,j} = 0` where
    :math:`(\nabla x)_{c,i,j} = 0` (the square root's derivative there is kept out of the graph)."""
    check_real_images(x, "x")
    sq = grad2d(x).pow(2).sum(dim=2)
    flat = sq == 0
    return torch.where(flat, 0.0, sq.masked_fill(flat, 1.0).sqrt()).flatten(1).sum(1)


def _project_ball(p: Tensor, radius: float) -> Tensor:
    """Pointwise projection onto the Euclidean ball of ``radius``: p / max(1, |p| / radius)."""
    return p / torch.clamp(_pointwise_norm(p) / radius, min=1.0)


def _sq(x: Tensor) -> Tensor:
    """Squared norm per sample, shape (B,)."""
    return x.pow(2).flatten(1).sum(1)


def _norm(x: Tensor) -> Tensor:
    """Norm per sample, shape (B,)."""
    return _sq(x).sqrt()


def prox_gap(u: Tensor, v: Tensor, p: Tensor, weight: float | Tensor) -> tuple[Tensor, Tensor]:
    r"""Per sample, shape (B,) each: the primal value :math:`P(u) = \tfrac12\|u - v\|^2 + w\,\mathrm{TV}(u)`
    of the TV prox and its duality gap at the dual :math:`p` (with :math:`|p| \le 1`) as
    :math:`w\sum_{c,i,j}\big(|(\nabla u)_{c,i,j}|_2 - \langle(\nabla u)_{c,i,j}, p_{c,i,j}\rangle\big)`,
    whose terms are :math:`\ge 0`. It equals :math:`P(u) - D(p)` for :math:`u = v + w\operatorname{div}p`,
    or that point projected onto a box. Computed this way, it does not cancel to rounding noise in
    float32 for images far from 0, as the difference of :math:`\tfrac12\|v\|^2` and
    :math:`\tfrac12\|u\|^2` does. ``weight`` is a number or one per sample, shape (B,)."""
    g = grad2d(u)
    tv_u = _pointwise_norm(g).flatten(1).sum(1)
    return 0.5 * _sq(u - v) + weight * tv_u, weight * (tv_u - (g * p).flatten(1).sum(1))


def _check_params(weight: float, n_iter: int, tol: float) -> int:
    """Validate the parameters; return ``n_iter`` as an ``int``."""
    if not is_real(weight) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    if not is_integer(n_iter) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive int, got {n_iter!r}")
    if not is_real(tol) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    return int(n_iter)


def prox_tv(v: Tensor, weight: float, n_iter: int = 200, tol: float = 1e-4) -> Tensor:
    r"""Proximal map of TV: :math:`\operatorname{argmin}_u \tfrac12\|u - v\|^2 + w\,\mathrm{TV}(u)`
    per sample, by FISTA on the dual (Beck & Teboulle 2009, fast gradient projection).

    Dual problem: :math:`\min_{|p_{c,i,j}|_2 \le 1} D(p) = \tfrac12\|v + w \operatorname{div} p\|^2`
    with :math:`\nabla D(p) = -w\nabla(v + w\operatorname{div} p)`, Lipschitz constant :math:`8w^2`;
    primal solution :math:`u = v + w\operatorname{div} p`. Iterations (:math:`t_1 = 1`, :math:`r_1 = p_0 = 0`):

    .. math::
        p_k = \Pi\big(r_k + \tfrac{1}{8w}\nabla(v + w\operatorname{div} r_k)\big),\quad
        t_{k+1} = \tfrac{1 + \sqrt{1 + 4t_k^2}}{2},\quad
        r_{k+1} = p_k + \tfrac{t_k - 1}{t_{k+1}}(p_k - p_{k-1}).

    Stops when the duality gap
    :math:`P(u) - (\tfrac12\|v\|^2 - \tfrac12\|u\|^2)`, with
    :math:`P(u) = \tfrac12\|u - v\|^2 + w\,\mathrm{TV}(u)`, is at most ``tol`` times :math:`P(u)`
    (checked every 10 iterations) for every sample, or after ``n_iter`` iterations; a sample that
    passed the test keeps its iterate while the others go on, so that its result does not depend
    on the rest of the batch. The gap bounds
    :math:`\tfrac12\|u - u^\star\|^2`. It is evaluated by :func:`prox_gap`, free of cancellation.
    A sample that is 0, or whose largest entry is so large that :math:`4w \le \epsilon^2\max|v|`
    (:math:`\epsilon` the dtype's machine epsilon), is returned as it is: :math:`u^\star` differs
    from it by at most :math:`4w` per entry (:math:`|\operatorname{div} p| \le 4`), below rounding,
    and the step :math:`\tfrac1{8w}\nabla v` would overflow there.

    Args:
        v: images (B, C, H, W).
        weight: :math:`w \ge 0`; ``0`` returns a copy of ``v``; at most the largest number of
            ``v``'s dtype (a ``ValueError`` naming ``weight`` otherwise).
        n_iter: maximum number of iterations.
        tol: relative duality-gap tolerance.
    """
    check_real_images(v, "v")
    n_iter = _check_params(weight, n_iter, tol)
    check_fits_dtype("weight", weight, v.dtype, "v")  # Inf in v's dtype: Inf * 0 = NaN in the iteration
    if weight == 0 or v.numel() == 0:
        return v.clone()
    # u = v + w div p moves no entry by more than 4w (|div p| <= 4): where 4w <= eps^2 max|v| that is below
    # rounding, and there 1/(8w) grad v may overflow the dtype (NaN): such samples, and zero ones, keep p = 0
    amax = v.detach().abs().flatten(1).amax(1).double()
    fixed = (amax == 0) | (amax * torch.finfo(v.dtype).eps ** 2 >= 4 * weight)
    if bool(fixed.all()):
        return v.clone()
    step = 1.0 / (GRAD_NORM_SQ * weight)
    p_prev = torch.zeros(*v.shape[:2], 2, *v.shape[2:], dtype=v.dtype, device=v.device)
    r, t = p_prev, 1.0
    fixed = fixed.to(v.device)
    done = fixed.view(-1, 1, 1, 1, 1) if bool(fixed.any()) else None  # samples that keep their p (docstring)
    for k in range(1, n_iter + 1):
        p = _project_ball(r + step * grad2d(v + weight * div2d(r)), 1.0)
        if done is not None:
            p = torch.where(done, p_prev, p)
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        r = p + ((t - 1.0) / t_next) * (p - p_prev)
        p_prev, t = p, t_next
        if k % _CHECK_EVERY == 0 or k == n_iter:
            u = v + weight * div2d(p)
            primal, gap = prox_gap(u, v, p, weight)
            small = (gap <= tol * primal) | fixed
            if bool(small.all()):
                break
            done = small.view(-1, 1, 1, 1, 1) if done is None else done | small.view(-1, 1, 1, 1, 1)
    return u


def _check_box(box: tuple[float, float] | None) -> None:
    if box is None:
        return
    ok = isinstance(box, tuple) and len(box) == 2 and all(is_real(b) for b in box)
    if not (ok and math.isfinite(box[0]) and math.isfinite(box[1]) and box[0] < box[1]):
        raise ValueError(f"box must be None or a pair (lo, hi) of finite numbers with lo < hi, got {box!r}")


def pdhg_tv(
    physics,
    y: Tensor,
    weight: float,
    *,
    box: tuple[float, float] | None = (0.0, 1.0),
    n_iter: int = 500,
    tol: float = 1e-5,
    x0: Tensor | None = None,
) -> tuple[Tensor, TVHistory]:
    r"""TV-regularised least squares by the primal-dual hybrid gradient method (Chambolle & Pock 2011):

    .. math::
        \min_x \tfrac12\|Ax - y\|^2 + w\,\mathrm{TV}(x) + \iota_{[lo, hi]}(x)

    per sample, with :math:`K = (A; \nabla)`, dual variables :math:`q = (q_1, q_2)` and one dual
    step per block (diagonal preconditioning, Pock & Chambolle 2011), chosen scale-free in the
    units of :math:`x` and :math:`y`: with :math:`L = \|A\|^2`, :math:`\sigma_1 = 0.1`,
    :math:`\sigma_2 = L/8` and :math:`\tau = 0.99 / (1.1 L)`, so that
    :math:`\tau(\sigma_1 L + 8\sigma_2) = 0.99 < 1`:

    .. math::
        q_1 &\leftarrow (q_1 + \sigma_1(A\bar x - y)) / (1 + \sigma_1), \\
        q_2 &\leftarrow \Pi_{|\cdot| \le w}(q_2 + \sigma_2\nabla\bar x), \\
        x^+ &= \Pi_{[lo,hi]}(x - \tau(A^* q_1 - \operatorname{div} q_2)), \quad \bar x = 2x^+ - x.

    :math:`\|A\|` comes from :func:`operators.checks.opnorm` (cached power iteration);
    :math:`A\bar x` and :math:`\nabla\bar x` are formed by linearity, so an iteration costs one
    :math:`A`, one :math:`A^*`, one gradient and one divergence. A sample stops when the
    relative change of :math:`x` and both blocks of the dual residual
    :math:`D_i = (q_i - q_i^+)/\sigma_i + K_i(\bar x - x^+)` (:math:`K_1 = A`, :math:`K_2 = \nabla`;
    zero exactly when :math:`K_i x^+ \in \partial f_i^*(q_i^+)`, Goldstein et al. 2015) are small
    (norms per sample, not squared):

    .. math::
        \|x^+ - x\| \le \mathrm{tol}\,\max(\|x^+\|, s), \quad
        \|D_1\| \le \mathrm{tol}\,\max(\|y\|, \|A\|\,s), \quad
        \|D_2\| \le \mathrm{tol}\,\max(\|\nabla x^+\| + \|q_2^+\|/\sigma_2, \sqrt8\,s),

    (its iterates are then kept while the others go on, so that a sample's result does not depend
    on the rest of the batch); the loop ends when every sample has stopped, or after ``n_iter``
    iterations. The floor :math:`s` is 0 for a sample with :math:`y \ne 0`
    and :math:`\|x_0\|` (the start, after the box) for a sample with :math:`y = 0`: there the
    solution is 0 if the box holds 0, every other scale vanishes with it and the tests would
    never pass, so the start sets the scale. (:math:`x` alone is no test: its change is compared with
    :math:`\|x^+\|`, which a constant offset of the image inflates, while the TV dual that moves
    :math:`x` may still be far from its limit.)

    Args:
        physics: linear operator with ``A`` and ``A_adjoint`` (a deepinv ``LinearPhysics``).
        y: measurements of the shape of ``physics.A(x)``.
        weight: :math:`w \ge 0`.
        box: ``(lo, hi)`` constraint on every entry of :math:`x`, or ``None``.
        n_iter: maximum number of iterations.
        tol: relative tolerance of the change of :math:`x` and of the dual residuals.
        x0: initial image (B, C, H, W); default :math:`\Pi_{[lo,hi]}(A^* y)`.

    Returns:
        ``(x, history)`` with the objective :math:`\tfrac12\|Ax - y\|^2 + w\,\mathrm{TV}(x)` per
        iteration and sample in ``history``.
    """
    check_tensor(y, "y")
    if y.is_complex():
        raise TypeError(f"y must be real for pdhg_tv (TV of real images), got dtype {y.dtype}; pass MRI "
                        "measurements in the real layout (B, 2, H, W)")
    n_iter = _check_params(weight, n_iter, tol)
    _check_box(box)
    x = physics.A_adjoint(y)
    if x.ndim != 4:
        raise ValueError(f"pdhg_tv needs images (B, C, H, W); A^*y has shape {tuple(x.shape)}")
    check_real_images(x, "A^*y")
    if x0 is not None:
        check_tensor(x0, "x0", ndim=4, like=x)
        if x0.shape != x.shape:
            raise ValueError(f"x0 must have the shape {tuple(x.shape)} of A^*y, got {tuple(x0.shape)}")
        x = x0.clone()
    if box is not None:
        box = box_bounds(x, *box)
        x = x.clamp(*box)
    norm_a = opnorm(physics, (1, *x.shape[1:]), dtype=x.dtype, like=x)
    if norm_a == 0:
        raise ValueError("physics has a zero operator norm")
    lip = norm_a**2
    sigma1, sigma2 = _SIGMA_DATA, lip / GRAD_NORM_SQ
    tau = 0.99 / (lip * (sigma1 + 1.0))
    ax, gx = physics.A(x), grad2d(x)
    ax_bar, gx_bar = ax, gx
    q1, q2 = torch.zeros_like(ax), torch.zeros_like(gx)
    objective, converged = [], False
    with values_trusted():  # y and x0 are checked: no NaN/Inf scan (a host read) in A and A^* per iteration
        size_y = _norm(y)
        floor = torch.where(size_y == 0, _norm(x), 0.0)  # the start's scale where y = 0 (docstring)
        done = [False] * x.shape[0]
        for _ in range(n_iter):
            q1_new = (q1 + sigma1 * (ax_bar - y)) / (1.0 + sigma1)
            q2_new = _project_ball(q2 + sigma2 * gx_bar, weight) if weight > 0 else torch.zeros_like(q2)
            x_new = x - tau * (physics.A_adjoint(q1_new) - div2d(q2_new))
            if box is not None:
                x_new = x_new.clamp(*box)
            ax_new, gx_new = physics.A(x_new), grad2d(x_new)
            if any(done):  # a sample that passed its tests keeps its iterates (docstring)
                keep = torch.tensor(done, device=x.device)
                x_new, ax_new, gx_new, q1_new, q2_new = (
                    torch.where(keep.view(-1, *(1,) * (new.ndim - 1)), old, new)
                    for old, new in ((x, x_new), (ax, ax_new), (gx, gx_new), (q1, q1_new), (q2, q2_new)))
            objective.append(0.5 * _sq(ax_new - y) + weight * _pointwise_norm(gx_new).flatten(1).sum(1))
            d1, d2 = (q1 - q1_new) / sigma1 + ax_bar - ax_new, (q2 - q2_new) / sigma2 + gx_bar - gx_new
            small = ((_norm(x_new - x) <= tol * torch.maximum(_norm(x_new), floor))
                     & (_norm(d1) <= tol * torch.maximum(size_y, norm_a * floor))
                     & (_norm(d2) <= tol * torch.maximum(_norm(gx_new) + _norm(q2_new) / sigma2, GRAD_NORM_SQ**0.5 * floor)))
            ax_bar, gx_bar = 2 * ax_new - ax, 2 * gx_new - gx
            x, ax, gx, q1, q2 = x_new, ax_new, gx_new, q1_new, q2_new
            done = [a or b for a, b in zip(done, small.tolist())]  # the iteration's one host read
            if all(done):
                converged = True
                break
    return x, TVHistory(torch.stack(objective), converged)
