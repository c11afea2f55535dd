"""Every argument that takes a real number takes a NumPy scalar (``np.float32`` is not a Python
``float``, as the results of NumPy reductions are), with the result of the Python number; every
argument that takes an integer count or size takes a NumPy integer (``np.int64``, as sizes read
off NumPy arrays are), with the result of ``int(n)``, and stores it as an ``int``."""
import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch
from skimage.io import imsave
from test_solvers import two_blocks

from liftinv import TV, reconstruction
from liftinv.activations import Identity
from liftinv.affine import GradientStep
from liftinv.classical import tikhonov, tv_reconstruction
from liftinv.data import load_dataset, load_image_folder, shepp_logan
from liftinv.demo import DemoConfig
from liftinv.inversion import InversionConfig
from liftinv.inversion_baseline import GradientOptimizer
from liftinv.layer import Layer
from liftinv.metrics import psnr
from liftinv.potentials import L1, Box
from liftinv.solvers import BCD, Adam, HeavyBall
from liftinv.solvers.loop import run
from liftinv.tv import prox_tv
from liftinv.validation import positive_int, sample_shape
from operators.blur import Blur
from operators.checks import is_integer, is_real
from operators.kernels import gaussian_kernel, motion_kernel
from operators.masks import equispaced_mask, gaussian_mask, random_mask
from operators.radon import Radon


def f32(value):
    return np.float32(value)


def test_kernels_and_masks_take_numpy_scalars():
    assert torch.equal(gaussian_kernel(f32(1.5)), gaussian_kernel(1.5))
    assert torch.equal(motion_kernel(f32(5.0), f32(30.0)), motion_kernel(5.0, 30.0))
    draw = lambda fn, *args, **kw: fn(*args, generator=torch.Generator().manual_seed(0), **kw)  # noqa: E731
    assert torch.equal(draw(gaussian_mask, (16, 16), f32(4.0), std=f32(0.15)), draw(gaussian_mask, (16, 16), 4.0, std=0.15))
    assert torch.equal(draw(random_mask, (16, 16), np.int64(4)), draw(random_mask, (16, 16), 4))


def test_potentials_and_rules_take_numpy_scalars():
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(TV(f32(0.25), box=(f32(0.0), f32(1.0))).prox(x, 0.5), TV(0.25, box=(0.0, 1.0)).prox(x, 0.5))
    assert torch.equal(L1(f32(0.5)).prox(x, 1.0), L1(0.5).prox(x, 1.0))
    assert torch.equal(Box(f32(0.0), f32(1.0)).prox(x, 1.0), Box(0.0, 1.0).prox(x, 1.0))
    assert Adam(f32(1e-3)).lr == pytest.approx(1e-3) and HeavyBall(f32(0.5)).beta == 0.5


def test_configs_take_numpy_scalars():
    assert InversionConfig(tol=f32(1e-4), tau=f32(1.05)).tau == pytest.approx(1.05)
    assert GradientOptimizer(lr=f32(0.01)).lr == pytest.approx(0.01)
    assert DemoConfig(train_time=f32(2.0)).train_time == 2.0
    with pytest.raises(ValueError, match="train_time must be a positive finite number"):
        DemoConfig(train_time=float("inf"))


@pytest.mark.parametrize("name, make", [
    ("weight", lambda v: Layer([0], [torch.nn.Identity()], Identity(), weight=v).weight),
    ("tau", lambda v: float(GradientStep(Blur(torch.ones(1, 3, 3) / 9), v).tau)),
    ("train_time", lambda v: DemoConfig(train_time=v).train_time),
    ("tau", lambda v: float(InversionConfig(tau=v).tau)),
    ("default_alpha", lambda v: float(InversionConfig(default_alpha=v).default_alpha)),
    ("lr", lambda v: float(GradientOptimizer(lr=v).lr)),
    ("eps", lambda v: float(GradientOptimizer(eps=v).eps)),
    ("data_range", lambda v: float(psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5), data_range=v)) - 20 * math.log10(2 * v)),
])
def test_finite_positive_numbers_are_checked_alike(name, make):
    """Eight arguments that must be finite positive numbers were checked by five hand-written
    tests (validation.positive_finite now): they agreed on NaN, Inf, 0, negatives, bools, strings
    and None, but an integer beyond the float range passed their comparisons and then failed
    with an OverflowError naming nothing ('int too large to convert to float': a penalty weight,
    a gradient step's tau, DemoConfig.train_time) or was kept (InversionConfig.tau and
    GradientOptimizer.lr, which overflowed where they were used). Now the same ValueError naming
    the argument for all of them; NumPy scalars and integers in range are taken as their float.
    Oracle: the values themselves, and the closed form of the PSNR, 10 log10(range^2 / 0.25)."""
    for bad in (0, -1.0, math.nan, math.inf, 10**400, True, "1", None):
        with pytest.raises(ValueError, match=rf"^{name} must be a positive finite number, got {re.escape(repr(bad))}"):
            make(bad)
    for good in (f32(0.5), 2, 1e-300 if name not in ("tau", "data_range") else 1e-3):
        assert make(good) == pytest.approx(float(good) if name != "data_range" else 0.0, abs=1e-5)


