"""Atomic writes: a reader sees either the previous complete file or the new complete file.

:func:`atomic_path` (and through it :func:`save_checkpoint`, :func:`write_text` and
:func:`write_figure`) writes to a temporary file in the target's folder, flushes it to disk and
renames it over the target (``os.replace`` is atomic on POSIX and Windows when both paths are on
one file system). If writing fails, the temporary file is removed and the previous file is left
untouched. :func:`load_checkpoint` uses ``torch.load(..., weights_only=True)``: checkpoints
hold only tensors and plain containers, never pickled code.
"""
from __future__ import annotations

import copy
import os
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


def _target(path: str | os.PathLike) -> Path:
    """The file that writing ``path`` replaces: ``path`` itself, or the file a symbolic link
    ``path`` points to (``os.path.realpath``, through a chain of links, also a dangling one), so
    that the rename replaces that file and the link survives, as ``open(path, "w")`` would."""
    return Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)


def _temporary_prefix(path: Path) -> str:
    """``.NAME.``, the start of the temporary names made for writing ``path``, with at most 100
    characters of ``path``'s name: in full, with ``mkstemp``'s 8 and a suffix, a name near the
    file system's limit (255 bytes) would make a temporary name over it ('File name too long')."""
    return f".{path.name[:100]}."


def _temporary_file(path: Path, suffix: str = ".tmp") -> str:
    """Create an empty temporary file (:func:`_temporary_prefix`, ``XXXXXXXX`` and ``suffix``) in
    the folder of ``path`` (a path :func:`_target` returned, whose folder exists) and return its
    name; ``OSError`` if none can be created there."""
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    return tmp


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary path in ``path``'s folder (created if needed) for the caller to write; when the
    block ends without an exception, the file is flushed to disk, given the permissions a new file
    gets under the process umask (``0o666 & ~umask``, not ``mkstemp``'s ``0o600``) and renamed over
    ``path``; otherwise it is removed and ``path`` is left untouched. A ``path`` that is a symbolic
    link is written through: the temporary file goes to the folder of the link's target and
    replaces the target, so the link stays a link. ``suffix`` is the temporary
    file's (writers that pick a format from it need the target's).

    Raises:
        IsADirectoryError, NotADirectoryError, OSError: :func:`check_output_file`'s, before
            anything is written.
    """
    path = _target(path)
    check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_file(path, suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_parent(path: str | os.PathLike, name: str) -> None:
    """Raise ``NotADirectoryError`` naming the ``name`` file ``path`` if the nearest existing path
    above it is a file: :func:`atomic_path` could not create its folder. Writers call it before
    the work whose result they write, so that the error comes before the work, not after it."""
    above = next(p for p in Path(path).absolute().parents if p.exists() or p.is_symlink())
    if not above.is_dir():
        raise NotADirectoryError(f"{name} file {path}: {above} is a file, not a folder, so the file's folder "
                                 "cannot be created")


def check_output_file(path: str | os.PathLike, name: str = "output") -> None:
    """Raise what :func:`atomic_path` would fail on before writing anything at ``path``, naming it
    as the ``name`` file: ``IsADirectoryError`` (``NAME file PATH is a folder, not a file``) if
    it is a folder, where the final rename would fail naming the temporary file;
    :func:`check_parent`'s ``NotADirectoryError`` if its folder cannot be created, where ``mkdir``
    would fail naming only the file in the way; and ``OSError`` (``NAME file PATH: no file can be
    created in FOLDER (reason)``) if the folder of the file written (a link's target's) takes no
    new file, or, where that folder is still to be made, the nearest existing folder above it
    takes no new folder (a read-only or virtual file system such as ``/proc``), where
    :func:`atomic_path` would fail naming its temporary file. The test creates a temporary file
    (or folder) there as :func:`atomic_path` does and removes it again. Writers call it before
    their work as well."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"{name} file {path} is a folder, not a file")
    target = _target(path)  # a link's target is written (atomic_path)
    check_parent(target, name)
    above = next(p for p in target.absolute().parents if p.exists() or p.is_symlink())
    try:
        if above == target.absolute().parent:
            os.unlink(_temporary_file(target))
        else:  # atomic_path would make the folders below ``above`` first
            os.rmdir(tempfile.mkdtemp(prefix=_temporary_prefix(target), dir=above))
    except OSError as err:
        raise OSError(f"{name} file {path}: no file can be created in {above} ({err.strerror or err})") from err


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_figure(fig, path: str | os.PathLike, dpi: int) -> None:
    """Write the matplotlib figure ``fig`` to ``path`` atomically (:func:`atomic_path`), in the
    format of the path's suffix (``.png``, ``.pdf``...)."""
    with atomic_path(path, Path(path).suffix) as tmp:
        fig.savefig(tmp, dpi=dpi)


