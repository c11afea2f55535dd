"""Benchmarks: ``python -m liftinv.bench {operators,conv-adjoint,training,inversion,inversion-oracle,alignment,all} [--quick] [--json FILE]``.

Each section is a module with ``run(quick, device) -> list[dict]``; records are printed as one
table per section, side by side with the reference implementations measured in the same run.
"""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import torch

from liftinv import cli_types

#: section name -> modules whose ``run`` it calls
SECTIONS = {
    "operators": ("liftinv.bench.ct", "liftinv.bench.blur_mri"),
    "conv-adjoint": ("liftinv.bench.conv_adjoint",),
    "training": ("liftinv.bench.training",),
    "inversion": ("liftinv.bench.inversion",),
    "inversion-oracle": ("liftinv.bench.inversion_oracle",),
    "alignment": ("liftinv.bench.alignment",),
}


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


def run_section(run, description: str, argv: list[str] | None = None) -> None:
    """Command line of one benchmark module (``python -m liftinv.bench.ct``): parse ``--quick``
    and ``--device``, call ``run`` and print its table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--device", type=cli_types.device, default="cpu", help="torch device")
    args = parser.parse_args(argv)
    print(format_table(run(quick=args.quick, device=args.device)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="liftinv bench", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("section", choices=[*SECTIONS, "all"], help="which benchmark to run")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (minutes on 2 cores)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the records as JSON")
    parser.add_argument("--device", type=cli_types.device, default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    args = parser.parse_args(argv)
    names = list(SECTIONS) if args.section == "all" else [args.section]
    records: list[dict] = []
    for name in names:
        for module in SECTIONS[name]:
            rows = importlib.import_module(module).run(quick=args.quick, device=args.device)
            print(f"\n## {module.rsplit('.', 1)[-1]} ({args.device}{', quick' if args.quick else ''})\n")
            print(format_table(rows), flush=True)
            records += rows
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1))
        print(f"\nwrote {len(records)} records to {args.json}")
    return 0
