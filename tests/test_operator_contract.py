"""Contract tests over every registered operator: exact adjoints, norms, deepinv compatibility."""
import re

import numpy as np
import pytest
import torch
from deepinv.physics import LinearPhysics

import operators
from operators.checks import adjoint_error, opnorm, values_trusted


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_adjoint_dot_product(name, dtype, tol):
    physics, shape = operators.OPERATORS[name](dtype, "cpu")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, dtype=dtype, generator=g)
    assert isinstance(physics, LinearPhysics)
    assert adjoint_error(physics, x, generator=g) < tol


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_values_trusted_skips_only_the_nan_scan(name):
    """NaN is refused by name outside ``values_trusted`` and passed through inside it, where a
    wrong shape is still refused."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    x = torch.zeros(shape, dtype=torch.float64)
    x[(0,) * (x.ndim - 2) + (x.shape[-2] // 2, x.shape[-1] // 2)] = float("nan")  # inside a circle geometry's disc
    with pytest.raises(ValueError, match="NaN or Inf"):
        physics.A(x)
    with values_trusted():
        assert torch.isnan(physics.A(x)).any()
        with pytest.raises(ValueError, match="shape"):
            physics.A(x[None])
    with pytest.raises(ValueError, match="NaN or Inf"):  # the setting ends with the block
        physics.A(x)


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



@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_a_dtype_round_trip_leaves_no_stale_cache(name):
    """float64 -> float32 -> float64 rounds the kernel, coil maps or system matrices: an operator
    used before the round trip computes A, A^T and opnorm as a twin converted before any use,
    which computes them from the rounded tensors alone. The spectra, MRI factors and norms cached
    for the float64 values before were kept (keyed by dtype), so A differed by up to 4e-8 from the
    operator's own kernel and maps, and opnorm by up to 7e-9."""
    used, shape = operators.OPERATORS[name](torch.float64, "cpu")
    fresh, _ = operators.OPERATORS[name](torch.float64, "cpu")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    y = torch.randn(used.A(x).shape, dtype=torch.float64, generator=g)
    used.A_adjoint(y)
    opnorm(used, shape)
    for physics in (used, fresh):
        physics.float().double()
    assert torch.equal(used.A(x), fresh.A(x))
    assert torch.equal(used.A_adjoint(y), fresh.A_adjoint(y))
    assert opnorm(used, shape) == opnorm(fresh, shape)

@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
@pytest.mark.parametrize("convert, dtype", [(lambda m: m.half(), torch.float16), (lambda m: m.bfloat16(), torch.bfloat16),
                                            (lambda m: m.to(torch.float16), torch.float16)])
