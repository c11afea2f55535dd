r"""Update rules for one block: explicit state in, explicit state out (optax-like).

A rule maps the block values :math:`x` (a list of tensors), the gradient :math:`g` of the smooth
part taken at the look-ahead point :math:`y` = ``lookahead(x, state)``, a step :math:`s` and the
block prox :math:`\operatorname{prox}_{s h}` to the next values. The caller passes the block's
current values, which nobody modifies in place, so a rule may keep references to them in its state;
the gradients are new tensors the rule owns (it may overwrite them), and the argument it passes
to the prox is its own temporary (the prox may overwrite it). States
are dicts of tensors, lists of tensors and numbers, so they serialise with ``torch.save``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from liftinv.validation import checked_field
from operators.checks import is_real

Values = list[Tensor]
Prox = Callable[[Values, float], Values]


def check_real(name: str, value) -> float:
    """``value`` as a Python float if it is a real number (NumPy numbers included), else a
    ``TypeError`` naming ``name``."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _along_batch(t: Tensor, x: Tensor) -> Tensor:
    """A per-sample tensor ``t`` (shape ``(B,)``) shaped to broadcast along the first dimension of ``x``."""
    return t.reshape(-1, *(1,) * (x.ndim - 1))


def _same_view(x: Tensor, p: Tensor) -> bool:
    """Whether ``p`` is ``x`` or a view of the same elements (storage, offset, shape, strides and
    dtype), so that ``x - p`` is 0 exactly."""
    return p is x or (p.data_ptr() == x.data_ptr() and p.device == x.device and p.dtype == x.dtype
                      and p.shape == x.shape and p.stride() == x.stride())


def _per_sample(value: float | Tensor, x: Tensor) -> float | Tensor:
    """A rule's number, or its per-sample tensor (shape ``(B,)``, see :meth:`Rule.restart`) in
    ``x``'s dtype shaped to broadcast along ``x``'s first dimension."""
    return _along_batch(value.to(x.dtype), x) if isinstance(value, Tensor) else value


def _restarted_count(count: float | Tensor, mask: Tensor) -> Tensor:
    """A rule's counter (a number, or one per sample) as a float64 tensor of shape ``(B,)``
    (``mask``'s), 0 for the samples in ``mask``."""
    count = torch.as_tensor(count, dtype=torch.float64, device=mask.device).expand(mask.shape).clone()
    count[mask] = 0.0
    return count


def _momentum(name: str, value) -> float:
    """``value`` as a Python float if it is a real number in [0, 1), else an error naming ``name``."""
    value = check_real(name, value)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


class Rule:
    """Base class: the identity look-ahead and an empty state; subclasses implement :meth:`advance`
    (and :meth:`restart` if they have a state)."""

    #: Whether :meth:`advance` uses the Lipschitz step (solvers skip computing it otherwise).
    needs_step: bool = True

    def init(self, values: Values) -> dict:
        """The state before the first update of a block with values ``values``."""
        return {}

    def lookahead(self, values: Values, state: dict) -> Values:
        """The point where the gradient is taken (``values`` itself when there is no extrapolation)."""
        return values

    def advance(self, values: Values, look: Values, grads: Values, step: float | None, prox: Prox, state: dict) -> tuple[Values, dict]:
        """The next values and state, from the gradient ``grads`` taken at ``look``."""
        raise NotImplementedError

    def restart(self, values: Values, state: dict, mask: Tensor) -> dict:
        """The state with the samples in ``mask`` (a boolean tensor of shape ``(B,)``, along the
        first dimension of every value) started again as :meth:`init` starts them from
        ``values`` (the block's current values), the other samples' kept: a batch of independent
        problems restarts each sample's momentum alone. Here: a rule without state (:meth:`init`
        gives ``{}``) keeps it; a rule with a state must override this."""
        if state:
            raise NotImplementedError(f"{type(self).__name__} has a state and no per-sample restart")
        return state


@dataclass(frozen=True)
class Plain(Rule):
    r"""Proximal gradient: :math:`x^+ = \operatorname{prox}_{s h}(x - s\nabla f(x))`."""

    def advance(self, values, look, grads, step, prox, state):
        return prox([g.mul_(-step).add_(x) for x, g in zip(values, grads)], step), state  # x - s g in place


