r"""Write the bundled data sets of ``data/`` (run ``python -m liftinv.generate_data``).

Everything is deterministic: one ``numpy.random.Generator`` per data set with a fixed seed, and
only images that ship inside scikit-image (no download). Images are stored as ``uint8`` arrays of
shape (N, H, W) with keys ``train``, ``val`` and ``test`` in compressed ``.npz`` files; a stored
value ``k`` stands for the intensity ``k / 255``.

- ``ellipses.npz``: 64x64 random ellipse phantoms (512 / 64 / 64).
- ``patches.npz``: 32x32 grey natural-image patches (2048 / 256 / 256).
- ``patches64.npz``: 64x64 grey natural-image patches (512 / 64 / 64).

Natural-image patches of the three splits come from disjoint source images (:data:`SOURCES`), all
marked CC0, public domain or "no known copyright restrictions" in scikit-image's documentation.
"""
from __future__ import annotations

import argparse
import io
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import skimage.data
from skimage.transform import rescale

from liftinv.checkpoint import atomic_path, check_output_file
from liftinv.data import data_dir, grey_float

ELLIPSE_SEED = 20240601
PATCH_SEED = 20240602
ELLIPSE_COUNTS = {"train": 512, "val": 64, "test": 64}
PATCH_COUNTS = {32: {"train": 2048, "val": 256, "test": 256}, 64: {"train": 512, "val": 64, "test": 64}}
SUPERSAMPLE = 4
MIN_PATCH_STD = 0.01

SOURCES: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut", "brick", "cell", "clock", "coins", "grass", "gravel", "hubble_deep_field",
        "immunohistochemistry", "retina", "rocket", "text",
    ),
    "val": ("coffee",),
    "test": ("camera", "chelsea"),
}


def _skimage_image(name: str) -> np.ndarray:
    """Grey float64 image in [0, 1] of a bundled scikit-image picture (converted as
    :func:`liftinv.data.load_image_folder` converts files)."""
    return grey_float(getattr(skimage.data, name)(), f"skimage.data.{name}")


def random_ellipse_phantom(rng: np.random.Generator, size: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    r"""One Shepp-Logan-like phantom in [0, 1] of shape (size, size).

    An outer ellipse (centre coordinates each in [-0.05, 0.05], semi-axes in [0.7, 0.9], angle in
    [0, pi), intensity in [0.3, 0.6]) holds 3 to 10 inner ellipses (centre in the disc of radius
    0.55, semi-axes in [0.05, 0.4], angle in [0, pi), additive intensity in [-0.3, 0.5]); the sum
    is restricted to the outer ellipse, clipped to [0, 1] and averaged over ``supersample`` x
    ``supersample`` sub-pixels, on the square [-1, 1]^2.
    """
    fine = size * supersample
    t = (np.arange(fine) + 0.5) / fine * 2.0 - 1.0
    yy, xx = np.meshgrid(t, t, indexing="ij")

    def inside(cy: float, cx: float, a: float, b: float, theta: float) -> np.ndarray:
        c, s = np.cos(theta), np.sin(theta)
        u = (xx - cx) * c + (yy - cy) * s
        v = -(xx - cx) * s + (yy - cy) * c
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0

    outer = inside(*rng.uniform(-0.05, 0.05, 2), *rng.uniform(0.7, 0.9, 2), rng.uniform(0, np.pi))
    img = rng.uniform(0.3, 0.6) * outer.astype(np.float64)
    for _ in range(rng.integers(3, 11)):
        r, phi = 0.55 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        mask = inside(r * np.sin(phi), r * np.cos(phi), *rng.uniform(0.05, 0.4, 2), rng.uniform(0, np.pi))
        img += rng.uniform(-0.3, 0.5) * (mask & outer)
    img = np.clip(img, 0.0, 1.0)
    return img.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def random_patches(
    rng: np.random.Generator, images: list[np.ndarray], count: int, size: int
) -> np.ndarray:
    """``count`` random ``size`` x ``size`` crops, each from a random image at a random scale in
    {1, 1/2}; near-constant crops (standard deviation below :data:`MIN_PATCH_STD`) are redrawn."""
    pyramids = [[img, rescale(img, 0.5, anti_aliasing=True)] for img in images]
    out = np.empty((count, size, size))
    k = 0
    while k < count:
        img = pyramids[rng.integers(len(images))][rng.integers(2)]
        i = rng.integers(img.shape[0] - size + 1)
        j = rng.integers(img.shape[1] - size + 1)
        patch = img[i : i + size, j : j + size]
        if patch.std() >= MIN_PATCH_STD:
            out[k] = patch
            k += 1
    return out


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Round images in [0, 1] to ``uint8`` levels ``k / 255``."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def ellipse_splits(size: int = 64) -> dict[str, np.ndarray]:
    """The ``ellipses`` data set: ``{split: uint8 array (N, size, size)}``."""
    rng = np.random.default_rng(ELLIPSE_SEED)
    return {
        split: to_uint8(np.stack([random_ellipse_phantom(rng, size) for _ in range(n)]))
        for split, n in ELLIPSE_COUNTS.items()
    }


def patch_splits(size: int) -> dict[str, np.ndarray]:
    """The natural-patch data set of side ``size``: ``{split: uint8 array (N, size, size)}``."""
    rng = np.random.default_rng(PATCH_SEED + size)
    return {
        split: to_uint8(random_patches(rng, [_skimage_image(n) for n in SOURCES[split]], n, size))
        for split, n in PATCH_COUNTS[size].items()
    }


BUILDERS: dict[str, Callable[[], dict[str, np.ndarray]]] = {
    "ellipses": ellipse_splits,
    "patches": lambda: patch_splits(32),
    "patches64": lambda: patch_splits(64),
}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` like ``np.savez_compressed`` but byte-for-byte reproducibly (fixed zip
    timestamps), so regenerating unchanged data leaves the files identical; atomically
    (:func:`~liftinv.checkpoint.atomic_path`: an interrupted run keeps the previous file)."""
    with atomic_path(path, ".npz") as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    """Write every bundled data set to ``--out`` (default: :func:`liftinv.data.data_dir`,
    ``$LIFTINV_DATA`` if set, else the repository's ``data/``); return the exit status: 2 for a
    folder that cannot be created, 1 for a file that cannot be written (a folder in its place, a
    folder that takes no new file: found before any data set is built and nothing is written),
    with one line ``PROG: error: MSG`` on stderr."""
    parser = argparse.ArgumentParser(prog="python -m liftinv.generate_data",
                                     description="Write the bundled data sets (the .npz files of data/), deterministically.")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: $LIFTINV_DATA if set, else the repository's data/; now {str(data_dir()).replace('%', '%%')})")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else data_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file where the folder should be
        parser.error(f"argument --out: cannot create the folder {out}: {err}")
    try:
        for name in BUILDERS:  # before the first is built: none is written where one of them cannot be
            check_output_file(out / f"{name}.npz", "data")
        for name, build in BUILDERS.items():
            path = out / f"{name}.npz"
            splits = build()
            save_npz(path, splits)
            shapes = ", ".join(f"{k} {v.shape}" for k, v in splits.items())
            print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {shapes}")
    except OSError as err:  # a file that cannot be written: exit status 1, as the liftinv commands
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
