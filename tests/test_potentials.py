import math
import re

import deepinv as dinv
import numpy as np
import pytest
import torch
from deepinv.physics import Denoising

from liftinv import potentials
from liftinv.inversion_baseline import GradientOptimizer
from liftinv.potentials import L1, TV, Box, DeepinvPrior, SquaredError, Tikhonov
from liftinv.activations import SoftThreshold
from liftinv.tv import div2d, grad2d, pdhg_tv, prox_tv, tv


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(b=3, c=2, h=9, w=11, seed=0):
    return torch.rand(b, c, h, w, dtype=torch.float64, generator=gen(seed))


def test_tv_value_matches_liftinv_tv_with_per_sample_weights():
    x = images()
    torch.testing.assert_close(TV(0.3).value(x), 0.3 * tv(x))
    w = torch.tensor([0.1, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(TV(w).value(x), w * tv(x))


def test_tv_box_value_is_infinite_outside():
    x = images()
    x[1, 0, 0, 0] = 1.5
    val = TV(0.2, box=(0.0, 1.0)).value(x)
    assert torch.isfinite(val[[0, 2]]).all() and val[1] == torch.inf


def test_tv_prox_matches_prox_tv():
    x = images(seed=1)
    u = TV(0.4, tol=1e-12, max_inner=5000).prox(x, 0.25)
    ref = prox_tv(x, 0.1, n_iter=5000, tol=1e-12)
    torch.testing.assert_close(u, ref, atol=1e-8, rtol=0)


def test_tv_prox_per_sample_weights_equal_separate_calls():
    x = images(seed=2)
    w = torch.tensor([0.05, 0.0, 0.3], dtype=torch.float64)
    u = TV(w, tol=1e-12, max_inner=5000).prox(x, 0.5)
    for b in range(3):
        ref = prox_tv(x[b : b + 1], 0.5 * float(w[b]), n_iter=5000, tol=1e-12) if w[b] > 0 else x[b : b + 1]
        torch.testing.assert_close(u[b : b + 1], ref, atol=1e-8, rtol=0)


@pytest.mark.parametrize("box", [None, (0.0, 1.0)])
def test_tv_prox_of_a_batch_is_each_sample_alone_with_a_gap_tolerance(box):
    """The gap test stopped the inner iteration for the whole batch, so a sample that passed it
    kept iterating while another had not: with max_inner=50, tol=1e-3 a sample's prox differed
    by 0.012 from its prox alone. Each sample's dual now stops at its own test. Oracle: every
    sample's prox alone (its own weight), bit for bit."""
    x = images(seed=5)
    x[1] *= 0.01
    w = torch.tensor([0.05, 0.001, 0.3], dtype=torch.float64)
    u = TV(w, box=box, max_inner=50, tol=1e-3).prox(x, 1.0)
    for b in range(3):
        alone = TV(w[b:b + 1], box=box, max_inner=50, tol=1e-3).prox(x[b:b + 1], 1.0)
        assert torch.equal(u[b:b + 1], alone), b


def test_tv_prox_with_box_matches_pdhg():
    # prox of w TV + box = TV-regularised denoising with a box, solved independently by PDHG
    x = 1.4 * images(seed=3) - 0.2
    u = TV(0.15, box=(0.0, 1.0), tol=1e-13, max_inner=20000).prox(x, 1.0)
    ref, _ = pdhg_tv(Denoising(), x, 0.15, box=(0.0, 1.0), n_iter=20000, tol=1e-12)
    assert u.min() >= 0 and u.max() <= 1
    torch.testing.assert_close(u, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("box", [None, (0.0, 255.0)])
def test_tv_prox_float32_gap_test_holds_for_images_far_from_zero(box):
    r"""A duality gap :math:`\le` tol :math:`P(u)` bounds :math:`\tfrac12\|u - u^\star\|^2`; for images
    near 100 in float32, :math:`P(u) - D(p)` (with :math:`\tfrac12\|v\|^2 - \tfrac12\|y\|^2`) was
    rounding noise and stopped the prox early (2.6 times the bound). Oracle: the float64
    ``prox_tv`` of :math:`v - 100`, plus 100 (the box is inactive)."""
    v = 100 + torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen(5))
    w, tol = 0.1, 1e-4
    ref = prox_tv(v - 100, w, n_iter=5000, tol=1e-10) + 100
    u = TV(w, box=box, max_inner=2000, tol=tol).prox(v.float(), 1.0).double()
    primal = 0.5 * (ref - v).pow(2).flatten(1).sum(1) + w * tv(ref)
    assert (0.5 * (u - ref).pow(2).flatten(1).sum(1) <= tol * primal).all()


def test_tv_prox_with_box_stops_at_the_first_small_duality_gap(spy):
    """With an active box, the prox stops at the first check (every 5 iterations) where the true
    duality gap is small for every sample: the returned u = clamp(v + lam div p) and the stored dual
    p give P(u) - L(u, p) = lam (TV(u) - <grad u, p>) <= tol P(u), with
    P(u) = 1/2 |u - v|^2 + lam TV(u) and L(u, p) = 1/2 |u - v|^2 - lam <u, div p> the Lagrangian
    at its minimiser over the box (the dual value); 5 iterations fewer, some gap is above tol P(u)."""
    v, lam, tol, box = 3 * images(b=2, c=1, seed=3) - 1, 0.15, 1e-6, (0.0, 1.0)
    calls = spy(potentials, "_project_ball")  # once per inner iteration

    def run(max_inner):
        pot = TV(lam, box=box, tol=tol, max_inner=max_inner)
        u = pot.prox(v, 1.0)
        (p,) = pot._dual.values()
        y = v + lam * div2d(p)
        torch.testing.assert_close(u, y.clamp(*box), rtol=0, atol=0)
        assert (y - u).pow(2).sum() > 1  # the box is active
        assert (p.pow(2).sum(2) <= 1 + 1e-12).all()
        gap = lam * (tv(u) - (grad2d(u) * p).flatten(1).sum(1))
        return gap, 0.5 * (u - v).pow(2).flatten(1).sum(1) + lam * tv(u)

    gap, primal = run(2000)
    n_inner = len(calls)
    assert 5 <= n_inner < 2000 and n_inner % 5 == 0  # stopped early, at a check
    assert (gap >= 0).all() and (gap <= tol * primal).all()
    gap, primal = run(n_inner - 5)
    assert (gap > tol * primal).any()


def test_tv_prox_first_inner_iterations_are_hand_written_fista_on_the_dual():
    """With lam = step w and the dual step 1 / (8 lam), max_inner = k runs k iterations of FISTA
    from p_0 = r_1 = 0: p_k = Pi(r_k + grad clamp(v + lam div r_k) / (8 lam)) (Pi: pointwise
    projection onto the unit ball), t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2,
    r_{k+1} = p_k + (t_k - 1) / t_{k+1} (p_k - p_{k-1}), and returns u = clamp(v + lam div p_k)."""
    v, w, step, box = 1.4 * images(b=2, c=1, seed=12) - 0.2, 0.3, 0.5, (0.0, 1.0)
    lam = step * w
    p_prev, r, t = torch.zeros_like(grad2d(v)), torch.zeros_like(grad2d(v)), 1.0
    for k in range(1, 4):
        p = r + grad2d((v + lam * div2d(r)).clamp(*box)) / (8 * lam)
        p = p / p.pow(2).sum(2, keepdim=True).sqrt().clamp(min=1)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        r, p_prev, t = p + (t - 1) / t_next * (p - p_prev), p, t_next
        u = TV(w, box=box, max_inner=k, tol=0.0).prox(v, step)
        torch.testing.assert_close(u, (v + lam * div2d(p)).clamp(*box), rtol=0, atol=1e-14)


@pytest.mark.parametrize("max_inner, gap_tests", [(3, 0), (5, 0), (6, 1), (10, 1), (11, 2)])
def test_tv_prox_skips_the_gap_test_of_its_last_iteration(monkeypatch, max_inner, gap_tests):
    """The gap test (every 5 iterations) reads a tensor on the host, a device sync on a GPU: the
    last iteration, which stops anyway, skips it. Host reads: the finiteness check of the input
    and one per gap test (tol = 0: none stops early); whether the scalar weight is positive is
    decided on the host."""
    reads = []
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t, f=torch.Tensor.__bool__: reads.append(1) or f(t))
    TV(0.3, max_inner=max_inner, tol=0.0).prox(images(seed=3), 0.5)
    assert len(reads) == 1 + gap_tests


def test_tv_prox_warm_start_reaches_the_same_point():
    x = images(seed=4)
    pot = TV(0.2, tol=1e-10, max_inner=5000)
    pot.prox(x, 1.0)
    y = x + 1e-3 * images(seed=5)
    warm = pot.prox(y, 1.0)
    cold = TV(0.2, tol=1e-10, max_inner=5000).prox(y, 1.0)
    torch.testing.assert_close(warm, cold, atol=1e-5, rtol=0)
    # the dual carries over to a copy with another weight
    assert pot.with_weight(0.5)._dual is pot._dual


@pytest.mark.parametrize("box", [None, (0.2, 0.7)])
def test_tv_prox_of_a_zero_image_after_a_warm_start_is_the_projection_of_zero(box):
    """A zero sample keeps its dual fixed (its prox is immediate), but it kept the warm start of
    the last call, so its prox was lam div p of that dual (0.49 off with lam = 0.5), not 0.
    Oracle, closed form: TV >= 0 vanishes on constants and Pi_box(0) minimises 1/2 |u|^2 over the
    box entry by entry, so prox(0) is the constant image Pi_box(0)."""
    pot = TV(0.5, box=box, max_inner=50)
    pot.prox(images(seed=7), 1.0)  # a warm start from other images
    x = images(seed=8)
    x[1] = 0.0
    u = pot.prox(x, 1.0)
    expected = torch.full_like(x[1], 0.0 if box is None else box[0])
    assert torch.equal(u[1], expected)


def test_tv_smooth_value_tends_to_tv():
    x = images(seed=6)
    pot = TV(0.7)
    assert torch.all(pot.smooth_value(x, 1e-8) <= pot.value(x))
    torch.testing.assert_close(pot.smooth_value(x, 1e-9), pot.value(x), rtol=1e-6, atol=0)


@pytest.mark.parametrize("eps", [-0.1, 0.0, float("nan"), float("inf"), True, "0.1"])
def test_tv_smooth_value_refuses_an_eps_that_is_not_a_smoothing(eps):
    """smooth_value took any eps: -0.1 gave 3.2 on a constant 4x4 image (TV 0), 0 gave NaN
    gradients there, NaN a NaN value, True failed inside torch. Oracles: the smoothed TV of a
    constant image is 0 with gradient 0 for every eps > 0 (closed form), and the gradient baseline
    (GradientOptimizer) refuses the same eps."""
    x = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64, requires_grad=True)
    for good in (1e-3, 1.0):
        value = TV(1.0).smooth_value(x, good)
        (grad,) = torch.autograd.grad(value.sum(), x)
        assert float(value.detach()) == 0.0 and bool((grad == 0).all())
    with pytest.raises((TypeError, ValueError), match="eps must be a positive finite number"):
        GradientOptimizer(eps=eps)
    error = TypeError if isinstance(eps, (bool, str)) else ValueError
    with pytest.raises(error, match="eps must be a positive finite number"):
        TV(1.0).smooth_value(x, eps)


