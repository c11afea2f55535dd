import io
import math
import re

import numpy as np
import pytest
import torch
from deepinv.physics import LinearPhysics

from liftinv.architectures import MLP, UnrolledPrimalDual
from liftinv.checkpoint import load_checkpoint, save_checkpoint
from liftinv.models import FORMAT_VERSION, SavedModel, architecture_config, load_model, save_model
from operators import OPERATORS, Blur, MRI, Radon, gaussian_kernel, random_mask
from operators.spec import check_spec, physics_from_spec, physics_spec, spec_differences


def _weights_only_round_trip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_spec_rebuilds_the_same_operator(name):
    physics, shape = OPERATORS[name](torch.float64, "cpu")
    spec = _weights_only_round_trip(physics_spec(physics))
    rebuilt = physics_from_spec(spec)
    assert type(rebuilt) is type(physics) and spec_differences(physics_spec(physics), physics_spec(rebuilt)) == []
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    y = physics.A(x)
    assert torch.equal(rebuilt.A(x), y)
    assert torch.equal(rebuilt.A_adjoint(y), physics.A_adjoint(y))


def test_spec_mismatch_names_the_differing_settings():
    with pytest.raises(ValueError) as err:
        check_spec(physics_spec(Radon(15, 30)), physics_spec(Radon(15, 60)), "model was trained for")
    assert str(err.value) == "model was trained for Radon(angles=30) but got Radon(angles=60)"
    with pytest.raises(ValueError, match=r"^expected Radon\(circle=False\) but got Radon\(circle=True\)$"):
        check_spec(physics_spec(Radon(15, 7, n_detectors=15)), physics_spec(Radon(15, 7, n_detectors=15, circle=True)))
    limited = Radon(15, torch.tensor([0.0, 10.0, 20.0]))
    with pytest.raises(ValueError, match=r"Radon\(angles=\[0.0, 10.0, 20.0\]\) but got Radon\(angles=3\)"):
        check_spec(physics_spec(limited), physics_spec(Radon(15, 3)))
    blur = Blur(gaussian_kernel(1.5))
    with pytest.raises(ValueError, match=r"Blur\(boundary='circular', dtype='float32'\) but got Blur\(boundary='zero', dtype='float64'\)"):
        check_spec(physics_spec(blur), physics_spec(Blur(gaussian_kernel(1.5), boundary="zero", dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"kernel=<1x11x11 tensor.* but got Blur\(kernel=<1x9x9 tensor"):
        check_spec(physics_spec(blur), physics_spec(Blur(gaussian_kernel(1.2))))


def test_spec_mismatch_counts_differing_mask_entries():
    g = torch.Generator().manual_seed(0)
    mask = random_mask((15, 13), 3, generator=g)
    flipped = mask.clone()
    flipped[:, 0] = ~flipped[:, 0]
    with pytest.raises(ValueError, match=r"MRI\(mask=<15x13 tensor, mean [0-9.]+, 15 entries differ>\)$"):
        check_spec(physics_spec(MRI(mask)), physics_spec(MRI(flipped)))


def test_spec_comparison_ignores_fft_choice_and_float32_rounding():
    kernel = gaussian_kernel(1.0, dtype=torch.float64)
    a = physics_spec(Blur(kernel, boundary="reflect", use_fft=True))
    b = physics_spec(Blur(kernel.float().double() * (1 + 1e-7), boundary="reflect", use_fft=False))
    assert spec_differences(a, b) == []
    check_spec(a, b)


def test_different_operators_are_described_in_full():
    with pytest.raises(ValueError, match=r"expected Radon\(img_size=15, angles=7, n_detectors=22, circle=False, dtype='float32'\) but got MRI\(mask="):
        check_spec(physics_spec(Radon(15, 7)), physics_spec(MRI(torch.ones(4, 4))))


class _Custom(LinearPhysics):
    def A(self, x):
        return 2 * x

    def A_adjoint(self, y):
        return 2 * y


def test_bad_specs():
    with pytest.raises(TypeError, match="physics must be an operators Radon, Blur or MRI to have a spec, got _Custom"):
        physics_spec(_Custom())
    with pytest.raises(TypeError, match="spec must be a dict, got list"):
        physics_from_spec([1])
    with pytest.raises(ValueError, match=r"spec\['operator'\] must be one of .* got 'CT'"):
        physics_from_spec({"operator": "CT"})
    spec = physics_spec(Radon(9, 5))
    del spec["angles"]
    with pytest.raises(ValueError, match=r"spec for Radon lacks \['angles'\]"):
        physics_from_spec(spec)
    with pytest.raises(ValueError, match=r"spec\['dtype'\] must be one of .* got 'float16'"):
        physics_from_spec({**physics_spec(Radon(9, 5)), "dtype": "float16"})


def _trained_net(physics, img_size, dtype):
    g = torch.Generator().manual_seed(3)
    net = UnrolledPrimalDual(physics, 3, 4, img_size, threshold=0.07, kernel_size=5, adjoint_init=False, generator=g).to(dtype)
    with torch.no_grad():  # stand-in for training: move every weight away from its initial value
        for p in net.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, dtype=p.dtype, generator=g))
    return net


