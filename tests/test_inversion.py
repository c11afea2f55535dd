import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from liftinv.architectures import MLP, ProximalNeuralNetwork, ResNet, UnrolledPrimalDual
from liftinv.convert import lift
from liftinv.activations import ACTIVATIONS, Clip, Identity, LeakyReLU, ReLU
from liftinv.inversion import (InversionConfig, InversionHistory, Task, first_alpha, invert, prepare, snap_saturated,
                               solve_task)
from liftinv.blocks import Var
from liftinv.inversion_bcd import JointProblem, LiftedBCD
from liftinv.inversion_pdhg import joint_norm
from liftinv.inversion_search import lipschitz_estimate
from liftinv.inversion_baseline import GradientOptimizer, invert_gradient
from liftinv.penalty import bregman
from liftinv.potentials import L1, TV, Box, DeepinvPrior, Tikhonov
from liftinv.problem import LIPSCHITZ_MARGIN, LiftedProblem
from liftinv.solvers import BCD, Adam, HeavyBall, Nesterov, Plain, run
from liftinv.tv import div2d, grad2d, pdhg_tv
from operators.blur import Blur
from operators.kernels import gaussian_kernel
from operators.radon import Radon

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def perceptron(n_out, shape, act, seed=0, bias=False):
    """Flatten, Linear(prod(shape), n_out) with N(0, 1/n) weights, activation; float64."""
    n = math.prod(shape)
    linear = nn.Linear(n, n_out, bias=bias).double()
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n_out, n, dtype=F64, generator=gen(seed)) / math.sqrt(n))
        if bias:
            linear.bias.copy_(0.1 * torch.randn(n_out, dtype=F64, generator=gen(seed + 1)))
    return nn.Sequential(nn.Flatten(), linear, act)


def seeded(model, seed=0):
    """Redraw every Linear weight N(0, 1/fan_in) and bias N(0, 0.01) from a seeded generator (float64)."""
    g = gen(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, dtype=F64, generator=g) / math.sqrt(m.in_features))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, dtype=F64, generator=g))
    return model


def blocky(b=2, h=7, w=9, seed=0):
    """Piecewise-constant test images in [0, 1]."""
    x = torch.zeros(b, 1, h, w, dtype=F64)
    vals = torch.rand(b, 2, dtype=F64, generator=gen(seed))
    x[:, 0, 1:5, 2:6] = vals[:, :1, None]
    x[:, 0, 3:, 5:] = vals[:, 1:, None]
    return x


def noisy(f, rel, seed=1):
    """f plus Gaussian noise of norm rel |f| per sample (rel: a number or one per sample)."""
    noise = torch.randn(f.shape, dtype=F64, generator=gen(seed))
    delta = rel * f.flatten(1).norm(dim=1)
    scale = (delta / noise.flatten(1).norm(dim=1)).reshape(-1, *(1,) * (f.ndim - 1))
    return f + noise * scale, delta


# ---------------------------------------------------------------- single layer, convex (PDHG)
def test_pdhg_same_minimiser_from_two_starts_and_matches_bcd_reference():
    # tall W and leaky ReLU: the objective is strongly convex in u, so the minimiser is unique
    u_true = blocky()
    model = perceptron(100, (1, 7, 9), nn.LeakyReLU(0.5), bias=True)
    f, _ = noisy(model(u_true).detach(), 0.05)
    cfg = InversionConfig(max_iter=30000, tol=1e-9)
    a = invert(model, f, regularizer=TV(0.02), x0=torch.zeros_like(u_true), config=cfg)
    b = invert(model, f, regularizer=TV(0.02), x0=torch.rand(u_true.shape, dtype=F64, generator=gen(3)), config=cfg)
    assert a.iterations < cfg.max_iter and b.iterations < cfg.max_iter
    assert a.history.primal_residual[-1] <= 1e-9 and a.history.dual_residual[-1] <= 1e-9
    torch.testing.assert_close(a.input, b.input, atol=1e-7, rtol=0)
    # reference: a long proximal-gradient run (BCD with FISTA steps) on the same objective, with
    # the default inexact TV prox (10 warm-started dual iterations per step): it converges to the
    # same minimiser
    task = prepare(model, f, x0=torch.zeros_like(u_true))
    ref_cfg = InversionConfig(max_iter=5000, tol=1e-10)
    ref = solve_task(task, LiftedBCD(task.network, task.x0, task.data, task.projected, None, False, ref_cfg), TV(0.02), ref_cfg)
    torch.testing.assert_close(a.input, ref.input, atol=1e-6, rtol=0)
    assert a.history.energy[-1] == pytest.approx(ref.history.energy[-1], rel=1e-7)


def test_one_softmax_layer_with_tv_matches_a_bound_constrained_reference():
    r"""A softmax output layer has no ``prox_phi``, so PDHG cannot dualise its data term (the
    solve raised); :math:`\min_u \mathrm{KL}(f\,\|\,\mathrm{softmax}(Wu + b)) + \alpha\mathrm{TV}(u)`
    is solved by BCD. Oracle: on a :math:`1\times n` image TV is :math:`\sum_j|u_{j+1} - u_j|`;
    with :math:`u = u_1 + \mathrm{cumsum}(p - q)`, :math:`p, q \ge 0`, the objective
    :math:`\mathrm{logsumexp}(Wu + b) - \langle f, Wu + b\rangle + \alpha\sum(p + q)` (KL up to a
    constant) is smooth under bounds: scipy's L-BFGS-B."""
    import numpy as np
    from scipy.optimize import minimize

    n, alpha = 6, 0.02
    model = perceptron(8, (1, 1, n), nn.Softmax(dim=1), seed=4, bias=True)
    linear = model[1]
    u_true = torch.rand(1, 1, 1, n, dtype=F64, generator=gen(3))
    f = model(u_true).detach()
    res = invert(model, f, input_shape=(1, 1, n), regularizer=TV(alpha), config=InversionConfig(max_iter=3000, tol=1e-12))

    def objective(z):
        z = torch.tensor(z, requires_grad=True)
        u = torch.cat([z[:1], z[:1] + torch.cumsum(z[1:n] - z[n:], 0)])
        a = linear(u[None])
        value = (torch.logsumexp(a, 1) - (f * a).sum(1)).sum() + alpha * z[1:].sum()
        value.backward()
        return value.item(), z.grad.numpy()

    ref = minimize(objective, np.zeros(2 * n - 1), jac=True, method="L-BFGS-B", bounds=[(None, None)] + [(0, None)] * (2 * n - 2),
                   options=dict(ftol=1e-15, gtol=1e-12, maxiter=10000))
    z = torch.from_numpy(ref.x)
    u_ref = torch.cat([z[:1], z[:1] + torch.cumsum(z[1:n] - z[n:], 0)])
    assert 0 < (u_ref.diff().abs() > 1e-3).sum() < n - 1  # TV is active, the solution not constant
    torch.testing.assert_close(res.input.flatten(), u_ref, atol=1e-7, rtol=0)


def test_pdhg_batch_samples_are_solved_independently():
    """PDHG's steps come from a Lanczos estimate of ||M||^2, which was taken on a random start of
    the batch's shape, so a sample's step, and iterates (1.7e-10 after 200 iterations), depended
    on the batch; it is now taken on one sample. Oracle: each sample solved alone (its own TV
    weight), fixed number of iterations, to 1e-13."""
    model = perceptron(30, (1, 7, 7), nn.LeakyReLU(0.5))
    u = torch.rand(3, 1, 7, 7, dtype=F64, generator=gen(0))
    f, _ = noisy(model(u).detach(), 0.05)
    weights = torch.tensor([0.01, 0.05, 0.2], dtype=F64)
    _assert_samples_solved_alone(model, f, weights, (1, 7, 7), InversionConfig(max_iter=200, tol=0), atol=1e-13)


def _assert_samples_solved_alone(network, f, weights, input_shape, config, atol, free_output=False):
    """``invert`` of the batch ``f`` with per-sample TV ``weights`` equals, per sample, the
    inversion of that sample alone with its own weight, to ``atol``."""
    batch = invert(network, f, regularizer=TV(weights), input_shape=input_shape, free_output=free_output, config=config)
    for b in range(len(f)):
        solo = invert(network, f[b:b + 1], regularizer=TV(weights[b:b + 1]), input_shape=input_shape,
                      free_output=free_output, config=config)
        torch.testing.assert_close(batch.input[b:b + 1], solo.input, rtol=0, atol=atol)


def test_pdhg_layer_weight_scales_the_data_term():
    r""":math:`\lambda B(f, Wu + b) + \alpha TV(u)` is :math:`\lambda` times the objective with the
    weights 1 and :math:`\alpha/\lambda`: same minimiser, energies in the ratio :math:`\lambda`."""
    from liftinv import lift

    u_true = blocky()
    model = perceptron(100, (1, 7, 9), nn.LeakyReLU(0.5), bias=True)
    f, _ = noisy(model(u_true).detach(), 0.05)
    cfg = InversionConfig(max_iter=30000, tol=1e-10)
    plain = invert(model, f, input_shape=(1, 7, 9), regularizer=TV(0.01), config=cfg)
    weighted = lift(model, input_shape=(1, 7, 9))
    weighted.layer(1).weight = 3.0
    scaled = invert(weighted, f, input_shape=(1, 7, 9), regularizer=TV(0.03), config=cfg)
    torch.testing.assert_close(scaled.input, plain.input, atol=1e-7, rtol=0)
    assert scaled.history.energy[-1] == pytest.approx(3 * plain.history.energy[-1], rel=1e-7)


def test_pdhg_iterates_and_residuals_match_a_hand_iteration():
    r"""Three PDHG iterations for an affine layer :math:`N(u) = Wu + c` (identity activation) with
    TV, written out by hand: :math:`h_1^*(s) = \langle s, f - c\rangle + \|s\|^2/(2\lambda)`, so
    :math:`\operatorname{prox}_{\sigma h_1^*}(v) = (v - \sigma(f - c))/(1 + \sigma/\lambda)`;
    steps :math:`\sigma_1 = 1/\beta`, :math:`\sigma_2 = \beta/8`, :math:`\tau = 0.49/\beta` with
    :math:`\beta^2 = 1.02\|W\|^2` (the exact norm here, the solver's Lanczos estimate within
    1e-4); the primal and dual residuals (module docstring of ``liftinv.inversion_pdhg``)."""
    u_true = blocky()
    model = perceptron(40, (1, 7, 9), nn.Identity(), bias=True)
    linear = model[1]
    f, _ = noisy(model(u_true).detach(), 0.05)
    alpha = 0.05
    res = invert(model, f, input_shape=(1, 7, 9), regularizer=TV(alpha), x0=torch.zeros_like(u_true),
                 config=InversionConfig(max_iter=3, tol=0))
    W, c = linear.weight.detach(), linear.bias.detach()
    beta = (1.02 * torch.linalg.matrix_norm(W, 2) ** 2).sqrt()
    s1, s2, tau = 1 / beta, beta / 8, 0.49 / beta

    def M(u):
        return u.flatten(1) @ W.T

    def Mt(s):
        return (s @ W).reshape(u_true.shape)

    u = u_bar = torch.zeros_like(u_true)
    s, q = torch.zeros_like(f), torch.zeros(*u.shape[:2], 2, *u.shape[2:], dtype=F64)
    for k in range(3):
        s_new = (s + s1 * M(u_bar) - s1 * (f - c)) / (1 + s1)
        q_new = q + s2 * grad2d(u_bar)
        q_new = q_new / (q_new.pow(2).sum(2, keepdim=True).sqrt() / alpha).clamp_min(1)
        u_new = u - tau * (Mt(s_new) - div2d(q_new))
        primal = (u - u_new).norm() / tau / max((Mt(s_new)).norm(), div2d(q_new).norm(), u_new.norm() / tau)
        r_s, r_q = (s - s_new) / s1 + M(u_bar - u_new), (q - q_new) / s2 + grad2d(u_bar - u_new)
        scale = max(torch.cat([M(u_new).flatten(), grad2d(u_new).flatten()]).norm(),
                    torch.cat([(s_new / s1).flatten(), (q_new / s2).flatten()]).norm())
        dual = torch.cat([r_s.flatten(), r_q.flatten()]).norm() / scale
        assert res.history.primal_residual[k] == pytest.approx(float(primal), rel=1e-3)
        assert res.history.dual_residual[k] == pytest.approx(float(dual), rel=1e-3)
        u, u_bar, s, q = u_new, 2 * u_new - u, s_new, q_new
    torch.testing.assert_close(res.input, u, rtol=0, atol=1e-4 * float(u.abs().max()))


def test_pdhg_with_tol_zero_runs_max_iter_iterations_even_at_a_fixed_point():
    r"""``InversionConfig.tol = 0``: never stop on the residuals. Started at the solution of
    :math:`\min_u B_{\mathrm{ReLU}}(0, u) + 0.1\,\mathrm{TV}(u)` (u = 0: data and TV zero), PDHG
    stays exactly there, both residuals are 0, and it stopped after one of its 50 iterations
    (BCD and the gradient baseline run them all)."""
    linear = nn.Linear(12, 12, bias=False).double()
    with torch.no_grad():
        linear.weight.copy_(torch.eye(12, dtype=F64))
    model = nn.Sequential(nn.Flatten(), linear, nn.ReLU())
    u = torch.zeros(2, 1, 3, 4, dtype=F64)
    res = invert(model, model(u).detach(), regularizer=TV(0.1), x0=u, config=InversionConfig(max_iter=50, tol=0))
    assert res.history.primal_residual[0] == res.history.dual_residual[0] == 0
    assert res.iterations == 50 and torch.equal(res.input, u)


def test_pdhg_stops_on_its_residuals_when_the_solution_is_zero():
    r""":math:`\min_u B_{\tanh}(0, Wu) + 0.1\,\mathrm{TV}(u)` with an injective :math:`W` (40 x 12)
    has the unique solution :math:`u = 0` (:math:`B_{\tanh}(0, a) = \log\cosh a`). The primal
    residual was relative to :math:`\max(\|M^*s\|, \|\operatorname{div} q\|, \|u\|/\tau)`, all of
    which shrink with :math:`u`, so it settled at the rate of convergence (0.02 to 0.09 with
    :math:`u \sim 10^{-17}`) and PDHG ran all its iterations; with the TV dual ball's scale
    :math:`\sqrt{8n}\,\|\alpha\|` in the denominator it stops at tol 1e-6 near 0. Oracle: the
    closed-form solution 0."""
    model = perceptron(40, (1, 3, 4), nn.Tanh())
    u0 = torch.rand(2, 1, 3, 4, dtype=F64, generator=gen(0))
    res = invert(model, torch.zeros(2, 40, dtype=F64), regularizer=TV(0.1), x0=u0,
                 config=InversionConfig(max_iter=1000, tol=1e-6))
    assert res.iterations < 1000  # about 300
    assert res.history.primal_residual[-1] <= 1e-6 and res.history.dual_residual[-1] <= 1e-6
    assert float(res.input.abs().max()) <= 1e-5


def test_pdhg_in_float32_with_a_zero_tv_weight_matches_float64():
    """A zero TV weight (given, or chosen for a sample with zero noise level) makes the dual ball
    radius 0; its floor 1e-300 is 0 in float32, and 0/0 filled u with NaN ('x contains NaN or Inf
    entries'). Oracle: the same solve in float64."""
    u_true = blocky(h=4, w=5)
    model = perceptron(30, (1, 4, 5), nn.LeakyReLU(0.5), bias=True)
    f, _ = noisy(model(u_true).detach(), 0.05)
    cfg = InversionConfig(max_iter=300, tol=0)
    results = [invert(m, f.to(m[1].weight.dtype), regularizer=TV(torch.tensor([0.0, 0.05], dtype=m[1].weight.dtype)),
                      input_shape=(1, 4, 5), config=cfg).input for m in (copy.deepcopy(model).float(), model)]
    torch.testing.assert_close(results[0].double(), results[1], atol=1e-4, rtol=0)


def test_pdhg_warm_start_with_a_smaller_weight_projects_the_dual_first():
    r"""A solve with a new weight :math:`\alpha'` first projects the kept TV dual onto
    :math:`|q| \le \alpha'`, then iterates: after 20 iterations at :math:`\alpha = 0.5` and one at
    :math:`\alpha' = 0.05`, u equals the hand iteration
    :math:`u^+ = u - \tau(M^*s^+ - \operatorname{div}\Pi_{\alpha'}(\Pi_{\alpha'}(q) + \sigma_2\nabla\bar u))`
    (identity activation, steps from the solver's :math:`\beta`)."""
    from liftinv.inversion_pdhg import PrimalDual

    model = perceptron(20, (1, 4, 5), nn.Identity(), seed=3)
    f, _ = noisy(model(blocky(h=4, w=5, seed=1)).detach(), 0.05)
    task = prepare(model, f, input_shape=(1, 4, 5))
    solver = PrimalDual(task.network, task.x0, task.projected, None, InversionConfig(max_iter=20, tol=0))
    solver.solve(TV(0.5), InversionHistory())
    u, u_bar, s, q = solver.u, solver.u_bar, solver.s, solver.q
    assert (q.pow(2).sum(2).sqrt() > 0.06).any()  # the projection matters
    W = model[1].weight.detach()
    s1, s2, tau = 1 / solver.beta, solver.beta / 8, 0.49 / solver.beta
    s_new = (s + s1 * (u_bar.flatten(1) @ W.T) - s1 * f) / (1 + s1)

    def project(p):
        return p / (p.pow(2).sum(2, keepdim=True).sqrt() / 0.05).clamp_min(1)

    q_new = project(project(q) + s2 * grad2d(u_bar))
    expected = u - tau * ((s_new @ W).reshape(u.shape) - div2d(q_new))
    solver.config = InversionConfig(max_iter=1, tol=0)
    solver.solve(TV(0.05), InversionHistory())
    torch.testing.assert_close(solver.u, expected, rtol=0, atol=1e-12)


def test_pdhg_energy_history_and_result_fields():
    u_true = blocky(b=3)
    model = perceptron(60, (1, 7, 9), nn.ReLU())
    f = model(u_true).detach()
    res = invert(model, f, input_shape=(1, 7, 9), regularizer=TV(0.01, box=(0.0, 1.0)),
                 config=InversionConfig(max_iter=200, tol=0))
    h = res.history
    assert res.input.shape == u_true.shape and res.iterations == 200
    assert len(h.energy) == len(h.primal_residual) == len(h.dual_residual) == len(h.time) == 200
    assert all(t1 >= t0 for t0, t1 in zip(h.time, h.time[1:]))
    assert res.input.min() >= 0 and res.input.max() <= 1
    assert h.energy[-1] < h.energy[0]
    assert torch.equal(res.alpha, torch.full((len(f),), 0.01, dtype=f.dtype)) and res.target is None  # the weight given
    assert len(res.variables) == 2 and res.variables[0] is not None
    boxed = invert(model, f, input_shape=(1, 7, 9), regularizer=Box(0.0, 1.0), config=InversionConfig(max_iter=5, tol=0))
    assert torch.all(torch.isnan(boxed.alpha))  # a regulariser without a weight


