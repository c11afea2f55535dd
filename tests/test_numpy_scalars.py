"""Every argument that takes a real number takes a NumPy scalar (``np.float32`` is not a Python
``float``, as the results of NumPy reductions are), with the result of the Python number."""
import numpy as np
import pytest
import torch

from liftinv import TV
from liftinv.demo import DemoConfig
from liftinv.inversion import InversionConfig
from liftinv.inversion_baseline import GradientOptimizer
from liftinv.potentials import L1, Box
from liftinv.solvers import Adam, HeavyBall
from operators.kernels import gaussian_kernel, motion_kernel
from operators.masks import gaussian_mask, random_mask


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
    with pytest.raises(ValueError, match="train_time must be a finite positive number"):
        DemoConfig(train_time=float("inf"))
