r"""How good can each inversion be? PSNR at the best regularisation weight of a grid.

``python -m liftinv.bench inversion-oracle [--quick] [--json FILE]`` solves the perceptron and
encoder tasks of :mod:`liftinv.bench.inversion` (same networks, images and noisy data) with TV on
the box [0, 1] at every weight of a fixed grid :math:`\alpha_0 > \alpha_1 > \dots`, each solve
warm-started from the previous one (continuation) with the same wall-clock budget per solve as
that benchmark, and reports per method and noise level the mean over the images of

.. math::
    \max_j \mathrm{PSNR}(u_{\alpha_j}, u^\dagger),

the weight chosen per image with the true image (an oracle, not a parameter choice a user can
make). The benchmark's targets compare the methods at the weight of the discrepancy principle;
this table shows what another choice of the weight could give each method along this path, so
it tells a gap that a better parameter choice could close from one that the model itself sets
(lifted: the convex Bregman data term on the projected and snapped data; gradient: the squared
output error :math:`\tfrac12\|N(u) - f_\delta\|^2` through the network). It is not a bound:
the solves stop on time, and the path decides how far each gets. Continuation suits the
gradient method (its cold solves from 0.5 at small weights end far lower) and the perceptron's
PDHG, but on the encoder one cold solve of lifted inversion with the time of the benchmark's
whole weight search goes further than the path of short solves (BENCHMARKS.md). ``edge`` counts
the images whose best weight is an end of the grid (there the grid may not contain the
optimum). The ResNet task is left out: the benchmark's targets concern the perceptron and the
encoder.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from time import perf_counter

import torch
from torch import Tensor, nn

from liftinv.bench.inversion import FULL, OUT, QUICK, Case, Settings, autoencoder_path, cases, label_panel, save_figure
from liftinv.inversion import InversionConfig, invert
from liftinv.inversion_baseline import GradientOptimizer, invert_gradient
from liftinv.metrics import psnr
from liftinv.potentials import TV

#: Weight grid per task, largest first, in half decades from the largest discrepancy weights
#: of the benchmark (about 30 on the perceptron, 5e-3 on the encoder) down to where the PSNR has
#: levelled off (a first run with grids ending at 0.03 and 1e-5 had its best at that end).
GRIDS = {
    "perceptron": tuple(10.0 ** (1.5 - k / 2) for k in range(10)),
    "encoder": tuple(10.0 ** (-2 - k / 2) for k in range(9)),
}

#: ``(network, data, delta, alpha, x0, config) -> recovered input``
Method = Callable[[nn.Module, Tensor, Tensor, float, Tensor, InversionConfig], Tensor]


def _lifted(net, data, delta, alpha, x0, cfg) -> Tensor:
    reg = TV(alpha, box=(0.0, 1.0))
    return invert(net, data, regularizer=reg, noise_level=delta, x0=x0, config=cfg).input.detach()


def _gradient(net, data, delta, alpha, x0, cfg) -> Tensor:
    reg = TV(alpha, box=(0.0, 1.0))
    return invert_gradient(net, data, regularizer=reg, noise_level=delta, x0=x0, config=cfg,
                           optimizer=GradientOptimizer(lr=1e-2)).input.detach()


#: The methods of the inversion benchmark, with an explicit weight (``noise_level`` is passed
#: for the lifted data's snapping; an explicit weight is used as given).
METHODS: dict[str, Method] = {"lifted": _lifted, "gradient adam": _gradient}


def psnr_over_grid(method: Method, network: nn.Module, data: Tensor, delta: Tensor, truth: Tensor,
                   grid: tuple[float, ...], cfg: InversionConfig) -> Tensor:
    """PSNR of each image (columns) at each weight of ``grid`` (rows), solved in that order, each
    solve warm-started from the previous solution, the first from the constant image 0.5."""
    x = torch.full_like(truth, 0.5)
    values = []
    for alpha in grid:
        x = method(network, data, delta, alpha, x, cfg)
        values.append(psnr(x.clamp(0, 1), truth).double().cpu())
    return torch.stack(values)


def case_records(case: Case, grid: tuple[float, ...], cfg: InversionConfig) -> list[dict]:
    """One record per noise level and method of :data:`METHODS` for ``case``; ``psnr_by_alpha``
    is the mean PSNR at each weight of ``grid`` (JSON only)."""
    records = []
    for rel, data, delta in case.noisy:
        for name, method in METHODS.items():
            start = perf_counter()
            values = psnr_over_grid(method, case.network, data, delta, case.truth, grid, cfg)
            best, index = values.max(0)
            records.append({
                "section": "inversion-oracle", "task": case.task, "noise": rel, "method": name,
                "best_psnr": float(best.mean()),
                "best_alpha": float(torch.tensor([grid[i] for i in index]).log().mean().exp()),
                "edge": int(((index == 0) | (index == len(grid) - 1)).sum()),
                "solves": len(grid), "seconds": perf_counter() - start,
                "alphas": list(grid), "psnr_by_alpha": values.mean(1).tolist(),
            })
    return records


def plot(records: list[dict], path: Path) -> None:
    """Mean PSNR against the weight, one panel per task, one line per method and noise level."""
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r["task"] for r in records))
    fig = Figure(figsize=(5 * len(tasks), 3.8))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in records if r["task"] == task]
        noises = sorted({r["noise"] for r in rows})
        for r in rows:
            style = "-" if r["method"] == "lifted" else "--"
            ax.semilogx(r["alphas"], r["psnr_by_alpha"], style, marker=".", color=f"C{noises.index(r['noise'])}",
                        label=f"{r['method']}, {100 * r['noise']:g}% noise")
        label_panel(ax, f"{task}: PSNR against the TV weight", "alpha", "mean PSNR (dB)")
    save_figure(fig, path)


def outputs(quick: bool = False) -> list[Path]:
    """The files :func:`run` writes: the plot and the encoder task's weight cache (checked before
    the run by :mod:`liftinv.bench`)."""
    return [OUT / "inversion_oracle.png", autoencoder_path((QUICK if quick else FULL).autoencoder)]


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """The perceptron and encoder tasks; ``best_alpha`` is the geometric mean over the images.
    Saves ``out/bench/inversion_oracle.png`` (mean PSNR against the weight)."""
    s: Settings = QUICK if quick else FULL
    cfg = InversionConfig(max_iter=10**9, tol=0.0, max_time=s.solve_seconds)
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        records = []
        for case in cases(s, device):
            if case.task in GRIDS:
                records += case_records(case, GRIDS[case.task], cfg)
            else:
                break  # the remaining task (ResNet) is not compared here
    finally:
        torch.set_num_threads(threads)
    plot(records, OUT / "inversion_oracle.png")
    return records


if __name__ == "__main__":
    from liftinv.bench import run_module

    raise SystemExit(run_module(__spec__.name, run, __doc__))
