r"""Proximal activations: :math:`\sigma = \operatorname{prox}_\Psi`.

An activation is admissible when :math:`\sigma(a) = \arg\min_u \tfrac12 (u-a)^2 + \Psi(u)` for a
proper, convex, lower semicontinuous :math:`\Psi`. With :math:`\Phi = \tfrac12|\cdot|^2 + \Psi`:

* :math:`\operatorname{env}_\Psi(a) = \min_u \tfrac12 (u-a)^2 + \Psi(u)` (Moreau envelope),
* :math:`\Phi^*(a) = \tfrac12 a^2 - \operatorname{env}_\Psi(a)` and :math:`\nabla\Phi^* = \sigma`,
* :math:`\operatorname{prox}_{\mu\Phi}(v) = \operatorname{prox}_{\frac{\mu}{1+\mu}\Psi}\big(\tfrac{v}{1+\mu}\big)`,
* the lifted Bregman divergence
  :math:`B_\Psi(z, a) = \Phi(z) + \Phi^*(a) - za = \tfrac12 (z-a)^2 + \Psi(z) - \operatorname{env}_\Psi(a)`.

Every quantity is elementwise (same shape as its input), except for activations with
``elementwise = False`` (softmax), whose :meth:`~Activation.psi`, :meth:`~Activation.envelope`,
:meth:`~Activation.conjugate` and :meth:`~Activation.divergence` reduce over dim 1 and keep it with
size 1. Reductions over a sample happen in :mod:`liftinv.penalty`. Reference: Wang & Benning,
*Lifted Bregman training of neural networks*, JMLR 2023.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from operators.checks import is_real

Gamma = float | Tensor


def real_hparam(name: str, value: object) -> float:
    """Return ``value`` as a finite Python float, or raise naming ``name``.

    Raises:
        TypeError: ``value`` is not a real number (``bool`` is refused).
        ValueError: ``value`` is NaN or infinite.
    """
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def checked_hparam(name: str, valid: Callable[[float], bool], requirement: str, doc: str) -> property:
    """A hyper-parameter property ``name`` (stored as ``_name``) checked whenever it is set, by
    the constructor or later: :func:`real_hparam`, then a ``ValueError``
    ``NAME must be REQUIREMENT, got VALUE`` unless ``valid(value)``; a refused value leaves the
    activation unchanged. ``doc`` is the property's docstring."""
    key = "_" + name

    def get(self) -> float:
        return self.__dict__[key]

    def set_(self, value: object) -> None:
        value = real_hparam(name, value)
        if not valid(value):
            raise ValueError(f"{name} must be {requirement}, got {value}")
        self.__dict__[key] = value

    return property(get, set_, doc=doc)


def check_step(name: str, value: Gamma) -> None:
    """Check that a scalar step size is a finite positive real; tensors are not inspected
    (that would synchronise a GPU inside hot loops).

    Raises:
        TypeError: ``value`` is neither a tensor nor a real number.
        ValueError: ``value`` is not finite or not positive.
    """
    if isinstance(value, Tensor):
        return
    if real_hparam(name, value) <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


class Activation(nn.Module):
    """Base class of proximal activations. Subclasses implement :meth:`psi` and :meth:`prox`.

    :meth:`forward` (= prox with gamma 1), :meth:`envelope`, :meth:`conjugate`, :meth:`prox_phi`
    and :meth:`divergence` are derived; subclasses override them with closed or stable forms.
    """

    #: True when Psi is separable over entries (all activations except softmax).
    elementwise: bool = True

    def psi(self, z: Tensor) -> Tensor:
        r""":math:`\Psi(z)` elementwise; ``inf`` outside the domain of :math:`\Psi`."""
        raise NotImplementedError

    def prox(self, v: Tensor, gamma: Gamma = 1.0) -> Tensor:
        r""":math:`\operatorname{prox}_{\gamma\Psi}(v) = \arg\min_u \tfrac12(u-v)^2 + \gamma\Psi(u)`;
        ``gamma`` is a positive scalar or a tensor broadcastable to ``v``."""
        raise NotImplementedError

    def forward(self, a: Tensor) -> Tensor:
        r""":math:`\sigma(a) = \operatorname{prox}_\Psi(a)`."""
        return self.prox(a, 1.0)

    def forward_(self, a: Tensor) -> Tensor:
        r""":math:`\sigma(a)` computed in the storage of ``a`` (returned); subclasses with an
        elementwise closed form override it to allocate nothing."""
        return a.copy_(self(a))

    def envelope(self, a: Tensor) -> Tensor:
        r""":math:`\operatorname{env}_\Psi(a) = \tfrac12(\sigma(a)-a)^2 + \Psi(\sigma(a))`."""
        s = self(a)
        return 0.5 * (s - a) ** 2 + self.psi(s)

    def conjugate(self, a: Tensor) -> Tensor:
        r""":math:`\Phi^*(a) = \tfrac12 a^2 - \operatorname{env}_\Psi(a)`."""
        return 0.5 * a**2 - self.envelope(a)

    def prox_phi(self, v: Tensor, mu: Gamma) -> Tensor:
        r""":math:`\operatorname{prox}_{\mu\Phi}(v) = \operatorname{prox}_{\frac{\mu}{1+\mu}\Psi}(v/(1+\mu))`
        for :math:`\Phi = \tfrac12|\cdot|^2 + \Psi`; ``mu`` is a positive scalar or tensor."""
        check_step("mu", mu)
        return self.prox(v / (1 + mu), mu / (1 + mu))

    def prox_phi_(self, v: Tensor, mu: Gamma) -> Tensor:
        r""":meth:`prox_phi` computed in the storage of ``v`` (returned); subclasses with an
        elementwise closed form override it to allocate nothing."""
        return v.copy_(self.prox_phi(v, mu))

    def divergence(self, z: Tensor, a: Tensor) -> Tensor:
        r"""Elementwise :math:`B_\Psi(z, a) = \tfrac12(z-a)^2 + \Psi(z) - \operatorname{env}_\Psi(a)`,
        computed in the cancellation-free three-point form with :math:`s = \sigma(a)`:

        .. math:: B_\Psi(z, a) = \tfrac12 (z - s)^2 + \Psi(z) - \Psi(s) - (a - s)(z - s)
           \;\ge\; \tfrac12 (z - s)^2,

        since :math:`a - s \in \partial\Psi(s)`. ``inf`` where :math:`z \notin \operatorname{dom}\Psi`.
        """
        s = self(a)
        return 0.5 * (z - s) ** 2 + (self.psi(z) - self.psi(s)) - (a - s) * (z - s)

    def in_domain(self, z: Tensor) -> Tensor:
        r"""Boolean mask of entries where :math:`\Psi(z) < \infty`."""
        return torch.isfinite(self.psi(z))

    def project_domain(self, z: Tensor) -> Tensor:
        r"""Euclidean projection onto the closure of :math:`\operatorname{dom}\Psi`
        (identity for activations whose :math:`\Psi` is finite everywhere)."""
        return z

    def saturation(self) -> tuple[float, ...]:
        r"""Output values :math:`v` whose preimage :math:`\sigma^{-1}(v)` is an interval of positive
        length (where :math:`\sigma` is flat, :math:`\partial\Psi(v)` not a singleton), e.g.
        :math:`0` for ReLU; empty for injective activations. Entries of data at such a value carry
        only the inequality information of the preimage (used by :func:`liftinv.invert` to snap
        noisy data; elementwise activations only)."""
        return ()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())

    def hparams(self) -> dict[str, float]:
        """Hyper-parameters that define the activation (for repr and serialisation)."""
        return {}
