import math
import numpy as np
import pytest
import torch
from deepinv.physics import GaussianNoise, LinearPhysics

from liftinv.classical import adjoint, fbp, tikhonov, tv_reconstruction, wiener, zero_filled
from liftinv.data import shepp_logan
from liftinv.metrics import psnr
from liftinv.tv import pdhg_tv
from operators.blur import Blur
from operators.kernels import gaussian_kernel
from operators.masks import random_mask
from operators.mri import MRI
from operators.radon import Radon


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def dense_matrix(physics, shape):
    """Matrix of physics.A on images of ``shape`` (C, H, W), column by column."""
    n = int(np.prod(shape))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    return physics.A(basis).reshape(n, -1).T


def dense_tikhonov(mat, y, lam):
    lhs = mat.T @ mat + lam * torch.eye(mat.shape[1], dtype=mat.dtype)
    return torch.linalg.solve(lhs, mat.T @ y.flatten(1).T).T


def test_tikhonov_cg_matches_dense_solve_on_random_matrix():
    shape = (1, 5, 7)
    mat = torch.randn(20, 35, dtype=torch.float64, generator=gen(1))
    phys = LinearPhysics(A=lambda x: x.flatten(1) @ mat.T, A_adjoint=lambda y: (y @ mat).reshape(y.shape[0], *shape))
    y = torch.randn(3, 20, dtype=torch.float64, generator=gen(2))
    for lam in (1e-2, 1.0):
        x = tikhonov(y, phys, lam, n_iter=500, tol=1e-13)
        torch.testing.assert_close(x.flatten(1), dense_tikhonov(mat, y, lam), rtol=1e-9, atol=1e-10)


def test_tikhonov_cg_matches_dense_solve_on_reflect_blur():
    shape = (1, 9, 11)
    blur = Blur(gaussian_kernel(1.2, 5), boundary="reflect", dtype=torch.float64)
    mat = dense_matrix(blur, shape)
    y = torch.rand(2, *shape, dtype=torch.float64, generator=gen(3))
    x = tikhonov(y, blur, 0.05, n_iter=500, tol=1e-13)
    torch.testing.assert_close(x.flatten(1), dense_tikhonov(mat, y, 0.05), rtol=1e-9, atol=1e-10)


def test_tikhonov_warm_start_and_zero_lambda_least_squares():
    shape = (1, 4, 4)
    mat = torch.randn(30, 16, dtype=torch.float64, generator=gen(4))  # overdetermined, full column rank
    phys = LinearPhysics(A=lambda x: x.flatten(1) @ mat.T, A_adjoint=lambda y: (y @ mat).reshape(y.shape[0], *shape))
    y = torch.randn(2, 30, dtype=torch.float64, generator=gen(5))
    lstsq = torch.linalg.lstsq(mat, y.T).solution.T
    x = tikhonov(y, phys, 0.0, n_iter=200, tol=1e-13, x0=torch.ones(2, *shape, dtype=torch.float64))
    torch.testing.assert_close(x.flatten(1), lstsq, rtol=1e-9, atol=1e-10)


