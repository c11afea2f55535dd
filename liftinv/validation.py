"""Argument checks shared by configuration objects and builders."""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from operators.checks import is_integer, is_real


#: The real floating dtypes torch computes with (its float8 types lack even ``isfinite`` or a sum
#: on the CPU): the dtypes of the tensors a network takes.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float_dtype(name: str, tensor: Tensor, error: type[Exception] = TypeError) -> None:
    """``error`` naming ``name`` unless ``tensor`` has one of :data:`FLOAT_DTYPES` (not a complex,
    integer, bool or float8 dtype)."""
    if tensor.dtype not in FLOAT_DTYPES:
        raise error(f"{name} must be a real floating tensor, got dtype {tensor.dtype} (torch computes in "
                    f"{', '.join(str(d) for d in FLOAT_DTYPES)})")


def box_bounds(t: Tensor, lo: float, hi: float) -> tuple[float, float]:
    r"""``(lo, hi)`` moved into the finite range of ``t``'s dtype, :math:`[-\max, \max]` of its
    ``torch.finfo``: clamping ``t`` to them gives what clamping to ``(lo, hi)`` means for its finite
    entries, where torch refuses a bound its dtype cannot hold ('value cannot be converted to type
    float without overflow', e.g. ``hi = 1e300`` standing for no upper bound on float32 data)."""
    largest = torch.finfo(t.dtype).max
    return max(lo, -largest), min(hi, largest)


def check_fits_dtype(name: str, value: float, dtype: torch.dtype, of: str, advice: str = "") -> None:
    """A ``ValueError`` naming ``name`` if the number ``value`` (a weight, threshold or step that
    multiplies or bounds tensors of ``dtype``, the dtype of ``of``) is above the largest number of
    ``dtype``: it would be Inf there, and Inf * 0 is NaN; ``advice`` ends the message."""
    largest = torch.finfo(dtype).max
    if value > largest:
        raise ValueError(f"{name} = {value!r} overflows {dtype} (largest {largest:.3g}), the dtype of {of}"
                         + (f" ({advice})" if advice else ""))


def checked_field(obj: object, name: str, check: Callable[[str, object], object]) -> None:
    """Check field ``name`` of the dataclass ``obj`` (frozen or not) by ``check(name, value)`` and
    store the result, a Python number: a NumPy number would stay otherwise and print as another
    text in ``repr(obj)``, the method text that a checkpoint records and a resume compares."""
    object.__setattr__(obj, name, check(name, getattr(obj, name)))


def positive_int(name: str, value: object) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1 (not a bool), else raise a
    ``ValueError`` naming ``name``."""
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def real_float(value: object) -> float:
    """``value`` as a Python float if it is a real number (:func:`~operators.checks.is_real`),
    ``math.inf`` or ``-math.inf`` for one beyond the float range (an integer or fraction, whose
    ``float()`` raises an ``OverflowError`` naming nothing), NaN for anything else: what range
    checks compare."""
    if not is_real(value):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def positive_finite(name: str, value: object) -> float:
    """Return ``value`` as a Python float if it is a real number (Python or NumPy, not a bool,
    string or tensor: :func:`~operators.checks.is_real`) that is > 0 and finite as a float, else a
    ``ValueError`` naming ``name``: NaN, Inf, 0 and negative numbers, and an integer beyond the
    float range (whose ``float()`` raises an ``OverflowError`` naming nothing). The one check of
    the weights, steps and scales that must be finite positive numbers."""
    number = real_float(value)
    if not 0 < number < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def seed_int(name: str, value: object) -> int:
    """Return ``value`` as an ``int`` if it is an integer (Python or NumPy, not a bool), else raise
    a ``ValueError`` naming ``name``: ``torch.Generator.manual_seed`` refuses a NumPy integer with
    'an integer is required' (naming no argument) and takes ``True`` as the seed 1."""
    if not is_integer(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def integer_index(name: str, value: object, what: str | None = None) -> int:
    """``value`` as an ``int`` if it is an integer (:func:`~operators.checks.is_integer`: Python
    and NumPy integers; not a bool, float, string or tensor), else a ``TypeError`` naming ``name``
    (and ``what`` the index is, e.g. ``"a variable index"``): a float, bool or tensor equal to an
    integer compares and hashes as that integer, and ``int()`` would truncate 1.5 to 1 and take
    ``"1"``. The one check of the indices of variables, layers and blocks; the caller checks the
    range."""
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer{f' ({what})' if what else ''}, got {value!r}")
    return int(value)


def sample_shape(name: str, value: object) -> tuple[int, ...]:
    """``value`` (the shape of one sample, without batch) as a tuple of ints if it is a sequence
    of integers >= 1, else a ``TypeError`` (not a sequence) or ``ValueError`` naming ``name[i]``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of sizes (one sample, without batch), got {value!r}")
    return tuple(positive_int(f"{name}[{i}]", s) for i, s in enumerate(value))