# ---------------------------------------------------------------- deep networks (BCD)
def test_bcd_energy_decreases_on_mlp():
    net = MLP([6, 9, 8, 5], nn.LeakyReLU(0.1), generator=gen(0)).double()
    u = torch.randn(3, 6, dtype=F64, generator=gen(1))
    f, _ = noisy(net(u).detach(), 0.05)
    res = invert(net, f, regularizer=Tikhonov(1e-2), config=InversionConfig(max_iter=300, tol=0, rule=Plain(), energy_every=1))
    e = res.history.energy
    assert all(e1 <= e0 * (1 + 1e-12) for e0, e1 in zip(e, e[1:]))
    assert e[-1] < 0.5 * e[0]
    # Nesterov with restart: lower energy in the same number of iterations; by default the
    # energy is evaluated every energy_every sweeps and at the last one
    fast = invert(net, f, regularizer=Tikhonov(1e-2), config=InversionConfig(max_iter=300, tol=0))
    assert fast.history.energy[-1] <= e[-1]
    # the restarts make the convergence linear: 300 sweeps reach the energy of 900 to 1e-9
    # (3.5e-12; without restarts the gap is 1.1e-6)
    long = invert(net, f, regularizer=Tikhonov(1e-2), config=InversionConfig(max_iter=900, tol=0, energy_every=900))
    assert 0 <= fast.history.energy[-1] - long.history.energy[-1] < 1e-9
    evaluated = [i + 1 for i, v in enumerate(fast.history.energy) if not math.isnan(v)]
    assert evaluated == list(range(10, 301, 10))
    short = invert(net, f, regularizer=Tikhonov(1e-2), config=InversionConfig(max_iter=25, tol=0, energy_every=7))
    assert [i + 1 for i, v in enumerate(short.history.energy) if not math.isnan(v)] == [7, 14, 21, 25]
    # rules whose momentum is not in the gradient point restart on the energy: every sweep
    heavy = invert(net, f, regularizer=Tikhonov(1e-2), config=InversionConfig(max_iter=25, tol=0, rule=HeavyBall(0.5)))
    assert all(math.isfinite(v) for v in heavy.history.energy) and heavy.history.energy[-1] < heavy.history.energy[0]


def _joint_smooth_part(net, xs, free):
    """g(X) = E(X) - sum_{k free, k > 0} lambda_k Phi_k(x_k) as a function of the flattened free
    variables (the part of the energy that a joint proximal-gradient step linearises)."""
    sizes = [xs[i].numel() for i in free]

    def g(flat):
        ys = [p.reshape(xs[i].shape) for p, i in zip(flat.split(sizes), free)] + list(xs[len(free):])
        total = net.energy(ys).sum()
        for k in free:
            if k > 0:
                total = total - net.layer(k).weight * (0.5 * ys[k].pow(2) + net.layer(k).activation.psi(ys[k])).sum()
        return total

    return g, sizes


@pytest.mark.parametrize("seed", [0, 1])
def test_joint_steps_majorise_the_hessian_of_the_smooth_part(seed):
    # oracle: the full Hessian of g by autograd; diag(D_b) - H must be PSD for the joint steps
    # 1/D_b, while the single-block constants L_b miss the cross-layer terms (the exact ResNet's
    # layers read up to three free variables)
    resnets = [ResNet(3, 2, nn.LeakyReLU(0.2), tied=True, in_features=2, out_features=2, residual=r,
                      generator=gen(seed)).double() for r in ("penalty", "exact")]
    mlp = MLP([3, 4, 5, 2], nn.LeakyReLU(0.3), generator=gen(seed)).double()
    for net, n_in in ((resnets[0], 2), (resnets[1], 2), (mlp, 3)):
        u = torch.randn(1, n_in, dtype=F64, generator=gen(seed + 5))
        xs = [x + 0.3 * torch.randn(x.shape, dtype=F64, generator=gen(seed)) for x in net.feasible(u)]
        free = range(net.depth)
        g, sizes = _joint_smooth_part(net, xs, free)
        hessian = torch.autograd.functional.hessian(g, torch.cat([xs[i].flatten() for i in free]))
        margins = []
        for cls in (JointProblem, LiftedProblem):
            problem = cls(net, xs, free_vars=free, train_params=False)
            d = torch.cat([torch.full((n,), problem.lipschitz(Var(i)), dtype=F64) for n, i in zip(sizes, free)])
            margins.append(float(torch.linalg.eigvalsh(torch.diag(d) - hessian).min()))
        assert margins[0] >= 0 > margins[1], margins


@pytest.mark.parametrize("seed, tikhonov", [(0, None), (1, None), (0, 1.0)])
def test_coupling_factor_is_the_top_eigenvalue_of_the_scaled_quadratic_form(seed, tikhonov):
    # oracle: S(d) = sum_k lambda_k |e_k - d_k|^2 (+ ell |d_0|^2 for a smooth term of curvature ell
    # on the input) is the Hessian of the lifted energy of the same network with identity
    # activations (Bregman = 1/2 |x - a|^2); its block-scaled top eigenvalue by a dense eigensolver
    net = ResNet(3, 2, nn.Tanh(), tied=True, in_features=2, out_features=2, residual="exact",
                 generator=gen(seed)).double()
    xs = [x[:1] for x in net.feasible(torch.randn(1, 2, dtype=F64, generator=gen(seed + 3)))]
    free = range(net.depth)
    terms = {} if tikhonov is None else {0: Tikhonov(tikhonov)}
    problem, single = (cls(net, xs, free_vars=free, train_params=False, terms=terms) for cls in (JointProblem, LiftedProblem))
    own = [single.lipschitz(Var(i)) + (net.layer(i).weight if i > 0 else 0.0) for i in free]
    steps = [problem.lipschitz(Var(i)) for i in free]
    linear = copy.deepcopy(net)
    for k in range(1, net.depth + 1):
        linear.layer(k).activation = Identity()
    g, sizes = _joint_smooth_part(linear, xs, free)
    s_form = torch.autograd.functional.hessian(lambda flat: g(flat) + sum(
        0.5 * linear.layer(k).weight * flat.split(sizes)[k].pow(2).sum() for k in free if k > 0)
        + 0.5 * (tikhonov or 0.0) * flat.split(sizes)[0].pow(2).sum(),
        torch.cat([xs[i].flatten() for i in free]))
    scale = torch.cat([torch.full((n,), w ** -0.5, dtype=F64) for n, w in zip(sizes, own)])
    t = float(torch.linalg.eigvalsh(scale[:, None] * s_form * scale[None, :]).max())
    ratios = [d / w for d, w in zip(steps, own)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-12)
    assert LIPSCHITZ_MARGIN * t * 0.98 <= ratios[0] <= LIPSCHITZ_MARGIN * t * (1 + 1e-9)
    assert t > 1.2  # the blocks are coupled: the diagonal blocks alone would miss it


def test_joint_steps_reach_the_gauss_seidel_reference():
    # a long top-down Gauss-Seidel run (the classical lifted BCD) as reference minimiser
    net = MLP([6, 9, 8, 5], nn.LeakyReLU(0.5), generator=gen(0)).double()
    u = torch.randn(3, 6, dtype=F64, generator=gen(1))
    f, _ = noisy(net(u).detach(), 0.05)
    res = invert(net, f, regularizer=Tikhonov(1e-2), config=InversionConfig(max_iter=5000, tol=1e-10))
    xs = net.feasible(torch.zeros_like(u))
    reference = LiftedProblem(net, [*xs[:-1], f], free_vars=range(net.depth), train_params=False,
                              terms={0: Tikhonov(1e-2)})
    run(BCD(var_rule=Nesterov()), reference, max_iter=1000, rtol=1e-15)
    torch.testing.assert_close(res.input, reference.xs[0], atol=1e-6, rtol=0)
    assert res.history.energy[-1] == pytest.approx(float(reference.energy()), rel=1e-9)


def test_consecutive_solves_continue_the_accelerated_trajectory():
    # warm start of the whole state (variables, momentum, TV dual): two solves of n sweeps with
    # the same weight are one solve of 2n sweeps
    net = ResNet(2, 2, nn.LeakyReLU(0.2), tied=True, in_features=1, out_features=1, kernel_size=3, generator=gen(4)).double()
    u = blocky(b=2, h=6, w=7, seed=5)
    f, _ = noisy(net(u).detach(), 0.05)
    task = prepare(net, f, x0=torch.full_like(u, 0.5))
    results = []
    for solves, sweeps in ((2, 40), (1, 80)):
        cfg = InversionConfig(max_iter=sweeps, tol=0, energy_every=1)
        solver, reg, history = LiftedBCD(task.network, task.x0, task.data, task.projected, None, False, cfg), TV(0.01), InversionHistory()
        for _ in range(solves):
            solver.solve(reg, history)
        results.append((solver.input, history.energy))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-12, rtol=0)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-12)


def test_bcd_with_tol_zero_runs_max_iter_sweeps_even_at_a_fixed_point():
    """tol = 0 means never stop on the change: started at the exact input of noiseless data (the
    forward pass is a fixed point, every sweep changes the variables by exactly 0), BCD runs all
    max_iter sweeps; with tol > 0 it stops after the first."""
    model = perceptron(6, (1, 2, 2), nn.LeakyReLU(0.5))
    u = torch.rand(2, 1, 2, 2, dtype=F64, generator=gen(3))
    for tol, sweeps in ((0.0, 5), (1e-12, 1)):
        res = invert(model, model(u).detach(), input_shape=(1, 2, 2), x0=u, config=InversionConfig(max_iter=5, tol=tol))
        assert res.iterations == sweeps and res.history.primal_residual == [0.0] * sweeps


def test_bcd_rebuilds_the_problem_when_a_smooth_regulariser_changes_weight():
    """The input block's step depends on a smooth regulariser's weight: after a solve with
    Tikhonov(1e-3), a solve with Tikhonov(50) from there reaches the closed-form minimiser
    u = (M^T M + w I)^{-1} M^T (f - b) of 1/2 |M u + b - f|^2 + w/2 |u|^2 (identity activation)."""
    model = seeded(nn.Sequential(nn.Linear(5, 9)).double(), 2)
    f = model(torch.randn(2, 5, dtype=F64, generator=gen(8))).detach()
    task = prepare(model, f, input_shape=(5,))
    cfg = InversionConfig(max_iter=3000, tol=1e-13)
    bcd = LiftedBCD(task.network, task.x0, task.data, task.projected, task.y, False, cfg)
    bcd.solve(Tikhonov(1e-3), InversionHistory())
    bcd.solve(Tikhonov(50.0), InversionHistory())
    mat, bias = model[0].weight, model[0].bias
    expected = torch.linalg.solve(mat.T @ mat + 50.0 * torch.eye(5, dtype=F64), mat.T @ (f - bias).T).T
    torch.testing.assert_close(bcd.input, expected, atol=1e-9, rtol=0)


def test_bcd_residual_is_the_change_relative_to_the_new_iterate():
    """BCD records |X_k - X_{k-1}| / |X_k| over the free variables (one layer, clamped output: the
    input): from x0 = 0 the first is 1; the second from the inputs after one and two sweeps."""
    model = seeded(nn.Sequential(nn.Linear(5, 9)).double(), 2)
    f = model(torch.randn(2, 5, dtype=F64, generator=gen(8))).detach()
    one, two = (invert(model, f, input_shape=(5,), regularizer=Tikhonov(0.1), config=InversionConfig(max_iter=n, tol=0))
                for n in (1, 2))
    assert two.history.primal_residual[0] == pytest.approx(1.0, rel=1e-12)
    expected = float((two.input - one.input).norm() / two.input.norm())
    assert two.history.primal_residual[1] == pytest.approx(expected, rel=1e-10)


def test_deep_bcd_with_nesterov_evaluates_the_energy_every_energy_every_sweeps():
    """From two layers on, the Nesterov rule takes joint steps with gradient restarts and records
    the energy only every energy_every sweeps and at the last sweep (NaN elsewhere)."""
    model = seeded(nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.5), nn.Linear(6, 5)).double(), 1)
    f = model(torch.randn(2, 4, dtype=F64, generator=gen(3))).detach()
    res = invert(model, f, input_shape=(4,), config=InversionConfig(max_iter=12, tol=0, energy_every=5))
    finite = [k + 1 for k, e in enumerate(res.history.energy) if math.isfinite(e)]
    assert finite == [5, 10, 12]


def test_deep_tv_inversion_does_not_depend_on_earlier_inversions_with_the_same_regularizer():
    """TV's prox warm-starts from the dual of its last call on a batch of the same shape: an
    inversion of other data with the same TV object changed the next inversion's result (by 7 %
    of the input after 30 sweeps), without a word. Oracle: the same call with a fresh TV(0.01),
    bit for bit."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(2, 1, 3, padding=1),
                        nn.LeakyReLU(0.2)).double()
    for p, seed in zip(net.parameters(), range(4)):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, dtype=F64, generator=gen(seed)) / 3)
    f, g = (net(torch.rand(2, 1, 6, 6, dtype=F64, generator=gen(s))).detach() for s in (5, 6))
    config = InversionConfig(max_iter=30, tol=0)
    fresh = invert(net, f, regularizer=TV(0.01), input_shape=(1, 6, 6), config=config)
    used = TV(0.01)
    invert(net, g, regularizer=used, input_shape=(1, 6, 6), config=config)
    again = invert(net, f, regularizer=used, input_shape=(1, 6, 6), config=config)
    assert torch.equal(again.input, fresh.input)


def _two_conv_layers(last=None):
    """Conv(1, 2, 3), leaky ReLU, Conv(2, 1, 3), ``last`` (leaky ReLU by default), with seeded
    weights; float64."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(2, 1, 3, padding=1),
                        last or nn.LeakyReLU(0.2)).double()
    for p, seed in zip(net.parameters(), range(4)):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, dtype=F64, generator=gen(seed)) / 3)
    return net


@pytest.mark.parametrize("rule", [Nesterov(), Plain()], ids=["gradient-restart", "function-restart"])
def test_bcd_sweeps_read_the_host_once_besides_the_solver(host_reads, spy, rule):
    """A BCD sweep of deep inversion reads the device once (a sync on a GPU) besides BCD's two
    finiteness checks: the two norms of the change and the restart test's two flags (Nesterov,
    per sample) or the energy (other rules) come in one read; they were four and three reads.
    Oracle: the count of host reads (tol = 0) for 4 and 9 sweeps; each recorded residual is
    |X_k - X_{k-1}| / max(|X_k|, 1e-30) of the iterates after each sweep (bit for bit), and the
    last recorded energy that of the returned variables."""
    net = _two_conv_layers()
    f = net(torch.rand(3, 1, 6, 6, dtype=F64, generator=gen(5))).detach()
    task = prepare(net, f, input_shape=(1, 6, 6))
    counts = []
    for n in (4, 9):
        cfg = InversionConfig(max_iter=n, tol=0, energy_every=100, rule=rule)
        bcd, history = LiftedBCD(task.network, task.x0, task.data, task.projected, None, False, cfg), InversionHistory()
        bcd._problem(Tikhonov(0.01)).lipschitz(Var(0))  # the constants, computed once per problem
        iterates = spy(BCD, "step", lambda solver, problem, state: [problem.xs[i] for i in problem.free_vars])
        with host_reads() as reads:
            bcd.solve(Tikhonov(0.01), history)
        counts.append(len(reads))
    assert counts[1] - counts[0] == 5 * 3
    iterates.append([bcd.xs[i] for i in bcd.problem.free_vars])
    for k, residual in enumerate(history.primal_residual):
        steps = [c - p for c, p in zip(iterates[k + 1], iterates[k])]
        assert residual == joint_norm(*steps) / max(joint_norm(*iterates[k + 1]), 1e-30)
    assert history.energy[-1] == float(bcd.problem.energy())


def test_tv_prox_in_bcd_sweeps_reads_the_host_for_per_sample_weights_only(host_reads):
    """The input block's TV prox inside BCD reads nothing from the device for a fixed weight:
    it scanned its argument for NaN/Inf (the solver checks gradients and proxes already) and
    read whether any weight is positive, two syncs per sweep on a GPU; per-sample weights keep
    the second. Oracle: the count of host reads (tol = 0) for 4 and 9 sweeps, 3 per sweep as with
    a smooth regulariser (4 with per-sample weights); the input equals that of TV's prox applied
    outside the solver's trust (a NaN there is still refused by name)."""
    net = _two_conv_layers()
    f = net(torch.rand(3, 1, 6, 6, dtype=F64, generator=gen(5))).detach()
    task = prepare(net, f, input_shape=(1, 6, 6))
    for weight, per_sweep in ((0.01, 3), (torch.tensor([0.01, 0.0, 0.1], dtype=F64), 4)):
        counts = []
        for n in (4, 9):
            cfg = InversionConfig(max_iter=n, tol=0, energy_every=100)
            bcd = LiftedBCD(task.network, task.x0, task.data, task.projected, None, False, cfg)
            bcd._problem(TV(weight)).lipschitz(Var(0))
            with host_reads() as reads:
                bcd.solve(TV(weight), InversionHistory())
            counts.append(len(reads))
        assert counts[1] - counts[0] == 5 * per_sweep
    problem, v = bcd.problem, torch.rand(3, 1, 6, 6, dtype=F64, generator=gen(6))
    expected = copy.deepcopy(problem.terms[0]).prox(v, 0.5)  # the same warm-started dual
    assert torch.equal(problem.prox(Var(0), [v.clone()], 0.5)[0], expected)
    v[0, 0, 1, 1] = math.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        TV(weight).prox(v, 0.5)


