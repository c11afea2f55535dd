r"""Lifted training against backpropagation at equal wall-clock time, on the bundled data.

``python -m liftinv.bench training [--quick] [--task NAME] [--json FILE]`` (or ``python -m
liftinv.bench.training`` with the same options) trains every method of every task of
:mod:`liftinv.training_setups` (PNN denoising, unrolled deblurring, unrolled sparse-view CT,
sparse denoising autoencoder) from the same initialisation, on the same data and the same batches,
for the same training-time budget (10 s per method with ``--quick``, 60 s otherwise). Methods:

* ``bregman-bcd``: lifted Bregman, BCD with the setup's tuned parameter rule (in full mode the
  rules Adam, Nesterov and heavy ball, and Adam with interleaved parameter blocks, are all run
  and the best is selected);
* ``bregman-bcd-low-memory``: the setup's ``bregman-bcd`` with ``cache_preactivations=False``
  (pre-activations recomputed when needed: less memory, more time per epoch);
* ``bregman-isgm``: lifted Bregman, implicit stochastic gradient;
* ``mac-bcd``: the quadratic (MAC) penalty with the same BCD configuration;
* ``backprop-adam``: backpropagation with Adam, learning rate from a small grid, best selected.

The Fenchel penalty is not run: for proximal activations (all of the setups') it equals the
Bregman penalty term by term and BCD follows exactly the same iterates (see ``liftinv.penalty``).

Columns: ``psnr``/``ssim`` on the held-out *test* split (plain forward pass, observation noise
drawn with ``training_setups.TEST_SEED``; selection among grid points uses the *validation* PSNR
``val_psnr``, whose noise is drawn with another seed), ``seconds`` of training (validation excluded),
``epochs`` done, and ``peak_memory_mb``: the peak bytes of tensor storages allocated during a
short separate run of 3 training batches and alive at the same time (activations, auxiliary
variables, gradients, solver or optimizer states, power-iteration vectors; not the parameters,
the data or the operators, which all methods share), counted exactly by a
``TorchDispatchMode`` on any device. That untimed run, on a fresh model, comes before each
method's timed run and is also its warm-up: no method's time includes the start-up costs of
first calls (kernel loading, allocator growth, one-time library setup), which fell on whichever
method ran first. ``selected`` marks the configuration reported for each method; a
configuration whose training diverges (in that run or the timed one) is a row with
``(diverged)`` after its hyper-parameters and NaN numbers (``null`` in the JSON), never selected.
Convergence plots (validation PSNR against seconds, selected configurations) go to
``out/bench/training_<task>.png``.
"""
from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from liftinv.bench import verdict
from liftinv.evaluation import evaluate
from liftinv.history import plot_psnr_vs_time
from liftinv.penalty import MAC
from liftinv.solvers import BCD, Adam, HeavyBall, Nesterov
from liftinv.training import Backprop, Lifted, train
from liftinv.training_setups import SETUP_NAMES, TEST_SEED, Setup, build_setup

