r"""Block-coordinate descent (proximal alternating linearised minimisation, PALM).

One sweep (``var_sweeps`` passes over the variable groups of the schedule, then the parameter
blocks in Jacobi groups), each block :math:`b` moved by its rule with the step
:math:`s_b = \text{step\_scale} / L_b`:

.. math:: x_b^+ = \operatorname{prox}_{s_b h_b}\big(y_b - s_b \nabla_b f(\ldots, y_b, \ldots)\big)

(:math:`y_b = x_b` for :class:`~liftinv.solvers.rules.Plain`). Blocks of one Jacobi group move
together from gradients taken at one state; their separate steps bound the joint step only when
no two of them enter the same layer's penalty (blocks that share a layer are coupled through its
pre-activation). So the parameter blocks are split, in order, into groups whose layers are
disjoint (``problem.param_layers``; one group per architecture whose layers each use one
parameter group, e.g. every training setup; several on an exact-form ResNet, whose layers read
the input map and earlier residual maps), and so is each variable group of the schedule
(``problem.var_layers``: a variable :math:`x_i` enters the penalty of its layer :math:`i` and of
every layer that reads it). On chains the schedules' groups are already disjoint
(:class:`~liftinv.solvers.schedules.OddEven` included) and stay as they are; on a penalty-form
ResNet, whose layer :math:`u_j = u_{j-1} + V_j z_j` reads :math:`u_{j-1}`, ``OddEven``'s group
holding :math:`u_{j-1}` and :math:`u_j` is split. A problem whose variable constants majorise
the coupling between the blocks (``problem.majorises_coupling``, as
:class:`liftinv.inversion_bcd.JointProblem`'s do for
:class:`~liftinv.solvers.schedules.Simultaneous`) keeps every variable group whole. With
such groups, ``Plain`` rules, ``step_scale`` < 2 and constants :math:`L_b` that bound the block
curvature, every group update decreases the energy (descent lemma); ``step_scale`` = 1 is the
classical PALM step (Bolte, Sabach & Teboulle 2014). :class:`~liftinv.solvers.rules.HeavyBall`
rules need ``step_scale`` :math:`< 2(1-\beta)` (iPiano), and then every group update decreases
:math:`E + \sum_b \tfrac{\beta}{2 s_b}|x_b - x_b^-|^2` (:math:`x_b^-` the block's value before
its last update) rather than :math:`E`. The constants are estimates (see
:class:`~liftinv.problem.LiftedProblem`): with few power iterations they can be below the
curvature, and then the guarantee does not hold.

With ``interleave=True`` the parameter blocks move during the last variable pass instead of
after it: each joins (Jacobi) the first group of the schedule that holds a variable its layers
read (``problem.param_inputs``) and comes after the groups of the free variables its layers
output (``problem.param_outputs``), or a last group when there is none. For a chain swept
top-down that pairs :math:`x_{k-1}` with :math:`\Theta_k`: both gradients come from the residual
:math:`r_k` and the pre-activation :math:`a_k` of the forward pass, one backward pass through
layer :math:`k` for the two, so a sweep costs one forward and one backward pass, as
backpropagation does (without it the parameters need the pre-activations at the moved
variables: a second forward pass). The pair is coupled through :math:`a_k`, so this Jacobi step
has no monotone-descent guarantee; and the parameters then see the residuals before the input
moved rather than after. Parameters shared by several layers (an unrolled network's
:math:`L_k` feeds a dual update and the next primal one, which reads that dual variable) wait
for every output of their layers to move: joined to the group of such an output, their layer's
residual would still be the forward pass's, zero, and that layer would give them no gradient.
After :meth:`LiftedProblem.forward(..., param_graphs=True) <liftinv.problem.LiftedProblem.forward>`
(as the trainer calls it for this order) the layers' graphs already reach the parameters. In our
training runs (Adam) this order learns about as much per epoch as the default one on the PNN
denoiser, at a lower cost per epoch, and more on the unrolled deblurring network, where the
default order levels off lower (see :mod:`liftinv.training_setups`).

With ``defer_params=True`` every parameter block still takes its gradient where the sweep places
it, but all of them move at the end of the sweep: until then the problem keeps each parameter
block at its value from the sweep's start (a rule's look-ahead point only while the block's own
gradient is taken). Every gradient of the sweep then sees the sweep's variables and the initial
parameters. That changes the sweep only where a gradient taken after a parameter block's step
reads a layer of that block. With ``interleave=True`` these are the gradients of variables read
by layers of several depths (the unrolled networks, not a chain): the layer above steps its
parameters first, and without deferral the variables below get its residual at the new
parameters, with deferral at the parameters of the forward pass, as backpropagation would. In
the default order they are the gradients of a later Jacobi group of parameter blocks that shares
a layer with an earlier one (the exact-form ResNet). The parameter blocks move as one Jacobi
group whose gradients were taken at different variables, so, as with ``interleave``, there is no
monotone-descent guarantee.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from liftinv.blocks import Block, Params, Var
from liftinv.solvers.protocol import BlockProblem
from liftinv.solvers.rules import Plain, Rule, check_real
from liftinv.solvers.schedules import Schedule, TopDown
from liftinv.validation import check_flag, checked_field, positive_int
from operators.checks import all_finite


class NonFiniteError(FloatingPointError):
    """A block update produced NaN or Inf, or the block's Lipschitz constant is not finite
    (``what``: ``"values"`` or ``"Lipschitz constant inf"``, ``"... nan"``); the problem keeps its
    last finite values."""

    def __init__(self, block: Block, iteration: int, what: str = "values"):
        self.block, self.iteration, self.what = block, iteration, what
        super().__init__(
            f"non-finite {what} in {type(block).__name__}({block.index}) at iteration {iteration}; "
            "the last finite state was kept"
        )


@dataclass
class SolverState:
    """Solver state: iterations done and the rule states of the variable and parameter blocks,
    keyed by block index (parameter states survive a rebuilt problem, variable states do not)."""

    iteration: int = 0
    var_states: dict[int, dict] = field(default_factory=dict)
    param_states: dict[int, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain containers only (loadable with ``torch.load(..., weights_only=True)``)."""
        return {"iteration": self.iteration, "var_states": dict(self.var_states), "param_states": dict(self.param_states)}

    @classmethod
    def from_dict(cls, d: dict) -> SolverState:
        """Inverse of :meth:`as_dict`."""
        return cls(int(d["iteration"]), dict(d["var_states"]), dict(d["param_states"]))


