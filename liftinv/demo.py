r"""Classical demo: sparse-view CT, deblurring and accelerated MRI on the bundled data.

Each problem is built by a function ``builder(config, generator) -> Problem`` listed in
:data:`PROBLEMS`; a :class:`Problem` holds the ground truth, a picture of the measurements and its
reconstruction methods (name -> zero-argument callable). :func:`run_demo` runs every method,
scores it against the ground truth (PSNR, SSIM) and writes ``demo_classical.png``,
``demo_table.md`` and ``demo_results.json``. To extend the demo, add methods to a problem or
append a builder.

Regularisation weights were chosen by a grid search on the ``val`` split (4 images per problem,
PSNR); the demo images come from the ``test`` split.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from deepinv.physics import GaussianNoise
from torch import Tensor
from tqdm import tqdm

from liftinv.classical import fbp, tikhonov, tv_reconstruction, wiener, zero_filled
from liftinv.data import load_dataset
from liftinv.metrics import psnr, ssim
from operators.blur import Blur
from operators.kernels import gaussian_kernel
from operators.masks import random_mask
from operators.mri import MRI
from operators.radon import Radon

SIZE = 64
CT_ANGLES, CT_NOISE, CT_TIKHONOV, CT_TV = 30, 0.5, 30.0, 3.0
BLUR_SIGMA, BLUR_NOISE, BLUR_WIENER, BLUR_TV = 1.5, 0.02, 0.03, 0.003
MRI_ACCELERATION, MRI_NOISE, MRI_TV = 4.0, 0.02, 0.01
CT_INDEX, BLUR_INDEX, MRI_INDEX = 0, 22, 1  # test-split images shown


@dataclass(frozen=True)
class DemoConfig:
    """Iteration budgets and seed of the demo.

    Attributes:
        tv_iter: maximum PDHG iterations of TV reconstructions.
        cg_iter: maximum CG iterations of Tikhonov reconstructions.
        seed: seed of the ``torch.Generator`` drawing noise and sampling masks.
        threads: torch intra-op threads while the demo runs (restored afterwards); ``None`` keeps
            torch's setting. One thread is fastest for these 64x64 problems: with more, thread
            synchronisation outweighs the work (measured 15-50x slower on a loaded 2-core machine).
    """

    tv_iter: int = 500
    cg_iter: int = 100
    seed: int = 0
    threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("tv_iter", "cg_iter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {self.threads!r}")


FULL = DemoConfig()
QUICK = DemoConfig(tv_iter=60, cg_iter=20)


@dataclass(frozen=True)
class Problem:
    """One inverse problem of the demo.

    Attributes:
        name: short key (``"ct"``).
        title: one-line description for tables and figures.
        truth: ground truth (1, 1, H, W) in [0, 1].
        measurement: 2-D array picturing the measurements.
        measurement_range: grey-level range ``(vmin, vmax)`` of ``measurement``; ``None`` scales
            to its own range.
        measurement_label: caption of ``measurement``.
        methods: reconstruction name -> callable returning (1, 1, H, W) comparable to ``truth``.
    """

    name: str
    title: str
    truth: Tensor
    measurement: np.ndarray
    measurement_range: tuple[float, float] | None
    measurement_label: str
    methods: dict[str, Callable[[], Tensor]]


def ct_problem(config: DemoConfig, generator: torch.Generator) -> Problem:
    """Sparse-view parallel-beam CT of a test ellipse phantom with Gaussian noise on the sinogram."""
    x = load_dataset("ellipses", "test").tensors[0][CT_INDEX : CT_INDEX + 1]
    radon = Radon(SIZE, CT_ANGLES, noise_model=GaussianNoise(sigma=CT_NOISE, rng=generator))
    y = radon(x)
    return Problem(
        name="ct",
        title=f"CT: {SIZE}x{SIZE} phantom, {CT_ANGLES} views, noise sigma {CT_NOISE}",
        truth=x,
        measurement=y[0, 0].numpy(),
        measurement_range=None,
        measurement_label=f"sinogram ({radon.n_detectors} x {CT_ANGLES})",
        methods={
            "FBP (ramp)": lambda: fbp(y, radon, "ramp"),
            f"Tikhonov CG (lam={CT_TIKHONOV:g})": lambda: tikhonov(y, radon, CT_TIKHONOV, n_iter=config.cg_iter),
            f"TV PDHG (w={CT_TV:g})": lambda: tv_reconstruction(y, radon, CT_TV, n_iter=config.tv_iter),
        },
    )


def deblurring_problem(config: DemoConfig, generator: torch.Generator) -> Problem:
    """Circular Gaussian deblurring of a 64x64 test natural patch with Gaussian noise."""
    x = load_dataset("patches64", "test").tensors[0][BLUR_INDEX : BLUR_INDEX + 1]
    blur = Blur(gaussian_kernel(BLUR_SIGMA, dtype=torch.float32), boundary="circular",
                noise_model=GaussianNoise(sigma=BLUR_NOISE, rng=generator))
    y = blur(x)
    return Problem(
        name="deblurring",
        title=f"Deblurring: Gaussian sigma {BLUR_SIGMA}, noise sigma {BLUR_NOISE}",
        truth=x,
        measurement=y[0, 0].numpy(),
        measurement_range=(0.0, 1.0),
        measurement_label=f"blurred, PSNR {psnr(y.clamp(0, 1), x).item():.2f}",
        methods={
            f"Wiener (lam={BLUR_WIENER:g})": lambda: wiener(y, blur, BLUR_WIENER),
            f"TV PDHG (w={BLUR_TV:g})": lambda: tv_reconstruction(y, blur, BLUR_TV, n_iter=config.tv_iter),
        },
    )


def _magnitude(z: Tensor) -> Tensor:
    """Modulus of a (B, 2, H, W) real/imaginary image, (B, 1, H, W)."""
    return z.pow(2).sum(1, keepdim=True).sqrt()


def mri_problem(config: DemoConfig, generator: torch.Generator) -> Problem:
    """Single-coil Cartesian MRI of a test ellipse phantom (real image): random 4x column mask,
    Gaussian noise on the sampled k-space entries; images are compared in modulus."""
    x = load_dataset("ellipses", "test").tensors[0][MRI_INDEX : MRI_INDEX + 1]
    mask = random_mask((SIZE, SIZE), MRI_ACCELERATION, generator=generator)
    mri = MRI(mask, noise_model=GaussianNoise(sigma=MRI_NOISE, rng=generator))
    y = mri(torch.cat([x, torch.zeros_like(x)], dim=1))
    return Problem(
        name="mri",
        title=f"MRI: {SIZE}x{SIZE} phantom, {MRI_ACCELERATION:g}x random mask, noise sigma {MRI_NOISE}",
        truth=x,
        measurement=np.log10(MRI_NOISE + _magnitude(y)[0, 0].numpy()),
        measurement_range=None,
        measurement_label=f"k-space, log10({MRI_NOISE:g} + |y|)",
        methods={
            "zero-filled": lambda: _magnitude(zero_filled(y, mri)),
            f"TV PDHG (w={MRI_TV:g})": lambda: _magnitude(tv_reconstruction(y, mri, MRI_TV, n_iter=config.tv_iter)),
        },
    )


PROBLEMS: tuple[Callable[[DemoConfig, torch.Generator], Problem], ...] = (ct_problem, deblurring_problem, mri_problem)


@dataclass(frozen=True)
class MethodResult:
    """Scores of one reconstruction: PSNR (dB) and SSIM against the truth, wall time (s)."""

    problem: str
    method: str
    psnr: float
    ssim: float
    seconds: float


def _run_problem(problem: Problem) -> tuple[dict[str, Tensor], list[MethodResult]]:
    images, results = {}, []
    for method, reconstruct in tqdm(problem.methods.items(), desc=problem.name, leave=False, unit="method"):
        start = time.perf_counter()
        with torch.no_grad():
            x = reconstruct()
        seconds = time.perf_counter() - start
        images[method] = x
        results.append(MethodResult(problem.name, method, float(psnr(x, problem.truth)),
                                    float(ssim(x, problem.truth)), seconds))
    return images, results


def format_table(results: list[MethodResult]) -> str:
    """Markdown table with one row per (problem, method)."""
    lines = ["| problem | method | PSNR (dB) | SSIM | time (s) |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r.problem} | {r.method} | {r.psnr:.2f} | {r.ssim:.4f} | {r.seconds:.2f} |" for r in results]
    return "\n".join(lines)


def save_figure(path: Path, rows: list[tuple[Problem, dict[str, Tensor], list[MethodResult]]]) -> None:
    """Grid: one row per problem with truth, measurements and each reconstruction (PSNR/SSIM in titles)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 2 + max(len(problem.methods) for problem, _, _ in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.6 * ncols, 2.9 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for axs, (problem, images, results) in zip(axes, rows):
        axs[0].imshow(problem.truth[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axs[0].set_title("ground truth", fontsize=9)
        axs[0].set_ylabel(problem.title.replace(": ", "\n", 1).replace(", ", "\n"), fontsize=9)
        vmin, vmax = problem.measurement_range or (None, None)
        axs[1].imshow(problem.measurement, cmap="gray", aspect="auto", vmin=vmin, vmax=vmax)
        axs[1].set_title(problem.measurement_label, fontsize=9)
        for ax, result in zip(axs[2:], results):
            ax.imshow(images[result.method][0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{result.method}\n{result.psnr:.2f} dB, SSIM {result.ssim:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(out_dir: str | Path = "out", quick: bool = False) -> list[MethodResult]:
    """Run every problem of :data:`PROBLEMS`, write the figure, table and JSON to ``out_dir``,
    print the table, and return the scores. ``quick`` uses the smaller iteration budgets of
    :data:`QUICK` (same problems)."""
    config = QUICK if quick else FULL
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(config.seed)
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        start = time.perf_counter()
        rows, results = [], []
        for builder in tqdm(PROBLEMS, desc="demo", unit="problem"):
            problem = builder(config, generator)
            images, scores = _run_problem(problem)
            rows.append((problem, images, scores))
            results += scores
        total = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous_threads)
    table = format_table(results)
    figure = out / "demo_classical.png"
    save_figure(figure, rows)
    (out / "demo_table.md").write_text(
        f"# Classical reconstructions ({'quick' if quick else 'full'} demo, {total:.1f} s)\n\n{table}\n"
    )
    payload = {
        "quick": quick,
        "config": {"tv_iter": config.tv_iter, "cg_iter": config.cg_iter, "seed": config.seed},
        "seconds": total,
        "problems": {problem.name: problem.title for problem, _, _ in rows},
        "results": [vars(r) for r in results],
    }
    (out / "demo_results.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(table)
    print(f"\n{len(results)} reconstructions in {total:.1f} s; figure {figure}, "
          f"table {out / 'demo_table.md'}, scores {out / 'demo_results.json'}")
    return results
