"""Test settings: one CPU thread (small tensors on a 2-core machine run fastest without thread
pools, and results are reproducible) and no TF32."""
import pytest
import torch

torch.set_num_threads(1)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@pytest.fixture
def spy(monkeypatch):
    """``spy(owner, name, record=None)`` replaces the function or method ``owner.name`` (for the
    test only) by one that calls it unchanged after appending ``record(*args, **kwargs)``, or the
    positional arguments without ``record``, to the list it returns."""

    def install(owner, name, record=None):
        calls, real = [], getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls.append(args if record is None else record(*args, **kwargs))
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)
        return calls

    return install


@pytest.fixture
def deny_open(monkeypatch):
    """``deny_open(path)``: ``open(path)`` raises ``PermissionError`` for the rest of the test (or
    until ``monkeypatch.undo()``), as for a file without read permission, which root, who runs
    these tests, could read anyway; other files open as usual."""
    import builtins

    real_open = builtins.open

    def install(path):
        def denied(file, *args, **kwargs):
            if str(file) == str(path):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", denied)

    return install


@pytest.fixture
def host_reads(monkeypatch):
    """``with host_reads() as reads:``: every host read of a tensor's value inside the block
    (``bool``, ``float``, ``.item()``, ``.tolist()``: a device sync on a GPU) appends 1 to
    ``reads``."""
    from contextlib import contextmanager

    @contextmanager
    def count():
        reads = []
        with monkeypatch.context() as m:
            for name in ("__bool__", "__float__", "item", "tolist"):
                m.setattr(torch.Tensor, name, lambda t, *args, f=getattr(torch.Tensor, name): reads.append(1) or f(t, *args))
            yield reads

    return count
