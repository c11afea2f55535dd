"""Solvers for block-structured problems: update rules, schedules, BCD, ISGM and the run loop.

They see a problem only through :class:`~liftinv.solvers.protocol.BlockProblem` (never a network).
"""
from liftinv.solvers.bcd import BCD, NonFiniteError, SolverState
from liftinv.solvers.isgm import ISGM, ProximalPoint
from liftinv.solvers.loop import History, run
from liftinv.solvers.protocol import BlockProblem, Solver
from liftinv.solvers.rules import Adam, HeavyBall, Nesterov, Plain, Rule
from liftinv.solvers.schedules import BottomUp, OddEven, Schedule, Simultaneous, TopDown

__all__ = [
    "BCD",
    "ISGM",
    "Adam",
    "BlockProblem",
    "BottomUp",
    "HeavyBall",
    "History",
    "Nesterov",
    "NonFiniteError",
    "OddEven",
    "Plain",
    "ProximalPoint",
    "Rule",
    "Schedule",
    "Simultaneous",
    "Solver",
    "SolverState",
    "TopDown",
    "run",
]
