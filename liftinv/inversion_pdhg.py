r"""Single-layer convex inversion by the primal-dual hybrid gradient method (PDHG).

For one layer :math:`N(u) = \sigma(Mu + c)` (:math:`c` the bias and data map) the inversion problem

.. math::
    \min_u\; \lambda B_\Psi(f, Mu + c) + \iota_C(u) + \alpha\|\nabla u\|_{2,1}
    = \min_u\; G(u) + h_1(Mu) + h_2(\nabla u)

is convex, with :math:`G = \iota_C` (the box of the
:class:`~liftinv.potentials.TV` regulariser, or 0),
:math:`h_1(z) = \lambda[\Phi^*(z + c) - \langle f, z + c\rangle]` (equal to
:math:`\lambda B_\Psi(f, z + c)` up to the constant :math:`\lambda\Phi(f)`) and
:math:`h_2 = \alpha|\cdot|_{2,1}`. Both :math:`h_1` and :math:`h_2` are dualised
(Chambolle & Pock 2011, diagonal steps as in Pock & Chambolle 2011): with :math:`\bar u = 2u - u^-`,

.. math::
    s^+ &= \operatorname{prox}_{\sigma_1 h_1^*}(s + \sigma_1 M\bar u), \qquad
    q^+ = \Pi_{|\cdot|_2\le\alpha}(q + \sigma_2\nabla\bar u), \\
    u^+ &= \Pi_C\big(u - \tau(M^* s^+ - \operatorname{div} q^+)\big),

:math:`\sigma_1 = \beta/\|M\|^2`, :math:`\sigma_2 = \beta/8`, :math:`\tau = 0.49/\beta`, so that
:math:`\tau(\sigma_1\|M\|^2 + 8\sigma_2) < 1` (:math:`M = 0`, a layer that ignores its input:
:math:`\sigma_1 = \beta = 1`). By Moreau's identity and
:math:`\operatorname{prox}_{\mu\Phi^*}(x) = x - \mu\operatorname{prox}_{\Phi/\mu}(x/\mu)`
(``activation.prox_phi``), with :math:`\mu = \lambda/\sigma_1`:

.. math::
    \operatorname{prox}_{\sigma_1 h_1^*}(v) = v - \sigma_1\big(\operatorname{prox}_{\mu\Phi^*}(v/\sigma_1 + c + \mu f) - c\big).

At a saddle point :math:`s = \lambda(\sigma(Mu + c) - f)`: the dual variable is the (scaled)
residual, and the optimality condition is that of the gradient form
:math:`\lambda M^*(\sigma(Mu+c) - f) - \operatorname{div} q \in -\partial\iota_C(u)`. Dualising
:math:`h_1` instead of taking its gradient (Condat-Vu, step :math:`\tau < 2/(\lambda\|M\|^2)`)
frees the primal step from the cap :math:`2/L`, which made Condat-Vu iterations crawl along the
null space of :math:`M` (compressive :math:`M`, TV-driven directions).

Residuals (Goldstein et al. 2015): :math:`r_p = (u - u^+)/\tau \in \partial G(u^+) + K^* y^+` and
:math:`r_d = ((s - s^+)/\sigma_1 + M(\bar u - u^+),\ (q - q^+)/\sigma_2 + \nabla(\bar u - u^+)) \in
\partial h^*(y^+) - K u^+`, :math:`K = (M, \nabla)`, :math:`y = (s, q)`; both vanish exactly at a
saddle point. They are reported relative to
:math:`\max(\|M^* s^+\|, \|\operatorname{div} q^+\|, \|u^+\|/\tau, \sqrt{8n}\,\|\alpha\|)` (the parts of
:math:`K^* y^+`, which cancel at a solution without box, the scale of :math:`u`, for data fitted
exactly, and the bound on :math:`\|\operatorname{div} q\|` over the dual ball :math:`|q_{c,i,j}| \le \alpha`,
:math:`n` the entries of one sample and :math:`\|\alpha\|` the norm of the per-sample TV weights: the scale of
:math:`\alpha\,\partial\mathrm{TV}`, which does not vanish when the solution is :math:`u = 0`,
where the other three shrink with :math:`u` and their ratio settled at the rate of convergence) and
:math:`\max(\|K u^+\|, \|(s^+/\sigma_1, q^+/\sigma_2)\|)`.
:math:`\beta = \|M\|` (:math:`\tau = 0.49\,\sigma_1`, the usual balanced scaling; residual
balancing as in Goldstein et al. 2015 settled at a smaller :math:`\beta` and converged more
slowly on the perceptron benchmark). :math:`M u` and :math:`M^* s` are one forward map and one
vector-Jacobian product of the layer's affine map per iteration (:math:`M\bar u` by linearity).
"""
from __future__ import annotations

