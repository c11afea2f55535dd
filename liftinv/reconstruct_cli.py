r"""``liftinv reconstruct``: measurements (a file, or simulated from a test image) -> a
reconstruction written as ``.npy``, ``.pt`` or an image, by a classical method or a saved model.

Every operator setting is taken from the command line if given, else from the saved model
(``--model``), else from :mod:`liftinv.demo` (64 x 64 images; CT with 30 views, Gaussian blur of
width 1.5, 4x random MRI mask). With measurements from a file, the sizes not given are read off
the measurements (the CT image size from the detector count unless ``--detectors`` is given, the
views from the sinogram width); ``--size`` must agree with the image size that the measurements,
``--truth`` or ``--mask`` fix.
A model used with other operator settings than it was trained for is refused, naming the settings.
MRI measurements that were taken with another mask are refused before the work (the mask samples
entries where they are all exactly 0 while they are non-zero where it samples nothing, as with
another ``--seed``); a fully sampled k-space is undersampled by the mask. A mask that samples
entries where they are all exactly 0 but no other is warned about on stderr (it may sample more
than theirs, as a smaller ``--acceleration`` with the same ``--seed`` does).
Regularisation weights and simulated noise levels default to the demo's (tuned for images in
[0, 1] at the demo's noise levels); MRI Tikhonov, which the demo does not run, defaults to 0.01.
``--truth`` is scored against by PSNR and SSIM with data range 1 (as by ``liftinv invert``), so
only a truth in [0, 1]; another truth is simulated but not scored.

Layouts: CT and blur images and measurements are ``(B, 1, H, W)``; a 2-D array is one image.
MRI measurements are real ``(B, 2, H, W)`` (real, imaginary) or complex ``(B, H, W)`` / ``(H, W)``;
MRI reconstructions are written as ``(B, 2, H, W)`` to ``.npy``/``.pt`` and as their modulus to
image files.

An option that does not apply is refused (exit status 2, naming the option), as by ``liftinv
invert`` and ``liftinv train``: ``--weight`` applies to tikhonov, wiener and tv, ``--iters`` to
tikhonov and tv, ``--filter`` to fbp (:data:`METHOD_OPTIONS`); fbp, wiener and zero-filled to
ct, blur and mri (:data:`METHOD_OPERATORS`; wiener to a circular ``--boundary``); the operator
settings to their operator (:data:`OPERATOR_OPTIONS`); ``--noise``, ``--index`` and ``--save-measurements`` to
``--simulate``, and ``--index`` only without ``--truth``; wiener refuses ``--weight 0``.
``--out`` and ``--save-measurements`` must differ from each other and from every input file;
``--save-measurements`` is a ``.npy`` or ``.pt`` file (an image file would clip the measurements
to [0, 1] and round them to 8 bits), written once every check has passed, before reconstructing: a
refused command writes no file.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from deepinv.physics import GaussianNoise
from torch import Tensor
from tqdm.auto import tqdm

from liftinv import demo
from liftinv.cli_types import (DTYPES, OptionError, float_at_least, int_at_least, nonnegative_float, positive_int,
                               negative_numbers_as_values, run_command, seed)
from liftinv.data import load_dataset
from liftinv.io import ARRAY_SUFFIXES, IMAGE_SUFFIXES, SUFFIXES, check_not_an_input, check_output, load_array, save_array
from liftinv.metrics import SSIM_SIDE, in_unit_range, psnr, ssim
from liftinv.models import load_model, model_spec
from liftinv.reconstruction import FBP, TV, Adjoint, Tikhonov, Wiener, ZeroFilled, reconstruct
from operators.blur import BOUNDARIES, Blur
from operators.kernels import gaussian_kernel
from operators.masks import random_mask
from operators.mri import MRI
from operators.radon import FILTERS, Radon, default_detectors
from operators.spec import describe

OPERATOR_CLASSES = {"ct": "Radon", "blur": "Blur", "mri": "MRI"}
METHOD_NAMES = ("adjoint", "fbp", "zero-filled", "tikhonov", "wiener", "tv", "model")
DEFAULT_METHOD = {"ct": "fbp", "blur": "tikhonov", "mri": "zero-filled"}
#: Default weights per (operator, method): the demo's, and 0.01 for MRI Tikhonov (x = A^*y / 1.01).
WEIGHTS = {
    ("ct", "tikhonov"): demo.CT_TIKHONOV, ("ct", "tv"): demo.CT_TV,
    ("blur", "tikhonov"): demo.BLUR_WIENER, ("blur", "wiener"): demo.BLUR_WIENER, ("blur", "tv"): demo.BLUR_TV,
    ("mri", "tikhonov"): 0.01, ("mri", "tv"): demo.MRI_TV,
}
NOISE = {"ct": demo.CT_NOISE, "blur": demo.BLUR_NOISE, "mri": demo.MRI_NOISE}
TEST_IMAGES = {"ct": ("ellipses", demo.CT_INDEX), "blur": ("patches64", demo.BLUR_INDEX), "mri": ("ellipses", demo.MRI_INDEX)}
#: option -> the methods it applies to.
METHOD_OPTIONS = {"weight": ("tikhonov", "wiener", "tv"), "iters": ("tikhonov", "tv"), "filter": ("fbp",)}
#: option -> the operator it applies to.
OPERATOR_OPTIONS = {"angles": "ct", "detectors": "ct", "circle": "ct", "kernel_sigma": "blur", "kernel": "blur",
                    "boundary": "blur", "acceleration": "mri", "mask": "mri"}
SIMULATION_OPTIONS = ("noise", "index", "save_measurements")
#: method -> the operator it applies to (the others apply to every operator).
METHOD_OPERATORS = {"fbp": "ct", "wiener": "blur", "zero-filled": "mri"}


def build_parser(prog: str = "liftinv reconstruct") -> argparse.ArgumentParser:
    """The argument parser of ``liftinv reconstruct``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Reconstruct images from measurements with a classical method or a saved model. "
                    "An option that does not apply to the method, the operator or the source of the "
                    "measurements is refused.",
        epilog="examples:\n"
               "  liftinv reconstruct --simulate --operator ct --out out/recon.png\n"
               "  liftinv reconstruct --simulate --operator mri --method tv --save-measurements out/k.npy\n"
               "  liftinv reconstruct --measurements out/k.npy --operator mri --out out/zf.npy\n"
               "  liftinv reconstruct --simulate --model out/unrolled_deblur.pt --out out/net.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--measurements", metavar="FILE", help=f"measurements ({', '.join(SUFFIXES)})")
    source.add_argument("--simulate", action="store_true",
                        help="simulate noisy measurements of --truth, or of a bundled test image")
    parser.add_argument("--operator", choices=sorted(OPERATOR_CLASSES),
                        help="forward operator (default: the model's; required without --model)")
    parser.add_argument("--method", choices=METHOD_NAMES,
                        help="default: model with --model, else fbp (ct), tikhonov (blur), zero-filled (mri)")
    parser.add_argument("--model", metavar="FILE", help="model saved by liftinv (implies --method model)")
    parser.add_argument("--weight", type=nonnegative_float, help="regularisation weight of tikhonov/wiener/tv, > 0 for wiener (default: the demo's; 0.01 for MRI tikhonov)")
    parser.add_argument("--iters", type=positive_int, help="iteration limit of tikhonov (default 200) and tv (default 500)")
    parser.add_argument("--filter", choices=FILTERS, help="FBP filter (default: ramp)")
    parser.add_argument("--out", default="out/recon.png", metavar="FILE",
                        help=f"output file ({', '.join(SUFFIXES)}; default: %(default)s)")
    parser.add_argument("--truth", metavar="FILE",
                        help="ground truth: simulated with --simulate, and scored against (PSNR and SSIM, peak 1) "
                             "if it lies in [0, 1]")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="operator dtype (default: the model's, else float32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    geometry = parser.add_argument_group("operator settings (default: the model's, else the demo's)")
    geometry.add_argument("--size", type=int_at_least(2),
                          help="image side N (default: from the data, else 64; must agree with the data; "
                               "needed for ct measurements with --detectors)")
    geometry.add_argument("--angles", type=positive_int, help="ct: number of views on [0, 180) (default 30)")
    geometry.add_argument("--detectors", type=positive_int, help="ct: detector count (default: ceil(sqrt(2) N), N with --circle)")
    geometry.add_argument("--circle", action=argparse.BooleanOptionalAction, default=None,
                          help="ct: object inside the inscribed disc (default: no)")
    kernel = geometry.add_mutually_exclusive_group()
    kernel.add_argument("--kernel-sigma", type=float, help=f"blur: Gaussian kernel width (default {demo.BLUR_SIGMA})")
    kernel.add_argument("--kernel", metavar="FILE", help="blur: kernel (h, w) from a file instead")
    geometry.add_argument("--boundary", choices=BOUNDARIES, help="blur: boundary condition (default: circular)")
    mask = geometry.add_mutually_exclusive_group()
    mask.add_argument("--acceleration", type=float_at_least(1.0), help=f"mri: random column mask acceleration (default {demo.MRI_ACCELERATION:g})")
    mask.add_argument("--mask", metavar="FILE", help="mri: sampling mask (H, W) from a file instead")
    simulation = parser.add_argument_group("simulation (--simulate)")
    simulation.add_argument("--noise", type=float, help="Gaussian noise sigma (default: ct 0.5, blur 0.02, mri 0.02)")
    simulation.add_argument("--index", type=int, help="index of the bundled test image, without --truth (default: the demo's)")
    simulation.add_argument("--seed", type=seed, default=0, help="seed of the noise and of the MRI mask (default: %(default)s)")
    simulation.add_argument("--save-measurements", metavar="FILE",
                            help=f"also write the simulated measurements ({', '.join(ARRAY_SUFFIXES)}: an image file would clip them to [0, 1])")
    return negative_numbers_as_values(parser)


