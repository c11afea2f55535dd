import re

import numpy as np
import pytest
import torch
from skimage.color import rgb2gray
from skimage.io import imsave

from liftinv.io import load_array, save_array


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128])
def test_array_round_trip_is_exact(tmp_path, suffix, dtype):
    x = torch.randn(3, 2, 5, 7, dtype=dtype, generator=torch.Generator().manual_seed(0))
    path = save_array(x, tmp_path / "sub" / f"x{suffix}")
    y = load_array(path)
    assert y.dtype == dtype and y.shape == x.shape and torch.equal(y, x)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


def test_png_round_trip_of_8_bit_values(tmp_path):
    levels = torch.randint(0, 256, (1, 1, 9, 11), generator=torch.Generator().manual_seed(1))
    x = levels.double() / 255
    y = load_array(save_array(x, tmp_path / "x.png"))
    assert y.shape == (9, 11) and y.dtype == torch.float64
    assert torch.equal(torch.round(y * 255), levels[0, 0].double())


def test_png_clips_to_unit_range(tmp_path):
    x = torch.tensor([[-0.5, 0.0], [1.0, 2.0]])
    assert torch.equal(load_array(save_array(x, tmp_path / "x.png")), torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64))


def test_png_rounds_to_the_nearest_8_bit_level(tmp_path):
    """Pixels are round(255 x), not truncated: 200.6 / 255 is stored as 201, 200.4 / 255 as 200."""
    x = torch.tensor([[200.6, 200.4], [0.7, 254.5001]], dtype=torch.float64) / 255
    y = load_array(save_array(x, tmp_path / "x.png"))
    assert torch.equal(y * 255, torch.tensor([[201.0, 200.0], [1.0, 255.0]], dtype=torch.float64))


@pytest.mark.parametrize("shape", [(3, 5), (4, 4), (6, 3), (7, 4)])
def test_tiff_of_three_or_four_rows_or_columns_is_grey(tmp_path, shape):
    """scikit-image writes a TIFF whose first or last axis has length 3 or 4 as RGB(A): a grey
    image of 3 or 4 rows failed ('not enough samples'), one of 3 or 4 columns became a colour
    strip; tifffile must read back the grey pixels round(255 x)."""
    import tifffile

    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    path = save_array(x, tmp_path / "x.tif")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
        assert np.array_equal(tif.asarray(), np.round(255 * x.numpy()).astype(np.uint8))


def test_rgb_image_is_read_as_grey(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    imsave(tmp_path / "rgb.png", rgb, check_contrast=False)
    grey = load_array(tmp_path / "rgb.png")
    np.testing.assert_allclose(grey.numpy(), rgb2gray(rgb), atol=1e-12)


def test_integer_arrays_become_floating(tmp_path):
    np.save(tmp_path / "i.npy", np.arange(6, dtype=np.int16).reshape(2, 3))
    y = load_array(tmp_path / "i.npy")
    assert y.dtype == torch.get_default_dtype() and torch.equal(y, torch.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64, np.uint64])
def test_wide_integer_arrays_keep_their_values(tmp_path, dtype):
    """Integer arrays became the default dtype, float32, whatever their width, so an int32 or
    int64 value above 2^24 (counts, labels) was rounded on loading (2^24 + 1 -> 2^24), also for
    a caller that computes in float64 (liftinv reconstruct --dtype float64 casts the loaded data
    to it). Integers that float32 cannot hold exactly now become float64, exact up to 2^53.
    Oracle: the integers written, compared as Python ints; int16 still becomes the default dtype
    (test_integer_arrays_become_floating)."""
    info = np.iinfo(dtype)
    values = [v for v in (2**24 + 1, 2**31 - 1, -(2**31), 2**32 - 1, 2**53 - 1, -(2**53) + 1)
              if info.min <= v <= info.max]
    for suffix, save in ((".npy", lambda a, p: np.save(p, a)), (".pt", lambda a, p: torch.save(torch.from_numpy(a), p))):
        save(np.array(values, dtype=dtype), tmp_path / f"x{suffix}")
        y = load_array(tmp_path / f"x{suffix}")
        assert y.dtype == torch.float64 and [int(v) for v in y.tolist()] == values


