r"""Block-coordinate inversion of a deep network (SPEC section 6).

The :class:`~liftinv.problem.LiftedProblem` of the network with every variable free but the
output, which is clamped to the (projected) data, or, with ``free_output``, free too with the loss
:math:`\tfrac12\|x_K - f_\delta\|^2`; the regulariser is the term on the input :math:`x_0`. Each solve
runs :class:`~liftinv.solvers.BCD` sweeps (top-down Gauss-Seidel over the variable blocks, each a
forward-backward step with its own Lipschitz step; the input block's prox is the regulariser's)
with the configured rule, Nesterov extrapolation by default, restarted whenever the energy
increases (O'Donoghue & Candes 2015). Variables persist between solves (warm starts).
"""
from __future__ import annotations

from time import perf_counter

import torch
from torch import Tensor

from liftinv.network import LiftedNetwork
from liftinv.potentials import Potential, SquaredError
from liftinv.problem import LiftedProblem
from liftinv.solvers import BCD


class LiftedBCD:
    """BCD inversion, started from the forward pass of ``x0``.

    Args:
        network: the lifted network.
        x0: initial input.
        data: the raw data :math:`f_\\delta` (loss target with ``free_output``).
        projected: the data projected on the domain of the last activation (clamped output).
        y: measurements of the network's data maps, if any.
        free_output: whether the output variable is free.
        config: an :class:`~liftinv.inversion.InversionConfig` (``max_iter``, ``tol``,
            ``max_time``, ``rule``).
    """

    def __init__(self, network: LiftedNetwork, x0: Tensor, data: Tensor, projected: Tensor, y: Tensor | None,
                 free_output: bool, config):
        self.network, self.data, self.y, self.free_output, self.config = network, data, y, free_output, config
        with torch.no_grad():
            xs = network.feasible(x0, y)
        self.xs = xs if free_output else [*xs[:-1], projected]
        self.problem: LiftedProblem | None = None

    @property
    def input(self) -> Tensor:
        return self.xs[0]

    def _problem(self, regularizer: Potential | None) -> LiftedProblem:
        """The lifted problem with ``regularizer`` on the input. Kept between solves when the
        regulariser has no smooth part (its Lipschitz estimates stay valid: warm start), else
        rebuilt (the input block's Lipschitz constant depends on the regulariser's weight)."""
        net = self.network
        terms = {} if regularizer is None else {0: regularizer}
        if self.free_output:
            terms[net.depth] = SquaredError(self.data)
        if self.problem is None or regularizer is None or regularizer.smooth:
            self.problem = LiftedProblem(net, self.xs, self.y, free_vars=range(net.depth + self.free_output),
                                         train_params=False, terms=terms)
        else:
            self.problem.terms.update(terms)
        return self.problem

    def solve(self, regularizer: Potential | None, history) -> int:
        """Run BCD from the current variables, recording into ``history``; returns the iterations.
        Stops after ``max_iter`` sweeps, when :math:`\\|u_k - u_{k-1}\\| \\le \\text{tol}\\,\\|u_k\\|`
        (``tol`` > 0), or after ``max_time`` seconds."""
        config, problem = self.config, self._problem(regularizer)
        solver = BCD(var_rule=config.rule)
        state, energy = solver.init(problem), float(problem.energy())
        start, it = perf_counter(), 0
        while it < config.max_iter:
            it += 1
            previous = problem.xs[0]
            state = solver.step(problem, state)
            u, new = problem.xs[0], float(problem.energy())
            change = float((u - previous).norm() / u.norm().clamp_min(1e-30))
            history.record(new, change)
            if new > energy:
                state.var_states.clear()  # restart the momentum
            energy = new
            if (config.tol > 0 and change <= config.tol) or perf_counter() - start > config.max_time:
                break
        self.xs = problem.xs
        return it