def _image_batch(t: Tensor, name: str) -> Tensor:
    """Real images ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` as ``(B, C, H, W)``."""
    if t.is_complex():
        raise ValueError(f"{name} must be real, got dtype {t.dtype}")
    if t.ndim not in (2, 3, 4):
        raise ValueError(f"{name} must have shape (H, W), (C, H, W) or (B, C, H, W), got {tuple(t.shape)}")
    return t.reshape((1,) * (4 - t.ndim) + tuple(t.shape))


def _measurement_batch(t: Tensor, operator: str) -> Tensor:
    """Measurements in the operator's layout: MRI complex k-space becomes real/imaginary
    channels, a single MRI image ``(2, H, W)`` gets a batch axis, multi-coil data pass."""
    if operator == "mri":
        if t.is_complex():
            if t.ndim not in (2, 3):
                raise ValueError(f"complex MRI measurements must have shape (H, W) or (B, H, W), got {tuple(t.shape)}")
            return torch.view_as_real(t.reshape((1,) * (3 - t.ndim) + tuple(t.shape))).movedim(-1, 1)
        if t.ndim == 3:
            return t[None]
        if t.ndim == 5:
            return t
    return _image_batch(t, "measurements")


def _ct_size(sinogram: Tensor, circle: bool, detectors_option: int | None) -> int:
    """Image side N with ``default_detectors(N, circle)`` detectors, read off a sinogram; refused
    when ``--detectors`` sets the count, which then says nothing about N."""
    if detectors_option is not None:
        raise ValueError(f"--detectors {detectors_option}: the image size cannot be read off the measurements; pass --size")
    detectors = sinogram.shape[-2]
    sizes = [n for n in range(2, detectors + 1) if default_detectors(n, circle) == detectors]
    if len(sizes) != 1:
        raise ValueError(f"cannot infer the image size from {detectors} detectors; pass --size (and --detectors)")
    return sizes[0]


