r"""Penalties :math:`P(z, a) \ge 0`, zero exactly when :math:`z = \sigma(a)`, for a lifted constraint
:math:`z = \sigma(a)`, :math:`a = Wx + b`. Three members with one interface:

* :data:`BREGMAN`: :math:`B_\Psi(z, a) = \tfrac12|z-a|^2 + \Psi(z) - \operatorname{env}_\Psi(a)`,
  :math:`\nabla_a B = \sigma(a) - z` (no :math:`\sigma'`).
* :data:`FENCHEL`: :math:`F(z) + F^*(a) - \langle z, a\rangle` with :math:`F = \Phi`, equal to
  the Bregman penalty for proximal activations and evaluated by the same cancellation-free closed
  forms (term by term, the sum cancels in float32).
* :data:`MAC`: :math:`\tfrac12|z - \sigma(a)|^2`, gradient :math:`\sigma'(a)^\top(\sigma(a) - z)`.

Tensors are ``(B, ...)``; values are per sample (summed over every non-batch dimension), shape
``(B,)``. Use :meth:`Penalty.surrogate` to get exact gradients with respect to anything ``a``
depends on (weights, bias, input) by autograd through the affine map only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .activations import Activation
from .activations.base import Gamma, check_step
from .layer import shares_storage
from .validation import check_float_dtype


def _check_pair(name1: str, t1: Tensor, name2: str, t2: Tensor) -> None:
    for name, t in ((name1, t1), (name2, t2)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        check_float_dtype(name, t)
        if t.ndim < 1:
            raise ValueError(f"{name} must have a batch dimension, got shape {tuple(t.shape)}")
    if t1.shape != t2.shape:
        raise ValueError(
            f"{name1} and {name2} must have the same shape, got {name1} {tuple(t1.shape)} "
            f"and {name2} {tuple(t2.shape)}"
        )
    if t1.dtype != t2.dtype:
        raise TypeError(f"{name1} and {name2} must have the same dtype, got {t1.dtype} and {t2.dtype}")
    if t1.device != t2.device:
        raise ValueError(
            f"{name1} and {name2} must be on the same device, got {t1.device} and {t2.device}"
        )


def per_sample(t: Tensor) -> Tensor:
    """Sum over every dimension but the first: ``(B, ...) -> (B,)`` (also for ``B = 0``)."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:])).sum(1)


@dataclass(frozen=True)
class Penalty:
    r"""A penalty :math:`P(z, a)` for the constraint :math:`z = \sigma(a)`."""

    def value(self, act: Activation, z: Tensor, a: Tensor) -> Tensor:
        """Per-sample penalty, shape ``(B,)``."""
        raise NotImplementedError

    def residual(self, act: Activation, z: Tensor, a: Tensor) -> Tensor:
        r""":math:`\nabla_a P(z, a)`, same shape as ``a``."""
        raise NotImplementedError

    def prox_output(self, act: Activation, a: Tensor, v: Tensor, tau: Gamma) -> Tensor:
        r""":math:`\arg\min_z P(z, a) + \tfrac{1}{2\tau}|z - v|^2` (``tau`` > 0, scalar or tensor)."""
        raise NotImplementedError

    def residual_(self, act: Activation, z: Tensor, a: Tensor) -> Tensor:
        """:meth:`residual` computed in the storage of ``a`` (returned)."""
        return a.copy_(self.residual(act, z, a))

    def prox_output_(self, act: Activation, a: Tensor, v: Tensor, tau: Gamma) -> Tensor:
        """:meth:`prox_output` computed in the storage of ``v`` (returned)."""
        return v.copy_(self.prox_output(act, a, v, tau))

    def surrogate(self, act: Activation, z: Tensor, a: Tensor) -> Tensor:
        r"""Per-sample :math:`\langle r, a\rangle` with :math:`r = \nabla_a P(z, a)` detached, shape ``(B,)``.

        Its autograd with respect to anything ``a`` depends on (not ``z``) is the exact gradient
        of :meth:`value`, with no graph through :math:`\sigma`.
        """
        with torch.no_grad():
            r = self.residual(act, z, a)
        return per_sample(r * a)


