"""Argument types of the command lines: a bad value is an ``argparse`` error naming the option
(``argument --angles: must be an integer >= 1, got '0'``), before any work starts; and
:func:`run_command`, which turns the errors a command finds after parsing into its exit status."""
from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable

import torch

from liftinv.validation import check_device


def device(text: str) -> str:
    """A torch device that this machine has and that holds data: ``cpu``, ``cuda``, ``cuda:1``,
    ``mps``... (:func:`liftinv.validation.check_device`'s verdict as the option's error)."""
    try:
        check_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
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


def _number(text: str) -> float:
    """``text`` as a float, NaN if it is no number (which every range check then refuses)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, for instance)."""
    value = _number(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def float_at_least(low: float) -> Callable[[str], float]:
    """The type of a number option whose values are finite and at least ``low``."""

    def parse(text: str) -> float:
        value = _number(text)
        if not low <= value < math.inf:
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}, got {text!r}")
        return value

    return parse


#: A finite number >= 0 (a regularisation weight, a noise level, a tolerance).
nonnegative_float = float_at_least(0.0)


#: Tokens that start as a negative number does, ``-`` then a digit or ``.`` and a digit (``-1``,
#: ``-.5``, ``-1.``, ``-1e-3``), or that are ``-inf``, ``-infinity`` or ``-nan`` (any case).
NEGATIVE_NUMBER = re.compile(r"^-(\d|\.\d|(inf|infinity|nan)$)", re.IGNORECASE)


def negative_numbers_as_values(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser``, made to take a token of :data:`NEGATIVE_NUMBER` as a value, not as an option:
    argparse takes a token that starts with ``-`` for an option unless it matches its own pattern
    of negative numbers (``-1``, ``-.5``; not ``-1e-3``, ``-1.`` or ``-inf``), so ``--box -inf 0``
    failed with 'expected 2 arguments'. Its options must not look like such numbers (argparse's
    rule for its own pattern; ``-h`` and ``--name`` do not)."""
    parser._negative_number_matcher = NEGATIVE_NUMBER
    return parser


class OptionError(ValueError):
    """An option that does not apply to the chosen method, operator, regularizer or source, or
    options that exclude each other, found after parsing: an ``argparse`` error (usage, exit
    status 2), as a bad value is (:func:`run_command`)."""


def run_command(parser: argparse.ArgumentParser, body: Callable[[], int]) -> int:
    """Run ``body``, the work of a command whose arguments ``parser`` parsed, and return its exit
    status; the errors found after parsing end it as in every ``liftinv`` command:

    * :class:`OptionError`: ``parser.error`` (usage and ``PROG: error: MSG``, exit status 2);
    * ``OSError`` (a file that is missing, a folder, or cannot be opened, created or written):
      one line ``PROG: error: MSG`` on stderr, exit status 1;
    * ``ValueError``, ``TypeError`` (bad input, a file whose content cannot be read included):
      the same line, exit status 2.
    """
    try:
        return body()
    except OptionError as err:
        parser.error(str(err))
    except OSError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