QUICK_BUDGET, FULL_BUDGET = 10.0, 60.0
QUICK_LRS, FULL_LRS = (3e-4, 1e-3, 3e-3, 1e-2), (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
OUT_DIR = Path("out/bench")
MEMORY_BATCHES = 3


def _storage_ptr(t: Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # sparse tensors have no single storage
        return None


class TensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storages created under this mode and alive at the same time, except
    the storages of ``exclude`` (e.g. the model's parameters: a solver that replaces parameter
    values by new tensors, rather than overwriting them, allocates its parameters under the mode).

    Every operator output whose storage is new (not one of the operator's inputs' storages, as
    for in-place ops and views) is counted until its storage is freed (a weak-reference finaliser
    on the storage, whose Python object PyTorch keeps for the storage's lifetime).
    """

    def __init__(self, exclude: Sequence[Tensor] = ()):
        super().__init__()
        self.exclude = list(exclude)
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _excluded(self) -> int:
        ptrs = {_storage_ptr(t) for t in self.exclude}
        return sum(self.live.get(ptr, 0) for ptr in ptrs)

    def _free(self, ptr: int) -> None:
        self.current -= self.live.pop(ptr, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_storage_ptr(t) for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, Tensor):
                continue
            ptr = _storage_ptr(t)
            if ptr is None or ptr == 0 or ptr in inputs or ptr in self.live:
                continue
            storage = t.untyped_storage()
            self.live[ptr] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current - self._excluded())
            weakref.finalize(storage, self._free, ptr)
        return out


def peak_training_memory(setup: Setup, method: Lifted | Backprop, batches: int = MEMORY_BATCHES) -> int:
    """:class:`TensorMemory` peak (bytes) of ``batches`` training batches of a fresh model, its
    parameters excluded."""
    model = setup.model(method)
    images = setup.train[: batches * setup.batch_size]
    with TensorMemory(exclude=list(model.parameters())) as mem:
        train(model, images, task=setup.task, method=method, epochs=1, batch_size=setup.batch_size, progress=False)
    return mem.peak


def _methods(setup: Setup, quick: bool) -> list[tuple[str, str, Lifted | Backprop]]:
    """``(method, hyper-parameters, config)``; rows sharing a method name compete for selection.
    The hyper-parameters name the depth ratio of the penalty weights (:meth:`Setup.ratio_for`)
    where it is not 1."""
    out = []
    if quick:
        out.append(("bregman-bcd", _rule_name(setup.bcd), setup.bcd))
    else:
        lr = setup.bcd.solver.param_rule.lr if isinstance(setup.bcd.solver.param_rule, Adam) else 1e-2
        for rule, interleave in ((Adam(lr), False), (Nesterov(0.8), False), (HeavyBall(0.5), False), (Adam(lr), True)):
            solver = dataclasses.replace(setup.bcd.solver, param_rule=rule, interleave=interleave)
            m = dataclasses.replace(setup.bcd, solver=solver)
            out.append(("bregman-bcd", _rule_name(m), m))
    out.append(("bregman-bcd-low-memory", f"{_rule_name(setup.bcd)}, no cache", dataclasses.replace(setup.bcd, cache_preactivations=False)))
    out.append(("bregman-isgm", f"eta={setup.isgm.solver.eta:g}, J={setup.isgm.solver.inner_steps}, {_rule_name(setup.isgm.solver.inner)}", setup.isgm))
    out.append(("mac-bcd", _rule_name(setup.bcd), dataclasses.replace(setup.bcd, penalty=MAC)))
    for lr in QUICK_LRS if quick else FULL_LRS:
        out.append(("backprop-adam", f"lr={lr:g}", Backprop("adam", lr)))
    ratios = [setup.ratio_for(m) for _, _, m in out]
    return [(name, hyper + (f", depth ratio {r:g}" if r != 1 else ""), m) for (name, hyper, m), r in zip(out, ratios)]


def _rule_name(method: Lifted | BCD) -> str:
    solver = method.solver if isinstance(method, Lifted) else method
    rule = solver.param_rule
    fields = ", ".join(f"{f.name}={getattr(rule, f.name):g}" for f in dataclasses.fields(rule) if f.name in ("lr", "beta"))
    order = ", interleaved" if getattr(solver, "interleave", False) else ""
    deferred = ", deferred" if getattr(solver, "defer_params", False) else ""
    return f"{type(rule).__name__}({fields}){order}{deferred}"


def run_task(name: str, quick: bool = False, device: str = "cpu") -> list[dict]:
    """Train every method on the setup ``name`` with the same time budget; one record per run."""
    setup = build_setup(name, quick=quick, device=device)
    budget = QUICK_BUDGET if quick else FULL_BUDGET
    rows, histories = [], []
    for method_name, hyper, method in _methods(setup, quick):
        try:
            peak = peak_training_memory(setup, method)  # untimed: also the method's warm-up
            model = setup.model(method)
            h = train(
                model, setup.train, task=setup.task, method=method, epochs=1_000_000, batch_size=setup.batch_size,
                val_set=setup.val, time_budget=budget, generator=torch.Generator().manual_seed(0), progress=False,
            ).history
        except FloatingPointError as err:  # a diverging configuration is a result, not a crash
            print(f"{name} {method_name} ({hyper}) diverged: {err}", flush=True)
            nan = float("nan")
            rows.append({"task": name, "method": method_name, "hyper": f"{hyper} (diverged)", "psnr": nan, "ssim": nan,
                         "val_psnr": nan, "seconds": nan, "epochs": nan, "peak_memory_mb": nan, "selected": False})
            histories.append(None)
            continue
        test = evaluate(model, setup.test, task=setup.task, batch_size=64, seed=TEST_SEED)
        rows.append({
            "task": f"{name}", "method": method_name, "hyper": hyper, "psnr": test.psnr, "ssim": test.ssim,
            "val_psnr": h.val_psnr[-1], "seconds": h.seconds[-1], "epochs": h.epoch[-1],
            "peak_memory_mb": peak / 2**20, "selected": False,
        })
        histories.append(h)
    curves = {}
    ran = [i for i, h in enumerate(histories) if h is not None]
    for method_name in dict.fromkeys(rows[i]["method"] for i in ran):
        best = max((i for i in ran if rows[i]["method"] == method_name), key=lambda i: rows[i]["val_psnr"])
        rows[best]["selected"] = True
        curves[f"{method_name} {rows[best]['hyper']}"] = histories[best]
    title = f"{name} ({'quick, ' if quick else ''}{budget:g} s per method, {device})"
    plot_psnr_vs_time(curves, OUT_DIR / f"training_{name}.png", title=title)
    return rows


#: The stand-in for a method every configuration of which diverged (no selected row).
DIVERGED = {"psnr": -math.inf, "peak_memory_mb": math.nan}


def _psnr(row: dict) -> str:
    return "diverged" if row is DIVERGED else f"{row['psnr']:.2f} dB"


def _memory(lifted: dict, bp: dict, name: str = "") -> str:
    """``memory A vs [name ]B MB (met)``: the lifted run's peak against backprop's (none for a
    diverged method, whose peak is not measured)."""
    if lifted is DIVERGED or bp is DIVERGED:
        return "memory not compared (diverged)"
    return (f"memory {lifted['peak_memory_mb']:.1f} vs {name}{bp['peak_memory_mb']:.1f} MB "
            f"({verdict(lifted['peak_memory_mb'] <= bp['peak_memory_mb'])})")


def _beats(a: dict, b: dict, strict: bool) -> bool:
    """Whether ``a``'s test PSNR is at least (``strict``: above) ``b``'s; a diverged ``a`` never
    is, a diverged ``b`` is beaten by any ``a`` that ran."""
    if a is DIVERGED or b is DIVERGED:
        return b is DIVERGED and a is not DIVERGED
    return a["psnr"] > b["psnr"] if strict else a["psnr"] >= b["psnr"]


def targets(records: list[dict]) -> list[str]:
    """One line per target of the benchmark, with the numbers it compares. A method of a task all
    of whose configurations diverged is ``diverged``: a lifted one misses its targets."""
    best = {(r["task"], r["method"]): DIVERGED for r in records}  # replaced by the selected row, if any
    best.update({(r["task"], r["method"]): r for r in records if r["selected"]})
    lines = []
    for task in dict.fromkeys(r["task"] for r in records):
        breg, bp, mac = best.get((task, "bregman-bcd")), best.get((task, "backprop-adam")), best.get((task, "mac-bcd"))
        low = best.get((task, "bregman-bcd-low-memory"))
        if breg and bp:
            lines.append(
                f"{task}: bregman-bcd {_psnr(breg)} vs backprop-adam {_psnr(bp)} at equal time "
                f"({verdict(_beats(breg, bp, strict=False))}); {_memory(breg, bp)}"
            )
        if low and bp:
            lines.append(f"{task}: bregman-bcd-low-memory {_psnr(low)}, {_memory(low, bp, 'backprop-adam ')}")
        if breg and mac:
            lines.append(f"{task}: bregman-bcd {_psnr(breg)} vs mac-bcd {_psnr(mac)} ({verdict(_beats(breg, mac, strict=True))})")
    return lines


def outputs(tasks: tuple[str, ...] = SETUP_NAMES) -> list[Path]:
    """The files :func:`run` writes: one plot per task (checked before the run by :mod:`liftinv.bench`)."""
    return [OUT_DIR / f"training_{name}.png" for name in tasks]


def run(quick: bool = False, device: str = "cpu", tasks: tuple[str, ...] = SETUP_NAMES) -> list[dict]:
    """Records of every task (see the module docstring); prints the target checks."""
    records = [row for name in tasks for row in run_task(name, quick, device)]
    print("\n".join(["", "targets:", *targets(records), f"plots: {OUT_DIR}/training_<task>.png"]), flush=True)
    return records


if __name__ == "__main__":
    from liftinv.bench import run_module

    raise SystemExit(run_module(__spec__.name, run, __doc__))