@dataclass(frozen=True)
class BregmanPenalty(Penalty):
    r"""Lifted Bregman penalty :math:`B_\Psi(z, a) = \Phi(z) + \Phi^*(a) - \langle z, a\rangle`."""

    def value(self, act: Activation, z: Tensor, a: Tensor) -> Tensor:
        r"""Per-sample :math:`B_\Psi(z, a)` from the stable closed form ``act.divergence``."""
        _check_pair("z", z, "a", a)
        return per_sample(act.divergence(z, a))

    def residual(self, act: Activation, z: Tensor, a: Tensor) -> Tensor:
        r""":math:`\nabla_a B_\Psi(z, a) = \sigma(a) - z` (in the storage of :math:`\sigma(a)`
        when that is new and has no graph, whose backward may read it: one temporary the size of
        ``a`` rather than two)."""
        _check_pair("z", z, "a", a)
        s = act(a)
        return s - z if s.requires_grad or shares_storage(s, [a]) else s.sub_(z)

    def residual_(self, act: Activation, z: Tensor, a: Tensor) -> Tensor:
        """:meth:`residual` in the storage of ``a``: no temporaries for activations with an
        in-place :meth:`~liftinv.activations.Activation.forward_`."""
        _check_pair("z", z, "a", a)
        return act.forward_(a).sub_(z)

    def prox_output(self, act: Activation, a: Tensor, v: Tensor, tau: Gamma) -> Tensor:
        r""":math:`\operatorname{prox}_{\tau\Phi}(v + \tau a)`."""
        _check_pair("a", a, "v", v)
        check_step("tau", tau)
        return act.prox_phi(v + tau * a, tau)

    def prox_output_(self, act: Activation, a: Tensor, v: Tensor, tau: Gamma) -> Tensor:
        """:meth:`prox_output` in the storage of ``v``: no temporaries for activations with an
        in-place :meth:`~liftinv.activations.Activation.prox_phi_`."""
        _check_pair("a", a, "v", v)
        check_step("tau", tau)
        return act.prox_phi_(v.add_(a, alpha=tau) if not isinstance(tau, Tensor) else v.add_(tau * a), tau)


@dataclass(frozen=True)
class FenchelPenalty(BregmanPenalty):
    r"""Fenchel lifted penalty :math:`F(z) + F^*(a) - \langle z, a\rangle` for :math:`\sigma = \nabla F^*`,
    with :math:`F = \Phi = \tfrac12|\cdot|^2 + \Psi` and :math:`F^* =` ``act.conjugate``. Value,
    gradient and output prox are those of the Bregman penalty.

    The value is the Fenchel-Young gap :math:`\sum_i \Phi(z_i) + \Phi^*(a_i) - z_i a_i` (for
    elementwise activations), each entry :math:`\ge 0`; it is evaluated by the activation's
    cancellation-free ``divergence``, not term by term: the three sums
    :math:`\tfrac12|z|^2 - \langle z, a\rangle`, :math:`\Psi(z)` and :math:`\Phi^*(a)`, each of
    the size of :math:`|a|^2`, cancel, so in float32 the penalty came out negative (down to -8
    for a soft-threshold layer with :math:`|a| \sim 10^3` at :math:`z = \sigma(a)`) or 20 % off."""

    def value(self, act: Activation, z: Tensor, a: Tensor) -> Tensor:
        r"""Per-sample :math:`\tfrac12|z|^2 + \Psi(z) + \Phi^*(a) - \langle z, a\rangle = B_\Psi(z, a)`."""
        return super().value(act, z, a)


@dataclass(frozen=True)
class MACPenalty(Penalty):
    r"""Quadratic (method of auxiliary coordinates) penalty :math:`\tfrac12|z - \sigma(a)|^2`."""

    def value(self, act: Activation, z: Tensor, a: Tensor) -> Tensor:
        _check_pair("z", z, "a", a)
        return 0.5 * per_sample((z - act(a)) ** 2)

    def residual(self, act: Activation, z: Tensor, a: Tensor) -> Tensor:
        r""":math:`\sigma'(a)^\top(\sigma(a) - z)`, by a local vector-Jacobian product through :math:`\sigma`."""
        _check_pair("z", z, "a", a)
        with torch.enable_grad():
            a_local = a.detach().requires_grad_(True)
            s = act(a_local)
            (grad,) = torch.autograd.grad(s, a_local, grad_outputs=(s - z).detach())
        return grad

    def prox_output(self, act: Activation, a: Tensor, v: Tensor, tau: Gamma) -> Tensor:
        r""":math:`(v + \tau\sigma(a)) / (1 + \tau)`."""
        _check_pair("a", a, "v", v)
        check_step("tau", tau)
        return (v + tau * act(a)) / (1 + tau)


def check_penalty(value: object) -> None:
    """A ``TypeError`` naming ``penalty`` unless ``value`` is a :class:`Penalty` (a string such as
    ``"mac"`` is not one)."""
    if not isinstance(value, Penalty):
        raise TypeError(f"penalty must be a liftinv Penalty (BREGMAN, MAC or FENCHEL), got {type(value).__name__}")


BREGMAN = BregmanPenalty()
FENCHEL = FenchelPenalty()
MAC = MACPenalty()
#: Every penalty member, for contract tests.
PENALTIES: tuple[Penalty, ...] = (BREGMAN, MAC, FENCHEL)


def bregman(activation: Activation, z: Tensor, a: Tensor) -> Tensor:
    r"""Per-sample lifted Bregman penalty :math:`B_\Psi(z, a)`, shape ``(B,)``."""
    return BREGMAN.value(activation, z, a)
