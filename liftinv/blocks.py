"""Block names shared by problems and solvers (solvers import nothing else of the problem)."""
from __future__ import annotations

from dataclasses import dataclass

from operators.checks import is_integer


def _check_index(block: object) -> None:
    """Store ``block.index`` as an ``int`` if it is an integer (:func:`~operators.checks.is_integer`:
    Python and NumPy integers, not a bool), else a ``TypeError`` naming the block's class: a
    float, bool or tensor equal to an integer compared and hashed as that integer, so a problem
    took ``Var(1.0)`` for ``Var(1)`` and failed inside, indexing its variables with a float."""
    if not is_integer(block.index):
        raise TypeError(f"{type(block).__name__} index must be an integer, got {block.index!r}")
    object.__setattr__(block, "index", int(block.index))


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
