import math

import pytest
import torch

from liftinv import classical
from liftinv.architectures import UnrolledPrimalDual
from liftinv.metrics import psnr
from liftinv.models import load_model, save_model
from liftinv.reconstruction import FBP, TV, Adjoint, Tikhonov, Trained, Wiener, ZeroFilled, default_method, reconstruct
from liftinv.tv import pdhg_tv
from operators import MRI, Blur, Radon, gaussian_kernel, random_mask
from operators.spec import physics_spec


def _phantom(n: int, m: int, batch: int = 2) -> torch.Tensor:
    """Piecewise-constant images: a bright rectangle and a dimmer disc, shifted per sample."""
    i, j = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(m, dtype=torch.float64), indexing="ij")
    images = []
    for b in range(batch):
        x = 0.2 + 0.6 * ((i > 2 + b) & (i < n // 2 + b) & (j > 3) & (j < m - 4)).double()
        x = x + 0.2 * (((i - 2 * n / 3) ** 2 + (j - m / 2 + b) ** 2) < (n / 5) ** 2).double()
        images.append(x)
    return torch.stack(images)[:, None]


@pytest.fixture(scope="module")
def ct():
    radon = Radon(15, 9, dtype=torch.float64)
    y = radon.A(_phantom(15, 15)) + 0.05 * torch.randn(2, 1, *radon.sinogram_shape, dtype=torch.float64,
                                                     generator=torch.Generator().manual_seed(0))
    return radon, y


@pytest.fixture(scope="module")
def mri():
    g = torch.Generator().manual_seed(1)
    physics = MRI(random_mask((17, 15), 3, generator=g), dtype=torch.float64)
    x = _phantom(17, 15)
    y = physics.A(torch.cat([x, torch.zeros_like(x)], 1))
    return physics, x, y + physics.mask * 0.02 * torch.randn(y.shape, dtype=torch.float64, generator=g)


def test_methods_wrap_the_classical_functions(ct, mri):
    radon, y = ct
    assert torch.equal(reconstruct(y, radon, Adjoint()), radon.A_adjoint(y))
    assert torch.equal(reconstruct(y, radon, FBP("hann")), radon.fbp(y, filter="hann"))
    assert torch.equal(reconstruct(y, radon, Tikhonov(2.0, n_iter=40, tol=1e-9)),
                       classical.tikhonov(y, radon, 2.0, n_iter=40, tol=1e-9))
    expected, _ = pdhg_tv(radon, y, 0.5, box=None, n_iter=30, tol=0.0)
    assert torch.equal(reconstruct(y, radon, TV(0.5, n_iter=30, tol=0.0, box=None)), expected)
    expected, hist = pdhg_tv(radon, y, 0.5, n_iter=500, tol=1e-3)
    assert hist.converged
    assert torch.equal(reconstruct(y, radon, TV(0.5, n_iter=500, tol=1e-3)), expected)
    physics, _, k = mri
    assert torch.equal(reconstruct(k, physics, ZeroFilled()), physics.A_adjoint(k))
    blur = Blur(gaussian_kernel(1.0, dtype=torch.float64), dtype=torch.float64)
    b = blur.A(_phantom(9, 11))
    assert torch.equal(reconstruct(b, blur, Wiener(0.1)), classical.wiener(b, blur, 0.1))


def test_tikhonov_solves_the_normal_equations(ct):
    radon, y = ct
    x = reconstruct(y, radon, Tikhonov(3.0, n_iter=200, tol=1e-12))
    residual = radon.A_adjoint(radon.A(x)) + 3.0 * x - radon.A_adjoint(y)
    assert float(residual.norm() / radon.A_adjoint(y).norm()) < 1e-9


def test_tv_beats_adjoint_and_zero_filling(mri):
    physics, x, y = mri
    def magnitude(z):
        return z.pow(2).sum(1, keepdim=True).sqrt()
    zero_filled = psnr(magnitude(reconstruct(y, physics, ZeroFilled())), x)
    adjoint = psnr(magnitude(reconstruct(y, physics, Adjoint())), x)
    tv = psnr(magnitude(reconstruct(y, physics, TV(0.02, n_iter=300))), x)
    assert torch.equal(zero_filled, adjoint)
    assert bool((tv > adjoint + 2).all()), (tv, adjoint)


def test_default_methods():
    assert default_method(Radon(9, 5)) == FBP("ramp")
    assert default_method(MRI(torch.ones(4, 4))) == ZeroFilled()
    assert default_method(Blur(gaussian_kernel(1.0))) == Tikhonov(0.03)
    radon = Radon(9, 5, dtype=torch.float64)
    y = radon.A(torch.rand(2, 1, 9, 9, dtype=torch.float64))
    assert torch.equal(reconstruct(y, radon), radon.fbp(y))


def test_methods_refuse_other_operators(ct):
    radon, y = ct
    blur = Blur(gaussian_kernel(1.0, dtype=torch.float64), dtype=torch.float64)
    b = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    with pytest.raises(TypeError, match="FBP needs a Radon physics, got Blur"):
        reconstruct(b, blur, FBP())
    with pytest.raises(TypeError, match="ZeroFilled needs a MRI physics, got Radon"):
        reconstruct(y, radon, ZeroFilled())
    with pytest.raises(TypeError, match="Wiener needs a Blur physics, got Radon"):
        reconstruct(y, radon, Wiener(0.1))


def test_bad_measurements(ct):
    radon, y = ct
    with pytest.raises(TypeError, match="y must be a torch.Tensor, got list"):
        reconstruct([1.0], radon)
    with pytest.raises(ValueError, match="y contains NaN or Inf"):
        reconstruct(torch.full_like(y, math.nan), radon, Adjoint())
    with pytest.raises(TypeError, match="y has dtype torch.float32 but the operator uses torch.float64"):
        reconstruct(y.float(), radon, Adjoint())
    with pytest.raises(ValueError, match=r"y must have spatial size \(22, 9\), got shape \(2, 1, 22, 8\)"):
        reconstruct(y[..., :8], radon, TV(0.1))
    with pytest.raises(TypeError, match="physics must be a linear operator with A and A_adjoint, got str"):
        reconstruct(y, "ct")
    with pytest.raises(TypeError, match="method must be one of .* got builtins.str"):
        reconstruct(y, radon, "fbp")
    from liftinv.potentials import TV as TVRegularizer  # the inversion regulariser of the same name

    with pytest.raises(TypeError, match=r"liftinv.reconstruction's \[.*'TV'.*\] or a SavedModel, got liftinv.potentials.TV"):
        reconstruct(y, radon, TVRegularizer(0.1))


@pytest.mark.parametrize("make, match", [
    (lambda: FBP("ram"), "filter must be one of"),
    (lambda: Tikhonov(-1.0), "weight must be a finite number >= 0, got -1.0"),
    (lambda: Tikhonov(1.0, n_iter=0), "n_iter must be a positive int, got 0"),
    (lambda: Tikhonov(1.0, tol=-1.0), "tol must be a finite number >= 0, got -1.0"),
    (lambda: TV(math.nan), "weight must be a finite number >= 0, got nan"),
    (lambda: TV(0.1, tol=-1.0), "tol must be a finite number >= 0"),
    (lambda: TV(0.1, box=(1.0, 0.0)), "box must be None or a pair"),
    (lambda: Wiener(0.0), "weight must be a finite number > 0, got 0.0"),
])
def test_bad_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_hyper_parameter_types():
    with pytest.raises(TypeError, match="weight must be a real number, got '1'"):
        Tikhonov("1")
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        Trained("net.pt")


def test_numpy_scalar_weights_run_like_python_floats(ct):
    """TV(np.float32(w)) was accepted by the method but refused by pdhg_tv when it ran ('weight
    must be a finite number >= 0, got np.float32(...)'); Tikhonov's and TV's results equal those
    with the Python float 0.5 (exact in float32)."""
    import numpy as np

    radon, y = ct
    for make in (Tikhonov, TV):
        expected = reconstruct(y, radon, make(0.5, n_iter=20, tol=0.0))
        torch.testing.assert_close(reconstruct(y, radon, make(np.float32(0.5), n_iter=20, tol=np.float32(0.0))), expected)


def test_trained_model_without_parameters_runs(ct):
    """A model without parameters has no dtype to check: Trained runs it as model(y, physics)."""
    radon, y = ct

    class Backprojection(torch.nn.Module):
        def forward(self, y, physics):
            return physics.A_adjoint(y)

    assert torch.equal(reconstruct(y, radon, Trained(Backprojection())), radon.A_adjoint(y))


def test_trained_unrolled_network_refuses_another_operator(ct):
    """``Trained(net)`` binds the physics it is given: an operator with another spec is refused
    and leaves the network bound as it was; another object with the same spec is accepted."""
    radon, y = ct
    net = UnrolledPrimalDual(radon, 2, 3, (1, 15, 15), generator=torch.Generator().manual_seed(0)).double()
    expected = net(y)
    other = Radon(15, 10, dtype=torch.float64)
    message = r"^physics must have the spec of the operator the network is bound to: Radon\(angles=9\) but got Radon\(angles=10\)$"
    with pytest.raises(ValueError, match=message):
        reconstruct(other.A(torch.zeros(1, 1, 15, 15, dtype=torch.float64)), other, Trained(net))
    assert net.physics is radon
    same = Radon(15, 9, dtype=torch.float64)
    assert torch.equal(reconstruct(y, same, Trained(net)), expected) and net.physics is same


def test_trained_models_check_their_physics(tmp_path, ct):
    radon, y = ct
    net = UnrolledPrimalDual(radon, 2, 3, (1, 15, 15), generator=torch.Generator().manual_seed(0)).double()
    expected = net(y, radon)
    assert torch.equal(reconstruct(y, radon, Trained(net)), expected)
    save_model(net, tmp_path / "net.pt", task="ct", physics=radon)
    saved = load_model(tmp_path / "net.pt")
    assert torch.equal(reconstruct(y, radon, saved), expected)
    assert torch.equal(reconstruct(y, radon, Trained(saved.net, physics_spec(radon))), expected)
    other = Radon(15, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^model was trained for Radon\(angles=9\) but got Radon\(angles=10\)$"):
        reconstruct(other.A(torch.zeros(1, 1, 15, 15, dtype=torch.float64)), other, saved)
    single = Radon(15, 9)
    with pytest.raises(ValueError, match=r"Radon\(dtype='float64'\) but got Radon\(dtype='float32'\)"):
        reconstruct(y.float(), single, saved)
    with pytest.raises(TypeError, match="y has dtype torch.float32 but the model uses torch.float64"):
        reconstruct(y.float(), single, Trained(saved.net))
