"""Inversion of pre-trained networks: lifted versus gradient-based inversion, side by side.

``python -m liftinv.bench inversion [--quick] [--json FILE]`` (or ``python -m
liftinv.bench.inversion``) prints one table and saves the error-versus-noise plot to
``out/bench/inversion_noise.png``.

Tasks (test images of the bundled ``ellipses`` set, 64x64 in [0, 1]):

1. ``perceptron``: :math:`f = \\mathrm{ReLU}(Wu)`, :math:`W \\in \\mathbb R^{512\\times 4096}` standard normal.
2. ``encoder``: the encoder of a small convolutional autoencoder trained here with Adam on the
   training split (weights cached under ``out/bench/`` by a hash of the settings); the image is
   recovered from its code, and compared with the autoencoder's own decoder.
3. ``resnet``: a random tied convolutional ResNet
   :math:`u \\mapsto Q(\\dots(u_j + W_j^\\top\\sigma(W_j u_j + b_j))\\dots)P`, lifted with its
   residual stream eliminated (``residual="exact"``).

Each output gets Gaussian noise of norm ``noise`` times its norm (the noise level
:math:`\\delta` given to the methods is that norm). Every method uses TV with the box [0, 1], its
weight chosen by the discrepancy principle (:math:`\\tau = 1`) with the same search, starts from the
constant image 0.5, and gets the same wall-clock budget per solve of the search (no other
stopping rule), so ``seconds`` differ only through the number of solves the search needs.
Methods: ``lifted`` (:func:`liftinv.invert`: PDHG for the perceptron, BCD otherwise),
``lifted free-output`` (``free_output=True``, perceptron only: for the linear last layers of the
other tasks it is the same problem), ``gradient adam`` (:func:`~liftinv.inversion_baseline.invert_gradient`,
Adam with learning rate 0.01) and, in the full run, ``gradient lbfgs``. CPU runs are single-threaded
(restored afterwards) so that timings are not distorted by other processes on a shared machine.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter

import torch
from torch import Tensor, nn

from liftinv.architectures import ResNet
from liftinv.bench import verdict
from liftinv.checkpoint import atomic_path, write_figure
from liftinv.data import load_dataset
from liftinv.inversion import InversionConfig, InversionResult, invert
from liftinv.inversion_baseline import GradientOptimizer, invert_gradient
from liftinv.metrics import psnr, ssim
from liftinv.potentials import TV

OUT = Path("out/bench")
#: The lead in dB that lifted inversion must have over the best gradient method at equal time, on
#: the perceptron and the encoder (issue 5's target).
LEAD_DB = 1.0


@dataclass(frozen=True)
class Settings:
    """Sizes of a benchmark run."""

    images: int
    noise: tuple[float, ...]
    solve_seconds: float
    max_search: int
    lbfgs: bool
    epochs: int

    @property
    def autoencoder(self) -> AutoencoderSettings:
        """The settings of the encoder task's autoencoder (``epochs`` of training)."""
        return AutoencoderSettings(epochs=self.epochs)


QUICK = Settings(images=4, noise=(0.01, 0.05, 0.1), solve_seconds=1.5, max_search=6, lbfgs=False, epochs=12)
FULL = Settings(images=8, noise=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2), solve_seconds=3.0, max_search=10, lbfgs=True, epochs=12)


@dataclass(frozen=True)
class AutoencoderSettings:
    """Architecture and training of the task-2 autoencoder (hashed for the weight cache)."""

    code: int = 256
    channels: tuple[int, int] = (8, 16)
    slope: float = 0.1
    epochs: int = 12
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0


