"""Command line: ``liftinv demo`` and ``liftinv bench`` (also ``python -m liftinv ...``)."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The ``liftinv`` argument parser with its ``demo`` and ``bench`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="liftinv",
        description="Lifted Bregman training and stable inversion of neural networks for imaging.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,bench}")
    demo = commands.add_parser(
        "demo",
        help="classical reconstructions (CT, deblurring, MRI) on the bundled data",
        description="Run the demo on the bundled data and write a figure, a Markdown table and JSON scores.",
    )
    demo.add_argument("--out", default="out", metavar="DIR", help="output folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="small iteration budgets (a few seconds)")
    commands.add_parser(
        "bench",
        help="benchmarks (arguments go to `liftinv bench --help`)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "bench":
        from liftinv.bench import main as bench_main

        return bench_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from liftinv.demo import run_demo

    try:
        run_demo(args.out, quick=args.quick)
    except FileNotFoundError as err:
        print(f"liftinv demo: error: {err}", file=sys.stderr)
        return 1
    return 0