def check_flag(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``, else a ``TypeError`` naming ``name`` (a string such
    as ``"False"``, a number or ``None`` would otherwise be taken by its truth value)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


#: Methods through which torch modules' ``forward`` computes their map: a subclass that overrides
#: one of them changes the map as much as one overriding ``forward`` (``nn.Conv1d/2d/3d`` apply
#: their weight by ``_conv_forward``, the instance norms normalise by ``_apply_instance_norm``;
#: ``module(x)`` runs ``forward`` through ``__call__``, ``_wrapped_call_impl`` and ``_call_impl``).
FORWARD_PARTS = ("forward", "_conv_forward", "_apply_instance_norm", "__call__", "_wrapped_call_impl", "_call_impl")


def forward_replaced(module: object) -> bool:
    """Whether the instance ``module`` holds one of the methods of :data:`FORWARD_PARTS` as an
    attribute of its own (``module.forward = ...``, as monkey-patching or accelerate's
    ``add_hook_to_module`` do): calling it then runs that function, not its class's."""
    own = getattr(module, "__dict__", {})
    return any(name in own for name in FORWARD_PARTS)


def is_compiled(module: object) -> bool:
    """Whether ``module`` is what ``torch.compile`` returns for a module, a
    ``torch._dynamo.eval_frame.OptimizedModule`` wrapping it as ``module._orig_mod`` (its forward is
    replaced on the instance: :func:`forward_replaced` holds); none exists before dynamo is
    imported, so it is not imported here."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    wrapper = getattr(eval_frame, "OptimizedModule", None)
    return wrapper is not None and isinstance(module, wrapper)


def keeps_forward(module: object, *classes: type) -> bool:
    """Whether ``module`` is an instance of one of ``classes`` whose class keeps that class's
    ``forward`` and the methods of :data:`FORWARD_PARTS` that ``forward`` calls, and which does
    not replace them on the instance (:func:`forward_replaced`): a subclass or an instance that
    overrides them (e.g. a weight-standardised convolution, by ``forward`` or ``_conv_forward``,
    or one adding a constant) may compute another map than its parameters say."""
    return not forward_replaced(module) and any(
        isinstance(module, cls) and all(getattr(type(module), name) is getattr(cls, name)
                                        for name in FORWARD_PARTS if hasattr(cls, name))
        for cls in classes)


def check_device(value: object) -> torch.device:
    """``value`` as a ``torch.device`` if this machine has it and it holds data: ``cpu``,
    ``cuda``, ``cuda:1``, ``mps``... (not ``meta``, whose tensors have shapes but no values),
    found by placing an empty tensor there (a backend that this build of torch lacks, as ``xpu``
    or ``xla``, is refused); else a ``ValueError`` saying why (the caller names the argument)."""
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"not a torch device: {value!r} ({err})") from None
    if dev.type == "meta":
        raise ValueError(f"{value!r}: meta tensors hold no values to compute with (use cpu)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{value!r}: CUDA is not available on this machine (use cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{value!r}: MPS is not available on this machine (use cpu)")
    try:
        torch.empty(0, device=dev)
    except Exception as err:  # a backend this build of torch lacks: AssertionError, NotImplementedError, ...
        reason = (str(err).splitlines() or [""])[0][:120]
        raise ValueError(f"{value!r}: this machine cannot hold tensors there ({type(err).__name__}: {reason}) "
                         "(use cpu)") from None
    return dev


def refuse_inference_mode(what: str) -> None:
    """A ``RuntimeError`` naming ``what`` under ``torch.inference_mode``, which disables the
    autograd that ``what`` needs (its failure inside would name no cause)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"{what} cannot run under torch.inference_mode: it needs autograd, which inference mode disables")


def reference_tensor(module: nn.Module) -> Tensor | None:
    """The tensor whose dtype and device ``module`` computes in: its first parameter, else its
    first floating-point buffer (a network of parameter-free maps holding buffers, e.g. a batch
    norm with ``affine=False``), ``None`` if it has neither."""
    ref = next(module.parameters(), None)
    return ref if ref is not None else next((b for b in module.buffers() if b.is_floating_point()), None)
