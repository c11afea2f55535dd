r"""Proximal activations: :math:`\sigma = \operatorname{prox}_\Psi`.

An activation is admissible when :math:`\sigma(a) = \arg\min_u \tfrac12 (u-a)^2 + \Psi(u)` for a
proper, convex, lower semicontinuous :math:`\Psi`. With :math:`\Phi = \tfrac12|\cdot|^2 + \Psi`:

* :math:`\operatorname{env}_\Psi(a) = \min_u \tfrac12 (u-a)^2 + \Psi(u)` (Moreau envelope),
* :math:`\Phi^*(a) = \tfrac12 a^2 - \operatorname{env}_\Psi(a)` and :math:`\nabla\Phi^* = \sigma`,
* :math:`\operatorname{prox}_{\mu\Phi}(v) = \operatorname{prox}_{\frac{\mu}{1+\mu}\Psi}\big(\tfrac{v}{1+\mu}\big)`,
* the lifted Bregman divergence
  :math:`B_\Psi(z, a) = \Phi(z) + \Phi^*(a) - za = \tfrac12 (z-a)^2 + \Psi(z) - \operatorname{env}_\Psi(a)`.

Every quantity is elementwise (same shape as its input); reductions over a sample happen in
:mod:`liftinv.penalty`. Reference: Wang & Benning, *Lifted Bregman training of neural networks*,
JMLR 2023.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

Gamma = float | Tensor


class Activation(nn.Module):
    """Base class of proximal activations. Subclasses implement :meth:`psi` and :meth:`prox`.

    :meth:`forward` (= prox with gamma 1), :meth:`envelope`, :meth:`prox_phi` and
    :meth:`divergence` are derived; subclasses override them with closed or stable forms.
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

    def envelope(self, a: Tensor) -> Tensor:
        r""":math:`\operatorname{env}_\Psi(a) = \tfrac12(\sigma(a)-a)^2 + \Psi(\sigma(a))`."""
        s = self(a)
        return 0.5 * (s - a) ** 2 + self.psi(s)

    def conjugate(self, a: Tensor) -> Tensor:
        r""":math:`\Phi^*(a) = \tfrac12 a^2 - \operatorname{env}_\Psi(a)`."""
        return 0.5 * a**2 - self.envelope(a)

    def prox_phi(self, v: Tensor, mu: Gamma) -> Tensor:
        r""":math:`\operatorname{prox}_{\mu\Phi}(v) = \operatorname{prox}_{\frac{\mu}{1+\mu}\Psi}(v/(1+\mu))`
        for :math:`\Phi = \tfrac12|\cdot|^2 + \Psi`."""
        return self.prox(v / (1 + mu), mu / (1 + mu))

    def divergence(self, z: Tensor, a: Tensor) -> Tensor:
        r"""Elementwise :math:`B_\Psi(z, a) = \tfrac12(z-a)^2 + \Psi(z) - \operatorname{env}_\Psi(a) \ge 0`."""
        return 0.5 * (z - a) ** 2 + self.psi(z) - self.envelope(a)

    def in_domain(self, z: Tensor) -> Tensor:
        r"""Boolean mask of entries where :math:`\Psi(z) < \infty`."""
        return torch.isfinite(self.psi(z))

    def project_domain(self, z: Tensor) -> Tensor:
        r"""Euclidean projection onto the closure of :math:`\operatorname{dom}\Psi`
        (identity for activations whose :math:`\Psi` is finite everywhere)."""
        return z

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())

    def hparams(self) -> dict[str, float]:
        """Hyper-parameters that define the activation (for repr and serialisation)."""
        return {}
