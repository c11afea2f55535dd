import numpy as np
import pytest
import torch
from deepinv.physics import Denoising, LinearPhysics
from skimage.restoration import denoise_tv_chambolle

from liftinv import tv as tv_module
from liftinv.tv import TVHistory, div2d, grad2d, pdhg_tv, prox_tv, tv


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def matrix_physics(m, shape, seed=0):
    """y = M vec(x) per sample with a random dense M (m x prod(shape)), float64."""
    n = int(np.prod(shape))
    mat = torch.randn(m, n, dtype=torch.float64, generator=gen(seed)) / np.sqrt(m)
    return LinearPhysics(
        A=lambda x: x.flatten(1) @ mat.T,
        A_adjoint=lambda y: (y @ mat).reshape(y.shape[0], *shape),
    )


def objective(physics, x, y, w):
    return 0.5 * (physics.A(x) - y).pow(2).flatten(1).sum(1) + w * tv(x)


def test_grad_div_adjoint():
    x = torch.randn(3, 2, 7, 9, dtype=torch.float64, generator=gen(1))
    p = torch.randn(3, 2, 2, 7, 9, dtype=torch.float64, generator=gen(2))
    lhs, rhs = (grad2d(x) * p).sum(), -(x * div2d(p)).sum()
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_grad_formula_and_neumann_boundary():
    x = torch.randn(2, 1, 5, 6, dtype=torch.float64, generator=gen(3))
    g = grad2d(x)
    assert g.shape == (2, 1, 2, 5, 6)
    assert torch.equal(g[:, :, 0, :-1], x[:, :, 1:] - x[:, :, :-1])
    assert torch.equal(g[:, :, 1, :, :-1], x[..., 1:] - x[..., :-1])
    assert g[:, :, 0, -1].abs().max() == 0 and g[:, :, 1, :, -1].abs().max() == 0


def test_grad_norm_bound():
    # power iteration on -div grad stays below the bound 8
    x = torch.randn(1, 1, 15, 17, dtype=torch.float64, generator=gen(4))
    for _ in range(300):
        x = -div2d(grad2d(x))
        lam = x.norm()
        x = x / lam
    assert 7.0 < lam <= 8.0


def test_tv_matches_explicit_sum():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen(5))
    expected = torch.zeros(2, dtype=torch.float64)
    for b in range(2):
        for c in range(3):
            for i in range(4):
                for j in range(5):
                    di = x[b, c, i + 1, j] - x[b, c, i, j] if i < 3 else 0.0
                    dj = x[b, c, i, j + 1] - x[b, c, i, j] if j < 4 else 0.0
                    expected[b] += (di**2 + dj**2) ** 0.5
    torch.testing.assert_close(tv(x), expected, rtol=1e-12, atol=0)


def test_tv_autograd_is_a_finite_subgradient_at_flat_regions():
    """tv(x) differentiated by autograd: sqrt of the squared gradient norm gave NaN (0 * inf) at
    every pixel next to one with (grad x) = 0, so a piecewise-constant image had NaN gradients.
    Oracle: the closed-form subgradient -div(q), q = grad x / |grad x| and 0 where grad x = 0;
    values bit for bit the explicit sqrt of the sum of squares."""
    x = torch.zeros(2, 2, 6, 7, dtype=torch.float64)
    x[:, :, 1:4, 2:5] = 1.0
    x[1, 1] = torch.randn(6, 7, dtype=torch.float64, generator=gen(6))
    x.requires_grad_(True)
    value = tv(x)
    (grad,) = torch.autograd.grad(value.sum(), x)
    g = grad2d(x.detach())
    norm = g.pow(2).sum(2, keepdim=True).sqrt()
    q = torch.where(norm > 0, g / norm.clamp_min(1e-300), torch.zeros_like(g))
    assert torch.equal(value.detach(), norm.flatten(1).sum(1))
    torch.testing.assert_close(grad, -div2d(q), rtol=1e-12, atol=1e-12)


def prox_objective(u, v, w):
    return 0.5 * (u - v).pow(2).flatten(1).sum(1) + w * tv(u)


