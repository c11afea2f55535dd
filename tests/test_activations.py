"""Contract tests of the proximal activations against brute-force 1-D minimisers, autograd in
float64, high-precision root finding (mpmath), scipy on the simplex and torch's own modules."""
from __future__ import annotations

import math
import re

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from scipy.special import xlogy
from torch import nn

from liftinv.activations import (
    ACTIVATIONS,
    Activation,
    Clip,
    Identity,
    LeakyReLU,
    LegendreActivation,
    ReLU,
    Sigmoid,
    Softmax,
    SoftThreshold,
    Tanh,
    as_activation,
)

DT = torch.float64
ELEMENTWISE = [act for act in ACTIVATIONS if act.elementwise]
LEGENDRE = [act for act in ACTIVATIONS if isinstance(act, LegendreActivation)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=g, dtype=DT)


def domain_points(act: Activation, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Points of dom Psi: a mix of sigma(random) (interior) and projections (often boundary)."""
    inner = act(randn(*shape, g=g, scale=3.0))
    proj = act.project_domain(randn(*shape, g=g, scale=3.0))
    mask_shape = shape if act.elementwise else (shape[0],) + (1,) * (len(shape) - 1)
    return torch.where(torch.rand(mask_shape, generator=g, dtype=DT) < 0.6, inner, proj)


def reduce(act: Activation, t: torch.Tensor) -> torch.Tensor:
    """Match the keepdim reduction of non-elementwise activations."""
    return t if act.elementwise else t.sum(1, keepdim=True)


def brute_min(obj, lo: torch.Tensor, hi: torch.Tensor, points: int = 201, rounds: int = 12):
    """Minimise N independent convex 1-D functions by grid search with zooming.

    ``obj`` maps candidates of shape (N, K) to values (N, K). Returns (argmin, min), each (N,).
    """
    t = torch.linspace(0, 1, points, dtype=DT)
    for _ in range(rounds):
        u = lo[:, None] + (hi - lo)[:, None] * t
        vals = obj(u)
        idx = vals.argmin(1, keepdim=True)
        best, fbest = u.gather(1, idx)[:, 0], vals.gather(1, idx)[:, 0]
        h = (hi - lo) / (points - 1)
        lo, hi = best - 2 * h, best + 2 * h
    return best, fbest


def scalar_problems(g: torch.Generator) -> torch.Tensor:
    """Flat float64 test points: random, plus kinks and domain ends of the example activations."""
    special = torch.tensor([0.0, 1e-3, -1e-3, 0.3, -0.3, -0.5, 1.5, 1.0, -1.0, 4.0, -4.0], dtype=DT)
    return torch.cat([randn(15, g=g, scale=2.5), special])


def psi_obj(act: Activation, center: torch.Tensor, weight: torch.Tensor):
    """u -> 1/2 (u - center)^2 + weight psi(u), vectorised over (N, K) candidates."""
    return lambda u: 0.5 * (u - center[:, None]) ** 2 + weight[:, None] * act.psi(u)


GAMMAS = [0.25, 1.0, 3.0, "tensor"]


def gamma_for(gamma, v: torch.Tensor, g: torch.Generator):
    if gamma == "tensor":
        gam = 0.1 + 3 * torch.rand(v.shape, generator=g, dtype=DT)
        return gam, gam
    return gamma, torch.full_like(v, gamma)


# ---------------------------------------------------------------- prox and its consequences
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("act", ELEMENTWISE, ids=repr)
def test_prox_matches_brute_force(act, gamma):
    g = gen(1)
    v = scalar_problems(g)
    gam, gam_full = gamma_for(gamma, v, g)
    as_batch = lambda t: t.reshape(2, 13) if isinstance(t, torch.Tensor) else t  # noqa: E731
    u = act.prox(as_batch(v), as_batch(gam)).flatten()
    radius = v.abs() + 3
    u_bf, _ = brute_min(psi_obj(act, v, gam_full), -radius, radius)
    torch.testing.assert_close(u, u_bf, atol=1e-7, rtol=0)


@pytest.mark.parametrize("mu", [0.4, 2.5, "tensor"])
@pytest.mark.parametrize("act", ELEMENTWISE, ids=repr)
def test_prox_phi_matches_brute_force(act, mu):
    g = gen(2)
    v = scalar_problems(g)
    m, m_full = gamma_for(mu, v, g)
    u = act.prox_phi(v, m)
    radius = v.abs() + 3
    u_bf, _ = brute_min(
        lambda w: 0.5 * (w - v[:, None]) ** 2 + m_full[:, None] * (0.5 * w**2 + act.psi(w)),
        -radius,
        radius,
    )
    torch.testing.assert_close(u, u_bf, atol=1e-7, rtol=0)


@pytest.mark.parametrize("act", ELEMENTWISE, ids=repr)
def test_envelope_and_conjugate_by_definition(act):
    g = gen(3)
    a = scalar_problems(g)
    radius = a.abs() + 3
    _, env_bf = brute_min(psi_obj(act, a, torch.ones_like(a)), -radius, radius)
    torch.testing.assert_close(act.envelope(a), env_bf, atol=1e-10, rtol=0)
    # Phi*(a) = sup_u u a - Phi(u) = -min_u (u^2/2 + psi(u) - u a)
    _, neg_conj = brute_min(lambda u: 0.5 * u**2 + act.psi(u) - u * a[:, None], -radius, radius)
    torch.testing.assert_close(act.conjugate(a), -neg_conj, atol=1e-10, rtol=0)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_conjugate_gradient_is_activation(act):
    a = randn(3, 4, 5, g=gen(4), scale=2.0).requires_grad_(True)
    (grad,) = torch.autograd.grad(act.conjugate(a).sum(), a)
    torch.testing.assert_close(grad, act(a).detach(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_forward_is_prox_with_gamma_one_exactly(act):
    for dtype in (torch.float32, torch.float64):
        v = randn(3, 7, g=gen(5), scale=3.0).to(dtype)
        assert torch.equal(act(v), act.prox(v, 1.0))
        assert torch.equal(act(v), act.prox(v, torch.ones_like(v)))


@pytest.mark.parametrize("gamma", [0.3, 1.0, 4.0])
@pytest.mark.parametrize("act", ELEMENTWISE, ids=repr)
def test_prox_is_firmly_nonexpansive(act, gamma):
    g = gen(6)
    x, y = randn(4, 51, g=g, scale=3.0), randn(4, 51, g=g, scale=3.0)
    px, py = act.prox(x, gamma), act.prox(y, gamma)
    assert torch.all((px - py) * (x - y) >= (px - py) ** 2 - 1e-12)


def test_softmax_is_firmly_nonexpansive():
    g = gen(7)
    x, y = randn(6, 5, 3, g=g, scale=3.0), randn(6, 5, 3, g=g, scale=3.0)
    act = Softmax()
    d = act(x) - act(y)
    assert torch.all((d * (x - y)).sum(1) >= (d**2).sum(1) - 1e-12)


@pytest.mark.parametrize("act", LEGENDRE, ids=repr)
def test_smooth_prox_float64_accurate_against_mpmath(act):
    """Root of (1-g) sigma(s) + g s = v in 40 digits; u = sigma(s)."""
    sigma = {Tanh: mpmath.tanh, Sigmoid: lambda s: 1 / (1 + mpmath.exp(-s))}[type(act)]
    vs = [-7.0, -1.3, -0.2, 0.0, 0.45, 2.0, 9.0]
    gammas = [1e-3, 0.2, 0.7, 1.6, 25.0]
    v = torch.tensor(vs, dtype=DT)[:, None].expand(-1, len(gammas))
    gam = torch.tensor(gammas, dtype=DT).expand(len(vs), -1)
    u = act.prox(v, gam)
    with mpmath.workdps(40):
        for i, vi in enumerate(vs):
            for j, gj in enumerate(gammas):
                c = 1 - mpmath.mpf(gj)
                f = lambda s: c * sigma(s) + gj * s - vi  # noqa: E731
                lo, hi = (vi - abs(c) * 1.01 - 1) / gj, (vi + abs(c) * 1.01 + 1) / gj
                ref = float(sigma(mpmath.findroot(f, (lo, hi), solver="anderson")))
                # prox is 1-Lipschitz in v: float64 accuracy is eps (1 + |v|)
                assert abs(u[i, j].item() - ref) <= 4 * 2.3e-16 * (1 + abs(vi)), (vi, gj)


def test_tanh_prox_large_steps_against_mpmath():
    r"""For :math:`\gamma \gg 1` the root :math:`u` of :math:`u - v + \gamma(\operatorname{atanh} u - u) = 0`
    is near 0 (:math:`u \approx (3v/\gamma)^{1/3}`, exactly 0 at :math:`v = 0` by symmetry). Oracle:
    bisection on :math:`u` in 50 digits. Float64 evaluation of :math:`f(s) = (1-\gamma)\tanh s + \gamma s - v`
    cancels to :math:`\varepsilon\gamma|u|`, and :math:`f' \approx 1 + \gamma u^2`, so :math:`u` is
    accurate to about :math:`\varepsilon(1 + |v| + \gamma|u|)/(1 + \gamma u^2)`; the old stopping test
    (noise :math:`8\varepsilon|1-\gamma|`) stopped at :math:`u = -9.5\cdot 10^{-6}` for :math:`v = 0`,
    :math:`\gamma = 10^{12}`."""
    vs = [0.0, 1e-8, -0.5, 1.0, 2.0, -50.0]
    gammas = [1e3, 1e6, 1e9, 1e12]
    v = torch.tensor(vs, dtype=DT)[:, None].expand(-1, len(gammas))
    u = Tanh().prox(v, torch.tensor(gammas, dtype=DT))
    with mpmath.workdps(50):
        for i, vi in enumerate(vs):
            for j, gj in enumerate(gammas):
                lo, hi = mpmath.mpf(-1), mpmath.mpf(1)
                for _ in range(180):
                    mid = (lo + hi) / 2
                    if mid - vi + gj * (mpmath.atanh(mid) - mid) > 0:
                        hi = mid
                    else:
                        lo = mid
                ref = float((lo + hi) / 2)
                tol = 16 * 2.3e-16 * (1 + abs(vi) + gj * abs(ref)) / (1 + gj * ref**2)
                assert abs(u[i, j].item() - ref) <= tol, (vi, gj, u[i, j].item(), ref)


@pytest.mark.parametrize("act", LEGENDRE, ids=repr)
def test_smooth_prox_tiny_steps_project_onto_the_domain(act):
    r"""As :math:`\gamma \to 0` the prox tends to the projection onto :math:`[lo, hi]`; at
    :math:`v = lo` the root :math:`s` is near :math:`-690` for :math:`\gamma = 10^{-300}`, where
    Newton on :math:`f \sim e^s` advances :math:`s` by about 1 per step: it must stop once
    :math:`u = \sigma(s)` no longer moves (a test on :math:`f` relative to its terms alone did not)."""
    v = torch.tensor([act.lo - 2.0, act.lo, 0.5 * (act.lo + act.hi) + 0.2, act.hi, act.hi + 3.0], dtype=DT)
    for gam in (1e-300, 1e-100, 1e-30):
        torch.testing.assert_close(act.prox(v, gam), v.clamp(act.lo, act.hi), atol=1e-15, rtol=0)


@pytest.mark.parametrize("act", LEGENDRE, ids=repr)
def test_smooth_prox_extreme_steps_and_dtype(act):
    grid = torch.linspace(-80, 80, 161, dtype=DT)[:, None]
    u = act.prox(grid, torch.logspace(-6, 6, 25, dtype=DT))  # converges (else RuntimeError)
    assert torch.all(act.in_domain(u))
    assert torch.all(u.diff(dim=0) >= 0)  # prox is monotone
    v = torch.linspace(-60, 60, 41, dtype=DT)
    u32 = act.prox(v.float(), 0.5)
    assert u32.dtype == torch.float32
    torch.testing.assert_close(u32, act.prox(v, 0.5).float())
    # tensor gamma: exactly sigma where gamma == 1
    gam = torch.where(torch.arange(41) % 2 == 0, 1.0, 0.3).to(DT)
    u = act.prox(v, gam)
    assert torch.equal(u[::2], act(v)[::2])
    torch.testing.assert_close(u[1::2], act.prox(v[1::2], 0.3))


@pytest.mark.parametrize("act", LEGENDRE, ids=repr)
def test_smooth_prox_gradient(act):
    g = gen(8)
    v = randn(2, 3, g=g, scale=2.0).requires_grad_(True)
    gam = (0.2 + 2 * torch.rand(2, 3, generator=g, dtype=DT)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, gam: act.prox(v, gam), (v, gam))


@pytest.mark.parametrize("act", LEGENDRE, ids=repr)
def test_smooth_prox_gradient_in_gamma_at_gamma_one(act):
    r"""Where a tensor :math:`\gamma` equals 1 the prox is exactly :math:`\sigma(v)` and keeps its
    derivatives: by the implicit function theorem on :math:`u - v + \gamma(\Phi'(u) - u) = 0`,
    :math:`\partial u/\partial\gamma = -(\Phi'(u) - u)/(1 + \gamma(\Phi''(u) - 1)) = -(v - \sigma(v))\sigma'(v)`
    at :math:`\gamma = 1` (the selected :math:`\sigma(v)` had a zero derivative in :math:`\gamma`),
    and :math:`\partial u/\partial v = \sigma'(v)`; also against central differences in
    :math:`\gamma`."""
    v = torch.tensor([0.7, -1.3, 2.5], dtype=DT, requires_grad=True)
    gam = torch.ones(3, dtype=DT, requires_grad=True)
    u = act.prox(v, gam)
    assert torch.equal(u, act(v))
    grad_v, grad_gam = torch.autograd.grad(u.sum(), (v, gam))
    s = act(v.detach())
    slope = act._slope(s)
    torch.testing.assert_close(grad_gam, -(v.detach() - s) * slope, atol=1e-13, rtol=0)
    torch.testing.assert_close(grad_v, slope, atol=1e-13, rtol=0)
    h = 1e-5
    central = (act.prox(v.detach(), 1 + h) - act.prox(v.detach(), 1 - h)) / (2 * h)
    torch.testing.assert_close(grad_gam, central, atol=1e-8, rtol=0)
    # infinite inputs keep their value sigma(+-inf)
    v = torch.tensor([math.inf, -math.inf], dtype=DT)
    assert torch.equal(act.prox(v, torch.ones(2, dtype=DT, requires_grad=True)), act(v))


# ---------------------------------------------------------------- domain
@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_psi_domain_and_projection(act):
    g = gen(9)
    z = randn(3, 4, 5, g=g, scale=3.0)
    psi = act.psi(z)
    assert psi.shape == reduce(act, z).shape
    assert torch.equal(act.in_domain(z), torch.isfinite(psi))
    p = act.project_domain(z)
    assert torch.all(act.in_domain(p))
    torch.testing.assert_close(act.project_domain(p), p, atol=1e-15, rtol=0)
    # variational inequality of the projection: <z - p, q - p> <= 0 for q in the domain
    q = domain_points(act, z.shape, g)
    assert torch.all(reduce(act, (z - p) * (q - p)) <= 1e-12)
    assert torch.all(torch.isfinite(act.psi(q)))


def test_simplex_projection_closed_form():
    r"""Projection onto the simplex :math:`\max(z - \theta, 0)`, :math:`\sum = 1`: full support
    (:math:`\theta = (\sum z - 1)/n = 0.01`) and two of three entries kept
    (:math:`\theta = (0.9 + 0.5 - 1)/2 = 0.2`)."""
    z = torch.tensor([[0.31, 0.26, 0.21, 0.16, 0.11]], dtype=DT)
    torch.testing.assert_close(Softmax().project_domain(z), z - 0.01, atol=1e-15, rtol=0)
    z = torch.tensor([[0.9, 0.5, -1.0]], dtype=DT)
    torch.testing.assert_close(Softmax().project_domain(z), torch.tensor([[0.7, 0.3, 0.0]], dtype=DT), atol=1e-15, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simplex_membership_tolerance_is_sqrt_eps_of_the_dtype(dtype):
    r"""``Softmax.in_domain`` accepts :math:`z \ge 0` with :math:`|\sum_i z_i - 1| \le \sqrt{\varepsilon}`
    of the dtype (so :math:`\Psi(z) < \infty`), and nothing further from the simplex."""
    tol = torch.finfo(dtype).eps ** 0.5
    z = torch.tensor([[0.25, 0.75]], dtype=DT) * torch.tensor([[1.0], [1 + 0.5 * tol], [1 + 2 * tol], [1 - 2 * tol]], dtype=DT)
    inside = Softmax().in_domain(z.to(dtype))
    assert inside.flatten().tolist() == [True, True, False, False]
    assert torch.isfinite(Softmax().psi(z.to(dtype))).flatten().tolist() == [True, True, False, False]


def test_domain_boundaries():
    assert ReLU().psi(torch.tensor([-1e-12, 0.0])).tolist() == [math.inf, 0.0]
    inside = Clip(-0.5, 1.5).in_domain(torch.tensor([-0.5, 1.5, 1.6, -0.6]))
    assert inside.tolist() == [True, True, False, False]
    torch.testing.assert_close(Tanh().psi(torch.tensor([1.0, -1.0], dtype=DT)),
                               torch.full((2,), math.log(2) - 0.5, dtype=DT))
    torch.testing.assert_close(Sigmoid().psi(torch.tensor([0.0, 1.0], dtype=DT)),
                               torch.tensor([0.0, -0.5], dtype=DT))
    assert torch.isinf(Tanh().psi(torch.tensor([1.0 + 1e-12], dtype=DT))).all()
    assert torch.isinf(Softmax().psi(torch.tensor([[0.5, 0.6]], dtype=DT))).all()


# ---------------------------------------------------------------- softmax on the simplex
def _simplex_min(objective, n: int) -> tuple[np.ndarray, float]:
    """scipy SLSQP over the probability simplex."""
    res = minimize(objective, np.full(n, 1.0 / n), method="SLSQP", bounds=[(0, 1)] * n,
                   constraints=[{"type": "eq", "fun": lambda u: u.sum() - 1}],
                   options={"ftol": 1e-15, "maxiter": 500})
    return res.x, res.fun


def _softmax_psi(u: np.ndarray) -> float:
    """SPEC: sum u log u - |u|^2 / 2 on the simplex."""
    u = np.clip(u, 0, 1)
    return float(np.sum(xlogy(u, u)) - 0.5 * u @ u)


def test_softmax_prox_envelope_conjugate_on_simplex():
    act = Softmax()
    a = randn(4, 3, g=gen(10), scale=1.5)
    for ai, s, env, conj in zip(a.numpy(), act(a), act.envelope(a)[:, 0], act.conjugate(a)[:, 0]):
        u, val = _simplex_min(lambda u: 0.5 * np.sum((u - ai) ** 2) + _softmax_psi(u), 3)
        np.testing.assert_allclose(u, s.numpy(), atol=1e-5)
        assert abs(val - env.item()) <= 1e-9
        _, neg = _simplex_min(lambda u: 0.5 * u @ u + _softmax_psi(u) - u @ ai, 3)
        assert abs(-neg - conj.item()) <= 1e-9


def test_softmax_divergence_is_kl_and_prox_only_gamma_one():
    act = Softmax()
    g = gen(11)
    a = randn(3, 5, 2, 3, g=g, scale=2.0)
    z = torch.softmax(randn(3, 5, 2, 3, g=g, scale=2.0), dim=1)
    kl = F.kl_div(torch.log_softmax(a, dim=1), z, reduction="none").sum(1, keepdim=True)
    torch.testing.assert_close(act.divergence(z, a), kl, atol=1e-13, rtol=1e-12)
    with pytest.raises(ValueError, match="gamma == 1"):
        act.prox(a, 0.5)
    with pytest.raises(ValueError, match="gamma == 1"):
        act.prox_phi(a, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_softmax_divergence_nonnegative_and_accurate(dtype):
    r"""KL(z || softmax(a)) against 50-digit mpmath at the float inputs, as
    sum_i z_i log(z_i/s_i) - z_i + s_i (= KL on the simplex; the float z sum to 1 only up to
    rounding): >= 0 and within 16 eps (KL + sum_i |z_i - s_i| + eps), for logits of spread up
    to 1e4 (s_i underflowing), z = softmax(a), one-hot, uniform and softmax(a) perturbed. The form
    sum z log z - z log s cancelled: KL(softmax(a), a) was down to -1.8e-7 in float32."""
    eps = torch.finfo(dtype).eps
    g = gen(14)
    a = torch.cat([randn(4, 5, g=g, scale=c) for c in (0.1, 1.0, 30.0, 1e4)]).to(dtype)
    s = torch.softmax(a, 1)
    z = torch.cat([s, torch.eye(5, dtype=dtype)[[0, 3, 1, 4, 2] * 3 + [0]], torch.full_like(a, 0.2),
                   torch.softmax(a + 1e-3 * torch.randn(a.shape, generator=g, dtype=dtype), 1)])
    a = a.repeat(4, 1)
    div = Softmax().divergence(z, a)[:, 0]
    assert torch.all(div >= 0)
    assert torch.all(div[: len(s)] <= 16 * eps**2)
    with mpmath.workdps(50):
        for zi, ai, di in zip(z.tolist(), a.tolist(), div.tolist()):
            lse = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(x)) for x in ai))
            sm = [mpmath.exp(mpmath.mpf(x) - lse) for x in ai]
            ref = mpmath.fsum(x * (mpmath.log(x) - mpmath.log(y)) - x + y if x > 0 else y for x, y in zip(zi, sm))
            dist = mpmath.fsum(abs(x - y) for x, y in zip(zi, sm))
            assert abs(di - ref) <= 16 * eps * (ref + dist + eps), (zi, ai, di, float(ref))


# ---------------------------------------------------------------- Bregman divergence
_TABLE = {  # SPEC section 1, closed forms as written there
    Identity: lambda act, z, a: 0.5 * (z - a) ** 2,
    ReLU: lambda act, z, a: 0.5 * (z - a) ** 2 - 0.5 * a.clamp_max(0) ** 2,
    LeakyReLU: lambda act, z, a: 0.5 * (z - a) ** 2
    + (1 - act.slope) / (2 * act.slope) * z.clamp_max(0) ** 2
    - (1 - act.slope) / 2 * a.clamp_max(0) ** 2,
    SoftThreshold: lambda act, z, a: 0.5 * (z - a) ** 2 + act.threshold * z.abs()
    - F.huber_loss(a, torch.zeros_like(a), reduction="none", delta=act.threshold),
    Clip: lambda act, z, a: 0.5 * (z - a) ** 2 - 0.5 * (a - a.clamp(act.lo, act.hi)) ** 2,
    Tanh: lambda act, z, a: 0.5 * (torch.xlogy(1 + z, 1 + z) + torch.xlogy(1 - z, 1 - z))
    + torch.log(torch.cosh(a)) - z * a,
    Sigmoid: lambda act, z, a: torch.xlogy(z, z) + torch.xlogy(1 - z, 1 - z)
    + torch.log1p(torch.exp(a)) - z * a,
    Softmax: lambda act, z, a: F.kl_div(torch.log_softmax(a, 1), z, reduction="none").sum(1, True),
}


@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_divergence_properties(act):
    g = gen(12)
    shape = (3, 5, 7)
    a = randn(*shape, g=g, scale=2.0).requires_grad_(True)
    z = domain_points(act, shape, g)
    s = act(a).detach()
    div = act.divergence(z, a)
    # the SPEC table's closed form
    torch.testing.assert_close(div, _TABLE[type(act)](act, z, a), atol=1e-10, rtol=1e-10)
    # B >= 1/2 |z - sigma(a)|^2 >= 0 and B(sigma(a), a) = 0
    assert torch.all(div >= reduce(act, 0.5 * (z - s) ** 2) - 1e-12)
    torch.testing.assert_close(act.divergence(s, a), torch.zeros_like(div), atol=1e-12, rtol=0)
    # grad_a B = sigma(a) - z by autograd of the closed form
    (grad,) = torch.autograd.grad(div.sum(), a)
    torch.testing.assert_close(grad, s - z, atol=1e-12, rtol=0)
    # infinite exactly outside the domain
    bad = torch.full(shape, -7.0, dtype=DT)
    assert torch.equal(torch.isinf(act.divergence(bad, a.detach())), ~act.in_domain(bad))


@pytest.mark.parametrize("act", [Tanh(), Sigmoid(), Softmax()], ids=repr)
def test_divergence_forward_mode_derivatives(act):
    """Forward-mode AD (torch.func.jvp, gradcheck's check_forward_ad) gives the derivatives of B:
    in a, <sigma(a) - z, w>; in z, <Phi'(z) - a, w>. The log-ratio of kl_term, computed under
    no_grad (which does not stop forward-mode tangents), added its tangent to that of the
    gradient path, so the jvp in a came out twice the derivative."""
    g = gen(29)
    shape = (2, 3, 2)
    a = randn(*shape, g=g, scale=2.0)
    z = act(randn(*shape, g=g, scale=2.0))  # interior points (Phi' finite)
    w = randn(*shape, g=g)
    # Phi'(z) (softmax: log z + logsumexp(a), so that Phi'(z) - a = log(z / softmax(a)), the
    # derivative of the code's sum of z log(z/s) - z + s, also off the simplex's tangent space)
    lse = torch.logsumexp(a, 1, keepdim=True)
    phi_prime = {Tanh: torch.atanh(z), Sigmoid: torch.logit(z), Softmax: torch.log(z) + lse}[type(act)]
    _, jvp_a = torch.func.jvp(lambda a: act.divergence(z, a), (a,), (w,))
    _, jvp_z = torch.func.jvp(lambda z: act.divergence(z, a), (z,), (w,))
    torch.testing.assert_close(jvp_a, reduce(act, (act(a) - z) * w), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(jvp_z, reduce(act, (phi_prime - a) * w), atol=1e-12, rtol=1e-12)
    # finite differences (in a only for softmax: a step in z leaves the simplex, where B = inf)
    if act.elementwise:
        args, fn = (z.requires_grad_(True), a.requires_grad_(True)), act.divergence
    else:
        args, fn = (a.requires_grad_(True),), lambda a: act.divergence(z, a)
    assert torch.autograd.gradcheck(fn, args, check_forward_ad=True)


def _bernoulli_kl_mp(p: mpmath.mpf, b: mpmath.mpf) -> tuple[mpmath.mpf, mpmath.mpf]:
    """KL(p || sigmoid(b)) and sigmoid(b) in mpmath (p in [0, 1], 1 - p through log1p)."""
    t1 = p * (mpmath.log(p) + mpmath.log1p(mpmath.exp(-b))) if p > 0 else 0
    t2 = (1 - p) * (mpmath.log1p(-p) + mpmath.log1p(mpmath.exp(b))) if p < 1 else 0
    return t1 + t2, 1 / (1 + mpmath.exp(-b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("act", LEGENDRE, ids=repr)
def test_smooth_divergence_nonnegative_and_accurate_in_saturation(act, dtype):
    r"""B(z, a) = KL(p || sigmoid(b)) (sigmoid: p = z, b = a; tanh: p = (1+z)/2, b = 2a) against a
    50-digit mpmath reference at the float inputs, over |a| <= 1e4, z at the range's ends, in
    the middle, next to them and at (and one ulp either side of) sigma(a). B >= 0 entry by entry
    and within 16 eps (B + |p - sigmoid(b)| + eps): the rounding of the sigmoid (and of 1 - z)
    and nothing more. The form Phi(z) + (Phi*(a) - za) cancelled: in float32 B(sigma(a), a) was
    down to -6e-8, B(4e-8, -17) was 3.6e-15 for 9e-24. Autograd: sigma(a) - z in a, Phi'(z) - a in z."""
    eps = torch.finfo(dtype).eps
    grid = [0.0, 1e-3, 0.3, 1.0, 3.0, 10.0, 17.0, 20.0, 50.0, 90.0, 100.0, 1e3, 1e4]
    a = torch.tensor(sorted({-x for x in grid} | set(grid)), dtype=dtype)
    s = act(a)
    lo, hi = torch.full_like(a, act.lo), torch.full_like(a, act.hi)
    zs = [s, torch.nextafter(s, hi), torch.nextafter(s, lo)]
    ends = (act.lo, act.hi, 0.5 * (act.lo + act.hi), act.lo + 1e-6, act.hi - 1e-6, act.lo + 1e-30)
    zs += [torch.full_like(a, c) for c in ends]
    z = torch.stack(zs).clamp(act.lo, act.hi)
    a = a.expand_as(z)
    div = act.divergence(z, a)
    assert torch.all(div >= 0)
    assert torch.all(act.divergence(s[[0, -1]], a[0, [0, -1]]) == 0)  # a = -+1e4: saturated, exactly 0
    # a = +-inf: 0 at z = sigma(a) = hi or lo, inf elsewhere (no nan from inf - inf)
    a_inf = torch.tensor([math.inf] * 3 + [-math.inf] * 3, dtype=dtype)
    mid = 0.5 * (act.lo + act.hi)
    z_inf = torch.tensor([act.hi, act.lo, mid, act.lo, act.hi, mid], dtype=dtype)
    want = torch.tensor([0.0, math.inf, math.inf] * 2, dtype=dtype)
    assert torch.equal(act.divergence(z_inf, a_inf), want)
    with mpmath.workdps(50):
        for zi, ai, di in zip(z.flatten().tolist(), a.flatten().tolist(), div.flatten().tolist()):
            zm, am = mpmath.mpf(zi), mpmath.mpf(ai)
            p, b = (zm, am) if isinstance(act, Sigmoid) else ((1 + zm) / 2, 2 * am)
            ref, sig = _bernoulli_kl_mp(p, b)
            assert abs(di - ref) <= 16 * eps * (ref + abs(p - sig) + eps), (zi, ai, di, float(ref))
    # gradients (nan-free in saturation, where sigmoid(2a)**2 underflows), interior z
    z, a = z[3:].clone().requires_grad_(True), a[3:].clone().requires_grad_(True)
    gz, ga = torch.autograd.grad(act.divergence(z, a).sum(), (z, a))
    z64, a64 = z.detach().double(), a.detach().double()
    torch.testing.assert_close(ga.double(), act(a64) - z64, atol=2 * eps, rtol=0)
    phi_prime = torch.logit(z64) if isinstance(act, Sigmoid) else torch.atanh(z64)
    inner = (z64 > act.lo) & (z64 < act.hi)
    torch.testing.assert_close(gz.double()[inner], (phi_prime - a64)[inner], atol=4 * eps, rtol=4 * eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("act", LEGENDRE, ids=repr)
def test_smooth_divergence_relatively_accurate_for_small_arguments(act, dtype):
    r"""B(z, a) keeps its relative accuracy where z, |a| (tanh) or z, sigmoid(a) (sigmoid) are
    small and where z is next to sigma(a): within 64 eps (B + c |z - sigma(a)| + eps w) + tiny,
    c = min(|a|, 1) for tanh, 1 for sigmoid, w = s (1 - s) for sigmoid, s^2 (1 - s^2) for tanh,
    s = sigma(a) (first and second order of the rounding of sigma(a), and nothing more), and
    >= 0. p = (1+z)/2 and 1 - z were rounded before the KL terms, a floor of about eps^2 per
    entry: float64 tanh B(3.26e-12, a = 3.26e-12 + 3.9e-20) came out 6.2e-33 for 7.5e-40,
    float32 sigmoid B(4.3e-8, -16.97) 3.6e-15 for 3.4e-25. Oracle: 200-digit mpmath at the float
    inputs. Autograd of the tanh branch for small arguments: tanh(a) - z in a, atanh(z) - a in z."""
    g, n = gen(21), 120
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    sign = lambda: torch.randn(n, generator=g, dtype=DT).sign()
    if isinstance(act, Tanh):
        a = 10 ** torch.empty(n, dtype=DT).uniform_(-12, 0.3, generator=g) * sign()
        far = 10 ** torch.empty(n, dtype=DT).uniform_(-12, 0, generator=g) * sign()
    else:
        a = torch.empty(n, dtype=DT).uniform_(-40, 8, generator=g)
        far = 10 ** torch.empty(n, dtype=DT).uniform_(-12, -0.3, generator=g)
    a = a.to(dtype)
    s = act(a)
    rel = 10 ** torch.empty(n, dtype=DT).uniform_(-9, 0, generator=g) * sign()
    z = torch.stack([s, torch.nextafter(s, torch.ones_like(s)), (s.double() * (1 + rel)).to(dtype), far.to(dtype)])
    z = z.clamp(act.lo, act.hi)
    a = a.expand_as(z)
    div = act.divergence(z, a)
    assert torch.all(div >= 0)
    with mpmath.workdps(200):
        for zi, ai, di in zip(z.flatten().tolist(), a.flatten().tolist(), div.flatten().tolist()):
            zm, am = mpmath.mpf(zi), mpmath.mpf(ai)
            p, b = (zm, am) if isinstance(act, Sigmoid) else ((1 + zm) / 2, 2 * am)
            ref, sig = _bernoulli_kl_mp(p, b)
            c = 1 if isinstance(act, Sigmoid) else min(abs(ai), 1)
            w = sig * (1 - sig) * (1 if isinstance(act, Sigmoid) else (2 * sig - 1) ** 2)
            bound = 64 * eps * (ref + 2 * c * abs(p - sig) + eps * w) + tiny
            assert abs(di - ref) <= bound, (zi, ai, di, float(ref))
    if isinstance(act, Tanh) and dtype == torch.float64:
        z, a = z.clone().requires_grad_(True), a.clone().requires_grad_(True)
        gz, ga = torch.autograd.grad(act.divergence(z, a).sum(), (z, a))
        z, a, inner = z.detach(), a.detach(), z.abs() < 1
        assert torch.all((ga - (torch.tanh(a) - z)).abs() <= 8 * eps * (z.abs() + a.abs()))
        assert torch.all(((gz - (torch.atanh(z) - a)).abs() <= 8 * eps * (z.abs() + a.abs()))[inner])


def test_soft_threshold_divergence_float32_nonnegative_and_accurate():
    """SoftThreshold's divergence in float32 is >= 0 and within 16 eps (B + |a| |S_t(a) - z|) of
    its exact value at the float32 inputs (the rounding of S_t(a) and nothing more), also at z
    next to S_t(a) and for |a| from 1e-6 to 1e6. The generic three-point form cancelled
    t|z| - t|s| against (a - s)(z - s): 152 of these 2000 values came out negative, errors up to
    5e4 times the bound. Oracle: exact rational arithmetic (fractions) at the float inputs."""
    from fractions import Fraction

    act, g, n = SoftThreshold(0.375), gen(3), 2000
    a = (10 ** torch.empty(n, dtype=DT).uniform_(-6, 6, generator=g) * torch.randn(n, dtype=DT, generator=g).sign()).float()
    s = act(a)
    z = torch.where(torch.rand(n, generator=g) < 0.5, s * (1 + 1e-5 * torch.randn(n, generator=g)),
                    10 * torch.randn(n, generator=g)).float()
    div = act.divergence(z, a)
    assert torch.all(div >= 0)
    eps, t = torch.finfo(torch.float32).eps, Fraction(0.375)
    for zi, ai, di in zip(z.tolist(), a.tolist(), div.tolist()):
        za, aa = Fraction(zi), Fraction(ai)
        sa = aa - max(-t, min(t, aa))
        exact = (za - sa) ** 2 / 2 + abs(za) * t - (aa - sa) * za
        assert abs(di - float(exact)) <= 16 * eps * (float(exact) + abs(ai) * abs(float(sa - za))) + 1e-37, (zi, ai, di)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_divergence_strongly_convex_in_z_convex_in_a(act):
    g = gen(13)
    shape = (4, 5, 3)
    a = randn(*shape, g=g, scale=2.0)
    z1, z2 = domain_points(act, shape, g), domain_points(act, shape, g)
    a1, a2 = randn(*shape, g=g, scale=2.0), randn(*shape, g=g, scale=2.0)
    for t in (0.1, 0.5, 0.8):
        lhs = act.divergence(t * z1 + (1 - t) * z2, a)
        rhs = t * act.divergence(z1, a) + (1 - t) * act.divergence(z2, a)
        assert torch.all(lhs <= rhs - reduce(act, 0.5 * t * (1 - t) * (z1 - z2) ** 2) + 1e-11)
        lhs = act.divergence(z1, t * a1 + (1 - t) * a2)
        assert torch.all(lhs <= t * act.divergence(z1, a1) + (1 - t) * act.divergence(z1, a2) + 1e-11)


# ---------------------------------------------------------------- hyper-parameters and steps
@pytest.mark.parametrize(
    "make, err, match",
    [
        (lambda: LeakyReLU(0.0), ValueError, "slope must be in"),
        (lambda: LeakyReLU(1.0), ValueError, "slope must be in"),
        (lambda: LeakyReLU(-0.2), ValueError, "got -0.2"),
        (lambda: LeakyReLU(float("nan")), ValueError, "slope must be finite"),
        (lambda: LeakyReLU("0.1"), TypeError, "slope must be a real number"),
        (lambda: LeakyReLU(True), TypeError, "slope"),
        (lambda: SoftThreshold(0.0), ValueError, "threshold must be positive, got 0.0"),
        (lambda: SoftThreshold(-1), ValueError, "threshold"),
        (lambda: Clip(1.0, 0.0), ValueError, "lo=1.0, hi=0.0"),
        (lambda: Clip(0.0, 0.0), ValueError, "lo must be smaller than hi"),
        (lambda: Clip(0.0, math.inf), ValueError, "hi must be finite"),
    ],
)
def test_bad_hyper_parameters(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_leaky_relu_refuses_a_slope_below_the_smallest_normal_number_of_the_dtype():
    """A slope c below float32's smallest normal number is subnormal there: F.leaky_relu scaled
    by a rounded slope (1e-44: 2x off the float64 result, the oracle) and k = (1 - c)/c became Inf,
    so psi and the divergence were NaN where min(z, 0) = 0 (float64: finite). The computations
    now refuse it naming slope and the dtype; float64 computes it, and c = tiny of float32 is
    computed in float32 as in float64 (to rounding)."""
    z, a = torch.tensor([-1.0, 0.3, 0.5]), torch.tensor([-2.0, -1e-3, 0.5])
    for c in (1e-39, 1e-44):
        act = LeakyReLU(c)
        assert torch.isfinite(act.divergence(z.double(), a.double())).all()
        for compute in (act, act.psi, lambda v: act.prox(v, 0.5), lambda v: act.divergence(z, v),
                        lambda v: act.envelope(v)):
            with pytest.raises(ValueError, match=r"slope = .* torch.float32"):
                compute(a)
    tiny = torch.finfo(torch.float32).tiny
    act = LeakyReLU(tiny)
    a, z = torch.tensor([-2.0, 0.5]), torch.tensor([0.3, 0.5])  # outputs c a normal in float32 too
    for compute in (act, lambda v: act.prox(v, 0.5), lambda v: act.divergence(z.to(v), v)):
        torch.testing.assert_close(compute(a).double(), compute(a.double()), rtol=1e-6, atol=0)


def test_soft_threshold_refuses_a_threshold_beyond_the_largest_number_of_the_dtype():
    """SoftThreshold(1e39) on float32 tensors: t is Inf there, so psi(0) = Inf * 0 was NaN (float64,
    the oracle: 0), in_domain called 0 outside dom psi = R, and the divergence failed inside
    torch's clamp ('value cannot be converted to type float without overflow', naming nothing).
    The computations now refuse it naming threshold and the dtype; float64 computes it, and
    t = float32's largest number is computed in float32 as in float64."""
    z, a = torch.tensor([0.0, 0.3, -0.5]), torch.tensor([0.0, 2.0, -3.0])
    act = SoftThreshold(1e39)
    assert act.psi(z.double())[0] == 0 and act.in_domain(z.double()).all()
    assert torch.isfinite(act.divergence(z.double(), a.double()) / 1e39).all()
    for compute in (act, act.psi, act.in_domain, lambda v: act.prox(v, 0.5), lambda v: act.divergence(z, v),
                    act.envelope, lambda v: act.prox_phi(v, 0.5)):
        with pytest.raises(ValueError, match=r"threshold = 1e\+39 overflows torch.float32"):
            compute(a)
    act = SoftThreshold(torch.finfo(torch.float32).max)
    for compute in (act, act.psi, lambda v: act.divergence(v, a.to(v))):  # |z| < 1: psi(z) < max
        torch.testing.assert_close(compute(z).double(), compute(z.double()), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "make, name, value, err, match",
    [
        (lambda: LeakyReLU(0.2), "slope", 1.5, ValueError, r"slope must be in \(0, 1\), got 1.5"),
        (lambda: LeakyReLU(0.2), "slope", float("nan"), ValueError, "slope must be finite"),
        (lambda: LeakyReLU(0.2), "slope", "0.1", TypeError, "slope must be a real number"),
        (lambda: SoftThreshold(0.3), "threshold", -0.1, ValueError, "threshold must be positive"),
        (lambda: Clip(-0.5, 1.5), "lo", 2.0, ValueError, "lo=2.0, hi=1.5"),
        (lambda: Clip(-0.5, 1.5), "hi", -1.0, ValueError, "lo=-0.5, hi=-1.0"),
        (lambda: Clip(-0.5, 1.5), "hi", math.inf, ValueError, "hi must be finite"),
    ],
)
def test_bad_hyper_parameters_assigned_later(make, name, value, err, match):
    """A hyper-parameter assigned after construction is checked as the constructor checks it,
    and a refused one leaves the activation as it was: LeakyReLU.slope = 1.5 was taken, giving
    k = (1 - c)/c = -1/3, a concave Psi, an expanding forward map (sigma(-1) = -1.5) and
    B(0, -1) = 0.75 below 1/2 (z - sigma(a))^2 = 1.125 (the bound a convex Psi gives),
    SoftThreshold.threshold = -0.1 the expanding map
    sign(a)(|a| + 0.1), Clip with lo > hi a constant map."""
    act = make()
    before = act.hparams()
    with pytest.raises(err, match=match):
        setattr(act, name, value)
    assert act.hparams() == before
    a, z = torch.tensor([-1.0, 0.05, 2.0], dtype=DT), torch.tensor([0.0, 0.0, 0.0], dtype=DT)
    s = act(a)
    assert torch.all(act.divergence(z, a) >= 0.5 * (z - s) ** 2 - 1e-15)


def test_hyper_parameters_assigned_later_take_effect():
    """Valid assignments are taken (the forward pass follows them)."""
    act, clip = SoftThreshold(0.3), Clip(-0.5, 1.5)
    act.threshold = 0.5
    clip.hi, clip.lo = 3.0, 2.0  # hi first: lo = 2 > the old hi would be refused
    a = torch.tensor([-1.0, 0.2, 2.5, 4.0], dtype=DT)
    torch.testing.assert_close(act(a), F.softshrink(a, 0.5), atol=0, rtol=0)
    torch.testing.assert_close(clip(a), F.hardtanh(a, 2.0, 3.0), atol=0, rtol=0)
    assert act.hparams() == {"threshold": 0.5} and clip.hparams() == {"lo": 2.0, "hi": 3.0}


def test_leaky_relu_penalty_follows_a_slope_set_later():
    """``LeakyReLU.slope`` set after construction changes Psi and the divergence with the forward
    pass (they used k = (1 - c)/c cached at construction): B(sigma(a), a) = 0, the SPEC closed form
    and prox_Psi against a brute-force minimiser with the new slope."""
    act = LeakyReLU(0.2)
    act.slope = 0.5
    g = gen(15)
    a = randn(31, g=g, scale=2.0)
    z = randn(31, g=g, scale=2.0)
    torch.testing.assert_close(act(a), F.leaky_relu(a, 0.5), atol=0, rtol=0)
    torch.testing.assert_close(act.divergence(act(a), a), torch.zeros_like(a), atol=1e-15, rtol=0)
    torch.testing.assert_close(act.divergence(z, a), _TABLE[LeakyReLU](act, z, a), atol=1e-12, rtol=1e-12)
    radius = a.abs() + 3
    u_bf, _ = brute_min(psi_obj(act, a, torch.ones_like(a)), -radius, radius)
    torch.testing.assert_close(act(a), u_bf, atol=1e-7, rtol=0)


def test_hparams_and_repr():
    assert LeakyReLU(0.3).hparams() == {"slope": 0.3}
    assert SoftThreshold(2).hparams() == {"threshold": 2.0}
    assert Clip(-2, 3).hparams() == {"lo": -2.0, "hi": 3.0}
    assert Tanh().hparams() == {}
    assert repr(Clip(-2, 3)) == "Clip(lo=-2.0, hi=3.0)"


@pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)
def test_bad_steps(act):
    v = torch.zeros(2, 3, dtype=DT)
    with pytest.raises(ValueError, match="gamma must be positive, got 0"):
        act.prox(v, 0.0)
    with pytest.raises(ValueError, match="mu must be positive, got -2"):
        act.prox_phi(v, -2.0)
    with pytest.raises(TypeError, match="gamma must be a real number"):
        act.prox(v, "1")


# ---------------------------------------------------------------- torch modules
_ACCEPTED = [
    (nn.Identity(), Identity),
    (nn.ReLU(), ReLU),
    (nn.LeakyReLU(0.1), LeakyReLU),
    (nn.LeakyReLU(0.0), ReLU),
    (nn.LeakyReLU(1.0), Identity),
    (nn.Hardtanh(-0.3, 2.0), Clip),
    (nn.ReLU6(), Clip),
    (nn.Softshrink(0.4), SoftThreshold),
    (nn.Softshrink(0.0), Identity),
    (nn.Hardshrink(0.0), Identity),
    (nn.Threshold(0.0, 0.0), ReLU),
    (nn.ELU(alpha=0.0), ReLU),  # alpha (e^x - 1) for x <= 0 is 0: max(x, 0) (was refused: "no closed form of its Psi")
    (nn.Tanh(), Tanh),
    (nn.Sigmoid(), Sigmoid),
    (nn.Softmax(dim=1), Softmax),
]


@pytest.mark.parametrize("module, cls", _ACCEPTED, ids=[repr(m) for m, _ in _ACCEPTED])
def test_as_activation_same_forward(module, cls):
    act = as_activation(module)
    assert type(act) is cls
    x = randn(3, 4, 5, 3, g=gen(14), scale=4.0)
    torch.testing.assert_close(act(x), module(x), atol=1e-15, rtol=1e-15)
    assert as_activation(act) is act


@pytest.mark.parametrize(
    "module, match",
    [
        (nn.GELU(), "GELU is non-monotone"),
        (nn.SiLU(), "SiLU is non-monotone"),
        (nn.Mish(), "non-monotone"),
        (nn.ELU(alpha=2.0), "slope above 1"),
        (nn.ELU(), "has no closed form of its Psi"),
        (nn.Softplus(), "monotone and 1-Lipschitz"),
        (nn.SELU(), "1.0507 > 1"),
        (nn.LeakyReLU(1.5), "negative_slope=1.5 > 1"),
        (nn.LeakyReLU(-0.1), "non-monotone"),
        (nn.LeakyReLU(math.nan), "negative_slope=nan is not a number"),
        (nn.Hardshrink(), "discontinuous"),
        (nn.Threshold(0.1, 0.0), "Threshold with value != threshold is discontinuous"),
        (nn.Threshold(0.5, 0.5), r"threshold = value = 0.5 is max\(x, 0.5\), a proximal map"),
        (nn.PReLU(), "learnable slope"),
        (nn.Softmax(dim=-1), "dim=1 only"),
        (nn.Softmax(), r"dim=1 only \(the class dimension\), got dim=None \(torch's deprecated implicit dim, 0 or 1 by "
                       r"the input's number of dimensions; pass dim=1\)"),
        (nn.LogSoftmax(dim=1), "non-symmetric Jacobian"),
        (nn.Linear(2, 2), "Linear is not a recognised proximal activation"),
        (nn.Hardtanh(-math.inf, 1.0), r"Hardtanh with min_val=-inf, max_val=1.0: liftinv's Clip needs finite bounds"),
        (nn.Softshrink(-0.5), r"Softshrink with lambd=-0.5 \(not >= 0\) is not a soft-threshold"),
    ],
    ids=repr,
)
def test_as_activation_refuses(module, match):
    with pytest.raises(TypeError, match=match) as info:
        as_activation(module)
    assert "Supported: nn.Identity, nn.ReLU" in str(info.value)


@pytest.mark.parametrize("base, kwargs", [(nn.LeakyReLU, {"negative_slope": 0.2}), (nn.Softmax, {"dim": 1}),
                                          (nn.Threshold, {"threshold": 0.0, "value": 0.0}), (nn.ELU, {"alpha": 0.5})])
def test_as_activation_refuses_a_subclass_of_a_supported_module_as_a_subclass(base, kwargs):
    """A subclass (here doubling the map) is refused, but the reason was read off the parameters
    as if it were the base: a LeakyReLU of slope 0.2 'has slope above 1', a Softmax over dim=1 'is
    supported over dim=1 only', a Threshold(0, 0) is had 'only for 0'."""
    sub = type(f"Doubled{base.__name__}", (base,), {"forward": lambda self, x: 2 * base.forward(self, x)})
    with pytest.raises(TypeError, match=rf"Doubled{base.__name__} subclasses nn.{base.__name__}, which is taken as "
                                        rf"nn.{base.__name__} itself only") as info:
        as_activation(sub(**kwargs))
    assert not re.search(r"> 1|dim=1 only|only for 0|monotone", str(info.value))


def test_as_activation_names_a_nan_elu_alpha():
    """An ELU alpha of NaN was said to lie in [0, 1] (``nn.ELU(alpha=0)``, max(x, 0), is taken as
    ReLU: a row of the accepted modules above)."""
    with pytest.raises(TypeError, match=r"ELU with alpha=nan is not a number"):
        as_activation(nn.ELU(alpha=math.nan))
    with pytest.raises(TypeError, match=r"ELU with alpha=0.5 in \(0, 1\] is monotone and 1-Lipschitz"):
        as_activation(nn.ELU(alpha=0.5))


@pytest.mark.parametrize("bounds", [(2.0, 1.0), (1.0, 1.0), (math.nan, 1.0)])
def test_as_activation_refuses_a_hardtanh_whose_bounds_were_set_out_of_order(bounds):
    """torch's constructor asks min_val < max_val, but the attributes can be set afterwards:
    ``Clip``'s ``ValueError`` ('lo must be smaller than hi', naming no module) came out of
    as_activation, and out of lift instead of its TypeError naming the layer."""
    from liftinv import lift

    module = nn.Hardtanh(-1.0, 1.0)
    module.min_val, module.max_val = bounds
    with pytest.raises(TypeError, match=r"Hardtanh with min_val=.*: liftinv's Clip needs finite bounds, min_val < max_val"):
        as_activation(module)
    with pytest.raises(TypeError, match=r"cannot lift layer 1 \(Hardtanh\).*min_val < max_val"):
        lift(nn.Sequential(nn.Linear(2, 2), module))


def test_clip_with_a_bound_beyond_the_dtype_clamps_as_without_it():
    """Clip(0, 1e300) (1e300 standing for no upper bound) on float32 failed inside torch with
    'value cannot be converted to type float without overflow' in forward, prox, prox_phi_ and
    the divergence. The bounds are now moved into the dtype's finite range (box_bounds). Oracle:
    clamp(min=0), and the same computations in float64, which hold 1e300."""
    x = torch.linspace(-2, 3, 11)
    act = Clip(0.0, 1e300)
    for compute in (act, lambda v: act.prox(v, 0.5), act.project_domain, lambda v: act.prox_phi_(v.clone(), 1.0)):
        torch.testing.assert_close(compute(x).double(), compute(x.double()), rtol=0, atol=0)
    torch.testing.assert_close(act(x), x.clamp(min=0), rtol=0, atol=0)
    torch.testing.assert_close(act.divergence(x.clamp(min=0), x).double(), act.divergence(x.double().clamp(min=0), x.double()))
