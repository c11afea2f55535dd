"""Small instances of every operator (odd sizes, several geometries) for contract tests and
benchmarks: :data:`OPERATORS` maps a name to ``factory(dtype, device) -> (physics, x_shape)``."""
from __future__ import annotations

from collections.abc import Callable

import torch

from operators.blur import Blur
from operators.kernels import gaussian_kernel, motion_kernel
from operators.masks import equispaced_mask, gaussian_mask, random_mask
from operators.mri import MRI
from operators.radon import Radon

Factory = Callable[[torch.dtype, str], tuple[object, tuple[int, ...]]]


def _blur(boundary: str, kernel) -> Factory:
    return lambda dtype, device: (Blur(kernel, boundary=boundary, dtype=dtype, device=device), (3, 2, 17, 15))


def _radon(angles, circle: bool) -> Factory:
    return lambda dtype, device: (Radon(15, angles, circle=circle, dtype=dtype, device=device), (3, 2, 15, 15))


def _mri(mask_fn, coils: int = 0) -> Factory:
    def build(dtype, device):
        g = torch.Generator().manual_seed(0)
        mask = mask_fn(g)
        maps = None
        if coils:
            maps = torch.randn(coils, 15, 13, dtype=torch.complex128, generator=g)
            maps = maps / maps.abs().pow(2).sum(0).sqrt()
            maps = maps.to(torch.complex64 if dtype == torch.float32 else torch.complex128)
        return MRI(mask, coil_maps=maps, dtype=dtype, device=device), (3, 2, 15, 13)

    return build


OPERATORS: dict[str, Factory] = {
    "blur-circular-gaussian": _blur("circular", gaussian_kernel(1.5)),
    "blur-reflect-motion": _blur("reflect", motion_kernel(5, 30)),
    "blur-replicate-gaussian": _blur("replicate", gaussian_kernel(1.0)),
    "blur-zero-gaussian": _blur("zero", gaussian_kernel(1.2)),
    "radon-full": _radon(11, circle=False),
    "radon-circle": _radon(9, circle=True),
    "radon-limited-angle": _radon(torch.linspace(10.0, 100.0, 7), circle=False),
    "mri-random": _mri(lambda g: random_mask((15, 13), 3, 0.2, generator=g)),
    "mri-equispaced": _mri(lambda g: equispaced_mask((15, 13), 2, 0.2)),
    "mri-gaussian-multicoil": _mri(lambda g: gaussian_mask((15, 13), 3, generator=g), coils=3),
}