def _physics(args, operator: str, spec: dict | None, data: Tensor | None, shape: tuple[int, int] | None, noise):
    """The operator: each setting from the command line, else the model's ``spec``, else the
    measurements ``data`` or the truth's image ``shape``, else the demo's."""
    dtype = DTYPES[args.dtype] if args.dtype else DTYPES[spec["dtype"]] if spec else torch.float32
    if operator == "ct":
        circle = args.circle if args.circle is not None else bool(spec and spec["circle"])
        size = args.size or (spec and spec["img_size"]) or (
            _ct_size(data, circle, args.detectors) if data is not None else shape[0] if shape else demo.SIZE)
        angles = args.angles or (spec["angles"] if spec else data.shape[-1] if data is not None else demo.CT_ANGLES)
        same_grid = spec is not None and size == spec["img_size"] and circle == spec["circle"]
        detectors = args.detectors or (spec["n_detectors"] if same_grid else None)
        return Radon(size, angles, n_detectors=detectors, circle=circle, noise_model=noise, dtype=dtype)
    if operator == "blur":
        if args.kernel:
            kernel = load_array(args.kernel, "kernel")
        elif args.kernel_sigma is not None or spec is None:
            sigma = demo.BLUR_SIGMA if args.kernel_sigma is None else args.kernel_sigma
            if not 0 < sigma < math.inf:
                raise ValueError(f"--kernel-sigma must be a finite number > 0, got {sigma}")
            kernel = gaussian_kernel(sigma)
        else:
            kernel = spec["kernel"]
        return Blur(kernel, img_size=spec and spec["img_size"], boundary=args.boundary or (spec and spec["boundary"]) or "circular",
                    use_fft=spec and spec["use_fft"], noise_model=noise, dtype=dtype)
    mask, source = _mri_mask(args, spec, data, shape)
    physics = MRI(mask, coil_maps=spec and spec["coil_maps"], noise_model=noise, dtype=dtype)
    if data is not None:
        _check_mask_fits(data, physics.mask, source)
    return physics


