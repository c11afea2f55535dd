r"""Normalised 2-D blur kernels (point-spread functions) for :class:`operators.blur.Blur`.

Every kernel is a real tensor of odd size ``(2r+1, 2r'+1)`` with non-negative entries summing
to 1, centred at index ``(r, r')`` (the convolution centre used by :class:`~operators.blur.Blur`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from operators.checks import is_integer, is_real


def _check_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a real floating torch.dtype, got {dtype}")


def _check_number(value: float, name: str, *, minimum: float, strict: bool) -> float:
    if not is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return float(value)


def _offsets(radius: int, dtype: torch.dtype) -> Tensor:
    """Integer offsets ``-radius, ..., radius`` from the kernel centre."""
    return torch.arange(-radius, radius + 1, dtype=dtype)


def gaussian_kernel(
    sigma: float | tuple[float, float], size: int | tuple[int, int] | None = None, *, dtype: torch.dtype = torch.float64
) -> Tensor:
    r"""Sampled isotropic or axis-aligned Gaussian.

    :math:`k[i, j] \propto \exp\big(-\tfrac{(i-r)^2}{2\sigma_y^2} - \tfrac{(j-r')^2}{2\sigma_x^2}\big)`
    on a ``size`` grid, normalised to sum 1.

    Args:
        sigma: standard deviation in pixels, > 0; one number or ``(sigma_y, sigma_x)``.
        size: odd side length(s); default ``2 * ceil(3 sigma) + 1`` per axis.
        dtype: real floating dtype of the result.

    Returns:
        Tensor of shape ``(size_y, size_x)``.
    """
    _check_dtype(dtype)
    sigmas = tuple(sigma) if isinstance(sigma, (tuple, list)) else (sigma, sigma)
    if len(sigmas) != 2:
        raise ValueError(f"sigma must be a number or a pair, got {sigma!r}")
    sigmas = tuple(_check_number(s, "sigma", minimum=0.0, strict=True) for s in sigmas)
    if size is None:
        sizes = tuple(2 * math.ceil(3 * s) + 1 for s in sigmas)
    else:
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if len(sizes) != 2 or any(not is_integer(n) or n < 1 or n % 2 == 0 for n in sizes):
        raise ValueError(f"size must be a positive odd integer or a pair of them, got {size!r}")
    sizes = tuple(int(n) for n in sizes)
    gy, gx = (torch.exp(-0.5 * (_offsets(n // 2, dtype) / s) ** 2) for n, s in zip(sizes, sigmas))
    kernel = gy[:, None] * gx[None, :]
    return kernel / kernel.sum()


def motion_kernel(length: float, angle_degrees: float, *, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""Linear motion blur: an anti-aliased segment of the given length through the centre.

    :math:`k[p] \propto \max(0, 1 - \operatorname{dist}(p, S))` where :math:`S` is the segment of
    length ``length`` centred at the kernel centre with direction
    :math:`(\cos\theta, \sin\theta)` in (x to the right, y up) coordinates, i.e. row offset
    :math:`-\sin\theta`, column offset :math:`\cos\theta`; normalised to sum 1. The side length is
    :math:`2\lceil \text{length}/2 \rceil + 1`. ``length = 0`` gives the identity (a delta).

    Args:
        length: segment length in pixels, >= 0.
        angle_degrees: direction, degrees counter-clockwise from the x axis.
        dtype: real floating dtype of the result.
    """
    _check_dtype(dtype)
    length = _check_number(length, "length", minimum=0.0, strict=False)
    angle = math.radians(_check_number(angle_degrees, "angle_degrees", minimum=-math.inf, strict=False))
    radius = math.ceil(length / 2)
    offsets = _offsets(radius, torch.float64)
    rows, cols = torch.meshgrid(offsets, offsets, indexing="ij")
    direction_r, direction_c = -math.sin(angle), math.cos(angle)
    along = (rows * direction_r + cols * direction_c).clamp(-length / 2, length / 2)
    dist = torch.hypot(rows - along * direction_r, cols - along * direction_c)
    kernel = (1 - dist).clamp_min(0)
    return (kernel / kernel.sum()).to(dtype)


def disk_kernel(radius: float, *, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""Uniform disk (out-of-focus blur): :math:`k[i, j] \propto 1\{(i-r)^2 + (j-r)^2 \le \text{radius}^2\}`
    on a ``(2 floor(radius) + 1)``-square grid, normalised to sum 1 (``radius < 1`` gives a delta).

    Args:
        radius: disk radius in pixels, >= 0.
        dtype: real floating dtype of the result.
    """
    _check_dtype(dtype)
    radius = _check_number(radius, "radius", minimum=0.0, strict=False)
    offsets = _offsets(math.floor(radius), torch.float64)
    kernel = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).to(torch.float64)
    return (kernel / kernel.sum()).to(dtype)
