"""Argument types of the command lines: a bad value is an ``argparse`` error naming the option
(``argument --angles: must be an integer >= 1, got '0'``), before any work starts."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch


def device(text: str) -> str:
    """A torch device that this machine has and that holds data: ``cpu``, ``cuda``, ``cuda:1``,
    ``mps``... (not ``meta``, whose tensors have shapes but no values)."""
    try:
        dev = torch.device(text)
    except RuntimeError as err:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} ({err})") from None
    if dev.type == "meta":
        raise argparse.ArgumentTypeError(f"{text!r}: meta tensors hold no values to compute with (use cpu)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine (use cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine (use cpu)")
    return text


def int_at_least(low: int) -> Callable[[str], int]:
    """The type of an integer option whose values are at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1)


#: ``--dtype`` choices (``liftinv train``, ``liftinv reconstruct``): name -> torch dtype.
DTYPES = {"float32": torch.float32, "float64": torch.float64}


#: The integers ``torch.Generator.manual_seed`` takes (a negative seed is taken modulo 2**64).
SEED_RANGE = (-(2**63), 2**64 - 1)


def seed(text: str) -> int:
    """An integer seed that ``torch.Generator.manual_seed`` takes, in :data:`SEED_RANGE`."""
    low, high = SEED_RANGE
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be an integer from -2**63 to 2**64 - 1 (a torch seed), got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, for instance)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value
