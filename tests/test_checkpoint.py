"""Atomic checkpoints: complete files only, no temporary left behind, a failed write keeps the old file."""
from __future__ import annotations

import os
import re
import stat
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from liftinv.checkpoint import load_checkpoint, save_checkpoint
from liftinv.io import save_array


def _payload(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"epoch": seed, "model": {"w": torch.randn(3, 5, generator=g, dtype=torch.float64)}, "rng": g.get_state(),
            "history": {"loss": [1.0, 0.5]}, "state": {"iteration": 7, "param_states": {0: {"prev": [torch.ones(2)]}}}}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert a["epoch"] == b["epoch"] and a["history"] == b["history"]
    assert torch.equal(a["model"]["w"], b["model"]["w"]) and torch.equal(a["rng"], b["rng"])
    assert torch.equal(a["state"]["param_states"][0]["prev"][0], b["state"]["param_states"][0]["prev"][0])


def test_roundtrip_leaves_only_the_file(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, _payload(1))
    _assert_same(load_checkpoint(path), _payload(1))
    save_checkpoint(path, _payload(2))  # overwrite
    _assert_same(load_checkpoint(path), _payload(2))
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _payload(1))

    def crash(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _payload(2))
    monkeypatch.undo()
    _assert_same(load_checkpoint(path), _payload(1))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_crash_before_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    def interrupt(obj, f, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ckpt.pt", _payload(1))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_umask_permissions(tmp_path, umask):
    """Not the temporary file's 0o600: a new file's 0o666 masked by the umask, as ``open`` gives."""
    previous = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "c.pt", _payload(1))
        save_array(torch.zeros(4, 4), tmp_path / "x.png")
        save_array(torch.zeros(4, 4), tmp_path / "x.npy")
        (tmp_path / "reference").touch()
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["c.pt", "x.png", "x.npy", "reference"], 0o666 & ~umask)


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match="payload"):
        save_checkpoint(tmp_path / "c.pt", [1, 2])
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=f"^checkpoint file {tmp_path / 'list.pt'} does not hold a dict, as a "
                                         "checkpoint file does: got a list$"):
        load_checkpoint(tmp_path / "list.pt")


def test_a_file_of_no_dict_is_named_as_what_it_should_hold(tmp_path):
    """A model file holding a list (liftinv reconstruct --model list.pt) was refused as 'PATH does
    not hold a checkpoint dict': the file is no checkpoint; ``name`` says what it should hold, as
    in the other errors of load_checkpoint."""
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=f"^model file {tmp_path / 'list.pt'} does not hold a dict, as a model file "
                                         "does: got a list$"):
        load_checkpoint(tmp_path / "list.pt", name="model")


def test_load_refuses_pickled_code_and_maps_tensors(tmp_path):
    """``weights_only=True``: a file holding an arbitrary Python object (here a
    ``fractions.Fraction``) is refused instead of unpickled; ``map_location`` moves every tensor
    (to the ``meta`` device here)."""
    import pickle
    from fractions import Fraction

    torch.save({"epoch": Fraction(1, 2)}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="cannot read checkpoint file .*code.pt") as refused:
        load_checkpoint(tmp_path / "code.pt")
    assert isinstance(refused.value.__cause__, pickle.UnpicklingError)
    save_checkpoint(tmp_path / "c.pt", _payload(3))
    loaded = load_checkpoint(tmp_path / "c.pt", map_location="meta")
    assert loaded["model"]["w"].device.type == "meta" and loaded["model"]["w"].shape == (3, 5)


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"\x93NUMPY\x01\x00v\x00"])
def test_unreadable_checkpoint_is_a_value_error(tmp_path, content):
    """An empty, corrupt or non-torch checkpoint raised torch.load's bare EOFError or its
    UnpicklingError (whose text advises weights_only=False), so ``liftinv train --resume`` ended
    in a traceback; now the documented ValueError naming the file, as for model files."""
    (tmp_path / "c.pt").write_bytes(content)
    with pytest.raises(ValueError, match="cannot read checkpoint file .*c.pt: "):
        load_checkpoint(tmp_path / "c.pt")