def test_prox_tv_matches_skimage():
    v = torch.rand(2, 1, 13, 11, dtype=torch.float64, generator=gen(6))
    w = 0.15
    u = prox_tv(v, w, n_iter=3000, tol=1e-12)
    for b in range(2):
        ref = denoise_tv_chambolle(v[b, 0].numpy(), weight=w, eps=1e-14, max_num_iter=20000)
        assert np.abs(u[b, 0].numpy() - ref).max() < 1e-4
        # skimage solves the same problem: same objective value
        r = torch.from_numpy(ref)[None, None]
        assert abs(prox_objective(u[b : b + 1], v[b : b + 1], w) - prox_objective(r, v[b : b + 1], w)) < 1e-7


def test_prox_tv_optimality_against_perturbations():
    v = torch.randn(3, 2, 9, 7, dtype=torch.float64, generator=gen(7))
    w = 0.3
    u = prox_tv(v, w, n_iter=2000, tol=1e-12)
    f0 = prox_objective(u, v, w)
    g = gen(8)
    for scale in (1e-2, 1e-3):
        for _ in range(20):
            d = torch.randn(u.shape, dtype=u.dtype, generator=g)
            assert (prox_objective(u + scale * d, v, w) >= f0 - 1e-10).all()


def test_prox_tv_tolerance_stops_early_with_small_gap():
    v = torch.rand(2, 1, 15, 15, dtype=torch.float64, generator=gen(9))
    w = 0.1
    ref = prox_tv(v, w, n_iter=4000, tol=1e-13)
    loose = prox_tv(v, w, n_iter=4000, tol=1e-3)
    # duality gap <= tol * P bounds 1/2 |u - u*|^2
    bound = (2 * 1e-3 * prox_objective(loose, v, w)).sqrt()
    assert ((loose - ref).flatten(1).norm(dim=1) <= bound).all()
    assert (loose - ref).abs().max() > 1e-9  # it did stop early


def test_prox_tv_float32_gap_test_holds_for_images_far_from_zero():
    r"""Stopping at a duality gap :math:`\le` tol :math:`P(u)` guarantees
    :math:`\tfrac12\|u - u^\star\|^2 \le \text{tol}\,P(u^\star)` (up to float32 rounding of u).
    For images near 100 in float32, :math:`P - (\tfrac12\|v\|^2 - \tfrac12\|u\|^2)` was rounding
    noise of :math:`\tfrac12\|v\|^2` and stopped the iteration early (here 2.6 times the bound).
    Oracle: the float64 prox of :math:`v - 100`, plus 100 (the prox commutes with constant shifts)."""
    v = 100 + torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen(5))
    w, tol = 0.1, 1e-4
    ref = prox_tv(v - 100, w, n_iter=5000, tol=1e-10) + 100
    u = prox_tv(v.float(), w, n_iter=2000, tol=tol).double()
    assert (0.5 * (u - ref).pow(2).flatten(1).sum(1) <= tol * prox_objective(ref, v, w)).all()


def test_prox_tv_stops_at_the_first_check_with_a_small_relative_gap(spy):
    """prox_tv stops at the first check (every 10 iterations) where the duality gap
    P(u) - (1/2 |v|^2 - 1/2 |u|^2) is at most tol P(u) for every sample, P(u) = 1/2 |u - v|^2 + w TV(u)
    (relative to P, here >> 1); 10 iterations fewer, some sample's gap is above tol P."""
    v, w, tol = 10 * torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen(30)), 1.0, 1e-4
    calls = spy(tv_module, "_project_ball")

    def gap_and_primal(n_iter):
        u = prox_tv(v, w, n_iter=n_iter, tol=tol)
        primal = prox_objective(u, v, w)
        return primal - 0.5 * (v.pow(2) - u.pow(2)).flatten(1).sum(1), primal

    gap, primal = gap_and_primal(5000)
    n = len(calls)
    assert 10 <= n < 5000 and n % 10 == 0 and (primal > 10).all()
    assert (gap >= 0).all() and (gap <= tol * primal).all()
    gap, primal = gap_and_primal(n - 10)
    assert (gap > tol * primal).any()


