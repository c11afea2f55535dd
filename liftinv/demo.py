r"""Main demo: sparse-view CT, deblurring and accelerated MRI on the bundled data, classical
reconstructions against unrolled networks trained by lifted Bregman training, and the inversion of
a network by lifted and by gradient inversion.

Each problem is built by a function ``builder(config, generator) -> Problem`` listed in
:data:`PROBLEMS` (reconstructions) or :data:`INVERSIONS`; a :class:`Problem` holds the ground
truth, a picture of the measurements, its methods (name -> zero-argument callable) and, for the
reconstructions, the :class:`~liftinv.architectures.UnrolledPrimalDual` trained for its operator
(lifted Bregman, BCD with Adam on the weights, ``DemoConfig.train_time`` seconds on the
``train`` split: ellipses for CT and MRI, 64x64 natural patches for deblurring). :func:`run_demo`
runs every method, scores it against the ground truth (PSNR, SSIM) and writes
``demo_classical.png``, ``demo_inversion.png``, ``demo_table.md``, ``demo_results.json`` and the
trained networks ``models/<problem>.pt`` (for ``liftinv reconstruct --model``). To extend the
demo, add methods to a problem or append a builder.

Regularisation weights were chosen by a grid search on the ``val`` split (4 images per problem,
PSNR); the demo images come from the ``test`` split. The unrolled networks get a fixed time
budget, not a fixed number of epochs, so their scores vary a little with the machine's speed.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from deepinv.physics import GaussianNoise
from torch import Tensor, nn
from tqdm import tqdm

from liftinv.architectures import UnrolledPrimalDual
from liftinv.checkpoint import check_output_file, write_figure, write_text
from liftinv.classical import fbp, tikhonov, tv_reconstruction, wiener, zero_filled
from liftinv.data import load_dataset
from liftinv.inversion import InversionConfig, invert
from liftinv.inversion_baseline import invert_gradient
from liftinv.metrics import psnr, ssim
from liftinv.models import save_model
from liftinv.penalty import BREGMAN
from liftinv.potentials import TV
from liftinv.solvers import BCD
from liftinv.solvers.rules import Adam
from liftinv.tasks import Reconstruction
from liftinv.training import Lifted, train
from liftinv.validation import check_flag, positive_finite
from operators.blur import Blur
from operators.checks import is_integer
from operators.kernels import gaussian_kernel
from operators.masks import random_mask
from operators.mri import MRI
from operators.radon import Radon

SIZE = 64
CT_ANGLES, CT_NOISE, CT_TIKHONOV, CT_TV = 30, 0.5, 30.0, 3.0
BLUR_SIGMA, BLUR_NOISE, BLUR_WIENER, BLUR_TV = 1.5, 0.02, 0.03, 0.003
MRI_ACCELERATION, MRI_NOISE, MRI_TV = 4.0, 0.02, 0.01
INVERSION_SIZE, INVERSION_NOISE = 32, 0.05
CT_INDEX, BLUR_INDEX, MRI_INDEX, INVERSION_INDEX = 0, 22, 1, 0  # test-split images shown
UNROLLED = "unrolled (lifted Bregman)"


@dataclass(frozen=True)
class DemoConfig:
    """Iteration budgets and seed of the demo.

    Attributes:
        tv_iter: maximum PDHG iterations of TV reconstructions.
        cg_iter: maximum CG iterations of Tikhonov reconstructions.
        inversion_iter: maximum iterations per solve of the network inversions.
        seed: seed of the ``torch.Generator`` drawing noise and sampling masks (and, offset by
            one, of the generator initialising and training the unrolled networks,
            :meth:`training_generator`).
        train_time: training time budget (s) of each unrolled network.
        threads: torch intra-op threads while the demo runs (restored afterwards); ``None`` keeps
            torch's setting. One thread is fastest for these 64x64 problems: with more, thread
            synchronisation outweighs the work (measured 15-50x slower on a loaded 2-core machine).
    """

    tv_iter: int = 500
    cg_iter: int = 100
    inversion_iter: int = 1000
    seed: int = 0
    train_time: float = 60.0
    threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("tv_iter", "cg_iter", "inversion_iter"):
            value = getattr(self, name)
            if not is_integer(value) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))  # frozen; a NumPy integer becomes an int
        if not is_integer(self.seed):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "train_time", positive_finite("train_time", self.train_time))  # written to demo_results.json
        if self.threads is not None and (not is_integer(self.threads) or self.threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {self.threads!r}")
        if self.threads is not None:
            object.__setattr__(self, "threads", int(self.threads))

    def training_generator(self) -> torch.Generator:
        """A fresh ``torch.Generator`` seeded with ``seed + 1``, which initialises and trains an
        unrolled network."""
        return torch.Generator().manual_seed(self.seed + 1)


FULL = DemoConfig()
QUICK = DemoConfig(tv_iter=60, cg_iter=20, inversion_iter=200, train_time=3.0)


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
        model: the trained unrolled network (saved by :func:`run_demo`), ``None`` if there is none.
        physics: the operator ``model`` was trained for.
        train_seconds: wall time spent training ``model``.
    """

    name: str
    title: str
    truth: Tensor
    measurement: np.ndarray
    measurement_range: tuple[float, float] | None
    measurement_label: str
    methods: dict[str, Callable[[], Tensor]]
    model: UnrolledPrimalDual | None = None
    physics: object = None
    train_seconds: float = 0.0