# --------------------------------------------------------------------------- integer counts
# The oracle is the same call with ``int(n)``; bools, ``np.bool_`` and floats such as 2.0 stay
# refused, with the exception type and message they had.
REFUSED_COUNTS = (True, np.bool_(True), 2.0, np.float64(2.0))


def test_predicates():
    for value in (3, np.int64(3), np.uint8(3), np.int32(-1)):
        assert is_integer(value) and is_real(value)
    for value in (2.5, 2.0, np.float32(2.5), np.float64(2.0)):
        assert is_real(value) and not is_integer(value)
    for value in (True, False, np.bool_(True), np.bool_(False), 1j, "3", None, torch.tensor(3), np.array(3)):
        assert not is_integer(value) and not is_real(value), value


def test_radon_takes_numpy_integers():
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for angles, detectors in ((np.int64(6), None), (np.int32(6), np.int64(20)), (np.uint16(6), np.int16(20))):
        radon = Radon(np.int64(16), angles, n_detectors=detectors, dtype=torch.float64)
        oracle = Radon(16, int(angles), n_detectors=None if detectors is None else int(detectors), dtype=torch.float64)
        assert torch.equal(radon.A(x), oracle.A(x)) and torch.equal(radon.angles, oracle.angles)
        assert type(radon.n) is int and type(radon.n_detectors) is int and radon.img_size == (1, 16, 16)
        assert all(type(n) is int for n in radon.img_size)
    for bad in REFUSED_COUNTS:
        with pytest.raises(TypeError, match="img_size must be an int"):
            Radon(bad)
        with pytest.raises(TypeError, match="angles must be an int or a 1-D tensor"):
            Radon(16, bad)
        with pytest.raises(TypeError, match="n_detectors must be an int or None"):
            Radon(16, 4, n_detectors=bad)
    with pytest.raises(ValueError, match="angles must be >= 1"):
        Radon(16, np.int64(0))


def test_blur_kernels_and_masks_take_numpy_integers():
    assert torch.equal(gaussian_kernel(1.0, np.int64(5)), gaussian_kernel(1.0, 5))
    assert torch.equal(gaussian_kernel(1.0, (np.int64(3), np.uint8(5))), gaussian_kernel(1.0, (3, 5)))
    blur = Blur(gaussian_kernel(1.0, 5), img_size=(np.int64(1), np.int64(12), np.int32(12)))
    assert blur.img_size == (1, 12, 12) and all(type(n) is int for n in blur.img_size)
    x = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(blur.A(x), Blur(gaussian_kernel(1.0, 5), img_size=(1, 12, 12)).A(x))
    shape = (np.int64(16), np.int64(12))
    draw = lambda fn, *args: fn(*args, generator=torch.Generator().manual_seed(0))  # noqa: E731
    assert torch.equal(draw(random_mask, shape, 4.0), draw(random_mask, (16, 12), 4.0))
    assert torch.equal(draw(gaussian_mask, shape, 4.0), draw(gaussian_mask, (16, 12), 4.0))
    assert torch.equal(equispaced_mask(shape, 4.0), equispaced_mask((16, 12), 4.0))
    for bad in REFUSED_COUNTS:
        with pytest.raises(ValueError, match="size must be a positive odd integer"):
            gaussian_kernel(1.0, bad)
        with pytest.raises(ValueError, match=r"img_size must be \(C, H, W\)"):
            Blur(gaussian_kernel(1.0, 3), img_size=(1, bad, 8))
        with pytest.raises(ValueError, match=r"shape must be \(H, W\)"):
            equispaced_mask((bad, 8), 2.0)


