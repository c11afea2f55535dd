r"""Gradient-based inversion baseline: autograd through the whole network.

.. math:: \min_u\; \tfrac12\|N(u) - f_\delta\|^2 + \alpha J_\varepsilon(u)

per sample (see :func:`invert_gradient` for what a batch shares), by Adam (projected onto the box, if any) or L-BFGS on :math:`u`, with gradients by
backpropagation through :math:`N` (the network's parameters get no gradient). L-BFGS without a box
is ``torch.optim.LBFGS`` (strong Wolfe line search); with a box, :class:`ProjectedLBFGS` (active
set, projected Armijo search), whose fixed points are the box's KKT points: clamping torch's
L-BFGS after its steps invalidates its memory, and it ended far from the bounded minimiser.
:math:`J_\varepsilon` is :math:`J` made differentiable: total variation smoothed as
:math:`\sum\sqrt{|\nabla u|^2 + \varepsilon^2} - \varepsilon` (:meth:`TV.smooth_value`), a box
enforced by projection (Adam: after each step), every other potential through autograd of its value
(e.g. the subgradient :math:`\operatorname{sign}(u)` of :math:`\|u\|_1`). The weight is chosen
as in :func:`liftinv.invert` (discrepancy principle with the same search), so both methods are
compared at their own discrepancy-principle weight.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from liftinv.inversion import InversionConfig, InversionResult, Task, prepare, solve_task
from liftinv.network import LiftedNetwork
from liftinv.potentials import Box, Potential, TV
from liftinv.validation import box_bounds, check_flag, positive_finite, refuse_inference_mode


#: L-BFGS iterations per call of ``torch.optim.LBFGS.step`` (and per stopping test): called with
#: one iteration at a time, it stalled at points that are not stationary.
LBFGS_ITERATIONS_PER_STEP = 5


@dataclass(frozen=True)
class GradientOptimizer:
    """Optimiser of the baseline.

    Args:
        lr: Adam learning rate (L-BFGS: initial step, 1 recommended).
        lbfgs: use L-BFGS instead of Adam: without a box, torch's (history 10, strong Wolfe,
            :data:`LBFGS_ITERATIONS_PER_STEP` iterations per recorded step of the history); with
            a box, :class:`ProjectedLBFGS` (history :data:`LBFGS_HISTORY`, one recorded step per
            iteration).
        eps: TV smoothing :math:`\\varepsilon`.
    """

    lr: float = 1e-2
    lbfgs: bool = False
    eps: float = 1e-3

    def __post_init__(self):
        for name in ("lr", "eps"):
            positive_finite(name, getattr(self, name))
        check_flag("lbfgs", self.lbfgs)


def _box(regularizer: Potential | None) -> tuple[float, float] | None:
    if isinstance(regularizer, TV):
        return regularizer.box
    if isinstance(regularizer, Box):
        return regularizer.lo, regularizer.hi
    return None


def _penalty(regularizer: Potential | None, u: Tensor, eps: float) -> Tensor:
    """The smoothed penalty per sample, shape ``(B,)``."""
    if regularizer is None or isinstance(regularizer, Box):
        return u.new_zeros(u.shape[0])
    if isinstance(regularizer, TV):
        return regularizer.smooth_value(u, eps)
    return regularizer.value(u)


#: Memory (curvature pairs) of the projected L-BFGS, as torch's ``history_size`` in the unboxed case.
LBFGS_HISTORY = 10
#: Armijo constant and the most halvings of the step in the projected line search.
ARMIJO, MAX_HALVINGS = 1e-4, 40


class ProjectedLBFGS:
    r"""L-BFGS on :math:`\min_{lo \le u \le hi} f(u)`, per sample (every sample of the batch has its own
    memory, active set and line search: a batch gives the iterates of its samples solved alone).

    Two-metric projection (Bertsekas 1982) with an active set: at :math:`u` with gradient :math:`g`,
    the entries at a bound whose gradient points outward,
    :math:`\mathcal A = \{i: u_i = lo,\ g_i > 0\} \cup \{i: u_i = hi,\ g_i < 0\}`, are frozen; on the
    free entries :math:`\mathcal F` the direction is :math:`d_{\mathcal F} = -H g_{\mathcal F}`, :math:`H`
    the L-BFGS two-loop matrix of the stored pairs :math:`(s, y)` restricted to :math:`\mathcal F`,
    :math:`(s_{\mathcal F}, y_{\mathcal F})`, of those with :math:`s_{\mathcal F}^\top y_{\mathcal F} > 0`
    (so :math:`H` is positive definite; :data:`LBFGS_HISTORY` pairs, :math:`H_0 = \gamma I`,
    :math:`\gamma = s^\top y / y^\top y` of the latest pair, :math:`\min(1, 1/\|g_{\mathcal F}\|_1)`
    before the first), and :math:`d_{\mathcal A} = 0`, as in Schmidt's ``minConf_TMP``. The memory is
    kept when :math:`\mathcal A` changes (emptying it there, which on images with a background at a
    bound happens on most iterations, left the method barely faster than projected gradient); a pair
    is stored only when :math:`s^\top y > 0`. The step is
    :math:`u^+ = P(u + t d)`, :math:`P` the projection on the box, with :math:`t = \text{lr}` halved
    until Armijo's condition on the projected arc
    :math:`f(u^+) \le f(u) + c\,g^\top(u^+ - u)`, :math:`c =` :data:`ARMIJO`, holds. Where
    :math:`g^\top(u^+ - u) \ge 0` (the projection turned the direction) or the search fails after
    :data:`MAX_HALVINGS` halvings, the memory is emptied and the step is the projected gradient step,
    :math:`d = -\gamma g_{\mathcal F}`, which the condition accepts for a small enough :math:`t`.

    :math:`d = 0` exactly at the points satisfying the box KKT conditions (:math:`g_i = 0` inside,
    :math:`g_i \ge 0` at :math:`lo`, :math:`g_i \le 0` at :math:`hi`): they are its fixed points.

    Args:
        evaluate: ``u -> (f, g)``: the objective per sample ``(B,)`` and its gradient (shape of ``u``).
        lo, hi: the box.
        lr: the first trial step :math:`t`.
    """

    def __init__(self, evaluate, lo: float, hi: float, lr: float):
        self.evaluate, self.lo, self.hi, self.lr = evaluate, lo, hi, lr
        self.pairs: list[tuple[Tensor, Tensor, Tensor]] = []  # (s, y, kept), kept False where a sample has none
        self.gamma: Tensor | None = None  # per sample, NaN before the first pair

    def _reset(self, samples: Tensor) -> None:
        self.pairs = [(s, y, kept & ~samples) for s, y, kept in self.pairs]

    def _scale(self, v: Tensor) -> Tensor:
        r"""Per sample, the initial inverse Hessian scale :math:`\gamma`: :math:`s^\top y / y^\top y`
        of the last stored pair, or :math:`\min(1, 1/\|v\|_1)` for a sample without one."""
        first = 1 / v.abs().sum(1).clamp_min(1.0)
        return first if self.gamma is None else torch.where(torch.isnan(self.gamma), first, self.gamma)

    def _direction(self, g: Tensor, free: Tensor) -> Tensor:
        """:math:`-H g` on the free entries (two-loop recursion per sample), 0 on the others."""
        q = torch.where(free, g, 0.0)
        pairs = []  # (s_F, y_F, 1 / s_F'y_F), rho = 0 for a pair not kept or without curvature on F
        for s, y, kept in self.pairs:
            s, y = torch.where(free, s, 0.0), torch.where(free, y, 0.0)
            sy = (s * y).sum(1)
            use = kept & (sy > 0)
            pairs.append((s, y, torch.where(use, 1 / torch.where(use, sy, 1.0), 0.0)))
        alphas = []
        for s, y, rho in reversed(pairs):
            a = rho * (s * q).sum(1)
            q = q - a[:, None] * y
            alphas.append(a)
        r = self._scale(q)[:, None] * q
        for (s, y, rho), a in zip(pairs, reversed(alphas)):
            b = rho * (y * r).sum(1)
            r = r + (a - b)[:, None] * s
        return -r

    def step(self, u: Tensor, f: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One iteration from ``u`` (flattened, ``(B, n)``, inside the box) with objective ``f`` and
        gradient ``g`` there; returns ``(u+, f+, g+, moved)``, ``moved`` the samples that moved
        (a sample at a KKT point, or whose step no longer decreases ``f`` in floating point, stays)."""
        at_lo, at_hi = u <= self.lo, u >= self.hi
        active = (at_lo & (g > 0)) | (at_hi & (g < 0))
        free = ~active
        stationary = ~(torch.where(free, g, 0.0) != 0).any(1)
        d = self._direction(g, free)
        new_u, new_f, new_g = u.clone(), f.clone(), g.clone()
        pending, steepest = ~stationary, torch.zeros_like(stationary)
        t = torch.full_like(f, self.lr)
        for _ in range(2 * MAX_HALVINGS + 2):
            if not bool(pending.any()):
                break
            trial = torch.where(pending[:, None], (u + t[:, None] * d).clamp(self.lo, self.hi), new_u)
            slope = (g * (trial - u)).sum(1)
            turned = pending & ~steepest & (slope >= 0)
            f_t, g_t = self.evaluate(trial)
            ok = pending & ~turned & (f_t <= f + ARMIJO * slope)
            new_u, new_f = torch.where(ok[:, None], trial, new_u), torch.where(ok, f_t, new_f)
            new_g = torch.where(ok[:, None], g_t, new_g)
            pending = pending & ~ok
            t = torch.where(pending, t / 2, t)
            give_up = pending & (turned | (t < self.lr * 2.0**-MAX_HALVINGS))
            restart = give_up & ~steepest  # the quasi-Newton step failed: projected gradient step
            if bool(restart.any()):
                self._reset(restart)
                d = torch.where(restart[:, None], -self._scale(g)[:, None] * torch.where(free, g, 0.0), d)
                t = torch.where(restart, torch.full_like(t, self.lr), t)
                steepest = steepest | restart
            pending = pending & ~(give_up & ~restart)  # the projected gradient step failed too: stay
        moved = (new_u != u).any(1)
        s, y = new_u - u, new_g - g
        sy = (s * y).sum(1)
        keep = moved & (sy > 0)
        if bool(keep.any()):
            self.pairs = [*self.pairs, (s, y, keep)][-LBFGS_HISTORY:]
            gamma = sy / (y * y).sum(1).clamp_min(torch.finfo(y.dtype).tiny)
            self.gamma = torch.where(keep, gamma, torch.full_like(gamma, math.nan) if self.gamma is None else self.gamma)
        return new_u, new_f, new_g, moved