def train_unrolled(physics, images: Tensor, noise: float, net: UnrolledPrimalDual,
                   config: DemoConfig, generator: torch.Generator) -> float:
    r"""Train ``net`` for :math:`y = Ax + \sigma n` (``physics``, :math:`\sigma` = ``noise``) on the
    clean ``images`` by lifted Bregman training (BCD, Adam on the weights) for ``config.train_time``
    seconds; return the wall time spent."""
    start = time.perf_counter()
    method = Lifted(BREGMAN, BCD(param_rule=Adam(1e-2)), lipschitz_every=20, power_iters=1)
    with torch.enable_grad():
        train(net, images, task=Reconstruction(physics, noise), method=method, epochs=1000, batch_size=16,
              time_budget=config.train_time, generator=generator, progress=False)
    return time.perf_counter() - start


def ct_problem(config: DemoConfig, generator: torch.Generator) -> Problem:
    """Sparse-view parallel-beam CT of a test ellipse phantom with Gaussian noise on the sinogram."""
    x = load_dataset("ellipses", "test").tensors[0][CT_INDEX : CT_INDEX + 1]
    radon = Radon(SIZE, CT_ANGLES, noise_model=GaussianNoise(sigma=CT_NOISE, rng=generator))
    y = radon(x)
    trainer = config.training_generator()
    net = UnrolledPrimalDual(radon, 10, 8, (1, SIZE, SIZE), threshold=0.1, adjoint_init=False, generator=trainer)
    for layer in list(net.lifted.layers)[1::2]:  # dual layers: their maps carry s ~ |A|^2 / 2
        layer.weight = 1 / net.s**2
    seconds = train_unrolled(radon, load_dataset("ellipses", "train").tensors[0], CT_NOISE, net, config, trainer)
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
            UNROLLED: lambda: net(y, radon),
        },
        model=net, physics=radon, train_seconds=seconds,
    )


def deblurring_problem(config: DemoConfig, generator: torch.Generator) -> Problem:
    """Circular Gaussian deblurring of a 64x64 test natural patch with Gaussian noise."""
    x = load_dataset("patches64", "test").tensors[0][BLUR_INDEX : BLUR_INDEX + 1]
    blur = Blur(gaussian_kernel(BLUR_SIGMA, dtype=torch.float32), boundary="circular",
                noise_model=GaussianNoise(sigma=BLUR_NOISE, rng=generator))
    y = blur(x)
    trainer = config.training_generator()
    net = UnrolledPrimalDual(blur, 5, 8, (1, SIZE, SIZE), threshold=0.02, generator=trainer)
    seconds = train_unrolled(blur, load_dataset("patches64", "train").tensors[0], BLUR_NOISE, net, config, trainer)
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
            UNROLLED: lambda: net(y, blur),
        },
        model=net, physics=blur, train_seconds=seconds,
    )


def _magnitude(z: Tensor) -> Tensor:
    """Modulus of a (B, 2, H, W) real/imaginary image, (B, 1, H, W)."""
    return z.pow(2).sum(1, keepdim=True).sqrt()


def _complex(x: Tensor) -> Tensor:
    """Real images (B, 1, H, W) as real/imaginary images (B, 2, H, W) with imaginary part 0."""
    return torch.cat([x, torch.zeros_like(x)], dim=1)