@dataclass(frozen=True)
class HeavyBall(Rule):
    r"""Inertial proximal gradient (Polyak's heavy ball, iPiano):
    :math:`x^+ = \operatorname{prox}_{s h}\big(x - s\nabla f(x) + \beta (x - x^-)\big)`, with
    :math:`x^- = x` at the first step. For :math:`h = 0` and step ``lr`` this is
    ``torch.optim.SGD(lr=lr, momentum=beta)``.

    iPiano's guarantee (Ochs, Chen, Brox & Pock 2014; :math:`h` convex, :math:`\nabla f`
    :math:`L`-Lipschitz) needs :math:`s < 2(1-\beta)/L`, i.e. ``step_scale`` :math:`< 2(1-\beta)`
    in :class:`~liftinv.solvers.BCD` (0.2 for the default :math:`\beta = 0.9`, where BCD accepts
    any ``step_scale`` below 2): then each update decreases
    :math:`H = E(x) + \tfrac{\beta}{2s}|x - x^-|^2` by at least
    :math:`\big(\tfrac{1-\beta}{s} - \tfrac L2\big)|x^+ - x|^2`. Longer steps (the defaults
    included) come with no descent guarantee.
    """

    beta: float = 0.9

    def __post_init__(self):
        checked_field(self, "beta", _momentum)

    def init(self, values):
        return {"prev": values}

    def restart(self, values, state, mask):
        r""":math:`x^- = x` (``values``) for the samples in ``mask``, as in :meth:`init`."""
        return {"prev": [torch.where(_along_batch(mask, x), x, p) for x, p in zip(values, state["prev"])]}

    def advance(self, values, look, grads, step, prox, state):
        moved = [x - step * g + self.beta * (x - p) for x, g, p in zip(values, grads, state["prev"])]
        return prox(moved, step), {"prev": values}


@dataclass(frozen=True)
class Nesterov(Rule):
    r"""Nesterov / FISTA extrapolation (inertial PALM):
    :math:`y = x + \beta_k (x - x^-)`, :math:`x^+ = \operatorname{prox}_{s h}(y - s\nabla f(y))`.

    With ``beta=None``, :math:`\beta_k = \max(t_{k-1} - 1, 0)/t_k` with :math:`t_{-1} = 0`,
    :math:`t_k = \tfrac12\big(1 + \sqrt{1 + 4t_{k-1}^2}\big)` (so :math:`t_0 = 1` and
    :math:`\beta_0 = \beta_1 = 0`): FISTA (Beck & Teboulle 2009); otherwise :math:`\beta_k = \beta`.
    The first step (:math:`x^- = x`) is a plain step. For :math:`h = 0`, fixed :math:`\beta` and
    step ``lr``, the look-ahead points :math:`y` are the iterates of
    ``torch.optim.SGD(lr=lr, momentum=beta, nesterov=True)``.

    :math:`k` counts the updates of the block since its state began: in
    :class:`~liftinv.solvers.BCD` training a variable block's state begins again with every
    mini-batch (:meth:`~liftinv.solvers.BCD.reset_vars`), while a parameter block's runs on over
    the batches and epochs (and through checkpoints), so with ``beta=None`` the parameters'
    :math:`\beta_k` tends to 1 over training, whatever the batches (FISTA's sequence without
    restart); :class:`~liftinv.solvers.ISGM` begins every state again at each outer step.
    """

    beta: float | None = None

    def __post_init__(self):
        if self.beta is not None:
            checked_field(self, "beta", _momentum)

    def init(self, values):
        return {"prev": values, "t": 0.0}

    def _next_t(self, t: float | Tensor) -> float | Tensor:
        if isinstance(t, Tensor):
            return 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        return 0.5 * (1 + math.sqrt(1 + 4 * t * t))

    def _momentum(self, state: dict) -> float | Tensor:
        if self.beta is not None:
            return self.beta
        t = state["t"]
        if isinstance(t, Tensor):
            return (t - 1).clamp_min(0.0) / self._next_t(t)
        return max(t - 1, 0.0) / self._next_t(t)

    def lookahead(self, values, state):
        r""":math:`y = x + \beta_k (x - x^-)`; ``values`` itself where that is :math:`x` exactly, when
        :math:`\beta_k` is the number 0 (``beta=0``, FISTA's first two steps) or :math:`x^- = x`
        (the first step; :func:`_same_view`: a parameter block's values are new detached views at
        every ``problem.get``): the solver then moves no block to a look-ahead point, so the caches
        of the block's layers stay valid (the same iterates as :class:`Plain`, with its work)."""
        beta = self._momentum(state)  # a number, or one per sample (see restart)
        if (not isinstance(beta, Tensor) and beta == 0) or all(map(_same_view, values, state["prev"])):
            return values
        return [x + _per_sample(beta, x) * (x - p) for x, p in zip(values, state["prev"])]

    def restart(self, values: Values, state: dict, mask: Tensor) -> dict:
        r"""The state with the samples in ``mask`` (shape ``(B,)``, along the first dimension of
        every value) started again: :math:`x^- = x` (``values``, the block's current values) and
        :math:`t = 0` there, as in :meth:`init`; the others keep theirs. The counter :math:`t`
        becomes a float64 tensor of shape ``(B,)``, so each sample's :math:`\beta_k` follows its
        own restarts: the iterates of a batch are those of its samples solved alone."""
        prev = [torch.where(_along_batch(mask, x), x, p) for x, p in zip(values, state["prev"])]
        return {"prev": prev, "t": _restarted_count(state["t"], mask)}

    def advance(self, values, look, grads, step, prox, state):
        new = prox([y - step * g for y, g in zip(look, grads)], step)
        return new, {"prev": values, "t": self._next_t(state["t"])}


