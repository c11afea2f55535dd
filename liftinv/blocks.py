"""Block names shared by problems and solvers (solvers import nothing else of the problem)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Var:
    """The block of variable ``index`` (0 is the network input, K its output)."""

    index: int


@dataclass(frozen=True)
class Params:
    """The block of parameter group ``index`` (one group per layer that owns parameters)."""

    index: int


Block = Var | Params