def mri_problem(config: DemoConfig, generator: torch.Generator) -> Problem:
    """Single-coil Cartesian MRI of a test ellipse phantom (real image): random 4x column mask,
    Gaussian noise on the sampled k-space entries; images are compared in modulus."""
    x = load_dataset("ellipses", "test").tensors[0][MRI_INDEX : MRI_INDEX + 1]
    mask = random_mask((SIZE, SIZE), MRI_ACCELERATION, generator=generator)
    mri = MRI(mask, noise_model=GaussianNoise(sigma=MRI_NOISE, rng=generator))
    y = mri(_complex(x))
    trainer = config.training_generator()
    net = UnrolledPrimalDual(mri, 5, 8, (2, SIZE, SIZE), threshold=0.02, generator=trainer)
    seconds = train_unrolled(mri, _complex(load_dataset("ellipses", "train").tensors[0]), MRI_NOISE, net, config, trainer)
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
            UNROLLED: lambda: _magnitude(net(y, mri)),
        },
        model=net, physics=mri, train_seconds=seconds,
    )


def feature_network(generator: torch.Generator) -> nn.Sequential:
    r"""The network inverted by the demo: :math:`N(u) = W_2\,\mathrm{LeakyReLU}_{0.2}(W_1 u + b_1) + b_2`
    with :math:`W_1` 1 -> 4 channels 5x5, :math:`W_2` 4 -> 4 channels 3x3, weights drawn
    :math:`\mathcal N(0, 1/\text{fan-in})`, biases :math:`\mathcal N(0, 10^{-4})` (a stand-in for a
    network trained elsewhere, as in ``examples/invert_pretrained.py``)."""
    net = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 3, padding=1))
    with torch.no_grad():
        for conv in (net[0], net[2]):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / math.sqrt(conv.weight[0].numel()))
            conv.bias.copy_(0.01 * torch.randn(conv.bias.shape, generator=generator))
    return net


def inversion_problem(config: DemoConfig, generator: torch.Generator) -> Problem:
    r"""Invert :func:`feature_network` on a 32x32 test patch from its output with Gaussian noise
    (sigma 0.05): TV regularisation with box [0, 1], the weight chosen per solve by the
    discrepancy principle :math:`\|N(u_\alpha) - f\| = \delta = \sigma\sqrt{m}`; lifted inversion
    against gradient inversion through autograd."""
    x = load_dataset("patches", "test").tensors[0][INVERSION_INDEX : INVERSION_INDEX + 1]
    net = feature_network(generator)
    with torch.no_grad():
        clean = net(x)
    f = clean + INVERSION_NOISE * torch.randn(clean.shape, generator=generator)
    delta = INVERSION_NOISE * math.sqrt(clean[0].numel())
    settings = InversionConfig(max_iter=config.inversion_iter, tol=1e-4)

    def run(method: Callable) -> Tensor:
        with torch.enable_grad():
            return method(net, f, input_shape=(1, INVERSION_SIZE, INVERSION_SIZE), regularizer=TV(box=(0.0, 1.0)),
                          noise_level=delta, config=settings).input

    return Problem(
        name="inversion",
        title=f"Inversion: conv net 1-4-4 channels, noise sigma {INVERSION_NOISE}",
        truth=x,
        measurement=f[0, 0].numpy(),
        measurement_range=None,
        measurement_label=f"output channel 1 of 4 (delta {delta:.2f})",
        methods={"lifted (TV, discrepancy)": lambda: run(invert), "gradient (TV, discrepancy)": lambda: run(invert_gradient)},
    )


PROBLEMS: tuple[Callable[[DemoConfig, torch.Generator], Problem], ...] = (ct_problem, deblurring_problem, mri_problem)
#: Network inversions, shown in their own figure.
INVERSIONS: tuple[Callable[[DemoConfig, torch.Generator], Problem], ...] = (inversion_problem,)


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
    """Grid: one row per problem with truth, measurements and each reconstruction (PSNR/SSIM in
    titles); built without pyplot, so the caller's matplotlib backend is left as it is."""
    from matplotlib.figure import Figure

    ncols = 2 + max(len(problem.methods) for problem, _, _ in rows)
    fig = Figure(figsize=(2.6 * ncols, 2.9 * len(rows)))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
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
    write_figure(fig, path, dpi=110)


def _save_models(out: Path, rows: list[tuple[Problem, dict[str, Tensor], list[MethodResult]]],
                 config: DemoConfig) -> dict[str, str]:
    """Save the trained unrolled networks as ``out/models/<problem>.pt``; return problem -> path."""
    paths = {}
    for problem, _, results in rows:
        if problem.model is None:
            continue
        path = out / "models" / f"{problem.name}.pt"
        score = next(r for r in results if r.method == UNROLLED)
        save_model(problem.model, path, task=problem.name, physics=problem.physics,
                   extra={"train_time": config.train_time, "train_seconds": problem.train_seconds,
                          "demo_psnr": score.psnr, "demo_ssim": score.ssim})
        paths[problem.name] = str(path)
    return paths


