"""Blur operator and blur kernels: scipy/deepinv oracles, adjoint, operator norm, bad input."""
from __future__ import annotations

import math

import deepinv as dinv
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from operators.blur import BOUNDARIES, Blur
from operators.checks import adjoint_error, opnorm
from operators.kernels import disk_kernel, gaussian_kernel, motion_kernel

#: scipy.ndimage mode reproducing each boundary (torch "reflect" skips the edge = scipy "mirror").
SCIPY_MODE = {"circular": "wrap", "reflect": "mirror", "replicate": "nearest", "zero": "constant"}
KERNEL_SHAPES = [(3, 5), (4, 6), (1, 2), (3, 3, 5)]  # odd, even, degenerate, one per channel


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scipy_blur(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> np.ndarray:
    """Reference: scipy.ndimage.convolve per image and channel (same centre for all sizes)."""
    k = kernel if kernel.ndim == 3 else kernel.expand(x.shape[1], *kernel.shape)
    return np.stack(
        [[ndi.convolve(img[c].numpy(), k[c].numpy(), mode=mode, cval=0.0) for c in range(x.shape[1])] for img in x]
    )


def _dense(op: Blur, shape: tuple[int, ...], adjoint: bool = False) -> torch.Tensor:
    """Matrix of ``A`` (or ``A_adjoint``) by applying it to the canonical basis."""
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    apply = op.A_adjoint if adjoint else op.A
    return torch.stack([apply(e[None]).flatten() for e in basis], dim=1)


# ---------------------------------------------------------------- kernels


@pytest.mark.parametrize(
    "kernel",
    [gaussian_kernel(1.3), gaussian_kernel((0.7, 2.0), size=(5, 9)), motion_kernel(5.5, 30), motion_kernel(0, 0), disk_kernel(2.5)],
)
def test_kernels_are_normalised_nonnegative_odd(kernel):
    assert kernel.dtype == torch.float64 and kernel.ndim == 2
    assert all(n % 2 == 1 for n in kernel.shape)
    assert (kernel >= 0).all()
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_gaussian_kernel_matches_formula():
    sigma_y, sigma_x = 0.9, 1.6
    k = gaussian_kernel((sigma_y, sigma_x), dtype=torch.float32)
    assert k.shape == (2 * math.ceil(3 * sigma_y) + 1, 2 * math.ceil(3 * sigma_x) + 1) and k.dtype == torch.float32
    i, j = np.mgrid[: k.shape[0], : k.shape[1]]
    ref = np.exp(-((i - k.shape[0] // 2) ** 2) / (2 * sigma_y**2) - (j - k.shape[1] // 2) ** 2 / (2 * sigma_x**2))
    np.testing.assert_allclose(k.numpy(), ref / ref.sum(), rtol=1e-5, atol=1e-8)


def test_motion_kernel_geometry():
    np.testing.assert_array_equal(motion_kernel(0, 17).numpy(), np.ones((1, 1)))
    horizontal = motion_kernel(4, 0)
    assert horizontal.shape == (5, 5)
    np.testing.assert_allclose(horizontal[2].numpy(), np.full(5, 0.2), atol=1e-15)
    assert horizontal.sum(1)[[0, 1, 3, 4]].abs().max() == 0
    vertical = motion_kernel(6, 90)
    assert vertical.shape == (7, 7)
    torch.testing.assert_close(vertical, motion_kernel(6, 0).T)
    torch.testing.assert_close(motion_kernel(6, 180 + 37), motion_kernel(6, 37))
    # Centred (zero first moment) and elongated along (-sin, cos) in (row, col) coordinates.
    angle = 30.0
    k = motion_kernel(9, angle)
    r, c = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) - n // 2 for n in k.shape), indexing="ij")
    assert abs((k * r).sum()) < 1e-12 and abs((k * c).sum()) < 1e-12
    cov = torch.stack([torch.stack([(k * a * b).sum() for b in (r, c)]) for a in (r, c)])
    principal = torch.linalg.eigh(cov).eigenvectors[:, -1]
    expected = torch.tensor([-math.sin(math.radians(angle)), math.cos(math.radians(angle))], dtype=torch.float64)
    assert abs(principal @ expected) > 0.999


@pytest.mark.parametrize("length, angle", [(5.0, 0.0), (5.5, 30.0), (3.0, 125.0), (7.2, -60.0)])
def test_motion_kernel_is_the_tent_of_the_distance_to_the_segment(length, angle):
    r""":math:`k[p] \propto \max(0, 1 - \operatorname{dist}(p, S))` on a side
    :math:`2\lceil L/2\rceil + 1`; the distance to the segment :math:`S = \{t(-\sin\theta, \cos\theta):
    |t| \le L/2\}` (row, col) is brute-forced over 40001 points of :math:`S`."""
    k = motion_kernel(length, angle)
    side = 2 * math.ceil(length / 2) + 1
    assert k.shape == (side, side)
    theta = math.radians(angle)
    t = np.linspace(-length / 2, length / 2, 40001)
    seg = np.stack([-math.sin(theta) * t, math.cos(theta) * t], 1)
    r, c = np.mgrid[:side, :side] - side // 2
    pts = np.stack([r.ravel(), c.ravel()], 1).astype(np.float64)
    dist = np.sqrt(((pts[:, None, :] - seg[None]) ** 2).sum(-1)).min(1).reshape(side, side)
    ref = np.clip(1 - dist, 0, None)
    np.testing.assert_allclose(k.numpy(), ref / ref.sum(), rtol=0, atol=1e-4)


def test_disk_kernel_support():
    k = disk_kernel(2.0)
    assert k.shape == (5, 5)
    assert int((k > 0).sum()) == 13  # lattice points with i^2 + j^2 <= 4
    assert torch.allclose(k[k > 0], torch.full((13,), 1 / 13, dtype=torch.float64))
    np.testing.assert_array_equal(disk_kernel(0.5).numpy(), np.ones((1, 1)))


@pytest.mark.parametrize(
    "call, exc, name",
    [
        (lambda: gaussian_kernel(0.0), ValueError, "sigma"),
        (lambda: gaussian_kernel(float("nan")), ValueError, "sigma"),
        (lambda: gaussian_kernel((1.0, 2.0, 3.0)), ValueError, "sigma"),
        (lambda: gaussian_kernel(1.0, size=4), ValueError, "size"),
        (lambda: gaussian_kernel(1.0, size=0), ValueError, "size"),
        (lambda: gaussian_kernel(1.0, dtype=torch.int64), TypeError, "dtype"),
        (lambda: motion_kernel(-1.0, 0), ValueError, "length"),
        (lambda: motion_kernel(3.0, float("inf")), ValueError, "angle_degrees"),
        (lambda: disk_kernel(-0.5), ValueError, "radius"),
        (lambda: disk_kernel(1.0, dtype=torch.complex64), TypeError, "dtype"),
    ],
)
def test_kernel_bad_arguments(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


# ---------------------------------------------------------------- Blur: oracles


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("use_fft", [False, True])
@pytest.mark.parametrize("kernel_shape", KERNEL_SHAPES)
def test_blur_matches_scipy_convolve(boundary, use_fft, kernel_shape):
    g = _gen(1)
    kernel = torch.rand(kernel_shape, dtype=torch.float64, generator=g)
    x = torch.randn(2, 3, 11, 13, dtype=torch.float64, generator=g)
    op = Blur(kernel, boundary=boundary, use_fft=use_fft, dtype=torch.float64)
    y = op.A(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y.numpy(), _scipy_blur(x, kernel, SCIPY_MODE[boundary]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("use_fft", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("kernel_shape", KERNEL_SHAPES)
def test_blur_adjoint_dot_product(boundary, use_fft, dtype, tol, kernel_shape):
    g = _gen(2)
    op = Blur(torch.rand(kernel_shape, generator=g), boundary=boundary, use_fft=use_fft, dtype=dtype)
    x = torch.randn(3, 3, 11, 13, dtype=dtype, generator=g)
    assert adjoint_error(op, x, generator=g) < tol


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_blur_adjoint_is_autograd_transpose(boundary):
    """A^T y equals the gradient of <A x, y> in x (float64 autograd through pad + conv)."""
    g = _gen(3)
    op = Blur(torch.rand(4, 5, generator=g), boundary=boundary, use_fft=False, dtype=torch.float64)
    x = torch.randn(2, 2, 9, 10, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(2, 2, 9, 10, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad((op.A(x) * y).sum(), x)
    torch.testing.assert_close(op.A_adjoint(y), grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_blur_dense_matrix_transpose_and_norm(boundary):
    """Dense matrices on a tiny image: A_adjoint is exactly A^T; opnorm equals the top singular value."""
    op = Blur(torch.rand(3, 4, generator=_gen(4)), boundary=boundary, dtype=torch.float64)
    shape = (1, 5, 6)
    mat = _dense(op, shape)
    torch.testing.assert_close(_dense(op, shape, adjoint=True), mat.T, rtol=0, atol=1e-12)
    sigma_max = torch.linalg.matrix_norm(mat, ord=2).item()
    assert opnorm(op, (1, *shape), max_iter=2000, rtol=1e-12) == pytest.approx(sigma_max, rel=1e-6)


def test_circular_gaussian_blur_has_unit_norm():
    op = Blur(gaussian_kernel(1.5), img_size=(2, 17, 19), dtype=torch.float64)
    assert opnorm(op) == pytest.approx(1.0, rel=1e-6)  # non-negative kernel with sum 1: DC gain 1


@pytest.mark.parametrize("kernel_shape", [(5, 3), (4, 6), (3, 5, 3)])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_circular_blur_matches_deepinv_blurfft(kernel_shape, dtype, tol):
    g = _gen(5)
    kernel = torch.rand(kernel_shape, dtype=dtype, generator=g)
    x = torch.randn(2, 3, 11, 12, dtype=dtype, generator=g)
    ours = Blur(kernel, boundary="circular", dtype=dtype)
    filt = kernel[None] if kernel.ndim == 3 else kernel[None, None]
    ref = dinv.physics.BlurFFT(img_size=(3, 11, 12), filter=filt)
    torch.testing.assert_close(ours.A(x), ref.A(x), rtol=0, atol=tol)
    torch.testing.assert_close(ours.A_adjoint(x), ref.A_adjoint(x), rtol=0, atol=tol)


@pytest.mark.parametrize("boundary, padding", [("reflect", "reflect"), ("replicate", "replicate"), ("zero", "constant")])
def test_padded_blur_matches_deepinv_blur(boundary, padding):
    g = _gen(6)
    kernel = torch.rand(5, 3, dtype=torch.float64, generator=g)
    x = torch.randn(2, 3, 11, 12, dtype=torch.float64, generator=g)
    ours = Blur(kernel, boundary=boundary, dtype=torch.float64)
    ref = dinv.physics.Blur(filter=kernel[None, None], padding=padding)
    torch.testing.assert_close(ours.A(x), ref.A(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.A_adjoint(x), ref.A_adjoint(x), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- Blur: deepinv integration


def test_blur_noise_model_and_deepinv_data_fidelity():
    g = _gen(7)
    op = Blur(gaussian_kernel(1.0), boundary="reflect", noise_model=dinv.physics.GaussianNoise(sigma=0.1), dtype=torch.float64)
    x = torch.rand(4, 1, 31, 33, dtype=torch.float64, generator=g)
    noise = op(x) - op.A(x)
    assert noise.std().item() == pytest.approx(0.1, rel=0.05)
    y = op.A(x)
    z = torch.rand_like(x)
    grad = dinv.optim.data_fidelity.L2().grad(z, y, op)
    torch.testing.assert_close(grad, op.A_adjoint(op.A(z) - y))


def test_blur_works_with_deepinv_least_squares_prox():
    """deepinv's iterative prox_l2 (lsqr through our A and A_adjoint) meets its optimality condition
    A^T (A z - y) + (z - u) / gamma = 0."""
    g = _gen(9)
    op = Blur(gaussian_kernel(1.0), boundary="replicate", dtype=torch.float64)
    y = op.A(torch.rand(2, 1, 15, 17, dtype=torch.float64, generator=g))
    u = torch.rand(2, 1, 15, 17, dtype=torch.float64, generator=g)
    z = op.prox_l2(u, y, gamma=0.5)
    residual = op.A_adjoint(op.A(z) - y) + (z - u) / 0.5
    assert residual.norm() < 1e-3 * u.norm()


def test_blur_update_kernel_refreshes_cached_spectrum():
    g = _gen(8)
    x = torch.randn(2, 1, 9, 9, dtype=torch.float64, generator=g)
    op = Blur(torch.rand(3, 3, generator=g), boundary="zero", use_fft=True, dtype=torch.float64)
    op.A(x)
    new = torch.rand(5, 5, generator=g)
    op.update(kernel=new)
    torch.testing.assert_close(op.A(x), Blur(new, boundary="zero", dtype=torch.float64).A(x))


@pytest.mark.parametrize("use_fft", [False, True])
def test_blur_kernel_edited_in_place_or_replaced_gives_the_new_operator(use_fft):
    """The kernel buffer edited in place (under ``torch.no_grad``) or assigned as an attribute
    gives the A and the norm of a Blur built from the new kernel, not the spectrum and norm
    cached for the old one: circular boundary, norm = max |DFT of the kernel on the image grid|
    (doubled kernel: twice the norm)."""
    g = _gen(10)
    x = torch.randn(2, 1, 9, 8, dtype=torch.float64, generator=g)
    kernel = torch.rand(3, 3, generator=g, dtype=torch.float64)
    op = Blur(kernel, boundary="circular", use_fft=use_fft, dtype=torch.float64)

    def closed_form(k):
        return float(torch.fft.fft2(k, s=(9, 8)).abs().max())

    for change in (lambda: op.kernel.mul_(2), lambda: setattr(op, "kernel", op.kernel.flip(-1) / 4)):
        op.A(x), opnorm(op, (1, 1, 9, 8))
        with torch.no_grad():
            change()
        fresh = Blur(op.kernel[0].clone(), boundary="circular", use_fft=use_fft, dtype=torch.float64)
        torch.testing.assert_close(op.A(x), fresh.A(x), rtol=0, atol=1e-12)
        torch.testing.assert_close(op.A_adjoint(x), fresh.A_adjoint(x), rtol=0, atol=1e-12)
        assert opnorm(op, (1, 1, 9, 8)) == pytest.approx(closed_form(op.kernel[0]), rel=1e-9)


@pytest.mark.parametrize("use_fft", [False, True])
def test_blur_load_state_dict_takes_the_loaded_kernel(use_fft):
    """``load_state_dict`` from a Blur with another kernel of the same shape gives that operator's
    A and norm, not the spectrum or norm cached for the old kernel."""
    g = _gen(9)
    x = torch.randn(2, 1, 9, 9, dtype=torch.float64, generator=g)
    op, other = (Blur(torch.rand(3, 3, generator=g), boundary="zero", use_fft=use_fft, dtype=torch.float64) for _ in range(2))
    op.A(x), opnorm(op, (1, 1, 9, 9))
    op.load_state_dict(other.state_dict())
    torch.testing.assert_close(op.A(x), other.A(x), rtol=0, atol=1e-12)
    assert opnorm(op, (1, 1, 9, 9)) == pytest.approx(opnorm(other, (1, 1, 9, 9)), rel=1e-10)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("use_fft", [False, True])
def test_kernel_as_large_as_the_image_is_allowed(boundary, use_fft):
    """A kernel of the image's own size fits (``h <= H``, ``w <= W``) and still matches scipy."""
    g = _gen(30)
    kernel = torch.rand(5, 6, dtype=torch.float64, generator=g)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=g)
    for op in (Blur(kernel, boundary=boundary, use_fft=use_fft, dtype=torch.float64),
               Blur(kernel, img_size=(2, 5, 6), boundary=boundary, use_fft=use_fft, dtype=torch.float64)):
        np.testing.assert_allclose(op.A(x).numpy(), _scipy_blur(x, kernel, SCIPY_MODE[boundary]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_fft_blur_on_images_of_several_sizes(boundary):
    """One operator without ``img_size`` applied to images of different sizes uses a spectrum on
    each image's grid: A matches scipy and A_adjoint the dense transpose for every size."""
    g = _gen(31)
    kernel = torch.rand(3, 4, dtype=torch.float64, generator=g)
    op = Blur(kernel, boundary=boundary, use_fft=True, dtype=torch.float64)
    for shape in [(1, 1, 9, 10), (2, 1, 12, 7), (1, 1, 9, 10)]:
        x = torch.randn(shape, dtype=torch.float64, generator=g)
        np.testing.assert_allclose(op.A(x).numpy(), _scipy_blur(x, kernel, SCIPY_MODE[boundary]), rtol=0, atol=1e-12)
        mat = _dense(op, (1, *shape[2:]))
        torch.testing.assert_close(_dense(op, (1, *shape[2:]), adjoint=True), mat.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("use_fft", [False, True])
@pytest.mark.parametrize("batch", [0, 2])
def test_blur_of_images_without_channels_is_empty(boundary, use_fft, batch):
    """Images with no channel (a one-channel kernel fits any count) map to no channel, as the
    matrix of A, with C = 0 rows and columns, says, and the gradient through them is empty (grouped
    convolutions and FFTs refuse empty axes: 'non-positive groups is not supported', an MKL
    'Inconsistent configuration parameters' or 'Expected 3D or 4D ... tensor', naming nothing)."""
    op = Blur(torch.rand(3, 4, generator=_gen(32)), boundary=boundary, use_fft=use_fft, dtype=torch.float64)
    x = torch.zeros(batch, 0, 9, 10, dtype=torch.float64, requires_grad=True)
    for apply in (op.A, op.A_adjoint):
        out = apply(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.shape == x.shape
    with pytest.raises(ValueError, match=r"^kernel has 2 channels but the image has 0$"):
        Blur(torch.rand(2, 3, 4, generator=_gen(32)), boundary=boundary, use_fft=use_fft).A(torch.zeros(1, 0, 9, 10))


def test_use_fft_default_threshold():
    """Automatic choice: FFT for circular, else only when h w > FFT_MIN_KERNEL_AREA = 256."""
    assert not Blur(torch.ones(16, 16), boundary="zero").use_fft  # 256 entries: direct
    assert Blur(torch.ones(1, 257), boundary="reflect").use_fft
    assert Blur(torch.ones(1, 1), boundary="circular").use_fft
    assert not Blur(torch.ones(3, 3), boundary="circular", use_fft=False).use_fft


# ---------------------------------------------------------------- Blur: bad input


@pytest.mark.parametrize(
    "build, exc, name",
    [
        (lambda: Blur(torch.ones(3, 3), boundary="periodic"), ValueError, "boundary"),
        (lambda: Blur(torch.ones(3, 3), dtype=torch.int32), TypeError, "dtype"),
        (lambda: Blur(torch.ones(3, 3), dtype=torch.float16), TypeError, "dtype"),  # the FFT has no half precision
        (lambda: opnorm(Blur(torch.ones(3, 3))), ValueError, "x_shape is needed: Blur has no img_size"),
        (lambda: Blur(torch.ones(3), boundary="zero"), ValueError, "kernel"),
        (lambda: Blur(torch.ones(1, 1, 3, 3)), ValueError, "kernel"),
        (lambda: Blur(torch.tensor([[1.0, float("nan")]])), ValueError, "kernel"),
        (lambda: Blur(torch.ones(3, 3, dtype=torch.int64)), TypeError, "kernel"),
        (lambda: Blur(torch.ones(3, 3), img_size=(1, 2, 9)), ValueError, "kernel"),
        (lambda: Blur(torch.ones(2, 3, 3), img_size=(3, 9, 9)), ValueError, "kernel"),
        (lambda: Blur(torch.ones(3, 3), img_size=(9, 9)), ValueError, "img_size"),
        (lambda: Blur(torch.ones(3, 3), img_size=9), ValueError, r"img_size must be \(C, H, W\) .*got 9"),  # was len()'s
        (lambda: Blur(torch.ones(3, 3), use_fft="yes"), TypeError, "use_fft"),
    ],
)
def test_blur_bad_construction(build, exc, name):
    with pytest.raises(exc, match=name):
        build()


def _bad_inputs():
    x = torch.randn(2, 3, 9, 10)
    nan, inf = x.clone(), x.clone()
    nan[0, 0, 0, 0], inf[1, 2, 3, 4] = float("nan"), float("inf")
    return [
        (nan, ValueError, "NaN"),
        (inf, ValueError, "Inf"),
        (x[0], ValueError, "dimensions"),
        (x[:, :2], ValueError, "channels"),
        (x[..., :8], ValueError, "spatial"),
        (x.double(), TypeError, "dtype"),
        (torch.complex(x, x), TypeError, "complex|dtype"),
        (torch.empty(2, 3, 9, 10, device="meta"), TypeError, "meta"),
        (x.numpy(), TypeError, "Tensor"),
    ]


@pytest.mark.parametrize("bad, exc, what", _bad_inputs())
@pytest.mark.parametrize("method, name", [("A", "x"), ("A_adjoint", "y")])
def test_blur_bad_inputs(bad, exc, what, method, name):
    op = Blur(torch.ones(3, 3) / 9, img_size=(3, 9, 10), boundary="reflect")
    with pytest.raises(exc, match=f"^{name} .*({what})"):
        getattr(op, method)(bad)


def test_blur_kernel_larger_than_image_at_call():
    op = Blur(torch.ones(5, 3) / 15)
    with pytest.raises(ValueError, match="kernel"):
        op.A(torch.zeros(1, 1, 4, 9))
    with pytest.raises(ValueError, match="kernel"):
        Blur(torch.ones(2, 3, 3)).A(torch.zeros(1, 3, 9, 9))


@pytest.mark.parametrize(
    "bad, exc",
    [
        ([[1.0]], TypeError),
        (torch.full((1, 1, 3, 3), float("nan")), ValueError),
        (torch.ones(1, 1, 3, 3, dtype=torch.complex64), ValueError),
        (torch.ones(1, 1, 3, 3, dtype=torch.int64), TypeError),
        (torch.ones(1, 1, 0, 3), ValueError),
    ],
)
def test_blur_bad_filter_is_refused_by_its_name(bad, exc):
    """A bad kernel passed as deepinv's ``filter`` is refused naming ``filter`` (not ``kernel``,
    which the caller did not pass; a list used to raise an AttributeError)."""
    with pytest.raises(exc, match="^filter "):
        Blur(torch.ones(3, 3)).update(filter=bad)


@pytest.mark.parametrize("bad", [torch.ones(1, 1, 9, 3), torch.ones(1, 2, 3, 3)])
def test_blur_filter_that_does_not_fit_img_size_is_refused_by_its_name(bad):
    """A filter larger than ``img_size`` or with a channel count other than 1 or ``C`` (as a blur
    generator built for another image may draw) is refused naming ``filter``, not ``kernel``."""
    with pytest.raises(ValueError, match=r"^filter (of spatial size \(9, 3\) is larger than the image \(8, 8\)|has 2 channels but the image has 3)$"):
        Blur(torch.ones(3, 3), img_size=(3, 8, 8)).update(filter=bad)


def test_blur_takes_deepinv_filter_parameter():
    """deepinv's name for the kernel, ``filter``, drawn ``(B, C, h, w)`` by its blur generators
    and passed as ``physics(x, filter=...)``: one kernel, or the same kernel for every sample;
    different kernels per sample, or both names, are refused."""
    g = _gen(9)
    x = torch.randn(2, 1, 12, 12, dtype=torch.float64, generator=g)
    op = Blur(torch.rand(3, 3, generator=g), boundary="zero", dtype=torch.float64)
    new = torch.rand(5, 5, generator=g, dtype=torch.float64)
    expected = Blur(new, boundary="zero", dtype=torch.float64).A(x)
    for filt in (new[None, None], new.expand(2, 1, 5, 5)):
        torch.testing.assert_close(op(x, filter=filt), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^filter of shape \(2, 1, 5, 5\) differs along dim 0: a different filter per sample is not supported"):
        op.update(filter=torch.rand(2, 1, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^filter must have at most 1 non-empty leading axes \(sample\)"):
        op.update(filter=new[None, None, None])
    with pytest.raises(ValueError, match="not both"):
        op.update(kernel=new, filter=new)


def test_blur_boundary_cannot_be_assigned_behind_the_cached_norm():
    """The operator norm is cached per shape and dtype, not per boundary: an assignment
    ``op.boundary = "zero"`` after a circular norm was cached changed A but kept the norm 1.0 (a
    zero-boundary Blur of this kernel has 0.93). The boundary is fixed at construction: an
    assignment is refused, and the operator stays the one it reports. Oracle: a Blur built with the
    reported boundary, and the circular closed form |sum k| = 1 for a normalised kernel."""
    kernel = torch.rand(3, 3, dtype=torch.float64, generator=_gen(5))
    kernel /= kernel.sum()
    op = Blur(kernel, img_size=(1, 8, 8), dtype=torch.float64)
    assert opnorm(op) == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(AttributeError, match="boundary is fixed at construction"):
        op.boundary = "zero"
    assert op.boundary == "circular"
    fresh = Blur(kernel, img_size=(1, 8, 8), boundary=op.boundary, dtype=torch.float64)
    assert opnorm(op) == opnorm(fresh)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=_gen(6))
    assert torch.equal(op.A(x), fresh.A(x))


def test_blur_kernel_given_another_storage_is_noticed():
    """``op.kernel.data = 2 * op.kernel.data`` replaces the kernel's storage without advancing its
    version counter: the cached spectrum and norm stayed those of the old kernel (A unchanged by
    FFT, ||A|| = 1 where it is 2). Oracle: a Blur built from the doubled kernel and the circular
    closed form |sum k| = 2."""
    kernel = torch.rand(3, 3, dtype=torch.float64, generator=_gen(7))
    kernel /= kernel.sum()
    op = Blur(kernel, img_size=(1, 8, 8), dtype=torch.float64)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=_gen(8))
    op.A(x)
    assert opnorm(op) == pytest.approx(1.0, rel=1e-9)
    op.kernel.data = 2 * op.kernel.data
    fresh = Blur(2 * kernel, img_size=(1, 8, 8), dtype=torch.float64)
    assert opnorm(op) == pytest.approx(2.0, rel=1e-9)
    torch.testing.assert_close(op.A(x), fresh.A(x), rtol=1e-12, atol=1e-12)


def test_blur_kernel_assignment_is_validated_as_the_constructor_kernel():
    """``op.kernel = k`` replaced the buffer as it was: a 2-D kernel (the constructor's form) broke
    the direct convolution ('weight of size [1, 3, 1, 3]'), a float32 kernel made a float64 operator
    float32, and a kernel larger than the image of ``img_size`` was cropped by the circular FFT
    (a 6 x 6 kernel on 4 x 4 images), all without an error naming it. Now the assignment is
    ``update_parameters(kernel=k)``. Oracle: a Blur built from the assigned kernel."""
    g = _gen(12)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=g)
    kernel = torch.rand(3, 3, dtype=torch.float32, generator=g)
    for boundary, use_fft in (("circular", True), ("zero", False)):
        op = Blur(torch.ones(1, 1), img_size=(1, 4, 4), boundary=boundary, use_fft=use_fft, dtype=torch.float64)
        op.kernel = kernel
        fresh = Blur(kernel, img_size=(1, 4, 4), boundary=boundary, use_fft=use_fft, dtype=torch.float64)
        assert op.dtype == torch.float64 and op.kernel.shape == (1, 3, 3)
        torch.testing.assert_close(op.A(x), fresh.A(x), rtol=0, atol=0)
        with pytest.raises(ValueError, match=r"kernel of spatial size \(6, 6\) is larger than the image \(4, 4\)"):
            op.kernel = torch.rand(1, 6, 6, dtype=torch.float64, generator=g)
        with pytest.raises(TypeError, match="kernel must be a torch.Tensor"):
            op.kernel = None
        torch.testing.assert_close(op.A(x), fresh.A(x), rtol=0, atol=0)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_blur_kernel_larger_than_a_reassigned_img_size_is_refused(boundary):
    """img_size is deepinv's plain attribute: after ``op.img_size = (1, 2, 2)`` a 3 x 3 kernel was
    applied to 2 x 2 images without an error (the circular FFT cropped the kernel to 2 x 2), where
    a Blur without img_size (the oracle) refuses the same call naming the kernel."""
    op = Blur(torch.rand(3, 3, generator=_gen(14)), img_size=(1, 8, 8), boundary=boundary)
    op.img_size = (1, 2, 2)
    x = torch.rand(1, 1, 2, 2, generator=_gen(15))
    for physics in (op, Blur(op.kernel[0], boundary=boundary)):
        for apply in (physics.A, physics.A_adjoint):
            with pytest.raises(ValueError, match=r"kernel of spatial size \(3, 3\) is larger than the image \(2, 2\)"):
                apply(x)