def _mri_mask(args, spec: dict | None, data: Tensor | None, shape: tuple[int, int] | None) -> tuple[Tensor, str]:
    """The MRI mask (``--mask``, else the model's unless ``--acceleration`` or ``--size`` is given,
    else a random mask drawn with ``--acceleration`` and ``--seed``) and what to pass for another
    one, for :func:`_check_mask_fits`."""
    if args.mask:
        return load_array(args.mask, "mask"), f"--mask {args.mask}: pass the mask they were taken with"
    if spec is not None and args.acceleration is None and args.size is None:
        return spec["mask"], "the model's: pass the mask they were taken with (--mask)"
    side = (args.size,) * 2 if args.size else None
    mask_shape = side or (tuple(data.shape[-2:]) if data is not None else shape) or (demo.SIZE,) * 2
    acceleration = demo.MRI_ACCELERATION if args.acceleration is None else args.acceleration
    return (random_mask(mask_shape, acceleration, generator=torch.Generator().manual_seed(args.seed)),
            f"drawn with --acceleration {acceleration:g} and --seed {args.seed}: pass the --acceleration and --seed "
            "of their simulation, or their mask (--mask)")


def _check_mask_fits(data: Tensor, mask: Tensor, source: str) -> None:
    """Refuse MRI measurements ``data`` (``(B, 2, H, W)`` or ``(B, 2, N, H, W)``) that were taken
    with another mask than ``mask``: the mask samples k-space entries where every measurement
    (over the batch, real and imaginary parts and coils) is exactly 0, which only a mask applied
    to the data makes (a measured entry is never exactly 0), while the measurements are non-zero
    at entries it leaves out. Such data (from another --seed) reconstruct from the wrong
    entries, taking the zeros as measured. Non-zero data off the mask alone pass: a fully sampled
    k-space is undersampled by the mask (the operator's adjoint and data terms read only the
    sampled entries). Exact zeros at sampled entries alone are only warned about (on stderr): a
    mask that samples more than the measurements' (as a smaller --acceleration with the same
    --seed, whose columns include the larger one's) takes them as measured, but noiseless data of
    simple images (a constant, a band) have exact zeros in k-space too. ``source`` says where the
    mask came from and what to pass instead."""
    if data.ndim < 2 or tuple(data.shape[-2:]) != tuple(mask.shape):
        return  # the operator refuses their shape
    nonzero = (data != 0).flatten(0, -3).any(0)
    sampled = mask != 0
    zero_sampled, ignored = int((sampled & ~nonzero).sum()), int((~sampled & nonzero).sum())
    if zero_sampled and ignored:
        raise ValueError(f"the measurements were not taken with this mask ({source}): it samples {zero_sampled} "
                         f"k-space entries where every measurement is exactly 0, and {ignored} non-zero "
                         "measurements lie where it samples nothing")
    if zero_sampled and bool(nonzero.any()):
        print(f"liftinv reconstruct: warning: the mask samples {zero_sampled} k-space entries where every measurement "
              "is exactly 0 and takes them as measured; if the measurements were taken with a smaller mask, it is not "
              f"theirs ({source})", file=sys.stderr)