@pytest.mark.parametrize("kind", [TV, Tikhonov, L1])
def test_weight_none_needs_a_weight(kind):
    pot = kind()
    with pytest.raises(ValueError, match="weight None"):
        pot.value(images())
    assert float(pot.with_weight(0.5).value(images())[0]) > 0


def test_tikhonov_and_l1_per_sample_weights_equal_separate_potentials():
    """Per-sample weights act sample by sample: values, gradient, prox (brute force: the prox of
    w|x| is the minimiser of 1/2 (z - x)^2 + step w |z| on a fine grid) and the Lipschitz constant
    (the largest weight)."""
    x = torch.randn(3, 1, 4, 5, dtype=torch.float64, generator=gen(11))
    w = torch.tensor([0.2, 0.0, 1.5], dtype=torch.float64)
    tik, l1 = Tikhonov().with_weight(w), L1().with_weight(w)
    for b in range(3):
        one = x[b : b + 1]
        torch.testing.assert_close(tik.value(x)[b], Tikhonov(float(w[b])).value(one)[0])
        torch.testing.assert_close(tik.grad(x)[b], float(w[b]) * x[b])
        torch.testing.assert_close(l1.value(x)[b], float(w[b]) * x[b].abs().sum())
        grid = torch.linspace(-4, 4, 160001, dtype=torch.float64)
        brute = grid[(0.5 * (grid[None] - x[b].reshape(-1, 1)) ** 2 + 0.7 * float(w[b]) * grid.abs()).argmin(1)]
        torch.testing.assert_close(l1.prox(x, 0.7)[b].flatten(), brute, atol=1e-4, rtol=0)
    assert tik.lipschitz() == 1.5