from time import perf_counter

import torch
from torch import Tensor
from torch.func import vjp

from liftinv.affine import linear_part
from liftinv.network import LiftedNetwork
from liftinv.penalty import BREGMAN
from liftinv.potentials import TV
from liftinv.tv import GRAD_NORM_SQ, div2d, grad2d, tv
from liftinv.validation import box_bounds
from operators.checks import lanczos_max

#: Safety factor on the Lanczos estimate of :math:`\|M\|^2` (it converges from below).
NORM_MARGIN = 1.02


def joint_norm_tensor(*ts: Tensor) -> Tensor:
    """Euclidean norm of the tensors ``ts`` taken together, a 0-d tensor (no host read: several
    are read at once, ``torch.stack(...).tolist()``)."""
    return sum(t.pow(2).sum() for t in ts).sqrt()


def joint_norm(*ts: Tensor) -> float:
    """Euclidean norm of the tensors ``ts`` taken together."""
    return float(joint_norm_tensor(*ts))


def _project_ball(q: Tensor, radius: Tensor) -> Tensor:
    """Pointwise projection of (B, C, 2, H, W) onto balls of radius (B, 1, 1, 1, 1) over dim 2
    (radius 0: zero; the radius is kept above the dtype's smallest normal number, as 1e-300 is 0
    in float32 and 0/0 gave NaN)."""
    tiny = torch.finfo(q.dtype).tiny
    return q / (q.pow(2).sum(2, keepdim=True).sqrt() / radius.clamp_min(tiny)).clamp_min(1.0)