def test_bool_arrays_become_floating_and_suffixes_ignore_case(tmp_path):
    """A boolean .npy array is numeric (0/1, default float dtype); .NPY and .PT are .npy and .pt."""
    np.save(tmp_path / "b.npy", np.array([True, False, True]))
    y = load_array(tmp_path / "b.npy")
    assert y.dtype == torch.get_default_dtype() and torch.equal(y, torch.tensor([1.0, 0.0, 1.0]))
    x = torch.arange(4.0)
    for name in ("X.NPY", "X.PT"):
        assert torch.equal(load_array(save_array(x, tmp_path / name)), x)


@pytest.mark.parametrize("dtype", [">f8", ">i2", ">c16"])
def test_big_endian_npy_is_read_by_value(tmp_path, dtype):
    """A valid .npy in big-endian byte order (as written on such machines or by MATLAB/IDL tools)
    holds the same values as the native array."""
    native = (np.arange(6).reshape(2, 3) * (1 + 1j if "c" in dtype else 1)).astype(dtype[1:])
    np.save(tmp_path / "x.npy", native.astype(dtype))
    expected = torch.from_numpy(native)
    if not (expected.is_floating_point() or expected.is_complex()):
        expected = expected.to(torch.get_default_dtype())  # integers become floating
    assert torch.equal(load_array(tmp_path / "x.npy"), expected)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.npy"
    with pytest.raises(FileNotFoundError, match=f"measurements file {path} not found"):
        load_array(path, "measurements")


def test_bfloat16_goes_to_npy_as_float32_with_the_same_values(tmp_path):
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    save_array(x, tmp_path / "x.npy")
    back = load_array(tmp_path / "x.npy")
    assert back.dtype == torch.float32 and torch.equal(back, x.float())


def test_folder_is_refused_as_a_folder(tmp_path):
    path = tmp_path / "x.npy"
    path.mkdir()
    with pytest.raises(IsADirectoryError, match=f"measurements file {path} is a folder, not a file"):
        load_array(path, "measurements")


@pytest.mark.parametrize("name", ["x.npy", "x.png"])
def test_output_folder_is_refused_naming_it(tmp_path, name):
    """A folder as the output: save_array failed in the final rename, naming the temporary file
    ('Is a directory: .../.x.npy.k2j_.npy' -> 'x.npy'), and check_output, which commands call
    before their work, let it pass; both now name the output, the folder left as it was."""
    from liftinv.io import check_output

    path = tmp_path / name
    path.mkdir()
    with pytest.raises(IsADirectoryError, match=f"^output file {path} is a folder, not a file$"):
        check_output(path, (1, 1, 4, 5))
    with pytest.raises(IsADirectoryError, match=f"^output file {path} is a folder, not a file$"):
        save_array(torch.zeros(4, 5), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name] and not any(path.iterdir())


@pytest.mark.parametrize("name", ["x.npy", "x.png"])
def test_output_whose_folder_cannot_be_created_is_refused_before_the_work(tmp_path, name):
    """check_output, which liftinv invert and reconstruct call before solving, let pass an output
    under a file ('f/sub/x.npy' with f a file): the work ran and save_array's mkdir failed after
    it (FileExistsError or NotADirectoryError, naming no option). Now check_output raises the
    NotADirectoryError naming the output and the file in the way; the file is left as it was."""
    from liftinv.io import check_output

    (tmp_path / "f").write_text("a file")
    for path in (tmp_path / "f" / name, tmp_path / "f" / "sub" / name):
        with pytest.raises(NotADirectoryError, match=re.escape(f"output file {path}: {tmp_path / 'f'} is a file, not a folder")):
            check_output(path, (1, 1, 4, 5))
    assert (tmp_path / "f").read_text() == "a file"
    check_output(tmp_path / "new" / "sub" / name, (1, 1, 4, 5))  # folders to create: fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"must end in one of .*'\.txt'"):
        load_array(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="must end in one of"):
        save_array(torch.zeros(2, 2), tmp_path / "x.csv")