def test_deep_bcd_batch_samples_are_solved_independently_with_nesterov():
    """The gradient restart of the Nesterov momentum is taken per sample: the test over the whole
    batch restarted every sample's momentum when one sample's step went against its momentum, so
    a sample's result depended on the others (0.39 from its solo solve after 100 sweeps).
    Oracle: each sample solved alone (its own TV weight), to 1e-12."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(2, 1, 3, padding=1),
                        nn.LeakyReLU(0.2)).double()
    for p, seed in zip(net.parameters(), range(4)):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, dtype=F64, generator=gen(seed)) / 3)
    f = net(torch.rand(3, 1, 6, 6, dtype=F64, generator=gen(5))).detach()
    weights = torch.tensor([0.003, 0.05, 0.3], dtype=F64)
    _assert_samples_solved_alone(net, f, weights, (1, 6, 6), InversionConfig(max_iter=100, tol=0), atol=1e-12)


@pytest.mark.parametrize("deep, rule", [(False, Nesterov()), (False, HeavyBall(0.9)), (False, Adam(lr=0.05)),
                                        (True, HeavyBall(0.9)), (True, Adam(lr=0.05))])
def test_bcd_function_scheme_restarts_each_sample_alone(monkeypatch, deep, rule):
    """The function scheme of restarts (one layer, solved by BCD with a free output; every rule
    but Nesterov on deep networks) compared the energy summed over the batch and cleared every
    sample's momentum when the sum increased, so a sample's result depended on the others (up
    to 0.4 from its solo solve after 60 sweeps). Oracle: each sample solved alone (its own TV
    weight), to 1e-12; the solo solves restart (their momentum cleared) at different sweeps, so
    the batch must restart some samples and not others."""
    if deep:
        net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(2, 1, 3, padding=1),
                            nn.LeakyReLU(0.2)).double()
        for p, seed in zip(net.parameters(), range(4)):
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, dtype=F64, generator=gen(seed)) / 3)
    else:
        net = perceptron(20, (1, 5, 5), nn.LeakyReLU(0.5))
    u = torch.rand(3, 1, 5, 5, dtype=F64, generator=gen(5))
    f, _ = noisy(net(u).detach(), 0.05)
    weights = torch.tensor([0.003, 0.05, 0.3], dtype=F64)
    cleared, step = [], BCD.step

    def spy(self, problem, state):  # per solve (batch, then each sample), the sweeps after which it cleared the momentum
        if state.iteration == 0:
            cleared.append([])
        elif not state.var_states:
            cleared[-1].append(state.iteration)
        return step(self, problem, state)

    monkeypatch.setattr(BCD, "step", spy)
    config = InversionConfig(max_iter=25, tol=0, rule=rule)
    _assert_samples_solved_alone(net, f, weights, (1, 5, 5), config, atol=1e-12, free_output=not deep)
    assert len(cleared) == 4 and len(set(map(tuple, cleared[1:]))) == 3 and all(cleared[2:])


def test_noiseless_injective_network_recovers_input():
    # tall layers with leaky ReLU (slope 0.5) are injective; noiseless data, no regulariser
    model = seeded(nn.Sequential(nn.Linear(4, 12), nn.LeakyReLU(0.5), nn.Linear(12, 20), nn.LeakyReLU(0.5)).double())
    u = torch.randn(3, 4, dtype=F64, generator=gen(5))
    res = invert(model, model(u).detach(), input_shape=(4,), config=InversionConfig(max_iter=20000, tol=1e-13))
    torch.testing.assert_close(res.input, u, atol=1e-6, rtol=0)
    assert res.discrepancy.max() < 1e-6


def test_noiseless_cnn_with_eval_mode_batch_norm_recovers_input():
    """A pre-trained-style CNN, convolutions each followed by a BatchNorm2d in eval mode (running
    statistics away from 0 and 1) and a leaky ReLU, with more channels than the input: lift
    refused its batch norms; inverted from noiseless data it gives back the input."""
    g = gen(11)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.5),
                          nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.LeakyReLU(0.5)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.6, 0.6, generator=g)
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-0.5, 0.5, generator=g)
            bn.running_var.uniform_(0.5, 2.0, generator=g)
    u = torch.rand(2, 1, 5, 5, dtype=F64, generator=g)
    res = invert(model, model(u).detach(), input_shape=(1, 5, 5), config=InversionConfig(max_iter=2000, tol=1e-13))
    torch.testing.assert_close(res.input, u, atol=1e-8, rtol=0)
    assert res.discrepancy.max() < 1e-8


def test_noiseless_identity_output_layer_recovers_input():
    # a last layer without activation: squared error data term
    model = seeded(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 10)).double(), 1)
    u = 0.5 * torch.randn(2, 3, dtype=F64, generator=gen(6))
    res = invert(model, model(u).detach(), input_shape=(3,), config=InversionConfig(max_iter=20000, tol=1e-13))
    torch.testing.assert_close(res.input, u, atol=1e-6, rtol=0)


def test_resnet_inversion_reduces_discrepancy():
    net = ResNet(5, 2, nn.LeakyReLU(0.2), tied=True, generator=gen(2)).double()
    u = torch.randn(2, 5, dtype=F64, generator=gen(3))
    f = net(u).detach()
    res = invert(net, f, config=InversionConfig(max_iter=3000, tol=1e-12))
    start = (net(torch.zeros_like(u)) - f).flatten(1).norm(dim=1)
    assert torch.all(res.discrepancy < 1e-3 * start)


def test_noiseless_exact_resnet_recovers_input():
    # tied blocks u + W^T sigma(W u + b) are strongly monotone, hence injective: with the stream
    # eliminated (layers reading up to three free variables) the joint steps reach the preimage
    net = ResNet(4, 3, nn.LeakyReLU(0.2), tied=True, residual="exact", generator=gen(7)).double()
    u = torch.randn(3, 4, dtype=F64, generator=gen(8))
    res = invert(net, net(u).detach(), config=InversionConfig(max_iter=20000, tol=1e-13))
    torch.testing.assert_close(res.input, u, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["pnn", "unrolled", "unrolled-ct"])
def test_lipschitz_estimate_of_networks_with_written_out_maps(name):
    """The first weight of the discrepancy search estimates the network's Lipschitz constant by
    ``torch.func`` products. On networks built of the written-out maps (``NormalStep``,
    ``ConvAdjoint``) it equals the same power iteration by double-backward autograd
    (``torch.autograd.functional``), and a whole search runs."""
    if name == "pnn":
        net = ProximalNeuralNetwork(1, 4, 2, generator=gen(1)).double()
        forward, shape = net, (1, 1, 8, 8)
    else:
        if name == "unrolled":
            physics = Blur(gaussian_kernel(1.0, dtype=F64), img_size=(1, 8, 8), boundary="zero", dtype=F64)
        else:  # Radon's sparse products need their own torch.func rules
            physics = Radon(8, 6, dtype=F64)
        net = UnrolledPrimalDual(physics, 2, 3, (1, 8, 8), generator=gen(1)).double()
        forward, shape = (lambda x: net.lifted(x, physics.A(x))), (1, 1, 8, 8)
    like = torch.zeros(shape, dtype=F64)
    g = torch.Generator().manual_seed(0)  # the draws of lipschitz_estimate
    v = torch.rand(shape, dtype=F64, generator=g)
    w = torch.randn(shape, dtype=F64, generator=g)
    for _ in range(15):
        w = w / w.norm()
        jw = torch.autograd.functional.jvp(forward, v, w)[1]
        w = torch.autograd.functional.vjp(forward, v, jw)[1]
    assert lipschitz_estimate(forward, like) == pytest.approx(float(w.norm()) ** 0.5, rel=1e-10)
    if name == "pnn":
        u = torch.rand(2, 1, 8, 8, dtype=F64, generator=gen(2))
        f, delta = noisy(net(u).detach(), torch.tensor([0.05, 0.1], dtype=F64))
        res = invert(net, f, input_shape=(1, 8, 8), regularizer=TV(), noise_level=delta,
                     config=InversionConfig(max_iter=200, max_search=3))
        assert torch.isfinite(res.input).all() and torch.all(res.alpha > 0)


def test_weight_search_through_ct_measurements():
    """Inversion through measurements y = A(N(u)) with a CT operator and the discrepancy
    principle: the search's first weight needs forward-mode products through A."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(2, 1, 3, padding=1)).double()
    physics = Radon(8, 6, dtype=F64)
    u = torch.rand(2, 1, 8, 8, dtype=F64, generator=gen(3))
    y, delta = noisy(physics.A(net(u)).detach(), torch.tensor([0.02, 0.05], dtype=F64))
    res = invert(net, y, input_shape=(1, 8, 8), physics=physics, regularizer=TV(), noise_level=delta,
                 config=InversionConfig(max_iter=100, max_search=3))
    assert torch.isfinite(res.input).all() and torch.all(res.alpha > 0) and len(res.history.steps) > 1


# ---------------------------------------------------------------- discrepancy principle
def test_discrepancy_principle_hits_target():
    u_true = blocky(b=3, seed=4)
    model = perceptron(40, (1, 7, 9), nn.ReLU(), seed=2)
    f, delta = noisy(model(u_true).detach(), torch.tensor([0.02, 0.05, 0.1], dtype=F64))
    cfg = InversionConfig(max_iter=2000, tol=1e-5, discrepancy_rtol=0.02)
    res = invert(model, f, input_shape=(1, 7, 9), regularizer=TV(), noise_level=delta, config=cfg)
    torch.testing.assert_close(res.target, delta)
    ratio = res.discrepancy / res.target
    assert torch.all((ratio - 1).abs() <= 0.02), ratio
    assert torch.all(res.alpha > 0) and len(res.history.steps) <= cfg.max_search
    # per sample, the result is the recorded solve with the largest weight among those that fit
    # the data to the noise level (the last of equal weights)
    d = torch.stack([step.discrepancy for step in res.history.steps])
    a = torch.stack([step.alpha for step in res.history.steps])
    fits = d <= (1 + cfg.discrepancy_rtol) * res.target
    assert bool(fits.any(0).all())
    order = torch.where(fits, a, torch.full_like(a, -1.0)) + 1e-12 * torch.arange(len(a), dtype=F64)[:, None]
    best = order.argmax(0)
    cols = torch.arange(d.shape[1])
    torch.testing.assert_close(res.discrepancy, d[best, cols], rtol=0, atol=0)
    torch.testing.assert_close(res.alpha, a[best, cols], rtol=0, atol=0)
    torch.testing.assert_close(res.discrepancy, torch.linalg.vector_norm((model(res.input) - f).flatten(1), dim=1))


@pytest.mark.parametrize("regularizer", [Tikhonov(), L1()], ids=["tikhonov", "l1"])
def test_discrepancy_principle_chooses_tikhonov_and_l1_weights(regularizer):
    """``weight=None`` works for Tikhonov and l1 as for TV: per sample, the weight that puts the
    discrepancy of the forward pass on the noise level, for a deep network (BCD)."""
    model = seeded(nn.Sequential(nn.Linear(6, 16), nn.LeakyReLU(0.3), nn.Linear(16, 20)).double(), 3)
    u = torch.randn(2, 6, dtype=F64, generator=gen(4))
    f, delta = noisy(model(u).detach(), torch.tensor([0.05, 0.2], dtype=F64))
    cfg = InversionConfig(max_iter=4000, tol=1e-9, discrepancy_rtol=0.02)
    res = invert(model, f, input_shape=(6,), regularizer=regularizer, noise_level=delta, config=cfg)
    ratio = res.discrepancy / res.target
    assert torch.all((ratio - 1).abs() <= 0.02), ratio
    assert torch.all(res.alpha > 0) and res.alpha[1] > res.alpha[0]  # more noise, more weight


class FakeSolver:
    """A solver for :func:`solve_task` on :func:`fake_task`: its solves set the input (B = 2,
    three entries) to the given values in turn, so the discrepancy |u[:, :1] - 0| is that value;
    each solve reports ``iterations``."""

    def __init__(self, values, iterations=1):
        self.values, self.iterations, self.calls = values, iterations, 0

    def solve(self, regularizer, history):
        value = self.values[self.calls]
        self.calls += 1
        self.input = torch.full((2, 3), value, dtype=F64)
        self.xs = [self.input, self.input + 1]
        return self.iterations


def fake_task(delta=1.0):
    """Task with N(u) = u[:, :1], zero data and noise level ``delta`` (two samples)."""
    data = torch.zeros(2, 1, dtype=F64)
    return Task(lambda u, y: u[:, :1], data, data, torch.full((2,), delta, dtype=F64), torch.zeros(2, 3, dtype=F64), None)


