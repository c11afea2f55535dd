r"""Block-coordinate inversion of a deep network.

The :class:`~liftinv.problem.LiftedProblem` of the network with every variable free but the
output, which is clamped to the (projected) data, or, with ``free_output``, free too with the loss
:math:`\tfrac12\|x_K - f_\delta\|^2`; the regulariser is the term on the input :math:`x_0`.

**Joint (Jacobi) steps.** Every variable block moves at once, from gradients taken at one state
(:class:`~liftinv.solvers.Simultaneous` schedule), with Nesterov extrapolation (the configured rule)
restarted by the gradient scheme of O'Donoghue & Candes (2015): when
:math:`\langle y - x^+, x^+ - x\rangle > 0` over all blocks together (:math:`y` the extrapolated point,
:math:`x^+` the new iterate, i.e. the step goes against the momentum): an accelerated
proximal-gradient method on all variables jointly. The test and the restart are per sample (the
first dimension of every variable block; :meth:`~liftinv.solvers.Nesterov.restart`): the samples'
problems are independent, and one sample's restart does not reset the others' momentum. The test needs no energy, which costs a
forward pass through every layer; the energy is evaluated every ``config.energy_every`` sweeps
and at the end of each solve (encoder benchmark at 1 % noise, fixed TV weight, 1200 sweeps: the
same input, 27.3 dB, in 20.6 s instead of 24.3 s with the energy scheme evaluated at every
sweep). Top-down Gauss-Seidel sweeps with per-block momentum move the input along directions
that the network does not see (the part fixed by the regulariser) only by diffusion through the
layers, one layer per sweep; joint momentum accelerates that coherent mode
(benchmark images at 1 % noise, fixed TV weight, same number of sweeps: encoder, 400 sweeps,
24.7 dB instead of 19.6 dB; ResNet, 150 sweeps, 19.5 dB instead of 13.1 dB).

A joint step needs a joint majoriser. Write the energy as :math:`g + h` with the separable
:math:`h = \sum_k \lambda_k\Phi_k(x_k) + \alpha J(x_0)` (the block proxes) and
:math:`g = \sum_k \lambda_k[\Phi_k^*(a_k) - \langle x_k, a_k\rangle]` plus the smooth terms
:math:`T_i` (curvature :math:`\ell_i`). In a direction :math:`d` (zero on fixed variables), with
:math:`e_k = \sum_j M_{kj} d_j` over the free inputs of layer :math:`k` and
:math:`0 \preceq \Phi_k^{*\prime\prime} \preceq I`,

.. math:: d^\top\nabla^2 g\, d \le \sum_k \lambda_k\big[|e_k|^2 - 2\langle d_k, e_k\rangle\big] + \sum_i \ell_i|d_i|^2
    \le S(d) := \sum_k \lambda_k|e_k - d_k|^2 + \sum_i \ell_i|d_i|^2,

a quadratic form independent of the point (the network's parameters are fixed). Its diagonal
block for variable :math:`b` has the top eigenvalue :math:`w_b = L_b + \lambda_b[b > 0]`, with
:math:`L_b \ge \lambda_{\max}(\sum_k \lambda_k M_{kb}^* M_{kb} + \ell_b)` from
``LiftedProblem.lipschitz`` (the curvature of block :math:`b` alone). With the coupling factor
:math:`t = \lambda_{\max}(W^{-1/2} S W^{-1/2})`, :math:`W = \operatorname{diag}(w_b)`
(about 1 for uncoupled blocks, at most the number of blocks; by power iteration on one sample,
since the maps act on every sample alike),

.. math:: d^\top\nabla^2 g\, d \le \sum_b D_b |d_b|^2, \qquad D_b = t\, w_b,

so that the step :math:`1/D_b` per block (:class:`JointProblem`) makes each joint proximal-gradient
step decrease the energy (descent lemma) and the extrapolated steps are those of FISTA for that
majoriser. (The ResNet of the inversion benchmark, lifted exactly: :math:`t \approx 1.7`. An
earlier bound by Cauchy-Schwarz over the inputs of each layer, :math:`D_b = m_b L_b + \lambda_b`
with :math:`m_b` up to twice the largest number of free inputs of a consumer of :math:`b`, gave
that network's input 3.5 times shorter steps; at a fixed weight and equal time the coupling
factor reached a lower energy on it and on the encoder.) With :math:`1/L_b` the cross terms are
ignored: on the ResNet benchmark the momentum was restarted 10 times in 105 sweeps (10.9 dB).

A one-layer network (two blocks at most: the input and, with ``free_output``, the output) has no
depth to propagate through; it keeps top-down Gauss-Seidel sweeps, whose block steps need only
:math:`L_b` (each block moves with the others fixed), i.e. steps up to twice as long, and the
function scheme of restarts: the energy (of one layer) at every sweep, a restart when it
increases (perceptron benchmark, free output, 5 % noise, 300 sweeps: energy 2918 with it, 5416
with the gradient scheme, which restarted twice as often; on the deep benchmark networks both
schemes gave the same iterates; both measured when this scheme compared the energy summed over
the batch). So do rules other than :class:`~liftinv.solvers.Nesterov`, whose momentum (heavy
ball, Adam) is not in the point where the gradient is taken. This test and restart are per
sample too: each sample's energy (:meth:`~liftinv.problem.LiftedProblem.energies`) is compared
with its value at the previous sweep, and only the samples whose energy increased start their
momentum again (the rule's :meth:`~liftinv.solvers.Rule.restart`: Nesterov's :math:`x^-` and
:math:`t`, heavy ball's :math:`x^-`, Adam's moments and bias-correction count), so the iterates of
a batch are those of its samples solved alone; the history records the batch's sum.

Variables persist between solves (warm starts across the weights of the discrepancy search), and
so does the momentum while the problem is kept (regularisers without a smooth part): a solve of
the search lasts a few dozen to a few hundred sweeps, and restarting FISTA at each one discards the
acceleration built so far (encoder benchmark at 1 % noise, six 1.5 s solves: 26.0 dB with the
momentum kept, 14.0 dB with a restart per solve, where the search, misled by unconverged
discrepancies, drove the weight ten times lower). A weight change that turns the next step
against the momentum restarts it by the same test.
"""
from __future__ import annotations