def _check_options(args, operator: str, name: str) -> None:
    """Raise :class:`OptionError` for an option given that does not apply to the method ``name``,
    to ``operator`` or to the source of the measurements."""
    def given(option: str) -> bool:
        return getattr(args, option) is not None

    def flag(option: str) -> str:
        return "--" + option.replace("_", "-")

    for option, methods in METHOD_OPTIONS.items():
        if given(option) and name not in methods:
            listed = " or ".join(filter(None, [", ".join(methods[:-1]), methods[-1]]))
            raise OptionError(f"{flag(option)} applies to --method {listed}, not {name}")
    if METHOD_OPERATORS.get(name, operator) != operator:
        raise OptionError(f"--method {name} applies to --operator {METHOD_OPERATORS[name]}, not {operator}")
    if name == "wiener" and args.boundary not in (None, "circular"):
        raise OptionError(f"--method wiener needs --boundary circular, got {args.boundary} (use tikhonov)")
    for option, applies in OPERATOR_OPTIONS.items():
        if given(option) and operator != applies:
            raise OptionError(f"{flag(option)} applies to --operator {applies}, not {operator}")
    for option in SIMULATION_OPTIONS:
        if given(option) and not args.simulate:
            raise OptionError(f"{flag(option)} applies to --simulate, not --measurements")
    if given("index") and given("truth"):
        raise OptionError("--index picks a bundled test image, but --truth is simulated instead")
    if name == "wiener" and given("weight") and args.weight == 0:  # its closed form divides by |FA|^2 + weight
        raise OptionError(f"--weight must be > 0 with --method wiener, got {args.weight:g}")


def _check_outputs(args) -> None:
    """Refuse an output file that is also an input or the other output: writing it would replace
    that file (the paths compared after resolving them)."""
    files = {"--measurements": args.measurements, "--truth": args.truth, "--model": args.model,
             "--kernel": args.kernel, "--mask": args.mask, "--save-measurements": args.save_measurements}
    for option, out in (("--out", args.out), ("--save-measurements", args.save_measurements)):
        if out:
            check_not_an_input(option, out, files)