class GradientInversion:
    """Autograd inversion; keeps ``u`` between solves (warm starts)."""

    def __init__(self, task: Task, config: InversionConfig, optimizer: GradientOptimizer):
        self.task, self.config, self.optimizer = task, config, optimizer
        self.u = task.x0.clone()

    @property
    def input(self) -> Tensor:
        return self.u

    def solve(self, regularizer: Potential | None, history) -> int:
        """Run the optimiser from the current ``u``; returns the iterations done. L-BFGS also
        stops where the gradient vanishes exactly (torch's L-BFGS then returns without an
        iteration, so ``tol = 0`` would otherwise loop forever), and, with a box, where no sample
        moves (:class:`ProjectedLBFGS`: every sample at a KKT point of the box)."""
        config, opt = self.config, self.optimizer
        box = _box(regularizer)
        box = box if box is None else box_bounds(self.u, *box)
        u = (self.u if box is None else self.u.clamp(*box)).clone().requires_grad_(True)

        def evaluate(x: Tensor) -> tuple[Tensor, Tensor]:
            """The objective per sample and its gradient at ``x``."""
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                misfit = self.task.forward(x) - self.task.data
                loss = 0.5 * misfit.flatten(1).pow(2).sum(1) + _penalty(regularizer, x, opt.eps)
                grad = torch.autograd.grad(loss.sum(), x)[0]
            if not bool(torch.isfinite(grad).all()):
                raise ValueError(
                    f"the objective's gradient is not finite at the current input (regularizer "
                    f"{type(regularizer).__name__}: a nonsmooth one has no gradient at some points, e.g. a "
                    "deepinv TV prior at a flat image; start from another x0, or use liftinv.TV, which this "
                    "baseline smooths)"
                )
            return loss.detach(), grad

        if opt.lbfgs and box is not None:
            return self._solve_projected(evaluate, u.detach(), box, history)

        def closure() -> Tensor:
            loss, u.grad = evaluate(u)
            return loss.sum()

        if opt.lbfgs:
            optim = torch.optim.LBFGS([u], lr=opt.lr, history_size=10, line_search_fn="strong_wolfe",
                                      tolerance_grad=0.0, tolerance_change=0.0)  # config.tol decides
        else:
            optim = torch.optim.Adam([u], lr=opt.lr)
        start, it = time.perf_counter(), 0
        while it < config.max_iter:
            before = u.detach().clone()
            if opt.lbfgs:  # several iterations per call: one at a time, torch's L-BFGS stalls
                optim.param_groups[0]["max_iter"] = min(LBFGS_ITERATIONS_PER_STEP, config.max_iter - it)
            loss = optim.step(closure)
            done = it  # iterations before this step
            it = optim.state[u]["n_iter"] if opt.lbfgs else it + 1
            if box is not None:
                with torch.no_grad():
                    u.clamp_(*box)
            change = float((u.detach() - before).norm() / u.detach().norm().clamp_min(1e-30))
            history.record(loss, change)
            if (config.tol > 0 and change <= config.tol) or time.perf_counter() - start > config.max_time:
                break
            if it == done:  # L-BFGS took no iteration: the gradient vanishes exactly, u is stationary
                break
        self.u = u.detach()
        return it

    def _solve_projected(self, evaluate, u: Tensor, box: tuple[float, float], history) -> int:
        """L-BFGS with a box: :class:`ProjectedLBFGS` on the flattened samples, one history entry
        (the objective before the iteration, the relative change of ``u``) per iteration."""
        config, shape = self.config, u.shape

        def evaluate_flat(x: Tensor) -> tuple[Tensor, Tensor]:
            f, g = evaluate(x.reshape(shape))
            return f, g.reshape(x.shape)

        method = ProjectedLBFGS(evaluate_flat, *box, self.optimizer.lr)
        x = u.reshape(shape[0], -1)
        f, g = evaluate_flat(x)
        start, it = time.perf_counter(), 0
        while it < config.max_iter:
            it += 1
            new, new_f, new_g, moved = method.step(x, f, g)
            change = float((new - x).norm() / new.norm().clamp_min(1e-30))
            history.record(f.sum(), change)
            x, f, g = new, new_f, new_g
            if (config.tol > 0 and change <= config.tol) or time.perf_counter() - start > config.max_time:
                break
            if not bool(moved.any()):  # every sample at a KKT point (or no decrease left in floating point)
                break
        self.u = x.reshape(shape)
        return it


