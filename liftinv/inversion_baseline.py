r"""Gradient-based inversion baseline: autograd through the whole network.

.. math:: \min_u\; \tfrac12\|N(u) - f_\delta\|^2 + \alpha J_\varepsilon(u)

per sample, by Adam (projected onto the box, if any) or L-BFGS (strong Wolfe line search) on
:math:`u`, with gradients by backpropagation through :math:`N` (the network's parameters get no
gradient). :math:`J_\varepsilon` is :math:`J` made differentiable: total variation smoothed as
:math:`\sum\sqrt{|\nabla u|^2 + \varepsilon^2} - \varepsilon` (:meth:`TV.smooth_value`), a box
enforced by projection after each step, every other potential through autograd of its value
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
from liftinv.validation import check_flag, refuse_inference_mode
from operators.checks import is_real


#: L-BFGS iterations per call of ``torch.optim.LBFGS.step`` (and per stopping test): called with
#: one iteration at a time, it stalled at points that are not stationary.
LBFGS_ITERATIONS_PER_STEP = 5


@dataclass(frozen=True)
class GradientOptimizer:
    """Optimiser of the baseline.

    Args:
        lr: Adam learning rate (L-BFGS: initial step, 1 recommended).
        lbfgs: use L-BFGS (history 10, strong Wolfe, :data:`LBFGS_ITERATIONS_PER_STEP` iterations
            per recorded step of the history) instead of Adam.
        eps: TV smoothing :math:`\\varepsilon`.
    """

    lr: float = 1e-2
    lbfgs: bool = False
    eps: float = 1e-3

    def __post_init__(self):
        for name in ("lr", "eps"):
            value = getattr(self, name)
            if not is_real(value) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        check_flag("lbfgs", self.lbfgs)


def _box(regularizer: Potential | None) -> tuple[float, float] | None:
    if isinstance(regularizer, TV):
        return regularizer.box
    if isinstance(regularizer, Box):
        return regularizer.lo, regularizer.hi
    return None


def _penalty(regularizer: Potential | None, u: Tensor, eps: float) -> Tensor:
    if regularizer is None or isinstance(regularizer, Box):
        return u.new_zeros(())
    if isinstance(regularizer, TV):
        return regularizer.smooth_value(u, eps).sum()
    return regularizer.value(u).sum()


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
        iteration, so ``tol = 0`` would otherwise loop forever)."""
        config, opt = self.config, self.optimizer
        box = _box(regularizer)
        u = (self.u if box is None else self.u.clamp(*box)).clone().requires_grad_(True)

        def objective() -> Tensor:
            misfit = self.task.forward(u) - self.task.data
            return 0.5 * misfit.pow(2).sum() + _penalty(regularizer, u, opt.eps)

        def closure() -> Tensor:
            with torch.enable_grad():
                loss = objective()
                u.grad = torch.autograd.grad(loss, u)[0]
            if not bool(torch.isfinite(u.grad).all()):
                raise ValueError(
                    f"the objective's gradient is not finite at the current input (regularizer "
                    f"{type(regularizer).__name__}: a nonsmooth one has no gradient at some points, e.g. a "
                    "deepinv TV prior at a flat image; start from another x0, or use liftinv.TV, which this "
                    "baseline smooths)"
                )
            return loss.detach()

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
    the forward passes of a training-mode model would update)."""
    if not isinstance(config, InversionConfig):
        raise TypeError(f"config must be an InversionConfig, got {type(config).__name__}")
    if not isinstance(optimizer, GradientOptimizer):
        raise TypeError(f"optimizer must be a GradientOptimizer, got {type(optimizer).__name__}")
    refuse_inference_mode("invert_gradient")
    task = prepare(network, output, input_shape=input_shape, noise_level=noise_level, physics=physics, x0=x0, y=y,
                   any_module=True)
    return solve_task(task, GradientInversion(task, config, optimizer), regularizer, config)