def test_search_returns_the_last_solve_that_fits_not_the_last_solve():
    """A search that runs out of solves right after overshooting returns the earlier solve, the
    one that fits the data to the noise level: its input, variables, weight and discrepancy (a
    fake solver whose discrepancies are 0.9 then 5 times the target)."""
    res = solve_task(fake_task(), FakeSolver((0.9, 5.0)), TV(), InversionConfig(tau=1.0, max_search=2))
    steps = res.history.steps
    assert len(steps) == 2 and torch.all(steps[1].discrepancy == 5.0) and torch.all(steps[1].alpha == 10 * steps[0].alpha)
    torch.testing.assert_close(res.input, torch.full((2, 3), 0.9, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(res.variables[1], torch.full((2, 3), 1.9, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(res.alpha, steps[0].alpha, rtol=0, atol=0)
    torch.testing.assert_close(res.discrepancy, torch.full((2,), 0.9, dtype=F64), rtol=0, atol=0)


def test_search_target_is_tau_delta_and_a_solve_within_rtol_fits():
    """The target is tau delta (tau = 2, delta = 1.5: 3) and a solve fits when d <= (1 + rtol) tau delta:
    after d = 1.5 (below: the weight grows tenfold), d = 3.12 is within rtol = 0.05 of the target,
    so the search stops and keeps it (the larger weight), not the first solve."""
    cfg = InversionConfig(tau=2.0, discrepancy_rtol=0.05, max_search=5)
    res = solve_task(fake_task(1.5), FakeSolver((1.5, 3.12)), TV(), cfg)
    steps = res.history.steps
    assert len(steps) == 2 and torch.all(steps[1].alpha == 10 * steps[0].alpha)
    torch.testing.assert_close(res.target, torch.full((2,), 3.0, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(res.discrepancy, torch.full((2,), 3.12, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(res.alpha, steps[1].alpha, rtol=0, atol=0)


@pytest.mark.parametrize("iterations, repeated", [(5, True), (4, False)])
def test_a_solve_that_reaches_max_iter_above_the_target_is_repeated_at_the_same_weight(iterations, repeated):
    """A solve that used all max_iter = 5 iterations and left d above the target is unsettled:
    the next solve keeps its weight; one that stopped earlier (4 iterations) is settled and the
    weight is lowered tenfold."""
    res = solve_task(fake_task(), FakeSolver((3.0, 1.0), iterations), TV(), InversionConfig(max_iter=5, max_search=2))
    first, second = (step.alpha for step in res.history.steps)
    torch.testing.assert_close(second, first if repeated else first / 10, rtol=1e-15, atol=0)


def test_zero_noise_level_gives_zero_weight():
    u_true = blocky()
    model = perceptron(100, (1, 7, 9), nn.LeakyReLU(0.5))
    res = invert(model, model(u_true).detach(), input_shape=(1, 7, 9), regularizer=TV(), noise_level=0.0,
                 config=InversionConfig(max_iter=20000, tol=1e-9))
    assert torch.all(res.alpha == 0) and res.iterations < 20000
    torch.testing.assert_close(res.input, u_true, atol=1e-5, rtol=0)


@pytest.mark.parametrize("regularizer, zero", [(TV(), TV(0.0)), (L1(), L1(0.0))], ids=["tv-pdhg", "l1-bcd"])
def test_zero_noise_level_everywhere_is_one_solve_at_weight_zero(regularizer, zero):
    """noise_level = 0 for every sample gives alpha = 0 without a search: solves stopped at
    max_iter (tol = 0) were repeated at alpha = 0 until max_search (12 solves, 12 max_iter
    iterations), a longer solve with another result. Oracle: the explicit weight 0, one solve of
    max_iter iterations, bit for bit (PDHG for TV on one layer, BCD for L1 on two)."""
    layers = [nn.Flatten(), nn.Linear(20, 24), nn.LeakyReLU(0.5)] + ([nn.Linear(24, 16)] if isinstance(zero, L1) else [])
    model = seeded(nn.Sequential(*layers).double(), 5)
    f = model(torch.rand(2, 1, 4, 5, dtype=F64, generator=gen(6))).detach()
    cfg = InversionConfig(max_iter=20, tol=0)
    res = invert(model, f, input_shape=(1, 4, 5), regularizer=regularizer, noise_level=0.0, config=cfg)
    ref = invert(model, f, input_shape=(1, 4, 5), regularizer=zero, config=cfg)
    assert len(res.history.steps) == 1 and res.iterations == ref.iterations == 20
    assert torch.all(res.alpha == 0) and torch.equal(res.input, ref.input)


def test_default_weight_without_noise_level():
    u_true = blocky()
    model = perceptron(30, (1, 7, 9), nn.ReLU())
    cfg = InversionConfig(max_iter=50, tol=0, default_alpha=0.3)
    res = invert(model, model(u_true).detach(), input_shape=(1, 7, 9), regularizer=TV(), config=cfg)
    assert torch.all(res.alpha == 0.3) and len(res.history.steps) == 1


# ---------------------------------------------------------------- data outside the domain
def test_negative_noise_under_relu_is_projected():
    u_true = blocky(b=2, seed=7)
    model = perceptron(50, (1, 7, 9), nn.ReLU(), seed=3)
    f, delta = noisy(model(u_true).detach(), 0.1, seed=4)
    assert (f < 0).any()
    cfg = InversionConfig(max_iter=5000, tol=1e-8)
    res = invert(model, f, input_shape=(1, 7, 9), regularizer=TV(0.02), config=cfg)
    assert all(math.isfinite(e) for e in res.history.energy)
    # same minimiser as for the projected data, and the data variable is the projection
    proj = invert(model, f.clamp_min(0), input_shape=(1, 7, 9), regularizer=TV(0.02), config=cfg)
    torch.testing.assert_close(res.input, proj.input, atol=1e-10, rtol=0)
    torch.testing.assert_close(res.variables[-1], f.clamp_min(0))
    # the discrepancy is measured against the raw data: at least the distance to the domain
    assert torch.all(res.discrepancy >= (f - f.clamp_min(0)).norm(dim=1) - 1e-12)
    # the free-output formulation is finite too (the loss is a squared error)
    free = invert(model, f, input_shape=(1, 7, 9), regularizer=TV(0.02), free_output=True,
                  config=InversionConfig(max_iter=300, tol=0))  # one layer: energy at every sweep
    assert all(math.isfinite(e) for e in free.history.energy)
    assert free.history.energy[-1] < free.history.energy[0]


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a.elementwise], ids=lambda a: type(a).__name__)
def test_saturation_values_are_the_flat_outputs(act):
    # brute force: the outputs that sigma takes on two neighbouring grid points (a flat piece)
    a = torch.linspace(-6, 6, 4801, dtype=F64)
    s = act(a)
    flat = sorted({round(float(v), 12) for v in s[1:][s[1:] == s[:-1]]})
    assert flat == sorted(act.saturation())


def test_first_alpha_for_tv_follows_the_lipschitz_constant_and_tau():
    r"""For TV, :math:`\alpha_0 = \operatorname{Lip}(N)\,\tau\delta/\sqrt{8n}`: an affine layer
    :math:`N(u) = Wu` with singular values 3, 1, ..., 1 (Lip 3; the power iteration gains a
    factor 9 per step), n = 63 inputs, :math:`\tau = 2`; other regularisers start at
    ``default_alpha``."""
    from liftinv.inversion import first_alpha

    q_out, _ = torch.linalg.qr(torch.randn(80, 63, dtype=F64, generator=gen(0)))
    q_in, _ = torch.linalg.qr(torch.randn(63, 63, dtype=F64, generator=gen(1)))
    singular = torch.ones(63, dtype=F64)
    singular[0] = 3.0
    model = perceptron(80, (1, 7, 9), nn.Identity())
    with torch.no_grad():
        model[1].weight.copy_(q_out @ torch.diag(singular) @ q_in.T)
    delta = torch.tensor([0.5, 2.0], dtype=F64)
    task = prepare(model, torch.zeros(2, 80, dtype=F64), input_shape=(1, 7, 9), noise_level=delta)
    cfg = InversionConfig(tau=2.0, default_alpha=0.3)
    torch.testing.assert_close(first_alpha(task, TV(), cfg), 3 * 2.0 * delta / math.sqrt(8 * 63), rtol=1e-8, atol=0)
    torch.testing.assert_close(first_alpha(task, Tikhonov(), cfg), torch.full((2,), 0.3, dtype=F64))


def test_first_alpha_of_a_network_with_measurements_is_per_sample():
    """A network that reads measurements y has a Jacobian that depends on them: the TV guess used
    sample 0's y for every sample (sample 1's guess differed from its solo one by 1e-3
    relatively). Oracle: each sample's guess computed alone."""
    from liftinv.architectures import ARCHITECTURES
    from liftinv.inversion import first_alpha

    example = ARCHITECTURES["unrolled_primal_dual"](gen(0))
    net, y = example.network, example.y
    f = net(example.u, y).detach()
    batch = first_alpha(prepare(net, f, noise_level=0.1, y=y), TV(), InversionConfig())
    for b in range(2):
        alone = first_alpha(prepare(net, f[b:b + 1], noise_level=0.1, y=y[b:b + 1]), TV(), InversionConfig())
        torch.testing.assert_close(batch[b:b + 1], alone, rtol=1e-12, atol=0)


@pytest.mark.parametrize("scale", [1e12, 1e-12])
def test_float32_lipschitz_estimate_of_a_network_far_from_unit_norm(scale):
    r""":func:`lipschitz_estimate` normalised by ``w.norm()``, whose sum of squares overflows in
    float32 once :math:`|J^\top J w|` passes about 1.8e19 and underflows below about 1e-19: a
    network with Lipschitz constant 1e12 or 1e-12 got the estimate NaN. Oracle: the float64 estimate of the same
    network (same draws), and the matrix's spectral norm."""
    lin = nn.Linear(6, 4, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(4, 6, generator=gen(3), dtype=F64) * scale)
    est64 = lipschitz_estimate(lin, torch.zeros(1, 6, dtype=F64))
    assert est64 == pytest.approx(float(torch.linalg.matrix_norm(lin.weight.detach(), 2)), rel=1e-5)
    assert lipschitz_estimate(lin.float(), torch.zeros(1, 6)) == pytest.approx(est64, rel=1e-4)


def test_first_alpha_keeps_the_lipschitz_estimate_in_float64():
    r"""The per-sample Lipschitz estimates (Python floats) were gathered by ``torch.tensor(list)``,
    torch's default float32, so a float64 inversion's :math:`\alpha_0` was rounded to float32
    (relative error ~1e-8, and the whole weight search with it). Oracle: the same formula in
    float64 from :func:`lipschitz_estimate` itself, to 1e-14."""
    from liftinv.architectures import ARCHITECTURES
    from liftinv.inversion import first_alpha

    example = ARCHITECTURES["unrolled_primal_dual"](gen(0))
    net, y = example.network, example.y
    task = prepare(net, net(example.u, y).detach(), noise_level=0.1, y=y)
    cfg = InversionConfig(tau=1.5)
    got = first_alpha(task, TV(), cfg)
    assert got.dtype == F64
    n = task.x0[0].numel()
    for b in range(2):
        lip = lipschitz_estimate(lambda x: net(x, y[b:b + 1]), task.x0[:1])
        assert abs(float(got[b]) - lip * 1.5 * 0.1 / math.sqrt(8 * n)) <= 1e-14 * float(got[b])


@pytest.mark.parametrize("deep", [False, True], ids=["pdhg", "bcd"])
def test_alpha_is_in_the_data_dtype_as_the_regulariser_applies_it(monkeypatch, deep):
    """A float32 inversion returned alpha (and SearchStep.alpha) in float64 after the weight
    search (search_alpha works in float64) but in float32 with a given or default weight. The
    regulariser applies the weight in the data's dtype, so alpha is the float32 rounding of the
    float64 weight each solve was given (a spy on TV.with_weight), and float32 on every path."""
    layers = [nn.Flatten(), nn.Linear(20, 12), nn.ReLU()] + ([nn.Linear(12, 10)] if deep else [])
    model = seeded(nn.Sequential(*layers).double(), 5).float()
    f = model(torch.rand(2, 1, 4, 5, generator=gen(6))).detach()
    f = f + 0.05 * torch.randn(f.shape, generator=gen(7))
    given = []
    with_weight = TV.with_weight
    monkeypatch.setattr(TV, "with_weight", lambda self, w: given.append(w.clone()) or with_weight(self, w))
    cfg = InversionConfig(max_iter=5, max_search=3)
    res = invert(model, f, input_shape=(1, 4, 5), regularizer=TV(), noise_level=0.2, config=cfg)
    assert len(given) == len(res.history.steps) == 3 and given[0].dtype == F64
    for step, w in zip(res.history.steps, given):
        assert step.alpha.dtype == torch.float32 and torch.equal(step.alpha, w.float())
    assert res.alpha.dtype == torch.float32 and any(torch.equal(res.alpha, w.float()) for w in given)
    for reg, noise in ((TV(0.1), 0.2), (TV(), None), (None, None)):
        assert invert(model, f, input_shape=(1, 4, 5), regularizer=reg, noise_level=noise, config=cfg).alpha.dtype == torch.float32


def test_tv_weight_search_leaves_zero_for_a_network_flat_at_the_random_input():
    r"""A ReLU layer :math:`N(u) = \max(u - 5, 0)` is flat on :math:`[0, 1]^n`, where
    ``lipschitz_estimate`` probes it: the estimate is 0, and so was :math:`\alpha_0`, which the
    search multiplies or divides by 10: every solve ran at :math:`\alpha = 0` and the exact fit
    (:math:`d \approx 0`) was returned. The first guess falls back to ``default_alpha``, and the
    search reaches :math:`\|N(u) - f_\delta\| = \delta` (forward pass) with a positive weight."""
    shape = (1, 5, 6)
    linear = nn.Linear(30, 30).double()
    with torch.no_grad():
        linear.weight.copy_(torch.eye(30, dtype=F64))
        linear.bias.fill_(-5.0)
    model = nn.Sequential(nn.Flatten(), linear, nn.ReLU())
    u_true = 6 + torch.rand(2, *shape, dtype=F64, generator=gen(0))
    f = model(u_true).detach() + 0.05 * torch.randn(2, 30, dtype=F64, generator=gen(1))
    assert lipschitz_estimate(model, u_true) == 0
    delta = torch.tensor([0.2, 0.4], dtype=F64)
    res = invert(model, f, input_shape=shape, regularizer=TV(), noise_level=delta,
                 config=InversionConfig(max_iter=500, tol=1e-8))
    assert (res.alpha > 0).all()
    d = (model(res.input) - f).norm(dim=1)
    torch.testing.assert_close(d, delta, rtol=0.05, atol=0)


def test_morozov_rule_keeps_the_largest_fitting_weight_else_the_smallest_discrepancy():
    """Per sample (bound 1): a fitting solve replaces a fitting kept one only with a weight at
    least as large; while the kept one does not fit, a solve replaces it when it fits or has a
    smaller discrepancy, by more than STALL = 2 % for a smaller weight (within it, the larger
    weight fits as well)."""
    from liftinv.inversion import _morozov_prefers

    cases = [  # (d, alpha) of the solve, (d, alpha) kept, whether the solve replaces it
        (0.9, 2.0, 0.5, 1.0, True),  # both fit: the larger weight
        (0.9, 0.5, 0.5, 1.0, False),
        (2.0, 5.0, 0.5, 1.0, False),  # the kept one fits, the solve does not
        (2.0, 0.1, 3.0, 1.0, True),  # neither fits: the smaller discrepancy
        (4.0, 5.0, 3.0, 1.0, False),
        (0.9, 0.1, 3.0, 1.0, True),  # only the solve fits
        (2.95, 0.1, 3.0, 1.0, False),  # neither fits, within 2 %: the larger weight
        (3.05, 5.0, 3.0, 1.0, True),
        (2.99, 1.0, 3.0, 1.0, True),  # of equal weights, the smaller discrepancy
    ]
    d, alpha, d_best, alpha_best = (torch.tensor(column, dtype=F64) for column in list(zip(*cases))[:4])
    prefers = _morozov_prefers(d, alpha, d_best, alpha_best, torch.tensor(1.0, dtype=F64))
    assert prefers.tolist() == [case[-1] for case in cases]


def test_snap_saturated_sets_near_entries_to_the_nearest_saturation_value():
    f = torch.tensor([[-0.55, -0.45, -0.2, 0.05, 1.41, 1.58], [0.0, 0.3, 0.6, 0.9, 1.2, 1.5]], dtype=F64)
    radius = torch.tensor([0.1, 0.5], dtype=F64)
    out = snap_saturated(Clip(-0.5, 1.5), f, radius)
    expected = torch.tensor([[-0.5, -0.5, -0.2, 0.05, 1.5, 1.5], [-0.5, 0.3, 0.6, 0.9, 1.5, 1.5]], dtype=F64)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    torch.testing.assert_close(snap_saturated(ReLU(), f, radius)[1], torch.tensor([0.0, 0.0, 0.6, 0.9, 1.2, 1.5], dtype=F64))
    torch.testing.assert_close(snap_saturated(LeakyReLU(0.2), f, radius), f, atol=0, rtol=0)
    # within the radius of both saturation values: the nearer one
    both = snap_saturated(Clip(0.0, 0.2), torch.tensor([[0.05, 0.15]], dtype=F64), torch.tensor([0.16], dtype=F64))
    torch.testing.assert_close(both, torch.tensor([[0.0, 0.2]], dtype=F64), atol=0, rtol=0)


def test_snapping_removes_the_bias_of_noisy_relu_data():
    u_true = blocky(b=2, seed=4)
    model = perceptron(120, (1, 7, 9), nn.ReLU(), seed=2)
    clean = model(u_true).detach()
    pre = model[1](model[0](u_true)).detach()
    cfg = InversionConfig(max_iter=3000, tol=1e-6)
    errors = {}
    for rel, snap in ((0.01, 0.0), (0.01, 3.0), (0.1, 3.0)):
        f, delta = noisy(clean, rel, seed=5)
        task = prepare(model, f, noise_level=delta, input_shape=(1, 7, 9), snap=snap)
        # the data term at the true input: far above delta^2 without snapping (eps |a| on inactive
        # entries with positive noise), below delta^2 / 2 (half the noise energy) with it
        ratio = bregman(ReLU(), task.projected, pre) / delta**2
        assert torch.all(ratio > 5) if snap == 0 else torch.all(ratio < 0.5), ratio
        res = invert(model, f, input_shape=(1, 7, 9), regularizer=TV(box=(0.0, 1.0)), noise_level=delta,
                     config=dataclasses.replace(cfg, snap=snap))
        errors[rel, snap] = (res.input - u_true).flatten(1).norm(dim=1)
    assert torch.all(errors[0.01, 3.0] < 0.7 * errors[0.01, 0.0]), errors
    assert torch.all(errors[0.01, 3.0] < 0.5 * errors[0.1, 3.0]), errors


def test_free_output_of_linear_last_layer_is_a_reweighted_clamp():
    # identity activation: min_z 1/2|z - f|^2 + 1/2|z - a|^2 = 1/4|a - f|^2, i.e. the clamped
    # problem with penalty weight 1/2: same minimiser as the clamped one with half the regulariser
    model = seeded(nn.Sequential(nn.Linear(5, 9)).double(), 2)
    u = torch.randn(2, 5, dtype=F64, generator=gen(8))
    f, _ = noisy(model(u).detach(), 0.1)
    cfg = InversionConfig(max_iter=20000, tol=1e-13)
    free = invert(model, f, input_shape=(5,), regularizer=Tikhonov(0.2), free_output=True, config=cfg)
    clamped = invert(model, f, input_shape=(5,), regularizer=Tikhonov(0.4), config=cfg)
    torch.testing.assert_close(free.input, clamped.input, atol=1e-6, rtol=0)


def test_free_output_with_tv_on_one_linear_layer_is_the_clamped_problem_with_twice_the_weight():
    """As for Tikhonov: with an identity activation the free output gives 1/4 |a - f|^2, so
    free_output=True with TV(w) (solved by BCD, no dual residual) has the minimiser of the clamped
    problem with TV(2 w) (solved by PDHG)."""
    model = perceptron(16, (1, 3, 4), nn.Identity(), seed=6)
    f, _ = noisy(model(blocky(h=3, w=4, seed=3)).detach(), 0.05)
    cfg = InversionConfig(max_iter=20000, tol=1e-7)
    free = invert(model, f, input_shape=(1, 3, 4), regularizer=TV(0.01), free_output=True, config=cfg)
    clamped = invert(model, f, input_shape=(1, 3, 4), regularizer=TV(0.02), config=cfg)
    assert all(math.isnan(d) for d in free.history.dual_residual)
    torch.testing.assert_close(free.input, clamped.input, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- measurements through a physics
def test_inversion_through_blur_beats_two_step():
    # N: R^4 -> 9x9 images (tall, injective); y = A N(u) + noise with a Gaussian blur A
    net = nn.Sequential(nn.Linear(4, 81), nn.LeakyReLU(0.3), nn.Unflatten(1, (1, 9, 9))).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(81, 4, dtype=F64, generator=gen(9)))
        net[0].bias.zero_()
    physics = Blur(gaussian_kernel(1.5, 7, dtype=F64), img_size=(1, 9, 9), boundary="zero", dtype=F64)
    u = torch.randn(2, 4, dtype=F64, generator=gen(10))
    y, delta = noisy(physics.A(net(u)).detach(), 0.01)
    joint = invert(net, y, input_shape=(4,), physics=physics, config=InversionConfig(max_iter=1500, tol=0))
    # two steps: deblur by TV-regularised least squares, then invert the network
    x_hat, _ = pdhg_tv(physics, y, 1e-3, box=None, n_iter=3000)
    naive = invert(net, x_hat, input_shape=(4,), config=InversionConfig(max_iter=20000, tol=1e-10))
    err_joint = (joint.input - u).norm(dim=1)
    err_naive = (naive.input - u).norm(dim=1)
    assert torch.all(err_joint < 0.5 * err_naive), (err_joint, err_naive)
    assert joint.input.shape == u.shape and joint.discrepancy.shape == (2,)
    # discrepancy is measured through the physics
    torch.testing.assert_close(joint.discrepancy, (physics.A(net(joint.input)) - y).flatten(1).norm(dim=1))


# ---------------------------------------------------------------- gradient baseline
@pytest.mark.parametrize("opt", [GradientOptimizer(lr=0.05), GradientOptimizer(lr=1.0, lbfgs=True)])
def test_gradient_baseline_recovers_input(opt):
    model = seeded(nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(0.5), nn.Linear(8, 9)).double(), 3)
    u = torch.randn(2, 3, dtype=F64, generator=gen(11))
    res = invert_gradient(model, model(u).detach(), input_shape=(3,), optimizer=opt,
                          config=InversionConfig(max_iter=5000, tol=1e-12))
    torch.testing.assert_close(res.input, u, atol=1e-4, rtol=0)
    assert all(p.grad is None for p in model.parameters())


class SkipELU(nn.Module):
    """u -> u + ELU(W u): injective (W = 0.3 I), and no nn.Sequential."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3, bias=False).double()
        with torch.no_grad():
            self.linear.weight.copy_(0.3 * torch.eye(3))

    def forward(self, u):
        return u + nn.functional.elu(self.linear(u))


@pytest.mark.parametrize("model", [seeded(nn.Sequential(nn.Linear(3, 8), nn.ELU(), nn.Linear(8, 9)).double(), 3),
                                   SkipELU()], ids=["elu-mlp", "skip"])
def test_gradient_baseline_inverts_modules_that_lift_refuses(model):
    """The baseline needs only autograd: modules that lift refuses (ELU is no proximal map; a
    skip connection) and are injective (full-column-rank maps, increasing activation) are
    inverted from noiseless data, also through a physics (A = 2I, the input shape from x0);
    the lifted inversion refuses them by name."""
    u = torch.randn(2, 3, dtype=F64, generator=gen(11))
    f = model(u).detach()
    opt, cfg = GradientOptimizer(lr=1.0, lbfgs=True), InversionConfig(max_iter=500, tol=1e-12)
    res = invert_gradient(model, f, input_shape=(3,), optimizer=opt, config=cfg)
    torch.testing.assert_close(res.input, u, atol=1e-6, rtol=0)
    assert all(p.grad is None for p in model.parameters())
    scale = type("Scale", (), {"A": staticmethod(lambda x: 2 * x), "A_adjoint": staticmethod(lambda x: 2 * x)})()
    res = invert_gradient(model, 2 * f, physics=scale, x0=torch.zeros_like(u), optimizer=opt, config=cfg)
    torch.testing.assert_close(res.input, u, atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match="ELU|SkipELU"):
        invert(model, f, input_shape=(3,))
    with pytest.raises(ValueError, match="input shape is unknown"):
        invert_gradient(model, f)
    with pytest.raises(ValueError, match=r"input shape \(4,\) does not fit the network"):
        invert_gradient(model, f, input_shape=(4,))


def test_gradient_baseline_names_the_module_an_input_shape_does_not_fit_not_a_lifted_layer():
    """The baseline lifts nothing, but an ``nn.Sequential`` that lift takes was checked by lift's
    dry run, whose error spoke of 'lifted layer 1' (also in ``liftinv invert --method gradient``);
    it names the module and torch's reason. The lifted inversion keeps its layer; with the shape
    taken from x0, x0 is named first."""
    model = seeded(nn.Sequential(nn.Linear(4, 3), nn.ReLU()).double(), 5)
    f = torch.zeros(2, 3, dtype=F64)
    pattern = (r"input_shape=\(5,\) \(one sample, without the batch axis\) does not fit the network at its module "
               r"Linear\(in_features=4, out_features=3, bias=True\): mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(ValueError, match="^" + pattern) as info:
        invert_gradient(model, f, input_shape=(5,))
    assert "lifted" not in str(info.value)
    with pytest.raises(ValueError, match=r"^x0 of shape \(2, 5\) does not fit the network: " + pattern):
        invert_gradient(model, f, x0=torch.zeros(2, 5, dtype=F64))
    with pytest.raises(ValueError, match=r"does not fit lifted layer 1 \(map Linear"):
        invert(model, f, input_shape=(5,))


@pytest.mark.parametrize("regularizer, box, penalty", [
    (TV(0.3, box=(0.0, 1.0)), (0.0, 1.0), lambda u: 0.3 * ((grad2d(u).pow(2).sum(2) + 0.01**2).sqrt() - 0.01).sum()),
    (Box(0.2, 0.6), (0.2, 0.6), lambda u: 0.0),
], ids=["tv-box", "box"])
def test_gradient_baseline_adam_iterates_are_projected_adam_on_the_smoothed_objective(regularizer, box, penalty):
    """Adam on 1/2 |N(u) - f|^2 + w sum(sqrt(|grad u|^2 + eps^2) - eps) (TV smoothed with the
    optimiser's eps = 0.01; a box alone adds nothing), started from x0 clamped to the box and
    clamped after each step: three iterations equal torch.optim.Adam on the objective written out."""
    model = perceptron(12, (1, 3, 4), nn.LeakyReLU(0.5), seed=4)
    f = model(blocky(h=3, w=4, seed=2)).detach()
    x0 = 1.5 * torch.rand(2, 1, 3, 4, dtype=F64, generator=gen(5)) - 0.25
    res = invert_gradient(model, f, input_shape=(1, 3, 4), regularizer=regularizer, x0=x0,
                          optimizer=GradientOptimizer(lr=0.05, eps=0.01), config=InversionConfig(max_iter=3, tol=0))
    u = x0.clamp(*box).requires_grad_()
    adam = torch.optim.Adam([u], lr=0.05)
    for _ in range(3):
        adam.zero_grad()
        (0.5 * (model(u) - f).pow(2).sum() + penalty(u)).backward()
        adam.step()
        with torch.no_grad():
            u.clamp_(*box)
    torch.testing.assert_close(res.input, u.detach(), rtol=0, atol=1e-12)


def _lbfgs_b(objective, n):
    """scipy's bounded L-BFGS-B on [0, 1]^n from 0, float64, to its tightest tolerances."""
    from scipy.optimize import minimize

    def fun(x):
        x = torch.tensor(x, dtype=F64, requires_grad=True)
        value = objective(x)
        return float(value.detach()), torch.autograd.grad(value, x)[0].numpy()

    ref = minimize(fun, np.zeros(n), jac=True, method="L-BFGS-B", bounds=[(0, 1)] * n,
                   options=dict(ftol=1e-15, gtol=1e-12, maxiter=2000))
    return torch.from_numpy(ref.x), ref.fun


@pytest.mark.parametrize("kind", ["box", "tv-box"])
def test_gradient_baseline_lbfgs_with_a_box_converges_to_the_bounded_minimiser(kind):
    """L-BFGS with a box was torch's L-BFGS clamped after every 5 iterations, which invalidates its
    memory: on this softplus MLP it ended 0.38 from the bounded minimiser, objective 3x too high.
    Oracle: scipy's L-BFGS-B with bounds, per sample (point and objective, also with smoothed TV);
    the projected L-BFGS stops by itself at that KKT point, and each sample's iterates are those of
    the sample solved alone (5 iterations, to 1e-12)."""
    g = gen(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.Softplus(), nn.Linear(6, 5)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, dtype=F64, generator=g))
    u = torch.tensor([[1.5, -0.5, 0.3, 0.6], [0.2, 0.7, -1.0, 1.2]], dtype=F64).reshape(2, 1, 2, 2)
    f = net(u).detach()
    reg = Box(0, 1) if kind == "box" else TV(torch.tensor([0.05, 0.2], dtype=F64), box=(0.0, 1.0))
    opt = GradientOptimizer(lr=1.0, lbfgs=True, eps=0.01)
    res = invert_gradient(net, f, input_shape=(1, 2, 2), regularizer=reg, optimizer=opt,
                          config=InversionConfig(max_iter=400, tol=0))
    for b in range(2):
        penalty = (lambda x: 0.0) if kind == "box" else \
            (lambda x: TV(float(reg.weight[b])).smooth_value(x.reshape(1, 1, 2, 2), 0.01).sum())
        x_ref, f_ref = _lbfgs_b(lambda x: 0.5 * (net(x.reshape(1, 1, 2, 2)) - f[b:b + 1]).pow(2).sum() + penalty(x), 4)
        x = res.input[b].flatten()
        with torch.no_grad():
            value = 0.5 * float((net(x.reshape(1, 1, 2, 2)) - f[b:b + 1]).pow(2).sum()) + float(penalty(x))
        torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-7)
        assert value <= f_ref + 1e-10 * abs(f_ref)
    assert res.iterations < 400  # stopped where no sample moves
    short = invert_gradient(net, f, input_shape=(1, 2, 2), regularizer=reg, optimizer=opt,
                            config=InversionConfig(max_iter=5, tol=0))
    alone_reg = Box(0, 1) if kind == "box" else TV(reg.weight[:1], box=(0.0, 1.0))
    alone = invert_gradient(net, f[:1], input_shape=(1, 2, 2), regularizer=alone_reg, optimizer=opt,
                            config=InversionConfig(max_iter=5, tol=0))
    torch.testing.assert_close(short.input[:1], alone.input, rtol=0, atol=1e-12)


def test_gradient_baseline_lbfgs_with_a_box_keeps_pace_with_scipy_lbfgs_b():
    """Efficiency, not only the fixed point: the projected L-BFGS emptied its memory whenever the
    box's active set changed, which on images with a background at the bound happens on most
    iterations (on the benchmark's 64x64 encoder task, in 1725 of 2428 sample-iterations: 11.6 dB
    against 27.0 without the box). Oracle: scipy's L-BFGS-B (memory 10, as here) from the same
    start; the projected L-BFGS must reach its optimal objective (to 1e-9, relative) within the
    iterations scipy took (200; it needed 260 before)."""
    from scipy.optimize import minimize

    g, h = gen(0), 16
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, dtype=F64), torch.linspace(-1, 1, h, dtype=F64), indexing="ij")
    truth = ((xx / 0.7) ** 2 + (yy / 0.5) ** 2 < 1) * (0.5 + 0.5 * (xx**2 + yy**2 < 0.1))  # background 0, peak 1
    net = nn.Sequential(nn.Flatten(), nn.Linear(h * h, h * h // 2, bias=False), nn.Softplus()).double()
    with torch.no_grad():
        net[1].weight.copy_(3 * torch.randn(h * h // 2, h * h, dtype=F64, generator=g) / h)
    f = net(truth.double()[None, None]).detach()
    f = f + 0.01 * torch.randn(f.shape, dtype=F64, generator=g)
    tv = TV(1e-3, box=(0.0, 1.0))

    def fun(x):
        x = torch.tensor(x, dtype=F64, requires_grad=True)
        value = 0.5 * (net(x.reshape(1, 1, h, h)) - f).pow(2).sum() + tv.smooth_value(x.reshape(1, 1, h, h), 0.01).sum()
        return float(value.detach()), torch.autograd.grad(value, x)[0].numpy()

    ref = minimize(fun, np.zeros(h * h), jac=True, method="L-BFGS-B", bounds=[(0, 1)] * (h * h),
                   options=dict(ftol=1e-15, gtol=1e-12, maxiter=2000, maxcor=10))
    res = invert_gradient(net, f, input_shape=(1, h, h), regularizer=tv, x0=torch.zeros(1, 1, h, h, dtype=F64),
                          optimizer=GradientOptimizer(lr=1.0, lbfgs=True, eps=0.01), config=InversionConfig(max_iter=ref.nit, tol=0))
    assert fun(res.input.flatten().numpy())[0] <= ref.fun * (1 + 1e-9)


def test_gradient_baseline_counts_iterations_and_tol_zero_never_stops():
    """tol = 0: Adam started at the exact input of noiseless data (zero gradient, zero change)
    runs all max_iter steps; L-BFGS runs exactly max_iter = 7 iterations (5 per call, then 2),
    which the result's iterations count (it gave the history's 2 entries, one per call); lr must
    be positive."""
    model = seeded(nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(0.5), nn.Linear(8, 9)).double(), 3)
    u = torch.randn(2, 3, dtype=F64, generator=gen(11))
    res = invert_gradient(model, model(u).detach(), input_shape=(3,), x0=u, config=InversionConfig(max_iter=3, tol=0))
    assert res.history.primal_residual == [0.0] * 3 and res.history.steps[0].iterations == 3
    res = invert_gradient(model, model(u).detach(), input_shape=(3,), optimizer=GradientOptimizer(lr=1.0, lbfgs=True),
                          config=InversionConfig(max_iter=7, tol=0))
    assert res.history.steps[0].iterations == 7
    assert res.iterations == 7 and len(res.history.energy) == 2  # two calls of torch's LBFGS.step: 5, then 2
    with pytest.raises(ValueError, match="lr"):
        GradientOptimizer(lr=0.0)


def test_gradient_baseline_lbfgs_stops_where_the_gradient_vanishes_exactly():
    """torch's L-BFGS returns without an iteration where the gradient is exactly zero (here: x0 is
    the exact input of noiseless data of a linear map, so the misfit is exactly 0): with tol = 0
    the baseline called it again and again without counting an iteration (an endless loop; here
    cut by max_time). Now one call, u unchanged, 0 iterations."""
    model = nn.Linear(3, 4, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=F64))
    u = torch.tensor([[0.5, 0.25, 1.0]], dtype=F64)
    res = invert_gradient(model, model(u).detach(), x0=u, optimizer=GradientOptimizer(lr=1.0, lbfgs=True),
                          config=InversionConfig(max_iter=10, tol=0, max_time=0.3))
    assert len(res.history.energy) == 1 and res.history.steps[0].iterations == 0
    assert torch.equal(res.input, u) and float(res.discrepancy) == 0.0


def test_gradient_baseline_lbfgs_does_not_stall():
    """A network on which torch's L-BFGS, called one iteration at a time, stopped at a point that
    is not stationary (its step was zero, read as convergence); several iterations per call
    recover the input, within the iteration limit."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.LeakyReLU(0.1), nn.Linear(32, 40), nn.Tanh()).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    u = torch.rand(2, 1, 4, 4, dtype=F64, generator=gen(12))
    res = invert_gradient(net, net(u).detach(), input_shape=(1, 4, 4), optimizer=GradientOptimizer(lr=1.0, lbfgs=True),
                          config=InversionConfig(max_iter=2000, tol=1e-12))
    torch.testing.assert_close(res.input, u, atol=1e-3, rtol=0)
    short = invert_gradient(net, net(u).detach(), input_shape=(1, 4, 4), optimizer=GradientOptimizer(lr=1.0, lbfgs=True),
                            config=InversionConfig(max_iter=7, tol=0))
    assert short.iterations <= 7


def test_gradient_baseline_names_a_nonsmooth_prior_without_gradient():
    """deepinv's TV prior has no gradient at a flat image (autograd gives NaN): a clear error
    instead of NaN iterates."""
    import deepinv as dinv

    model = perceptron(20, (1, 5, 5), nn.LeakyReLU(0.5))
    f = model(torch.rand(1, 1, 5, 5, dtype=F64, generator=gen(13))).detach()
    with pytest.raises(ValueError, match=r"gradient is not finite at the current input \(regularizer DeepinvPrior"):
        invert_gradient(model, f, input_shape=(1, 5, 5), regularizer=DeepinvPrior(dinv.optim.prior.TVPrior(), 0.01))


def test_gradient_baseline_discrepancy_principle_and_box():
    u_true = blocky(b=2)
    model = perceptron(40, (1, 7, 9), nn.LeakyReLU(0.2))
    f, delta = noisy(model(u_true).detach(), 0.05)
    res = invert_gradient(model, f, regularizer=TV(box=(0.0, 1.0)), noise_level=delta, x0=torch.full_like(u_true, 0.5),
                          config=InversionConfig(max_iter=2000, tol=1e-8))
    assert res.input.min() >= 0 and res.input.max() <= 1
    assert torch.all((res.discrepancy / res.target - 1).abs() <= 0.05)


# ---------------------------------------------------------------- bad input
def test_noise_level_beyond_the_dtype_is_refused_as_given():
    """A noise level float32 outputs cannot hold was refused with the value it overflowed to
    ('got inf' for 1e39, which is finite and >= 0 as given), and an integer 10**400 raised
    OverflowError from float(), naming nothing. Now ValueError names noise_level with the value
    given; float64 outputs take 1e39 (the oracle: the same number, unchanged)."""
    model = perceptron(6, (1, 2, 3), nn.ReLU())
    f = model(torch.rand(2, 1, 2, 3, dtype=F64, generator=gen(3))).detach()
    for level, shown in ((1e39, r"1e\+39"), (10**400, r"1.000e\+400"), (torch.tensor([1e39, 1.0], dtype=F64), r"\[1e\+39, 1.0\]")):
        with pytest.raises(ValueError, match=rf"^noise_level = {shown} overflows torch.float32 \(largest 3.4e\+38\), the dtype of output$"):
            invert(model.float(), f.float(), input_shape=(1, 2, 3), noise_level=level)
    with pytest.raises(ValueError, match=r"^noise_level must be finite and >= 0, got -1.000e\+400$"):
        invert(model.float(), f.float(), input_shape=(1, 2, 3), noise_level=-(10**400))
    task = prepare(model.double(), f, input_shape=(1, 2, 3), noise_level=1e39)
    assert task.delta.tolist() == [1e39, 1e39]


def test_default_alpha_beyond_the_dtype_is_refused_naming_it():
    """config.default_alpha is applied as the regulariser's weight in the data's dtype: 1e39 on
    float32 data failed inside torch ('value cannot be converted to type float without overflow',
    naming nothing), for invert and the gradient baseline alike. Now ValueError names
    config.default_alpha and the dtype; float64 data take it (the oracle: alpha = 1e39 as given)."""
    model = perceptron(6, (1, 2, 3), nn.ReLU())
    f = model(torch.rand(2, 1, 2, 3, dtype=F64, generator=gen(5))).detach()
    config = InversionConfig(max_iter=2, default_alpha=1e39)
    for run in (invert, invert_gradient):
        with pytest.raises(ValueError, match=r"^config.default_alpha = 1e\+39 overflows torch.float32 \(largest 3.4e\+38\), the dtype of output$"):
            run(model.float(), f.float(), input_shape=(1, 2, 3), regularizer=Tikhonov(), config=config)
    result = invert(model.double(), f, input_shape=(1, 2, 3), regularizer=Tikhonov(), config=config)
    assert result.alpha.tolist() == [1e39, 1e39]


def test_first_guess_beyond_the_dtype_is_capped_at_its_largest_number():
    """TV's first guess Lip(N) tau delta / sqrt(8n) overflowed float32 (a linear map of norm ~150,
    noise level 1e38: 4.9e39 in float64, the oracle), so the first solve was given the weight Inf
    and failed with 'weight must hold finite non-negative numbers, got [inf, inf]', naming a
    weight never given. It is now capped at float32's largest number, the search's own cap (it
    then warns that the target is out of reach upward, as for float64 data above 1.8e308)."""
    model = perceptron(4, (1, 2, 3), nn.Identity())
    with torch.no_grad():
        model[1].weight.mul_(100)
    f = model(torch.rand(2, 1, 2, 3, dtype=F64, generator=gen(6))).detach()
    config = InversionConfig(max_iter=2, max_search=2)
    wanted = first_alpha(prepare(model, f, input_shape=(1, 2, 3), noise_level=1e38), TV(), config)
    assert (wanted > torch.finfo(torch.float32).max).all() and torch.isfinite(wanted).all()
    with pytest.warns(RuntimeWarning, match="out of reach"):
        result = invert(model.float(), f.float(), input_shape=(1, 2, 3), noise_level=1e38, regularizer=TV(), config=config)
    assert result.history.steps[0].alpha.tolist() == [torch.finfo(torch.float32).max] * 2


def test_bad_input_raises_clear_errors():
    model = perceptron(20, (1, 5, 5), nn.ReLU())
    f = model(torch.rand(2, 1, 5, 5, dtype=F64, generator=gen(12))).detach()
    with pytest.raises(ValueError, match="output must have shape"):
        invert(model, f[:, :10], input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match="does not fit"):
        invert(model, f, input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        invert(model, f.clone().fill_(float("nan")), input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match="noise_level"):
        invert(model, f, input_shape=(1, 5, 5), noise_level=-0.1)
    with pytest.raises(ValueError, match="noise_level"):
        invert(model, f, input_shape=(1, 5, 5), noise_level=float("inf"))
    with pytest.raises(ValueError, match="noise_level"):
        invert(model, f, input_shape=(1, 5, 5), noise_level=torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="noise_level"):
        invert(model, f, input_shape=(1, 5, 5), noise_level=torch.ones(1, dtype=F64))
    with pytest.raises(TypeError, match="noise_level"):
        invert(model, f, input_shape=(1, 5, 5), noise_level="0.1")
    with pytest.raises(TypeError, match="^noise_level must be None, a number or a real tensor, got a tensor of dtype torch.bool$"):
        invert(model, f, input_shape=(1, 5, 5), noise_level=torch.tensor([True, False]))  # was read as [1, 0]
    with pytest.raises(TypeError, match="dtype"):
        invert(model, f.float(), input_shape=(1, 5, 5))
    with pytest.raises(TypeError, match="output must be a torch.Tensor"):
        invert(model, f.numpy(), input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match="input shape is unknown"):
        invert(model, f)
    with pytest.raises(ValueError, match="x0 must have shape"):
        invert(model, f, input_shape=(1, 5, 5), x0=torch.zeros(3, 1, 5, 5, dtype=F64))
    with pytest.raises(ValueError, match=r"^x0 of shape \(2, 1, 4, 4\) does not fit the network: input_shape"):
        invert(model, f, x0=torch.zeros(2, 1, 4, 4, dtype=F64))  # the shape came from x0: x0 is named
    with pytest.raises(ValueError, match=r"input_shape=\(2, 1, 5, 5\) \(one sample, without the batch axis\) does not fit"):
        invert(model, f, input_shape=(2, 1, 5, 5))
    with pytest.raises(ValueError, match=r"^output must have a batch axis, shape \(B, ...\), got shape \(20,\)$"):
        invert(model, f[0], input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match=r"^output must hold at least one sample, got shape \(0, 20\)$"):
        invert(model, f[:0], input_shape=(1, 5, 5), noise_level=0.1)  # failed with an IndexError in the search
    with pytest.raises(ValueError, match=r"^output must be a real floating tensor, got dtype torch.int64 \(torch computes in"):
        invert(model, f.long(), input_shape=(1, 5, 5))
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):  # failed in torch: NotImplementedError, naming nothing
        with pytest.raises(NotImplementedError):
            f.to(dtype).sum()  # the oracle: torch has hardly any operation for it
        with pytest.raises(ValueError, match=rf"^output must be a real floating tensor, got dtype {dtype} \(torch computes in"):
            invert(model, f.to(dtype), input_shape=(1, 5, 5))
    with pytest.raises(TypeError, match="regularizer"):
        invert(model, f, input_shape=(1, 5, 5), regularizer="tv")
    with pytest.raises(TypeError, match="config"):
        invert(model, f, input_shape=(1, 5, 5), config={"max_iter": 3})
    with pytest.raises(TypeError, match="free_output"):
        invert(model, f, input_shape=(1, 5, 5), free_output=1)
    softmax = nn.Sequential(nn.Linear(4, 6), nn.Softmax(dim=1)).double()
    with pytest.raises(ValueError, match="^free_output=True needs a last activation with a prox; a softmax output must stay clamped"):
        invert(softmax, softmax(torch.rand(2, 4, dtype=F64)).detach(), input_shape=(4,), free_output=True)
    with pytest.raises(TypeError, match="physics"):
        invert(model, f, input_shape=(1, 5, 5), physics=object())


@pytest.mark.parametrize("solver", [invert, invert_gradient])
def test_x0_of_another_dtype_or_not_finite_is_refused_by_name(solver):
    model = perceptron(20, (1, 5, 5), nn.ReLU())
    f = model(torch.rand(2, 1, 5, 5, dtype=F64, generator=gen(12))).detach()
    with pytest.raises(TypeError, match=r"^x0 has dtype torch.float32 on cpu, the network uses torch.float64"):
        solver(model, f, input_shape=(1, 5, 5), x0=torch.zeros(2, 1, 5, 5))
    with pytest.raises(ValueError, match="^x0 contains NaN or Inf entries$"):
        solver(model, f, input_shape=(1, 5, 5), x0=torch.full((2, 1, 5, 5), math.inf, dtype=F64))
    with pytest.raises(ValueError, match="^x0 contains NaN or Inf entries$"):  # input_shape from x0
        solver(model, f, x0=torch.full((2, 1, 5, 5), math.nan, dtype=F64))
    with pytest.raises(TypeError, match="^x0 has dtype torch.float32, output has torch.float64$"):  # no parameters
        solver(nn.Sequential(nn.Flatten(), nn.ReLU()), f, x0=torch.zeros(2, 4, 5))


def test_input_shape_must_be_a_sequence_of_positive_ints():
    model = perceptron(20, (1, 5, 5), nn.ReLU())
    f = model(torch.rand(2, 1, 5, 5, dtype=F64, generator=gen(12))).detach()
    for shape, i in [((1, 5.5, 5), 1), ((1, -5, -5), 1), ((1, 0, 25), 1), ((True, 5, 5), 0)]:
        with pytest.raises(ValueError, match=rf"^input_shape\[{i}\] must be an integer >= 1, got "):
            invert(model, f, input_shape=shape)
    with pytest.raises(TypeError, match="^input_shape must be a sequence of sizes .*, got 25$"):
        invert(model, f, input_shape=25)
    assert invert(model, f, input_shape=torch.Size([1, 5, 5]), regularizer=TV(0.1),
                  config=InversionConfig(max_iter=2)).input.shape == (2, 1, 5, 5)


def test_measurements_y_must_be_one_per_sample_of_a_network_that_reads_them():
    from liftinv.architectures import ARCHITECTURES

    example = ARCHITECTURES["unrolled_primal_dual"](gen(0))
    net, y = example.network, example.y
    f = net(example.u, y).detach()
    for wrong in (y[:1], torch.cat([y, y[:1]])):  # y[:1] was broadcast: sample 1 got sample 0's measurements
        with pytest.raises(ValueError, match=r"^y must hold one measurement per sample of output, shape \(2, ...\), got \("):
            invert(net, f, y=wrong)
    with pytest.raises(TypeError, match="^y must be a torch.Tensor, got list$"):
        invert(net, f, y=y.tolist())
    model = perceptron(20, (1, 5, 5), nn.ReLU())
    with pytest.raises(ValueError, match="^y is given, but no layer of the network reads measurements"):
        invert(model, torch.zeros(2, 20, dtype=F64), input_shape=(1, 5, 5), y=torch.zeros(2, 3, dtype=F64))


def test_physics_that_does_not_fit_the_network_output_is_refused_by_name():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU()).double()
    y = torch.zeros(2, 1, 8, 8, dtype=F64)
    kernel = gaussian_kernel(1.0, dtype=F64)
    with pytest.raises(TypeError, match=r"^physics does not accept the network's output \(shape \(B, 1, 8, 8\), dtype torch.float64\): "):
        invert(model, y, input_shape=(1, 8, 8), physics=Blur(kernel.float(), img_size=(1, 8, 8), boundary="zero"))
    with pytest.raises(ValueError, match=r"^physics does not accept the network's output \(shape \(B, 1, 8, 8\), dtype torch.float64\): "):
        invert(model, y, input_shape=(1, 8, 8), physics=Blur(kernel, img_size=(1, 9, 9), boundary="zero", dtype=F64))


@pytest.mark.parametrize("solver", [invert, invert_gradient])
@pytest.mark.parametrize("kind", [TV, Tikhonov, lambda w: DeepinvPrior(__import__("deepinv").optim.TVPrior(), w)],
                         ids=["tv", "tikhonov", "deepinv"])
def test_per_sample_weights_must_be_one_per_sample(kind, solver):
    model = perceptron(20, (1, 4, 4), nn.ReLU())
    f = model(torch.rand(2, 1, 4, 4, dtype=F64, generator=gen(0))).detach()
    for weights in (torch.tensor([0.1, 0.2, 0.3], dtype=F64), torch.tensor([0.1], dtype=F64)):
        with pytest.raises(ValueError, match=rf"^the regularizer's weight must be a number or one per sample, shape \(2,\), got shape \({len(weights)},\)$"):
            solver(model, f, input_shape=(1, 4, 4), regularizer=kind(weights), config=InversionConfig(max_iter=2))


def test_tv_on_inputs_that_are_not_images_is_refused_by_name():
    """TV needs images (B, C, H, W); on an MLP's flat input the gradient baseline failed with
    IndexError 'too many indices for tensor of dimension 2' and BCD with 'x must have 4
    dimensions' (PDHG, one layer, named TV already)."""
    model = MLP([6, 5, 4], nn.ReLU(), generator=gen(0)).double()
    f = torch.rand(2, 4, dtype=F64, generator=gen(1))
    cfg = InversionConfig(max_iter=5)
    for run_inversion in (invert, invert_gradient):
        with pytest.raises(ValueError, match=r"^TV needs images \(B, C, H, W\), got shape \(2, 6\)$"):
            run_inversion(model, f, input_shape=(6,), regularizer=TV(0.1), config=cfg)


def test_inference_mode_is_refused_where_autograd_is_needed():
    """Deep BCD and the gradient baseline need autograd: refused by name under inference mode.
    One layer with TV (PDHG, no autograd) gives there what it gives outside."""
    deep = nn.Sequential(nn.Flatten(), nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 24), nn.ReLU()).double()
    f = deep(torch.rand(2, 1, 4, 4, dtype=F64, generator=gen(3))).detach()
    config = InversionConfig(max_iter=3)
    for solver, name in ((invert, "invert with block-coordinate descent"), (invert_gradient, "invert_gradient")):
        with torch.inference_mode(), pytest.raises(RuntimeError, match=f"^{name} cannot run under torch.inference_mode"):
            solver(deep, f, input_shape=(1, 4, 4), regularizer=TV(0.01), config=config)
    model = perceptron(20, (1, 4, 4), nn.ReLU())
    f = model(torch.rand(2, 1, 4, 4, dtype=F64, generator=gen(4))).detach()
    with torch.inference_mode():
        inside = invert(model, f, input_shape=(1, 4, 4), regularizer=TV(0.01), config=config).input
    assert torch.equal(inside, invert(model, f, input_shape=(1, 4, 4), regularizer=TV(0.01), config=config).input)


def test_unsupported_layer_is_refused_by_name():
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 3)).double()
    with pytest.raises(TypeError, match="GELU"):
        invert(model, torch.zeros(2, 3, dtype=F64), input_shape=(4,))