def test_a_conversion_to_a_dtype_the_operator_cannot_serve_is_refused_naming_it(name, convert, dtype):
    """The constructors take float32 and float64 only, but ``half()``/``bfloat16()`` converted
    the buffers, and A then failed inside torch ('Unsupported dtype Half' from the FFT, a KeyError
    float16 in MRI, 'addmm_out_sparse_csr_impl_mkl not implemented for Half'), or (a direct
    blur) ran in half precision: each operator now refuses the conversion, naming its class and
    the dtype, and stays as it was (A bit for bit)."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    before = physics.A(x)
    with pytest.raises(TypeError, match=rf"{type(physics).__name__} computes in torch.float32 or torch.float64 only, "
                                        rf"got a conversion to {dtype}"):
        convert(physics)
    assert physics.dtype == torch.float64 and torch.equal(physics.A(x), before)


@pytest.mark.parametrize("name", ["blur-circular-gaussian", "radon-full", "mri-random"])
def test_deepinv_noise_model(name):
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    physics.set_noise_model(operators.GaussianNoise(sigma=0.1, rng=torch.Generator().manual_seed(0)))
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    noise = physics(x) - physics.A(x)
    assert 0.05 < float(noise[noise != 0].std()) < 0.15


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_clone_is_an_equal_independent_operator(name):
    """deepinv's ``clone`` (a deep copy; ``Radon``'s sparse matrices need their own) gives the
    same A and A^T, and the copy's noise is its own."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    copy = physics.clone()
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(copy.A(x), physics.A(x)) and torch.equal(copy.A_adjoint(copy.A(x)), physics.A_adjoint(physics.A(x)))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(copy.buffers(), physics.buffers()) if a.layout == torch.strided)


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_a_network_holding_the_operator_deep_copies_with_it(name):
    """``copy.deepcopy`` of an unrolled network built for the operator (its construction takes
    the operator norm, so the operator caches it under a stamp of its buffers, and the network
    stamps the operator too): the copy reconstructs as the original and holds an operator of its
    own. With a Radon it failed ('Cannot access storage of SparseCsrTensorImpl'): the stamps
    deep-copied its sparse matrices, which only its own ``__deepcopy__`` can copy."""
    import copy

    from liftinv.architectures import UnrolledPrimalDual

    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    net = UnrolledPrimalDual(physics, 2, 2, shape[1:], generator=torch.Generator().manual_seed(6)).double()
    twin = copy.deepcopy(net)
    y = physics.A(torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(twin(y, twin.physics), net(y, net.physics))
    assert twin.physics is not net.physics


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_call_passes_noise_parameters_through(name):
    """deepinv calls ``physics(x, **params)`` and forwards the parameters to A, A^T and the noise:
    the noise model's are accepted (and used by it), the operator's unchanged."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    physics.set_noise_model(operators.GaussianNoise(sigma=0.0, rng=torch.Generator().manual_seed(0)))
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    clean = physics.A(x)
    noisy = physics(x, sigma=0.1)
    assert torch.equal(physics.A(x, sigma=0.1), clean)
    assert physics.A_adjoint(clean, sigma=0.1).shape == x.shape
    assert 0.05 < float((noisy - clean)[noisy != clean].std()) < 0.15


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_empty_batch_gives_empty_results(name):
    """A batch of 0 samples maps to 0 measurements and back, with the shapes of a full batch."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    y = physics.A(x)
    empty_y = physics.A(x[:0])
    assert empty_y.shape == (0, *y.shape[1:]) and empty_y.dtype == y.dtype
    assert physics.A_adjoint(y[:0]).shape == (0, *x.shape[1:])


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_empty_batch_of_the_wrong_shape_is_refused_with_its_shape(name):
    """An empty batch missing the channel axis is refused, and the message quotes the shape passed
    (not that of the one-sample batch the operators apply themselves to instead)."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    for apply, bad in ((physics.A, x[:0, 0]), (physics.A_adjoint, physics.A(x)[:0, 0])):
        with pytest.raises(ValueError, match=re.escape(f"got shape {tuple(bad.shape)}")):
            apply(bad)


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_torch_func_transforms_give_the_dense_matrix(name):
    """``torch.func.jvp``, ``jacrev`` and ``jacfwd`` (forward mode and vmap) through A and A^T
    agree with the dense matrix built by applying A to every unit vector (the inversion's
    Lipschitz estimate uses jvp through networks that contain the operators)."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    sample = shape[1:]
    n = torch.Size(sample).numel()
    dense = physics.A(torch.eye(n, dtype=torch.float64).reshape(n, *sample)).reshape(n, -1).T
    x = torch.rand(1, *sample, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    v = torch.rand(1, *sample, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    _, jv = torch.func.jvp(physics.A, (x,), (v,))
    torch.testing.assert_close(jv.flatten(), dense @ v.flatten())
    torch.testing.assert_close(torch.func.jacrev(physics.A)(x).reshape(-1, n), dense)
    torch.testing.assert_close(torch.func.jacfwd(physics.A)(x).reshape(-1, n), dense)
    torch.testing.assert_close(torch.func.jacrev(physics.A_adjoint)(physics.A(x)).reshape(n, -1), dense.T)


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_caches_filled_in_inference_mode_serve_autograd(name):
    r"""Caches (FFT spectra, MRI factors) first filled under ``torch.inference_mode`` can be saved
    for backward by later calls: the gradients of :math:`\langle Ax, v\rangle` are
    :math:`A^\top v` (in x) and :math:`Ax` (in v)."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    g = torch.Generator().manual_seed(10)
    x = torch.rand(shape, dtype=torch.float64, generator=g)
    with torch.inference_mode():
        y_shape = physics.A(x).shape
        physics.A_adjoint(torch.zeros(y_shape, dtype=torch.float64))
    v = torch.rand(y_shape, dtype=torch.float64, generator=g)
    (grad_x,) = torch.autograd.grad((physics.A(x.requires_grad_()) * v).sum(), x)
    (grad_v,) = torch.autograd.grad((physics.A_adjoint(v.requires_grad_()) * x).sum(), v)
    with torch.no_grad():
        torch.testing.assert_close(grad_x, physics.A_adjoint(v))
        torch.testing.assert_close(grad_v, physics.A(x))


@pytest.mark.parametrize("name", ["blur-zero-gaussian", "radon-full", "mri-random"])
def test_passing_the_current_parameters_keeps_the_caches(name):
    """deepinv may pass its parameters at every call: the operator's own again (its kernel, angles
    or mask) keep the built matrices and cached spectra or factors; other values replace them."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    key, cache = {"blur": ("kernel", "_spectra"), "radon": ("angles", "_matrix"), "mri": ("mask", "_factors")}[name.split("-")[0]]
    y = physics.A(x)
    kept = getattr(physics, cache)
    assert torch.equal(physics(x, **{key: getattr(physics, key).clone()}), y)
    assert getattr(physics, cache) is kept
    physics.update(**{key: 0.5 * getattr(physics, key)})
    assert getattr(physics, cache) is not kept


@pytest.mark.parametrize("name", ["blur-zero-gaussian", "radon-full", "mri-random"])
def test_the_operator_keeps_a_copy_of_the_tensor_it_is_given(name):
    """After ``update`` with a kernel, angles or mask, changing that tensor in place leaves the
    operator as it was, and passing it again gives the operator of the new values (as one updated
    with an untouched copy of them), not the stale one."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    fresh, _ = operators.OPERATORS[name](torch.float64, "cpu")
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    key = {"blur": "kernel", "radon": "angles", "mri": "mask"}[name.split("-")[0]]
    param = 0.5 * getattr(physics, key) + 1.0
    physics.update(**{key: param})
    before = physics.A(x)
    param.mul_(1.5)
    assert torch.equal(physics.A(x), before)
    physics.update(**{key: param})
    fresh.update(**{key: param.clone()})
    torch.testing.assert_close(physics.A(x), fresh.A(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["blur-circular-gaussian", "radon-full", "mri-random"])
def test_parameters_given_in_inference_mode_serve_autograd(name):
    """A kernel, angles or mask passed under ``torch.inference_mode`` is stored as a normal
    tensor: later, ``physics(x)`` (MRI's noise step multiplies by the mask) can be differentiated
    and gives the gradient of an operator updated outside inference mode, and
    ``load_state_dict`` can copy into the buffers."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    fresh, _ = operators.OPERATORS[name](torch.float64, "cpu")
    key = {"blur": "kernel", "radon": "angles", "mri": "mask"}[name.split("-")[0]]
    new = 0.5 * getattr(physics, key) + 1.0
    with torch.inference_mode():
        physics.update(**{key: new.clone()})
    fresh.update(**{key: new})

    def grad(op) -> torch.Tensor:
        x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(12), requires_grad=True)
        return torch.autograd.grad(op(x).square().sum(), x)[0]

    torch.testing.assert_close(grad(physics), grad(fresh), rtol=0, atol=0)
    physics.load_state_dict(fresh.state_dict())


def test_adjoint_error_is_the_documented_ratio_and_sees_a_wrong_adjoint():
    """On a matrix with a perturbed adjoint, the value is the docstring's ratio computed here
    from the same random y; with the exact transpose it is at rounding level."""
    g = torch.Generator().manual_seed(3)
    m = torch.randn(7, 5, dtype=torch.float64, generator=g)
    x = torch.randn(2, 5, dtype=torch.float64, generator=g)

    for wrong in (torch.zeros(5, 7, dtype=torch.float64), 0.1 * torch.randn(5, 7, dtype=torch.float64, generator=g)):
        physics = LinearPhysics(A=lambda v: v @ m.T, A_adjoint=lambda w, e=wrong: w @ (m.T + e).T)
        value = adjoint_error(physics, x, generator=torch.Generator().manual_seed(9))
        y = torch.randn(2, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
        ax, aty = x @ m.T, y @ (m.T + wrong).T
        expected = float(((ax * y).sum() - (x * aty).sum()).abs() / (ax.norm() * y.norm() + x.norm() * aty.norm()))
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert (value < 1e-15) == (not wrong.any())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_adjoint_error_on_cuda_with_a_cpu_generator(name):
    """A CPU generator draws y on the CPU (the same y as for the CPU operator), then moves it."""
    cpu, shape = operators.OPERATORS[name](torch.float64, "cpu")
    gpu, _ = operators.OPERATORS[name](torch.float64, "cuda")
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    on_cpu = adjoint_error(cpu, x, generator=torch.Generator().manual_seed(2))
    assert adjoint_error(gpu, x.cuda(), generator=torch.Generator().manual_seed(2)) == pytest.approx(on_cpu, abs=1e-12)


def test_opnorm_cache_is_keyed_by_dtype_and_shape():
    """``opnorm(A, dtype=float32)`` then ``dtype=float64`` gives the float64 Lanczos value, the
    same as on a fresh operator (the float32 value differs from it at float32 rounding)."""
    from operators.blur import Blur

    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 3.0]]) / 16  # exact in float32 and float64
    physics, fresh = (Blur(kernel, boundary="reflect", dtype=torch.float64) for _ in range(2))
    low = opnorm(physics.to(torch.float32), (1, 2, 11, 10))
    high = opnorm(physics.to(torch.float64), (1, 2, 11, 10))
    assert high == opnorm(fresh, (1, 2, 11, 10)) and high != low
    other = Blur(kernel, boundary="reflect", dtype=torch.float64)
    assert opnorm(physics, (1, 1, 7, 8)) == opnorm(other, (1, 1, 7, 8)) != high