@pytest.mark.parametrize("kind", ["radon", "blur", "mri"])
def test_save_load_round_trip_is_exact(tmp_path, kind):
    g = torch.Generator().manual_seed(0)
    if kind == "radon":
        physics, img_size, dtype = Radon(13, 9, circle=True), (1, 13, 13), torch.float32
    elif kind == "blur":
        physics = Blur(gaussian_kernel(1.0, dtype=torch.float64), img_size=(1, 11, 9), boundary="reflect", dtype=torch.float64)
        img_size, dtype = (1, 11, 9), torch.float64
    else:
        physics, img_size, dtype = MRI(random_mask((11, 9), 2, generator=g), dtype=torch.float64), (2, 11, 9), torch.float64
    net = _trained_net(physics, img_size, dtype)
    y = physics.A(torch.rand(3, *img_size, dtype=dtype, generator=g))
    expected = net(y, physics)
    path = tmp_path / "models" / "net.pt"
    save_model(net, path, task=kind, physics=physics, extra={"noise": 0.01, "method": "lifted", "scores": [1.5, torch.ones(2)]})
    assert [p.name for p in path.parent.iterdir()] == ["net.pt"]
    for given in (None, physics):
        saved = load_model(path, given)
        assert isinstance(saved, SavedModel) and saved.task == kind and saved.version == "0.1.0"
        assert saved.extra["noise"] == 0.01 and torch.equal(saved.extra["scores"][1], torch.ones(2))
        assert (saved.physics is physics) == (given is physics) and not saved.net.training
        assert architecture_config(saved.net) == architecture_config(net)
        assert len(list(saved.net.parameters())) == len(list(net.parameters()))
        assert [p.requires_grad for p in saved.net.parameters()] == [p.requires_grad for p in net.parameters()]
        assert torch.equal(saved.net(y, saved.physics), expected)


def test_architecture_config_reads_the_constructor_arguments():
    physics = Radon(9, 5)
    net = UnrolledPrimalDual(physics, 4, 3, (1, 9, 9), threshold=0.2, kernel_size=5, adjoint_init=False,
                             generator=torch.Generator().manual_seed(0))
    assert architecture_config(net) == {
        "class": "UnrolledPrimalDual", "n_iter": 4, "features": 3, "img_size": (1, 9, 9), "threshold": 0.2,
        "kernel_size": 5, "adjoint_init": False,
    }