class PrimalDual:
    """PDHG for one-layer inversion with TV; keeps ``u``, ``ū`` and the duals between solves (warm starts across regularisation weights).

    Args:
        network: a one-layer lifted network reading the input only.
        x0: initial input (B, C, H, W).
        data: the clamped (projected) output :math:`f`.
        y: measurements of the layer's data map, if any.
        config: an :class:`~liftinv.inversion.InversionConfig` (``max_iter``, ``tol``, ``max_time``).
    """

    def __init__(self, network: LiftedNetwork, x0: Tensor, data: Tensor, y: Tensor | None, config):
        if network.depth != 1 or network.layer(1).inputs != (0,):
            raise ValueError("PrimalDual inverts one-layer networks reading the input only")
        if x0.ndim != 4:
            raise ValueError(f"TV needs image inputs (B, C, H, W), got shape {tuple(x0.shape)}")
        layer = network.layer(1)
        self.act, self.weight, self.data, self.config = layer.activation, layer.weight, data, config
        module = layer.maps[0]
        with torch.no_grad():
            self.offset = layer.preactivation([torch.zeros_like(x0)], y)
        self.apply = lambda u: linear_part(module, u)
        _, self._adjoint = vjp(self.apply, torch.zeros_like(x0))
        # ||M||^2 on one sample (M acts on every sample alike): the steps do not depend on the batch
        _, adjoint_one = vjp(self.apply, torch.zeros_like(x0[:1]))
        g = torch.Generator(device=x0.device).manual_seed(0)
        start = torch.randn((1, *x0.shape[1:]), dtype=x0.dtype, device=x0.device, generator=g)
        with torch.no_grad():
            self.norm_sq = NORM_MARGIN * lanczos_max(lambda v: adjoint_one(self.apply(v))[0], start, max_iter=30, rtol=1e-4)
        # M = 0 (a layer that ignores its input): any sigma_1 satisfies the step condition; sigma_1 = beta = 1
        self.beta = self.norm_sq**0.5 if self.norm_sq > 0 else 1.0
        self.sigma1 = self.beta / self.norm_sq if self.norm_sq > 0 else 1.0
        self.u = x0.clone()
        with torch.no_grad():
            self.mu = self.apply(self.u)
        self.u_bar, self.mu_bar = self.u, self.mu
        self.s = torch.zeros_like(self.mu)
        self.q = x0.new_zeros(*x0.shape[:2], 2, *x0.shape[2:])

    @property
    def input(self) -> Tensor:
        return self.u

    def adjoint(self, s: Tensor) -> Tensor:
        """:math:`M^* s`."""
        return self._adjoint(s)[0]

    def _prox_h1_conj(self, v: Tensor, sigma: float) -> Tensor:
        mu = self.weight / sigma
        x = v / sigma + self.offset + mu * self.data
        w = x - mu * self.act.prox_phi(x / mu, 1.0 / mu)
        return v - sigma * (w - self.offset)

    def energy(self, mu: Tensor, u: Tensor, radius: Tensor) -> Tensor:
        r""":math:`\lambda B_\Psi(f, Mu + c) + \alpha\mathrm{TV}(u)` summed over the batch."""
        return self.weight * BREGMAN.value(self.act, self.data, mu + self.offset).sum() + (radius.flatten() * tv(u)).sum()

    @torch.no_grad()
    def solve(self, regularizer: TV, history) -> int:
        """Iterate from the current state; returns the iterations done."""
        config = self.config
        u, mu, u_bar, mu_bar, s, q = self.u, self.mu, self.u_bar, self.mu_bar, self.s, self.q
        weight = 1.0 if regularizer.weight is None else regularizer.weight
        radius = torch.as_tensor(weight, dtype=u.dtype, device=u.device).expand(u.shape[0]).reshape(-1, 1, 1, 1, 1)
        box = regularizer.box if regularizer.box is None else box_bounds(self.u, *regularizer.box)
        q = _project_ball(q, radius)
        ball = joint_norm(radius) * (GRAD_NORM_SQ * u[0].numel()) ** 0.5  # bound on |div q| over |q_{c,i,j}| <= alpha
        start, it = perf_counter(), 0
        sigma1, sigma2, tau = self.sigma1, self.beta / GRAD_NORM_SQ, 0.49 / self.beta
        norm = joint_norm_tensor
        while it < config.max_iter:
            it += 1
            s_new = self._prox_h1_conj(s + sigma1 * mu_bar, sigma1)
            grad_bar = grad2d(u_bar)
            q_new = _project_ball(q + sigma2 * grad_bar, radius)
            mts, div_q = self.adjoint(s_new), div2d(q_new)
            u_new = u - tau * (mts - div_q)
            if box is not None:
                u_new = u_new.clamp(*box)
            mu_new, grad_new = self.apply(u_new), grad2d(u_new)
            r_s = (s - s_new) / sigma1 + mu_bar - mu_new
            r_q = (q - q_new) / sigma2 + grad_bar - grad_new
            # the residuals' norms and the energy in one host read (a device sync on a GPU)
            step, n_mts, n_div, n_u, res, n_primal, n_dual, energy = torch.stack([
                norm(u - u_new), norm(mts), norm(div_q), norm(u_new), norm(r_s, r_q), norm(mu_new, grad_new),
                norm(s_new / sigma1, q_new / sigma2), self.energy(mu_new, u_new, radius)]).tolist()
            p_rel = step / tau / max(n_mts, n_div, n_u / tau, ball, 1e-300)
            d_rel = res / max(n_primal, n_dual, 1e-300)
            history.record(energy, p_rel, d_rel)
            u_bar, mu_bar = 2 * u_new - u, 2 * mu_new - mu
            u, mu, s, q = u_new, mu_new, s_new, q_new
            if (config.tol > 0 and p_rel <= config.tol and d_rel <= config.tol) or perf_counter() - start > config.max_time:
                break
        self.u, self.mu, self.u_bar, self.mu_bar, self.s, self.q = u, mu, u_bar, mu_bar, s, q
        return it
