"""Contract tests over every registered operator: exact adjoints, norms, deepinv compatibility."""
import pytest
import torch
from deepinv.physics import LinearPhysics

import operators
from operators.checks import adjoint_error, opnorm


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_adjoint_dot_product(name, dtype, tol):
    physics, shape = operators.OPERATORS[name](dtype, "cpu")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, dtype=dtype, generator=g)
    assert isinstance(physics, LinearPhysics)
    assert adjoint_error(physics, x, generator=g) < tol


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_opnorm_matches_dense_svd(name):
    """The cached power-iteration norm equals the largest singular value of the dense matrix,
    built by applying A to every unit vector at once (one batched call)."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    sample = shape[1:]
    n = torch.Size(sample).numel()
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *sample)
    dense = physics.A(eye).reshape(n, -1).T
    assert opnorm(physics, (1, *sample)) == pytest.approx(float(torch.linalg.matrix_norm(dense, ord=2)), rel=1e-4)


@pytest.mark.parametrize("name", ["blur-circular-gaussian", "radon-full", "mri-random"])
def test_deepinv_noise_model(name):
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    physics.set_noise_model(operators.GaussianNoise(sigma=0.1, rng=torch.Generator().manual_seed(0)))
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    noise = physics(x) - physics.A(x)
    assert 0.05 < float(noise[noise != 0].std()) < 0.15