def test_tv_classical_and_reconstruction_counts_take_numpy_integers():
    v = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(prox_tv(v, 0.1, n_iter=np.int64(5), tol=0.0), prox_tv(v, 0.1, n_iter=5, tol=0.0))
    radon = Radon(8, 6, dtype=torch.float64)
    y = radon.A(v)
    assert torch.equal(tikhonov(y, radon, 0.1, n_iter=np.int64(3)), tikhonov(y, radon, 0.1, n_iter=3))
    assert torch.equal(tv_reconstruction(y, radon, 0.01, n_iter=np.int64(4), tol=0.0),
                       tv_reconstruction(y, radon, 0.01, n_iter=4, tol=0.0))
    for cls in (reconstruction.Tikhonov, reconstruction.TV):
        method = cls(0.01, n_iter=np.int64(4), tol=0.0)
        assert type(method.n_iter) is int and method == cls(0.01, n_iter=4, tol=0.0)
        assert torch.equal(method(y, radon), cls(0.01, n_iter=4, tol=0.0)(y, radon))
    potential = TV(0.25, max_inner=np.int64(2))
    assert type(potential.max_inner) is int and type(potential.with_weight(0.5).max_inner) is int
    assert torch.equal(potential.prox(v, 0.5), TV(0.25, max_inner=2).prox(v, 0.5))
    for bad in REFUSED_COUNTS:
        with pytest.raises(ValueError, match="n_iter must be a positive int"):
            prox_tv(v, 0.1, n_iter=bad)
        with pytest.raises(ValueError, match="n_iter must be a positive int"):
            tikhonov(y, radon, 0.1, n_iter=bad)
        for cls in (reconstruction.Tikhonov, reconstruction.TV):
            with pytest.raises(ValueError, match="n_iter must be a positive int"):
                cls(0.01, n_iter=bad)
        with pytest.raises(ValueError, match="max_inner must be a positive int"):
            TV(0.25, max_inner=bad)


def test_solver_run_takes_a_numpy_max_iter():
    _, history = run(BCD(), two_blocks(), max_iter=np.int64(3), rtol=0.0)
    _, oracle = run(BCD(), two_blocks(), max_iter=3, rtol=0.0)
    assert history.iterations == 3 and history.energy == oracle.energy
    for bad in REFUSED_COUNTS:
        with pytest.raises(ValueError, match="max_iter must be an integer >= 0"):
            run(BCD(), two_blocks(), max_iter=bad)


def test_data_sizes_take_numpy_integers(tmp_path):
    assert torch.equal(shepp_logan(np.int64(16)), shepp_logan(16))
    for i in range(2):
        imsave(tmp_path / f"{i}.png", (np.arange(64, dtype=np.uint8).reshape(8, 8) * (i + 1)), check_contrast=False)
    folder = load_image_folder(tmp_path, size=np.int64(4))
    assert torch.equal(folder.tensors[0], load_image_folder(tmp_path, size=4).tensors[0])
    try:
        data = load_dataset("ellipses", "val", size=np.int64(16))
    except FileNotFoundError:
        data = None
    if data is not None:
        assert torch.equal(data.tensors[0], load_dataset("ellipses", "val", size=16).tensors[0])
    for bad in REFUSED_COUNTS:
        with pytest.raises(ValueError, match="size must be a positive int"):
            shepp_logan(bad)
        with pytest.raises(ValueError, match="size must be a positive int or None"):
            load_image_folder(tmp_path, size=bad)


def test_config_counts_take_numpy_integers_and_store_ints():
    config = InversionConfig(max_iter=np.int64(3), max_search=np.int32(2), energy_every=np.uint8(5))
    assert config == InversionConfig(max_iter=3, max_search=2, energy_every=5)
    assert all(type(getattr(config, n)) is int for n in ("max_iter", "max_search", "energy_every"))
    demo = DemoConfig(tv_iter=np.int64(6), cg_iter=np.int64(2), inversion_iter=np.int64(3), seed=np.int64(7),
                      threads=np.int64(1), train_time=f32(2.0))
    assert demo == DemoConfig(tv_iter=6, cg_iter=2, inversion_iter=3, seed=7, threads=1, train_time=2.0)
    assert all(type(getattr(demo, n)) is int for n in ("tv_iter", "cg_iter", "inversion_iter", "seed", "threads"))
    json.dumps(dataclasses.asdict(demo))  # the demo writes its config to JSON
    assert type(positive_int("n", np.int64(4))) is int and sample_shape("s", (np.int64(1), np.int64(8))) == (1, 8)
    for bad in REFUSED_COUNTS:
        with pytest.raises(ValueError, match="max_iter must be a positive int"):
            InversionConfig(max_iter=bad)
        with pytest.raises(ValueError, match="tv_iter must be a positive int"):
            DemoConfig(tv_iter=bad)
        with pytest.raises(ValueError, match="seed must be an int"):
            DemoConfig(seed=bad)
        with pytest.raises(ValueError, match="threads must be a positive int or None"):
            DemoConfig(threads=bad)
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            positive_int("n", bad)