def test_lifted_network_input_shape_is_checked():
    net = MLP([6, 5, 4], nn.ReLU(), generator=gen(0)).double()
    with pytest.raises(ValueError, match="input_shape"):
        invert(net, torch.zeros(2, 4, dtype=F64), input_shape=(7,))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"max_iter": 0}, "max_iter"), ({"tol": -1.0}, "tol"), ({"tau": 0.0}, "tau"),
     ({"discrepancy_rtol": 2.0}, "discrepancy_rtol"), ({"max_search": 0}, "max_search"),
     ({"default_alpha": float("inf")}, "default_alpha"), ({"max_time": -1.0}, "max_time"), ({"snap": -1.0}, "snap"), ({"snap": float("inf")}, "^snap must be a finite number >= 0, got inf$"),
     ({"energy_every": 0}, "energy_every")],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InversionConfig(**kwargs)
    with pytest.raises(TypeError, match="rule"):
        InversionConfig(rule="nesterov")
    with pytest.raises(TypeError, match="progress"):
        InversionConfig(progress=1)


def test_progress_bar_steps_once_per_solve_of_the_search(capsys):
    model = perceptron(40, (1, 6, 7), nn.LeakyReLU(0.5))
    u_true = blocky(h=6, w=7)
    f, delta = noisy(model(u_true).detach(), 0.02)
    kwargs = dict(input_shape=(1, 6, 7), regularizer=TV(box=(0.0, 1.0)), noise_level=delta)
    result = invert(model, f, **kwargs, config=InversionConfig(max_iter=200, max_search=5, progress=True))
    err = capsys.readouterr().err
    solves = len(result.history.steps)
    assert solves == 4 and f"{solves}/5" in err and f"{solves + 1}/5" not in err and "fit=" in err
    invert(model, f, **kwargs, config=InversionConfig(max_iter=200, max_search=5))
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- command line
def test_invert_cli_round_trip(tmp_path, capsys, monkeypatch):
    import numpy as np

    from liftinv.inversion_cli import invert_main

    u_true = blocky()
    model = perceptron(100, (1, 7, 9), nn.LeakyReLU(0.5))
    f, delta = noisy(model(u_true).detach(), 0.02)
    torch.save(model, tmp_path / "net.pt")
    np.save(tmp_path / "f.npy", f.numpy())
    np.save(tmp_path / "u.npy", u_true.numpy())
    argv = [str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "1", "7", "9",
            "--noise-level", str(float(delta[0])), "--box", "0", "1", "--truth", str(tmp_path / "u.npy"),
            "--out", str(tmp_path / "rec.npy")]
    assert invert_main(argv) == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "target" in out
    rec = torch.from_numpy(np.load(tmp_path / "rec.npy"))
    expected = invert(model, f, input_shape=(1, 7, 9), regularizer=TV(box=(0.0, 1.0)), noise_level=float(delta[0]),
                      config=InversionConfig(max_iter=1000, tol=1e-4))
    torch.testing.assert_close(rec, expected.input)
    # bad input: exit status 2 with the argument named; missing file: 1
    with pytest.raises(SystemExit) as exit_:
        invert_main([*argv[:-2], "--out", str(tmp_path / "x.npy"), "--noise-level", "-1"])
    assert exit_.value.code == 2 and "argument --noise-level" in capsys.readouterr().err
    for bad in ("-1", "0"):  # a dimension < 1 is refused naming the option (it was 'input_shape[0] must be ...')
        with pytest.raises(SystemExit) as exit_:
            invert_main([*argv[:-2], "--out", str(tmp_path / "x.npy"), "--input-shape", "1", bad, "9"])
        assert exit_.value.code == 2 and f"argument --input-shape: must be an integer >= 1, got '{bad}'" in capsys.readouterr().err
    assert invert_main([str(tmp_path / "missing.pt"), str(tmp_path / "f.npy"), "--out", str(tmp_path / "x.npy")]) == 1
    capsys.readouterr()
    (tmp_path / "folder.npy").mkdir()  # a file that cannot be read: 1, with its name, not a traceback
    assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / "folder.npy"), "--out", str(tmp_path / "x.npy")]) == 1
    err = capsys.readouterr().err
    assert f"output file {tmp_path / 'folder.npy'} is a folder, not a file" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:  # options that do not fit: an argparse error
        invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--regularizer", "box",
                     "--input-shape", "1", "7", "9", "--out", str(tmp_path / "x.npy")])
    assert exit_info.value.code == 2 and "--box" in capsys.readouterr().err
    for extra, named in ((["--regularizer", "l1", "--box", "0", "1"], "--box"), (["--regularizer", "none", "--weight", "1"], "--weight")):
        with pytest.raises(SystemExit) as exit_info:
            invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), *extra, "--out", str(tmp_path / "x.npy")])
        assert exit_info.value.code == 2 and named in capsys.readouterr().err  # an option that would be ignored is refused
    # the input shape is needed, and an image file for two samples is refused, both before solving
    monkeypatch.setattr("liftinv.inversion_cli.invert", lambda *a, **k: pytest.fail("solved before checking"))
    assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--out", str(tmp_path / "x.npy")]) == 2
    assert "the network's input shape is unknown: pass --input-shape or --x0" in capsys.readouterr().err
    np.save(tmp_path / "x0.npy", np.full((7, 9), 0.5))  # one grey input as an image file holds it, (H, W)
    assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--x0", str(tmp_path / "x0.npy"),
                        "--out", str(tmp_path / "x.npy")]) == 2  # read as 7 inputs of shape (9,): it failed in the lift
    assert (f"--x0 has shape (7, 9): without --input-shape its first axis is the batch, which must be the output's "
            f"({len(f)} samples); pass --input-shape" in capsys.readouterr().err)
    assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "1", "7", "9",
                        "--out", str(tmp_path / "x.png")]) == 2
    assert f"the array has shape ({len(f)}, 1, 7, 9)" in capsys.readouterr().err
    monkeypatch.undo()
    # l1 without --weight: chosen by the discrepancy principle, as for tv
    assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "1", "7", "9",
                        "--noise-level", str(float(delta[0])), "--regularizer", "l1", "--out", str(tmp_path / "l1.npy")]) == 0
    expected = invert(model, f, input_shape=(1, 7, 9), regularizer=L1(), noise_level=float(delta[0]),
                      config=InversionConfig(max_iter=1000, tol=1e-4))
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "l1.npy")), expected.input)


