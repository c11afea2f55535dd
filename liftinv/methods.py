r"""Training methods and what each does with one mini-batch.

* :class:`Lifted`: the batch's observation (with the noise the task draws) is run forward
  (:math:`x_0..x_K`, every hidden penalty zero), the top variable is clamped to the target, and
  ``sweeps_per_batch`` steps of a BCD or ISGM solver move the hidden variables and the
  parameters of the lifted energy :math:`\sum_i \sum_k \lambda_k P_k(x_k^i, a_k^i)`. The
  parameters are updated in place; parameter-rule states persist across batches (BCD).
* :class:`Backprop`: ``torch.optim.Adam`` or ``SGD`` on the unlifted loss
  :math:`\tfrac1B\sum_i \tfrac12\|N(u^i) - t^i\|^2`.

:func:`runner` turns a method into an object with ``start_epoch()``, ``step(batch, iteration) ->
loss before the update``, ``summary()`` (energy and gaps of the last batch), ``state_dict()`` and
``load_state_dict()``, used by :func:`liftinv.training.train`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from liftinv import penalty as penalties
from liftinv.blocks import Block, Var
from liftinv.evaluation import sample_loss
from liftinv.network import LiftedNetwork
from liftinv.problem import LiftedProblem
from liftinv.solvers import BCD, ISGM, NonFiniteError, SolverState
from liftinv.solvers.rules import check_real
from liftinv.tasks import Batch
from liftinv.validation import check_flag, checked_field, positive_int

OPTIMIZERS = ("adam", "sgd")
_PENALTY_NAMES = {penalties.BREGMAN: "bregman", penalties.MAC: "mac", penalties.FENCHEL: "fenchel"}


@dataclass(frozen=True)
class Lifted:
    r"""Lifted training: ``sweeps_per_batch`` steps of ``solver`` on each batch's lifted energy.

    Args:
        penalty: ``BREGMAN`` (default), ``MAC`` or ``FENCHEL`` (:mod:`liftinv.penalty`).
        solver: :class:`~liftinv.solvers.BCD` (parameter-rule states persist across batches) or
            :class:`~liftinv.solvers.ISGM` (a proximal-point step on the parameters per batch).
        sweeps_per_batch: solver steps per batch.
        power_iters: warm-started power iterations per Lipschitz estimate
            (:class:`~liftinv.problem.LiftedProblem`; the first estimate of an epoch uses four times as many).
            Few iterations can underestimate a constant, and steps from an underestimate may raise
            the energy: raise it where monotone descent matters.
        lipschitz_every: 1 recomputes the blocks' Lipschitz constants whenever they may change
            (PALM steps from fresh estimates); ``n > 1`` keeps them for ``n`` batches of the same
            shapes (a variable block's constant depends on the parameters and its sample shape, a
            parameter block's on the batch and, for quadratic maps, the parameters; both move
            little from batch to batch; a batch of other shapes gets its own, and a change of the
            network other than by the solver, such as a penalty weight or a parameter set between
            batches, drops them all), which saves most of the power iterations at the price of
            possibly stale steps.
        cache_preactivations: ``False`` trades time for memory
            (:class:`~liftinv.problem.LiftedProblem`): pre-activations are recomputed when
            needed instead of kept from the forward pass and updated in place.
    """

    penalty: penalties.Penalty = penalties.BREGMAN
    solver: BCD | ISGM = field(default_factory=BCD)
    sweeps_per_batch: int = 1
    power_iters: int = 2
    lipschitz_every: int = 1
    cache_preactivations: bool = True

    def __post_init__(self):
        if self.penalty not in _PENALTY_NAMES:
            raise ValueError(f"penalty must be one of BREGMAN, MAC, FENCHEL, got {self.penalty!r}")
        if not isinstance(self.solver, (BCD, ISGM)):
            raise TypeError(f"solver must be a BCD or an ISGM, got {type(self.solver).__name__}")
        checked_field(self, "sweeps_per_batch", positive_int)
        checked_field(self, "power_iters", positive_int)
        checked_field(self, "lipschitz_every", positive_int)
        check_flag("cache_preactivations", self.cache_preactivations)

    @property
    def name(self) -> str:
        """Short label, e.g. ``bregman-bcd``."""
        return f"{_PENALTY_NAMES[self.penalty]}-{type(self.solver).__name__.lower()}"


@dataclass(frozen=True)
class Backprop:
    """Backpropagation on the unlifted loss with ``torch.optim.Adam`` or ``torch.optim.SGD``.

    Args:
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: learning rate (> 0).
        momentum: SGD momentum in [0, 1) (unused by Adam).
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        checked_field(self, "lr", check_real)
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        checked_field(self, "momentum", check_real)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    @property
    def name(self) -> str:
        """Short label, e.g. ``backprop-adam``."""
        return f"backprop-{self.optimizer}"