def test_pdhg_gives_opnorm_the_data_for_a_physics_of_plain_functions(spy):
    """A physics of plain functions has no dtype or device: opnorm takes them from ``like``
    (its docstring), so pdhg_tv must pass its images, or on a GPU the Lanczos start vector would
    lie on the CPU. Checked by what opnorm receives (on the CPU no device can differ)."""
    shape = (1, 4, 5)
    physics = matrix_physics(7, shape, seed=3)
    y = physics.A(torch.rand(2, *shape, dtype=torch.float64, generator=gen(4)))
    calls = spy(tv_module, "opnorm", record=lambda *args, **kwargs: kwargs.get("like"))
    pdhg_tv(physics, y, 0.01, n_iter=2)
    like = calls[0]
    assert isinstance(like, torch.Tensor) and like.dtype == y.dtype and like.device == y.device
    assert like.shape[1:] == shape


def test_prox_tv_zero_weight_and_constant():
    v = torch.rand(2, 1, 5, 5, generator=gen(10))
    assert torch.equal(prox_tv(v, 0.0), v)
    c = torch.full((2, 1, 5, 5), 0.3, dtype=torch.float64)
    torch.testing.assert_close(prox_tv(c, 1.0), c)


def test_pdhg_identity_equals_prox_tv():
    v = torch.rand(2, 1, 11, 9, dtype=torch.float64, generator=gen(11))
    w = 0.1
    x, hist = pdhg_tv(Denoising(), v, w, box=None, n_iter=5000, tol=1e-10)
    torch.testing.assert_close(x, prox_tv(v, w, n_iter=3000, tol=1e-13), atol=1e-6, rtol=0)
    assert isinstance(hist, TVHistory) and hist.converged


def test_pdhg_zero_weight_identity_returns_y():
    y = torch.rand(3, 1, 7, 5, dtype=torch.float64, generator=gen(12))
    x, hist = pdhg_tv(Denoising(), y, 0.0, n_iter=2000, tol=1e-12)
    torch.testing.assert_close(x, y, atol=1e-9, rtol=0)


def test_pdhg_converges_to_optimal_point():
    shape = (1, 7, 8)
    phys = matrix_physics(40, shape, seed=13)
    x_true = torch.rand(2, *shape, dtype=torch.float64, generator=gen(14))
    y = phys.A(x_true) + 0.05 * torch.randn(2, 40, dtype=torch.float64, generator=gen(15))
    w = 0.05
    ref, ref_hist = pdhg_tv(phys, y, w, n_iter=20000, tol=1e-12)
    f_ref = objective(phys, ref, y, w)
    assert ref.min() >= 0 and ref.max() <= 1
    torch.testing.assert_close(ref_hist.objective[-1], f_ref)
    # optimality of the reference: feasible perturbations do not decrease the objective
    g = gen(16)
    for _ in range(30):
        pert = (ref + 1e-3 * torch.randn(ref.shape, dtype=ref.dtype, generator=g)).clamp(0, 1)
        assert (objective(phys, pert, y, w) >= f_ref - 1e-9).all()
    # a short run: objective decreasing towards the reference
    x_short, hist = pdhg_tv(phys, y, w, n_iter=400, tol=0.0)
    torch.testing.assert_close(hist.objective[-1], objective(phys, x_short, y, w), rtol=1e-12, atol=0)  # of the returned x
    gaps = hist.objective - f_ref
    assert hist.n_iter == 400 and not hist.converged
    assert (gaps[-1] < 1e-3 * f_ref).all()
    assert (gaps[-1] < 0.01 * gaps[10]).all()


def test_pdhg_first_iterations_match_hand_written_chambolle_pock():
    """Three iterations equal Chambolle-Pock written out with L = ||A||_2 (from the dense matrix),
    sigma_1 = 0.1, sigma_2 = L^2 / 8, tau = 0.99 / (1.1 L^2), x_0 = clamp(A^T y), q = 0:
    q_1 <- (q_1 + sigma_1 (A xb - y)) / (1 + sigma_1), q_2 <- q_2 / max(1, |q_2| / w) after
    q_2 += sigma_2 grad xb, x+ = clamp(x - tau (A^T q_1 - div q_2)), xb = 2 x+ - x (xb_0 = x_0)."""
    shape, w = (1, 5, 4), 0.1
    phys = matrix_physics(12, shape, seed=20)
    n = int(np.prod(shape))
    lip = torch.linalg.matrix_norm(phys.A(torch.eye(n, dtype=torch.float64).reshape(n, *shape)), ord=2) ** 2
    sigma1, sigma2, tau = 0.1, lip / 8, 0.99 / (1.1 * lip)
    y = phys.A(torch.rand(2, *shape, dtype=torch.float64, generator=gen(21)))
    y = y + 0.1 * torch.randn(y.shape, dtype=y.dtype, generator=gen(22))
    x = phys.A_adjoint(y).clamp(0, 1)
    x_bar, q1, q2 = x, torch.zeros_like(y), torch.zeros_like(grad2d(x))
    for k in range(1, 4):
        q1 = (q1 + sigma1 * (phys.A(x_bar) - y)) / (1 + sigma1)
        q2 = q2 + sigma2 * grad2d(x_bar)
        q2 = q2 / (q2.pow(2).sum(2, keepdim=True).sqrt() / w).clamp(min=1)
        x_new = (x - tau * (phys.A_adjoint(q1) - div2d(q2))).clamp(0, 1)
        x, x_bar = x_new, 2 * x_new - x
        out, hist = pdhg_tv(phys, y, w, n_iter=k, tol=0.0)
        assert hist.n_iter == k
        torch.testing.assert_close(out, x, rtol=0, atol=1e-12)
        torch.testing.assert_close(hist.objective[-1], objective(phys, x, y, w), rtol=1e-12, atol=0)


