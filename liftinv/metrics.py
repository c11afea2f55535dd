r"""Image quality metrics per sample of a batch (B, C, H, W): PSNR and SSIM."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from liftinv.validation import positive_finite
from operators.checks import check_tensor

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): scikit-image's truncation of the Gaussian window
SSIM_SIDE = 2 * SSIM_RADIUS + 1  # the window's side: ssim needs images at least this large
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(x: Tensor, ref: Tensor, data_range: float) -> tuple[Tensor, Tensor]:
    """Validate the pair and return it in at least float32: in float16 the squares of 8-bit-range
    values overflow (PSNR ``inf``, SSIM NaN at ``data_range=255``) and bfloat16 sums lose digits."""
    check_tensor(ref, "ref", ndim=4)
    check_tensor(x, "x", ndim=4)
    for name, t in (("ref", ref), ("x", x)):
        if t.is_complex():
            raise TypeError(f"{name} must be a real tensor (pass the magnitudes of complex images), got dtype {t.dtype}")
    if x.dtype != ref.dtype or x.device != ref.device:
        raise TypeError(f"x and ref must have the same dtype and device, got x {x.dtype} on {x.device} and ref "
                        f"{ref.dtype} on {ref.device}")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
    if isinstance(data_range, Tensor):  # is_real refuses tensors: the message below would read as a contradiction
        raise ValueError(f"data_range must be a Python or NumPy number, not a tensor (pass float(...)), got {data_range!r}")
    positive_finite("data_range", data_range)  # NumPy scalars too
    dtype = torch.promote_types(x.dtype, torch.float32)
    return x.to(dtype), ref.to(dtype)


def in_unit_range(ref: Tensor) -> bool:
    """Whether every entry of ``ref`` lies in [0, 1], the data range that :func:`psnr` and
    :func:`ssim` take by default (the commands score a truth only then)."""
    return bool(ref.min() >= 0) and bool(ref.max() <= 1)


def psnr(x: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    r"""Peak signal-to-noise ratio per sample,
    :math:`10\log_{10}(R^2 / \mathrm{mean}_{c,h,w}(x - \mathrm{ref})^2)` in dB, shape (B,)
    (``inf`` where ``x == ref``), of real images (complex ones are refused); computed and returned
    in float32 for half-precision inputs. With :math:`d = x - \mathrm{ref}` and its largest
    magnitude :math:`p` in the sample it is computed as
    :math:`20\log_{10} R - 20\log_{10} p - 10\log_{10}\mathrm{mean}(d/p)^2`, so neither
    :math:`R^2` nor the squares of :math:`d` overflow or underflow (images at scales of
    :math:`10^{20}` or :math:`10^{-25}` in float32). In a sample where :math:`x - \mathrm{ref}`
    overflows the dtype though both are finite (entries near :math:`\pm\max` of opposite signs),
    :math:`d = x/2 - \mathrm{ref}/2` and :math:`p` is twice its largest magnitude."""
    x, ref = _check_pair(x, ref, data_range)
    x, ref = x.flatten(1), ref.flatten(1)
    d = x - ref
    over = (torch.isinf(d) & torch.isfinite(x) & torch.isfinite(ref)).any(1)
    d = torch.where(over[:, None], x * 0.5 - ref * 0.5, d)
    peak = d.abs().amax(1) if d.shape[1] else d.new_zeros(d.shape[0])  # empty images: NaN below, as mean((x - ref)^2)
    scaled = d / torch.where(peak == 0, 1, peak)[:, None]  # entries in [-1, 1]
    peak_db = 20.0 * torch.log10(peak) + over.to(d.dtype) * (20.0 * math.log10(2.0))
    return 20.0 * math.log10(data_range) - peak_db - 10.0 * torch.log10(scaled.pow(2).mean(1))


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    t = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    r"""Structural similarity per sample (Wang et al. 2004) of real images, shape (B,).

    With Gaussian local means :math:`\mu` (11x11 window, :math:`\sigma = 1.5`), local (population)
    variances :math:`v` and covariance :math:`v_{x,r}`, :math:`C_1 = (0.01R)^2`,
    :math:`C_2 = (0.03R)^2`:

    .. math::
        S = \frac{(2\mu_x\mu_r + C_1)(2 v_{x,r} + C_2)}{(\mu_x^2 + \mu_r^2 + C_1)(v_x + v_r + C_2)},

    averaged over the pixels whose window lies inside the image and over channels. This equals
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=R)``. Images must be at least 11x11. The moments are
    taken of each image less the mean :math:`m` of its own channel (variances and the covariance
    do not change, :math:`\mu` gets :math:`m` back): :math:`v = \mu(x^2) - \mu(x)^2` of the raw
    images cancels catastrophically in float32 when the values lie far from 0, and so does that
    of :math:`x` less the reference's mean when :math:`x` is offset from the reference.
    Half-precision inputs are computed, and the result returned, in float32. :math:`S` does not
    change when :math:`x`, ref and :math:`R` are scaled alike: they are multiplied by the power
    of two :math:`2^{-e}` that brings :math:`R` into :math:`[1, 2)` (exact), so the squares neither
    overflow nor underflow for images of the scale of :math:`R` (e.g. :math:`10^{20}` or
    :math:`10^{-25}` in float32); ``data_range`` must lie in the range of the images' dtype
    (``[tiny, max]`` of its ``torch.finfo``, a ``ValueError`` naming it otherwise).
    """
    x, ref = _check_pair(x, ref, data_range)
    data_range, info = float(data_range), torch.finfo(x.dtype)  # a NumPy scalar compared in its own dtype would overflow
    if not info.tiny <= data_range <= info.max:
        raise ValueError(f"data_range = {data_range!r} lies outside the range of the images' dtype {x.dtype} "
                         f"([{info.tiny:.3g}, {info.max:.3g}])")
    scale = math.ldexp(1.0, 1 - math.frexp(data_range)[1])  # 2^-e with 2^-e R in [1, 2)
    x, ref, data_range = x * scale, ref * scale, data_range * scale
    if min(x.shape[-2:]) < SSIM_SIDE:
        raise ValueError(f"ssim needs images of at least {SSIM_SIDE}x{SSIM_SIDE}, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    win = _gaussian_window(x.dtype, x.device)
    mx, mr = x.mean((-2, -1), keepdim=True), ref.mean((-2, -1), keepdim=True)
    xc, rc = x - mx, ref - mr
    stack = torch.cat([xc, rc, xc * xc, rc * rc, xc * rc], dim=1).reshape(b * 5 * c, 1, h, w)
    mu_xc, mu_rc, xx, rr, xr = F.conv2d(stack, win).reshape(b, 5, c, h - SSIM_SIDE + 1, w - SSIM_SIDE + 1).unbind(1)
    var_x, var_r, cov = xx - mu_xc**2, rr - mu_rc**2, xr - mu_xc * mu_rc
    mu_x, mu_r = mu_xc + mx, mu_rc + mr
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_r + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_r**2 + c1) * (var_x + var_r + c2))
    return s.flatten(1).mean(1)