@pytest.mark.parametrize("value, refused", [
    (np.ones(2), "_reconstruct"), (Path("data"), "PosixPath|WindowsPath"), (np.str_("ct"), "numpy"),
    (defaultdict(int), "defaultdict"),
])
def test_a_payload_that_load_checkpoint_cannot_read_is_refused_keeping_the_previous_file(tmp_path, value, refused):
    """save_checkpoint wrote a payload holding a NumPy array, a Path, a NumPy string or a
    defaultdict without a word, and load_checkpoint (weights_only) then refused the file: the
    previous checkpoint was replaced by one that no run can resume from. Oracle: load_checkpoint
    of the previous file, and the directory listing."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _payload(1))
    with pytest.raises(TypeError, match=f"payload holds an object that torch.load\\(weights_only=True\\) refuses.*({refused})"):
        save_checkpoint(path, {**_payload(2), "config": {"x": [value]}})
    _assert_same(load_checkpoint(path), _payload(1))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_numpy_scalars_are_written_as_python_numbers(tmp_path):
    """A NumPy scalar anywhere in the payload (np.int64 batch size in a config, np.float64 learning
    rate in an optimizer's param_groups) made the checkpoint unreadable: torch.load(weights_only=True)
    refuses NumPy scalars. They are now written as the Python numbers of equal value, containers
    (dict, OrderedDict, list, tuple) kept. Oracle: plain torch.load(weights_only=True) of the file."""
    from collections import OrderedDict

    import numpy as np

    payload = {"config": {"batch_size": np.int64(10), "lr": np.float32(0.1), "flag": np.bool_(True)},
               "state": OrderedDict(w=torch.ones(2)), "groups": [{"betas": (np.float64(0.9), 0.999)}]}
    save_checkpoint(tmp_path / "c.pt", payload)
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert loaded["config"] == {"batch_size": 10, "lr": float(np.float32(0.1)), "flag": True}
    assert [type(v) for v in loaded["config"].values()] == [int, float, bool]
    assert type(loaded["state"]) is OrderedDict and torch.equal(loaded["state"]["w"], torch.ones(2))
    state = torch.nn.BatchNorm1d(2).state_dict()  # its _metadata (module versions) is kept, as torch.save keeps it
    save_checkpoint(tmp_path / "s.pt", {"model": state, "lr": np.float64(0.1)})
    assert load_checkpoint(tmp_path / "s.pt")["model"]._metadata == state._metadata == {"": {"version": 2}}
    assert loaded["groups"] == [{"betas": (0.9, 0.999)}] and type(loaded["groups"][0]["betas"][0]) is float
    assert type(payload["config"]["batch_size"]) is np.int64  # the caller's payload is left as it was


def test_missing_file_or_folder_is_named_as_what_it_should_hold(tmp_path):
    """load_checkpoint said 'checkpoint PATH not found' whatever ``name`` said the file holds
    (liftinv reconstruct --model none.pt: 'checkpoint none.pt not found') and for a folder too,
    which exists; now 'NAME file PATH not found' and an IsADirectoryError for a folder, the
    messages of io.load_array."""
    with pytest.raises(FileNotFoundError, match=f"^model file {tmp_path / 'none.pt'} not found$"):
        load_checkpoint(tmp_path / "none.pt", name="model")
    with pytest.raises(IsADirectoryError, match=f"^checkpoint file {tmp_path} is a folder, not a file$"):
        load_checkpoint(tmp_path)


def test_a_folder_as_the_file_to_write_is_refused_naming_it(tmp_path):
    """Every atomic writer (a checkpoint, a model file, a history plot, the demo's table) given a
    folder failed in the final rename with '[Errno 21] Is a directory: .../.d.png.t0mw6txu.png'
    -> 'd.png', naming the temporary file; now an IsADirectoryError naming the folder, which is
    left as it was (the oracle: its listing, and the folder's parent holds no temporary file), in
    the words of io.save_array and check_output (one check_output_file serves them all)."""
    from liftinv.checkpoint import write_figure, write_text
    from liftinv.history import TrainHistory, plot_history

    folder = tmp_path / "d.png"
    (folder / "inside").mkdir(parents=True)
    history = TrainHistory()
    history.append(epoch=0, seconds=0.0)
    writers = [lambda p: save_checkpoint(p, {"a": 1}), lambda p: write_text(p, "x"),
               lambda p: write_figure(plot_history(history), p, dpi=10), lambda p: plot_history(history, p)]
    for write in writers:
        with pytest.raises(IsADirectoryError, match=f"^output file {folder} is a folder, not a file$"):
            write(folder)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png"]
        assert [p.name for p in folder.iterdir()] == ["inside"]


def test_a_file_in_the_way_of_the_folder_to_write_in_is_named(tmp_path):
    """An atomic writer (a checkpoint, the JSON of a benchmark, a figure) whose folder is a file,
    or lies under one, failed in mkdir with the bare '[Errno 17] File exists: .../f' or
    '[Errno 20] Not a directory: .../f/sub', naming neither the file to write nor what is in the
    way; now check_parent's NotADirectoryError names both (the messages of io.check_output), and
    the file in the way is left as it was (oracle: its content; nothing else in the folder)."""
    from liftinv.checkpoint import write_text

    (tmp_path / "f").write_text("a file")
    for path in (tmp_path / "f" / "a.pt", tmp_path / "f" / "sub" / "a.pt"):
        for write in (lambda p: save_checkpoint(p, {"a": 1}), lambda p: write_text(p, "x")):
            with pytest.raises(NotADirectoryError, match=re.escape(
                    f"output file {path}: {tmp_path / 'f'} is a file, not a folder, so the file's folder cannot be created")):
                write(path)
    assert (tmp_path / "f").read_text() == "a file" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_writing_through_a_symbolic_link_replaces_its_target_and_keeps_the_link(tmp_path):
    """atomic_path renamed its temporary file onto the link's own path, so save_array,
    save_checkpoint and write_text through a symbolic link replaced the link by a regular file
    and left the file it pointed to as it was (open(path, 'w') writes the target). The target
    (os.path.realpath, a relative link and a chain of links too) is now replaced, the temporary
    file made in its folder. Oracle: os.readlink and the target's content read back."""
    from liftinv.checkpoint import write_text
    from liftinv.io import load_array

    (tmp_path / "data").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "data" / "x.npy"
    save_array(torch.zeros(3), target)
    link = tmp_path / "links" / "x.npy"
    link.symlink_to(os.path.join("..", "data", "x.npy"))
    chain = tmp_path / "chain.npy"
    chain.symlink_to(link)
    for i, path in enumerate((link, chain), start=1):
        assert save_array(torch.full((3,), float(i)), path) == path
        assert os.readlink(link) == os.path.join("..", "data", "x.npy") and os.readlink(chain) == str(link)
        assert torch.equal(load_array(target), torch.full((3,), float(i)))
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["x.npy"]
    text, text_link = tmp_path / "data" / "t.txt", tmp_path / "t.txt"
    text_link.symlink_to(text)  # dangling: writing creates the target, as open() does
    write_text(text_link, "new")
    assert text_link.is_symlink() and text.read_text() == "new"
    ckpt, ckpt_link = tmp_path / "data" / "c.pt", tmp_path / "c.pt"
    save_checkpoint(ckpt, {"a": 1})
    ckpt_link.symlink_to(ckpt)
    save_checkpoint(ckpt_link, {"a": 2})
    assert ckpt_link.is_symlink() and load_checkpoint(ckpt)["a"] == 2


def test_a_file_name_near_the_length_limit_is_written(tmp_path):
    """atomic_path named its temporary file '.NAME.XXXXXXXX.npy', 14 characters longer than the
    target's name, so a valid name of 242 to 255 characters could not be written (OSError 'File
    name too long', naming the temporary file) although open() creates it. The temporary name now
    holds at most 100 characters of the target's. Oracle: open() creating the same name; the file
    read back and no temporary file left."""
    from liftinv.io import load_array

    path = tmp_path / ("a" * 247 + ".npy")
    open(path, "w").close()
    path.unlink()
    save_array(torch.arange(3.0), path)
    assert torch.equal(load_array(path), torch.arange(3.0)) and [p.name for p in tmp_path.iterdir()] == [path.name]
    save_checkpoint(tmp_path / ("b" * 250 + ".pt"), {"a": 1})
    assert load_checkpoint(tmp_path / ("b" * 250 + ".pt")) == {"a": 1}


def test_a_pipe_is_refused_as_not_a_regular_file_not_as_missing(tmp_path):
    """existing_file took every path that is not a regular file for a missing one, so load_array
    and load_checkpoint of a named pipe (or /dev/stdin, a process substitution) said 'input file
    PATH not found' of a path that exists. Now ValueError 'is not a regular file (a pipe, socket
    or device)', without opening it (which would wait for a writer). Oracle: os.path.exists and
    stat.S_ISFIFO of the path; a missing path keeps its FileNotFoundError."""
    from liftinv.io import load_array

    pipe = tmp_path / "x.npy"
    os.mkfifo(pipe)
    assert os.path.exists(pipe) and stat.S_ISFIFO(os.stat(pipe).st_mode)
    with pytest.raises(ValueError, match=rf"^input file {re.escape(str(pipe))} is not a regular file \(a pipe"):
        load_array(pipe)
    with pytest.raises(ValueError, match=rf"^checkpoint file {re.escape(str(pipe))} is not a regular file"):
        load_checkpoint(pipe)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_array(tmp_path / "missing.npy")