def test_pdhg_stops_only_at_a_small_relative_change():
    """pdhg_tv stops only at an iteration with |x_k - x_{k-1}| <= tol |x_k| (norms per sample,
    not squared) for every sample (its dual residuals must be small too: see the offset test)."""
    y = torch.rand(2, 1, 7, 7, dtype=torch.float64, generator=gen(31))
    tol = 1e-3
    _, hist = pdhg_tv(Denoising(), y, 0.1, n_iter=500, tol=tol)
    n = hist.n_iter
    assert hist.converged and 2 < n < 500
    xs = [pdhg_tv(Denoising(), y, 0.1, n_iter=k, tol=0.0)[0] for k in (n - 2, n - 1, n)]
    change = [(b - a).flatten(1).norm(dim=1) for a, b in zip(xs, xs[1:])]
    size = [x.flatten(1).norm(dim=1) for x in xs[1:]]
    assert (size[1] > 1).all()  # squared norms would give another rule
    assert (change[1] <= tol * size[1]).all()


@pytest.mark.parametrize("box", [(0.0, 1.0), None])
def test_pdhg_stops_on_a_sample_with_zero_measurements(box):
    """A sample with y = 0, started from an image x0 (a warm start): its solution is 0 (the
    objective is >= 0 = its value at 0), so |x^+|, |y| and |grad x^+| + |q_2|/sigma_2, the
    references of the relative tests, all vanish and the tests never passed: pdhg_tv ran to
    n_iter (3000 here) for the whole batch. Such a sample now takes the scale of its start
    (|x0|) as the floor of each reference. Oracle: the minimiser 0, reached to 10 tol |x0|, in
    far fewer iterations; the other sample's result is that of the same number of iterations
    without a test (tol = 0), and the sample with y = 0 that of its own solve (to rounding)."""
    from operators.blur import Blur
    from operators.kernels import gaussian_kernel

    blur = Blur(gaussian_kernel(1.0, 5, dtype=torch.float64), boundary="circular", dtype=torch.float64)
    x0 = torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen(3))
    y = blur.A(torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen(4)))
    y[1] = 0
    tol = 1e-3
    x, hist = pdhg_tv(blur, y, 0.05, box=box, n_iter=3000, tol=tol, x0=x0)
    assert hist.converged and hist.n_iter < 500
    assert x[1].norm() <= 10 * tol * x0[1].norm()
    assert torch.equal(x[0], pdhg_tv(blur, y, 0.05, box=box, n_iter=hist.n_iter, tol=0.0, x0=x0)[0][0])
    torch.testing.assert_close(x[1:], pdhg_tv(blur, y[1:], 0.05, box=box, n_iter=3000, tol=tol, x0=x0[1:])[0],
                               rtol=0, atol=1e-12)