def lifted_view(model: nn.Module) -> tuple[LiftedNetwork, object]:
    """The lifted network of ``model`` and a map ``observation -> (u, y)`` to its input and
    measurements: ``(obs, None)`` for a :class:`~liftinv.network.LiftedNetwork`, else
    ``model.lifted`` and ``model.lifted_inputs`` (e.g. an unrolled reconstruction network)."""
    if isinstance(model, LiftedNetwork):
        return model, lambda obs: (obs, None)
    lifted, inputs = getattr(model, "lifted", None), getattr(model, "lifted_inputs", None)
    if isinstance(lifted, LiftedNetwork) and callable(inputs):
        return lifted, inputs
    raise TypeError(
        f"lifted training needs a LiftedNetwork or a model with .lifted and .lifted_inputs, got {type(model).__name__}"
    )


class _CachedLipschitz:
    """``problem`` (every attribute delegated) with the blocks' Lipschitz constants kept until
    :meth:`refresh`, or until the shapes they depend on change: a variable block's constant on
    the sample shape of its variable (a zero-padded convolution's norm grows with the image), a
    parameter block's on the shapes of all the variables (a sum over the samples and pixels of
    the layers' inputs), or until the network changes other than by the solver's updates
    (:meth:`LiftedProblem.network_changes <liftinv.problem.LiftedProblem.network_changes>`: a
    penalty weight or a parameter set by the user between batches)."""

    def __init__(self, problem: LiftedProblem):
        self.problem = problem
        self.cache: dict[Block, tuple[tuple, float]] = {}

    def __getattr__(self, name: str):
        if "problem" not in self.__dict__:  # a copy being built: no problem yet to delegate to
            raise AttributeError(name)
        return getattr(self.__dict__["problem"], name)

    def refresh(self) -> None:
        self.cache.clear()

    def _shapes(self, block: Block) -> tuple:
        xs = self.problem.xs
        return xs[block.index].shape[1:] if isinstance(block, Var) else tuple(x.shape for x in xs)

    def lipschitz(self, block: Block) -> float:
        shapes = (self._shapes(block), self.problem.network_changes())
        if block not in self.cache or self.cache[block][0] != shapes:
            self.cache[block] = (shapes, self.problem.lipschitz(block))
        return self.cache[block][1]


class _LiftedRunner:
    """Lifted training steps. One :class:`LiftedProblem` per epoch, rebound to each batch, so the
    power iterations of its Lipschitz estimates stay warm from batch to batch."""

    def __init__(self, model: nn.Module, method: Lifted):
        self.net, self.inputs = lifted_view(model)
        self.method = method
        self.state = None
        self.problem: LiftedProblem | None = None
        self.view: LiftedProblem | _CachedLipschitz | None = None
        self.batches = 0

    def start_epoch(self) -> None:
        self.problem = self.view = None
        self.batches = 0

    def _bind(self, u: Tensor, y: Tensor | None) -> Tensor:
        """Hold the batch at its forward pass (:meth:`LiftedProblem.forward`); returns the output."""
        if self.problem is None:
            with torch.no_grad():
                xs = self.net.feasible(u, y)
            self.problem = LiftedProblem(
                self.net, xs, y, free_vars=range(1, self.net.depth), train_params=True,
                penalty=self.method.penalty, power_iters=self.method.power_iters,
                cache_preactivations=self.method.cache_preactivations,
            )
            del xs  # replaced by the forward pass below
            every = self.method.lipschitz_every
            self.view = self.problem if every == 1 else _CachedLipschitz(self.problem)
        elif isinstance(self.view, _CachedLipschitz) and self.batches % self.method.lipschitz_every == 0:
            self.view.refresh()
        self.batches += 1
        return self.problem.forward(u, y, param_graphs=_interleaved(self.method.solver))

    def step(self, batch: Batch, iteration: int) -> float:
        u, y = self.inputs(batch.observation)
        # the forward output is not kept: the target replaces it, and the sweeps run without it
        top = self.net.layer(self.net.depth).activation
        scalars = [sample_loss(self._bind(u, y), batch.target).mean()]
        if self.method.penalty != penalties.MAC:  # (== takes a copy of MAC) the targets in the output activation's range
            scalars.append(top.in_domain(batch.target).all())
        loss, *inside = torch.stack(scalars).tolist()  # one host read for both
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite output of the forward pass (block Var({self.net.depth})) at iteration {iteration}")
        if inside and not inside[0]:
            raise ValueError(
                f"targets of iteration {iteration} lie outside the range of the output activation {top!r}, where its "
                f"{_PENALTY_NAMES[self.method.penalty]} penalty is infinite (use targets in that range, another output "
                "activation or the MAC penalty)"
            )
        self.problem.set(Var(self.net.depth), [batch.target])
        solver = self.method.solver
        self.state = solver.init(self.view) if self.state is None else solver.reset_vars(self.state)
        for _ in range(self.method.sweeps_per_batch):
            try:
                self.state = solver.step(self.view, self.state)
            except NonFiniteError as err:  # the solver counts its sweeps, sweeps_per_batch per batch
                raise NonFiniteError(err.block, iteration, err.what) from err
        return loss

    def summary(self) -> dict:
        """Per-sample energy and per-layer gaps of the last batch after its sweeps."""
        with torch.no_grad():
            p = self.problem.penalties()
        gaps = p.mean(1)
        bad = (~torch.isfinite(gaps)).nonzero().flatten().tolist()
        if bad:
            raise FloatingPointError(f"non-finite penalty of layer {bad[0] + 1} (block Var({bad[0] + 1})) after the last batch")
        energy = float((self.net.weights().to(p)[:, None] * p).sum()) / p.shape[1]
        return {"energy": energy, "gaps": gaps.tolist()}

    def state_dict(self) -> dict:
        state = None if self.state is None else self.method.solver.reset_vars(self.state).as_dict()
        return {"solver": state}

    def load_state_dict(self, d: dict) -> None:
        """The solver state of :meth:`state_dict`, its floating tensors cast to the network's
        dtype (as torch optimizers cast theirs; :func:`~liftinv.training.train` refuses to resume a
        checkpoint of another dtype)."""
        dtype = next(self.net.parameters()).dtype
        self.state = None if d["solver"] is None else SolverState.from_dict(_cast(d["solver"], dtype))


