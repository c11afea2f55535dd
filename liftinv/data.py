r"""Bundled data sets and local-file loaders; nothing here ever downloads.

All loaders return a :class:`torch.utils.data.TensorDataset` whose first tensor holds images of
shape (N, 1, H, W) with values in [0, 1].
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from liftinv.validation import FLOAT_DTYPES
from operators.checks import is_integer

DATASETS: dict[str, str] = {
    "ellipses": "64x64 random ellipse phantoms (train 512, val 64, test 64)",
    "patches": "32x32 grey natural-image patches (train 2048, val 256, test 256)",
    "patches64": "64x64 grey natural-image patches (train 512, val 64, test 64)",
}
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def data_dir() -> Path:
    """Folder of the bundled data: ``$LIFTINV_DATA`` if set, else ``data/`` at the repository root."""
    env = os.environ.get("LIFTINV_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def _check_size(size: int | None) -> int | None:
    """``size`` as an ``int`` (``None`` kept) if it is a positive integer or ``None``."""
    if size is not None and (not is_integer(size) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    return None if size is None else int(size)


def _check_dtype(dtype: torch.dtype) -> None:
    """A ``TypeError`` naming ``dtype`` unless it is one of :data:`~liftinv.validation.FLOAT_DTYPES`
    (a float8 dtype is floating, but torch has not even a sum for it)."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be a floating torch.dtype that torch computes in "
                        f"({', '.join(str(d) for d in FLOAT_DTYPES)}), got {dtype!r}")


def resize(images: Tensor, size: int) -> Tensor:
    """Resize (N, C, H, W) images to (N, C, size, size) by antialiased bilinear interpolation,
    clipped back to the input's range [0, 1]."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    out = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp(0.0, 1.0)


def load_dataset(
    name: str, split: str, *, size: int | None = None, dtype: torch.dtype = torch.float32
) -> TensorDataset:
    """One split of a bundled data set as images (N, 1, H, W) in [0, 1].

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: resize to ``size`` x ``size`` (antialiased bilinear) when given.
        dtype: floating dtype of the images.

    Raises:
        ValueError: unknown ``name`` or ``split``, or invalid ``size``.
        FileNotFoundError: the data file is missing (run ``python -m liftinv.generate_data``).
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    size = _check_size(size)
    _check_dtype(dtype)
    path = data_dir() / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled data file {path} not found; create it with `python -m liftinv.generate_data` "
            "or point LIFTINV_DATA to the folder holding it"
        )
    with np.load(path) as archive:
        raw = archive[split]
    images = torch.from_numpy(raw.astype(np.float64) / 255.0).unsqueeze(1)
    if size is not None:
        images = resize(images, size)
    return TensorDataset(images.to(dtype))


def grey_float(img: np.ndarray, source: Path | str) -> np.ndarray:
    """Grey float image in [0, 1] from a 2-D, grey + alpha, RGB or RGBA array (alpha composited on
    white; grey + alpha as the RGBA image of three equal channels); a grey image with a singleton
    axis, ``(H, W, 1)`` or ``(1, H, W)`` (a one-page TIFF of a ``(1, H, W)`` array), is taken as
    ``(H, W)``, except that ``(1, W, 2..4)`` stays one row of channels. ``source`` names the
    image in the error for any other shape."""
    from skimage.color import rgb2gray, rgba2rgb
    from skimage.util import img_as_float

    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[0] == 1 and img.shape[-1] not in (2, 3, 4):
        img = img[0]
    if img.ndim == 3 and img.shape[-1] == 2:
        img = img[..., [0, 0, 0, 1]]
    if img.ndim == 3 and img.shape[-1] == 4:
        img = rgba2rgb(img)
    if img.ndim == 3 and img.shape[-1] == 3:
        img = rgb2gray(img)
    if img.ndim != 2:
        raise ValueError(f"image {source} has unsupported shape {img.shape}")
    return np.clip(img_as_float(img), 0.0, 1.0)


def load_image_folder(
    path: str | os.PathLike, size: int | None = None, *, dtype: torch.dtype = torch.float32
) -> TensorDataset:
    """All image files of a folder (sorted by name; PNG, JPEG, BMP, TIFF; subfolders are not read,
    whatever their names), converted to grey (N, 1, H, W).

    Colour images are converted with ``skimage.color.rgb2gray`` (alpha composited on white).
    With ``size``, every image is resized to ``size`` x ``size``; without it, all images must share
    one shape.

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: no image in the folder, an image holding NaN (naming it; a floating image's
            infinities are clipped to [0, 1] as its other values), or differing shapes without
            ``size``.
    """
    from skimage.io import imread

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found")
    size = _check_size(size)
    _check_dtype(dtype)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no image with suffix in {IMAGE_SUFFIXES} in {folder}")
    images = [torch.from_numpy(grey_float(imread(p), p))[None, None] for p in files]
    for p, img in zip(files, images):
        if bool(img.isnan().any()):
            raise ValueError(f"image {p} holds {int(img.isnan().sum())} NaN entries (of {img.numel()}); the images "
                             "must be finite")
    if size is not None:
        images = [resize(img, size) for img in images]
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) > 1:
        raise ValueError(f"images in {folder} have different shapes {sorted(shapes)}; pass size= to resize them")
    return TensorDataset(torch.cat(images).to(dtype))


def _read_idx(path: Path) -> np.ndarray:
    """Array stored in an IDX file (gzip-compressed or not), e.g. MNIST."""
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} not found (liftinv never downloads data)")
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:  # a download cut short: EOFError naming no file
            raise ValueError(f"{path} is not a complete gzip file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:  # the sizes would be read from missing bytes as 0
        raise ValueError(f"{path}: the IDX header of {ndim} dimensions needs {4 + 4 * ndim} bytes, the file holds {len(raw)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    start = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - start != expected:
        raise ValueError(f"{path}: header announces shape {dims} ({expected} bytes) but holds {len(raw) - start}")
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(dims)


def load_mnist_idx(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> TensorDataset:
    """MNIST-style IDX files on disk: images (N, 1, H, W) = uint8 / 255, plus labels (N,) int64
    when ``labels_path`` is given. Files may be gzip-compressed. Never downloads.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: not IDX (or a gzip file cut short), not uint8 images of shape (N, H, W), or
            label count mismatch.
    """
    _check_dtype(dtype)
    images = _read_idx(Path(images_path))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    x = torch.from_numpy(images.astype(np.float64) / 255.0).unsqueeze(1).to(dtype)
    if labels_path is None:
        return TensorDataset(x)
    labels = _read_idx(Path(labels_path))
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path}: expected {len(images)} labels, got shape {labels.shape}")
    return TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))


def shepp_logan(size: int = 64, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """The modified Shepp-Logan phantom of ``skimage.data.shepp_logan_phantom`` (400x400, values in
    [0, 1]) resized to (1, 1, size, size) with antialiasing."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize as sk_resize

    if size is None:
        raise ValueError("size must be a positive int, got None")
    size = _check_size(size)
    _check_dtype(dtype)
    img = sk_resize(shepp_logan_phantom(), (size, size), anti_aliasing=True, order=1)
    return torch.from_numpy(np.clip(img, 0.0, 1.0))[None, None].to(dtype)
