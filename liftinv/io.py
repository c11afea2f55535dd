r"""Arrays on disk: ``.npy`` (NumPy), ``.pt`` (a tensor saved by ``torch.save``) and images
(``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``).

:func:`load_array` returns a CPU tensor: NumPy and torch files as stored, in native byte order
(complex arrays complex ones; integer and bool arrays become floating tensors: the default dtype
where it holds every value of their type exactly, bool to uint16 in float32, else float64, exact
up to :math:`2^{53}` in magnitude, which int32 and uint32 never exceed); images as grey values in
[0, 1] of shape ``(H, W)`` (integer images divided by their type's maximum, floating-point ones
clipped, not rescaled), in float64, or in the image's own dtype for a float32 or float16 image.
It refuses, naming the file, values that no caller can use: NaN or Inf, and dtypes outside
:data:`LOADED_DTYPES`.
:func:`save_array` writes atomically (a temporary file in the target's folder, then
``os.replace``, :func:`liftinv.checkpoint.atomic_path`); images are written as 8-bit grey,
``round(255 clip(x, 0, 1))``: exactly in ``.png``, ``.bmp`` and ``.tif``; ``.jpg``/``.jpeg``
compress lossily, so their pixels differ from these values (by tens of levels for noisy images).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from liftinv.checkpoint import atomic_path, check_output_file, existing_file, unreadable
from liftinv.data import IMAGE_SUFFIXES, grey_float
from liftinv.validation import FLOAT_DTYPES

ARRAY_SUFFIXES = (".npy", ".pt")
#: The dtypes :func:`load_array` returns (integer and bool arrays become floating, :func:`_floating`): those
#: torch computes with; a file of another (``float8_*``, ``complex32``) is refused.
LOADED_DTYPES = (*FLOAT_DTYPES, torch.complex64, torch.complex128)
SUFFIXES = ARRAY_SUFFIXES + IMAGE_SUFFIXES


def _suffix(path: Path, name: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{name} {path} must end in one of {SUFFIXES}, got suffix {path.suffix!r}")
    return suffix


def _floating(dtype: torch.dtype) -> torch.dtype:
    """The floating dtype that an integer or bool array of ``dtype`` becomes: the default dtype if
    it holds each value of ``dtype`` exactly (its significand has at least as many bits as the
    integers' magnitude: bool, int8, uint8, int16 and uint16 in float32), else float64, so that
    a caller computing in float64 gets the integers stored (up to :math:`2^{53}`), not their
    float32 roundings (:math:`2^{24} + 1 \\to 2^{24}`)."""
    default = torch.get_default_dtype()
    if dtype == torch.bool:
        return default
    digits = round(-math.log2(torch.finfo(default).eps)) + 1  # float32: 24
    return default if torch.iinfo(dtype).bits - dtype.is_signed <= digits else torch.float64


def load_array(path: str | os.PathLike, name: str = "input") -> Tensor:
    """Read an array from ``path`` (see the module docstring for formats and layouts).

    Args:
        path: file to read.
        name: what the file holds, used in error messages (e.g. ``"measurements"``).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names ``name`` and the path).
        IsADirectoryError: ``path`` is a folder.
        OSError: the file cannot be opened (``PermissionError``...), raised as ``open`` raises it.
        ValueError: unknown suffix, a path that is not a regular file (a pipe, socket or
            device), unreadable file, a ``.pt`` file that does not hold a dense
            (strided) tensor with values (a sparse or meta tensor), a ``.npy`` file holding an
            ``.npz`` archive, a non-numeric array or one of a NumPy dtype that torch lacks
            (``longdouble``, ``clongdouble``), an array of a dtype outside
            :data:`LOADED_DTYPES` (after integers become floating), an array or image holding NaN
            or Inf (every caller needs finite data; a floating image's infinities are clipped to
            [0, 1] first), or an image that is not grey (with or without alpha), RGB or RGBA.
    """
    path = Path(path)
    suffix = _suffix(path, name)
    existing_file(path, name)
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".pt":
            array = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from skimage.io import imread

            array = grey_float(imread(path), path)
    except Exception as err:  # readers fail in their own ways (PIL: SyntaxError; torch.load: a bare EOFError)
        raise unreadable(name, path, err) from err
    if isinstance(array, np.lib.npyio.NpzFile):  # np.load reads an archive whatever the suffix
        files = list(array.files)
        array.close()
        raise ValueError(f"{name} file {path} must hold one array (np.save), got an .npz archive of {files}")
    if suffix in IMAGE_SUFFIXES:
        tensor = torch.from_numpy(array)
    elif suffix == ".pt":
        if not isinstance(array, Tensor):
            raise ValueError(f"{name} file {path} must hold a tensor, got {type(array).__name__}")
        if array.layout != torch.strided:
            raise ValueError(f"{name} file {path} must hold a dense tensor, got layout {array.layout} (save x.to_dense())")
        if array.is_meta:
            raise ValueError(f"{name} file {path} holds a tensor on the meta device, which has no values")
        tensor = array.detach()
    else:
        if array.dtype.kind not in "biufc":
            raise ValueError(f"{name} file {path} must hold a numeric array, got dtype {array.dtype}")
        native = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))  # torch: native order only
        try:
            tensor = torch.from_numpy(native).reshape(array.shape)  # ascontiguousarray makes a 0-d array 1-d
        except TypeError as err:  # longdouble, clongdouble: no torch dtype
            raise ValueError(f"{name} file {path} holds dtype {array.dtype}, which torch has no dtype for; save it as "
                             "float64 or complex128") from err
    if not (tensor.is_floating_point() or tensor.is_complex()):
        tensor = tensor.to(_floating(tensor.dtype))
    if tensor.dtype not in LOADED_DTYPES:
        raise ValueError(f"{name} file {path} holds dtype {tensor.dtype}, which torch has few operations for (not "
                         "even a sum); save it as float32 or float64")
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        raise ValueError(f"{name} file {path} holds {int((~finite).sum())} NaN or Inf entries (of {tensor.numel()}); "
                         "every caller needs finite values")
    return tensor


def check_not_an_input(option: str, out: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Raise ``ValueError`` if the output ``out`` (the command's ``option``) is one of the
    ``inputs`` (option -> path, ``None`` for one not given; the paths compared after resolving
    them): writing it would replace that file."""
    for other, path in inputs.items():
        if path is not None and other != option and Path(path).resolve() == Path(out).resolve():
            raise ValueError(f"{option} {out} is also {other}: writing it would replace that file")