def check_solver_state(state: object) -> SolverState:
    """``state`` if it is a :class:`SolverState`, else a ``TypeError`` naming ``state`` (a saved
    state, :meth:`SolverState.as_dict`, failed with "'dict' object has no attribute ...")."""
    if not isinstance(state, SolverState):
        hint = " (SolverState.from_dict makes one from as_dict's dict)" if isinstance(state, dict) else ""
        raise TypeError(f"state must be a SolverState{hint}, got {type(state).__name__}")
    return state


def _disjoint_layers(problem: BlockProblem, blocks: list[Block]) -> list[list[Block]]:
    """``blocks`` (variables or parameters) split, in order, into Jacobi groups whose blocks
    share no layer (first fit: each block joins the first group none of whose blocks shares a
    layer with it), by the problem's ``var_layers`` or ``param_layers``; one group when the
    problem does not tell its blocks' layers, and for variables when its constants majorise the
    coupling between them (``majorises_coupling``)."""
    kinds = {type(b) for b in blocks}
    if Var in kinds and getattr(problem, "majorises_coupling", False):
        return [blocks]
    layers_of = {Var: getattr(problem, "var_layers", None), Params: getattr(problem, "param_layers", None)}
    if not all(callable(layers_of[kind]) for kind in kinds):
        return [blocks]
    groups: list[tuple[list[Block], set[int]]] = []
    for b in blocks:
        layers = set(layers_of[type(b)](b.index))
        fit = next((g for g in groups if not g[1] & layers), None)
        if fit is None:
            groups.append(([b], layers))
        else:
            fit[0].append(b)
            fit[1].update(layers)
    return [g for g, _ in groups]


def _first_non_finite(group: list[Block], values: list[list[Tensor]]) -> Block | None:
    """The first block of ``group`` with a NaN or Inf among its ``values`` (``None`` if none has):
    one host read (a device sync on a GPU) for the whole group, of the finiteness of every
    tensor's sum; only when one is not finite (a NaN/Inf entry, or a rare overflow of finite
    entries) are the blocks tested one by one (:func:`~operators.checks.all_finite`)."""
    sums = [torch.isfinite(t.sum()) for v in values for t in v]
    if not sums or bool(torch.stack(sums).all()):
        return None
    return next((b for b, v in zip(group, values) if not all(all_finite(t) for t in v)), None)


