r"""k-space sampling masks for :class:`operators.mri.MRI`, in centred (fftshift) k-space layout.

Each function returns a boolean ``(H, W)`` tensor with exactly ``max(1, round(H W / acceleration))``
sampled entries (Cartesian masks: ``max(1, round(W / acceleration))`` sampled columns; at least one,
however large the acceleration). Cartesian masks
sample whole columns (phase encoding along the last axis, readout along the rows, as fastMRI) and
always contain the ``round(W * center_fraction)`` central columns, starting at column
``(W - n_low + 1) // 2`` (fastMRI's convention; the zero frequency sits at column ``W // 2``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from operators.checks import is_integer, is_real


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if not isinstance(shape, Sequence) or len(shape) != 2 or any(not is_integer(n) or n < 1 for n in shape):
        raise ValueError(f"shape must be (H, W) with positive integers, got {shape!r}")
    return int(shape[0]), int(shape[1])


def _check_acceleration(acceleration: float) -> float:
    if not is_real(acceleration) or not math.isfinite(acceleration):
        raise ValueError(f"acceleration must be a finite number, got {acceleration!r}")
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    return float(acceleration)


def _check_generator(generator: object) -> None:
    """``generator`` must be ``None`` or a CPU ``torch.Generator`` (the masks are drawn on the CPU)."""
    if generator is not None and not (isinstance(generator, torch.Generator) and generator.device.type == "cpu"):
        where = f" on {generator.device}" if isinstance(generator, torch.Generator) else ""
        raise TypeError(f"generator must be a CPU torch.Generator or None, got {type(generator).__name__}{where}")


def _centre_columns(width: int, acceleration: float, center_fraction: float) -> tuple[int, int, Tensor]:
    """Number of sampled columns, number of centre columns, and the mask of the centre columns."""
    if not is_real(center_fraction) or not 0 <= center_fraction <= 1:
        raise ValueError(f"center_fraction must be in [0, 1], got {center_fraction!r}")
    n_total = max(1, round(width / _check_acceleration(acceleration)))
    n_low = round(width * center_fraction)
    if n_low > n_total:
        raise ValueError(
            f"center_fraction={center_fraction} gives {n_low} centre columns, more than the "
            f"{n_total} columns allowed by acceleration={acceleration}"
        )
    centre = torch.zeros(width, dtype=torch.bool)
    start = (width - n_low + 1) // 2
    centre[start : start + n_low] = True
    return n_total, n_low, centre


def random_mask(
    shape: tuple[int, int], acceleration: float, center_fraction: float = 0.08, generator: torch.Generator | None = None
) -> Tensor:
    """Random Cartesian mask (fastMRI ``RandomMaskFunc`` with an exact line count): the centre
    columns plus ``n_total - n_low`` columns drawn uniformly without replacement from the rest.

    Args:
        shape: ``(H, W)``.
        acceleration: >= 1; ``max(1, round(W / acceleration))`` columns are sampled.
        center_fraction: fraction of fully sampled central columns, in [0, 1].
        generator: CPU ``torch.Generator`` for the draw.
    """
    height, width = _check_shape(shape)
    _check_generator(generator)
    n_total, n_low, columns = _centre_columns(width, acceleration, center_fraction)
    outer = torch.nonzero(~columns).flatten()
    columns[outer[torch.randperm(outer.numel(), generator=generator)[: n_total - n_low]]] = True
    return columns.expand(height, width).clone()


def equispaced_mask(shape: tuple[int, int], acceleration: float, center_fraction: float = 0.08) -> Tensor:
    """Deterministic Cartesian mask: the centre columns plus ``n_total - n_low`` columns equally
    spaced (index ``floor(m * n_outer / (n_total - n_low))``) among the ``n_outer`` other columns.

    Args:
        shape: ``(H, W)``.
        acceleration: >= 1; ``max(1, round(W / acceleration))`` columns are sampled.
        center_fraction: fraction of fully sampled central columns, in [0, 1].
    """
    height, width = _check_shape(shape)
    n_total, n_low, columns = _centre_columns(width, acceleration, center_fraction)
    outer = torch.nonzero(~columns).flatten()
    n_extra = n_total - n_low
    columns[outer[torch.arange(n_extra) * outer.numel() // max(n_extra, 1)]] = True
    return columns.expand(height, width).clone()


def gaussian_mask(
    shape: tuple[int, int], acceleration: float, generator: torch.Generator | None = None, *, std: float = 0.15
) -> Tensor:
    r"""2-D variable-density mask: ``max(1, round(H W / acceleration))`` k-space points drawn without
    replacement with probability proportional to :math:`\exp(-(u^2 + v^2) / (2\,\text{std}^2))`,
    where :math:`u = (i - \lfloor H/2 \rfloor)/H`, :math:`v = (j - \lfloor W/2 \rfloor)/W` are
    frequencies in cycles per pixel (so the density peaks at the zero frequency).

    The draw is ``torch.multinomial``'s (the same mask for the same generator state) computed with
    log-densities: the ``max(1, round(H W / acceleration))`` largest keys
    :math:`-(u^2 + v^2)/(2\,\text{std}^2) - \log E_{ij}`, :math:`E_{ij}` i.i.d. standard
    exponential (Efraimidis and Spirakis' sampling without replacement), so that densities below
    float64's range (a small ``std``) keep their order instead of all being 0. Keys that are
    equal in float64 (log-densities beyond its range, :math:`-\infty`, or so large that
    :math:`\log E_{ij}` is lost in their rounding) are ordered by :math:`u^2 + v^2`, then by
    :math:`-\log E_{ij}`: the limit of a vanishing ``std``, the points nearest the zero frequency,
    drawn uniformly among those at the same distance.

    Args:
        shape: ``(H, W)``.
        acceleration: >= 1.
        generator: CPU ``torch.Generator`` for the draw.
        std: standard deviation of the density in cycles per pixel, > 0.
    """
    height, width = _check_shape(shape)
    n_total = max(1, round(height * width / _check_acceleration(acceleration)))
    if not is_real(std) or not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a finite number > 0, got {std!r}")
    _check_generator(generator)
    u = (torch.arange(height, dtype=torch.float64) - height // 2) / height
    v = (torch.arange(width, dtype=torch.float64) - width // 2) / width
    r2 = (u[:, None] ** 2 + v[None, :] ** 2).flatten()
    log_density = torch.where(r2 == 0, 0.0, -r2 / (2 * std**2))  # std**2 may underflow to 0: 0/0 at the centre
    gumbel = -torch.empty_like(log_density).exponential_(generator=generator).log()
    keys = log_density + gumbel
    order = torch.argsort(gumbel, descending=True, stable=True)  # equal keys: by r2, then by gumbel (docstring)
    order = order[torch.argsort(r2[order], stable=True)]
    order = order[torch.argsort(keys[order], descending=True, stable=True)]
    mask = torch.zeros(height * width, dtype=torch.bool)
    mask[order[:n_total]] = True
    return mask.reshape(height, width)