@pytest.mark.parametrize("kind", ["radon", "blur", "mri"])
@pytest.mark.parametrize("kernel_size, threshold, adjoint_init", [(3, 0.05, True), (5, 0.3, False)])
def test_every_architecture_round_trips_through_its_recorded_arguments(tmp_path, kind, kernel_size, threshold, adjoint_init):
    """The keys a model file must hold (_ARCHITECTURE_KEYS) were a second list of those
    architecture_config writes; they are now read off UnrolledPrimalDual's constructor, which
    _build calls with them. Oracle: the constructor's own signature, and a network rebuilt from
    the file computing the saved one's output bit for bit, with the same recorded arguments."""
    import inspect

    from liftinv.models import _ARCHITECTURE_KEYS

    physics, img_size = {"radon": (Radon(7, 5), (1, 7, 7)), "blur": (Blur(gaussian_kernel(0.5), img_size=(1, 6, 5)), (1, 6, 5)),
                         "mri": (MRI(random_mask((6, 5), 2, generator=torch.Generator().manual_seed(1))), (2, 6, 5))}[kind]
    net = UnrolledPrimalDual(physics, 2, 3, img_size, threshold=threshold, kernel_size=kernel_size,
                             adjoint_init=adjoint_init, generator=torch.Generator().manual_seed(0))
    config = architecture_config(net)
    args = [p for p in inspect.signature(UnrolledPrimalDual).parameters if p not in ("physics", "generator")]
    assert list(config) == list(_ARCHITECTURE_KEYS) == ["class", *args]
    assert (config["kernel_size"], config["threshold"], config["adjoint_init"]) == (kernel_size, threshold, adjoint_init)
    save_model(net, tmp_path / "net.pt", task=kind, physics=physics)
    saved = load_model(tmp_path / "net.pt", physics)
    assert architecture_config(saved.net) == config
    y = physics.A(torch.rand(2, *img_size, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(saved.net(y, physics), net(y, physics))


@pytest.fixture
def saved_radon(tmp_path):
    physics = Radon(11, 30)
    net = _trained_net(physics, (1, 11, 11), torch.float32)
    path = tmp_path / "net.pt"
    save_model(net, path, task="ct", physics=physics)
    return path


def test_wrong_physics_is_refused(saved_radon):
    with pytest.raises(ValueError, match=r"^model was trained for Radon\(angles=30\) but got Radon\(angles=60\)$"):
        load_model(saved_radon, Radon(11, 60))
    with pytest.raises(ValueError, match=r"model was trained for Radon\(.*\) but got Blur\("):
        load_model(saved_radon, Blur(gaussian_kernel(1.0)))


def test_changed_operator_norm_is_refused(saved_radon):
    payload = load_checkpoint(saved_radon)
    payload["steps"]["s"] *= 1.01
    save_checkpoint(saved_radon, payload)
    with pytest.raises(ValueError, match="dual step s=.* but the model was trained with s="):
        load_model(saved_radon)


def test_other_version_warns(saved_radon):
    payload = load_checkpoint(saved_radon)
    payload["liftinv_version"] = "0.0.1"
    save_checkpoint(saved_radon, payload)
    with pytest.warns(UserWarning, match="written by liftinv 0.0.1"):
        assert load_model(saved_radon).version == "0.0.1"


def test_not_a_model_file(tmp_path, saved_radon):
    with pytest.raises(FileNotFoundError, match="nowhere.pt not found"):
        load_model(tmp_path / "nowhere.pt")
    save_checkpoint(tmp_path / "ckpt.pt", {"model": {}})
    with pytest.raises(ValueError, match="is not a liftinv model file"):
        load_model(tmp_path / "ckpt.pt")
    payload = load_checkpoint(saved_radon)
    payload["format_version"] = 99
    save_checkpoint(saved_radon, payload)
    with pytest.raises(ValueError, match="model format 99; this liftinv reads up to 1"):
        load_model(saved_radon)
    payload["format_version"] = FORMAT_VERSION + 1  # the first newer format is refused too
    save_checkpoint(saved_radon, payload)
    with pytest.raises(ValueError, match=f"model format {FORMAT_VERSION + 1}; this liftinv reads up to {FORMAT_VERSION}"):
        load_model(saved_radon)


@pytest.mark.parametrize("version", [0, -1, True, 1.0, "1"])
def test_a_format_version_that_was_never_written_is_refused(saved_radon, version):
    """Format versions start at FORMAT_VERSION's first value, 1: a file claiming format 0 or -1 (or
    True, which compares equal to 1) was loaded as a format-1 file without a word."""
    payload = load_checkpoint(saved_radon)
    payload["format_version"] = version
    save_checkpoint(saved_radon, payload)
    with pytest.raises(ValueError, match=rf"net.pt has model format {version!r}, which no liftinv writes \(formats are the integers 1 to {FORMAT_VERSION}\)"):
        load_model(saved_radon)


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"\x93NUMPY\x01\x00v\x00"])
def test_unreadable_model_file_is_a_value_error(tmp_path, content):
    """An empty, corrupt or non-torch file raised torch.load's EOFError or UnpicklingError, which
    liftinv reconstruct --model showed as a traceback."""
    (tmp_path / "net.pt").write_bytes(content)
    with pytest.raises(ValueError, match="cannot read model file .*net.pt"):
        load_model(tmp_path / "net.pt")


