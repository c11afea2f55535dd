r"""Training tasks: how a batch of clean images becomes what a model sees and what it must output.

A task maps clean images :math:`x` (``(B, C, H, W)``) and a ``torch.Generator`` to a
:class:`Batch`: the *observation* passed to the model's plain forward pass (``model(observation)``)
and the *target* its output must match. :meth:`Task.image` maps a model output back to image
layout for PSNR/SSIM. All noise is drawn on the generator's device and then moved to the images'
device, so a CPU generator gives the same noise on every device.

* :class:`Denoising`: observation :math:`x + \sigma n`, target :math:`x`.
* :class:`Reconstruction`: observation :math:`y = Ax + \sigma n` for a linear ``physics``
  :math:`A`, target :math:`x`.
* :class:`Autoencoder`: observation :math:`\operatorname{vec}(x) + \sigma n` (``(B, CHW)``),
  target :math:`\operatorname{vec}(x)`.

:math:`n` has i.i.d. standard normal entries (for complex observations, real and imaginary parts
each standard normal: :func:`gaussian`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from operators.checks import is_real


@dataclass(frozen=True)
class Batch:
    """What a model sees (``observation``) and what its output must equal (``target``)."""

    observation: Tensor
    target: Tensor


def _noise_level(name: str, value: object) -> float:
    """``value`` as a Python ``float`` if it is a finite real number >= 0 (NumPy scalars too; the
    tasks store the float, so that a checkpoint's config holds no NumPy scalar, which
    ``torch.load(weights_only=True)`` refuses)."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def gaussian(like: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    r""":math:`\sigma n` with :math:`n` standard normal of the shape, dtype and device of ``like``,
    drawn on ``generator``'s device (zeros without drawing when :math:`\sigma = 0`). For complex
    ``like`` the real and imaginary parts of :math:`n` are independent standard normals, so each
    part has standard deviation :math:`\sigma`, as in the real layout (B, 2, H, W) of the same data
    and in :meth:`operators.mri.MRI.noise` (``torch.randn`` of a complex dtype would give each part
    :math:`\sigma/\sqrt2`)."""
    if sigma == 0:
        return torch.zeros_like(like)
    dtype = like.real.dtype if like.is_complex() else like.dtype
    shape = (*like.shape, 2) if like.is_complex() else like.shape
    n = torch.randn(shape, dtype=dtype, device=generator.device, generator=generator)
    if like.is_complex():
        n = torch.view_as_complex(n)
    return sigma * n.to(like.device)


class Task:
    """Base class: :meth:`observe` a clean batch; :meth:`image` maps outputs to image layout."""

    def observe(self, clean: Tensor, generator: torch.Generator) -> Batch:
        """The observation and target of the clean images ``clean`` ``(B, C, H, W)``."""
        raise NotImplementedError

    def image(self, output: Tensor, clean: Tensor) -> Tensor:
        """A model output (or target) in the layout of ``clean`` (for image metrics)."""
        return output


@dataclass(frozen=True)
class Denoising(Task):
    r"""Gaussian denoising: observation :math:`x + \sigma n`, target :math:`x`.

    Args:
        noise_sigma: noise standard deviation :math:`\sigma \ge 0` (the keyword of
            :class:`Reconstruction` and :class:`Autoencoder` too).
    """

    noise_sigma: float

    def __post_init__(self):
        object.__setattr__(self, "noise_sigma", _noise_level("noise_sigma", self.noise_sigma))

    def observe(self, clean, generator):
        return Batch(clean + gaussian(clean, self.noise_sigma, generator), clean)


@dataclass(frozen=True, eq=False)
class Reconstruction(Task):
    r"""Linear inverse problem: observation :math:`y = Ax + \sigma n`, target :math:`x`.

    Args:
        physics: a deepinv ``LinearPhysics`` (only ``A`` is used here; the model uses ``A`` and
            ``A_adjoint``).
        noise_sigma: noise standard deviation :math:`\sigma \ge 0` on the measurements.
    """

    physics: object
    noise_sigma: float = 0.0

    def __post_init__(self):
        if not callable(getattr(self.physics, "A", None)):
            raise TypeError(f"physics must have a callable A, got {type(self.physics).__name__}")
        object.__setattr__(self, "noise_sigma", _noise_level("noise_sigma", self.noise_sigma))

    def observe(self, clean, generator):
        y = self.physics.A(clean)
        return Batch(y + gaussian(y, self.noise_sigma, generator), clean)


@dataclass(frozen=True)
class Autoencoder(Task):
    r"""(Denoising) autoencoding of flattened images: observation
    :math:`\operatorname{vec}(x) + \sigma n`, target :math:`\operatorname{vec}(x)`, both ``(B, CHW)``.

    Args:
        noise_sigma: input noise standard deviation :math:`\sigma \ge 0` (0: plain autoencoder).
    """

    noise_sigma: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "noise_sigma", _noise_level("noise_sigma", self.noise_sigma))

    def observe(self, clean, generator):
        flat = clean.flatten(1)
        return Batch(flat + gaussian(flat, self.noise_sigma, generator), flat)

    def image(self, output, clean):
        return output.reshape(clean.shape)