def existing_file(path: str | os.PathLike, name: str) -> Path:
    """``path`` as a ``Path`` if it is a file that can be opened, else an ``IsADirectoryError``
    (a folder), a ``ValueError`` (a pipe, socket or device, which the readers cannot seek), a
    ``FileNotFoundError`` naming the ``name`` file, or the ``OSError`` that
    ``open`` raises (``PermissionError``...): the file is opened once here, so that a reader
    called next, which turns what it cannot parse into :func:`unreadable`, never takes a file that
    cannot be opened for unreadable content."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{name} file {path} is a folder, not a file")
    if path.exists() and not path.is_file():  # the readers seek; opening a pipe would wait for a writer
        raise ValueError(f"{name} file {path} is not a regular file (a pipe, socket or device): the readers need "
                         "a file on disk")
    if not path.is_file():
        raise FileNotFoundError(f"{name} file {path} not found")
    with open(path, "rb"):
        return path


def unreadable(name: str, path: str | os.PathLike, err: BaseException) -> ValueError:
    """The error for a ``name`` file that a reader failed on: ``cannot read NAME file PATH:
    reason``, the reason being the first line of ``err`` or its class name (``torch.load`` of an
    empty file raises a bare ``EOFError``)."""
    reason = (str(err).splitlines() or [type(err).__name__])[0]
    return ValueError(f"cannot read {name} file {path}: {reason}")


def _python_scalars(obj):
    """``obj`` with every NumPy number or bool inside its dicts, lists and tuples replaced by the
    Python scalar of equal value (``.item()``), the containers' types and attributes kept."""
    if isinstance(obj, (np.number, np.bool_)):
        return obj.item()
    if type(obj) in (dict, OrderedDict):
        out = copy.copy(obj)  # keeps attributes, such as a state dict's _metadata
        for key, value in obj.items():
            out[key] = _python_scalars(value)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_python_scalars(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` (tensors and plain containers) to ``path`` atomically (:func:`atomic_path`).
    NumPy scalars in it (a NumPy batch size or learning rate in a config or an optimizer state) are
    written as the Python numbers of equal value: ``torch.load(weights_only=True)``, hence
    :func:`load_checkpoint`, refuses NumPy scalars.

    The written file is read back (``weights_only=True``, tensors on the ``meta`` device, so no
    values are read) before it replaces ``path``: a payload holding anything else that
    ``weights_only`` refuses (a NumPy array, a ``Path``, a ``defaultdict``...) is refused, not
    written as a checkpoint that :func:`load_checkpoint` cannot read.

    Raises:
        TypeError: ``payload`` is not a dict, or holds an object that ``torch.load(weights_only=True)``
            refuses (``path`` is then left as it was).
    """
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    payload = _python_scalars(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
        try:
            torch.load(tmp, map_location="meta", weights_only=True)
        except pickle.UnpicklingError as err:  # weights_only's refusal; the reason is the WeightsUnpickler line
            lines = [line.strip() for line in str(err).splitlines() if "WeightsUnpickler error" in line]
            raise TypeError(f"payload holds an object that torch.load(weights_only=True) refuses, so the checkpoint "
                            f"{path} could not be read: {(lines or [type(err).__name__])[0]}") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = None, *,
                    name: str = "checkpoint") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; ``name`` says what the file holds in
    the errors.

    Raises:
        FileNotFoundError: ``path`` does not exist (``NAME file PATH not found``).
        IsADirectoryError: ``path`` is a folder.
        OSError: the file cannot be opened (``PermissionError``...), raised as ``open`` raises it.
        ValueError: ``path`` is not a regular file (a pipe, socket or device), or the file's
            content cannot be read (empty, corrupt, not a torch file, or holding
            pickled code, which ``weights_only`` refuses: :func:`unreadable`'s ``cannot read NAME
            file PATH: reason``), or is not a dict (``NAME file PATH does not hold a dict``).
    """
    path = existing_file(path, name)
    with open(path, "rb") as fh:
        try:
            payload = torch.load(fh, map_location=map_location, weights_only=True)
        except Exception as err:  # an empty or foreign file: EOFError, UnpicklingError, RuntimeError
            raise unreadable(name, path, err) from err
    if not isinstance(payload, dict):
        raise ValueError(f"{name} file {path} does not hold a dict, as a {name} file does: got a {type(payload).__name__}")
    return payload
