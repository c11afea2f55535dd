r"""What solvers need from a problem and from each other (structural types, no imports of models).

A problem exposes its unknowns as blocks (:class:`~liftinv.blocks.Var` then
:class:`~liftinv.blocks.Params`), each a list of tensors, with an energy
:math:`E = f + \sum_b h_b` whose smooth part :math:`f` has block gradients and block Lipschitz
constants and whose nonsmooth part :math:`h_b` is separable over blocks and proximable.
:class:`liftinv.problem.LiftedProblem` is the reference implementation.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor

from liftinv.blocks import Block


@runtime_checkable
class BlockProblem(Protocol):
    r"""A block-structured composite energy :math:`E(z) = f(z) + \sum_b h_b(z_b)`."""

    def blocks(self) -> list[Block]:
        """Free ``Var`` blocks, then ``Params`` blocks."""

    def get(self, block: Block) -> list[Tensor]:
        """Current values of ``block``. Neither the caller nor the problem modifies them in place
        (:meth:`set` replaces them), so a solver may keep them as the previous iterate."""

    def set(self, block: Block, values: Sequence[Tensor]) -> None:
        """Replace the values of ``block``."""

    def grads(self, blocks: Sequence[Block]) -> list[list[Tensor]]:
        r""":math:`\nabla_b f` for each ``b`` in ``blocks``, all at the current state (Jacobi), as
        new tensors that the caller owns (it may overwrite them)."""

    def lipschitz(self, block: Block) -> float:
        r"""A Lipschitz constant of :math:`z_b \mapsto \nabla_b f(z)`."""

    def prox(self, block: Block, values: Sequence[Tensor], step: float) -> list[Tensor]:
        r""":math:`\operatorname{prox}_{\text{step}\, h_b}(\text{values})`; ``values`` are the caller's
        temporaries, which the prox may overwrite."""

    def energy(self) -> Tensor:
        """The energy at the current state (a scalar tensor)."""


class Solver(Protocol):
    """An iterative solver with explicit state: ``state = step(problem, state)``."""

    def init(self, problem: BlockProblem):
        """A fresh solver state for ``problem``."""

    def step(self, problem: BlockProblem, state):
        """One iteration; updates the problem's blocks and returns the new state."""

    def reset_vars(self, state):
        """The state with everything tied to the current variable blocks dropped (call it when
        the problem is rebuilt for a new mini-batch; parameter state is kept)."""
