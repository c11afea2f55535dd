"""Command line ``liftinv`` (also ``python -m liftinv``): subcommands ``demo``, ``reconstruct``,
``train``, ``invert`` and ``bench``.

Every subcommand but ``demo`` lives in its own module, imported only when it runs (so that
``liftinv --help`` stays fast), as a function ``main(argv) -> exit status`` that parses its own
arguments (``liftinv SUBCOMMAND --help``).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from liftinv import cli_types

#: subcommand -> (module, function, one-line help); the function takes the remaining arguments.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "reconstruct": ("liftinv.reconstruct_cli", "reconstruct_main",
                    "reconstruct images from measurements (classical methods or a saved model)"),
    "train": ("liftinv.training_cli", "train_main", "train a network, lifted or by backpropagation"),
    "invert": ("liftinv.inversion_cli", "invert_main", "invert a pre-trained network (lifted or gradient-based)"),
    "bench": ("liftinv.bench", "main", "benchmarks"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``liftinv`` argument parser: ``demo`` and the forwarded subcommands of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="liftinv",
        description="Lifted Bregman training and stable inversion of neural networks for imaging. "
                    "Run `liftinv SUBCOMMAND --help` for the options of each subcommand.",
    )
    names = ["demo", *SUBCOMMANDS]
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(names) + "}")
    demo = commands.add_parser(
        "demo",
        help="classical and trained reconstructions (CT, deblurring, MRI) and a network inversion on the bundled data",
        description="Run the demo on the bundled data and write to --out two figures (demo_classical.png, "
                    "demo_inversion.png), a Markdown table (demo_table.md), JSON scores (demo_results.json) "
                    "and the trained models (models/).",
    )
    demo.add_argument("--out", default="out", metavar="DIR", help="output folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="small iteration budgets (about 30 s in all)")
    demo.add_argument("--train-seconds", type=cli_types.positive_float, metavar="SECONDS",
                      help="training time of each unrolled network (default: 60, with --quick 3)")
    cli_types.negative_numbers_as_values(demo)
    for name, (_, _, text) in SUBCOMMANDS.items():
        commands.add_parser(name, help=f"{text} (options: `liftinv {name} --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command in SUBCOMMANDS:
        module, function, _ = SUBCOMMANDS[args.command]
        return getattr(importlib.import_module(module), function)(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from liftinv.demo import run_demo

    try:
        run_demo(args.out, quick=args.quick, train_seconds=args.train_seconds)
    except OSError as err:  # missing data; an output folder that cannot be created or written
        print(f"liftinv demo: error: {err}", file=sys.stderr)
        return 1
    return 0