def test_invert_cli_scores_psnr_and_ssim_only_for_a_truth_in_the_unit_range(tmp_path, capsys):
    """--truth prints PSNR and SSIM 'for images in [0, 1]' (its help): they clamp the recovered
    input to [0, 1] and take the peak 1. A truth in [-1, 1] (a network on normalised images) was
    scored all the same, a PSNR of the clamped input against values it cannot reach, without a
    word; the relative error, printed for any truth, is the oracle's |u - x| / |x|."""
    import numpy as np

    from liftinv.inversion_cli import invert_main
    from liftinv.metrics import psnr

    model = perceptron(100, (1, 7, 9), nn.LeakyReLU(0.5))
    for truth in (blocky(), 2 * blocky() - 1):
        np.save(tmp_path / "f.npy", model(truth).detach().numpy())
        np.save(tmp_path / "x.npy", truth.numpy())
        torch.save(model, tmp_path / "net.pt")
        assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "1", "7", "9",
                            "--regularizer", "none", "--max-iter", "5", "--no-progress", "--truth", str(tmp_path / "x.npy"),
                            "--out", str(tmp_path / "u.npy")]) == 0
        scores = [line for line in capsys.readouterr().out.splitlines() if line.startswith("relative error")]
        u = torch.from_numpy(np.load(tmp_path / "u.npy"))
        error = ((u - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)).tolist()
        assert len(scores) == 1 and scores[0].startswith(f"relative error {error}")
        in_unit_range = bool(truth.min() >= 0 and truth.max() <= 1)
        assert ("PSNR" in scores[0]) == in_unit_range, (truth.aminmax(), scores[0])
        if in_unit_range:
            assert f"PSNR {psnr(u.clamp(0, 1), truth).tolist()} dB" in scores[0]


def test_invert_cli_passes_its_options_to_the_solver(tmp_path, capsys, spy):
    """``--single`` adds and removes the batch axis, ``--free-output`` and ``--lr`` reach the
    lifted and gradient solvers, and options the regularizer would ignore are refused by name."""
    import numpy as np

    import liftinv.inversion_cli as cli

    model = perceptron(30, (1, 7, 9), nn.LeakyReLU(0.5))
    f = model(blocky(b=1)).detach()
    torch.save(model, tmp_path / "net.pt")
    np.save(tmp_path / "f.npy", f[0].numpy())
    lifted_calls, gradient_calls = (spy(cli, name, lambda net, out, **kw: (tuple(out.shape), kw))
                                    for name in ("invert", "invert_gradient"))
    base = [str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "1", "7", "9", "--single", "--max-iter", "5",
            "--no-progress", "--out", str(tmp_path / "u.npy")]
    assert cli.invert_main([*base, "--free-output"]) == 0
    assert np.load(tmp_path / "u.npy").shape == (1, 7, 9)
    assert cli.invert_main([*base, "--method", "gradient", "--lr", "0.05"]) == 0
    ((shape1, lifted),), ((shape2, gradient),) = lifted_calls, gradient_calls
    assert shape1 == shape2 == (1, 30)
    assert lifted["free_output"] is True and gradient["optimizer"].lr == 0.05
    capsys.readouterr()
    for extra, named in ((["--regularizer", "tikhonov", "--box", "0", "1"], "--box applies to --regularizer tv or box, not tikhonov"),
                         (["--regularizer", "box", "--box", "0", "1", "--weight", "1"], "--weight applies to --regularizer tv, tikhonov or l1, not box"),
                         (["--method", "gradient", "--free-output"], "--free-output applies to --method lifted"),
                         (["--lr", "0.05"], "--lr applies to --method gradient")):
        with pytest.raises(SystemExit) as exit_info:
            cli.invert_main([*base, *extra])
        assert exit_info.value.code == 2 and named in capsys.readouterr().err
    assert len(lifted_calls) == len(gradient_calls) == 1  # refused before solving


