"""Parallel-beam CT: the project's Radon against deepinv and scikit-image, side by side in one run.

``python -m liftinv.bench.ct [--quick] [--device cpu] [--json FILE]`` prints the table; the ``operators``
section of ``python -m liftinv.bench`` calls :func:`run`.

Cases (180 angles on [0, 180), ``circle=False``, float32, 128x128 and 256x256, batch 1 and 8):

- ``A``: :class:`operators.radon.Radon` vs ``deepinv.physics.Tomography`` (its default
  exact-adjoint mode, ``normalize=False``) vs ``skimage.transform.radon`` looped over the batch;
- ``A_adjoint``: the same, with ``skimage.transform.iradon(filter_name=None)`` (its unfiltered
  back-projection) standing in for scikit-image's missing adjoint; ``A + A_adjoint`` adds the two;
- ``fbp``: ``Radon.fbp`` vs ``Tomography.fbp`` vs ``iradon`` (ramp filter), each on the sinogram of
  the Shepp-Logan phantom made by its own forward model, with the PSNR of the reconstruction;
- ``construction``: building each operator once, with the memory of its precomputed buffers.

Times are medians over repeats after two warm-up calls, the methods called in turn within each
repeat so that they share the machine's load; ``ratio_vs_project`` is the time divided by the
project's time for the same case (> 1: slower than the project).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import deepinv as dinv
import numpy as np
import torch
from skimage.data import shepp_logan_phantom
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import iradon, radon, resize

from liftinv.bench.timing import median_seconds
from operators.radon import Radon

N_ANGLES = 180
BATCHES = (1, 8)


def _timed(build: Callable[[], object], device: str) -> tuple[object, float]:
    """``(build(), seconds it took)``."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    built = build()
    sync()
    return built, time.perf_counter() - start


def _buffer_mb(module: torch.nn.Module) -> float:
    """Megabytes held by a module's buffers (sparse buffers counted by their index and value arrays)."""
    total = 0
    for b in module.buffers():
        parts = (b.crow_indices(), b.col_indices(), b.values()) if b.layout == torch.sparse_csr else (b,)
        total += sum(t.numel() * t.element_size() for t in parts)
    return total / 2**20


def _records(case: str, methods: list[str], seconds: list[float], **extra: list) -> list[dict]:
    """One record per method; ``extra`` maps a key to one value per method."""
    rows = []
    for i, (method, sec) in enumerate(zip(methods, seconds)):
        row = {"section": "ct", "case": case, "method": method, "seconds": sec}
        row["ratio_vs_project"] = sec / seconds[0]
        row.update({key: values[i] for key, values in extra.items()})
        rows.append(row)
    return rows


def _size_records(size: int, repeats: int, device: str) -> list[dict]:
    """All cases for one image size."""
    methods = ["liftinv Radon", "deepinv Tomography", "skimage"]
    ours, t_ours = _timed(lambda: Radon(size, N_ANGLES, device=device), device)
    tomography = lambda: dinv.physics.Tomography(N_ANGLES, size, normalize=False, device=device)  # noqa: E731
    ref, t_ref = _timed(tomography, device)
    memory = [_buffer_mb(ours), _buffer_mb(ref)]
    records = _records(f"construction {size}x{size}", methods[:2], [t_ours, t_ref], memory_mb=memory)
    theta = ours.angles.cpu().numpy()
    phantom = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True).astype(np.float32)

    def sk_radon(images):
        return [radon(img, theta, circle=False) for img in images]

    def sk_backproject(sinograms, filter_name):
        return [iradon(s, theta, output_size=size, filter_name=filter_name, circle=False) for s in sinograms]

    for batch in BATCHES:
        name = f"{size}x{size} b{batch}"
        x = torch.from_numpy(phantom).to(device)[None, None].repeat(batch, 1, 1, 1)
        images = [phantom] * batch
        y_ours, y_ref, sinograms = ours.A(x), ref.A(x), sk_radon(images)
        fns = [lambda: ours.A(x), lambda: ref.A(x), lambda: sk_radon(images)]
        forward = median_seconds(fns, repeats, device)
        fns = [lambda: ours.A_adjoint(y_ours), lambda: ref.A_adjoint(y_ref)]
        fns.append(lambda: sk_backproject(sinograms, None))
        adjoint = median_seconds(fns, repeats, device)
        records += _records(f"A {name}", methods, forward)
        records += _records(f"A_adjoint {name}", methods, adjoint)
        records += _records(f"A + A_adjoint {name}", methods, [f + a for f, a in zip(forward, adjoint)])
        fns = [lambda: ours.fbp(y_ours), lambda: ref.fbp(y_ref), lambda: sk_backproject(sinograms, "ramp")]
        seconds = median_seconds(fns, repeats, device)
        recons = [ours.fbp(y_ours)[0, 0].cpu().numpy(), ref.fbp(y_ref)[0, 0].cpu().numpy()]
        recons.append(sk_backproject(sinograms[:1], "ramp")[0].astype(np.float32))
        psnr = [peak_signal_noise_ratio(phantom, r, data_range=1.0) for r in recons]
        records += _records(f"fbp {name}", methods, seconds, psnr=psnr)
    return records


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """Time the CT operators of the project, deepinv and scikit-image.

    Args:
        quick: 128x128 only and fewer repeats; otherwise 128x128 and 256x256.
        device: torch device string (scikit-image always runs on the CPU).

    Returns:
        One record per (case, method) with keys ``section, case, method, seconds,
        ratio_vs_project`` and ``psnr`` (fbp) or ``memory_mb`` (construction).
    """
    repeats = 3 if quick else 7
    records = []
    with torch.no_grad():
        for size in (128,) if quick else (128, 256):
            records += _size_records(size, repeats, device)
    return records


if __name__ == "__main__":
    from liftinv.bench import run_module

    raise SystemExit(run_module(__spec__.name, run, __doc__))
