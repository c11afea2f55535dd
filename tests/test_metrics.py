import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from liftinv.metrics import psnr, ssim


def pair(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(shape, dtype=dtype, generator=g)
    x = (ref + 0.1 * torch.randn(shape, dtype=dtype, generator=g)).clamp(0, 1)
    return x, ref


def test_psnr_matches_skimage():
    x, ref = pair((3, 2, 13, 17))
    out = psnr(x, ref, data_range=1.0)
    assert out.shape == (3,)
    for b in range(3):
        expected = peak_signal_noise_ratio(ref[b].numpy(), x[b].numpy(), data_range=1.0)
        assert abs(out[b].item() - expected) < 1e-10
    assert abs(psnr(2 * x, 2 * ref, data_range=2.0) - out).max() < 1e-10


def test_ssim_on_the_smallest_image_and_another_data_range_matches_skimage():
    """An 11x11 image (one window position) is accepted, and the constants scale with the data
    range: :math:`C_1 = (0.01R)^2`, :math:`C_2 = (0.03R)^2` (R = 2, values in [0, 2])."""
    x, ref = pair((2, 1, 11, 11), seed=2)
    x, ref = 2 * x, 2 * ref
    out = ssim(x, ref, data_range=2.0)
    for b in range(2):
        expected = structural_similarity(
            ref[b, 0].numpy(), x[b, 0].numpy(), data_range=2.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert abs(out[b].item() - expected) < 1e-10


@pytest.mark.parametrize("shape", [(2, 1, 23, 19), (3, 3, 15, 31)])
def test_ssim_matches_skimage(shape):
    x, ref = pair(shape, seed=1)
    out = ssim(x, ref)
    assert out.shape == (shape[0],)
    for b in range(shape[0]):
        expected = structural_similarity(
            ref[b].numpy(), x[b].numpy(), data_range=1.0, channel_axis=0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert abs(out[b].item() - expected) < 1e-10


def test_ssim_of_identical_images_is_one_and_float32_works():
    x, _ = pair((2, 1, 16, 16), dtype=torch.float32)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    assert torch.isinf(psnr(x, x)).all()


def test_float32_ssim_of_images_far_from_zero_matches_skimage():
    """Values near 1000 (data range 1): the float32 variances mu(x^2) - mu(x)^2 of the raw images
    cancelled to rounding noise (SSIM -1.33 against 0.9993); the moments of the images less the
    reference's channel means agree with scikit-image's float64 result."""
    x, ref = pair((2, 2, 32, 32), seed=3)
    x, ref = x + 1000, ref + 1000
    out = ssim(x.float(), ref.float())
    for b in range(2):
        expected = structural_similarity(ref[b].numpy(), x[b].numpy(), data_range=1.0, channel_axis=0,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert abs(out[b].item() - expected) < 1e-3


def test_float32_ssim_of_an_image_offset_from_the_reference_matches_skimage():
    """x = 300 + 0.01 u against a reference in [0, 0.1]: ssim took the moments of both images
    less the *reference's* channel mean, so v_x = mu(x^2) - mu(x)^2 of x - m (about 300)
    cancelled to float32 rounding noise and SSIM came out negative (-5e-6 against scikit-image's
    float64 1.8e-4); each image less its own mean agrees to 1e-3 relative."""
    g = torch.Generator().manual_seed(0)
    ref = 0.1 * torch.rand(2, 2, 16, 16, dtype=torch.float64, generator=g)
    x = 300 + 0.01 * torch.rand(2, 2, 16, 16, dtype=torch.float64, generator=g)
    out = ssim(x.float(), ref.float())
    for b in range(2):
        expected = structural_similarity(ref[b].numpy(), x[b].numpy(), data_range=1.0, channel_axis=0,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(out[b]) == pytest.approx(expected, rel=1e-3)


def test_numpy_scalar_data_range_matches_skimage():
    """data_range as a NumPy scalar (e.g. np.ptp of an array) was refused as 'not a positive finite number'."""
    x, ref = pair((1, 1, 16, 16))
    r = np.float32(2.0)
    assert float(psnr(2 * x, 2 * ref, r)) == pytest.approx(
        peak_signal_noise_ratio(2 * ref[0, 0].numpy(), 2 * x[0, 0].numpy(), data_range=2.0), abs=1e-10)
    assert float(ssim(2 * x, 2 * ref, r)) == pytest.approx(structural_similarity(
        2 * ref[0, 0].numpy(), 2 * x[0, 0].numpy(), data_range=2.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False), abs=1e-9)  # C1, C2 rounded to float32


def test_metric_bad_inputs():
    x, ref = pair((2, 1, 16, 16))
    with pytest.raises(ValueError, match="same shape"):
        psnr(x[:, :, :8], ref)
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, ref, data_range=0.0)
    with pytest.raises(ValueError, match="data_range must be a positive finite number, got inf"):
        ssim(x, ref, data_range=float("inf"))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[..., :8, :8], ref[..., :8, :8])
    with pytest.raises(TypeError, match="x"):
        ssim(x.float(), ref)
    with pytest.raises(ValueError, match="ref"):
        psnr(x[0], ref[0])
    with pytest.raises(TypeError, match="x"):
        psnr(np.zeros((2, 1, 16, 16)), ref)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_complex_images_are_refused(metric):
    """psnr took mean((x - ref)^2) of complex images, not of |x - ref|^2: ref + 0.1j gave the
    'PSNR' 20 - 13.6j dB (scikit-image's PSNR of the magnitudes' error 0.1 is 20 dB), and ssim
    failed inside torch.arange; both now refuse complex tensors by name."""
    x, ref = pair((1, 1, 12, 12))
    assert float(psnr(x, ref)) == pytest.approx(peak_signal_noise_ratio(ref[0].numpy(), x[0].numpy(), data_range=1.0))
    z = ref.to(torch.complex128)
    with pytest.raises(TypeError, match="x must be a real tensor.*complex128"):
        metric(z + 0.1j, ref)
    with pytest.raises(TypeError, match="ref must be a real tensor.*complex128"):
        metric(x, z)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_in_the_8_bit_range_match_skimage(dtype):
    """Images in [0, 255] (data range 255) held in float16/bfloat16: psnr's R^2/mse overflowed
    to inf in float16 (an error of 0.5 on a third of the pixels: 55.9 dB) and ssim's
    mu_x^2 + mu_r^2 (> 65504) gave NaN; bfloat16 lost up to 2 dB. The metrics of the values held
    (exact in float64) now match scikit-image's float64 results to float32 accuracy, in float32."""
    g = torch.Generator().manual_seed(4)
    ref = torch.randint(0, 256, (2, 1, 16, 16), generator=g).to(dtype)
    near = ref + 0.5 * torch.randint(-1, 2, ref.shape, generator=g).to(dtype)  # mse < 1
    far = (ref + torch.randint(-40, 41, ref.shape, generator=g).to(dtype)).clamp(0, 255)
    p, s = psnr(near, ref, 255), ssim(far, ref, 255)
    assert p.dtype == s.dtype == torch.float32
    for b in range(2):
        r64 = ref[b, 0].double().numpy()
        assert float(p[b]) == pytest.approx(peak_signal_noise_ratio(r64, near[b, 0].double().numpy(), data_range=255), abs=1e-4)
        assert float(s[b]) == pytest.approx(structural_similarity(
            r64, far[b, 0].double().numpy(), data_range=255, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False), abs=1e-5)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_images_of_two_dtypes_are_refused_naming_both(metric):
    """A float32 x against a float64 ref was refused with check_tensor's operator wording, 'x has
    dtype torch.float32 but the operator uses torch.float64', though no operator is involved;
    the message now names x and ref with their dtypes (the oracle: the arguments passed)."""
    x, ref = pair((1, 1, 12, 12))
    with pytest.raises(TypeError, match=r"^x and ref must have the same dtype and device, got x torch.float32 on cpu "
                                        r"and ref torch.float64 on cpu$"):
        metric(x.float(), ref)
    with pytest.raises(TypeError, match="got x torch.float64 on cpu and ref torch.float32 on cpu$"):
        metric(x, ref.float())


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_a_tensor_data_range_is_refused_saying_why(metric):
    """data_range=ref.max() - ref.min() (a 0-d tensor of 0.99) was refused with 'data_range must be
    a positive finite number, got tensor(0.9924...)', which it is; the message now says that a
    tensor is refused and how to pass it, and its float() gives scikit-image's value."""
    x, ref = pair((1, 1, 12, 12))
    span = ref.max() - ref.min()
    with pytest.raises(ValueError, match=r"^data_range must be a Python or NumPy number, not a tensor \(pass float"):
        metric(x, ref, data_range=span)
    expected = peak_signal_noise_ratio(ref[0, 0].numpy(), x[0, 0].numpy(), data_range=float(span))
    assert float(psnr(x, ref, data_range=float(span))) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_float32_psnr_of_images_at_extreme_scales_matches_float64(scale):
    """PSNR is 10 log10(R^2/mse): in float32 the squares of differences of 1e20-scaled images
    overflowed (and R^2 = 1e40 too: NaN) and those of 1e-25-scaled ones underflowed to 0 (NaN), and
    R = 1e200 raised OverflowError in R**2 for any dtype. Oracle: skimage's PSNR of the same float32
    images in float64, and psnr(x, ref, 1) + 4000 dB for R = 1e200."""
    x, ref = pair((2, 1, 12, 12), seed=7, dtype=torch.float32)
    x, ref = x * scale, ref * scale
    expected = torch.tensor([peak_signal_noise_ratio(r.double().numpy(), y.double().numpy(), data_range=scale)
                             for r, y in zip(ref, x)], dtype=torch.float64)  # skimage, in float64
    torch.testing.assert_close(psnr(x, ref, data_range=scale).double(), expected, rtol=1e-5, atol=0)
    x, ref = pair((2, 1, 12, 12), seed=7)
    torch.testing.assert_close(psnr(x, ref, data_range=1e200), psnr(x, ref) + 4000, rtol=1e-15, atol=0)


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_float32_ssim_of_images_at_extreme_scales_matches_skimage(scale):
    """SSIM is invariant under scaling x, ref and R alike, but float32 squares of 1e20-scaled images
    overflowed and those of 1e-25-scaled ones underflowed (NaN for both). Oracle: skimage's SSIM of
    the same float32 images in float64; a data range beyond float32's range is refused naming it."""
    x, ref = pair((2, 1, 12, 12), seed=8, dtype=torch.float32)
    x, ref = x * scale, ref * scale
    expected = [structural_similarity(r[0].double().numpy(), y[0].double().numpy(), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=scale) for r, y in zip(ref, x)]
    torch.testing.assert_close(ssim(x, ref, data_range=scale).double(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="data_range = 1e[+]39 .* torch.float32"):
        ssim(x, ref, data_range=1e39)


def test_float32_psnr_where_the_difference_overflows_matches_skimage():
    """x and ref near float32's largest number with opposite signs: x - ref overflows to Inf
    though both are finite, so the peak p was Inf and (x - ref)/p NaN (PSNR NaN). Such a sample
    now takes d = x/2 - ref/2 with twice its peak; the other samples are bit for bit as before.
    Oracle: skimage's peak_signal_noise_ratio of the same float32 images in float64 (to 1e-5)."""
    big = torch.finfo(torch.float32).max
    ref, x = pair((2, 1, 5, 4), seed=4, dtype=torch.float32)
    ref[0], x[0] = -big * ref[0], big * x[0]
    out = psnr(x, ref, data_range=1.0)
    for b in range(2):
        expected = peak_signal_noise_ratio(ref[b].double().numpy(), x[b].double().numpy(), data_range=1.0)
        assert abs(out[b].item() - expected) < 1e-5 * abs(expected)
    assert torch.equal(out[1:], psnr(x[1:], ref[1:], data_range=1.0))
    assert torch.equal(psnr(x[:1], x[:1]), torch.tensor([torch.inf]))