def test_unreadable_files(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read input file .*bad.pt"):
        load_array(tmp_path / "bad.pt")
    torch.save({"x": torch.zeros(2)}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="must hold a tensor, got dict"):
        load_array(tmp_path / "dict.pt")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read input file .*obj.npy"):
        load_array(tmp_path / "obj.npy")
    np.save(tmp_path / "str.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="must hold a numeric array"):
        load_array(tmp_path / "str.npy")


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".png"])
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_save_array_refuses_a_sparse_tensor_before_writing(tmp_path, suffix):
    """save_array wrote a sparse tensor to .pt, a file load_array refuses (it returns dense
    tensors), while .npy failed with torch's TypeError and .png with 'isnan ... SparseCPU'."""
    for x in (torch.eye(3).to_sparse(), torch.eye(3).to_sparse_csr()):
        with pytest.raises(ValueError, match=f"x must be a dense tensor, got layout {x.layout}"):
            save_array(x, tmp_path / f"x{suffix}")
    assert list(tmp_path.iterdir()) == []


def test_an_npz_archive_named_npy_is_refused_naming_the_file(tmp_path):
    """np.load reads an .npz archive whatever the suffix, so one saved (or renamed) as .npy failed
    in load_array with ''NpzFile' object has no attribute 'dtype'', naming no file."""
    with open(tmp_path / "y.npy", "wb") as fh:
        np.savez(fh, a=np.ones(2), b=np.zeros(3))
    with pytest.raises(ValueError, match=r"measurements file .*y.npy must hold one array \(np.save\), got an .npz archive "
                                         r"of \['a', 'b'\]"):
        load_array(tmp_path / "y.npy", "measurements")


@pytest.mark.parametrize("tensor, message", [
    (torch.eye(2).to_sparse(), "must hold a dense tensor, got layout torch.sparse_coo"),
    (torch.eye(2).to_sparse_csr(), "must hold a dense tensor, got layout torch.sparse_csr"),
    (torch.zeros(2, device="meta"), "holds a tensor on the meta device, which has no values"),
])
@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
def test_a_pt_file_of_a_tensor_without_dense_values_is_refused(tmp_path, tensor, message):
    """load_array returns a dense CPU tensor: a sparse tensor (COO or CSR) and a meta tensor (which
    has no values) were returned as they were stored without a word, to fail later in the caller
    ('reshape is not implemented for sparse tensors', 'Tensor.item() cannot be called on meta
    tensors')."""
    torch.save(tensor, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=f"measurements file .*x.pt {message}"):
        load_array(tmp_path / "x.pt", "measurements")


@pytest.mark.parametrize("name, content", [
    ("empty.pt", b""), ("empty.npy", b""), ("broken.png", b"\x89PNG\r\n\x1a\nxxxx"),
])
def test_empty_or_truncated_files_are_unreadable_not_a_crash(tmp_path, name, content):
    """A reader failing with an empty message (torch.load's EOFError on an empty file) or with an
    exception outside OSError/ValueError (PIL's SyntaxError on a broken PNG) is still a ValueError
    naming the file."""
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=f"cannot read measurements file .*{name}"):
        load_array(tmp_path / name, "measurements")