#: What :func:`run_demo` writes in its output folder, file -> what it holds (``models/PROBLEM.pt``
#: stands for the trained networks ``models/<problem>.pt``, named once the problems are built).
OUTPUTS = {"demo_classical.png": "figure", "demo_inversion.png": "figure", "demo_table.md": "table",
           "demo_results.json": "scores", "models/PROBLEM.pt": "trained model"}


def run_demo(out_dir: str | Path = "out", quick: bool = False, train_seconds: float | None = None) -> list[MethodResult]:
    """Run every problem of :data:`PROBLEMS` (training their unrolled networks) and of
    :data:`INVERSIONS`; write ``demo_classical.png`` (reconstructions), ``demo_inversion.png``,
    ``demo_table.md``, ``demo_results.json`` and the trained networks ``models/<problem>.pt`` to
    ``out_dir``; print the table and where the results are; return the scores. ``quick`` uses the
    smaller budgets of :data:`QUICK` (same problems); ``train_seconds`` replaces the training time
    of either.

    Raises:
        TypeError: ``quick`` is not a bool.
        ValueError: ``train_seconds`` is not a finite positive number (checked as
            :attr:`DemoConfig.train_time`).
        OSError: ``out_dir`` or one of :data:`OUTPUTS` in it cannot be created or written (a folder
            where a file goes, a file where a folder goes, a folder that takes no new file), found
            before any problem is built (:func:`~liftinv.checkpoint.check_output_file`).
    """
    config = QUICK if check_flag("quick", quick) else FULL
    if train_seconds is not None:
        try:
            config = dataclasses.replace(config, train_time=train_seconds)
        except ValueError as err:  # DemoConfig names its field, train_time
            raise ValueError(f"train_seconds must be a finite positive number, got {train_seconds!r}") from err
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, what in OUTPUTS.items():  # before the work (minutes of it), which they are written after
        check_output_file(out / name, what)
    generator = torch.Generator().manual_seed(config.seed)
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        start = time.perf_counter()
        rows, inversions = [], []
        for builder in tqdm(PROBLEMS + INVERSIONS, desc="demo", unit="problem"):
            problem = builder(config, generator)
            (inversions if builder in INVERSIONS else rows).append((problem, *_run_problem(problem)))
        total = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous_threads)
    results = [r for _, _, scores in rows + inversions for r in scores]
    models = _save_models(out, rows, config)
    table = format_table(results)
    training = "\n".join(f"- {problem.name}: unrolled network trained for {problem.train_seconds:.1f} s, saved to {models[problem.name]}"
                         for problem, _, _ in rows if problem.model is not None)
    figure, inversion_figure = out / "demo_classical.png", out / "demo_inversion.png"
    save_figure(figure, rows)
    save_figure(inversion_figure, inversions)
    write_text(
        out / "demo_table.md",
        f"# Reconstructions and network inversion ({'quick' if quick else 'full'} demo, {total:.1f} s)\n\n"
        f"{table}\n\nTimes are of the reconstruction only; training:\n\n{training}\n",
    )
    payload = {
        "quick": quick,
        "config": {"tv_iter": config.tv_iter, "cg_iter": config.cg_iter, "inversion_iter": config.inversion_iter,
                   "train_time": config.train_time, "seed": config.seed},
        "seconds": total,
        "problems": {problem.name: problem.title for problem, _, _ in rows + inversions},
        "training_seconds": {problem.name: problem.train_seconds for problem, _, _ in rows if problem.model is not None},
        "models": models,
        "results": [vars(r) for r in results],
    }
    write_text(out / "demo_results.json", json.dumps(payload, indent=2) + "\n")
    print(table)
    print(f"\n{training}")
    print(f"\n{len(results)} reconstructions in {total:.1f} s (training included). Results in {out}/: "
          f"figures {figure} and {inversion_figure}, table {out / 'demo_table.md'}, scores {out / 'demo_results.json'}, "
          f"models {out / 'models'}/ (use with: liftinv reconstruct --simulate --model {out / 'models'}/<problem>.pt, "
          f"or --measurements FILE instead of --simulate)")
    return results