@pytest.mark.parametrize("method", ["lifted", "gradient"])
def test_invert_cli_output_shape_error_says_what_to_do_with_single(tmp_path, capsys, method):
    """liftinv invert --single on a file with a batch axis said 'output must have shape (B, 30)
    for this network, got (1, 2, 30)', a shape the file does not have, without naming --single.
    Now the message names the file's own shape (oracle: the array saved) and says to drop
    --single; a file of the wrong size is still refused, with and without --single; nothing is
    solved or written."""
    import numpy as np

    from liftinv.inversion_cli import invert_main

    model = perceptron(30, (1, 7, 9), nn.LeakyReLU(0.5))
    f = model(blocky(b=2)).detach()
    torch.save(model, tmp_path / "net.pt")
    base = [str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "1", "7", "9", "--max-iter", "2",
            "--no-progress", "--method", method, "--out", str(tmp_path / "u.npy")]
    for array, single, expected in (
            (f, True, f"with --single the output file {tmp_path / 'f.npy'} must hold one sample of shape (30) for "
                      "this network, got (2, 30): it holds a batch of 2, drop --single"),
            (f[0, :29], True, f"with --single the output file {tmp_path / 'f.npy'} must hold one sample of shape (30) "
                              "for this network, got (29,)\n"),
            (f[:, :29], False, "output must have shape (B, 30) for this network, got (2, 29)\n")):
        np.save(tmp_path / "f.npy", array.numpy())
        assert invert_main([*base, *(["--single"] if single else [])]) == 2
        assert capsys.readouterr().err == f"liftinv invert: error: {expected}" + ("" if expected.endswith("\n") else "\n")
    assert not (tmp_path / "u.npy").exists()


def test_invert_cli_output_file_of_too_few_axes_is_named_in_its_own_shape(tmp_path, capsys):
    """A 0-d output file with --single was refused as 'output must have a batch axis, shape (B,
    ...), got shape (1,)': the axis that --single adds, which the file does not hold; a 1-d file
    without --single (one sample) got the same words. Oracle: the arrays saved; nothing written."""
    import numpy as np

    from liftinv.inversion_cli import invert_main

    torch.save(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), tmp_path / "net.pt")
    base = [str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "4", "--regularizer", "none",
            "--max-iter", "2", "--no-progress", "--out", str(tmp_path / "u.npy")]
    for array, single, expected in (
            (np.float32(1.0), True, "one sample, an array of at least one axis, got shape ()"),
            (np.zeros(3, np.float32), False, "a batch of samples (B, ...), each of at least one axis (one sample "
                                             "without the batch axis: --single), got shape (3,)")):
        np.save(tmp_path / "f.npy", array)
        assert invert_main([*base, *(["--single"] if single else [])]) == 2
        assert capsys.readouterr().err == f"liftinv invert: error: the output file {tmp_path / 'f.npy'} must hold {expected}\n"
    assert not (tmp_path / "u.npy").exists()
    assert invert_main([*base, "--single"]) == 0  # the 1-d file is one sample


@pytest.mark.parametrize("method", ["lifted", "gradient"])
def test_invert_cli_x0_shape_error_with_single_names_the_file_shape(tmp_path, capsys, monkeypatch, method):
    """liftinv invert --single --x0 with an x0 file of another shape said 'x0 must have shape
    (1, 1, 7, 9), got (1, 2, 7, 9)', with the batch axis that --single adds, shapes the file does
    not have and should not have. Oracle: the arrays saved: the file's (2, 7, 9) against one
    input (1, 7, 9), before solving; a file of one input is taken."""
    import numpy as np

    from liftinv.inversion_cli import invert_main

    model = perceptron(30, (1, 7, 9), nn.LeakyReLU(0.5))
    torch.save(model, tmp_path / "net.pt")
    np.save(tmp_path / "f.npy", model(blocky()).detach()[0].numpy())
    base = [str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--single", "--input-shape", "1", "7", "9", "--max-iter", "2",
            "--no-progress", "--method", method, "--x0", str(tmp_path / "x0.npy"), "--out", str(tmp_path / "u.npy")]
    np.save(tmp_path / "x0.npy", np.zeros((1, 7, 9)))
    assert invert_main(base) == 0 and np.load(tmp_path / "u.npy").shape == (1, 7, 9)
    monkeypatch.setattr(f"liftinv.inversion_cli.{'invert' if method == 'lifted' else 'invert_gradient'}",
                        lambda *a, **k: pytest.fail("solved before checking"))
    np.save(tmp_path / "x0.npy", np.zeros((2, 7, 9)))
    capsys.readouterr()
    assert invert_main(base) == 2
    assert capsys.readouterr().err == (f"liftinv invert: error: with --single the --x0 file {tmp_path / 'x0.npy'} must hold "
                                       "one input of shape (1, 7, 9), got (2, 7, 9)\n")


def test_invert_cli_gradient_method_takes_a_network_that_lift_refuses(tmp_path, capsys):
    import numpy as np

    from liftinv.inversion_cli import invert_main

    model = seeded(nn.Sequential(nn.Linear(3, 8), nn.ELU(), nn.Linear(8, 9)).double(), 3)
    u = torch.randn(2, 3, dtype=F64, generator=gen(11))
    torch.save(model, tmp_path / "net.pt")
    np.save(tmp_path / "f.npy", model(u).detach().numpy())
    argv = [str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "3", "--regularizer", "none",
            "--max-iter", "20", "--no-progress", "--out", str(tmp_path / "u.npy")]
    assert invert_main([*argv, "--method", "gradient"]) == 0
    expected = invert_gradient(model, model(u).detach(), input_shape=(3,), config=InversionConfig(max_iter=20))
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "u.npy")), expected.input)
    capsys.readouterr()
    assert invert_main(argv) == 2
    assert "cannot lift layer 1 (ELU)" in capsys.readouterr().err


def test_invert_cli_refuses_a_truth_of_another_size_and_complex_arrays_before_solving(tmp_path, capsys, monkeypatch):
    import numpy as np

    from liftinv.inversion_cli import invert_main

    model = perceptron(30, (1, 7, 9), nn.LeakyReLU(0.5))
    torch.save(model, tmp_path / "net.pt")
    np.save(tmp_path / "f.npy", model(blocky()).detach().numpy())
    np.save(tmp_path / "u.npy", blocky(h=6).numpy())
    monkeypatch.setattr("liftinv.inversion_cli.invert", lambda *a, **k: pytest.fail("solved before checking"))
    assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "1", "7", "9",
                        "--truth", str(tmp_path / "u.npy"), "--out", str(tmp_path / "x.npy")]) == 2
    assert "--truth has shape (2, 1, 6, 9), the recovered input (2, 1, 7, 9)" in capsys.readouterr().err  # was a RuntimeError traceback
    np.save(tmp_path / "cf.npy", model(blocky()).detach().numpy() * (1 + 1j))  # were cast to real with a warning
    np.save(tmp_path / "cu.npy", blocky().numpy() * (1 + 1j))
    for option in ("output", "--x0", "--truth"):
        files = {"output": "f.npy", "--x0": None, "--truth": None, option: "cf.npy" if option == "output" else "cu.npy"}
        extra = [arg for o in ("--x0", "--truth") if files[o] for arg in (o, str(tmp_path / files[o]))]
        assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / files["output"]), "--input-shape", "1", "7", "9", *extra,
                            "--out", str(tmp_path / "x.npy")]) == 2
        assert f"{option.lstrip('-')} must be real, got dtype torch.complex128" in capsys.readouterr().err



def test_invert_cli_refuses_a_transposed_truth_and_takes_one_without_its_axes_of_length_1(tmp_path, capsys, monkeypatch):
    """--truth was compared by its number of entries only and reshaped to the input's shape, so
    the transpose (1, 1, 9, 7) of a (1, 7, 9) image was scored as a scrambled image without a
    word. Now its shape must be the recovered input's up to axes of length 1: the (7, 9) of an
    image file still is; the transpose and a (2, 63) truth are refused before solving."""
    import numpy as np

    from liftinv.inversion_cli import invert_main

    model = perceptron(30, (1, 7, 9), nn.LeakyReLU(0.5))
    torch.save(model, tmp_path / "net.pt")
    x = blocky()[:1]
    np.save(tmp_path / "f.npy", model(x).detach().numpy())
    argv = [str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "1", "7", "9", "--regularizer", "none",
            "--max-iter", "3", "--no-progress", "--truth", str(tmp_path / "t.npy"), "--out", str(tmp_path / "u.npy")]
    for truth in (x.transpose(-1, -2), x.reshape(1, 63).expand(2, 63)):
        np.save(tmp_path / "t.npy", truth.numpy())
        monkeypatch.setattr("liftinv.inversion_cli.invert", lambda *a, **k: pytest.fail("solved"))
        assert invert_main(argv) == 2
        assert f"--truth has shape {tuple(truth.shape)}, the recovered input (1, 1, 7, 9)" in capsys.readouterr().err
    monkeypatch.undo()
    np.save(tmp_path / "t.npy", x[0, 0].numpy())
    assert invert_main(argv) == 0
    u = torch.from_numpy(np.load(tmp_path / "u.npy"))
    error = ((u - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).tolist()
    assert f"relative error {error}" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["network", "output", "--x0", "--truth"])
def test_invert_cli_refuses_an_output_that_is_an_input(tmp_path, capsys, monkeypatch, option):
    """--out equal to an input file: the recovered input replaced the observed outputs (or the
    network, x0 or truth) without a word, where liftinv reconstruct refuses it. Now refused by
    name before any work, the file left byte for byte (a path spelled another way too)."""
    import numpy as np

    from liftinv.inversion_cli import invert_main

    model = perceptron(30, (1, 7, 9), nn.LeakyReLU(0.5))
    torch.save(model, tmp_path / "net.pt")
    np.save(tmp_path / "f.npy", model(blocky()).detach().numpy())
    np.save(tmp_path / "x0.npy", blocky().numpy())
    np.save(tmp_path / "t.npy", blocky().numpy())
    files = {"network": "net.pt", "output": "f.npy", "--x0": "x0.npy", "--truth": "t.npy"}
    before = (tmp_path / files[option]).read_bytes()
    monkeypatch.setattr("liftinv.inversion_cli.invert", lambda *a, **k: pytest.fail("solved"))
    out = tmp_path / "sub" / ".." / files[option]
    assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "1", "7", "9",
                        "--x0", str(tmp_path / "x0.npy"), "--truth", str(tmp_path / "t.npy"), "--out", str(out)]) == 2
    assert f"--out {out} is also {option}: writing it would replace that file" in capsys.readouterr().err
    assert (tmp_path / files[option]).read_bytes() == before


def _buffers_only_model():
    """Batch norm without affine parameters (its running statistics are buffers) and a leaky
    ReLU, in float64 and eval mode: a network without parameters."""
    model = nn.Sequential(nn.BatchNorm1d(4, affine=False), nn.LeakyReLU(0.5)).double().eval()
    with torch.no_grad():
        model[0].running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=F64))
        model[0].running_var.copy_(torch.tensor([0.5, 2.0, 1.0, 1.5], dtype=F64))
    return model


def test_invert_a_network_without_parameters_in_the_dtype_of_its_buffers(tmp_path, capsys):
    """A network whose only tensors are buffers computes in their dtype: invert checked the
    output's dtype against the parameters only (a float32 output got as far as the lifted
    network's input check, which named u), and liftinv invert read the output in the default
    dtype (float32), so a float64 network file failed (exit status 2). Oracle: the input of the
    noiseless output, recovered to 1e-3, and the command line's result equals invert's."""
    import numpy as np

    from liftinv.inversion_cli import invert_main

    model = _buffers_only_model()
    u = torch.randn(2, 4, dtype=F64, generator=gen(3))
    f = model(u).detach()
    cfg = InversionConfig(max_iter=1000, tol=1e-4)  # the command line's defaults
    res = invert(model, f, input_shape=(4,), config=cfg)
    torch.testing.assert_close(res.input, u, rtol=0, atol=1e-3)
    with pytest.raises(TypeError, match=r"output has dtype torch.float32, the network uses torch.float64"):
        invert(model, f.float(), input_shape=(4,), config=cfg)
    torch.save(model, tmp_path / "net.pt")
    np.save(tmp_path / "f.npy", f.numpy())
    assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "4", "--regularizer", "none",
                        "--no-progress", "--out", str(tmp_path / "x.npy")]) == 0, capsys.readouterr().err
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "x.npy")), res.input)


