"""Atomic checkpoints: a reader sees either the previous complete file or the new complete file.

:func:`save_checkpoint` writes to a temporary file in the target's folder, flushes it to disk and
renames it over the target (``os.replace`` is atomic on POSIX and Windows when both paths are on
one file system). If writing fails, the temporary file is removed and the previous checkpoint is
left untouched. :func:`load_checkpoint` uses ``torch.load(..., weights_only=True)``: checkpoints
hold only tensors and plain containers, never pickled code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` (tensors and plain containers) to ``path`` atomically.

    Raises:
        TypeError: ``payload`` is not a dict.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict):
        raise ValueError(f"{path} does not hold a checkpoint dict, got {type(payload).__name__}")
    return payload
