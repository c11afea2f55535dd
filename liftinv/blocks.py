"""Block names shared by problems and solvers (solvers import nothing else of the problem)."""
from __future__ import annotations

from dataclasses import dataclass

from liftinv.validation import integer_index


def _check_index(block: object) -> None:
    """Store ``block.index`` as an ``int`` (:func:`~liftinv.validation.integer_index`, a
    ``TypeError`` naming the block's class otherwise): a float, bool or tensor equal to an integer
    compared and hashed as that integer, so a problem took ``Var(1.0)`` for ``Var(1)`` and failed
    inside, indexing its variables with a float."""
    object.__setattr__(block, "index", integer_index(f"{type(block).__name__} index", block.index))


@dataclass(frozen=True)
class Var:
    """The block of variable ``index`` (0 is the network input, K its output), an integer."""

    index: int

    def __post_init__(self) -> None:
        _check_index(self)


@dataclass(frozen=True)
class Params:
    """The block of parameter group ``index`` (one group per layer that owns parameters), an integer."""

    index: int

    def __post_init__(self) -> None:
        _check_index(self)


Block = Var | Params