def test_opnorm_cache_is_keyed_by_the_lanczos_settings():
    """A norm computed with ``max_iter=2`` (6.77 for this CT operator) is not returned for the
    default settings afterwards: the cache was keyed by shape and dtype alone, so the later call
    returned it, 34% below the norm, without a word. Oracle: the dense matrix's largest singular
    value, 10.32."""
    physics = operators.OPERATORS["radon-circle"](torch.float64, "cpu")[0]
    n = 15 * 15
    dense = physics.A(torch.eye(n, dtype=torch.float64).reshape(n, 1, 15, 15)).reshape(n, -1).T
    exact = float(torch.linalg.matrix_norm(dense, ord=2))
    assert opnorm(physics, max_iter=2) < 0.9 * exact
    assert opnorm(physics) == pytest.approx(exact, rel=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opnorm_of_a_composition_computes_in_the_operators_dtype(dtype):
    """deepinv's ``physics1 * physics2`` of liftinv operators has no ``dtype`` of its own: opnorm
    started from a vector of torch's default dtype and a float64 composition refused it ('x has
    dtype torch.float32 but the operator uses torch.float64') unless dtype was given. The default
    is now the dtype of its operators. Oracle: the dense matrix's largest singular value."""
    from operators.blur import Blur
    from operators.radon import Radon

    radon = Radon(6, 4, dtype=dtype)
    blur = Blur(torch.tensor([[0.1, 0.5, 0.4], [0.2, 0.3, -0.1]], dtype=dtype), img_size=(1, 6, 6), dtype=dtype)
    composed = radon * blur
    n = 36
    dense = radon.A(blur.A(torch.eye(n, dtype=dtype).reshape(n, 1, 6, 6))).reshape(n, -1).T.double()
    exact = float(torch.linalg.matrix_norm(dense, ord=2))
    assert opnorm(composed, (1, 1, 6, 6)) == pytest.approx(exact, rel=1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("max_iter", [0, -3, 2.5, True])
def test_opnorm_refuses_a_max_iter_that_is_not_a_positive_integer(max_iter):
    """max_iter = 0 (or -3) ran no Lanczos step and returned 0 as the norm of an operator of norm 1
    (the identity blur), without an error; 2.5 failed inside range(), True ran as 1. Now a ValueError
    naming it; a NumPy integer is taken."""
    from operators.blur import Blur

    physics = Blur(torch.ones(1, 1, dtype=torch.float64), img_size=(1, 4, 4), dtype=torch.float64)
    with pytest.raises(ValueError, match="max_iter"):
        opnorm(physics, max_iter=max_iter)
    assert opnorm(physics, max_iter=np.int64(1)) == pytest.approx(1.0, rel=1e-12)

def test_opnorm_of_a_deepinv_physics_follows_its_updates():
    """deepinv's own physics change through ``update`` without clearing any cache: their norm is
    recomputed, 3 after the 1 x 1 filter 1 becomes 3 (not the 1 of the first call)."""
    import deepinv as dinv

    physics = dinv.physics.Blur(filter=torch.ones(1, 1, 1, 1, dtype=torch.float64))
    assert opnorm(physics, (1, 1, 8, 8), dtype=torch.float64) == pytest.approx(1.0, rel=1e-10)
    physics.update(filter=torch.full((1, 1, 1, 1), 3.0, dtype=torch.float64))
    assert opnorm(physics, (1, 1, 8, 8), dtype=torch.float64) == pytest.approx(3.0, rel=1e-10)


def test_opnorm_of_a_physics_of_plain_functions_starts_on_the_device_of_like():
    """A deepinv ``LinearPhysics(A=..., A_adjoint=...)`` has no dtype, and its device holder (the
    CPU unless built with ``device=``) says nothing about where its functions compute: the docstring
    says to give the data as ``like``, but the start vector was drawn on the holder's device (so
    CPU for functions of GPU tensors). A holder on another device (here 'meta') stands for that
    case. Oracle: the largest singular value of the dense matrix."""
    mat = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    physics = LinearPhysics(A=lambda x: x.flatten(1) @ mat.T, A_adjoint=lambda y: (y @ mat).reshape(-1, 6), device="meta")
    like = torch.zeros(1, 6, dtype=torch.float64)
    assert opnorm(physics, (1, 6), like=like) == pytest.approx(float(torch.linalg.matrix_norm(mat, 2)), rel=1e-10)


def test_lanczos_max_clamps_a_rounding_negative_value_to_zero():
    r"""For a positive semidefinite map the largest eigenvalue is :math:`\ge 0`: a Ritz value that
    rounding made negative (here the map :math:`-10^{-20} I`) is returned as 0."""
    from operators.checks import lanczos_max

    x0 = torch.ones(4, dtype=torch.float64)
    assert lanczos_max(lambda v: -1e-20 * v, x0) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_lanczos_max_stops_when_the_float32_krylov_space_is_exhausted(seed):
    r"""The Krylov space of the identity is exhausted after one step; the float32 residual is then
    rounding noise, and a basis built from it (seeds 0 and 2 gave 1.146 and 1.283) must not lift
    the value above :math:`\lambda_{\max} = 1`; likewise a float32 Blur with a delta kernel."""
    from operators.blur import Blur
    from operators.checks import lanczos_max

    x0 = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    assert lanczos_max(lambda v: v, x0) == pytest.approx(1.0, abs=1e-6)
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1.0
    assert opnorm(Blur(delta), (1, 1, 8, 8)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_spec_is_a_snapshot(name):
    """Changing the tensors of a spec in place leaves the operator it was taken from: its spec
    still equals that of an untouched twin (the spec used to hold the operator's own buffers)."""
    from operators.spec import physics_spec, spec_differences

    physics, _ = operators.OPERATORS[name](torch.float64, "cpu")
    twin, _ = operators.OPERATORS[name](torch.float64, "cpu")
    for value in physics_spec(physics).values():
        if isinstance(value, torch.Tensor):
            value.add_(1)
    assert spec_differences(physics_spec(twin), physics_spec(physics)) == []


@pytest.mark.parametrize("rtol", [float("nan"), float("inf"), 1.0, 2.0, -1e-3, "1e-6", True])
def test_opnorm_refuses_an_rtol_outside_zero_one(rtol):
    """rtol = NaN never stopped Lanczos, which went on over the exhausted float32 Krylov space of
    the identity blur and returned 1.146 for its norm 1; rtol >= 1 (inf, 2) stopped at the first
    Rayleigh quotient, 2.78 for a CT operator of norm 11.41; both without an error. Now a ValueError
    naming it; 0 and a NumPy float are taken. Oracle: the identity's norm 1."""
    from operators.blur import Blur

    physics = Blur(torch.ones(1, 1), img_size=(1, 16, 16))
    with pytest.raises(ValueError, match="rtol"):
        opnorm(physics, rtol=rtol)
    assert opnorm(physics, rtol=0.0) == pytest.approx(1.0, rel=1e-5)
    assert opnorm(physics, rtol=np.float32(0.5)) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_empty_batch_keeps_the_autograd_graph(name):
    """Gradients through an empty batch are empty gradients, as through any other batch (Blur and MRI
    applied themselves to a fresh zero sample, which cut the graph: autograd.grad failed)."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    x = torch.zeros(0, *shape[1:], dtype=torch.float64, requires_grad=True)
    y = physics.A(x)
    (gx,) = torch.autograd.grad(y.sum(), x)
    y0 = torch.zeros(y.shape, dtype=y.dtype, requires_grad=True)
    (gy,) = torch.autograd.grad(physics.A_adjoint(y0).sum(), y0)
    assert gx.shape == x.shape and gy.shape == y0.shape


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_sparse_images_and_measurements_are_refused_by_name(name):
    """A sparse x or y is refused naming it (it failed inside torch: 'reflection_pad2d' /
    'reshape is not implemented for sparse tensors' / 'aten::complex.out', naming nothing)."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    for apply, arg, t in ((physics.A, "x", x), (physics.A_adjoint, "y", physics.A(x))):
        with pytest.raises(TypeError, match=f"^{arg} must be a dense \\(strided\\) tensor, got layout torch.sparse_coo"):
            apply(t.to_sparse())


def test_sparse_operator_parameters_are_refused_by_name():
    """Sparse kernel, mask, coil maps and angles are refused naming the argument (they failed
    inside torch: 'unsupported memory format option', 'Cannot access storage of SparseTensorImpl')."""
    mask = operators.random_mask((9, 9), 2, generator=torch.Generator().manual_seed(0)).double()
    maps = torch.ones(2, 9, 9, dtype=torch.complex128)
    builds = {
        "kernel": lambda: operators.Blur(operators.gaussian_kernel(1.0).to_sparse()),
        "mask": lambda: operators.MRI(mask.to_sparse_csr()),
        "coil_maps": lambda: operators.MRI(mask, coil_maps=maps.to_sparse()),
        "angles": lambda: operators.Radon(9, torch.tensor([0.0, 30.0]).to_sparse()),
    }
    for arg, build in builds.items():
        with pytest.raises(TypeError, match=f"^{arg} must be a dense \\(strided\\) tensor"):
            build()


@pytest.mark.parametrize("name", sorted(operators.OPERATORS))
def test_vmap_over_a_and_its_adjoint_is_the_loop_and_still_refuses_nan(name):
    """``torch.func.vmap`` of A and A^T gives the stacked results of a loop over the inputs (the
    NaN scan made a Python bool of a batched value: 'vmap: ... data-dependent control flow' for
    every operator, though Radon's product has a vmap rule); a NaN in one mapped sample is refused."""
    physics, shape = operators.OPERATORS[name](torch.float64, "cpu")
    xs = torch.rand(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    ys = torch.func.vmap(physics.A)(xs)
    torch.testing.assert_close(ys, torch.stack([physics.A(x) for x in xs]), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.func.vmap(physics.A_adjoint)(ys), torch.stack([physics.A_adjoint(y) for y in ys]),
                               rtol=0, atol=1e-12)
    xs[2, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="^x contains NaN or Inf entries"):
        torch.func.vmap(physics.A)(xs)


def test_adjoint_error_of_a_zero_input_and_a_bad_generator():
    """x = 0 passes the dot-product test trivially (both products are 0, so is the scale): 0, not
    the NaN of 0/0; a generator that is not a torch.Generator is refused naming it (it failed
    with "'int' object has no attribute 'device'")."""
    physics, shape = operators.OPERATORS["blur-zero-gaussian"](torch.float64, "cpu")
    assert operators.adjoint_error(physics, torch.zeros(shape, dtype=torch.float64)) == 0.0
    with pytest.raises(TypeError, match="^generator must be a torch.Generator or None, got int"):
        operators.adjoint_error(physics, torch.ones(shape, dtype=torch.float64), generator=0)


def test_finiteness_scan_without_torchs_private_functorch_functions(monkeypatch):
    """all_finite unwraps vmap's tensors by private torch functions; a torch without them must
    still scan plain tensors (the package must not fail on import or on every operator call)."""
    from operators.checks import all_finite

    monkeypatch.delattr(torch._C._functorch, "is_functorch_wrapped_tensor")
    x = torch.ones(2, 3)
    assert all_finite(x)
    x[1, 2] = float("nan")
    assert not all_finite(x)


@pytest.mark.parametrize("scale", [1e12, 1e-12])
def test_float32_opnorm_of_an_operator_far_from_unit_norm(scale):
    """Lanczos in float32 estimates norms whose vectors' squared norms leave float32's range: a
    blur scaled by 1e12 came out NaN (|A^*A v|^2 overflowed) and one scaled by 1e-12 came out
    0.41 times its norm (|A^*A v|^2 underflowed to 0, taken for an exhausted Krylov space)."""
    kernel = torch.rand(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(13)) * scale
    norms = [opnorm(operators.Blur(kernel, img_size=(1, 9, 9), boundary="zero", dtype=dtype)) for dtype in
             (torch.float32, torch.float64)]
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)
