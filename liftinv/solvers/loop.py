"""The iteration loop shared by every solver: ``run(solver, problem, ...) -> (state, History)``."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from liftinv.solvers.protocol import BlockProblem, Solver
from liftinv.solvers.rules import check_real
from operators.checks import is_integer


@dataclass
class History:
    """What a run records; index 0 is the starting point, index ``k`` the state after iteration ``k``.

    Attributes:
        energy: the problem's energy.
        time: wall-clock seconds of each iteration (0 at index 0), including the energy
            evaluation, which also waits for the device.
        gaps: ``problem.gaps()`` as a list, when the problem has ``gaps`` (else empty).
    """

    energy: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    gaps: list[list[float]] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        """Number of completed iterations."""
        return max(len(self.energy) - 1, 0)

    def as_dict(self) -> dict[str, list]:
        return {"energy": list(self.energy), "time": list(self.time), "gaps": [list(g) for g in self.gaps]}

    def _record(self, problem: BlockProblem, start: float | None) -> None:
        """Append the energy, the seconds since ``start`` (0 for ``None``) read after the energy
        evaluation, and the gaps."""
        self.energy.append(float(problem.energy()))
        self.time.append(0.0 if start is None else time.perf_counter() - start)
        if hasattr(problem, "gaps"):
            self.gaps.append(problem.gaps().tolist())


def run(
    solver: Solver,
    problem: BlockProblem,
    state=None,
    *,
    max_iter: int,
    rtol: float = 0.0,
    callback: Callable[[object, History], bool | None] | None = None,
) -> tuple[object, History]:
    r"""Iterate ``state = solver.step(problem, state)``.

    Stops after ``max_iter`` iterations, when :math:`|E_k - E_{k-1}| < \text{rtol}\,|E_{k-1}|`, or
    when ``callback(state, history)`` (called after each iteration) returns ``True``. A block
    update that is not finite raises ``FloatingPointError`` naming the block and iteration; the
    problem keeps its last finite values.

    Args:
        solver: e.g. :class:`~liftinv.solvers.bcd.BCD` or :class:`~liftinv.solvers.isgm.ISGM`.
        problem: a :class:`~liftinv.solvers.protocol.BlockProblem`.
        state: a state to resume from; ``solver.init(problem)`` when ``None``.
        max_iter: maximal number of iterations (>= 0).
        rtol: relative energy change below which the run stops (0 never stops early).
        callback: optional ``callback(state, history) -> bool | None``.

    Returns:
        The final solver state and the :class:`History`.
    """
    if not is_integer(max_iter) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter}")
    max_iter = int(max_iter)
    check_real("rtol", rtol)
    if not 0 <= rtol < math.inf:
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if state is None:
        state = solver.init(problem)
    history = History()
    history._record(problem, None)
    for _ in range(max_iter):
        start = time.perf_counter()
        state = solver.step(problem, state)
        history._record(problem, start)
        previous, current = history.energy[-2], history.energy[-1]
        stop = callback is not None and callback(state, history)  # also after the iteration that meets rtol
        if stop or abs(current - previous) < rtol * abs(previous):
            break
    return state, history
