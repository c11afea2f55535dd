"""Radon operator: exact adjoint, scikit-image and analytic oracles, FBP quality, bad input."""
from __future__ import annotations

import math

import deepinv as dinv
import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import iradon, radon, resize
from skimage.transform.radon_transform import _get_fourier_filter

from operators.checks import adjoint_error, opnorm
from operators.radon import FILTERS, Radon, fourier_filter
from operators.spec import describe, physics_from_spec, physics_spec

SPARSE = torch.tensor([0.0, 17.5, 45.0, 90.0, 133.0, 179.0])  # sparse-angle, with the 45 and 90 ties
LIMITED = torch.linspace(20.0, 110.0, 31)  # limited-angle: a 90 degree wedge
WRAPPED = torch.tensor([-30.0, 200.0, 405.0])  # angles outside [0, 180)
GEOMETRIES = {"uniform": 11, "sparse": SPARSE, "limited": LIMITED, "wrapped": WRAPPED}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _phantom(n: int, circle: bool, smooth: float = 0.0) -> np.ndarray:
    """Shepp-Logan phantom at n x n (float64), optionally smoothed, zero outside the disc if circle."""
    img = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    if smooth:
        img = gaussian(img, sigma=smooth)
    if circle:
        i, j = np.ogrid[:n, :n]
        img = img * ((i - n // 2) ** 2 + (j - n // 2) ** 2 <= (n // 2) ** 2)
    return img


def _theta(angles) -> np.ndarray:
    return np.linspace(0, 180, angles, endpoint=False) if isinstance(angles, int) else angles.numpy()


def _dense(apply, n_in: int, in_shape: tuple[int, ...]) -> torch.Tensor:
    """Matrix of a linear map: column p is ``apply`` of the p-th unit vector."""
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, *in_shape)
    return apply(eye).reshape(n_in, -1).T


def _psnr(ref: np.ndarray, img: np.ndarray) -> float:
    return peak_signal_noise_ratio(ref, img, data_range=1.0)


# ---------------------------------------------------------------- adjoint and norm


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("circle", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_adjoint_dot_product(geometry, circle, dtype, tol):
    physics = Radon(17, GEOMETRIES[geometry], circle=circle, dtype=dtype)
    x = torch.randn(2, 3, 17, 17, dtype=dtype, generator=_gen())
    assert adjoint_error(physics, x, _gen(1)) < tol


@pytest.mark.parametrize("n_detectors", [7, 40])
def test_adjoint_dot_product_custom_detectors(n_detectors):
    physics = Radon(15, SPARSE, n_detectors=n_detectors, dtype=torch.float64)
    assert physics.A(torch.zeros(1, 1, 15, 15, dtype=torch.float64)).shape == (1, 1, n_detectors, 6)
    x = torch.randn(3, 2, 15, 15, dtype=torch.float64, generator=_gen())
    assert adjoint_error(physics, x, _gen(1)) < 1e-10


@pytest.mark.parametrize("circle", [False, True])
def test_adjoint_is_the_exact_transpose(circle):
    angles = torch.tensor([0.0, 30.0, 45.0, 90.0, 135.0, 160.0])
    physics = Radon(9, angles, circle=circle, dtype=torch.float64)
    n_det, n_ang = physics.sinogram_shape
    forward = _dense(physics.A, 81, (9, 9))
    adjoint = _dense(physics.A_adjoint, n_det * n_ang, (n_det, n_ang))
    torch.testing.assert_close(adjoint, forward.T, rtol=0, atol=0)


def test_opnorm_matches_dense_svd():
    physics = Radon(9, 7, dtype=torch.float64)
    sigma_max = torch.linalg.svdvals(_dense(physics.A, 81, (9, 9)))[0].item()
    assert opnorm(physics) == pytest.approx(sigma_max, rel=1e-3)


def test_gradients_are_the_matched_operators():
    physics = Radon(5, 3, dtype=torch.float64)
    x = torch.randn(2, 1, 5, 5, dtype=torch.float64, generator=_gen(), requires_grad=True)
    y = torch.randn(2, 1, *physics.sinogram_shape, dtype=torch.float64, generator=_gen(1), requires_grad=True)
    assert torch.autograd.gradcheck(physics.A, (x,))
    assert torch.autograd.gradcheck(physics.A_adjoint, (y,), fast_mode=True)
    assert torch.autograd.gradgradcheck(physics.A, (x,), fast_mode=True)


# ---------------------------------------------------------------- forward model oracles


@pytest.mark.parametrize("n", [8, 9, 31])
@pytest.mark.parametrize("circle", [False, True])
def test_default_detectors_match_skimage(n, circle):
    sinogram = radon(np.zeros((n, n)), np.array([0.0, 60.0]), circle=circle)
    assert Radon(n, 2, circle=circle).sinogram_shape == sinogram.shape


def test_axis_angles_are_exact_pixel_sums():
    """At 0 degrees detector d sums column c + s, at 90 degrees row c - s (s = d - n_det // 2)."""
    n, c = 11, 5
    physics = Radon(n, torch.tensor([0.0, 90.0]), dtype=torch.float64)
    x = torch.randn(2, 2, n, n, dtype=torch.float64, generator=_gen())
    y = physics.A(x)
    s = torch.arange(physics.n_detectors) - physics.n_detectors // 2
    inside = (c + s >= 0) & (c + s < n)
    torch.testing.assert_close(y[..., inside, 0], x.sum(-2)[..., (c + s)[inside]], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[..., inside, 1], x.sum(-1)[..., (c - s)[inside]], rtol=1e-12, atol=1e-12)
    assert y[..., ~inside, :].abs().max() < 1e-12  # cos(pi/2) = 6e-17 in floating point


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("circle", [False, True])
def test_forward_matches_skimage_radon(geometry, circle):
    """Joseph's rule and skimage's bilinear samples at unit steps along the ray are two
    discretisations of the same line integrals: on a smooth phantom they differ by about 0.3%
    (measured, N = 31..127); the phantom flipped upside down differs by 15-25%, so 1% separates a
    right geometry from a wrong orientation or angle convention."""
    angles = GEOMETRIES[geometry]
    img = _phantom(31, circle, smooth=1.0)
    ours = Radon(31, angles, circle=circle, dtype=torch.float64).A(torch.from_numpy(img)[None, None])[0, 0]
    ref = radon(img, _theta(angles), circle=circle)
    assert np.linalg.norm(ours.numpy() - ref) / np.linalg.norm(ref) < 1e-2


def test_gaussian_line_integrals_match_closed_form():
    r"""The projection of :math:`\exp(-|z - z_0|^2 / 2\sigma^2)` at angle :math:`\theta` is
    :math:`\sigma\sqrt{2\pi}\exp(-(s - x_0\cos\theta - y_0\sin\theta)^2 / 2\sigma^2)`."""
    n, c, sigma, x0, y0 = 41, 20, 3.0, 4.0, -3.0
    i, j = np.mgrid[:n, :n]
    blob = np.exp(-((j - c - x0) ** 2 + (c - i - y0) ** 2) / (2 * sigma**2))
    angles = torch.tensor([0.0, 30.0, 45.0, 100.0, 150.0])
    physics = Radon(n, angles, dtype=torch.float64)
    ours = physics.A(torch.from_numpy(blob)[None, None])[0, 0].numpy()
    s = np.arange(physics.n_detectors)[:, None] - physics.n_detectors // 2
    theta = np.deg2rad(angles.numpy())
    centre = x0 * np.cos(theta) + y0 * np.sin(theta)
    exact = sigma * math.sqrt(2 * math.pi) * np.exp(-((s - centre) ** 2) / (2 * sigma**2))
    assert np.linalg.norm(ours - exact) / np.linalg.norm(exact) < 1e-2


# ---------------------------------------------------------------- filtered back-projection


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("size", [64, 256])
def test_fourier_filter_is_the_even_part_of_skimage_filter(name, size):
    ref = _get_fourier_filter(size, name)[:, 0]
    even = 0.5 * (ref + np.roll(ref[::-1], 1))
    np.testing.assert_allclose(fourier_filter(size, name).numpy(), even, rtol=0, atol=1e-12)


# (size, circle): padded lengths P = 64 (both), 64 (12 detectors: 2m = 24 < 64), 128 (57
# detectors: 2m = 114 > 64) and 128 (circle, 24 detectors: skimage pads to ceil(sqrt2 24) = 34 rows).
@pytest.mark.parametrize("size, circle", [(21, False), (21, True), (8, False), (40, False), (24, True)])
@pytest.mark.parametrize("name", FILTERS)
def test_fbp_is_scaled_backprojection_of_the_skimage_filtered_sinogram(size, circle, name):
    r"""skimage's filtering step (numpy FFT of the projections zero-padded to
    :math:`P = \max(64, 2^{\lceil\log_2 2m\rceil})` samples times its filter, real part, crop), then
    :math:`\pi / (2 n_{angles}) A^\top`."""
    physics = Radon(size, SPARSE, circle=circle, dtype=torch.float64)
    n_det, n_ang = physics.sinogram_shape
    y = torch.randn(2, 2, n_det, n_ang, dtype=torch.float64, generator=_gen())
    rows = int(np.ceil(np.sqrt(2) * n_det)) if circle else n_det  # skimage pads circle sinograms
    size = max(64, int(2 ** np.ceil(np.log2(2 * rows))))
    padded = np.pad(y.numpy(), ((0, 0), (0, 0), (0, size - n_det), (0, 0)))
    spectrum = np.fft.fft(padded, axis=-2) * _get_fourier_filter(size, name)
    filtered = np.real(np.fft.ifft(spectrum, axis=-2))[..., :n_det, :]
    expected = physics.A_adjoint(torch.from_numpy(filtered)) * (math.pi / (2 * n_ang))
    torch.testing.assert_close(physics.fbp(y, filter=name), expected, rtol=1e-10, atol=1e-10)


def test_fbp_filter_cached_in_inference_mode_serves_autograd():
    r"""The filter matrix first built under ``torch.inference_mode`` can be saved for backward by a
    later call: the gradient of :math:`\langle \mathrm{fbp}(y), u\rangle` equals a fresh operator's."""
    physics, fresh = (Radon(9, SPARSE, dtype=torch.float64) for _ in range(2))
    y = torch.randn(2, 1, *physics.sinogram_shape, dtype=torch.float64, generator=_gen(5))
    u = torch.randn(2, 1, 9, 9, dtype=torch.float64, generator=_gen(6))
    with torch.inference_mode():
        physics.fbp(y)

    def grad(op: Radon) -> torch.Tensor:
        leaf = y.clone().requires_grad_()
        return torch.autograd.grad((op.fbp(leaf) * u).sum(), leaf)[0]

    torch.testing.assert_close(grad(physics), grad(fresh), rtol=0, atol=0)


@pytest.fixture(scope="module")
def shepp_127():
    """Radon at 127 x 127 with 180 angles, the Shepp-Logan phantom and its skimage sinogram."""
    img = _phantom(127, circle=False)
    return Radon(127, 180), img, radon(img, _theta(180), circle=False)


def test_fbp_reconstructs_shepp_logan(shepp_127):
    physics, img, _ = shepp_127
    x = torch.from_numpy(img).float()[None, None].repeat(2, 1, 1, 1)
    rec = physics.fbp(physics.A(x))
    assert rec.shape == x.shape and torch.equal(rec[0], rec[1])
    assert _psnr(img, rec[0, 0].double().numpy()) > 29.0  # 30.7 dB measured; skimage's own: 29.9


@pytest.mark.parametrize("name", FILTERS)
def test_fbp_psnr_within_half_db_of_skimage_iradon(shepp_127, name):
    physics, img, sinogram = shepp_127
    ours = physics.fbp(torch.from_numpy(sinogram).float()[None, None], filter=name)[0, 0].double().numpy()
    ref = iradon(sinogram, _theta(180), output_size=127, filter_name=name, circle=False)
    assert abs(_psnr(img, ours) - _psnr(img, ref)) < 0.5


def test_fbp_circle_psnr_within_half_db_of_skimage_iradon():
    img = _phantom(95, circle=True)
    theta = _theta(120)
    sinogram = radon(img, theta, circle=True)
    physics = Radon(95, 120, circle=True, dtype=torch.float64)
    ours = physics.fbp(torch.from_numpy(sinogram)[None, None])[0, 0].numpy()
    ref = iradon(sinogram, theta, output_size=95, circle=True)
    assert abs(_psnr(img, ours) - _psnr(img, ref)) < 0.5


# ---------------------------------------------------------------- deepinv integration


def test_is_deepinv_linear_physics_with_noise_model():
    noise = dinv.physics.GaussianNoise(sigma=0.5, rng=_gen(3))
    physics = Radon(15, 9, noise_model=noise, dtype=torch.float64)
    assert isinstance(physics, dinv.physics.LinearPhysics)
    assert physics.img_size == (1, 15, 15)
    x = torch.rand(4, 1, 15, 15, dtype=torch.float64, generator=_gen())
    residual = physics(x) - physics.A(x)
    assert residual.std().item() == pytest.approx(0.5, rel=0.1)
    assert torch.equal(Radon(15, 9, dtype=torch.float64)(x), physics.A(x))


def test_module_to_dtype_converts_both_matrices():
    physics = Radon(9, 5).to(torch.float64)
    assert physics.dtype == torch.float64
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64, generator=_gen())
    assert adjoint_error(physics, x, _gen(1)) < 1e-10
    assert physics.fbp(physics.A(x)).dtype == torch.float64



@pytest.mark.parametrize("convert", [lambda m: m.float(), lambda m: m.double(), lambda m: m.double().float()])
def test_module_dtype_conversions_keep_the_float64_angles(convert):
    """The angles are the geometry's record: a dtype conversion of the module (as ``net.float()``
    of a network holding the operator) leaves them float64 and bit for bit k * 180 / 7. They were
    converted with the matrices, so ``float()`` of a float32 operator rounded them, its spec then
    listed 7 odd angles instead of '7', and the operator rebuilt from it differed by 4e-7."""
    physics = Radon(33, 7)
    convert(physics)
    assert physics.angles.dtype == torch.float64
    assert torch.equal(physics.angles, torch.arange(7, dtype=torch.float64) * (180.0 / 7))
    assert describe(physics_spec(physics), ["angles"]) == "Radon(angles=7)"

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.randn(2, 3, 21, 21, dtype=torch.float64, generator=_gen())
    cpu = Radon(21, SPARSE, dtype=torch.float64)
    gpu = Radon(21, SPARSE, dtype=torch.float64, device="cuda")
    y = cpu.A(x)
    torch.testing.assert_close(gpu.A(x.cuda()).cpu(), y)
    torch.testing.assert_close(gpu.A_adjoint(y.cuda()).cpu(), cpu.A_adjoint(y))
    torch.testing.assert_close(gpu.fbp(y.cuda()).cpu(), cpu.fbp(y))
    assert adjoint_error(gpu, x.cuda()) < 1e-10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_update_angles_keeps_the_matrices_on_the_device():
    """New angles rebuild the system matrices on the operator's device, not on the CPU."""
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=_gen()).cuda()
    gpu = Radon(16, 8, dtype=torch.float64, device="cuda")
    gpu.update(angles=SPARSE)
    assert gpu._matrix.device.type == gpu._matrix_t.device.type == "cuda"
    torch.testing.assert_close(gpu.A(x).cpu(), Radon(16, SPARSE, dtype=torch.float64).A(x.cpu()))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"img_size": 1}, ValueError, "img_size"),
        ({"img_size": 0}, ValueError, "img_size"),
        ({"img_size": 8.0}, TypeError, "img_size"),
        ({"img_size": True}, TypeError, "img_size"),
        ({"angles": 0}, ValueError, "angles"),
        ({"angles": -3}, ValueError, "angles"),
        ({"angles": 2.5}, TypeError, "angles"),
        ({"angles": [0.0, 90.0]}, TypeError, "angles"),
        ({"angles": torch.tensor([])}, ValueError, "angles"),
        ({"angles": torch.zeros(2, 3)}, ValueError, "angles"),
        ({"angles": torch.tensor([0.0, float("nan")])}, ValueError, "angles"),
        ({"angles": torch.tensor([float("inf")])}, ValueError, "angles"),
        ({"angles": torch.tensor([1j])}, TypeError, "angles"),
        ({"n_detectors": 0}, ValueError, "n_detectors"),
        ({"n_detectors": 5.0}, TypeError, "n_detectors"),
        ({"circle": 1}, TypeError, "circle"),
        ({"dtype": torch.float16}, TypeError, "dtype"),
        ({"dtype": torch.int32}, TypeError, "dtype"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Radon(**{"img_size": 8, "angles": 4, **kwargs})


@pytest.fixture(scope="module")
def small():
    return Radon(9, 5)


@pytest.mark.parametrize(
    "x, error",
    [
        (torch.zeros(1, 9, 9), ValueError),
        (torch.zeros(1, 1, 9, 10), ValueError),
        (torch.zeros(1, 1, 11, 11), ValueError),
        (torch.full((1, 1, 9, 9), float("nan")), ValueError),
        (torch.full((1, 1, 9, 9), float("inf")), ValueError),
        (torch.zeros(1, 1, 9, 9, dtype=torch.float64), TypeError),
        (torch.zeros(1, 1, 9, 9, dtype=torch.int64), TypeError),
        (torch.zeros(1, 1, 9, 9, dtype=torch.complex64), TypeError),
        (np.zeros((1, 1, 9, 9), dtype=np.float32), TypeError),
    ],
)
def test_forward_rejects_bad_images(small, x, error):
    with pytest.raises(error, match="x"):
        small.A(x)


@pytest.mark.parametrize("method", ["A_adjoint", "fbp"])
@pytest.mark.parametrize(
    "shape, dtype, error",
    [
        ((1, 1, 14, 5), torch.float32, ValueError),  # one detector too many
        ((1, 1, 5, 13), torch.float32, ValueError),  # (n_angles, n_detectors): transposed layout
        ((1, 13, 5), torch.float32, ValueError),
        ((1, 1, 13, 5), torch.float64, TypeError),
    ],
)
def test_sinogram_input_is_validated(small, method, shape, dtype, error):
    with pytest.raises(error, match="y"):
        getattr(small, method)(torch.zeros(shape, dtype=dtype))


@pytest.mark.parametrize("method", ["A_adjoint", "fbp"])
def test_sinogram_rejects_non_finite(small, method):
    y = torch.zeros(1, 1, *small.sinogram_shape)
    y[0, 0, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="y"):
        getattr(small, method)(y)


@pytest.mark.parametrize("name", ["ramp2", "Hann", None])
def test_fbp_rejects_unknown_filter(small, name):
    with pytest.raises(ValueError, match="filter"):
        small.fbp(torch.zeros(1, 1, *small.sinogram_shape), filter=name)


@pytest.mark.parametrize("size", [0, 63])
def test_fourier_filter_rejects_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        fourier_filter(size, "ramp")


def test_update_angles_rebuilds_the_operator():
    """deepinv's ``update(angles=...)`` (or ``physics(x, angles=...)``) gives the operator built
    with those angles, sinogram shape included, and forgets the cached norm."""
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op = Radon(16, 8, dtype=torch.float64)
    before = opnorm(op, (1, 1, 16, 16))
    limited = torch.linspace(0, 90, 8, dtype=torch.float64)
    op.update(angles=limited)
    assert torch.equal(op.A(x), Radon(16, limited, dtype=torch.float64).A(x))
    assert opnorm(op, (1, 1, 16, 16)) != before
    assert op(x, angles=5).shape == (2, 1, 23, 5) and op.sinogram_shape == (23, 5)
    assert torch.equal(op.A_adjoint(op.A(x)), Radon(16, 5, dtype=torch.float64).A_adjoint(Radon(16, 5, dtype=torch.float64).A(x)))


def test_angles_change_only_through_update_parameters():
    """The angles were a plain buffer: editing it in place (``op.angles.mul_(0.5)``) changed the
    spec and the sinogram shape's geometry record while A kept the system matrices of the old
    angles, and assigning ``op.angles = ...`` (10 angles for 20) crashed later in a reshape. Now
    ``angles`` is a copy, an assignment is refused naming ``update_parameters``, and the operator
    equals one built for its reported angles (skimage's geometry through ``Radon``'s own
    constructor: the oracle is a fresh operator)."""
    op = Radon(16, angles=20, dtype=torch.float64)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=_gen(3))
    y = op.A(x)
    op.angles.mul_(0.5)
    assert torch.equal(op.A(x), y)
    torch.testing.assert_close(op.A(x), Radon(16, angles=op.angles, dtype=torch.float64).A(x), rtol=0, atol=0)
    with pytest.raises(AttributeError, match=r"update_parameters\(angles=\.\.\.\)"):
        op.angles = torch.arange(10, dtype=torch.float64) * 18.0
    assert op.sinogram_shape == (op.n_detectors, 20)
    op.update_parameters(angles=10)
    torch.testing.assert_close(op.A(x), Radon(16, angles=10, dtype=torch.float64).A(x), rtol=0, atol=0)