def _method(args, operator: str, name: str, saved):
    """The reconstruction method ``name`` with its weight and iteration limit."""
    if (name == "model") != (saved is not None):
        raise ValueError("--method model needs --model FILE" if saved is None else f"--model needs --method model, got --method {name}")
    # Wiener on CT or MRI is refused by the method itself
    weight = args.weight if args.weight is not None else WEIGHTS.get((operator, name), demo.BLUR_WIENER)
    methods = {
        "model": lambda: saved,
        "adjoint": Adjoint,
        "fbp": lambda: FBP(args.filter or "ramp"),
        "zero-filled": ZeroFilled,
        "tikhonov": lambda: Tikhonov(weight, n_iter=args.iters or 200),
        "wiener": lambda: Wiener(weight),
        "tv": lambda: TV(weight, n_iter=args.iters or 500),
    }
    return methods[name]()


def _picture(x: Tensor, operator: str) -> Tensor:
    """Image layout for scores and image files: the modulus of MRI images."""
    return x.pow(2).sum(1, keepdim=True).sqrt() if operator == "mri" else x


def _picture_shape(y: Tensor, physics) -> tuple[int, ...]:
    """Shape of :func:`_picture` of the reconstruction from measurements ``y``."""
    if isinstance(physics, Radon):
        return (y.shape[0], 1, physics.n, physics.n)
    if isinstance(physics, MRI):
        return (y.shape[0], 1, *physics.mask.shape)
    return tuple(y.shape)


def _test_image(args, operator: str, physics) -> Tensor:
    """The bundled test image of ``operator`` (``--index``), resized to the operator's images."""
    name, default_index = TEST_IMAGES[operator]
    if operator == "ct":
        shape = (physics.n,) * 2
    elif operator == "mri":
        shape = tuple(physics.mask.shape)
    else:
        shape = tuple(physics.img_size[1:]) if physics.img_size else (args.size or demo.SIZE,) * 2
    if shape[0] != shape[1]:
        raise ValueError(f"the bundled test images are square, the operator needs {shape}; pass --truth")
    images = load_dataset(name, "test", size=shape[0], dtype=physics.dtype).tensors[0]
    index = default_index if args.index is None else args.index
    if not 0 <= index < len(images):
        raise ValueError(f"--index must be in [0, {len(images) - 1}], got {index}")
    return images[index : index + 1]


def _describe(physics) -> str:
    """One-line summary of an operator for messages."""
    if isinstance(physics, Radon):
        return f"Radon(N={physics.n}, {physics.angles.numel()} views, {physics.n_detectors} detectors)"
    if isinstance(physics, MRI):
        return f"MRI(mask {tuple(physics.mask.shape)}, {int((physics.mask != 0).sum())} samples)"  # a weighted mask's too
    return f"Blur(kernel {tuple(physics.kernel.shape)}, {physics.boundary})"