def test_tikhonov_zero_measurement_sample_stays_zero_while_the_others_converge():
    """Per-sample CG: a sample with y = 0 (A^*y = 0, zero residual, zero curvature p^T A^*A p)
    returns x = 0 without NaN, and does not stop the other samples, which reach the dense solve
    of (A^T A + lam I) x = A^T y."""
    shape = (1, 4, 5)
    mat = torch.randn(15, 20, dtype=torch.float64, generator=gen(11))
    phys = LinearPhysics(A=lambda x: x.flatten(1) @ mat.T, A_adjoint=lambda y: (y @ mat).reshape(y.shape[0], *shape))
    y = torch.randn(3, 15, dtype=torch.float64, generator=gen(12))
    y[1] = 0
    x = tikhonov(y, phys, 0.1, n_iter=300, tol=1e-13)
    assert torch.equal(x[1], torch.zeros(shape, dtype=torch.float64))
    torch.testing.assert_close(x.flatten(1), dense_tikhonov(mat, y, 0.1), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tikhonov_sample_result_does_not_depend_on_the_batch(dtype):
    """A sample that meets its tolerance keeps its iterate while the others go on: CG iterated the
    whole batch until every sample had converged, so an easy sample (a constant image) batched
    with an ill-conditioned one came out 10 % (of its size) off the same sample solved alone.
    Oracle: each sample solved alone, with the same tolerance."""
    blur = Blur(torch.rand(5, 5, dtype=dtype, generator=gen(41)) + 0.05, boundary="reflect", dtype=dtype)
    y = blur.A(torch.rand(2, 1, 16, 16, dtype=dtype, generator=gen(42)))
    y[1] = 1e-3
    both = tikhonov(y, blur, 1e-3, n_iter=300, tol=1e-5)
    for i in range(2):
        alone = tikhonov(y[i : i + 1], blur, 1e-3, n_iter=300, tol=1e-5)
        torch.testing.assert_close(both[i : i + 1], alone, rtol=0, atol=1e-6 * float(alone.abs().max()))


def test_tikhonov_stops_on_a_warm_started_sample_with_zero_measurements():
    """A sample with y = 0 started from x0 != 0: its solution is 0, but the stopping test
    |r| <= tol |A^*y| asked for a residual of exactly 0, so it ran until the residual underflowed
    (275 CG iterations where the other sample stops after 18, float64). Such a sample now stops at
    tol times its start's residual. Oracle: the minimiser 0, reached to tol (|A|^2 + lam) / lam
    |x0|, in as many iterations as the other sample solved alone; the other sample bit for bit
    that of its own solve."""
    blur = Blur(gaussian_kernel(1.0, 5, dtype=torch.float64), boundary="reflect", dtype=torch.float64)
    calls = []
    phys = LinearPhysics(A=lambda x: calls.append(1) or blur.A(x), A_adjoint=blur.A_adjoint)
    x0 = torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen(51))
    y = blur.A(torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen(52)))
    y[1] = 0
    lam, tol = 0.1, 1e-6
    alone = tikhonov(y[:1], phys, lam, n_iter=3000, tol=tol, x0=x0[:1])
    n_alone = len(calls)
    calls.clear()
    x = tikhonov(y, phys, lam, n_iter=3000, tol=tol, x0=x0)
    assert len(calls) <= n_alone
    assert torch.equal(x[:1], alone)
    assert x[1].norm() <= tol * (1 + lam) / lam * x0[1].norm()


def test_tv_reconstruction_is_pdhg_tv_with_the_same_arguments():
    """tv_reconstruction returns pdhg_tv's x for the same weight, box, n_iter, tol and x0 (here a
    run that stops by tol from a given start)."""
    shape = (1, 6, 5)
    mat = torch.randn(20, 30, dtype=torch.float64, generator=gen(13)) / 20**0.5
    phys = LinearPhysics(A=lambda x: x.flatten(1) @ mat.T, A_adjoint=lambda y: (y @ mat).reshape(y.shape[0], *shape))
    y = phys.A(torch.rand(2, *shape, dtype=torch.float64, generator=gen(14)))
    x0 = torch.full((2, *shape), 0.5, dtype=torch.float64)
    kwargs = dict(box=(0.1, 0.7), n_iter=400, tol=1e-3, x0=x0)
    expected, hist = pdhg_tv(phys, y, 0.05, **kwargs)
    assert hist.converged and hist.n_iter < 400
    assert not torch.equal(expected, pdhg_tv(phys, y, 0.05, **{**kwargs, "x0": None})[0])
    assert torch.equal(tv_reconstruction(y, phys, 0.05, **kwargs), expected)


