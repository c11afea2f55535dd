"""Benchmarks of liftinv, side by side with reference implementations measured in the same run.

``python -m liftinv.bench {operators,conv-adjoint,training,inversion,inversion-oracle,alignment,all} [--quick] [--json FILE]
[--device DEVICE] [--task NAME]``; each module also runs alone with the same options
(``python -m liftinv.bench.training --task deblurring``).

Each section is a module with ``run(quick, device) -> list[dict]`` (training and alignment also
take ``tasks``); the records are printed as one table per module. A module that writes files of its
own (plots, a weight cache) names them by ``outputs(**options) -> list[Path]`` (the options of its
``run`` that it takes). Those files and ``--json FILE`` are checked before any run (not a folder;
the folder is created and takes a new file; else exit status 1), so that no run's records are lost
to a file that cannot be written after it. A run that fails on a file (``OSError``: the bundled
data missing, say) ends the command with one line ``PROG: error: MSG`` and exit status 1. The JSON is strict: a non-finite number (the NaN of a
diverged training run, the cosine of a zero gradient) is written as ``null``.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from liftinv import cli_types
from liftinv.checkpoint import check_output_file, write_text
from liftinv.training_setups import SETUP_NAMES

#: section name -> modules whose ``run`` it calls
SECTIONS = {
    "operators": ("liftinv.bench.ct", "liftinv.bench.blur_mri"),
    "conv-adjoint": ("liftinv.bench.conv_adjoint",),
    "training": ("liftinv.bench.training",),
    "inversion": ("liftinv.bench.inversion",),
    "inversion-oracle": ("liftinv.bench.inversion_oracle",),
    "alignment": ("liftinv.bench.alignment",),
}


def verdict(ok: bool) -> str:
    """How a benchmark prints whether a target is reached: ``met`` or ``NOT met``."""
    return "met" if ok else "NOT met"


def format_table(records: list[dict]) -> str:
    """Render records as a Markdown table with the union of their keys as columns (list-valued
    fields, e.g. curves, are left to the JSON)."""
    if not records:
        return "(no records)"
    cols: list[str] = []
    for r in records:
        cols += [k for k, v in r.items() if k not in cols and not isinstance(v, list)]

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    rows = [[cell(r.get(c)) for c in cols] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = lambda xs: "| " + " | ".join(x.ljust(w) for x, w in zip(xs, widths)) + " |"
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _parser(prog: str | None, description: str, sections: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if sections:
        parser.add_argument("section", choices=[*SECTIONS, "all"], help="which benchmark to run")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (minutes on 2 cores)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the records as JSON")
    parser.add_argument("--device", type=cli_types.device, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--task", choices=SETUP_NAMES, action="append",
                        help="training and alignment: only this setup (repeatable; default: all)")
    return parser


def _json_value(value):
    """``value`` with every non-finite float, also inside lists, tuples and dicts, replaced by
    ``None`` (JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _check_writable(path: Path, what: str, parser: argparse.ArgumentParser) -> None:
    """Refuse the file ``path`` (``what`` names it in the error: ``argument --json``) before the
    run where :func:`~liftinv.checkpoint.check_output_file` says it cannot be written (a folder, a
    folder that cannot be created, a folder that takes no new file): exit status 1, a file that
    cannot be written, with that function's message (as ``liftinv train``, ``invert`` and
    ``reconstruct``; 2 is for bad arguments)."""
    try:
        check_output_file(path, what)
    except OSError as err:
        parser.exit(1, f"{parser.prog}: error: {err}\n")


def _records(runs: dict[str, Callable[..., list[dict]]], args: argparse.Namespace,
             parser: argparse.ArgumentParser) -> None:
    """Call every module's ``run`` (module name -> ``run``) with the parsed options, print one
    table per module and write the JSON file of ``--json``. Every file written (``--json`` and
    each module's ``outputs``) is checked before the first run."""
    if args.task and not any("tasks" in inspect.signature(run).parameters for run in runs.values()):
        parser.error("--task applies to the training and alignment benchmarks only")
    if args.json is not None:
        _check_writable(args.json, "argument --json", parser)
    options = {}
    for module, run in runs.items():
        options[module] = {"quick": args.quick, "device": args.device}
        if args.task and "tasks" in inspect.signature(run).parameters:
            options[module]["tasks"] = tuple(dict.fromkeys(args.task))  # each once, in the order given
        outputs = getattr(inspect.getmodule(run), "outputs", None)
        if outputs is not None:
            taken = inspect.signature(outputs).parameters
            for path in outputs(**{k: v for k, v in options[module].items() if k in taken}):
                _check_writable(Path(path), f"{module.rsplit('.', 1)[-1]} benchmark output", parser)
    records: list[dict] = []
    for module, run in runs.items():
        try:
            rows = run(**options[module])
        except OSError as err:  # missing bundled data, say: a message, not a traceback (as every liftinv command)
            parser.exit(1, f"{parser.prog}: error: {err}\n")
        print(f"\n## {module.rsplit('.', 1)[-1]} ({args.device}{', quick' if args.quick else ''})\n")
        print(format_table(rows), flush=True)
        records += rows
    if args.json is not None:
        write_text(args.json, json.dumps(_json_value(records), indent=1, allow_nan=False))  # atomic
        print(f"\nwrote {len(records)} records to {args.json}")


def run_module(module: str, run: Callable[..., list[dict]], doc: str, argv: list[str] | None = None) -> int:
    """Command line of one benchmark module (``python -m liftinv.bench.ct``): the options of
    :func:`main` but the section."""
    parser = _parser(f"python -m {module}", doc.splitlines()[0], sections=False)
    _records({module: run}, parser.parse_args(argv), parser)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line ``liftinv bench SECTION`` (``python -m liftinv.bench SECTION``)."""
    parser = _parser("liftinv bench", __doc__.splitlines()[0], sections=True)
    args = parser.parse_args(argv)
    names = list(SECTIONS) if args.section == "all" else [args.section]
    _records({m: importlib.import_module(m).run for name in names for m in SECTIONS[name]}, args, parser)
    return 0
