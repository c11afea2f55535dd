"""Forward operators of imaging as deepinv ``LinearPhysics`` with exact adjoints.

* :class:`Blur`: convolution, circular (FFT) or reflect/replicate/zero boundaries;
* :class:`Radon`: 2-D parallel-beam CT with matched back-projection and :meth:`Radon.fbp`;
* :class:`MRI`: Cartesian undersampled Fourier sampling, single- or multi-coil.

Noise follows deepinv: pass ``noise_model=GaussianNoise(sigma)`` (or ``PoissonNoise``) and
``physics(x)`` returns noisy measurements. ``PoissonNoise`` refuses negative entries, and an
FFT blur (the circular boundary, or ``use_fft=True``) of an image with zero regions has entries of
about -1e-7 there (rounding): give it ``PoissonNoise(gain, clip_positive=True)``.
:data:`OPERATORS` holds small instances for tests and benchmarks; :func:`opnorm` gives a cached
operator norm.
"""
from deepinv.physics import GaussianNoise, PoissonNoise

from operators.blur import Blur
from operators.checks import adjoint_error, opnorm
from operators.kernels import disk_kernel, gaussian_kernel, motion_kernel
from operators.masks import equispaced_mask, gaussian_mask, random_mask
from operators.mri import MRI
from operators.radon import Radon
from operators.registry import OPERATORS

__all__ = [
    "Blur", "Radon", "MRI", "GaussianNoise", "PoissonNoise", "OPERATORS", "opnorm", "adjoint_error",
    "gaussian_kernel", "motion_kernel", "disk_kernel", "random_mask", "equispaced_mask", "gaussian_mask",
]
