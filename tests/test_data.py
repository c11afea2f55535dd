import gzip
import os
import re

import numpy as np
import pytest
import torch
from skimage.color import rgb2gray
from skimage.data import shepp_logan_phantom
from skimage.io import imsave

from liftinv import generate_data
from liftinv.data import (
    DATASETS,
    SPLITS,
    data_dir,
    load_dataset,
    load_image_folder,
    load_mnist_idx,
    shepp_logan,
)
from liftinv.validation import FLOAT_DTYPES

COUNTS = {
    "ellipses": generate_data.ELLIPSE_COUNTS,
    "patches": generate_data.PATCH_COUNTS[32],
    "patches64": generate_data.PATCH_COUNTS[64],
}
SIDES = {"ellipses": 64, "patches": 32, "patches64": 64}


@pytest.mark.parametrize("name", sorted(DATASETS))
@pytest.mark.parametrize("split", SPLITS)
def test_bundled_datasets_shapes_and_range(name, split):
    (x,) = load_dataset(name, split).tensors
    side = SIDES[name]
    assert x.shape == (COUNTS[name][split], 1, side, side) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert x.flatten(1).std(1).min() > 0  # no blank image
    # stored as uint8 levels k / 255
    torch.testing.assert_close(x * 255, (x * 255).round(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_bundled_data_equal_generator_output(name, tmp_path):
    """The files in data/ are what ``python -m liftinv.generate_data`` writes, level by level and
    byte for byte (the archive as save_npz writes it: keys, order, compression)."""
    splits = generate_data.BUILDERS[name]()
    for split in SPLITS:
        (x,) = load_dataset(name, split, dtype=torch.float64).tensors
        np.testing.assert_array_equal(np.round(x[:, 0].numpy() * 255).astype(np.uint8), splits[split])
    generate_data.save_npz(tmp_path / f"{name}.npz", splits)
    assert (tmp_path / f"{name}.npz").read_bytes() == (data_dir() / f"{name}.npz").read_bytes()


def test_patch_sources_are_disjoint_and_offline():
    seen = set()
    for split in SPLITS:
        names = set(generate_data.SOURCES[split])
        assert not names & seen
        seen |= names
    img = generate_data._skimage_image("chelsea")
    assert img.ndim == 2 and 0 <= img.min() and img.max() <= 1


def test_ellipse_phantom_is_deterministic_and_supported_in_disc():
    a = generate_data.random_ellipse_phantom(np.random.default_rng(3), 32)
    b = generate_data.random_ellipse_phantom(np.random.default_rng(3), 32)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and a.max() > 0
    # the outer ellipse has semi-axes <= 0.9 and centre within 0.05: corners are empty
    assert a[0, 0] == a[0, -1] == a[-1, 0] == a[-1, -1] == 0


def test_resize_and_dtype():
    (x,) = load_dataset("ellipses", "val", size=31, dtype=torch.float64).tensors
    (full,) = load_dataset("ellipses", "val", dtype=torch.float64).tensors
    assert x.shape == (64, 1, 31, 31) and x.dtype == torch.float64
    assert x.min() >= 0 and x.max() <= 1
    torch.testing.assert_close(x.mean((1, 2, 3)), full.mean((1, 2, 3)), atol=0.02, rtol=0)


def test_resize_is_antialiased():
    r"""Downsampling 32 -> 8 (factor 4) of an image whose columns 0, 4, 8, ... are 1 (others 0):
    the antialiased bilinear filter is a triangle of half-width 4 input pixels centred at
    :math:`4i + 1.5`, whose weights at the bright columns (distances 1.5 and 2.5) are
    :math:`(0.625 + 0.375) / 4 = 1/4`, the local mean, at every interior output column; plain
    bilinear sampling would give 0 (it reads columns :math:`4i + 1, 4i + 2`)."""
    from liftinv.data import resize

    stripes = (torch.arange(32) % 4 == 0).to(torch.float64).expand(1, 1, 32, 32)
    out = resize(stripes, 8)
    assert out.shape == (1, 1, 8, 8)
    torch.testing.assert_close(out[..., 1:-1], torch.full((1, 1, 8, 6), 0.25, dtype=torch.float64), atol=1e-12, rtol=0)


def test_resize_stays_in_the_unit_interval_exactly():
    """The filter's weights sum to 1 only up to rounding (a white 32x32 image resized to 9x9
    gives 1 + 2.4e-7 in float32); the output is clipped back to [0, 1], so white stays 1."""
    from liftinv.data import resize

    out = resize(torch.ones(1, 1, 32, 32), 9)
    assert out.max() == 1.0 and out.min() > 0.999


def test_dataset_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("mnist", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("ellipses", "validation")
    with pytest.raises(ValueError, match="size"):
        load_dataset("ellipses", "val", size=0)
    with pytest.raises(ValueError, match="size must be a positive int or None, got True"):
        load_dataset("ellipses", "val", size=True)
    with pytest.raises(TypeError, match="dtype"):
        load_dataset("ellipses", "val", dtype=torch.int64)
    monkeypatch.setenv("LIFTINV_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="generate_data") as err:
        load_dataset("ellipses", "val")
    assert str(tmp_path / "ellipses.npz") in str(err.value)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.complex64, torch.int64])
def test_loaders_refuse_a_dtype_torch_does_not_compute_in(tmp_path, dtype):
    """A float8 dtype is floating, and the loaders returned images in it (``load_dataset(...,
    dtype=torch.float8_e4m3fn)``), which then failed in the first sum ('"sum_cpu" not implemented
    for Float8_e4m3fn'), naming no argument. Now a TypeError naming ``dtype``, as for int64;
    every dtype of FLOAT_DTYPES is taken (oracle: the uint8 data / 255 in that dtype)."""
    imsave(tmp_path / "a.png", np.zeros((4, 4), dtype=np.uint8), check_contrast=False)
    for load in (lambda: load_dataset("ellipses", "val", dtype=dtype), lambda: load_image_folder(tmp_path, dtype=dtype),
                 lambda: shepp_logan(8, dtype=dtype)):
        with pytest.raises(TypeError, match=rf"^dtype must be a floating torch.dtype that torch computes in .*, got {dtype}$"):
            load()
    for good in FLOAT_DTYPES:
        (x,) = load_dataset("ellipses", "val", dtype=good).tensors
        raw = np.load(data_dir() / "ellipses.npz")["val"]
        assert x.dtype == good and torch.equal(x, torch.from_numpy(raw / 255.0).unsqueeze(1).to(good))


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    imsave(tmp_path / "a.png", grey, check_contrast=False)
    imsave(tmp_path / "b.PNG", rgb, check_contrast=False)
    (tmp_path / "notes.txt").write_text("not an image")
    (x,) = load_image_folder(tmp_path, dtype=torch.float64).tensors
    assert x.shape == (2, 1, 12, 10)
    np.testing.assert_allclose(x[0, 0].numpy(), grey / 255.0, atol=1e-12)
    np.testing.assert_allclose(x[1, 0].numpy(), rgb2gray(rgb), atol=1e-12)
    imsave(tmp_path / "c.png", grey[:8], check_contrast=False)
    with pytest.raises(ValueError, match="different shapes"):
        load_image_folder(tmp_path)
    (small,) = load_image_folder(tmp_path, size=8).tensors
    assert small.shape == (3, 1, 8, 8) and small.dtype == torch.float32


def test_image_folder_skips_a_subfolder_with_an_image_name(tmp_path):
    """A subfolder named like an image ('scans.png/', here holding an image itself) was passed to
    imread, which failed with '[Errno 21] Is a directory'; subfolders are not read. Oracle: the
    stored uint8 levels / 255 of the one image file."""
    grey = np.random.default_rng(0).integers(0, 256, (12, 10), dtype=np.uint8)
    imsave(tmp_path / "a.png", grey, check_contrast=False)
    (tmp_path / "scans.png").mkdir()
    imsave(tmp_path / "scans.png" / "b.png", grey[::-1], check_contrast=False)
    (x,) = load_image_folder(tmp_path, dtype=torch.float64).tensors
    assert x.shape == (1, 1, 12, 10)
    np.testing.assert_allclose(x[0, 0].numpy(), grey / 255.0, rtol=0, atol=1e-15)


def test_image_folder_composites_alpha_on_white(tmp_path):
    """An RGBA image becomes ``rgb2gray`` of ``rgba2rgb`` (alpha composited on white): fully
    transparent pixels are 1, opaque ones the grey of their colour."""
    from skimage.color import rgba2rgb

    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    rgba[0, :, 3], rgba[1, :, 3] = 0, 255
    imsave(tmp_path / "a.png", rgba, check_contrast=False)
    (x,) = load_image_folder(tmp_path, dtype=torch.float64).tensors
    assert x.shape == (1, 1, 6, 5)
    np.testing.assert_allclose(x[0, 0].numpy(), rgb2gray(rgba2rgb(rgba)), atol=1e-12)
    np.testing.assert_allclose(x[0, 0, 0].numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(x[0, 0, 1].numpy(), rgb2gray(rgba[1:2, :, :3])[0], atol=1e-12)


def test_grey_with_alpha_is_composited_on_white_as_rgba(tmp_path):
    """A grey PNG with alpha (PIL mode LA, shape (H, W, 2)) was refused as an unsupported shape;
    it is the grey image of its RGBA expansion (rgb2gray of rgba2rgb)."""
    from skimage.color import rgba2rgb

    rng = np.random.default_rng(3)
    la = rng.integers(0, 256, (6, 5, 2), dtype=np.uint8)
    la[0, :, 1] = 0
    imsave(tmp_path / "a.png", la, check_contrast=False)
    (x,) = load_image_folder(tmp_path, dtype=torch.float64).tensors
    rgba = la[..., [0, 0, 0, 1]]
    np.testing.assert_allclose(x[0, 0].numpy(), rgb2gray(rgba2rgb(rgba)), atol=1e-12)
    np.testing.assert_allclose(x[0, 0, 0].numpy(), 1.0, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 5, 1), (1, 6, 5)])
def test_grey_tiff_with_a_singleton_axis_is_read_as_grey(tmp_path, shape):
    """A grey TIFF of a (1, H, W) array (tifffile.imwrite of a one-channel image tensor) or with
    one sample per pixel as (H, W, 1) was refused as 'unsupported shape'; it is the 2-D image,
    uint8 / 255, for load_image_folder and load_array alike. A one-row RGB image (1, W, 3) is
    still RGB (rgb2gray)."""
    import tifffile

    from liftinv.io import load_array

    grey = np.random.default_rng(4).integers(0, 256, (6, 5), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "g.tif", grey.reshape(shape), photometric="minisblack")
    (x,) = load_image_folder(tmp_path, dtype=torch.float64).tensors
    np.testing.assert_allclose(x[0, 0].numpy(), grey / 255, rtol=0, atol=1e-15)
    np.testing.assert_allclose(load_array(tmp_path / "g.tif").numpy(), grey / 255, rtol=0, atol=1e-15)
    row = np.random.default_rng(5).integers(0, 256, (1, 5, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "row.tif", row, photometric="rgb")
    np.testing.assert_allclose(load_array(tmp_path / "row.tif").numpy(), rgb2gray(row), atol=1e-12)


def test_image_folder_refuses_an_image_with_nan_naming_it(tmp_path):
    """A floating TIFF holding NaN was loaded as it is (grey_float's clip keeps NaN), and the NaN
    went into the data set without a word (load_array refuses it). Now a ValueError naming the
    file and the count; infinities are clipped to [0, 1] as documented (oracle: np.clip)."""
    import tifffile

    values = np.array([[0.25, np.inf, 0.5], [-np.inf, 0.75, 1.0]], dtype=np.float32)
    tifffile.imwrite(tmp_path / "a.tif", values)
    (x,) = load_image_folder(tmp_path, dtype=torch.float32).tensors
    assert torch.equal(x[0, 0], torch.from_numpy(np.clip(values, 0, 1)))
    values[0, 0] = values[1, 2] = np.nan
    tifffile.imwrite(tmp_path / "b.tif", values)
    with pytest.raises(ValueError, match=rf"^image {re.escape(str(tmp_path / 'b.tif'))} holds 2 NaN entries \(of 6\)"):
        load_image_folder(tmp_path)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no image"):
        load_image_folder(tmp_path)


def write_idx(path, array, compress):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx(tmp_path, compress):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 7, 6), dtype=np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    write_idx(tmp_path / "img.idx", images, compress)
    write_idx(tmp_path / "lab.idx", labels, compress)
    x, y = load_mnist_idx(tmp_path / "img.idx", tmp_path / "lab.idx", dtype=torch.float64).tensors
    assert x.shape == (5, 1, 7, 6) and y.dtype == torch.int64
    np.testing.assert_allclose(x[:, 0].numpy(), images / 255.0)
    np.testing.assert_array_equal(y.numpy(), labels)
    (only,) = load_mnist_idx(tmp_path / "img.idx").tensors
    assert only.dtype == torch.float32


def test_mnist_idx_big_endian_int16_labels(tmp_path):
    """IDX type code 0x0B is big-endian int16: labels 1, 300, -2 read back exactly."""
    write_idx(tmp_path / "img", np.zeros((3, 2, 2), dtype=np.uint8), False)
    write_idx(tmp_path / "lab", np.array([1, 300, -2], dtype=">i2"), False)
    _, y = load_mnist_idx(tmp_path / "img", tmp_path / "lab").tensors
    assert y.tolist() == [1, 300, -2]


def test_mnist_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_mnist_idx(tmp_path / "train-images-idx3-ubyte")
    (tmp_path / "bad").write_bytes(b"\x12\x34\x56\x78" + bytes(10))
    with pytest.raises(ValueError, match="not an IDX file"):
        load_mnist_idx(tmp_path / "bad")
    # the magic number starts with two zero bytes
    (tmp_path / "bad0").write_bytes(b"\x01\x00\x08\x01" + (3).to_bytes(4, "big") + bytes(3))
    with pytest.raises(ValueError, match="bad magic number 01000801"):
        load_mnist_idx(tmp_path / "bad0")
    write_idx(tmp_path / "img", np.zeros((3, 4, 4), dtype=np.uint8), False)
    (tmp_path / "short").write_bytes((tmp_path / "img").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header announces"):
        load_mnist_idx(tmp_path / "short")
    write_idx(tmp_path / "lab", np.zeros(2, dtype=np.uint8), False)
    with pytest.raises(ValueError, match="expected 3 labels"):
        load_mnist_idx(tmp_path / "img", tmp_path / "lab")
    write_idx(tmp_path / "lab2d", np.zeros((3, 1), dtype=np.uint8), False)
    with pytest.raises(ValueError, match=r"expected 3 labels, got shape \(3, 1\)"):
        load_mnist_idx(tmp_path / "img", tmp_path / "lab2d")
    write_idx(tmp_path / "int", np.zeros((3, 4, 4), dtype=">i4"), True)
    with pytest.raises(ValueError, match="uint8"):
        load_mnist_idx(tmp_path / "int")


def test_mnist_idx_gzip_cut_short_is_a_value_error_naming_the_file(tmp_path):
    """A .gz file cut short (an interrupted download) or with a corrupt stream raised gzip's bare
    EOFError / BadGzipFile naming no file; now the documented ValueError naming it. Oracle: the
    complete file reads back as written."""
    images = np.arange(48, dtype=np.uint8).reshape(3, 4, 4)
    write_idx(tmp_path / "img.gz", images, True)
    (x,) = load_mnist_idx(tmp_path / "img.gz", dtype=torch.float64).tensors
    np.testing.assert_array_equal(np.round(x[:, 0].numpy() * 255), images)
    whole = (tmp_path / "img.gz").read_bytes()
    for name, content in (("cut.gz", whole[: len(whole) // 2]), ("bad.gz", whole[:10] + b"\xff" * 20)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / name))} is not a complete gzip file"):
            load_mnist_idx(tmp_path / name)


def test_mnist_idx_header_cut_short_is_named_as_such(tmp_path):
    """A file cut inside its header (3 dimensions announced, one size present) was refused as
    'header announces shape (5, 0, 0) (0 bytes) but holds -8': the missing sizes read as 0 and a
    negative byte count. Oracle: the bytes written (4 + 4 * 3 = 16 needed, 8 held)."""
    (tmp_path / "cut").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big"))
    with pytest.raises(ValueError, match=r"the IDX header of 3 dimensions needs 16 bytes, the file holds 8$"):
        load_mnist_idx(tmp_path / "cut")


def test_shepp_logan():
    full = shepp_logan(400, dtype=torch.float64)
    np.testing.assert_allclose(full[0, 0].numpy(), shepp_logan_phantom(), atol=1e-12)
    small = shepp_logan(37)
    assert small.shape == (1, 1, 37, 37) and small.min() >= 0 and small.max() <= 1
    assert abs(small.mean().item() - shepp_logan_phantom().mean()) < 0.01
    with pytest.raises(ValueError, match="size"):
        shepp_logan(None)


def test_save_npz_round_trip_is_byte_reproducible(tmp_path):
    arrays = {"train": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "test": np.ones((1, 2, 2), np.uint8)}
    generate_data.save_npz(tmp_path / "a.npz", arrays)
    generate_data.save_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as loaded:
        assert set(loaded.files) == set(arrays)
        for key, value in arrays.items():
            np.testing.assert_array_equal(loaded[key], value)


def test_save_npz_that_fails_keeps_the_previous_file(tmp_path):
    """An array that cannot be written (an object array, refused without pickling) stops the
    write: the previous file is left as it was and no temporary file remains."""
    path = tmp_path / "a.npz"
    generate_data.save_npz(path, {"train": np.ones((1, 2, 2), np.uint8)})
    before = path.read_bytes()
    with pytest.raises(ValueError, match="pickle"):
        generate_data.save_npz(path, {"train": np.zeros((1, 2, 2), np.uint8), "test": np.array([object()])})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.npz"]


@pytest.mark.parametrize("case", ["folder", "proc"])
def test_generate_data_refuses_a_file_it_cannot_write_before_building(tmp_path, monkeypatch, capsys, case):
    """python -m liftinv.generate_data --out DIR with DIR/patches.npz a folder built and wrote
    ellipses.npz, built the patches, then ended in an IsADirectoryError traceback (exit status 1
    from the traceback, the data half written); --out /proc (a folder that takes no new file)
    built the ellipses first and failed with an OSError traceback. Now every file is checked
    before the first build: exit status 1, one line 'python -m liftinv.generate_data: error:
    ...' naming the file, nothing written. Oracle: open() of the same path for writing fails."""
    built = []
    monkeypatch.setattr(generate_data, "BUILDERS", {name: (lambda name=name: built.append(name) or
                                                           {"train": np.zeros((1, 2, 2), np.uint8)})
                                                    for name in generate_data.BUILDERS})
    if case == "proc":
        if not os.path.isdir("/proc/self"):
            pytest.skip("needs Linux's /proc, where no file can be created")
        out, expected = "/proc", "data file /proc/ellipses.npz: no file can be created in /proc ("
    else:
        out = tmp_path
        (tmp_path / "patches.npz").mkdir()
        expected = f"data file {tmp_path / 'patches.npz'} is a folder, not a file"
    with pytest.raises(OSError):
        open(f"{out}/{'ellipses' if case == 'proc' else 'patches'}.npz", "wb")
    assert generate_data.main(["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"python -m liftinv.generate_data: error: {expected}") and "Traceback" not in err
    assert built == []
    if case == "folder":
        assert [p.name for p in tmp_path.iterdir()] == ["patches.npz"]
    generate_data.main(["--out", str(tmp_path / "new")])  # and writes them where it can
    assert built == list(generate_data.BUILDERS) and len(list((tmp_path / "new").iterdir())) == 3


def test_random_patches_redraw_near_constant_crops():
    """Crops with a standard deviation below MIN_PATCH_STD are redrawn: from an image that is
    constant but for one textured corner, every returned crop is textured."""
    img = np.zeros((64, 64))
    img[:16, :16] = np.random.default_rng(0).random((16, 16))
    patches = generate_data.random_patches(np.random.default_rng(1), [img], 20, 8)
    assert patches.shape == (20, 8, 8)
    assert (patches.std(axis=(1, 2)) >= generate_data.MIN_PATCH_STD).all()


def test_generate_data_refuses_an_output_folder_that_is_a_file(tmp_path, capsys):
    """``--out`` naming a file (or a path under one) is an argparse error (status 2), before any
    data set is built."""
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(SystemExit) as err:
            generate_data.main(["--out", str(out)])
        stderr = capsys.readouterr().err
        assert err.value.code == 2 and f"argument --out: cannot create the folder {out}" in stderr