def test_image_output_needs_one_real_image(tmp_path):
    with pytest.raises(ValueError, match=r"one grey image, but the array has shape \(2, 1, 4, 4\)"):
        save_array(torch.zeros(2, 1, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="complex"):
        save_array(torch.zeros(4, 4, dtype=torch.complex64), tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN"):  # round(255 clip(NaN, 0, 1)) is no 8-bit level
        save_array(torch.tensor([[0.5, float("nan")], [0.0, 1.0]]), tmp_path / "x.png")
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got ndarray"):
        save_array(np.zeros((4, 4)), tmp_path / "x.npy")
    assert not any(tmp_path.iterdir())


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = save_array(torch.ones(3), tmp_path / "x.npy")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_array(torch.zeros(3), path)
    assert torch.equal(load_array(path), torch.ones(3)) and [p.name for p in tmp_path.iterdir()] == ["x.npy"]


@pytest.mark.parametrize("dtype", ["<f8", ">f4", "<i2", ">c16"])
def test_zero_dimensional_npy_keeps_its_shape(tmp_path, dtype):
    """A 0-d .npy (a scalar, e.g. a noise level) was read as shape (1,): np.ascontiguousarray,
    used to reach native byte order, returns at least 1-d arrays. Oracle: np.load's shape and value."""
    np.save(tmp_path / "s.npy", np.array(2.5 if dtype[1] != "i" else 7, dtype=dtype))
    stored = np.load(tmp_path / "s.npy")
    y = load_array(tmp_path / "s.npy")
    assert y.shape == stored.shape == ()
    assert y.item() == stored.item()
    save_array(torch.tensor(3.5, dtype=torch.float64), tmp_path / "t.npy")
    assert load_array(tmp_path / "t.npy").shape == ()


def test_conjugate_and_negative_views_go_to_npy_by_value(tmp_path):
    """save_array(z.conj(), '.npy') failed with torch's "Can't call numpy() on Tensor that has
    conjugate bit set" (no file named); the lazy conj/neg views are written as the values they
    stand for. Oracle: the materialised tensors (resolve_conj), and np.conj of the stored array."""
    z = torch.randn(3, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    for view in (z.conj(), z.conj().imag, -z.conj()):
        save_array(view, tmp_path / "v.npy")
        assert torch.equal(load_array(tmp_path / "v.npy"), view.resolve_conj().resolve_neg())
    np.testing.assert_array_equal(np.conj(np.load(tmp_path / "v.npy")), -z.numpy())


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".png"])
def test_file_that_cannot_be_opened_raises_opens_error(tmp_path, capsys, deny_open, suffix):
    """A file that cannot be opened (``PermissionError``, simulated: root reads any file) raises
    ``open``'s ``OSError`` and ``liftinv reconstruct`` exits 1, as for a checkpoint or a network
    file; ``load_array`` took it for unreadable content (``cannot read ... file``, a
    ``ValueError``, exit 2)."""
    from liftinv.reconstruct_cli import reconstruct_main

    path = save_array(torch.rand(16, 16), tmp_path / f"y{suffix}")
    deny_open(path)
    with pytest.raises(PermissionError):
        load_array(path, "measurements")
    status = reconstruct_main(["--measurements", str(path), "--operator", "blur", "--method", "adjoint", "--out", str(tmp_path / "x.npy")])
    assert status == 1 and "Permission denied" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".tif"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_naming_the_file(tmp_path, suffix, bad):
    """load_array returned NaN and Inf as stored, to callers that all need finite values: a truth
    with NaN was refused by the operator as 'x contains NaN or Inf entries', a kernel or
    measurements as 'kernel ...'/'y contains ...', naming no file. Now a ValueError naming the file
    and the count; a floating image's infinities are clipped to [0, 1] as before (documented), so
    only NaN is refused there. Oracle: np.isfinite of the values written."""
    import tifffile

    values = np.array([[0.25, bad, 0.5], [bad, 0.75, 1.0]], dtype=np.float32)
    path = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        np.save(path, values)
    elif suffix == ".pt":
        torch.save(torch.from_numpy(values), path)
    else:
        tifffile.imwrite(path, values)
    if suffix == ".tif" and not np.isnan(bad):
        assert torch.equal(load_array(path), torch.from_numpy(np.clip(values, 0, 1)))
        return
    with pytest.raises(ValueError, match=rf"^truth file {re.escape(str(path))} holds {(~np.isfinite(values)).sum()} NaN or Inf entries \(of 6\)"):
        load_array(path, "truth")


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.complex32])
def test_a_pt_file_of_a_dtype_torch_hardly_computes_with_is_refused(tmp_path, dtype):
    """A .pt file of float8 or complex32 was returned as stored, and failed in the caller naming
    neither file nor argument (liftinv reconstruct --kernel: NotImplementedError '"sum_cpu" not
    implemented for 'Float8_e4m3fn'', a traceback). Now a ValueError naming the file and dtype;
    float16, bfloat16 and complex64 still load as stored. Oracle: x.sum(), which torch does
    not implement for these dtypes."""
    x = torch.tensor([[0.5, 0.25]]).to(dtype)
    with pytest.raises(NotImplementedError):
        x.sum()
    torch.save(x, tmp_path / "k.pt")
    with pytest.raises(ValueError, match=rf"^kernel file {re.escape(str(tmp_path / 'k.pt'))} holds dtype {dtype}"):
        load_array(tmp_path / "k.pt", "kernel")
    for fine in (torch.float16, torch.bfloat16, torch.complex64):
        torch.save(torch.tensor([[0.5, 0.25]]).to(fine), tmp_path / "f.pt")
        got = load_array(tmp_path / "f.pt")
        assert got.dtype == fine and torch.equal(got, torch.tensor([[0.5, 0.25]]).to(fine))