@pytest.mark.parametrize("size", [1, 4])
@pytest.mark.parametrize(
    "value",
    [
        lambda w, x: TV(w).value(x),
        lambda w, x: TV(w).smooth_value(x, 0.1),
        lambda w, x: DeepinvPrior(dinv.optim.prior.TVPrior()).with_weight(w).value(x),
    ],
    ids=["tv", "tv_smooth", "deepinv"],
)
def test_per_sample_weights_of_another_batch_size_are_refused_by_every_value(value, size):
    """A weight tensor is one weight per sample: TV's values and DeepinvPrior's took one of
    another length by broadcasting (a weight (1,) for a batch of 3 gave every sample its weight,
    silently; (4,) failed inside torch naming nothing). Oracle: L1's and Tikhonov's values and
    every prox refuse the same weights with this error."""
    x = images()
    w = torch.full((size,), 0.5, dtype=torch.float64)
    message = f"weight holds {size} values but the batch has 3 samples"
    for oracle in (lambda: L1(w).value(x), lambda: Tikhonov(w).value(x), lambda: TV(w).prox(x, 1.0)):
        with pytest.raises(ValueError, match=message):
            oracle()
    with pytest.raises(ValueError, match=message):
        value(w, x)
    torch.testing.assert_close(value(torch.full((3,), 0.5, dtype=torch.float64), x), value(0.5, x))


def _deepinv_tv(w):
    return DeepinvPrior(dinv.optim.prior.TVPrior(), w, lipschitz=1.0)


@pytest.mark.parametrize("kind, method", [  # the methods each potential has: grad if smooth, else prox
    (Tikhonov, "value"), (Tikhonov, "grad"), (L1, "value"), (L1, "prox"),
    (TV, "value"), (TV, "prox"), (TV, "smooth_value"), (_deepinv_tv, "value"), (_deepinv_tv, "grad"),
], ids=["tikhonov-value", "tikhonov-grad", "l1-value", "l1-prox", "tv-value", "tv-prox", "tv-smooth_value",
        "deepinv-value", "deepinv-grad"])
