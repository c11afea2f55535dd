"""``liftinv train``: train a network on the bundled data, lifted or by backpropagation.

Example: ``liftinv train --task denoising --method bregman-bcd --epochs 5 --out out/train/pnn.pt``;
run it again with ``--resume --epochs 10`` to continue from the checkpoint (an existing checkpoint
is never replaced without ``--overwrite``: a run without ``--resume`` refuses it). ``--sweep-order``
overrides the setup's order of the lifted BCD sweep (``liftinv train --task deblurring --epochs 12
--quick --sweep-order top-down`` against ``interleaved`` shows the deblurring plateau of the
top-down order). The checkpoint is
written atomically after every epoch; the history plot goes next to it (``.png``).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from liftinv import cli_types
from liftinv.checkpoint import check_output_file
from liftinv.evaluation import evaluate
from liftinv.history import plot_history
from liftinv.penalty import FENCHEL, MAC
from liftinv.training import Backprop, CheckpointExistsError, Lifted, SeedMismatchError, train
from liftinv.training_setups import SETUP_NAMES, TEST_SEED, Setup, build_setup

#: ``--method`` choices: setup and learning rate -> method.
METHODS: dict[str, Callable[[Setup, float], Lifted | Backprop]] = {
    "bregman-bcd": lambda setup, lr: setup.bcd,
    "bregman-isgm": lambda setup, lr: setup.isgm,
    "mac-bcd": lambda setup, lr: dataclasses.replace(setup.bcd, penalty=MAC),
    "fenchel-bcd": lambda setup, lr: dataclasses.replace(setup.bcd, penalty=FENCHEL),
    "backprop-adam": lambda setup, lr: Backprop("adam", lr),
    "backprop-sgd": lambda setup, lr: Backprop("sgd", lr),
}


#: ``--lr`` of the backprop methods when it is not given.
BACKPROP_LR = 1e-2

#: ``--sweep-order`` choices.
SWEEP_ORDERS = ("setup", "top-down", "interleaved")


def _check_options(args: argparse.Namespace) -> None:
    """Refuse an option given that does not apply to ``--method`` (:class:`~liftinv.cli_types.OptionError`),
    before the setup's data are loaded: ``--lr`` applies to the backprop methods (``backprop-*``),
    ``--sweep-order`` and ``--depth-ratio`` to the lifted BCD methods (``*-bcd``), ``--low-memory``
    to the lifted ones; ``--depth-ratio`` starts a run (a resumed one keeps its checkpoint's weights)."""
    backprop = args.method.startswith("backprop-")
    if args.lr is not None and not backprop:
        raise cli_types.OptionError(f"--lr applies to the backprop methods (backprop-*), not to {args.method}")
    if args.sweep_order != "setup" and not args.method.endswith("-bcd"):
        raise cli_types.OptionError(f"--sweep-order applies to the lifted BCD methods (*-bcd), not to {args.method}")
    if args.depth_ratio is not None and not args.method.endswith("-bcd"):
        raise cli_types.OptionError(f"--depth-ratio applies to the lifted BCD methods (*-bcd), not to {args.method}")
    if args.depth_ratio is not None and args.resume:
        raise cli_types.OptionError("--depth-ratio sets the penalty weights of a new run; --resume keeps the checkpoint's")
    if args.low_memory and backprop:
        raise cli_types.OptionError(f"--low-memory applies to the lifted methods, not to {args.method}")


def _with_sweep_order(method: Lifted | Backprop, order: str) -> Lifted | Backprop:
    """``method`` (a lifted BCD one unless ``order`` is ``"setup"``, :func:`_check_options`) with
    the BCD order ``order`` (``BCD.interleave``); ``"setup"`` keeps it."""
    if order == "setup":
        return method
    return dataclasses.replace(method, solver=dataclasses.replace(method.solver, interleave=order == "interleaved"))


def _checkpoint_path(text: str) -> Path:
    """``--out``: a file path; one ending with a separator names a folder (``Path`` drops the
    separator, and the checkpoint would be written as a file of the folder's name)."""
    if text.endswith(tuple({"/", os.sep})):
        raise argparse.ArgumentTypeError(f"must be a checkpoint file, got the folder {text!r} (e.g. {text}run.pt)")
    return Path(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liftinv train",
        description="Train a network on the bundled data, lifted or by backpropagation. A checkpoint is written "
        "atomically after every epoch (--out), with a plot of the history next to it; --resume continues from it.",
    )
    parser.add_argument("--task", choices=SETUP_NAMES, default="denoising",
                        help="setup on the bundled data (see liftinv.training_setups; default: denoising)")
    parser.add_argument("--method", choices=list(METHODS), default="bregman-bcd", help="training method (default: bregman-bcd)")
    parser.add_argument("--epochs", type=cli_types.positive_int, default=5, help="total number of epochs (default: 5)")
    parser.add_argument("--sweep-order", choices=SWEEP_ORDERS, default="setup",
                        help="lifted BCD methods: move the parameters after the top-down variable pass (top-down) or "
                        "each layer's with its input variable (interleaved); default: the setup's (interleaved on "
                        "denoising and deblurring, top-down elsewhere)")
    parser.add_argument("--depth-ratio", type=cli_types.positive_float, default=None, metavar="R",
                        help="lifted BCD methods: multiply the penalty weights by R^(K-k) from the output (layer K) "
                        "down (LiftedNetwork.scale_weights_by_depth); default: the setup's (10 on denoising and deblurring, 3 on "
                        "autoencoder, 1 on ct), tuned with the setup's sweep order (deblurring with --sweep-order "
                        "top-down learns more with --depth-ratio 1)")
    parser.add_argument("--low-memory", action="store_true",
                        help="lifted methods: recompute pre-activations instead of caching them (less memory, more time)")
    parser.add_argument("--lr", type=cli_types.positive_float, default=None,
                        help=f"learning rate of backprop-adam/backprop-sgd (default: {BACKPROP_LR:g})")
    parser.add_argument("--out", type=_checkpoint_path, default=None,
                        help="checkpoint file (default: out/train/TASK-METHOD.pt); if it exists, --resume or --overwrite is needed")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from the checkpoint --out")
    start.add_argument("--overwrite", action="store_true",
                       help="start a new run, replacing an existing checkpoint --out after its first complete epoch")
    parser.add_argument("--time-budget", type=cli_types.positive_float, default=None, metavar="SECONDS",
                        help="stop after the batch at which this much training time is spent, counting the time of "
                        "the checkpointed epochs with --resume (validation not counted)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer images (ct: as many, at 32x32 instead of 64x64; see liftinv.training_setups)")
    parser.add_argument("--seed", type=cli_types.seed, default=None,
                        help="seed of the initialisation and of the training batches' shuffling and noise; the "
                        f"validation and test noise have their own fixed seeds, 0 and {TEST_SEED} (default: 0; with "
                        "--resume the checkpoint's run's, which another seed cannot change: it is refused)")
    parser.add_argument("--device", type=cli_types.device, default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--dtype", choices=sorted(cli_types.DTYPES), default="float32",
                        help="dtype of the model and data (default: %(default)s); --resume needs the checkpoint's")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar and epoch log")
    return cli_types.negative_numbers_as_values(parser)


def train_main(argv: list[str] | None = None) -> int:
    """Entry point of ``liftinv train``; returns the exit status (:func:`~liftinv.cli_types.run_command`):
    an option that does not apply, or an existing checkpoint without ``--resume`` or
    ``--overwrite``, is an argparse error (exit status 2); bad input, a checkpoint whose content
    cannot be read or that another run wrote included, prints ``liftinv train: error: ...`` and
    returns 2; training that diverged, or a file or folder that is missing or cannot be opened,
    created or written, returns 1 (the checkpoint and the history plot are checked before
    training)."""
    parser = _parser()
    args = parser.parse_args(argv)
    return cli_types.run_command(parser, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    """Train as the parsed ``args`` say, write the checkpoint and the plot; the exit status."""
    out = args.out if args.out is not None else Path("out/train") / f"{args.task}-{args.method}.pt"
    if out.name and out.with_suffix(".png") == out:  # no name ('.', '/'): a folder, which train refuses
        raise cli_types.OptionError(f"--out {out}: the history plot goes to --out with the suffix .png and would "
                                    "overwrite the checkpoint; use another suffix (e.g. .pt)")
    _check_options(args)
    if not out.is_dir():  # a folder is refused by train, in its words; the plot is written after training
        for path, name in ((out, "checkpoint"), (out.with_suffix(".png"), "history plot")):
            check_output_file(path, name)
    dtype = cli_types.DTYPES[args.dtype]
    setup = build_setup(args.task, quick=args.quick, device=args.device, dtype=dtype, seed=args.seed or 0)
    if args.depth_ratio is not None:
        setup = dataclasses.replace(setup, depth_ratio=args.depth_ratio)
    method = _with_sweep_order(METHODS[args.method](setup, BACKPROP_LR if args.lr is None else args.lr), args.sweep_order)
    if args.low_memory:
        method = dataclasses.replace(method, cache_preactivations=False)
    try:
        model = setup.model(method)
    except ValueError as err:  # a --depth-ratio whose weights leave the range of the dtype (scale_weights_by_depth)
        if args.depth_ratio is None:
            raise
        raise cli_types.OptionError(f"--depth-ratio {args.depth_ratio:g}: {err}") from err
    try:
        result = train(
            model, setup.train, task=setup.task, method=method, epochs=args.epochs, batch_size=setup.batch_size,
            val_set=setup.val, checkpoint=out, resume=args.resume, overwrite=args.overwrite, time_budget=args.time_budget,
            generator=None if args.seed is None else torch.Generator().manual_seed(args.seed), progress=not args.no_progress,
        )
    except CheckpointExistsError as err:  # train's check, in the command's words
        raise cli_types.OptionError(f"--out {err.path} exists: pass --resume to continue from it or --overwrite to "
                                    "replace it (or delete it)") from err
    except SeedMismatchError as err:
        raise cli_types.OptionError(f"--seed {args.seed}: checkpoint {err.path} continues a run of seed {err.saved}, "
                                    f"which --resume keeps (omit --seed, or pass --seed {err.saved})") from err
    except FloatingPointError as err:
        print(f"liftinv train: {err}", file=sys.stderr)
        return 1
    test = evaluate(model, setup.test, task=setup.task, batch_size=setup.batch_size, seed=TEST_SEED)
    plot = out.with_suffix(".png")
    try:
        plot_history(result.history, plot, title=f"{args.task}, {method.name}")
    except OSError as err:  # a folder in its place, say: the checkpoint is written, the plot is not
        raise OSError(f"cannot write the history plot {plot}: {err}") from err
    h = result.history
    saved = math.floor(h.epoch[-1])  # every complete epoch is checkpointed, a partial one is not
    if saved > 0:
        kept = f"checkpoint {out} (epoch {saved})"
    elif out.exists():  # --overwrite: replaced after a complete epoch only
        kept = f"no epoch completed, so checkpoint {out} was not replaced: it still holds the previous run's"
    else:
        kept = "no checkpoint (no epoch completed)"
    print(
        f"{args.task} / {method.name}: {h.epoch[-1]:g} epochs in {h.seconds[-1]:.1f} s; validation PSNR "
        f"{h.val_psnr[-1]:.2f} dB; test PSNR {test.psnr:.2f} dB, SSIM {test.ssim:.3f}; {kept}; plot {plot}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(train_main())