def run(args: argparse.Namespace) -> int:
    """Carry out ``liftinv reconstruct`` for parsed ``args``; returns the exit status."""
    if not args.out.lower().endswith(SUFFIXES):
        raise ValueError(f"--out must end in one of {SUFFIXES}, got {args.out}")
    _check_outputs(args)
    if args.noise is not None and not 0 <= args.noise < math.inf:
        raise ValueError(f"--noise must be a finite number >= 0, got {args.noise}")
    spec = model_spec(args.model) if args.model else None
    operator = args.operator
    if spec is not None:
        trained_for = next(k for k, v in OPERATOR_CLASSES.items() if v == spec["operator"])
        if operator not in (None, trained_for):
            raise ValueError(f"--operator {operator}, but the model was trained for {describe(spec)}")
        operator = trained_for
    if operator is None:
        raise ValueError("--operator is required without --model")
    name = args.method or ("model" if args.model else DEFAULT_METHOD[operator])
    _check_options(args, operator, name)
    if args.save_measurements and not args.save_measurements.lower().endswith(ARRAY_SUFFIXES):
        raise ValueError(f"--save-measurements must end in one of {ARRAY_SUFFIXES} (an image file holds round(255 clip(y, 0, 1)), "
                         f"not the measurements), got {args.save_measurements}")
    data = _measurement_batch(load_array(args.measurements, "measurements"), operator) if args.measurements else None
    truth = _image_batch(load_array(args.truth, "truth"), "truth") if args.truth else None
    if operator == "mri" and truth is not None and truth.shape[1] != 1:  # compared with the modulus
        raise ValueError(f"MRI truth must be real images (H, W) or (B, 1, H, W), got shape {tuple(truth.shape)}")
    generator = torch.Generator().manual_seed(args.seed)
    noise = GaussianNoise(sigma=NOISE[operator] if args.noise is None else args.noise, rng=generator) if args.simulate else None
    physics = _physics(args, operator, spec, data, None if truth is None else tuple(truth.shape[-2:]), noise)
    saved = load_model(args.model, physics) if args.model else None
    method = _method(args, operator, name, saved)
    if args.simulate:
        truth = (_test_image(args, operator, physics) if truth is None else truth).to(physics.dtype)
        y = physics(torch.cat([truth, torch.zeros_like(truth)], 1) if operator == "mri" else truth)
    else:
        y = data.to(physics.dtype)
    if y.shape[0] == 0:
        raise ValueError(f"no image to reconstruct: the measurements have shape {tuple(y.shape)}")
    height, width = _picture_shape(y, physics)[-2:]
    if args.size and (height, width) != (args.size, args.size):  # blur and MRI images take the data's size
        raise ValueError(f"--size {args.size}, but the images are {height}x{width}")
    check_output(args.out, _picture_shape(y, physics) if args.out.lower().endswith(IMAGE_SUFFIXES) else y.shape)
    if truth is not None and tuple(truth.shape) != _picture_shape(y, physics):  # before the work, as liftinv invert
        raise ValueError(f"--truth has shape {tuple(truth.shape)}, the reconstruction {_picture_shape(y, physics)}")
    if args.save_measurements:  # once every check has passed: a refused command writes nothing
        print(f"wrote measurements {save_array(y, args.save_measurements)}")
    start = time.perf_counter()
    parts = []
    for i in tqdm(range(y.shape[0]), disable=args.no_progress, desc=args.method or "reconstruct", unit="image"):
        try:
            parts.append(reconstruct(y[i : i + 1], physics, method))
        except ValueError as err:
            raise ValueError(f"measurements of shape {tuple(y.shape)} for {_describe(physics)}: {err}") from err
    x_hat = torch.cat(parts)
    label = f"model {args.model}" if saved is not None else repr(method)
    print(f"{operator}: {label}, {y.shape[0]} image(s) in {time.perf_counter() - start:.2f} s")
    if truth is not None:
        picture = _picture(x_hat, operator)
        truth = truth.to(picture.dtype)
        if not in_unit_range(truth):  # as liftinv invert: the scores' peak is 1
            print("PSNR and SSIM n/a (the truth lies outside [0, 1], their data range)")
        else:
            score = (f"SSIM {float(ssim(picture, truth).mean()):.4f}" if min(truth.shape[-2:]) >= SSIM_SIDE
                     else f"SSIM n/a (images smaller than {SSIM_SIDE}x{SSIM_SIDE})")
            print(f"PSNR {float(psnr(picture, truth).mean()):.2f} dB, {score}")
    out = _picture(x_hat, operator) if args.out.lower().endswith(IMAGE_SUFFIXES) else x_hat
    print(f"wrote {save_array(out, args.out)}")
    return 0


def reconstruct_main(argv: list[str]) -> int:
    """``liftinv reconstruct ARGS``: returns the exit status, as ``liftinv invert`` and ``liftinv
    train`` (:func:`~liftinv.cli_types.run_command`): an option that does not apply is an
    argparse error (exit status 2); bad input (a file whose content cannot be read included)
    prints ``liftinv reconstruct: error: ...`` and returns 2; a file that is missing, a folder, or
    cannot be opened or written returns 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(parser, lambda: run(args))