def _check_rule_state(name: str, state: object, block: Block, values: list[Tensor]) -> None:
    """A ``TypeError`` naming ``name`` unless the rule state ``state`` is a dict, and a
    ``ValueError`` naming ``name[key]`` unless each of its lists of tensors (the rules' per-value
    buffers: ``prev``, ``m``, ``v``) holds one tensor per tensor of ``values``, the block's, of its
    shape, dtype and device: a state made for another problem or batch (HeavyBall's
    :math:`x - x^-` broadcast the :math:`x^-` of one sample over a batch of four)."""
    if not isinstance(state, dict):
        raise TypeError(f"{name} must be a rule state (a dict), got {type(state).__name__}")
    for key, entry in state.items():
        if not (isinstance(entry, list) and entry and all(isinstance(t, Tensor) for t in entry)):
            continue
        if len(entry) != len(values) or any(
                (t.shape, t.dtype, t.device) != (v.shape, v.dtype, v.device) for t, v in zip(entry, values)):
            have = [f"{tuple(t.shape)} {t.dtype} on {t.device}" for t in entry]
            want = [f"{tuple(v.shape)} {v.dtype} on {v.device}" for v in values]
            raise ValueError(f"{name}[{key!r}] holds tensors {have}, but {block} holds {want}: a state made for another "
                             "problem or batch (reset_vars drops the variable states for a new batch; init makes the "
                             "states of a new problem)")


def _step(scale: float, lipschitz: float) -> float:
    return scale / lipschitz if lipschitz > 0 else scale