@pytest.mark.parametrize("name", ["x.npy", "x.pt", "x.png", "x.tif"])
def test_save_array_checks_its_path_once(tmp_path, monkeypatch, name):
    """save_array checked the output path itself, again in _image_bytes (check_output) for an
    image, and atomic_path checked it once more: two or three walks up the folders for one file.
    atomic_path's check (checkpoint.check_output_file) is now the only one. Oracle: a spy on
    checkpoint.check_parent, which every path check calls, and the file written as before."""
    from liftinv import checkpoint

    calls = []
    original = checkpoint.check_parent
    monkeypatch.setattr(checkpoint, "check_parent", lambda *args: calls.append(args) or original(*args))
    x = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    save_array(x, tmp_path / name)
    assert len(calls) == 1
    torch.testing.assert_close(load_array(tmp_path / name).reshape(2, 2).to(x.dtype), x, atol=0.5 / 255 + 1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("suffix", [".npy", ".pt", ".png"])
@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.complex32])
def test_save_array_refuses_a_dtype_that_load_array_does_not_read_before_writing(tmp_path, suffix, dtype):
    """save_array wrote float8 and complex32 tensors to .pt, files that load_array refuses, while
    .npy failed with NumPy's TypeError 'Got unsupported ScalarType Float8_e4m3fn' naming no
    argument. Now ValueError naming x and the dtype, nothing written (as for a sparse tensor).
    Oracle: load_array's own refusal of such a file, and the folder left empty."""
    x = torch.tensor([[0.5, 0.25], [1.0, 0.0]]).to(dtype)
    torch.save(x, tmp_path / "ref.pt")
    with pytest.raises(ValueError, match="holds dtype"):
        load_array(tmp_path / "ref.pt")
    (tmp_path / "ref.pt").unlink()
    with pytest.raises(ValueError, match=rf"^x has dtype {dtype}, which load_array does not read"):
        save_array(x, tmp_path / f"x{suffix}")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("dtype", [np.longdouble, np.clongdouble])
def test_an_npy_of_a_dtype_torch_lacks_is_refused_naming_the_file(tmp_path, dtype):
    """A .npy file of NumPy's long double (float128 on x86) or its complex counterpart failed in
    torch.from_numpy with TypeError "can't convert np.ndarray of type numpy.longdouble", naming
    no file (liftinv reconstruct and invert, which report ValueErrors, showed a traceback). Now
    ValueError naming the file and the dtype. Oracle: torch.from_numpy's own refusal."""
    values = np.array([0.5, 0.25], dtype=dtype)
    if np.dtype(dtype).itemsize == np.dtype(np.float64 if dtype is np.longdouble else np.complex128).itemsize:
        pytest.skip("long double is double on this platform")
    with pytest.raises(TypeError):
        torch.from_numpy(values)
    np.save(tmp_path / "x.npy", values)
    with pytest.raises(ValueError, match=rf"^truth file {re.escape(str(tmp_path / 'x.npy'))} holds dtype {np.dtype(dtype)}, which torch has no dtype"):
        load_array(tmp_path / "x.npy", "truth")