def check_output(path: str | os.PathLike, shape: Sequence[int]) -> None:
    """Raise the error that :func:`save_array` would raise for real data of ``shape`` at ``path``
    before writing (``ValueError``: unknown suffix, or an image file for data that are not one 2-D
    image; ``IsADirectoryError``: ``path`` is a folder; ``NotADirectoryError``: its folder cannot be
    created), so that a command can refuse its output file before the work that produces the data."""
    path = Path(path)
    check_output_file(path)
    if _suffix(path, "output") in IMAGE_SUFFIXES:
        _check_image_shape(path, shape)


def _check_image_shape(path: Path, shape: Sequence[int]) -> None:
    """A ``ValueError`` unless ``shape`` squeezes to one 2-D image (the image file ``path``)."""
    squeezed = [n for n in shape if n != 1]
    if len(squeezed) != 2:
        raise ValueError(
            f"an image file holds one grey image, but the array has shape {tuple(shape)} "
            f"({len(squeezed)} dimensions after squeezing); write {path.stem}.npy or .pt instead"
        )


def _image_bytes(x: Tensor, path: Path) -> np.ndarray:
    """``(H, W)`` uint8 grey image of ``x`` (any shape that squeezes to two dimensions)."""
    if x.is_complex():
        raise ValueError(f"cannot write complex data to the image {path}; use .npy or .pt")
    if bool(x.isnan().any()):
        raise ValueError(f"cannot write NaN to the image {path}; use .npy or .pt")
    _check_image_shape(path, x.shape)
    return np.round(255 * x.detach().cpu().squeeze().to(torch.float64).clamp(0, 1).numpy()).astype(np.uint8)


def save_array(x: Tensor, path: str | os.PathLike) -> Path:
    """Write the tensor ``x`` to ``path`` (format from the suffix), creating its folder; returns the path.
    A ``bfloat16`` tensor goes to ``.npy`` as float32 (the same values; NumPy has no bfloat16), a
    lazily conjugated (``x.conj()``) or negated view as the values it stands for.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``x`` is sparse (not strided) or of a floating or complex dtype outside
            :data:`LOADED_DTYPES` (``float8_*``, ``complex32``), unknown suffix, or an image file for data that
            is not one real 2-D image (after dropping dimensions of size 1) or that holds NaN.
        IsADirectoryError: ``path`` is a folder.
        NotADirectoryError: ``path``'s folder cannot be created (a path above it is a file).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:  # load_array reads dense tensors only
        raise ValueError(f"x must be a dense tensor, got layout {x.layout} (pass x.to_dense())")
    if (x.is_floating_point() or x.is_complex()) and x.dtype not in LOADED_DTYPES:  # NumPy has none of them
        raise ValueError(f"x has dtype {x.dtype}, which load_array does not read (pass x.float() or x.cfloat())")
    path = Path(path)
    suffix = _suffix(path, "output")
    if suffix in IMAGE_SUFFIXES:
        pixels = _image_bytes(x, path)
    with atomic_path(path, suffix) as tmp:  # checks the path (check_output_file) before writing
        if suffix == ".npy":  # NumPy has no bfloat16: float32 holds its values exactly; numpy() refuses conj/neg views
            values = x.detach().cpu().resolve_conj().resolve_neg()
            np.save(tmp, values.to(torch.float32 if x.dtype == torch.bfloat16 else x.dtype).numpy())
        elif suffix == ".pt":
            torch.save(x.detach().cpu().clone(), tmp)
        elif suffix in (".tif", ".tiff"):  # scikit-image would write a first or last axis of length 3 or 4 as RGB(A)
            import tifffile

            tifffile.imwrite(tmp, pixels, photometric="minisblack")
        else:
            from skimage.io import imsave

            imsave(tmp, pixels, check_contrast=False)
    return path


__all__ = ["ARRAY_SUFFIXES", "LOADED_DTYPES", "SUFFIXES", "check_not_an_input", "check_output", "load_array", "save_array"]