@dataclass(frozen=True)
class BCD:
    r"""Block-coordinate descent with per-block update rules.

    Args:
        var_rule: rule of the variable blocks (state per problem, see :meth:`reset_vars`).
        param_rule: rule of the parameter blocks (state kept across problems, keyed by group).
        schedule: order of the variable blocks.
        step_scale: step :math:`s_b = \text{step\_scale}/L_b`, in (0, 2); :math:`s_b =
            \text{step\_scale}` when :math:`L_b = 0` (a smooth part affine in the block, where
            any step decreases the energy). The descent guarantee (module docstring) needs
            :math:`< 2(1-\beta)` with :class:`~liftinv.solvers.rules.HeavyBall` rules.
        var_sweeps: passes over the variable blocks per iteration.
        interleave: move the parameters with the variables of the last pass (see the module
            docstring) instead of after it; needs ``problem.param_inputs``.
        defer_params: take each parameter block's gradient where the sweep places it, but with
            every other parameter block at its value from the start of the sweep (Jacobi over the
            parameter blocks, see the module docstring): the blocks keep their new values aside
            (and put their look-ahead points back once their gradients are taken) and all move
            at the end of the sweep, or none when the sweep raises.
    """

    var_rule: Rule = Plain()
    param_rule: Rule = Plain()
    schedule: Schedule = TopDown()
    step_scale: float = 1.0
    var_sweeps: int = 1
    interleave: bool = False
    defer_params: bool = False

    def __post_init__(self):
        for name, kind in (("var_rule", Rule), ("param_rule", Rule), ("schedule", Schedule)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        checked_field(self, "step_scale", check_real)
        if not 0 < self.step_scale < 2:
            raise ValueError(f"step_scale must be in (0, 2), got {self.step_scale}")
        checked_field(self, "var_sweeps", positive_int)
        check_flag("interleave", self.interleave)
        check_flag("defer_params", self.defer_params)

    def init(self, problem: BlockProblem) -> SolverState:
        """Fresh rule states for every block of ``problem``."""
        return self._complete(problem, SolverState())

    def reset_vars(self, state: SolverState) -> SolverState:
        """Drop the variable-block states (a new mini-batch); keep iteration and parameter states."""
        check_solver_state(state)
        return SolverState(state.iteration, {}, dict(state.param_states))

    def _complete(self, problem: BlockProblem, state: SolverState) -> SolverState:
        """``state`` with fresh rule states for the blocks of ``problem`` it has none for; a
        ``ValueError`` naming the first state kept that does not fit its block's values
        (:func:`_check_rule_state`); a ``TypeError`` unless ``state`` is a :class:`SolverState`."""
        check_solver_state(state)
        var_states, param_states = dict(state.var_states), dict(state.param_states)
        for b in problem.blocks():
            rule, states = (self.var_rule, var_states) if isinstance(b, Var) else (self.param_rule, param_states)
            if b.index not in states:
                states[b.index] = rule.init(problem.get(b))
            else:
                kind = "var_states" if isinstance(b, Var) else "param_states"
                _check_rule_state(f"state.{kind}[{b.index}]", states[b.index], b, problem.get(b))
        return SolverState(state.iteration, var_states, param_states)

    def step(self, problem: BlockProblem, state: SolverState) -> SolverState:
        """One sweep. Before each group's gradients it tells a problem that has
        ``expect(blocks)`` (e.g. :meth:`LiftedProblem.expect <liftinv.problem.LiftedProblem.expect>`)
        the blocks that the sweep moves after that group, so that only caches they read are kept.
        Raises :class:`NonFiniteError` (a ``FloatingPointError``) when a block update is not
        finite, or a block's Lipschitz constant is not (Inf where its curvature overflows the
        dtype, whose step 0 would never move the block; NaN); that update is not applied, but a
        rule's buffers may have advanced in place (:class:`~liftinv.solvers.rules.Adam`'s
        moments): a caller that retries after the error keeps a copy of the state (the trainer
        does not retry: it stops, its checkpoint holding the last complete epoch)."""
        state = self._complete(problem, state)
        iteration = state.iteration + 1
        blocks = problem.blocks()
        groups = [part for g in self.schedule([b for b in blocks if isinstance(b, Var)]) for part in _disjoint_layers(problem, g)]
        params = [b for b in blocks if isinstance(b, Params)]
        sequence = [g for _ in range(self.var_sweeps - 1) for g in groups] + self._last_pass(problem, groups, params)
        expect = getattr(problem, "expect", None)  # optional: what the step still moves
        deferred = [] if self.defer_params else None
        try:
            for n, group in enumerate(sequence):
                hint = None if expect is None else partial(expect, [b for g in sequence[n + 1:] for b in g])
                self._update(problem, group, state, iteration, hint, deferred)
        finally:
            if expect is not None:
                expect(None)
        for b, new in deferred or ():
            problem.set(b, new)
        return SolverState(iteration, state.var_states, state.param_states)

    def _last_pass(self, problem: BlockProblem, groups: list[list[Block]], params: list[Params]) -> list[list[Block]]:
        """The groups of the last variable pass with the parameter blocks placed in them."""
        if not params:
            return groups
        if not self.interleave:
            return [*groups, *_disjoint_layers(problem, params)]
        if not all(callable(getattr(problem, name, None)) for name in ("param_inputs", "param_outputs")):
            raise TypeError(f"interleave needs a problem with param_inputs and param_outputs, got {type(problem).__name__}")
        groups, rest = [list(g) for g in groups], []
        first = {b.index: n for n, g in reversed(list(enumerate(groups))) for b in g}
        for p in params:
            after = max((first[i] for i in problem.param_outputs(p.index) if i in first), default=-1)
            reads = [first[i] for i in problem.param_inputs(p.index) if i in first and first[i] > after]
            (groups[min(reads)] if reads else rest).append(p)
        return groups + ([rest] if rest else [])

    def _update(self, problem: BlockProblem, group: list[Block], state: SolverState, iteration: int,
                hint=None, deferred: list | None = None) -> None:
        """Move every block of ``group`` by its rule from gradients taken at one state (Jacobi).
        ``hint()`` is called once the look-ahead points are set (their gradients still read
        the caches that those moves update), before the gradients. With a list ``deferred``, the
        parameter blocks are put back at their values and their new values appended to it."""
        rules = [self.var_rule if isinstance(b, Var) else self.param_rule for b in group]
        stores = [state.var_states if isinstance(b, Var) else state.param_states for b in group]
        values = [problem.get(b) for b in group]
        looks = [rule.lookahead(v, st[b.index]) for b, v, rule, st in zip(group, values, rules, stores)]
        moved = [(b, v, y) for b, v, y in zip(group, values, looks) if y is not v]
        for b, _, y in moved:
            problem.set(b, y)
        if hint is not None:
            hint()
        grads = problem.grads(group)
        bad = _first_non_finite(group, grads)  # before any rule updates its state
        if bad is not None:
            for m, v, _ in moved:
                problem.set(m, v)
            raise NonFiniteError(bad, iteration)
        steps = []
        for b, rule in zip(group, rules):
            lipschitz = problem.lipschitz(b) if rule.needs_step else None
            if lipschitz is not None and not math.isfinite(lipschitz):  # before any rule moves
                for m, v, _ in moved:
                    problem.set(m, v)
                raise NonFiniteError(b, iteration, f"Lipschitz constant {lipschitz}")
            steps.append(None if lipschitz is None else _step(self.step_scale, lipschitz))
        results = [rule.advance(v, y, g, step, partial(problem.prox, b), st[b.index])
                   for b, v, y, g, step, rule, st in zip(group, values, looks, grads, steps, rules, stores)]
        bad = _first_non_finite(group, [new for new, _ in results])
        if bad is not None:
            for m, v, _ in moved:
                problem.set(m, v)
            raise NonFiniteError(bad, iteration)
        for b, (new, st), store in zip(group, results, stores):
            if deferred is not None and isinstance(b, Params):
                deferred.append((b, new))
            else:
                problem.set(b, new)
            store[b.index] = st
        if deferred is not None:
            for b, v, _ in moved:
                if isinstance(b, Params):
                    problem.set(b, v)