def _noisy(f: Tensor, rel: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``f`` plus Gaussian noise of norm ``rel * |f|`` per sample; returns the data and that norm."""
    noise = torch.randn(f.shape, generator=generator).to(f)
    delta = rel * f.flatten(1).norm(dim=1)
    noise = noise * (delta / noise.flatten(1).norm(dim=1)).reshape(-1, *(1,) * (f.ndim - 1))
    return f + noise, delta


def perceptron(generator: torch.Generator) -> nn.Module:
    """Task 1: Flatten, Linear(4096, 512) with standard normal weights and no bias, ReLU."""
    linear = nn.Linear(64 * 64, 512, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(512, 64 * 64, generator=generator))
    return nn.Sequential(nn.Flatten(), linear, nn.ReLU())


def autoencoder(s: AutoencoderSettings) -> tuple[nn.Sequential, nn.Sequential]:
    """Task 2: encoder 64x64 -> ``code`` (two stride-2 convolutions with leaky ReLU, then a linear
    map) and its mirror decoder, initialised from ``s.seed``."""
    c1, c2 = s.channels
    encoder = nn.Sequential(
        nn.Conv2d(1, c1, 4, 2, 1), nn.LeakyReLU(s.slope), nn.Conv2d(c1, c2, 4, 2, 1), nn.LeakyReLU(s.slope),
        nn.Flatten(), nn.Linear(c2 * 16 * 16, s.code),
    )
    decoder = nn.Sequential(
        nn.Linear(s.code, c2 * 16 * 16), nn.Unflatten(1, (c2, 16, 16)), nn.LeakyReLU(s.slope),
        nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.LeakyReLU(s.slope), nn.ConvTranspose2d(c1, 1, 4, 2, 1),
    )
    g = torch.Generator().manual_seed(s.seed)
    for m in [*encoder, *decoder]:
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            bound = 1.0 / math.sqrt(m.weight[0].numel())
            nn.init.uniform_(m.weight, -bound, bound, generator=g)
            nn.init.zeros_(m.bias)
    return encoder, decoder


def autoencoder_path(s: AutoencoderSettings) -> Path:
    """The weight cache of the autoencoder of settings ``s``: ``out/bench/autoencoder_<key>.pt``,
    ``key`` the first 16 hex digits of the SHA-256 of the settings as sorted JSON."""
    key = hashlib.sha256(json.dumps(asdict(s), sort_keys=True).encode()).hexdigest()[:16]
    return OUT / f"autoencoder_{key}.pt"


def trained_autoencoder(s: AutoencoderSettings) -> tuple[nn.Sequential, nn.Sequential, dict]:
    """Train (or load from the cache) the autoencoder on the ``ellipses`` training split by
    backpropagation, Adam on the mean squared reconstruction error, fixed shuffling seed."""
    encoder, decoder = autoencoder(s)
    path = autoencoder_path(s)
    if path.is_file():
        state = torch.load(path, weights_only=True)
        encoder.load_state_dict(state["encoder"])
        decoder.load_state_dict(state["decoder"])
        return encoder, decoder, state["info"]
    images = load_dataset("ellipses", "train")[:][0]
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=s.lr)
    g = torch.Generator().manual_seed(s.seed + 1)
    start = perf_counter()
    for _ in range(s.epochs):
        for idx in torch.randperm(len(images), generator=g).split(s.batch):
            loss = (decoder(encoder(images[idx])) - images[idx]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        train_mse = float((decoder(encoder(images)) - images).pow(2).mean())
    info = {"train_seconds": perf_counter() - start, "train_mse": train_mse}
    with atomic_path(path) as tmp:  # an interrupted write would leave a cache that fails to load
        torch.save({"encoder": encoder.state_dict(), "decoder": decoder.state_dict(), "info": info}, tmp)
    return encoder, decoder, info


def resnet(generator: torch.Generator) -> nn.Module:
    """Task 3: tied convolutional ResNet, 1 -> 4 channels, 3 blocks with leaky ReLU, -> 1 channel,
    lifted exactly (the penalised stream relaxes the network and slows the lifted solver)."""
    return ResNet(4, 3, nn.LeakyReLU(0.1), in_features=1, out_features=1, kernel_size=3, tied=True,
                  residual="exact", generator=generator)


def _methods(s: Settings, task: str) -> list[tuple[str, object]]:
    """``(name, function(network, data, delta, x0, config) -> InversionResult)``."""
    reg = TV(box=(0.0, 1.0))

    def lifted(free_output: bool):
        return lambda net, f, delta, x0, cfg: invert(net, f, regularizer=reg, noise_level=delta, x0=x0,
                                                     free_output=free_output, config=cfg)

    def gradient(opt: GradientOptimizer):
        return lambda net, f, delta, x0, cfg: invert_gradient(net, f, regularizer=reg, noise_level=delta, x0=x0,
                                                              config=cfg, optimizer=opt)

    methods = [("lifted", lifted(False))]
    if task == "perceptron":
        methods.append(("lifted free-output", lifted(True)))
    methods.append(("gradient adam", gradient(GradientOptimizer(lr=1e-2))))
    if s.lbfgs:
        methods.append(("gradient lbfgs", gradient(GradientOptimizer(lr=1.0, lbfgs=True))))
    return methods


def _record(task: str, rel: float, method: str, x: Tensor, truth: Tensor, seconds: float, result: InversionResult | None) -> dict:
    x = x.clamp(0, 1)
    record = {
        "section": "inversion", "task": task, "noise": rel, "method": method,
        "psnr": float(psnr(x, truth).mean()), "ssim": float(ssim(x, truth).mean()),
        "rel_error": float(((x - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)).mean()),
        "seconds": seconds,
    }
    if result is not None:
        record.update({
            "iterations": result.iterations, "solves": len(result.history.steps),
            "alpha": float(result.alpha.mean()),
            "discrepancy/target": float((result.discrepancy / result.target).mean()),
        })
    return record


@dataclass
class Case:
    """One task of the benchmark: the network, the true inputs and, per relative noise level,
    the noisy outputs and their noise norms :math:`\\delta`."""

    task: str
    network: nn.Module
    truth: Tensor
    noisy: list[tuple[float, Tensor, Tensor]]
    decoder: nn.Module | None = None


def _make_case(task: str, network: nn.Module, truth: Tensor, s: Settings, generator: torch.Generator, decoder=None) -> Case:
    with torch.no_grad():
        clean = network(truth)
    return Case(task, network, truth, [(rel, *_noisy(clean, rel, generator)) for rel in s.noise], decoder)


def cases(s: Settings, device: str = "cpu") -> Iterator[Case]:
    """The three tasks in order, with noise drawn from one generator (seed 0), so every run and
    :mod:`liftinv.bench.inversion_oracle` see the same data."""
    generator = torch.Generator().manual_seed(0)
    truth = load_dataset("ellipses", "test")[: s.images][0].to(device)
    yield _make_case("perceptron", perceptron(generator).to(device), truth, s, generator)
    ae = s.autoencoder
    encoder, decoder, info = trained_autoencoder(ae)
    print(f"autoencoder: code {ae.code}, train MSE {info['train_mse']:.3g}, trained in {info['train_seconds']:.1f} s")
    yield _make_case("encoder", encoder.to(device), truth, s, generator, decoder=decoder.to(device))
    yield _make_case("resnet", resnet(generator).to(device), truth, s, generator)


def _case(case: Case, s: Settings) -> list[dict]:
    x0 = torch.full_like(case.truth, 0.5)
    cfg = InversionConfig(max_iter=10**9, tol=0.0, max_time=s.solve_seconds, max_search=s.max_search)
    records = []
    for rel, data, delta in case.noisy:
        for name, method in _methods(s, case.task):
            start = perf_counter()
            result = method(case.network, data, delta, x0, cfg)
            records.append(_record(case.task, rel, name, result.input, case.truth, perf_counter() - start, result))
        if case.decoder is not None:
            start = perf_counter()
            with torch.no_grad():
                decoded = case.decoder(data)
            records.append(_record(case.task, rel, "decoder", decoded, case.truth, perf_counter() - start, None))
    return records


def targets(records: list[dict]) -> list[str]:
    """One line per target of the benchmark, with the numbers it compares: at each noise level,
    ``lifted`` at least :data:`LEAD_DB` above the best ``gradient ...`` method on the perceptron
    and the encoder, and above the ``decoder`` where there is one; per task, the relative error of
    ``lifted`` falling with the noise level (stability)."""
    psnrs = {(r["task"], r["noise"], r["method"]): r["psnr"] for r in records}
    lines = []
    for task in dict.fromkeys(r["task"] for r in records):
        errors = sorted((r["noise"], r["rel_error"]) for r in records if r["task"] == task and r["method"] == "lifted")
        for rel, _ in errors:
            lifted = psnrs[task, rel, "lifted"]
            gradient = {m: p for (t, n, m), p in psnrs.items() if (t, n) == (task, rel) and m.startswith("gradient")}
            if task in ("perceptron", "encoder") and gradient:
                best = max(gradient, key=gradient.get)
                lead = lifted - gradient[best]
                lines.append(f"{task} at {100 * rel:g}% noise: lifted {lifted:.2f} vs {best} {gradient[best]:.2f} dB, "
                             f"lead {lead:+.2f} dB (target +{LEAD_DB:g} dB: {verdict(lead >= LEAD_DB)})")
            if (task, rel, "decoder") in psnrs:
                decoder = psnrs[task, rel, "decoder"]
                lines.append(f"{task} at {100 * rel:g}% noise: lifted {lifted:.2f} vs decoder {decoder:.2f} dB "
                             f"({verdict(lifted > decoder)})")
        if len(errors) > 1:
            falls = all(low[1] < high[1] for low, high in zip(errors, errors[1:]))
            curve = ", ".join(f"{e:.4f} at {100 * rel:g}%" for rel, e in errors)
            lines.append(f"{task}: lifted relative error {curve}: falls with the noise ({verdict(falls)})")
    return lines


def plot(records: list[dict], path: Path) -> None:
    """Relative error of the recovered input against the noise level, one panel per task."""
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r["task"] for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records))
    colours = {m: f"C{i}" for i, m in enumerate(methods)}  # one colour per method in every panel
    fig = Figure(figsize=(4.2 * len(tasks), 3.6))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in records if r["task"] == task]
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["noise"], r["rel_error"]) for r in rows if r["method"] == method)
            ax.loglog(*zip(*pts), marker="o", label=method, color=colours[method])
        label_panel(ax, task, "relative noise level", "relative error of the input")
    save_figure(fig, path)


def label_panel(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels, a light grid and the legend of one panel."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` (a ``matplotlib.figure.Figure``, built without pyplot, so no backend is
    touched) to ``path`` atomically (:func:`~liftinv.checkpoint.write_figure`, which creates its
    folder)."""
    fig.tight_layout()
    write_figure(fig, path, dpi=120)


def outputs(quick: bool = False) -> list[Path]:
    """The files :func:`run` writes: the plot and the autoencoder's weight cache (checked before
    the run by :mod:`liftinv.bench`)."""
    return [OUT / "inversion_noise.png", autoencoder_path((QUICK if quick else FULL).autoencoder)]


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """All three tasks; one record per (task, noise level, method) with the mean PSNR, SSIM and
    relative error over the images, wall-clock seconds, iterations, solves of the parameter
    search, mean weight and mean discrepancy / target. Saves ``out/bench/inversion_noise.png``
    and prints the target checks (:func:`targets`)."""
    s = QUICK if quick else FULL
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        records = [r for case in cases(s, device) for r in _case(case, s)]
    finally:
        torch.set_num_threads(threads)
    plot(records, OUT / "inversion_noise.png")
    print("\n".join(["", "targets:", *targets(records), f"plot: {OUT}/inversion_noise.png"]), flush=True)
    return records


if __name__ == "__main__":
    from liftinv.bench import run_module

    raise SystemExit(run_module(__spec__.name, run, __doc__))
