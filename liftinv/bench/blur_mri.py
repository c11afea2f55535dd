"""Blur and MRI operators against deepinv, side by side in one run.

``python -m liftinv.bench.blur_mri [--quick] [--device cpu] [--json FILE]`` prints the table; the
``operators`` section of ``python -m liftinv.bench`` calls :func:`run`.

Cases (batch 8, float32): circular Gaussian blur vs ``deepinv.physics.BlurFFT``; reflect and zero
boundary blur vs ``deepinv.physics.Blur`` with the same padding; single-coil MRI vs
``deepinv.physics.MRI``; 4-coil MRI vs ``deepinv.physics.MultiCoilMRI``. Each operator's ``A`` and
``A_adjoint`` is timed as the median of repeats after warm-up, the two implementations called
in turn; ``ratio_vs_project`` is the time
divided by the project's time for the same case and map (> 1: slower than the project).
"""
from __future__ import annotations


import deepinv as dinv
import torch

from liftinv.bench.timing import median_seconds
from operators.blur import Blur
from operators.kernels import gaussian_kernel
from operators.masks import random_mask
from operators.mri import MRI

BATCH = 8
BLUR_CHANNELS = 3
N_COILS = 4
SIGMA = 2.0


def _pairs(size: int, device: str, generator: torch.Generator) -> list[tuple[str, object, object, torch.Tensor]]:
    """``(case, project operator, deepinv operator, input)`` for one image size."""
    kernel = gaussian_kernel(SIGMA, dtype=torch.float32)
    filt = kernel[None, None].to(device)
    img = torch.rand(BATCH, BLUR_CHANNELS, size, size, generator=generator).to(device)
    mask = random_mask((size, size), 4, 0.08, generator=generator)
    coils = torch.randn(N_COILS, size, size, dtype=torch.complex64, generator=generator).to(device)
    mri_x = torch.randn(BATCH, 2, size, size, generator=generator).to(device)
    dmask = mask.float().to(device)
    blur = lambda b: Blur(kernel, img_size=(BLUR_CHANNELS, size, size), boundary=b, device=device)  # noqa: E731
    return [
        ("blur circular", blur("circular"), dinv.physics.BlurFFT((BLUR_CHANNELS, size, size), filt, device=device), img),
        ("blur reflect", blur("reflect"), dinv.physics.Blur(filt, padding="reflect", device=device), img),
        ("blur zero", blur("zero"), dinv.physics.Blur(filt, padding="constant", device=device), img),
        ("mri 1 coil", MRI(mask, device=device), dinv.physics.MRI(dmask, img_size=(size, size), device=device), mri_x),
        (
            f"mri {N_COILS} coils",
            MRI(mask, coil_maps=coils, device=device),
            dinv.physics.MultiCoilMRI(dmask, coils, img_size=(size, size), device=device),
            mri_x,
        ),
    ]


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """Time ``A`` and ``A_adjoint`` of each project operator and its deepinv counterpart.

    Args:
        quick: 128x128 only and fewer repeats; otherwise 128x128 and 256x256.
        device: torch device string.

    Returns:
        One record per (case, map, method) with keys ``section, case, method, seconds,
        ratio_vs_project``.
    """
    generator = torch.Generator().manual_seed(0)
    repeats = 7 if quick else 21
    records = []
    with torch.no_grad():
        for size in (128,) if quick else (128, 256):
            for case, project, reference, x in _pairs(size, device, generator):
                y = project.A(x)
                for name, inp in (("A", x), ("A_adjoint", y)):
                    methods = (("liftinv", project), ("deepinv", reference))
                    fns = [lambda op=op: getattr(op, name)(inp) for _, op in methods]
                    seconds = median_seconds(fns, repeats, device)
                    for (method, _), sec in zip(methods, seconds):
                        records.append(
                            {
                                "section": "blur_mri",
                                "case": f"{case} {size}x{size} b{BATCH} {name}",
                                "method": method,
                                "seconds": sec,
                                "ratio_vs_project": sec / seconds[0],
                            }
                        )
    return records


if __name__ == "__main__":
    from liftinv.bench import run_module

    raise SystemExit(run_module(__spec__.name, run, __doc__))