def invert_gradient(
    network: LiftedNetwork | nn.Module,
    output: Tensor,
    *,
    input_shape: Sequence[int] | None = None,
    regularizer: Potential | None = None,
    noise_level: float | Tensor | None = None,
    physics=None,
    x0: Tensor | None = None,
    y: Tensor | None = None,
    config: InversionConfig = InversionConfig(),
    optimizer: GradientOptimizer = GradientOptimizer(),
) -> InversionResult:
    """The gradient-based baseline, with the arguments and result of :func:`liftinv.invert`
    (``variables`` holds the input and the data); ``optimizer``: :class:`GradientOptimizer`.
    The recorded energy is the objective before each step. Unlike :func:`liftinv.invert`, it
    takes any ``nn.Module`` mapping ``(B, *input_shape)`` to the output (autograd is all it needs);
    one that :func:`liftinv.lift` refuses needs ``input_shape`` or ``x0``, and runs in the mode it
    is in (call ``model.eval()`` first if it has dropout or batch norm, whose running statistics
    the forward passes of a training-mode model would update).

    Batches (the objective is a sum over samples): Adam (elementwise) and L-BFGS with a box
    (:class:`ProjectedLBFGS`) move each sample as if it were solved alone; L-BFGS without a box is
    one torch L-BFGS on the whole batch (one line search and memory: a sample's iterates depend on
    the others', not the minimiser). The stopping test (``tol``: the change of the whole batch)
    and ``max_time`` are for the batch, as in :func:`liftinv.invert`."""
    if not isinstance(config, InversionConfig):
        raise TypeError(f"config must be an InversionConfig, got {type(config).__name__}")
    if not isinstance(optimizer, GradientOptimizer):
        raise TypeError(f"optimizer must be a GradientOptimizer, got {type(optimizer).__name__}")
    refuse_inference_mode("invert_gradient")
    task = prepare(network, output, input_shape=input_shape, noise_level=noise_level, physics=physics, x0=x0, y=y,
                   any_module=True)
    return solve_task(task, GradientInversion(task, config, optimizer), regularizer, config)