def test_prox_tv_sample_result_does_not_depend_on_the_batch():
    """A sample whose duality gap passed the test keeps its iterate while the others go on:
    prox_tv ran FISTA on the whole batch until every gap had passed, so a random image batched
    with a nearly constant one came out 3.6e-4 off the same image solved alone. Oracle: each
    sample solved alone with the same tolerance."""
    v = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=gen(61))
    v[1] = 0.3 + 0.01 * v[1]
    both = prox_tv(v, 0.1, n_iter=2000, tol=1e-4)
    for i in range(2):
        torch.testing.assert_close(both[i : i + 1], prox_tv(v[i : i + 1], 0.1, n_iter=2000, tol=1e-4), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pdhg_sample_result_does_not_depend_on_the_batch(dtype):
    """A sample that passes its stopping tests keeps its iterates while the others go on: pdhg_tv
    iterated the whole batch until every sample had passed, so a random image denoised-deblurred
    with a constant one came out 0.006 off (images in [0, 1]) the same image solved alone (94
    iterations alone, 261 in the batch). Oracle: each sample solved alone with the same
    tolerance; its objective history is the batch's up to its stop, then constant."""
    from operators.blur import Blur
    from operators.kernels import gaussian_kernel

    blur = Blur(gaussian_kernel(1.5, 7, dtype=dtype), boundary="zero", dtype=dtype)
    x = torch.rand(2, 1, 16, 16, dtype=dtype, generator=gen(42))
    x[1] = 0.3
    y = blur.A(x) + 0.02 * torch.randn(x.shape, dtype=dtype, generator=gen(1))
    both, hist = pdhg_tv(blur, y, 0.02, n_iter=3000, tol=1e-3)
    for i in range(2):
        alone, hist_alone = pdhg_tv(blur, y[i : i + 1], 0.02, n_iter=3000, tol=1e-3)
        torch.testing.assert_close(both[i : i + 1], alone, rtol=0, atol=1e-6)
        k = hist_alone.n_iter
        torch.testing.assert_close(hist.objective[:k, i], hist_alone.objective[:, 0], rtol=1e-6, atol=0)
        assert torch.equal(hist.objective[k:, i], hist.objective[k - 1 :, i][:-1])


def test_pdhg_does_not_stop_early_on_an_image_with_an_offset():
    """pdhg_tv stopped on the relative change of x alone, |x_k - x_{k-1}| <= tol |x_k|: adding 100
    to a ramp inflates |x_k| and it stopped after one iteration, 'converged', at x ~ y with an
    objective 25 % above the minimum, while the TV dual that moves x was still growing. Oracle: the
    TV prox (prox_tv to a duality gap of 1e-13, shifted by the offset: TV and the box-free
    denoising problem commute with it); the same problem without the offset is solved alike."""
    ramp = torch.linspace(0, 1, 16, dtype=torch.float64)[:, None].expand(16, 16)[None, None]
    w = 0.5
    ref = prox_tv(ramp, w, n_iter=20000, tol=1e-13)
    for offset in (0.0, 100.0):
        x, hist = pdhg_tv(Denoising(), ramp + offset, w, box=None, n_iter=2000, tol=1e-5)
        assert hist.converged and hist.n_iter > 10
        torch.testing.assert_close(x - offset, ref, atol=1e-3, rtol=0)
        assert float(objective(Denoising(), x, ramp + offset, w)) == pytest.approx(float(objective(Denoising(), ref, ramp, w)), rel=1e-3)


def test_pdhg_warm_start_and_box():
    y = torch.rand(2, 1, 6, 6, dtype=torch.float64, generator=gen(17)) * 3 - 1
    x, _ = pdhg_tv(Denoising(), y, 0.0, box=(0.0, 1.0), n_iter=3000, tol=1e-12, x0=torch.full_like(y, 0.5))
    torch.testing.assert_close(x, y.clamp(0, 1), atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight": -1.0}, "weight"),
        ({"weight": float("nan")}, "weight"),
        ({"weight": 0.1, "n_iter": 0}, "n_iter"),
        ({"weight": 0.1, "tol": -1.0}, "tol"),
        ({"weight": 0.1, "box": (1.0, 0.0)}, "box"),
        ({"weight": 0.1, "box": [0.0, 1.0]}, "box"),
        ({"weight": 0.1, "box": (0.5, 0.5)}, "box"),
        ({"weight": 0.1, "box": (-float("inf"), 1.0)}, "box"),
        ({"weight": True}, "weight"),
    ],
)
def test_pdhg_bad_parameters(kwargs, match):
    y = torch.rand(2, 1, 5, 5)
    with pytest.raises(ValueError, match=match):
        pdhg_tv(Denoising(), y, **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="v"):
        prox_tv(torch.rand(5, 5), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        prox_tv(torch.full((1, 1, 3, 3), float("nan")), 0.1)
    with pytest.raises(TypeError, match="v"):
        prox_tv(np.zeros((1, 1, 3, 3)), 0.1)
    with pytest.raises(ValueError, match="x"):
        tv(torch.rand(3, 3))
    with pytest.raises(ValueError, match="x0"):
        pdhg_tv(Denoising(), torch.rand(2, 1, 5, 5), 0.1, x0=torch.rand(2, 1, 4, 5))
    with pytest.raises(TypeError, match="x0"):
        pdhg_tv(Denoising(), torch.rand(2, 1, 5, 5), 0.1, x0=torch.rand(2, 1, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="y"):
        pdhg_tv(Denoising(), torch.full((2, 1, 5, 5), float("inf")), 0.1)
    with pytest.raises(TypeError, match="x0"):
        pdhg_tv(Denoising(), torch.rand(2, 1, 5, 5), 0.1, x0=np.zeros((2, 1, 5, 5)))
    with pytest.raises(ValueError, match="images"):
        pdhg_tv(Denoising(), torch.rand(2, 25), 0.1)
    with pytest.raises(ValueError, match="zero operator norm"):
        pdhg_tv(LinearPhysics(A=lambda x: 0 * x, A_adjoint=lambda y: 0 * y), torch.rand(2, 1, 5, 5), 0.1)


def test_prox_tv_of_a_weight_negligible_against_the_image_is_the_image_in_float32():
    """u* = v + w div p* with |p*| <= 1 moves no entry by more than 4w (closed-form bound, the
    oracle). In float32 the dual step 1/(8w) grad v overflowed where w is tiny against v (w = 1e-30
    for an image at 1e10, w = 1e-45 for one in [0, 1], and a zero image with w = 1e-45): NaN
    everywhere. Such samples now come back as they are (within the bound), and a batch-mate of
    ordinary scale is solved as alone."""
    g = torch.Generator().manual_seed(3)
    v = torch.rand(2, 1, 8, 8, generator=g)
    for scale, w in ((1e10, 1e-30), (1.0, 1e-45), (0.0, 1e-45)):
        u = prox_tv(scale * v, w)
        assert torch.isfinite(u).all()
        assert (u - scale * v).abs().max() <= 4 * w + torch.finfo(torch.float32).eps * scale
    batch = torch.cat([1e10 * v[:1], v[1:]])
    torch.testing.assert_close(prox_tv(batch, 0.05)[1:], prox_tv(v[1:], 0.05), rtol=0, atol=0)


def test_pdhg_tv_with_a_box_bound_beyond_the_dtype_solves_as_in_float64():
    """pdhg_tv(..., box=(0, 1e300)) on float32 failed inside torch with 'value cannot be converted
    to type float without overflow' (clamp). Oracle: the same solve in float64, which holds 1e300."""
    y = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64) - 0.3
    x32, _ = pdhg_tv(Denoising(), y.float(), 0.05, box=(0.0, 1e300), n_iter=30, tol=0)
    x64, _ = pdhg_tv(Denoising(), y, 0.05, box=(0.0, 1e300), n_iter=30, tol=0)
    torch.testing.assert_close(x32.double(), x64, rtol=0, atol=1e-5)


def test_prox_tv_refuses_a_weight_beyond_the_dtype_naming_it():
    """prox_tv(v, 1e39) on float32 computed with w = Inf (Inf * 0 = NaN): every entry NaN, where
    the float64 prox of the same image is finite (the oracle: for so large a weight the
    per-channel mean). Now a ValueError naming weight and the dtype; TV.prox likewise for
    step * weight."""
    from liftinv.potentials import TV as TVPotential

    v = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(5))
    u64 = prox_tv(v.double(), 1e39)
    torch.testing.assert_close(u64, v.double().mean().expand_as(u64), rtol=1e-3, atol=0)
    with pytest.raises(ValueError, match=r"weight = 1e\+39 overflows torch.float32"):
        prox_tv(v, 1e39)
    with pytest.raises(ValueError, match=r"step \* weight = 1e\+39 overflows torch.float32"):
        TVPotential(1.0).prox(v, 1e39)
    assert torch.isfinite(TVPotential(1.0).prox(v.double(), 1e39)).all()