@pytest.mark.parametrize("name, value", [("circle", True), ("n_detectors", 19), ("n", 12)])
def test_geometry_is_fixed_at_construction(name, value):
    """``op.circle = True`` was taken as a plain attribute: the spec (and FBP's padding) said circle
    while A kept the non-circle matrices, so the operator rebuilt from its spec differed by 5.9 on
    a random image; ``op.n_detectors = 19`` crashed later in a reshape. An assignment is refused by
    name, and the operator equals one built from its spec (the oracle: Radon's own constructor)."""
    op = Radon(16, 7, dtype=torch.float64)
    with pytest.raises(AttributeError, match=f"Radon's {name} is fixed at construction"):
        setattr(op, name, value)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=_gen(4))
    fresh = Radon(op.n, op.angles, n_detectors=op.n_detectors, circle=op.circle, dtype=torch.float64)
    assert torch.equal(op.A(x), fresh.A(x))
    assert torch.equal(physics_from_spec(physics_spec(op)).A(x), op.A(x))


def test_state_dict_round_trips_the_geometry(tmp_path):
    """``state_dict`` was empty (the angles and matrices are not saved as buffers), so
    ``load_state_dict`` from a Radon with other angles kept the old ones without a word, where a
    Blur or MRI takes the loaded kernel or mask. The geometry is now the module's extra state: a
    loaded state (through torch.save and weights_only) gives the operator built for its angles
    (the oracle: a fresh Radon), a state of another n, n_detectors or circle is refused naming
    them, and a state without it (as saved before) keeps the operator."""
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=_gen(5))
    source = Radon(16, SPARSE, dtype=torch.float64)
    torch.save(source.state_dict(), tmp_path / "radon.pt")
    op = Radon(16, 7, dtype=torch.float64)
    op.load_state_dict(torch.load(tmp_path / "radon.pt", weights_only=True))
    assert torch.equal(op.angles, SPARSE.double()) and op.sinogram_shape == source.sinogram_shape
    torch.testing.assert_close(op.A(x), source.A(x), rtol=0, atol=0)
    assert opnorm(op, (1, 1, 16, 16)) == pytest.approx(opnorm(source, (1, 1, 16, 16)), rel=1e-12)
    for other, name in ((Radon(12, 7), "n=12"), (Radon(16, 7, n_detectors=19), "n_detectors=19"),
                        (Radon(16, 7, n_detectors=23, circle=True), "circle=True")):
        with pytest.raises(ValueError, match=f"^the state is of a Radon with {name} \\(this Radon's"):
            op.load_state_dict(other.state_dict())
    op.load_state_dict({})
    assert torch.equal(op.angles, SPARSE.double())