def _interleaved(solver: BCD | ISGM) -> bool:
    """Whether ``solver``'s sweep (an ISGM's inner one) is interleaved (``BCD.interleave``): it
    takes parameter gradients before the layers' inputs move, so the forward pass keeps graphs to
    the parameters (:meth:`LiftedProblem.forward`'s ``param_graphs``; the same gradients
    otherwise, from a second evaluation of the maps)."""
    return (solver.inner if isinstance(solver, ISGM) else solver).interleave


def _cast(state, dtype: torch.dtype):
    """``state`` (tensors in dicts and lists) with its floating tensors cast to ``dtype``."""
    if isinstance(state, Tensor):
        return state.to(dtype) if state.is_floating_point() else state
    if isinstance(state, dict):
        return {k: _cast(v, dtype) for k, v in state.items()}
    if isinstance(state, list):
        return [_cast(v, dtype) for v in state]
    return state


class _BackpropRunner:
    """Backpropagation steps on the mean per-sample unlifted loss."""

    def __init__(self, model: nn.Module, method: Backprop):
        self.model = model
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        params = [p for _, p in self.named]
        if method.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=method.lr)
        else:
            self.optimizer = torch.optim.SGD(params, lr=method.lr, momentum=method.momentum)
        self.updated: int | None = None  # the iteration of the last update

    def start_epoch(self) -> None:
        pass

    def step(self, batch: Batch, iteration: int) -> float:
        with torch.enable_grad():  # train may be called under torch.no_grad, as lifted training allows
            loss = sample_loss(self.model(batch.observation), batch.target).mean()
        value = float(loss.detach())
        if not math.isfinite(value):
            bad = next((name for name, p in self.named if not bool(torch.isfinite(p).all())), None)
            if bad is not None:  # finite gradients can still step a parameter to Inf (SGD with a huge lr)
                when = "before any update" if self.updated is None else f"after the update of iteration {self.updated}"
                raise FloatingPointError(f"non-finite parameter {bad} {when}, found at iteration {iteration}")
            raise FloatingPointError(f"non-finite loss at iteration {iteration}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        finite = {name: torch.isfinite(p.grad).all() for name, p in self.named if p.grad is not None}
        if finite and not bool(torch.stack(list(finite.values())).all()):  # one host read for all the gradients
            name = next(name for name, ok in finite.items() if not ok)
            raise FloatingPointError(f"non-finite gradient of parameter {name} at iteration {iteration}")
        self.optimizer.step()
        self.updated = iteration
        return value

    def summary(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.optimizer.load_state_dict(d["optimizer"])


def runner(model: nn.Module, method: Lifted | Backprop) -> _LiftedRunner | _BackpropRunner:
    """The per-batch trainer of ``method`` for ``model``."""
    if isinstance(method, Lifted):
        return _LiftedRunner(model, method)
    return _BackpropRunner(model, method)
