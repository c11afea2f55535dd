r"""``liftinv invert``: recover the input of a saved torch network from its (noisy) output.

The network file is a whole module written by ``torch.save(model, path)`` (an ``nn.Sequential``
that :func:`liftinv.lift` accepts, or a :class:`~liftinv.network.LiftedNetwork`; for
``--method gradient`` any module); loading it runs
Python code stored in the file, so use only files you trust. The output is a ``.npy`` or ``.pt``
array ``(B, ...)`` (a single sample without batch axis with ``--single``). The recovered input is
written to ``--out`` (``.npy``, ``.pt`` or, for one grey image, an image file), which must differ
from every input file.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from liftinv import cli_types
from liftinv.checkpoint import existing_file, unreadable
from liftinv.convert import lift
from liftinv.inversion import InversionConfig, OutputShapeError, invert
from liftinv.inversion_baseline import GradientOptimizer, invert_gradient
from liftinv.io import SUFFIXES, check_not_an_input, check_output, load_array, save_array
from liftinv.metrics import SSIM_SIDE, in_unit_range, psnr, ssim
from liftinv.potentials import L1, TV, Box, Tikhonov
from liftinv.validation import reference_tensor

REGULARIZERS = ("tv", "tikhonov", "l1", "box", "none")


def build_parser(prog: str = "liftinv invert") -> argparse.ArgumentParser:
    """The argument parser of ``liftinv invert``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Recover the input of a saved torch network from its noisy output by lifted "
                    "(or gradient-based) inversion.",
        epilog="examples:\n"
               "  liftinv invert net.pt f.npy --input-shape 1 64 64 --noise-level 2.5 --out out/u.png\n"
               "  liftinv invert net.pt f.pt --input-shape 1 64 64 --regularizer tv --weight 0.1 --out out/u.npy\n"
               "The network file is loaded with torch.load(weights_only=False): only use trusted files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("network", help="network saved with torch.save(model, path) (.pt)")
    parser.add_argument("output", help="observed outputs (B, ...) (.npy or .pt)")
    parser.add_argument("--out", required=True, metavar="FILE", help=f"recovered input ({', '.join(SUFFIXES)})")
    parser.add_argument("--input-shape", type=cli_types.positive_int, nargs="+", metavar="N",
                        help="shape of one input sample, e.g. 1 64 64 (default: that of --x0, else the input_shape of a saved "
                             "LiftedNetwork; needed for an nn.Sequential without --x0)")
    parser.add_argument("--single", action="store_true", help="the output file holds one sample without batch axis")
    parser.add_argument("--noise-level", type=cli_types.nonnegative_float, metavar="DELTA",
                        help="expected norm of the noise in one sample's output (enables the discrepancy principle)")
    parser.add_argument("--regularizer", choices=REGULARIZERS, default="tv", help="default: %(default)s")
    parser.add_argument("--weight", type=cli_types.nonnegative_float,
                        help="regularisation weight of tv, tikhonov or l1 (default: chosen by the discrepancy "
                             f"principle with --noise-level, else {InversionConfig().default_alpha:g})")
    parser.add_argument("--box", type=float, nargs=2, metavar=("LO", "HI"), help="box constraint on the input (tv, box)")
    parser.add_argument("--free-output", action="store_true", help="free output variable with a squared-error loss")
    parser.add_argument("--method", choices=("lifted", "gradient"), default="lifted", help="default: %(default)s")
    parser.add_argument("--lr", type=cli_types.positive_float,
                        help=f"gradient method: Adam learning rate (default: {GradientOptimizer().lr})")
    parser.add_argument("--max-iter", type=cli_types.positive_int, default=1000, help="iterations per solve (default: %(default)s)")
    parser.add_argument("--tol", type=cli_types.nonnegative_float, default=1e-4, help="relative residual tolerance (default: %(default)s)")
    parser.add_argument("--x0", metavar="FILE",
                        help="initial input (B, ...), one without batch axis with --single; with --input-shape, up to "
                             "axes of length 1, as --truth (an image file's (H, W) for one grey input) (default: zeros)")
    parser.add_argument("--truth", metavar="FILE",
                        help="true input: print the relative error, and PSNR and SSIM for images in [0, 1]")
    parser.add_argument("--device", type=cli_types.device, default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return cli_types.negative_numbers_as_values(parser)


def _check_method_options(args) -> None:
    if args.free_output and args.method != "lifted":
        raise cli_types.OptionError(f"--free-output applies to --method lifted, not {args.method}")
    if args.lr is not None and args.method != "gradient":
        raise cli_types.OptionError(f"--lr applies to --method gradient, not {args.method}")


def _regularizer(args):
    if args.box is not None and args.regularizer not in ("tv", "box"):
        raise cli_types.OptionError(f"--box applies to --regularizer tv or box, not {args.regularizer}")
    if args.weight is not None and args.regularizer in ("none", "box"):
        raise cli_types.OptionError(f"--weight applies to --regularizer tv, tikhonov or l1, not {args.regularizer}")
    if args.box is not None and not args.box[0] < args.box[1]:
        raise ValueError(f"--box LO HI needs LO < HI, got {args.box[0]:g} {args.box[1]:g}")
    if args.regularizer == "none":
        return None
    if args.regularizer == "tv":
        return TV(args.weight, box=None if args.box is None else tuple(args.box))
    if args.regularizer == "box":
        if args.box is None:
            raise cli_types.OptionError("--regularizer box needs --box LO HI")
        return Box(*args.box)
    return Tikhonov(args.weight) if args.regularizer == "tikhonov" else L1(args.weight)


def _load_network(path: str, device: str) -> nn.Module:
    existing_file(path, "network")
    try:
        network = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # an empty or foreign file: EOFError, UnpicklingError, ValueError...
        raise unreadable("network", path, err) from err
    if not isinstance(network, nn.Module):
        raise ValueError(f"network file {path} must hold a torch module (torch.save(model, path)), got {type(network).__name__}")
    return network.eval()


def _load_real(path: str, name: str, device: str, dtype: torch.dtype) -> torch.Tensor:
    """A real array from ``path`` with ``device`` and ``dtype`` (a complex one is refused: the
    cast would drop its imaginary part)."""
    array = load_array(path, name)
    if array.is_complex():
        raise ValueError(f"{name} must be real, got dtype {array.dtype}")
    return array.to(device=device, dtype=dtype)


def _same_up_to_ones(shape, expected) -> bool:
    """Whether ``shape`` is ``expected`` once the axes of length 1 of both are left out (the same
    entries in the same order: a reshape, not a transpose)."""
    return [n for n in shape if n != 1] == [n for n in expected if n != 1]


def _output_shape_error(err: OutputShapeError, args) -> ValueError:
    """``err`` in terms of the output file: with ``--single`` (which adds the batch axis that
    ``err.got`` shows) the file must hold one sample of the network's output shape, and a file
    that holds a batch of them is told to drop ``--single``."""
    if not args.single:
        return err
    held, expected = err.got[1:], err.expected
    hint = f": it holds a batch of {held[0]}, drop --single" if held[1:] == expected else ""
    return ValueError(f"with --single the output file {args.output} must hold one sample of shape "
                      f"({', '.join(map(str, expected))}) for this network, got {held}{hint}")


def _run(args) -> None:
    check_not_an_input("--out", args.out, {"network": args.network, "output": args.output, "--x0": args.x0,
                                           "--truth": args.truth})
    _check_method_options(args)
    regularizer = _regularizer(args)
    network = _load_network(args.network, args.device)
    ref = reference_tensor(network)
    dtype = torch.get_default_dtype() if ref is None else ref.dtype
    output = _load_real(args.output, "output", args.device, dtype)
    if output.ndim < (1 if args.single else 2):  # in the file's terms: invert's error shows the axis --single adds
        held = ("one sample, an array of at least one axis" if args.single else
                "a batch of samples (B, ...), each of at least one axis (one sample without the batch axis: --single)")
        raise ValueError(f"the output file {args.output} must hold {held}, got shape {tuple(output.shape)}")
    if args.single:
        output = output[None]
    x0 = None if args.x0 is None else _load_real(args.x0, "x0", args.device, dtype)
    if x0 is not None and args.single:
        x0 = x0[None]
    if x0 is not None and args.input_shape is not None and _same_up_to_ones(x0.shape, (output.shape[0], *args.input_shape)):
        x0 = x0.reshape(output.shape[0], *args.input_shape)  # e.g. the (H, W) of an image file
    if x0 is not None and args.input_shape is None and x0.shape[0] != output.shape[0]:  # before the lift reads x0's shape
        raise ValueError(f"--x0 has shape {tuple(x0.shape)}: without --input-shape its first axis is the batch, which "
                         f"must be the output's ({output.shape[0]} samples); pass --input-shape (an image file's "
                         "(H, W) for one grey input: --input-shape 1 H W)")
    shape = args.input_shape or (None if x0 is None else list(x0.shape[1:]))
    if args.method == "lifted":  # refuses unsupported layers before solving
        network = lift(network, input_shape=shape)
    shape = shape or getattr(network, "input_shape", None)
    if shape is None:
        raise ValueError("the network's input shape is unknown: pass --input-shape or --x0")
    if x0 is not None and args.single and tuple(x0.shape[1:]) != tuple(shape):  # as the file holds it, without the added axis
        raise ValueError(f"with --single the --x0 file {args.x0} must hold one input of shape "
                         f"({', '.join(map(str, shape))}), got {tuple(x0.shape[1:])}")
    check_output(args.out, shape if args.single else [output.shape[0], *shape])
    truth = None
    if args.truth is not None:  # the input's shape up to axes of length 1 (an image file's (H, W)), checked before solving
        truth = _load_real(args.truth, "truth", args.device, dtype)
        expected = (output.shape[0], *shape)
        if not _same_up_to_ones(truth.shape, expected):
            raise ValueError(f"--truth has shape {tuple(truth.shape)}, the recovered input {expected}")
    config = InversionConfig(max_iter=args.max_iter, tol=args.tol, progress=not args.no_progress)
    common = dict(input_shape=shape, regularizer=regularizer, noise_level=args.noise_level, x0=x0,
                  config=config)
    try:  # the shapes are checked before solving
        if args.method == "lifted":
            result = invert(network, output, free_output=args.free_output, **common)
        else:
            optimizer = GradientOptimizer() if args.lr is None else GradientOptimizer(lr=args.lr)
            result = invert_gradient(network, output, optimizer=optimizer, **common)
    except OutputShapeError as err:
        raise _output_shape_error(err, args) from err
    save_array(result.input[0] if args.single else result.input, args.out)
    summary = (f"{args.method} inversion: {result.iterations} iterations, {len(result.history.steps)} solve(s), "
               f"{result.seconds:.2f} s; alpha {result.alpha.tolist()}; discrepancy {result.discrepancy.tolist()}")
    if result.target is not None:
        summary += f" (target {result.target.tolist()})"
    print(summary)
    if truth is not None:
        truth = truth.reshape(result.input.shape)
        error = (result.input - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)
        scores = f"relative error {error.tolist()}"
        if truth.ndim == 4 and in_unit_range(truth):  # images in [0, 1]
            x = result.input.clamp(0, 1)
            scores += f", PSNR {psnr(x, truth).tolist()} dB"
            if min(truth.shape[-2:]) >= SSIM_SIDE:
                scores += f", SSIM {ssim(x, truth).tolist()}"
        print(scores)
    print(f"wrote {args.out}")


def invert_main(argv: list[str] | None = None) -> int:
    """``liftinv invert``; returns the exit status (:func:`~liftinv.cli_types.run_command`): an
    option that does not apply is an argparse error (exit status 2); bad input (a file whose
    content cannot be read included) prints ``liftinv invert: error: ...`` and returns 2; a file
    that is missing, a folder, or cannot be opened or written returns 1."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        _run(args)
        return 0

    return cli_types.run_command(parser, body)


if __name__ == "__main__":
    raise SystemExit(invert_main())