@pytest.mark.parametrize("key, name, value, message", [
    ("steps", "s", "x", r"its steps\['s'\] must be a positive finite number, got 'x'"),
    ("steps", "s", None, r"its steps\['s'\] must be a positive finite number, got None"),
    ("steps", "tau", math.nan, r"its steps\['tau'\] must be a positive finite number, got nan"),
    ("architecture", "adjoint_init", "yes", "its architecture cannot be built: adjoint_init must be a bool, got 'yes'"),
    ("architecture", "kernel_size", 4, "its architecture cannot be built: kernel_size must be odd, got 4"),
    ("architecture", "img_size", (1, 11), r"its architecture cannot be built: img_size must be \(C, H, W\)"),
])
def test_a_model_file_with_a_malformed_value_names_the_file(saved_radon, key, name, value, message):
    """_read checked the entries' types and keys, not the values in them: a step s of 'x' or None
    failed in math.isclose with TypeError 'must be real number, not str', an architecture
    argument the constructor refuses came out as its own error ('adjoint_init must be a bool',
    a TypeError; 'kernel_size must be odd'), naming no file, and liftinv reconstruct --model
    showed the TypeErrors as tracebacks. Now ValueError 'PATH is not a valid liftinv model file:
    ...'. Oracle: the values save_model writes (a file of them still loads)."""
    payload = load_checkpoint(saved_radon)
    load_model(saved_radon)
    payload[key] = {**payload[key], name: value}
    save_checkpoint(saved_radon, payload)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(saved_radon))} is not a valid liftinv model file: {message}"):
        load_model(saved_radon)


def test_a_device_this_machine_lacks_is_refused_naming_device_not_the_file(saved_radon):
    """load_model passed device to torch.load as map_location, so a device this machine lacks
    came out as an unreadable file: 'cannot read model file PATH: don't know how to restore data
    location ... (tagged with gpu)', '... Attempting to deserialize object on a CUDA device' or,
    for device=3, "'int' object is not callable"; device='meta' failed after loading with
    NotImplementedError 'Cannot copy out of meta tensor'. Now ValueError 'device: ...', the
    verdict of the command lines' --device check (validation.check_device). Oracle:
    cli_types.device's refusal of the same name; cpu still loads."""
    import argparse

    from liftinv.cli_types import device

    for bad in ["gpu", "meta", "xla"] + ([] if torch.cuda.is_available() else ["cuda"]):
        with pytest.raises(argparse.ArgumentTypeError) as cli_error:
            device(bad)
        with pytest.raises(ValueError, match=f"^device: {re.escape(str(cli_error.value))}$"):
            load_model(saved_radon, device=bad)
    assert next(load_model(saved_radon, device=torch.device("cpu")).net.parameters()).device.type == "cpu"


def test_model_file_missing_an_entry_names_it(saved_radon):
    payload = load_checkpoint(saved_radon)
    del payload["steps"]
    save_checkpoint(saved_radon, payload)
    with pytest.raises(ValueError, match=r"is not a complete liftinv model file \(missing \['steps'\]\)"):
        load_model(saved_radon)


@pytest.mark.parametrize("key, value, message", [
    ("steps", [0.1, 0.2], "its steps must be a dict, got list"),
    ("steps", {"tau": 0.1}, r"its steps lacks \['s'\]"),
    ("architecture", ["UnrolledPrimalDual"], "its architecture must be a dict, got list"),
    ("architecture", {"class": "UnrolledPrimalDual"}, r"its architecture lacks \['n_iter', 'features'"),
    ("state_dict", None, "its state_dict must be a dict, got NoneType"),
    ("task", 3, "its task must be a str, got int"),
    ("extra", [1], "its extra must be a dict, got list"),
])
def test_a_model_file_with_a_malformed_entry_names_the_file(saved_radon, key, value, message):
    """Such files failed inside load_model with KeyError 's', 'list indices must be integers',
    ''list' object has no attribute 'get'', naming neither the file nor the entry, or (task,
    extra) loaded into a SavedModel that breaks its documented types."""
    payload = load_checkpoint(saved_radon)
    payload[key] = value
    save_checkpoint(saved_radon, payload)
    with pytest.raises(ValueError, match=f"net.pt is not a valid liftinv model file: {message}"):
        load_model(saved_radon)


