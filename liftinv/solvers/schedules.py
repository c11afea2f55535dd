"""Schedules: the order in which a sweep updates the variable blocks.

A schedule maps the free variable blocks to a list of groups. Groups are visited in order
(Gauss-Seidel); inside a group every gradient is taken at the same state before any block of the
group moves (Jacobi). A Jacobi group is an exact block-coordinate step when its blocks do not
interact (no layer reads two of them, as for odd versus even layers of a chain network).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from liftinv.blocks import Var


class Schedule:
    """Base class: ``schedule(blocks) -> groups``."""

    def __call__(self, blocks: Sequence[Var]) -> list[list[Var]]:
        raise NotImplementedError


@dataclass(frozen=True)
class TopDown(Schedule):
    """Gauss-Seidel from the output down: one group per block, decreasing index."""

    def __call__(self, blocks):
        return [[b] for b in sorted(blocks, key=lambda b: b.index, reverse=True)]


@dataclass(frozen=True)
class BottomUp(Schedule):
    """Gauss-Seidel from the input up: one group per block, increasing index."""

    def __call__(self, blocks):
        return [[b] for b in sorted(blocks, key=lambda b: b.index)]


@dataclass(frozen=True)
class OddEven(Schedule):
    """Two Jacobi groups: the odd indices, then the even ones (empty groups are skipped)."""

    def __call__(self, blocks):
        groups = [[b for b in blocks if b.index % 2 == parity] for parity in (1, 0)]
        return [g for g in groups if g]


@dataclass(frozen=True)
class Simultaneous(Schedule):
    """One Jacobi group holding every block: all gradients at one state, then all moves (a
    proximal-gradient step on the blocks jointly; its steps must majorise the coupling between
    blocks, see :class:`liftinv.inversion_bcd.JointProblem`)."""

    def __call__(self, blocks):
        return [list(blocks)]
