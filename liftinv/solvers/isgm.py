r"""Implicit stochastic gradient method (ISGM): a proximal-point step on the parameters per batch.

For the batch problem :math:`E_S` and the current parameters :math:`\Theta^k`,

.. math::
    (\Theta^{k+1}, X_S) \approx \arg\min_{\Theta, X_S}\; E_S(\Theta, X_S)
    + \sum_l \frac{1}{2\eta}\|\Theta_l - \Theta_l^k\|^2,

solved by ``inner_steps`` sweeps of an inner :class:`~liftinv.solvers.bcd.BCD` on all blocks. The
proximal term makes every parameter block :math:`(1/\eta)`-strongly convex; :math:`\eta` may be
large (:math:`\eta = \infty` is plain BCD).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from liftinv.blocks import Block, Params
from liftinv.solvers.bcd import BCD, NonFiniteError, SolverState, check_solver_state
from liftinv.solvers.protocol import BlockProblem
from liftinv.solvers.rules import check_real
from liftinv.validation import checked_field, positive_int


def _eta(name: str, value: object) -> float:
    """``value`` as a Python float if it is a real number > 0 (``math.inf`` included: no proximal
    term), else a ``TypeError`` (not a real number) or ``ValueError`` naming ``name``."""
    value = check_real(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


class ProximalPoint:
    r"""``problem`` plus :math:`\sum_l \frac{1}{2\eta}\|\Theta_l - \Theta_l^k\|^2`, anchored at the
    parameters :math:`\Theta^k` it holds when wrapped.

    Parameter gradients gain :math:`(\Theta_l - \Theta_l^k)/\eta` and their Lipschitz constants
    :math:`1/\eta`; everything else is the wrapped problem's. ``eta`` is a real number > 0
    (``math.inf``: no proximal term; a ``TypeError`` or ``ValueError`` naming it otherwise).
    """

    def __init__(self, problem: BlockProblem, eta: float):
        self.problem = problem
        self.eta = _eta("eta", eta)
        self.anchor = {b.index: [v.clone() for v in problem.get(b)] for b in problem.blocks() if isinstance(b, Params)}
        #: whether the inner sweep running now is the last of the outer step (see :meth:`expect`)
        self.last_sweep = False

    def expect(self, later: Sequence[Block] | None) -> None:
        """Pass the inner solver's hint (``LiftedProblem.expect``) on during the last inner sweep
        only: the sweeps before it are followed by another that reads every cache."""
        hint = getattr(self.problem, "expect", None)
        if hint is not None and (self.last_sweep or later is None):
            hint(later)

    def blocks(self) -> list[Block]:
        return self.problem.blocks()

    def get(self, block: Block) -> list[Tensor]:
        return self.problem.get(block)

    def set(self, block: Block, values: Sequence[Tensor]) -> None:
        self.problem.set(block, values)

    def prox(self, block: Block, values: Sequence[Tensor], step: float) -> list[Tensor]:
        return self.problem.prox(block, values, step)

    def __getattr__(self, name: str):
        """What the wrapped problem has beyond the protocol (``var_layers``, ``param_layers``,
        ``param_inputs``, ``param_outputs``, ``majorises_coupling``), so the inner BCD groups and
        orders the blocks as on the problem."""
        if "problem" not in self.__dict__:  # a copy being built: no problem yet to delegate to
            raise AttributeError(name)
        return getattr(self.__dict__["problem"], name)

    def grads(self, blocks: Sequence[Block]) -> list[list[Tensor]]:
        out = self.problem.grads(blocks)
        for i, b in enumerate(blocks):
            if isinstance(b, Params):
                out[i] = [g + (v - a) / self.eta for g, v, a in zip(out[i], self.get(b), self.anchor[b.index])]
        return out

    def lipschitz(self, block: Block) -> float:
        extra = 1 / self.eta if isinstance(block, Params) else 0.0
        return self.problem.lipschitz(block) + extra

    def energy(self) -> Tensor:
        total = self.problem.energy()
        for index, anchor in self.anchor.items():
            total = total + sum(((v - a) ** 2).sum() for v, a in zip(self.get(Params(index)), anchor)) / (2 * self.eta)
        return total


@dataclass(frozen=True)
class ISGM:
    r"""Implicit stochastic gradient method.

    Args:
        eta: proximal step :math:`\eta > 0` (``math.inf`` allowed: no proximal term).
        inner: the inner solver; its rule states restart at every outer step (a new subproblem).
        inner_steps: inner sweeps :math:`J \ge 1` per outer step.
    """

    eta: float
    inner: BCD = field(default_factory=BCD)
    inner_steps: int = 1

    def __post_init__(self):
        checked_field(self, "eta", _eta)
        if not isinstance(self.inner, BCD):
            raise TypeError(f"inner must be a BCD, got {type(self.inner).__name__}")
        checked_field(self, "inner_steps", positive_int)

    def init(self, problem: BlockProblem) -> SolverState:
        """A fresh state (only the iteration count persists between outer steps)."""
        return SolverState()

    def reset_vars(self, state: SolverState) -> SolverState:
        """Nothing to drop: inner states restart at every outer step."""
        check_solver_state(state)
        return state

    def step(self, problem: BlockProblem, state: SolverState) -> SolverState:
        """One outer step: anchor at the current parameters, ``inner_steps`` inner sweeps
        (``state`` a :class:`~liftinv.solvers.SolverState`, a ``TypeError`` otherwise)."""
        check_solver_state(state)
        wrapped = ProximalPoint(problem, self.eta)
        inner_state = self.inner.init(wrapped)
        for j in range(self.inner_steps):
            wrapped.last_sweep = j == self.inner_steps - 1
            try:
                inner_state = self.inner.step(wrapped, inner_state)
            except NonFiniteError as err:
                raise NonFiniteError(err.block, state.iteration + 1, err.what) from err
        return SolverState(state.iteration + 1)