def test_a_model_file_whose_parameters_do_not_fit_its_architecture_names_the_file(saved_radon):
    """load_state_dict's RuntimeError ('Error(s) in loading state_dict for UnrolledPrimalDual:
    Missing key(s)...' or 'size mismatch') came out of load_model naming no file, where every
    other defect of a model file is a ValueError naming it."""
    payload = load_checkpoint(saved_radon)
    name = next(key for key, value in payload["state_dict"].items() if value.ndim == 4)
    payload["state_dict"][name] = payload["state_dict"][name][..., :1]
    save_checkpoint(saved_radon, payload)
    with pytest.raises(ValueError, match=rf"net.pt holds parameters that do not fit the architecture it records: "
                                         rf".*size mismatch for {name}"):
        load_model(saved_radon)
    del payload["state_dict"][name]
    save_checkpoint(saved_radon, payload)
    with pytest.raises(ValueError, match=rf"net.pt holds parameters .*Missing key\(s\) in state_dict: \"{name}\""):
        load_model(saved_radon)


def test_bad_save_arguments(tmp_path):
    physics = Radon(9, 5)
    net = _trained_net(physics, (1, 9, 9), torch.float32)
    path = tmp_path / "net.pt"
    with pytest.raises(TypeError, match="net must be an UnrolledPrimalDual .* got MLP"):
        save_model(MLP([3, 2], []), path, task="x", physics=physics)
    with pytest.raises(ValueError, match="task must be a non-empty string, got ''"):
        save_model(net, path, task="", physics=physics)
    with pytest.raises(TypeError, match="to have a spec, got _Custom"):
        save_model(net, path, task="ct", physics=_Custom())
    with pytest.raises(ValueError, match=r"net is bound to Radon\(angles=5\) but got Radon\(angles=7\)"):
        save_model(net, path, task="ct", physics=Radon(9, 7))
    with pytest.raises(TypeError, match=r"extra\['f'\] must hold only .* got builtin_function_or_method"):
        save_model(net, path, task="ct", physics=physics, extra={"f": print})
    with pytest.raises(TypeError, match="extra keys must be strings, got 1"):
        save_model(net, path, task="ct", physics=physics, extra={1: 2})
    assert not any(tmp_path.iterdir())
    save_model(net, path, task="ct", physics=Radon(9, 5))  # an equal operator, not the bound object
    assert load_model(path).task == "ct"


