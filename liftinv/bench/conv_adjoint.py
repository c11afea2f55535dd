"""The adjoint convolution of the networks against ``F.conv_transpose2d``, side by side in one run.

``python -m liftinv.bench conv-adjoint [--quick] [--device cpu]``: :func:`liftinv.affine.conv_adjoint`
(:math:`L^* u` for a convolution :math:`L` from ``C_in`` channels to ``C``: the map of
``ConvAdjoint`` and ``NormalStep``, and the backward pass of the lifted problems' stride-1
convolutions) and ``F.conv_transpose2d`` on the shapes of the training setups and of the ResNet
of the inversion benchmark (batch, ``C``, ``C_in``, image size, kernel), float32,
single-threaded on the CPU. ``no grad`` times the value alone (lifted graphs, inference);
``with grad`` the value and both vector-Jacobian products (backpropagation). Median of repeats after warm-up, the two called in
turn; ``ratio_vs_project`` is the time divided by the project's (> 1: slower than the project).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from liftinv.affine import conv_adjoint
from liftinv.bench.timing import median_seconds

#: ``(setup, batch, channels C, input channels C_in of L, image size, kernel)``
SHAPES = (
    ("denoising PNN", 32, 16, 1, 32, 5),
    ("deblurring unrolled", 32, 8, 1, 32, 3),
    ("ct unrolled (quick)", 16, 8, 1, 32, 3),
    ("ct unrolled", 16, 8, 1, 64, 3),
    ("inversion ResNet", 4, 4, 4, 64, 3),
)


def _timed(fn, u, w, padding, grad: bool):
    if not grad:
        return lambda: fn(u, w, padding)
    cotangent = torch.ones(len(u), w.shape[1], *u.shape[2:], device=u.device)
    return lambda: torch.autograd.grad(fn(u, w, padding), (u, w), cotangent)


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """One record per (shape, mode, method) with ``seconds`` and ``ratio_vs_project``."""
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    methods = (("liftinv", conv_adjoint), ("torch conv_transpose2d", lambda u, w, p: F.conv_transpose2d(u, w, padding=p)))
    records = []
    try:
        for name, batch, channels, c_in, size, kernel in SHAPES:
            u = torch.randn(batch, channels, size, size, generator=g).to(device).requires_grad_()
            w = torch.randn(channels, c_in, kernel, kernel, generator=g).to(device).requires_grad_()
            for mode, grad in (("no grad", False), ("with grad", True)):
                with torch.set_grad_enabled(grad):
                    fns = [_timed(fn, u, w, kernel // 2, grad) for _, fn in methods]
                    seconds = median_seconds(fns, 5 if quick else 21, device)
                for (method, _), sec in zip(methods, seconds):
                    records.append({
                        "section": "conv-adjoint",
                        "case": f"{name} b{batch} c{channels}->{c_in} {size}x{size} k{kernel} {mode}",
                        "method": method, "seconds": sec, "ratio_vs_project": sec / seconds[0],
                    })
    finally:
        torch.set_num_threads(threads)
    return records


if __name__ == "__main__":
    from liftinv.bench import run_module

    raise SystemExit(run_module(__spec__.name, run, __doc__))