@pytest.mark.parametrize("content", [b"", b"garbage\n"])
def test_invert_cli_unreadable_network_file_is_an_error_naming_it(tmp_path, capsys, content):
    """An empty network file ended liftinv invert in torch.load's EOFError traceback, a text file
    in 'invalid literal for int() with base 10' naming no file."""
    from liftinv.inversion_cli import invert_main

    (tmp_path / "net.pt").write_bytes(content)
    torch.save(torch.zeros(2, 3), tmp_path / "f.pt")
    assert invert_main([str(tmp_path / "net.pt"), str(tmp_path / "f.pt"), "--out", str(tmp_path / "u.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"liftinv invert: error: cannot read network file {tmp_path / 'net.pt'}: ") and "Traceback" not in err


# ---------------------------------------------------------------- the weight search on model discrepancy curves
def test_search_alpha_hits_target_of_monotone_curves():
    from liftinv.inversion_search import search_alpha

    scale = torch.tensor([1.0, 3.0, 0.2], dtype=F64)
    calls = []

    def solve(alpha):  # d increases with alpha, d(0) = 0.1 scale, d(inf) = 2 scale
        calls.append(alpha.clone())
        return scale * (0.1 + 1.9 * alpha / (1 + alpha))

    delta = torch.tensor([1.0, 1.5, 0.3], dtype=F64)
    alpha = search_alpha(solve, delta, torch.full((3,), 1e-3, dtype=F64), tau=1.0, rtol=1e-3, max_search=30)
    # exact solution of scale (0.1 + 1.9 a / (1 + a)) = delta
    r = delta / scale - 0.1
    torch.testing.assert_close(alpha, r / (1.9 - r), rtol=3e-3, atol=0)
    assert len(calls) < 15


def test_search_alpha_solves_again_before_lowering_a_weight_after_an_unsettled_solve():
    """A solver that needs two solves at a weight to converge (the first, stopped at its limit,
    leaves the discrepancy 1.5x the converged one): with ``unsettled`` the search repeats each
    solve that ended above the target once and finds the weight of the converged curve; reading
    the first solves as converged, it lowers the weights far below it."""
    from liftinv.inversion_search import search_alpha

    def curve(alpha):  # converged discrepancy, increasing in alpha
        return 0.1 + 1.9 * alpha / (1 + alpha)

    def make_solver():
        calls, last = [], [None]

        def solve(alpha):
            converged = last[0] is not None and bool(torch.equal(alpha, last[0]))
            last[0] = alpha.clone()
            calls.append((alpha.clone(), converged))
            return curve(alpha) * (1.0 if converged else 1.5)

        return solve, calls

    delta, start = torch.tensor([1.0], dtype=F64), torch.tensor([10.0], dtype=F64)
    solve, calls = make_solver()
    alpha = search_alpha(solve, delta, start, tau=1.0, rtol=1e-2, max_search=20, unsettled=lambda: not calls[-1][1])
    torch.testing.assert_close(alpha, torch.tensor([0.9 / 1.0], dtype=F64), rtol=0.05, atol=0)  # curve(a) = 1
    assert all(not (a[1] and b[1]) for a, b in zip(calls, calls[1:]))  # never two repeats in a row
    solve, calls = make_solver()
    naive = search_alpha(solve, delta, start, tau=1.0, rtol=1e-2, max_search=20)
    assert float(naive) < 0.5 * float(alpha)


def test_search_alpha_spends_its_solves_on_a_weight_that_fits_before_its_solves_settle():
    """Every sample on target from the first solve: a settled solve ends the search, an
    unsettled one is continued at the same weight until the solves run out."""
    from liftinv.inversion_search import search_alpha

    for flag, count in ((False, 1), (True, 4)):
        calls = []

        def solve(alpha):
            calls.append(alpha.clone())
            return torch.ones_like(alpha)

        alpha = search_alpha(solve, torch.tensor([1.0], dtype=F64), torch.tensor([0.3], dtype=F64), tau=1.0, rtol=0.01,
                             max_search=4, unsettled=lambda: flag)
        assert float(alpha) == 0.3 and [float(a) for a in calls] == [0.3] * count


def test_search_alpha_stops_on_an_unreachable_target():
    from liftinv.inversion_search import search_alpha

    calls = []

    def solve(alpha):  # plateau at 1 below alpha = 1: the target 0.5 cannot be reached
        calls.append(alpha.clone())
        return alpha.clamp_min(1.0)

    alpha = search_alpha(solve, torch.tensor([0.5], dtype=F64), torch.tensor([10.0], dtype=F64), tau=1.0, rtol=0.01,
                         max_search=20)
    assert float(alpha) == pytest.approx(1.0)
    # 10 -> 1 -> 0.1 (no change: stalled) -> back to 1, solved once more, then done
    assert [float(a) for a in calls] == pytest.approx([10.0, 1.0, 0.1, 1.0])


@pytest.mark.parametrize("max_alpha", [None, float(torch.finfo(torch.float32).max)])
def test_search_alpha_stops_at_the_largest_weight_the_dtype_holds(max_alpha):
    """A target out of reach upward (a noise level claimed far too large) on a discrepancy flat
    from the first step (the regulariser decides the input, e.g. 0 for L1, for every weight):
    the search multiplied the weight by 10 at every solve, up to inf (in float64 after 309
    solves; invert's float32 weights after 41). It now stops at the last weight below the range
    (max_alpha: the data dtype's largest number, float64's by default), solves there once more,
    and warns. Oracle: alpha0 * 10^k for the largest k that stays in the range."""
    from liftinv.inversion_search import search_alpha

    calls = []

    def solve(alpha):
        calls.append(float(alpha))
        return torch.ones_like(alpha)

    largest = torch.finfo(F64).max if max_alpha is None else max_alpha
    k = math.floor(math.log10(largest) + 2)  # 0.01 * 10^k <= largest
    with pytest.warns(RuntimeWarning, match=r"out of reach.*sample\(s\) \[0\].*noise level"):
        alpha = search_alpha(solve, torch.tensor([100.0], dtype=F64), torch.tensor([0.01], dtype=F64), tau=1.0,
                             rtol=0.01, max_search=400, **({} if max_alpha is None else {"max_alpha": max_alpha}))
    assert float(alpha) == pytest.approx(10.0 ** (k - 2), rel=1e-9) and float(alpha) <= largest
    assert calls == pytest.approx([10.0 ** (i - 2) for i in range(k + 1)] + [10.0 ** (k - 2)], rel=1e-9)


def test_invert_with_a_noise_level_far_too_large_keeps_a_finite_weight():
    """invert in float32 with L1 and a noise level no weight reaches: alpha was inf after 41
    solves of a long search. Now the largest finite float32 weight of the search, with a
    RuntimeWarning; its solution is the regulariser's minimiser, 0 (oracle: the L1 minimiser)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    f = net(torch.rand(2, 4)).detach()
    with pytest.warns(RuntimeWarning, match="out of reach"):
        res = invert(net, f, input_shape=(4,), regularizer=L1(), noise_level=100.0,
                     config=InversionConfig(max_search=60, max_iter=20))
    assert res.alpha.dtype == torch.float32 and bool(torch.isfinite(res.alpha).all()) and float(res.alpha.min()) > 1e37
    assert torch.equal(res.input, torch.zeros_like(res.input))


@pytest.mark.parametrize("start", [1e3, 1e-3])
def test_search_alpha_passes_a_plateau_it_starts_on(start):
    """A discrepancy flat from the first step is not a stalled search: ``d = clamp(alpha, 1, 10)``
    (the input fixed by the regulariser above alpha = 10, e.g. 0 for L1, and a best fit below 1)
    started on the upper plateau or on the lower one, with the target 3 on the slope between,
    reaches d = 3 at alpha = 3; the stall test froze it on the plateau after its second solve."""
    from liftinv.inversion_search import search_alpha

    def solve(alpha):
        return alpha.clamp(1.0, 10.0)

    alpha = search_alpha(solve, torch.tensor([3.0], dtype=F64), torch.tensor([start], dtype=F64), tau=1.0,
                         rtol=1e-3, max_search=20)
    torch.testing.assert_close(alpha, torch.tensor([3.0], dtype=F64), rtol=2e-3, atol=0)


def test_l1_weight_search_leaves_the_weights_that_zero_the_input():
    r"""Identity layer, data of size 1e-3: ``default_alpha`` = 0.01 and 0.001 both exceed
    :math:`\max|f|`, so the L1 solution :math:`S_\alpha(f)` is 0 for both and the discrepancy the
    same; the search took this for an unreachable target and returned :math:`u = 0` with
    :math:`d \approx 10\,\delta`. Oracle: soft-thresholding at the chosen weight, and its
    discrepancy :math:`\|S_\alpha(f) - f\| = \delta` within the search's tolerance."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(30, 30, bias=False).double(), nn.Unflatten(1, (1, 5, 6)))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(30, dtype=F64))
    u_true = 1e-3 * torch.rand(2, 1, 5, 6, dtype=F64, generator=gen(0))
    f, delta = noisy(u_true, 0.05)
    res = invert(model, f, input_shape=(1, 5, 6), regularizer=L1(), noise_level=delta, config=InversionConfig(max_iter=3000, tol=1e-10))
    a = res.alpha.reshape(-1, 1, 1, 1)
    soft = f.sign() * (f.abs() - a).clamp_min(0)
    torch.testing.assert_close(res.input, soft, atol=1e-9, rtol=0)
    torch.testing.assert_close((soft - f).flatten(1).norm(dim=1), delta, rtol=0.05, atol=0)


@pytest.mark.parametrize("slope, calls", [(0.015, [10.0, 1.0, 0.1, 1.0]), (0.03, [10.0, 1.0, 0.1, 0.01])])
def test_search_alpha_stalls_below_a_relative_change_of_two_percent(slope, calls):
    """Dividing the weight by 10 counts as stalled when d falls by less than STALL = 2 %
    relatively (d >= 0.98 d_hi): a plateau that falls by 1.5 % per decade stops the search at the
    larger weight (solved once more), one that falls by 3 % per decade goes on dividing."""
    from liftinv.inversion_search import search_alpha

    seen = []

    def solve(alpha):  # above alpha = 1: d = alpha; below: 1 - slope per decade, never 0.5
        seen.append(float(alpha))
        return torch.where(alpha >= 1, alpha, 1 + slope * alpha.log10())

    search_alpha(solve, torch.tensor([0.5], dtype=F64), torch.tensor([10.0], dtype=F64), tau=1.0, rtol=0.01, max_search=4)
    assert seen == pytest.approx(calls)


@pytest.mark.parametrize("slope, calls", [(0.015, [0.01, 0.1, 1.0, 10.0, 10.0]), (0.03, [0.01, 0.1, 1.0, 10.0, 100.0])])
def test_search_alpha_stalls_upwards_below_a_relative_change_of_two_percent(slope, calls):
    """Symmetrically, multiplying the weight by 10 counts as stalled when d rises by less than
    2 % (d <= 1.02 d_lo): the search then stays at that weight (solved once more, done)."""
    from liftinv.inversion_search import search_alpha

    seen = []

    def solve(alpha):  # below alpha = 1: d = alpha; above: 1 + slope per decade, never 2
        seen.append(float(alpha))
        return torch.where(alpha <= 1, alpha, 1 + slope * alpha.log10())

    search_alpha(solve, torch.tensor([2.0], dtype=F64), torch.tensor([0.01], dtype=F64), tau=1.0, rtol=0.01, max_search=5)
    assert seen == pytest.approx(calls)


def test_search_alpha_regula_falsi_step_stays_in_the_middle_80_percent():
    """Once bracketed (lo = 1, hi = 10), the next weight is regula falsi on log d against log alpha,
    clamped to the middle 80 % of the bracket in log alpha: with d = 0.5 at 1 and 2 at 10 and the
    target 0.51, regula falsi gives log10(alpha) = log(1.02) / log(4) = 0.0143, clamped to 0.1."""
    from liftinv.inversion_search import search_alpha

    seen = []

    def solve(alpha):  # d = 0.5 alpha^(log10 4): 0.5 at 1, 2 at 10
        seen.append(float(alpha))
        return 0.5 * alpha ** math.log10(4.0)

    search_alpha(solve, torch.tensor([0.51], dtype=F64), torch.tensor([1.0], dtype=F64), tau=1.0, rtol=1e-3, max_search=3)
    assert seen == pytest.approx([1.0, 10.0, 10**0.1], rel=1e-12)


def test_search_alpha_returns_the_weights_of_the_last_solve_and_zero_for_zero_noise():
    """Out of solves, search_alpha returns the weights it solved for last (not the next guess);
    a sample with delta = 0 is solved at alpha = 0 from the first solve, whatever alpha0."""
    from liftinv.inversion_search import search_alpha

    calls = []

    def solve(alpha):
        calls.append(alpha.clone())
        return alpha.clone()

    alpha = search_alpha(solve, torch.tensor([0.0, 0.5], dtype=F64), torch.tensor([0.3, 10.0], dtype=F64), tau=1.0,
                         rtol=0.01, max_search=2)
    assert [a.tolist() for a in calls] == [[0.0, 10.0], [0.0, 1.0]]
    assert alpha.tolist() == [0.0, 1.0]


def test_search_alpha_repeats_an_unsettled_solve_once_per_weight():
    """When every solve is unsettled (stopped at its limit) and above the target, each weight is
    solved twice, then lowered: 10, 10, 1, 1 (not 10 forever)."""
    from liftinv.inversion_search import search_alpha

    calls = []

    def solve(alpha):
        calls.append(float(alpha))
        return alpha.clone()

    search_alpha(solve, torch.tensor([0.5], dtype=F64), torch.tensor([10.0], dtype=F64), tau=1.0, rtol=0.01,
                 max_search=4, unsettled=lambda: True)
    assert calls == [10.0, 10.0, 1.0, 1.0]


def test_pdhg_reads_the_host_twice_per_iteration(host_reads):
    """A PDHG iteration reads the device twice (device syncs on a GPU) for a piecewise-linear
    activation: the residuals' seven norms and the energy together, and the NaN scan of tv in
    the energy. Each norm and the energy were read on their own, nine reads per iteration.
    Oracle: the count of host reads (tol = 0) for 4 and 9 iterations; the energy recorded is
    the documented lambda B(f, Mu + c) + alpha TV(u) of the returned input."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.LeakyReLU(0.2)).double().eval()
    u = torch.rand(2, 1, 6, 7, dtype=torch.float64, generator=gen(40))
    f = net(u).detach()
    counts = []
    for n in (4, 9):
        with host_reads() as reads:
            result = invert(net, f, input_shape=(1, 6, 7), regularizer=TV(0.02), config=InversionConfig(max_iter=n, tol=0.0))
        counts.append(len(reads))
    assert result.iterations == 9 and counts[1] - counts[0] == 2 * 5
    lifted = lift(net, input_shape=(1, 6, 7))
    with torch.no_grad():
        energy = bregman(lifted.layer(1).activation, f, lifted.layer(1).preactivation([result.input])).sum() \
            + 0.02 * (grad2d(result.input).pow(2).sum(2).sqrt()).sum()
    assert result.history.energy[-1] == pytest.approx(float(energy), rel=1e-12)


def test_inverting_a_network_that_ends_in_a_reshape_solves_the_network_without_it():
    """Flatten-Linear-Sigmoid-Unflatten lifted to two layers, the reshape a layer with the identity
    activation whose free variable relaxed the network: the recovered input differed by 0.38 from
    that of the same network without the Unflatten (ad hoc, 8x8 images). Oracle: invert of the
    network without the reshape, on the flattened data."""
    g = torch.Generator().manual_seed(3)
    lin = nn.Linear(64, 48).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(48, 64, generator=g, dtype=torch.float64) / 4)
        lin.bias.zero_()
    reshaped = nn.Sequential(nn.Flatten(), lin, nn.Sigmoid(), nn.Unflatten(1, (3, 4, 4)))
    plain = nn.Sequential(nn.Flatten(), lin, nn.Sigmoid())
    u = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    f = reshaped(u).detach() + 0.01 * torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    cfg = InversionConfig(max_iter=300, tol=0.0)
    a = invert(reshaped, f, input_shape=(1, 8, 8), regularizer=TV(1e-3), config=cfg)
    b = invert(plain, f.flatten(1), input_shape=(1, 8, 8), regularizer=TV(1e-3), config=cfg)
    assert a.input.shape == (2, 1, 8, 8)
    torch.testing.assert_close(a.input, b.input, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", [invert, invert_gradient], ids=["lifted", "gradient"])
def test_a_result_holds_no_graph_of_the_data(method):
    """Data computed with autograd on (``f = net(u)``) came back from the gradient baseline as
    ``variables[1]`` with ``requires_grad=True``, holding the caller's graph. Oracle: every tensor
    of the result is a leaf without grad."""
    net = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()).double()
    f = net(torch.rand(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert f.requires_grad
    result = method(net, f, input_shape=(4,), regularizer=Tikhonov(1e-2), config=InversionConfig(max_iter=5))
    assert not any(v.requires_grad for v in (*result.variables, result.input, result.discrepancy))


def test_stalled_weight_search_keeps_the_larger_weight_it_stopped_at():
    r"""Identity layer with a ReLU output, data with negative entries: :math:`d(\alpha)` falls to the
    floor :math:`\|f_-\|` as :math:`\alpha \to 0`, and the target :math:`\tau\delta` (half the floor)
    is out of reach. The search comes down a slope (10, 1, 0.1), stalls at 0.01 (d 0.5 % below that
    of 0.1) and goes back to 0.1, which fits as well (search_alpha's docstring); the selection
    of solves took the smallest discrepancy instead, the weight 0.01, and wasted the last solve.
    Oracle: converged solves at each weight of the search's path with the weight given, picked by
    the documented rule (none fits: the largest weight whose d is within ``STALL`` of the
    smallest)."""
    from liftinv.inversion_search import STALL

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 12, bias=False).double(), nn.ReLU(), nn.Unflatten(1, (1, 3, 4)))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(12, dtype=F64))
    f = torch.randn(1, 1, 3, 4, dtype=F64, generator=gen(0))
    delta = 0.5 * float(f.clamp_max(0).norm())
    cfg = InversionConfig(max_iter=2000, tol=1e-12, snap=0.0, default_alpha=10.0)
    res = invert(model, f, input_shape=(1, 3, 4), regularizer=Tikhonov(), noise_level=delta, config=cfg)
    path = sorted({float(s.alpha) for s in res.history.steps}, reverse=True)
    assert len(path) >= 3
    given = {w: invert(model, f, input_shape=(1, 3, 4), regularizer=Tikhonov(w), config=cfg) for w in path}
    d = {w: float(r.discrepancy) for w, r in given.items()}
    assert max(d.values()) > 0 and min(d.values()) > (1 + cfg.discrepancy_rtol) * delta  # none fits
    expected = max(w for w in path if (1 - STALL) * d[w] <= min(d.values()))
    assert expected > min(path)
    assert float(res.alpha) == pytest.approx(expected, rel=1e-12)
    torch.testing.assert_close(res.input, given[expected].input, atol=1e-9, rtol=0)


def test_pdhg_inverts_a_layer_that_ignores_its_input():
    r"""A one-layer network whose weight is 0 (:math:`N(u) = \sigma(c)` for every input): PDHG's
    steps :math:`\sigma_1 = \beta/\|M\|^2` divided 0 by 0 and invert failed with
    'ZeroDivisionError: float division by zero'. With :math:`M = 0` any :math:`\sigma_1` keeps
    :math:`\tau(\sigma_1\|M\|^2 + 8\sigma_2) < 1`, and the problem is :math:`\min_u \alpha\mathrm{TV}(u)`.
    Oracle: PDHG's update :math:`u - \tau(M^*s - \operatorname{div} q)` keeps each channel's mean
    (:math:`\operatorname{div}` has zero mean), so it converges to the constant image at the mean
    of ``x0``; the discrepancy is :math:`\|\sigma(c) - f\|` whatever the input."""
    model = perceptron(12, (2, 3, 4), nn.ReLU(), seed=3, bias=True)
    with torch.no_grad():
        model[1].weight.zero_()
    x0 = torch.rand(2, 2, 3, 4, dtype=F64, generator=gen(1))
    f = model(x0).detach() + 0.1
    res = invert(model, f, regularizer=TV(0.1), x0=x0, config=InversionConfig(max_iter=3000, tol=1e-10))
    mean = x0.mean(dim=(2, 3), keepdim=True).expand_as(x0)
    torch.testing.assert_close(res.input, mean, atol=1e-7, rtol=0)
    torch.testing.assert_close(res.discrepancy, (model(x0) - f).flatten(1).norm(dim=1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("regularizer", [L1(0.1), None], ids=["l1", "none"])
def test_joint_bcd_inverts_a_network_whose_first_layer_ignores_its_input(regularizer):
    r"""A two-layer network whose first weight is 0: the input block's curvature
    :math:`w_0 = L_0` is 0 and JointProblem's coupling factor scaled it by :math:`w_0^{-1/2}`:
    invert failed with 'ZeroDivisionError: 0.0 cannot be raised to a negative power' (one layer,
    solved by LiftedProblem's steps, takes :math:`L_b = 0` as BCD's step_scale). The input does
    not enter the smooth part, so any step is a descent step. Oracle: the minimiser of the
    regulariser alone reached from ``x0``: 0 for L1 (soft-thresholding by 0.1 per sweep, inputs
    in [0, 1]), ``x0`` itself without a regulariser; the hidden variable fits the data as for any input."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6).double(), nn.ReLU(), nn.Linear(6, 5).double())
    seeded(model, seed=2)
    with torch.no_grad():
        model[1].weight.zero_()
    x0 = torch.rand(2, 1, 3, 4, dtype=F64, generator=gen(3))
    f = model(x0).detach()
    res = invert(model, f, regularizer=regularizer, x0=x0, input_shape=(1, 3, 4),
                 config=InversionConfig(max_iter=200, tol=1e-12))
    torch.testing.assert_close(res.input, torch.zeros_like(x0) if regularizer is not None else x0, atol=0, rtol=0)
    torch.testing.assert_close(res.discrepancy, torch.zeros(2, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("single", [False, True], ids=["batch", "single"])
def test_invert_cli_takes_an_image_file_as_x0(tmp_path, capsys, single):
    """--out writes one grey input as an image file of shape (H, W), and --truth takes it, but
    --x0 refused it: 'x0 must have shape (1, 1, 7, 9), got (7, 9)' (with --single: 'must hold one
    input of shape (1, 7, 9), got (7, 9)'). With --input-shape, --x0 is now taken up to axes of
    length 1, as --truth. Oracle: invert with x0 the image's grey values read back; a transposed
    array is still refused."""
    import numpy as np

    from liftinv.inversion_cli import invert_main
    from liftinv.io import load_array, save_array

    model = perceptron(30, (1, 7, 9), nn.LeakyReLU(0.5))
    torch.save(model, tmp_path / "net.pt")
    x = blocky()[:1]
    f = model(x).detach()
    np.save(tmp_path / "f.npy", (f[0] if single else f).numpy())
    save_array(x[0, 0], tmp_path / "x0.png")
    def argv(start):
        return [str(tmp_path / "net.pt"), str(tmp_path / "f.npy"), "--input-shape", "1", "7", "9", "--regularizer", "none",
                "--max-iter", "3", "--tol", "0", "--no-progress", "--x0", str(tmp_path / start),
                "--out", str(tmp_path / "u.npy"), *(["--single"] if single else [])]

    assert invert_main(argv("x0.png")) == 0
    x0 = load_array(tmp_path / "x0.png").reshape(1, 1, 7, 9)
    expected = invert(model, f, x0=x0, config=InversionConfig(max_iter=3, tol=0)).input
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "u.npy")), expected[0] if single else expected)
    np.save(tmp_path / "t.npy", x[0, 0].T.numpy())
    capsys.readouterr()
    assert invert_main(argv("t.npy")) == 2
    assert "(9, 7)" in capsys.readouterr().err
