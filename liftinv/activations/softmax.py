r"""Softmax over dim 1, for output layers only.

:math:`\Psi(u) = \sum_i u_i\log u_i - \tfrac12|u|^2 + \iota_\Delta(u)` on the probability simplex
:math:`\Delta` (over dim 1), so :math:`\Phi(u) = \sum_i u_i \log u_i` on :math:`\Delta`,
:math:`\Phi^* = \operatorname{logsumexp}`, :math:`\sigma = \nabla\Phi^* = \operatorname{softmax}` and
:math:`B_\Psi(z, a) = \mathrm{KL}(z \,\|\, \operatorname{softmax}(a))` (cross-entropy for one-hot
:math:`z`). Reductions keep dim 1 with size 1.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Activation, Gamma, check_step
from .smooth import kl_term


class Softmax(Activation):
    r"""Softmax over dim 1 (output layer only: :math:`\Psi` is not separable).

    :meth:`prox` exists only for :math:`\gamma = 1` (then it is the softmax); hence
    :meth:`prox_phi` is unavailable and a softmax layer must have its output clamped.
    """

    elementwise = False

    def psi(self, z: Tensor) -> Tensor:
        val = (torch.xlogy(z, z) - 0.5 * z**2).sum(1, keepdim=True)
        return torch.where(self.in_domain(z), val, torch.inf)

    def prox(self, v: Tensor, gamma: Gamma = 1.0) -> Tensor:
        check_step("gamma", gamma)
        if not bool(torch.all(torch.as_tensor(gamma) == 1)):
            raise ValueError(
                "Softmax.prox is only available for gamma == 1 (where it is the softmax); "
                f"got gamma={gamma}. A softmax layer must be the clamped output layer."
            )
        return self(v)

    def forward(self, a: Tensor) -> Tensor:
        return torch.softmax(a, dim=1)

    def envelope(self, a: Tensor) -> Tensor:
        r""":math:`\operatorname{env}_\Psi(a) = \tfrac12|a|^2 - \operatorname{logsumexp}(a)` (keepdim)."""
        return 0.5 * (a**2).sum(1, keepdim=True) - self.conjugate(a)

    def conjugate(self, a: Tensor) -> Tensor:
        r""":math:`\Phi^*(a) = \operatorname{logsumexp}(a)` over dim 1 (keepdim)."""
        return torch.logsumexp(a, dim=1, keepdim=True)

    def divergence(self, z: Tensor, a: Tensor) -> Tensor:
        r""":math:`\mathrm{KL}(z\,\|\,s) = \sum_i z_i\log(z_i/s_i) - z_i + s_i` over dim 1 (keepdim),
        :math:`s = \operatorname{softmax}(a)`, ``inf`` where :math:`z \notin \Delta`.

        A sum of the nonnegative terms :func:`~liftinv.activations.smooth.kl_term` (with
        :math:`\log s_i` from ``log_softmax``; the :math:`-z_i + s_i` cancel on :math:`\Delta`):
        :math:`\ge 0` in every dtype, also for :math:`z` off :math:`\Delta` within the
        tolerance of :meth:`in_domain`, 0 at :math:`z = s`, no cancellation between
        :math:`\sum_i z_i\log z_i` and :math:`-\sum_i z_i\log s_i`."""
        val = kl_term(z, torch.softmax(a, dim=1), torch.log_softmax(a, dim=1)).sum(1, keepdim=True)
        return torch.where(self.in_domain(z), val, torch.inf)

    def in_domain(self, z: Tensor) -> Tensor:
        r"""Keepdim mask of :math:`z \in \Delta`: entries :math:`\ge 0` summing to 1 up to
        :math:`\sqrt{\varepsilon}` of the dtype."""
        tol = torch.finfo(z.dtype).eps ** 0.5
        return (z >= 0).all(1, keepdim=True) & ((z.sum(1, keepdim=True) - 1).abs() <= tol)

    def project_domain(self, z: Tensor) -> Tensor:
        r"""Euclidean projection onto :math:`\Delta` over dim 1: :math:`\max(z - \theta, 0)` with
        :math:`\theta` from the sorted cumulative sums (Held, Wolfe & Crowder 1974)."""
        u = torch.sort(z, dim=1, descending=True).values
        css = u.cumsum(1) - 1
        k = torch.arange(1, z.shape[1] + 1, dtype=z.dtype, device=z.device)
        k = k.reshape((1, -1) + (1,) * (z.ndim - 2))
        rho = (u - css / k > 0).sum(1, keepdim=True)
        theta = css.gather(1, rho - 1) / rho.to(z.dtype)
        return (z - theta).clamp_min(0)