def test_per_sample_weights_beyond_the_dtype_of_x_are_refused_as_a_number_is(kind, method):
    """A number weight above the largest float32 is refused on float32 images (it would be Inf
    there, and Inf * 0 NaN), but a float64 weight tensor holding it was converted to x's dtype
    unchecked: Tikhonov's and L1's values came out NaN at the zero entries, TV's prox NaN. Now the
    same ValueError naming weight (one host read per weight and dtype); entries in range give what
    the number gives. Oracle: the number weight's error, and its results per sample."""
    args = {"prox": (1.0,), "smooth_value": (0.1,)}.get(method, ())

    def use(weight, x):
        return getattr(kind(weight), method)(x, *args)

    x = images().float()
    x[:, :, :2] = 0
    message = r"^weight = 1e\+300 overflows torch.float32 \(largest 3.4e\+38\), the dtype of x"
    with pytest.raises(ValueError, match=message):
        use(1e300, x)
    big = torch.tensor([0.5, 1e300, 2.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        use(big, x)
    weights = (0.5, 3e38, 2.0)
    got = use(torch.tensor(weights, dtype=torch.float64), x)
    for b, w in enumerate(weights):
        torch.testing.assert_close(got[b], use(w, x[b:b + 1])[0], rtol=1e-6, atol=0)
    assert use(big, x.double()).isfinite().all()
    fits = kind(torch.tensor(weights, dtype=torch.float64))
    for _ in range(2):  # the second call reads nothing
        getattr(fits, method)(x, *args)
    assert fits._fits[0] is fits.weight and fits._fits[1] == {torch.float32}


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_tv_bad_weight(weight):
    with pytest.raises(ValueError, match="weight"):
        TV(weight)


def test_tv_bad_arguments():
    with pytest.raises(TypeError, match="weight"):
        TV("0.1")
    with pytest.raises(ValueError, match="weight"):
        TV(torch.tensor([[0.1]]))
    with pytest.raises(ValueError, match="lo < hi"):
        TV(0.1, box=(1.0, 0.0))
    with pytest.raises(ValueError, match="max_inner"):
        TV(0.1, max_inner=0)
    with pytest.raises(ValueError, match=r"TV needs images \(B, C, H, W\), got shape \(2, 5\)"):
        TV(0.1).prox(torch.zeros(2, 5, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="batch has 3"):
        TV(torch.ones(2, dtype=torch.float64)).prox(images(), 1.0)


@pytest.mark.parametrize("make, error, message", [
    (lambda: Box("10", "9"), TypeError, "Box's lo must be a real number, got '10'"),  # compared as text: 9 <= x <= 10 nowhere
    (lambda: Box(0.0, "1"), TypeError, "Box's hi must be a real number, got '1'"),
    (lambda: Box(True, 2.0), TypeError, "Box's lo must be a real number, got True"),
    (lambda: TV(0.1, box=(0.5,)), ValueError, r"box must be None or a pair \(lo, hi\), got \(0.5,\)"),  # was IndexError
    (lambda: TV(0.1, box=(0.0, 1.0, 2.0)), ValueError, "box must be None or a pair"),  # was Box()'s argument count
    (lambda: TV(0.1, box=0.5), ValueError, "box must be None or a pair"),
])
def test_box_bounds_are_two_real_numbers(make, error, message):
    with pytest.raises(error, match=message):
        make()
    assert Box(np.float32(-1), 2).prox(torch.tensor([-3.0, 3.0]), 1.0).tolist() == [-1.0, 2.0]
    assert TV(0.1, box=[0, 1]).box == (0.0, 1.0)


@pytest.mark.parametrize("make, name", [
    (Tikhonov, "weight"), (L1, "weight"), (TV, "weight"), (lambda w: SquaredError(torch.zeros(1, 3), w), "weight"),
    (lambda w: DeepinvPrior(dinv.optim.Tikhonov(), 0.7, lipschitz=w), "lipschitz"),
], ids=["tikhonov", "l1", "tv", "squared_error", "prior_lipschitz"])
def test_number_weights_beyond_the_float_range_are_refused_by_name(make, name):
    """An integer weight beyond the float range (10**400) passed is_real and then float() raised
    "OverflowError: int too large to convert to float", naming nothing. Now the ValueError naming
    the weight that inf gets, showing the integer; integers in range are taken as their float.
    Oracle: the error for inf (and -1), float(3)."""
    for big, like in ((10**400, math.inf), (-10**400, -1)):
        with pytest.raises(ValueError) as want:
            make(like)
        message = str(want.value).rsplit("got ", 1)[0] + f"got {big}"
        assert message.startswith(f"{name} must be a finite non-negative number")
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            make(big)
    made = make(3)
    assert (made.lip if name == "lipschitz" else made.weight) == 3.0


def test_weights_box_and_tolerance_are_checked():
    """Weights are finite numbers >= 0 (not bools), per sample one per sample of the batch; a box
    needs lo < hi (an empty interior is refused); the prox tolerance is >= 0 (0 allowed)."""
    with pytest.raises(ValueError, match="finite non-negative"):
        Tikhonov(torch.tensor([0.1, -1e-3], dtype=torch.float64))
    with pytest.raises(TypeError, match="weight"):
        L1(True)
    # the squared-error loss and a prior's Lipschitz constant too: float() took True as 1, "2" as 2
    target = torch.zeros(2, 3, dtype=torch.float64)
    for bad in (True, "2"):
        with pytest.raises(TypeError, match="weight must be a finite non-negative number"):
            SquaredError(target, bad)
        with pytest.raises(TypeError, match="lipschitz must be a finite non-negative number"):
            DeepinvPrior(dinv.optim.Tikhonov(), 0.7, lipschitz=bad)
    with pytest.raises(ValueError, match="batch has 2"):
        L1(torch.ones(3, dtype=torch.float64)).prox(images(b=2), 1.0)
    with pytest.raises(ValueError, match="lo < hi"):
        Box(0.5, 0.5)
    with pytest.raises(ValueError, match="lo < hi"):
        TV(0.1, box=(0.5, 0.5))
    with pytest.raises(ValueError, match="tol"):
        TV(0.1, tol=-1e-9)
    assert TV(0.1, tol=0).tol == 0.0


def test_deepinv_l1_prior_matches_l1():
    x = torch.randn(3, 1, 5, 6, dtype=torch.float64, generator=gen(7))
    pot, ref = DeepinvPrior(dinv.optim.L1Prior(), 0.3), L1(0.3)
    torch.testing.assert_close(pot.value(x), ref.value(x))
    torch.testing.assert_close(pot.prox(x, 0.5), ref.prox(x, 0.5))
    assert not pot.smooth


class _ThresholdScaledL1(dinv.optim.Prior):
    """l1 with deepinv's ``WaveletPrior`` convention: ``prox(x, ths=0.1, gamma)`` is the prox of
    ``ths * gamma * g``, its ``ths`` defaulting to 0.1 (pywt, which WaveletPrior needs, is not
    installed here)."""

    def __init__(self):
        super().__init__()
        self.explicit_prior = True

    def fn(self, x, *args, **kwargs):
        return x.abs().flatten(1).sum(1)

    def prox(self, x, *args, ths=0.1, gamma=1.0, **kwargs):
        return torch.sign(x) * (x.abs() - ths * gamma).clamp(min=0)


@pytest.mark.parametrize("weight", [0.3, torch.tensor([0.3, 0.05, 0.0], dtype=torch.float64)])
def test_deepinv_prior_with_a_threshold_argument_proxes_its_own_value(weight):
    """A deepinv prior whose prox also scales by a ``ths`` argument with a default other than 1
    (WaveletPrior: 0.1) was called with gamma alone, so the adapter applied the prox of 0.1 w g
    while its value was w g. Oracle: the closed-form soft-threshold of w |x|_1 (L1's prox)."""
    x = torch.randn(3, 1, 5, 6, dtype=torch.float64, generator=gen(9))
    pot = DeepinvPrior(_ThresholdScaledL1(), weight)
    for b in range(3):
        w = float(weight[b]) if isinstance(weight, torch.Tensor) else weight
        torch.testing.assert_close(pot.prox(x, 0.5)[b], L1(w).prox(x[b : b + 1], 0.5)[0])
        torch.testing.assert_close(pot.value(x)[b], w * x[b].abs().sum())


def test_deepinv_prior_per_sample_weights():
    x = torch.randn(3, 1, 5, 6, dtype=torch.float64, generator=gen(8))
    w = torch.tensor([0.1, 0.4, 0.0], dtype=torch.float64)
    pot = DeepinvPrior(dinv.optim.L1Prior()).with_weight(w)
    for b in range(3):
        torch.testing.assert_close(pot.prox(x, 2.0)[b], L1(float(w[b])).prox(x[b : b + 1], 2.0)[0])
    torch.testing.assert_close(pot.value(x), w * x.abs().flatten(1).sum(1))


def test_deepinv_stateful_prior_per_sample_weights_match_separate_solves():
    """deepinv's TV prox warm-starts from its last iterate: per-sample weights must equal one
    fresh solve per sample, not solves that start from another sample's iterate."""
    x = images(seed=11)[:2]
    w = torch.tensor([0.1, 0.01], dtype=torch.float64)
    pot = DeepinvPrior(dinv.optim.TVPrior(n_it_max=300), w)
    expected = torch.cat([dinv.optim.TVPrior(n_it_max=300).prox(x[i : i + 1], gamma=float(w[i])) for i in range(2)])
    torch.testing.assert_close(pot.prox(x, 1.0), expected, rtol=0, atol=1e-12)


def test_deepinv_tikhonov_as_smooth_potential():
    x = torch.randn(2, 1, 4, 5, dtype=torch.float64, generator=gen(9))
    pot, ref = DeepinvPrior(dinv.optim.Tikhonov(), 0.7, lipschitz=1.0), Tikhonov(0.7)
    assert pot.smooth
    torch.testing.assert_close(pot.value(x), ref.value(x))
    torch.testing.assert_close(pot.grad(x), ref.grad(x))
    assert pot.lipschitz() == pytest.approx(ref.lipschitz())


def test_deepinv_smooth_prior_lipschitz_is_weight_times_prior_constant():
    """grad T = w grad g is (w L)-Lipschitz; with per-sample weights, the largest w counts."""
    w = torch.tensor([0.2, 0.7, 0.1], dtype=torch.float64)
    assert DeepinvPrior(dinv.optim.Tikhonov(), 0.7, lipschitz=2.0).lipschitz() == pytest.approx(1.4)
    assert DeepinvPrior(dinv.optim.Tikhonov(), w, lipschitz=3.0).lipschitz() == pytest.approx(2.1)


def test_deepinv_tv_prior_value_matches_tv():
    x = images(seed=10)
    torch.testing.assert_close(DeepinvPrior(dinv.optim.TVPrior(), 0.2).value(x), TV(0.2).value(x))


def test_deepinv_prior_rejects_non_priors():
    with pytest.raises(TypeError, match="prior"):
        DeepinvPrior(lambda x: x, 1.0)
    # implicit priors have no value fn: PnP's failed at the first energy with "'NoneType' object is not callable"
    for implicit in (dinv.optim.PnP(denoiser=dinv.models.MedianFilter()), dinv.optim.Prior()):
        with pytest.raises(TypeError, match=r"^prior must be an explicit deepinv prior \(explicit_prior=True: fn gives its value\), got "):
            DeepinvPrior(implicit)


@pytest.mark.parametrize("make", [lambda t: SquaredError(t, 0.7), lambda t: Tikhonov(torch.tensor([0.5, 2.0, 1.0], dtype=t.dtype))],
                         ids=["squared-error", "tikhonov"])
def test_smooth_potentials_gradient_is_autograd_and_lipschitz_is_tight(make):
    """grad = autograd of the summed value (float64); these quadratics have a gradient that is
    exactly L-Lipschitz along the direction of their largest weight."""
    x, target = images(seed=1), images(seed=2)
    potential = make(target)
    x_ = x.clone().requires_grad_()
    (auto,) = torch.autograd.grad(potential.value(x_).sum(), x_)
    torch.testing.assert_close(potential.grad(x), auto, rtol=1e-12, atol=1e-12)
    ratios = []
    for seed in range(3, 6):
        d = torch.zeros_like(x)
        d[seed - 3] = images(b=1, seed=seed)[0]
        ratios.append(float((potential.grad(x + d) - potential.grad(x)).norm() / d.norm()))
    assert max(ratios) == pytest.approx(potential.lipschitz(), rel=1e-12)


@pytest.mark.parametrize("potential", [L1(torch.tensor([0.3, 0.1, 0.05], dtype=torch.float64)), Box(0.2, 0.6)], ids=["l1", "box"])
def test_prox_minimises_step_times_value_plus_distance(potential):
    """prox(x, s) minimises s T(z) + 1/2 |z - x|^2 per sample: no random perturbation does better."""
    x, step = 2 * images(seed=7) - 0.5, 0.8
    z = potential.prox(x, step)
    objective = lambda v: step * potential.value(v) + 0.5 * (v - x).flatten(1).pow(2).sum(1)  # noqa: E731
    best = objective(z)
    assert torch.isfinite(best).all()
    for seed in range(20):
        trial = z + 0.05 * (2 * images(seed=100 + seed) - 1)
        if isinstance(potential, Box):
            trial = trial.clamp(0.2, 0.6)
        assert (objective(trial) >= best - 1e-12).all()


def test_l1_on_complex_data_is_the_modulus_and_its_prox_the_complex_soft_threshold():
    """On complex entries (MRI images) L1 is w sum |z_i| (real) and its prox shrinks each modulus
    by step * w, keeping the phase (torch.sign refused complex tensors). Oracle: brute-force
    minimisation of step * w |u| + |u - z|^2 / 2 over a 0.002-spaced grid in C around each z."""
    z = torch.tensor([[0.3 + 0.4j, -0.05 + 0.02j, 0.0j, -1.0 - 0.2j]], dtype=torch.complex128)
    pot, step = L1(torch.tensor([0.5], dtype=torch.float64)), 0.4
    value = pot.value(z)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, 0.5 * z.abs().sum(1), rtol=1e-15, atol=0)
    grid = torch.arange(-0.3, 0.3 + 1e-9, 0.002, dtype=torch.float64)
    offsets = (grid[:, None] + 1j * grid[None, :]).flatten()
    for zi, ui in zip(z[0], pot.prox(z, step)[0]):
        cand = zi * (1 - step * 0.5 / max(abs(zi), 1e-12)) + offsets  # grid around the closed form
        cand = torch.cat([cand, zi + offsets])
        obj = step * 0.5 * cand.abs() + 0.5 * (cand - zi).abs() ** 2
        best = cand[obj.argmin()]
        assert abs(ui - best) <= 0.0015
        assert step * 0.5 * abs(ui) + 0.5 * abs(ui - zi) ** 2 <= float(obj.min()) + 1e-12
    real = torch.tensor([[0.3, -0.05, 0.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(pot.prox(real, step), torch.tensor([[0.1, 0.0, 0.0, -0.8]], dtype=torch.float64))


@pytest.mark.parametrize("make", [lambda z: Tikhonov(torch.tensor([0.5, 2.0], dtype=torch.float64)),
                                  lambda z: Tikhonov(0.5), lambda z: SquaredError(0.3 * z.conj(), 1.5)],
                         ids=["tikhonov-per-sample", "tikhonov", "squared-error"])
def test_quadratic_potentials_on_complex_data_are_real_and_their_gradient_is_autograds(make):
    """On complex entries Tikhonov and SquaredError are w/2 sum |x_i - t_i|^2, real: x**2 made the
    value complex (w/2 sum x_i^2, not the squared modulus). Oracle: the same potential on the real
    layout view_as_real(x); the gradient (that of the real and imaginary parts) is autograd's."""
    z = torch.randn(2, 1, 3, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    pot = make(z)
    x = z.clone().requires_grad_(True)
    value = pot.value(x)
    assert value.dtype == torch.float64
    target = torch.view_as_real(pot.target) if isinstance(pot, SquaredError) else torch.zeros(1, dtype=torch.float64)
    weight = pot.weight.reshape(-1, 1, 1, 1, 1) if isinstance(pot.weight, torch.Tensor) else pot.weight
    expected = 0.5 * (weight * (torch.view_as_real(z) - target) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(value, expected, rtol=1e-14, atol=0)
    (grad,) = torch.autograd.grad(value.sum(), x)
    torch.testing.assert_close(pot.grad(z), grad, rtol=1e-14, atol=0)


def test_tv_and_box_refuse_complex_images_by_name():
    """TV is defined on real images: on complex ones tv() summed sqrt of squares (not moduli) and
    returned a complex 'value' without an error, TV.prox, prox_tv and pdhg_tv failed inside
    torch (clamp/comparison 'not implemented for ComplexDouble'); Box likewise. Now each refuses
    with a TypeError naming the argument; the real layout still works (oracle: tv of real and
    imaginary channels by hand)."""
    from operators.mri import MRI

    z = torch.randn(2, 1, 4, 5, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    for call in (lambda: TV(0.1).value(z), lambda: TV(0.1).prox(z, 1.0), lambda: TV(0.1).smooth_value(z, 1e-3),
                 lambda: tv(z), lambda: Box().value(z), lambda: Box().prox(z, 1.0)):
        with pytest.raises(TypeError, match=r"^x must be real"):
            call()
    with pytest.raises(TypeError, match=r"^v must be real"):
        prox_tv(z, 0.1)
    mri = MRI(torch.ones(4, 5, dtype=torch.float64), dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^y must be real"):
        pdhg_tv(mri, mri.A(z), 0.1, box=None, n_iter=2)
    real = torch.view_as_real(z[:, 0]).permute(0, 3, 1, 2)  # (B, 2, H, W)
    g = grad2d(real)
    torch.testing.assert_close(TV(0.1).value(real), 0.1 * (g[:, :, 0] ** 2 + g[:, :, 1] ** 2).sqrt().flatten(1).sum(1))
    pdhg_tv(mri, mri.A(real), 0.1, box=None, n_iter=2)


@pytest.mark.parametrize(
    "potential",
    [
        SquaredError(torch.zeros(1, 1, 4, 5, dtype=torch.float64)),
        Tikhonov(0.5),
        L1(0.5),
        Box(0.0, 1.0),
        TV(0.5),
        TV(0.5, box=(0.0, 1.0)),
    ],
    ids=["squared_error", "tikhonov", "l1", "box", "tv", "tv_box"],
)
def test_values_of_an_empty_batch_are_empty(potential):
    """A batch of B = 0 samples has B = 0 values: the potentials summed each sample with
    reshape(B, -1), which torch refuses for 0 elements ('cannot reshape tensor of 0 elements
    into shape [0, -1] ... ambiguous'). Oracle: the values of a batch are its samples' values
    (torch.cat of the one-sample values; none for none), as penalty.per_sample gives them."""
    x = images(b=2, c=1, h=4, w=5)
    kept = [potential.value(x[b : b + 1]) for b in range(2)]
    torch.testing.assert_close(potential.value(x), torch.cat(kept))
    empty = potential.value(x[:0])
    assert empty.shape == (0,) and empty.dtype == x.dtype
    torch.testing.assert_close(empty, torch.cat(kept)[:0])


@pytest.mark.parametrize("step", [-0.5, 0.0, float("nan"), float("inf"), True, "1"])
@pytest.mark.parametrize(
    "potential",
    [Box(0.0, 1.0), L1(0.5), TV(0.5), DeepinvPrior(dinv.optim.L1Prior(), 0.5)],
    ids=["box", "l1", "tv", "deepinv"],
)
def test_prox_refuses_a_step_that_is_not_a_finite_positive_number(potential, step):
    """The proxes took any step: L1's with step -0.5 moved every entry away from 0 (|x| + 0.25),
    TV's took it for 0 (x returned as it is), NaN gave NaN entries, a string failed inside torch.
    Oracle: the soft-threshold activation, whose prox is L1's (SoftThreshold(t).prox(x, s) =
    L1(t).prox(x, s)), refuses the same steps with the same error naming its argument."""
    x = images(b=2, c=1, h=4, w=5)
    torch.testing.assert_close(L1(0.5).prox(x, 0.7), SoftThreshold(0.5).prox(x, 0.7), rtol=0, atol=0)
    with pytest.raises((TypeError, ValueError)) as expected:
        SoftThreshold(0.5).prox(x, step)
    with pytest.raises(expected.type, match=str(expected.value).replace("gamma", "step").replace("(", r"\(")):
        potential.prox(x, step)


def test_squared_error_refuses_a_target_that_would_broadcast_to_another_sum():
    """value and grad of w/2 |x - t|^2 broadcast x - t: a target of shape (4, 1), (3,) or
    (4, 3) for x of shape (4, 3), (4, 3) or (4, 1) gave 1.5 per sample (oracle: the sum of the
    squared differences of equal-shaped tensors, 0.5 * 3 * 1 for the matching target of ones;
    for (4, 3) vs x (4, 1) grad had the target's shape, not x's). They now refuse it naming both
    shapes; a target of x's shape or of one sample with batch size 1 is taken, and a non-tensor
    target is refused at construction."""
    x = torch.zeros(4, 3, dtype=torch.float64)
    for target in (torch.ones(4, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)):
        loss = SquaredError(target)
        torch.testing.assert_close(loss.value(x), torch.full((4,), 1.5, dtype=torch.float64), rtol=0, atol=0)
        assert loss.grad(x).shape == x.shape
    for target, y in ((torch.ones(4, 1), x), (torch.ones(3), x), (torch.ones(4, 3), x[:, :1]), (torch.ones(2, 3), x)):
        loss = SquaredError(target.double())
        for compute in (loss.value, loss.grad):
            with pytest.raises(ValueError, match=r"target has shape \(.*\), x \("):
                compute(y)
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        SquaredError([1.0, 2.0])


def test_tv_prox_of_a_step_negligible_against_the_image_stays_within_the_bound_in_float32():
    """u = P(v + lam div p) with |p| <= 1 lies within 4 lam of P(v) per entry for any p (closed-form
    bound, the oracle; P the box's projection). In float32 the dual step 1/(8 lam) grad overflowed
    where lam is tiny against v (TV(1e-30) of an image at 1e10, step 1e-45 on one in [0, 1], a
    zero image with a box): NaN everywhere. Such samples now keep their dual; a batch-mate of
    ordinary scale is solved as alone."""
    v = images(b=2, c=1, h=8, w=8, seed=9).float()
    eps = torch.finfo(torch.float32).eps
    for scale, weight, step, box in ((1e10, 1e-30, 1.0, None), (1.0, 1.0, 1e-45, (0.2, 0.8)), (0.0, 1.0, 1e-45, (0.2, 0.8))):
        u = TV(weight, box=box, max_inner=20).prox(scale * v, step)
        projected = scale * v if box is None else (scale * v).clamp(*box)
        assert torch.isfinite(u).all()
        assert (u - projected).abs().max() <= 4 * weight * step + eps * scale
    batch = torch.cat([1e10 * v[:1], v[1:]])
    alone = TV(torch.tensor([0.05]), max_inner=20).prox(v[1:], 1.0)
    torch.testing.assert_close(TV(torch.tensor([1e-30, 0.05]), max_inner=20).prox(batch, 1.0)[1:], alone, rtol=0, atol=0)


@pytest.mark.parametrize("make", [lambda w: SquaredError(torch.zeros(2, 1, 4, 4), w), Tikhonov, L1, TV],
                         ids=["squared-error", "tikhonov", "l1", "tv"])
def test_a_weight_beyond_the_range_of_x_is_refused_naming_it(make):
    """A float weight above float32's largest number multiplies a float32 x as Inf, so the value
    of x = 0 (0 for any finite weight: the oracle, as in float64) was NaN (Inf * 0), and so were
    Tikhonov's gradient and TV's prox. They now refuse it naming weight and the dtype; the same
    weight on float64 x gives the value 0."""
    x = torch.zeros(2, 1, 4, 4)
    assert torch.isinf(torch.tensor(1e39, dtype=torch.float32))
    potential = make(1e39)
    with pytest.raises(ValueError, match=r"weight = 1e\+39 overflows torch.float32"):
        potential.value(x)
    if not potential.smooth:
        with pytest.raises(ValueError, match="weight = 1e"):
            potential.prox(x, 1.0)
    if isinstance(potential, SquaredError):
        potential = make(1e39)
        potential.target = potential.target.double()
    assert potential.value(x.double()).tolist() == [0.0, 0.0]


def test_a_box_bound_beyond_the_dtype_clamps_as_without_it():
    """Box(0, 1e300) and TV(box=(0, 1e300)) on float32 failed inside torch with 'value cannot be
    converted to type float without overflow' in the prox (clamp refuses a bound its dtype cannot
    hold). Oracle: clamp(min=0) for the Box, and the TV prox of the same images in float64."""
    x = images(b=2, c=1, h=8, w=8, seed=10) - 0.5
    torch.testing.assert_close(Box(0.0, 1e300).prox(x.float(), 1.0), x.float().clamp(min=0), rtol=0, atol=0)
    tv32 = TV(0.1, box=(0.0, 1e300), max_inner=50, tol=0).prox(x.float(), 1.0)
    tv64 = TV(0.1, box=(0.0, 1e300), max_inner=50, tol=0).prox(x, 1.0)
    torch.testing.assert_close(tv32.double(), tv64, rtol=0, atol=1e-5)