import math
from time import perf_counter

import torch
from torch import Tensor

from liftinv.blocks import Var
from liftinv.inversion_pdhg import joint_norm_tensor
from liftinv.network import LiftedNetwork
from liftinv.potentials import Potential, SquaredError
from liftinv.affine import linear_part
from liftinv.problem import LIPSCHITZ_MARGIN, LiftedProblem, power_iteration
from liftinv.solvers import BCD, Nesterov, Simultaneous, SolverState, TopDown

#: Power iterations for the coupling factor of :class:`JointProblem` (once per problem: the
#: network's parameters are fixed during an inversion).
COUPLING_POWER_ITERS = 30


class JointProblem(LiftedProblem):
    r"""The lifted problem whose variable-block constants are the curvatures :math:`D_b` of a
    separable majoriser of the joint smooth part (see the module docstring), so that
    :class:`~liftinv.solvers.BCD` with the :class:`~liftinv.solvers.Simultaneous` schedule takes provably
    decreasing joint steps. Parameter blocks keep :meth:`LiftedProblem.lipschitz`. A joint step
    moves every input of a layer: one re-evaluation of the layer costs no more than updating it
    input by input, so pre-activations are recomputed (``incremental = False``). Its constants
    majorise the coupling between the variable blocks (``majorises_coupling = True``), so BCD
    keeps every group of the schedule whole."""

    incremental = False
    majorises_coupling = True

    def _var_lipschitz(self, block: Var) -> float:
        r""":math:`D_b = t\,w_b` over ``LIPSCHITZ_MARGIN`` (which ``lipschitz`` applies): the coupling
        factor :math:`t` and every block's :math:`w_b` are computed with the first block's constant
        after a refresh (``lipschitz`` caches each block's, and clears them when parameters move)."""
        if not any(isinstance(b, Var) for b in self._lip):
            self._own = {i: LIPSCHITZ_MARGIN * super(JointProblem, self)._var_lipschitz(Var(i))
                         + (self.network.layer(i).weight if i > 0 else 0.0) for i in self.free_vars}
            self._scale = self._coupling(self._own)
        return self._scale * self._own[block.index]

    def _coupling(self, own: dict[int, float]) -> float:
        r""":math:`t = \lambda_{\max}(W^{-1/2} S W^{-1/2})` with :math:`W = \operatorname{diag}(w_b)`
        (``own``) and :math:`S` the quadratic form of the module docstring, by
        :data:`COUPLING_POWER_ITERS` power iterations on one sample from a seeded start. A block
        with :math:`w_b = 0` (an input that no layer reads through a nonzero map, without a smooth
        term) is left out (:math:`D_b = 0`: BCD's step ``step_scale``, as for one layer)."""
        free, net = list(own), self.network
        # w_b = 0: block b is not in the smooth part (an input the network ignores), so it adds no coupling
        scales = [w ** -0.5 if w > 0 else 0.0 for w in own.values()]
        like = [self.xs[i][:1] for i in free]

        def scaled_form(v: list[Tensor]) -> list[Tensor]:
            with torch.enable_grad():
                d = {i: (c * t).detach().requires_grad_() for i, c, t in zip(free, scales, v)}
                total = sum(0.5 * term.lipschitz() * d[i].pow(2).sum()
                            for i, term in self.terms.items() if i in d and term.smooth)
                for k in range(1, net.depth + 1):
                    layer = net.layer(k)
                    parts = [linear_part(m, d[i]) for i, m in zip(layer.inputs, layer.maps) if i in d]
                    if k in d:
                        parts.append(-d[k])
                    if parts:
                        total = total + 0.5 * layer.weight * sum(parts).pow(2).sum()
                grads = torch.autograd.grad(total, list(d.values()))
            return [c * g for c, g in zip(scales, grads)]

        g = torch.Generator(device=like[0].device).manual_seed(0)
        v = [torch.randn(t.shape, dtype=t.dtype, device=t.device, generator=g) for t in like]
        return power_iteration(scaled_form, v, COUPLING_POWER_ITERS)[0]


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
            ``max_time``, ``rule``, ``energy_every``).
    """

    def __init__(self, network: LiftedNetwork, x0: Tensor, data: Tensor, projected: Tensor, y: Tensor | None,
                 free_output: bool, config):
        self.network, self.data, self.y, self.free_output, self.config = network, data, y, free_output, config
        with torch.no_grad():
            xs = network.feasible(x0, y)
        self.xs = xs if free_output else [*xs[:-1], projected]
        self.problem: LiftedProblem | None = None
        self.state: SolverState | None = None
        self.joint = network.depth > 1

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
            kind = JointProblem if self.joint else LiftedProblem
            self.problem = kind(net, self.xs, self.y, free_vars=range(net.depth + self.free_output),
                                train_params=False, terms=terms)
            self.state = None
        else:
            self.problem.terms.update(terms)
        return self.problem

    def solve(self, regularizer: Potential | None, history) -> int:
        r"""Run BCD from the current variables, recording into ``history``; returns the iterations.
        Stops after ``max_iter`` sweeps, when the free variables :math:`X` (all blocks together)
        change by :math:`\|X_k - X_{k-1}\| \le \text{tol}\,\|X_k\|` (``tol`` > 0; a joint step
        from a forward pass leaves the input in place), or after ``max_time`` seconds. Besides
        :class:`~liftinv.solvers.BCD`'s finiteness checks, a sweep reads the device once (a sync
        on a GPU): the two norms of the change, the number of samples that restart and, in the
        function scheme, the energy; the gradient scheme reads the energy a second time when it
        records it."""
        config, problem = self.config, self._problem(regularizer)
        solver = BCD(var_rule=config.rule, schedule=Simultaneous() if self.joint else TopDown())
        state = solver.init(problem) if self.state is None else self.state
        gradient_scheme = self.joint and isinstance(config.rule, Nesterov)
        energies = None if gradient_scheme else problem.energies()  # per sample, shape (B,)
        start, it = perf_counter(), 0
        while it < config.max_iter:
            it += 1
            previous = [problem.xs[i] for i in problem.free_vars]  # set() replaces, never overwrites
            looks = [config.rule.lookahead([x], state.var_states[i])[0] if i in state.var_states else x
                     for i, x in zip(problem.free_vars, previous)] if gradient_scheme else []
            state = solver.step(problem, state)
            current = [problem.xs[i] for i in problem.free_vars]
            steps = [c - p for c, p in zip(current, previous)]
            # one host read per sweep: the two norms, the samples that restart and (function scheme) the energy
            scalars = [joint_norm_tensor(*steps), joint_norm_tensor(*current)]
            if gradient_scheme:  # per sample (the first dimension of every variable block)
                restart = sum(((y - c) * d).flatten(1).sum(1) for y, c, d in zip(looks, current, steps)) > 0
            else:  # function scheme, per sample: where the sample's energy increased
                new = problem.energies()
                restart, energies = new > energies, new
                scalars.append(new.sum())
            scalars.append(restart.sum().to(scalars[0].dtype))
            step_norm, norm, *energy, restarted = torch.stack(scalars).tolist()
            change = step_norm / max(norm, 1e-30)
            last = (it == config.max_iter or (config.tol > 0 and change <= config.tol)
                    or perf_counter() - start > config.max_time)
            if gradient_scheme:
                energy = float(problem.energy()) if last or it % config.energy_every == 0 else math.nan
            else:
                energy = energy[0]
            if restarted == len(restart):
                state.var_states.clear()  # restart the momentum
            elif restarted:  # of these samples only: the others do not see it
                for i, x in zip(problem.free_vars, current):
                    if i in state.var_states:
                        state.var_states[i] = config.rule.restart([x], state.var_states[i], restart)
            history.record(energy, change)
            if last:
                break
        self.xs, self.state = problem.xs, state
        return it