def test_wiener_equals_tikhonov_and_dense_on_circular_blur():
    shape = (2, 9, 12)
    kernel = torch.rand(2, 3, 5, dtype=torch.float64, generator=gen(6))  # per-channel, asymmetric
    blur = Blur(kernel, boundary="circular", dtype=torch.float64)
    y = torch.rand(2, *shape, dtype=torch.float64, generator=gen(7))
    lam = 0.03
    x = wiener(y, blur, lam)
    torch.testing.assert_close(x.flatten(1), dense_tikhonov(dense_matrix(blur, shape), y, lam), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(x, tikhonov(y, blur, lam, n_iter=500, tol=1e-13), rtol=1e-8, atol=1e-9)


def test_numpy_scalar_lambda_is_accepted():
    """lam as a NumPy float32 scalar (an entry of a NumPy grid of weights) was refused as 'must be
    a finite number >= 0'; liftinv.reconstruction's Tikhonov and Wiener accepted it."""
    shape = (1, 5, 6)
    blur = Blur(torch.rand(3, 3, dtype=torch.float64, generator=gen(8)), dtype=torch.float64)
    y = torch.rand(1, *shape, dtype=torch.float64, generator=gen(9))
    expected = dense_tikhonov(dense_matrix(blur, shape), y, 0.25)  # 0.25 is exact in float32
    torch.testing.assert_close(tikhonov(y, blur, np.float32(0.25), n_iter=300, tol=1e-13).flatten(1), expected)
    torch.testing.assert_close(wiener(y, blur, np.float32(0.25)).flatten(1), expected)


@pytest.mark.parametrize("y, error, message", [
    (torch.rand(2, 2, 8, 8, dtype=torch.float64), ValueError, r"y must have 1 channels \(dim 1\), got shape \(2, 2, 8, 8\)"),
    (torch.rand(2, 1, 8, 9, dtype=torch.float64), ValueError, r"y must have spatial size \(8, 8\), got shape \(2, 1, 8, 9\)"),
    (torch.rand(2, 1, 8, 8), TypeError, r"y has dtype torch.float32 but the operator uses torch.float64"),
])
def test_wiener_refuses_measurements_the_blur_does_not_take_as_tikhonov_does(y, error, message):
    """y of another channel count, size or dtype than the blur's was refused through the impulse
    response built like it, as 'x must have 1 channels (dim 1), got shape (1, 2, 8, 8)': an
    argument wiener does not have, and not y's shape. Oracle: tikhonov's refusal (the blur's
    A^* applied to y), the same message."""
    blur = Blur(gaussian_kernel(1.0, 3), img_size=(1, 8, 8), boundary="circular", dtype=torch.float64)
    with pytest.raises(error, match=f"^{message}$"):
        tikhonov(y, blur, 0.1)
    with pytest.raises(error, match=f"^{message}$"):
        wiener(y, blur, 0.1)


@pytest.mark.parametrize("shape", [(0, 2, 9, 12), (3, 0, 9, 12), (0, 0, 9, 12)])
def test_wiener_of_no_sample_or_no_channel_is_empty(shape):
    """An empty batch (or images with no channel) crashed in the FFT ('MKL FFT error: ...
    Inconsistent configuration parameters'), where adjoint and tikhonov return empty images;
    now wiener returns them too, of y's shape and dtype (oracle: tikhonov's result)."""
    kernel = torch.rand(3, 5, dtype=torch.float64, generator=gen(10))
    blur = Blur(kernel, boundary="circular", dtype=torch.float64)
    y = torch.zeros(shape, dtype=torch.float64)
    x = wiener(y, blur, 0.1)
    expected = tikhonov(y, blur, 0.1)
    assert x.shape == expected.shape == shape and x.dtype == expected.dtype


def test_wiener_refuses_non_circular_blur_and_bad_lambda():
    y = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="circular"):
        wiener(y, Blur(gaussian_kernel(1.0, 3), boundary="reflect", dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="lam"):
        wiener(y, Blur(gaussian_kernel(1.0, 3), boundary="circular", dtype=torch.float64), 0.0)


def test_wiener_refuses_complex_measurements_naming_y():
    """Complex y was refused by the blur applied to the impulse response built in y's dtype, as
    'x must be real', naming an argument wiener does not have. Oracle: Blur.A's refusal of the
    same dtype, which adjoint and tikhonov report as 'y must be real'."""
    blur = Blur(gaussian_kernel(1.0, 3), boundary="circular")
    y = torch.rand(1, 1, 8, 8, dtype=torch.complex64)
    with pytest.raises(TypeError, match="y must be real"):
        adjoint(y, blur)
    with pytest.raises(TypeError, match=r"^y must be real, got dtype torch.complex64$"):
        wiener(y, blur, 0.1)


def test_tv_beats_adjoint_and_best_tikhonov_on_noisy_blurred_phantom():
    x = torch.cat([shepp_logan(33, dtype=torch.float64)] * 2)
    blur = Blur(
        gaussian_kernel(1.5), boundary="circular", dtype=torch.float64,
        noise_model=GaussianNoise(sigma=0.03, rng=gen(8)),
    )
    y = blur(x)
    p_adj = psnr(adjoint(y, blur), x)
    p_tik = torch.stack([psnr(wiener(y, blur, lam), x) for lam in (0.003, 0.01, 0.03, 0.1)]).max(0).values
    p_tv = psnr(tv_reconstruction(y, blur, 0.002, n_iter=300), x)
    assert (p_tv > p_adj + 2).all() and (p_tv > p_tik + 0.5).all()


def test_fbp_and_zero_filled_dispatch():
    x = shepp_logan(17, dtype=torch.float64).repeat(2, 1, 1, 1)
    radon = Radon(17, 40, dtype=torch.float64)
    y = radon.A(x)
    torch.testing.assert_close(fbp(y, radon, "hann"), radon.fbp(y, filter="hann"))
    with pytest.raises(TypeError, match="radon"):
        fbp(y, Blur(gaussian_kernel(1.0, 3)), "ramp")
    # fully sampled single-coil MRI: zero-filled = inverse FFT = x (orthonormal FFT)
    mri = MRI(torch.ones(15, 13), dtype=torch.float64)
    z = torch.randn(2, 2, 15, 13, dtype=torch.float64, generator=gen(9))
    torch.testing.assert_close(zero_filled(mri.A(z), mri), z)
    # undersampled: A^* y is the inverse FFT of the zero-filled k-space
    mask = random_mask((15, 13), 3.0, generator=gen(10))
    mri = MRI(mask, dtype=torch.float64)
    full = MRI(torch.ones(15, 13), dtype=torch.float64)
    torch.testing.assert_close(zero_filled(mri.A(z), mri), full.A_adjoint(mask * full.A(z)))
    with pytest.raises(TypeError, match="mri"):
        zero_filled(y, radon)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"lam": -1.0}, "lam"), ({"lam": float("inf")}, "lam"), ({"lam": 0.1, "n_iter": 0}, "n_iter"), ({"lam": 0.1, "tol": -1.0}, "tol")],
)
def test_tikhonov_bad_parameters(kwargs, match):
    blur = Blur(gaussian_kernel(1.0, 3), dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        tikhonov(torch.rand(2, 1, 6, 6, dtype=torch.float64), blur, **kwargs)


def test_bad_measurements_and_x0():
    blur = Blur(gaussian_kernel(1.0, 3), dtype=torch.float64)
    with pytest.raises(ValueError, match="y"):
        adjoint(torch.full((2, 1, 5, 5), float("nan"), dtype=torch.float64), blur)
    with pytest.raises(ValueError, match="x0"):
        tikhonov(torch.rand(2, 1, 6, 6, dtype=torch.float64), blur, 0.1, x0=torch.zeros(2, 1, 5, 6, dtype=torch.float64))
    with pytest.raises(TypeError, match="x0"):
        tikhonov(torch.rand(2, 1, 6, 6, dtype=torch.float64), blur, 0.1, x0=torch.zeros(2, 1, 6, 6))


@pytest.mark.parametrize("x0", [None, "given"])
def test_tikhonov_of_complex_mri_data_equals_the_real_layout(x0):
    """Complex k-space (MRI's complex (B, 1, H, W) layout): CG took u * v for the inner product,
    not Re(conj(u) v), so its step lengths were complex and the stopping test failed ("le_cpu not
    implemented for 'ComplexDouble'"). Oracle: the same solve on the real (B, 2, H, W) layout, and
    the normal equations (A*A + lam I) x = A*y."""
    g = torch.Generator().manual_seed(0)
    mri = MRI(random_mask((8, 8), 3.0, generator=g).double(), dtype=torch.float64)
    x = torch.randn(2, 1, 8, 8, dtype=torch.complex128, generator=g)
    y = mri.A(x)
    start = None if x0 is None else torch.randn(x.shape, dtype=x.dtype, generator=g)
    real = lambda z: torch.view_as_real(z[:, 0]).permute(0, 3, 1, 2)  # noqa: E731
    xc = tikhonov(y, mri, 0.1, n_iter=100, tol=1e-12, x0=start)
    xr = tikhonov(real(y), mri, 0.1, n_iter=100, tol=1e-12, x0=None if start is None else real(start))
    assert xc.dtype == torch.complex128
    torch.testing.assert_close(real(xc), xr, rtol=0, atol=1e-10)
    torch.testing.assert_close(mri.A_adjoint(mri.A(xc)) + 0.1 * xc, mri.A_adjoint(y), rtol=0, atol=1e-10)


@pytest.mark.parametrize("solve", ["tikhonov", "pdhg_tv"])
def test_iterations_read_the_host_once_each(host_reads, solve):
    """Each CG / PDHG iteration reads the device once (its stopping test; a device sync on a GPU):
    y and x0 are scanned for NaN/Inf on entry, and the iterates go through A and A^* unscanned
    (values_trusted), as in the network layers. The operators' own scans made it three reads per
    iteration. Oracle: the count of host reads (tol = 0: no early stop) for 4 and 9 iterations."""
    blur = Blur(gaussian_kernel(0.7, 3, dtype=torch.float64), boundary="zero", dtype=torch.float64)
    y = blur.A(torch.rand(2, 1, 7, 8, dtype=torch.float64, generator=gen(31)))
    run = {"tikhonov": lambda n: tikhonov(y, blur, 0.1, n_iter=n, tol=0.0),
           "pdhg_tv": lambda n: pdhg_tv(blur, y, 0.05, n_iter=n, tol=0.0)}[solve]
    run(1)  # the operator norm is cached
    counts = []
    for n in (4, 9):
        with host_reads() as reads:
            run(n)
        counts.append(len(reads))
    assert counts[1] - counts[0] == 5
    y[0, 0, 1, 2] = math.nan
    with pytest.raises(ValueError, match="y contains NaN"):  # the entry scan stays
        run(4)