@dataclass(frozen=True)
class Adam(Rule):
    r"""Adam (Kingma & Ba 2015) on a block, with its own step ``lr`` (the Lipschitz step is unused):

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k, \quad v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2,
        \quad x^+ = \operatorname{prox}_{\mathrm{lr}\, h}\Big(x - \mathrm{lr}\,
        \frac{m_k/(1-\beta_1^k)}{\sqrt{v_k/(1-\beta_2^k)} + \epsilon}\Big),

    :math:`m_0 = v_0 = 0`: ``torch.optim.Adam(lr, betas=(b1, b2), eps=eps)`` when :math:`h = 0`
    (parameter blocks), with its operations in the same order. :math:`k` counts the updates since
    the state began (one count per sample after a :meth:`restart` of some samples). The moment
    buffers are updated in place, as ``torch.optim.Adam`` does (the solvers check the gradients
    for NaN/Inf first; new buffers would keep the old ones alive next to them, which raised the
    quick autoencoder's peak training memory from 1.17 to 1.80 MB). The prox
    with step ``lr`` ignores the diagonal metric; use Adam on blocks without a nonsmooth part.
    """

    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    needs_step = False

    def __post_init__(self):
        checked_field(self, "lr", check_real)
        checked_field(self, "eps", check_real)
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        checked_field(self, "b1", _momentum)
        checked_field(self, "b2", _momentum)
        if not 0 < self.eps < math.inf:
            raise ValueError(f"eps must be a positive finite number, got {self.eps}")

    def init(self, values):
        return {"m": [torch.zeros_like(x) for x in values], "v": [torch.zeros_like(x) for x in values], "count": 0}

    def restart(self, values, state, mask):
        r""":math:`m = v = 0` and :math:`k = 0` for the samples in ``mask``, as in :meth:`init`;
        the others keep theirs. The count :math:`k` becomes a float64 tensor of shape ``(B,)``,
        so each sample's bias correction follows its own restarts: the iterates of a batch are
        those of its samples solved alone."""
        m, v = ([t.masked_fill(_along_batch(mask, t), 0.0) for t in state[key]] for key in ("m", "v"))
        return {"m": m, "v": v, "count": _restarted_count(state["count"], mask)}

    def advance(self, values, look, grads, step, prox, state):
        count = state["count"] + 1
        m = [mm.lerp_(g, 1 - self.b1) for mm, g in zip(state["m"], grads)]
        v = [vv.mul_(self.b2).addcmul_(g, g, value=1 - self.b2) for vv, g in zip(state["v"], grads)]
        rate = self.lr / (1 - self.b1**count)  # numbers, or one per sample (see restart)
        root = torch.sqrt(1 - self.b2**count) if isinstance(count, Tensor) else math.sqrt(1 - self.b2**count)
        moved = []
        for x, mm, vv, g in zip(values, m, v, grads):  # x - rate m / (sqrt(v) / root + eps), in g's storage
            denom = vv.sqrt().div_(_per_sample(root, x)).add_(self.eps)
            if isinstance(rate, Tensor):
                moved.append(torch.addcdiv(x, _per_sample(-rate, x) * mm, denom, out=g))
            else:
                moved.append(torch.addcdiv(x, mm, denom, value=-rate, out=g))
        return prox(moved, self.lr), {"m": m, "v": v, "count": count}