def test_spec_tensors_are_equal_within_the_documented_relative_tolerance():
    """Tensors compare equal when |a - b| <= 1e-5 max|b|: a kernel scaled by 1 + 1e-6 is the same
    setting, one scaled by 1 + 1e-4 is not."""
    kernel = torch.rand(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 0.5
    ref = physics_spec(Blur(kernel, dtype=torch.float64))
    assert spec_differences(ref, physics_spec(Blur(kernel * (1 + 1e-6), dtype=torch.float64))) == []
    assert spec_differences(ref, physics_spec(Blur(kernel * (1 + 1e-4), dtype=torch.float64))) == ["kernel"]


def test_spec_lists_up_to_six_non_uniform_angles_and_summarises_more():
    """Non-uniform angles are listed when there are at most 6, else summarised by count and range."""
    six, seven = torch.tensor([0.0, 5.0, 10.0, 20.0, 40.0, 80.0]), torch.tensor([0.0, 5.0, 10.0, 20.0, 40.0, 80.0, 90.0])
    with pytest.raises(ValueError, match=r"Radon\(angles=\[0.0, 5.0, 10.0, 20.0, 40.0, 80.0\]\) but got Radon\(angles=<7 angles in \[0.0, 90.0\] deg>\)$"):
        check_spec(physics_spec(Radon(9, six)), physics_spec(Radon(9, seven)))


def test_penalty_weights_are_saved_with_the_model(tmp_path):
    # the CT setup and the demo weigh the dual layers by 1/s^2; a loaded model must keep them, or
    # lifted training and inversion with it minimise another energy (the forward pass is the same)
    physics = Radon(11, 9, dtype=torch.float64)
    net = _trained_net(physics, (1, 11, 11), torch.float64)
    for layer in list(net.lifted.layers)[1::2]:
        layer.weight = 1 / net.s**2
    path = tmp_path / "net.pt"
    save_model(net, path, task="ct", physics=physics)
    loaded = load_model(path).net
    assert torch.equal(loaded.lifted.weights(), net.lifted.weights())
    y = physics.A(torch.rand(2, 1, 11, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    u, y = net.lifted_inputs(y, physics)
    xs = [x + 0.01 for x in net.lifted.feasible(u, y)]
    assert torch.equal(loaded.lifted.energy(xs, y), net.lifted.energy(xs, y))

def test_state_dict_without_penalty_weights_keeps_the_layers_weights():
    # state dicts written before the weights were saved: strict loading keeps the built weights
    physics = Radon(11, 9)
    net = _trained_net(physics, (1, 11, 11), torch.float32)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("_extra_state")}
    other = UnrolledPrimalDual(physics, 3, 4, (1, 11, 11), threshold=0.07, kernel_size=5, adjoint_init=False,
                               generator=torch.Generator().manual_seed(1))
    for layer in other.lifted.layers:
        layer.weight = 3.0
    other.load_state_dict(state)
    assert all(layer.weight == 3.0 for layer in other.lifted.layers)
    assert all(torch.equal(p, q) for p, q in zip(other.parameters(), net.parameters()))


def test_a_network_with_changed_clips_is_refused_not_saved_as_another(tmp_path):
    # the model file stores one threshold: a dual clip widened after construction (or a primal
    # clip changed) was saved and loaded as the constructor's clip, another network (outputs off
    # by 7e-3) without a word; the oracle is the forward pass of the network that was saved
    physics = Radon(11, 9)
    y = physics.A(torch.rand(2, 1, 11, 11, generator=torch.Generator().manual_seed(1)))
    for k, lo, hi in ((4, -0.5, 0.5), (2, 0.0, 0.07), (3, 0.0, 0.3)):
        net = _trained_net(physics, (1, 11, 11), torch.float32)
        expected = net(y, physics)
        net.lifted.layer(k).activation.lo, net.lifted.layer(k).activation.hi = lo, hi
        assert not torch.equal(net(y, physics), expected)  # the change matters
        with pytest.raises(ValueError, match=f"^layer {k} has the activation Clip"):
            save_model(net, tmp_path / "net.pt", task="ct", physics=physics)
        assert not (tmp_path / "net.pt").exists()
    net = _trained_net(physics, (1, 11, 11), torch.float32)  # the constructor's clips: saved, the same network
    save_model(net, tmp_path / "net.pt", task="ct", physics=physics)
    assert torch.equal(load_model(tmp_path / "net.pt").net(y, physics), net(y, physics))


def test_numpy_numbers_in_extra_are_stored_as_python_numbers(tmp_path):
    # extra={"psnr": np.float32(25.1)} was refused as 'must hold only tensors, numbers, strings,
    # lists and dicts, got float32' (np.float64, a float subclass, passed); save_checkpoint writes
    # NumPy scalars as the Python scalars of equal value, the oracle here (.item())
    physics = Radon(9, 5)
    net = _trained_net(physics, (1, 9, 9), torch.float32)
    extra = {"psnr": np.float32(25.1), "epochs": np.int64(3), "ok": np.bool_(True), "list": [np.uint8(7), np.float16(0.5)]}
    save_model(net, tmp_path / "net.pt", task="ct", physics=physics, extra=extra)
    loaded = load_model(tmp_path / "net.pt").extra
    assert loaded == {"psnr": np.float32(25.1).item(), "epochs": 3, "ok": True, "list": [7, 0.5]}
    assert [type(v) for v in (loaded["psnr"], loaded["epochs"], loaded["ok"], *loaded["list"])] == [float, int, bool, int, float]


def test_a_physics_changed_since_the_network_was_built_is_refused_at_save(tmp_path):
    # a kernel doubled after construction (||A||^2 four times larger) was saved without a word
    # into a file that load_model refuses for every physics of that spec (it rebuilds s from the
    # norm: 1.98 against the stored 0.495); the oracle is a network built for the doubled kernel
    physics = Blur(gaussian_kernel(1.0), img_size=(1, 12, 12))
    net = UnrolledPrimalDual(physics, 2, 2, (1, 12, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        physics.kernel.mul_(2)
    rebuilt = UnrolledPrimalDual(physics, 2, 2, (1, 12, 12), generator=torch.Generator().manual_seed(0))
    assert rebuilt.s == pytest.approx(4 * net.s, rel=1e-4)
    with pytest.raises(ValueError, match=r"^physics has operator norm \|\|A\|\|\^2 = 4\.0000.* computed for \|\|A\|\|\^2 = 1\.0000"):
        save_model(net, tmp_path / "net.pt", task="blur", physics=physics)
    assert not any(tmp_path.iterdir())
    save_model(rebuilt, tmp_path / "net.pt", task="blur", physics=physics)  # the network for that operator
    assert load_model(tmp_path / "net.pt").net.s == rebuilt.s
