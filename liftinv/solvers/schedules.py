"""Schedules: the order in which a sweep updates the variable blocks.

A schedule maps the free variable blocks to a list of groups. Groups are visited in order
(Gauss-Seidel); inside a group every gradient is taken at the same state before any block of the
group moves (Jacobi). A Jacobi group is an exact block-coordinate step when its blocks do not
interact (no two of them enter the same layer's penalty, as for odd versus even layers of a chain
network); :class:`~liftinv.solvers.BCD` splits, in order, a group whose blocks do into groups
whose blocks do not (``problem.var_layers``), unless the problem's constants majorise the
coupling (``problem.majorises_coupling``).
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
    """Two Jacobi groups: the odd indices, then the even ones (empty groups are skipped);
    disjoint on chains, split by :class:`~liftinv.solvers.BCD` where a layer reads several
    variables (e.g. :math:`u_{j-1}` and :math:`u_j` of a penalty-form ResNet)."""

    def __call__(self, blocks):
        groups = [[b for b in blocks if b.index % 2 == parity] for parity in (1, 0)]
        return [g for g in groups if g]


@dataclass(frozen=True)
class Simultaneous(Schedule):
    """One Jacobi group holding every block: all gradients at one state, then all moves (a
    proximal-gradient step on the blocks jointly; its steps must majorise the coupling between
    blocks, see :class:`liftinv.inversion_bcd.JointProblem`). On a problem whose constants do
    not (``majorises_coupling`` false or absent, with ``var_layers``),
    :class:`~liftinv.solvers.BCD` splits it into groups of blocks that share no layer."""

    def __call__(self, blocks):
        return [list(blocks)]
