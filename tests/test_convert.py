"""lift(): same function, shared parameters, one layer per activation, clear refusals."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from liftinv.affine import adjoint_graph, is_linear, linear_part
from liftinv.activations import Clip, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, SoftThreshold, Tanh, as_activation
from liftinv.architectures import MLP
from liftinv.architectures._common import init_parameters_
from liftinv.convert import lift
from liftinv.network import LiftedNetwork

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build(model: nn.Module, seed: int) -> nn.Module:
    init_parameters_(model, gen(seed))
    return model.double()


def dense_model():
    """Every supported activation, with two affine maps composed before the first one."""
    return nn.Sequential(
        nn.Linear(5, 7), nn.Linear(7, 6), nn.ReLU(),
        nn.Linear(6, 7), nn.LeakyReLU(0.1),
        nn.Linear(7, 5), nn.Hardtanh(-0.5, 0.7),
        nn.Linear(5, 6), nn.Softshrink(0.2),
        nn.Linear(6, 4), nn.Tanh(),
        nn.Identity(), nn.Linear(4, 5), nn.Sigmoid(),
        nn.Linear(5, 3), nn.ReLU6(),
        nn.Linear(3, 3),
    )


def conv_model():
    """Convolutions, nesting, Flatten/Unflatten and ConvTranspose2d."""
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
        nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Tanh(), nn.Flatten()),
        nn.Linear(24, 9), nn.Softshrink(0.05),
        nn.Linear(9, 24), nn.Unflatten(1, (4, 2, 3)), nn.ConvTranspose2d(4, 2, 3, stride=2),
        nn.Sequential(nn.Sequential(nn.Sigmoid())),
    )


@pytest.mark.parametrize(
    "make, shape, n_layers, acts",
    [
        (dense_model, (3, 5), 8, [ReLU, LeakyReLU, Clip, SoftThreshold, Tanh, Sigmoid, Clip, Identity]),
        (conv_model, (4, 2, 5, 7), 4, [ReLU, Tanh, SoftThreshold, Sigmoid]),
    ],
)
def test_lift_computes_the_same_function_with_shared_parameters(make, shape, n_layers, acts):
    model = build(make(), 1)
    net = lift(model, input_shape=shape[1:])
    u = torch.randn(shape, dtype=DT, generator=gen(2))
    torch.testing.assert_close(net(u), model(u), rtol=1e-14, atol=1e-15)
    assert net.depth == n_layers and [type(layer.activation) for layer in net.layers] == acts
    assert all(layer.inputs == (k - 1,) for k, layer in enumerate(net.layers, start=1))
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # shared, not copied: the lifted network follows
    torch.testing.assert_close(net(u), model(u), rtol=1e-14, atol=1e-15)


def test_consecutive_affine_modules_compose_into_one_map():
    model = build(nn.Sequential(nn.Linear(4, 6), nn.Identity(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)), 3)
    net = lift(model)
    assert net.depth == 2
    first = net.layer(1).maps[0]
    assert isinstance(first, nn.Sequential) and list(first) == [model[0], model[2]]
    assert net.layer(2).maps[0] is model[4] and isinstance(net.layer(2).activation, Identity)


def test_leading_and_repeated_activations_get_identity_maps():
    model = build(nn.Sequential(nn.Tanh(), nn.Sigmoid(), nn.Linear(4, 3), nn.ReLU()), 4)
    net = lift(model)
    u = torch.randn(3, 4, dtype=DT, generator=gen(5))
    assert net.depth == 3 and isinstance(net.layer(1).maps[0], nn.Identity)
    torch.testing.assert_close(net(u), model(u), rtol=1e-14, atol=1e-15)


def test_modules_used_twice_are_applied_twice():
    """A module held twice (here a shared ``nn.Linear`` and one ``nn.ReLU`` instance) is applied
    at each of its positions, as ``nn.Sequential`` does."""
    linear, relu = nn.Linear(3, 3), nn.ReLU()
    model = build(nn.Sequential(linear, relu, nn.Sequential(linear, relu), linear), 12)
    net = lift(model)
    u = torch.randn(4, 3, dtype=DT, generator=gen(13))
    assert net.depth == 3
    torch.testing.assert_close(net(u), linear(relu(linear(relu(linear(u))))), rtol=1e-14, atol=1e-15)


def test_single_modules_and_lifted_networks():
    linear = build(nn.Linear(4, 3), 6)
    net = lift(linear)
    u = torch.randn(2, 4, dtype=DT, generator=gen(7))
    assert net.depth == 1 and torch.equal(net(u), linear(u))
    mlp = MLP([3, 4, 2], ReLU())
    assert lift(mlp) is mlp
    assert isinstance(lift(nn.Sequential(nn.Sigmoid())), LiftedNetwork)


def test_unrolled_networks_give_their_lifted_form():
    """A model holding its lifted form as ``.lifted`` (an unrolled reconstruction network) lifts
    to it, so ``invert`` recovers its lifted input x_0 given the measurements y, as it does for
    the lifted network itself."""
    from liftinv.architectures import UnrolledPrimalDual
    from liftinv.inversion import InversionConfig, invert
    from operators.blur import Blur
    from operators.kernels import gaussian_kernel

    physics = Blur(gaussian_kernel(1.0, dtype=DT), img_size=(1, 8, 8), boundary="zero", dtype=DT)
    net = UnrolledPrimalDual(physics, 2, 3, (1, 8, 8), generator=gen(1)).double()
    assert lift(net) is net.lifted
    x0, y = net.lifted_inputs(physics.A(torch.rand(2, 1, 8, 8, dtype=DT, generator=gen(2))))
    f = net.lifted(x0, y).detach()
    cfg = InversionConfig(max_iter=50)
    torch.testing.assert_close(invert(net, f, y=y, config=cfg).input, invert(net.lifted, f, y=y, config=cfg).input, rtol=0, atol=0)


@pytest.mark.parametrize(
    "bad, where",
    [
        (nn.GELU(), "1 (GELU)"),
        (nn.SiLU(), "1 (SiLU)"),
        (nn.GroupNorm(2, 4), "1 (GroupNorm)"),
        (nn.LeakyReLU(-0.1), "1 (LeakyReLU)"),
        (nn.Sequential(nn.ReLU(), nn.ELU()), "1.1 (ELU)"),
    ],
)
def test_unsupported_layers_are_refused_by_index_and_class(bad, where):
    model = nn.Sequential(nn.Linear(3, 4), bad, nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"layer " + where.replace("(", r"\(").replace(")", r"\)")) as info:
        lift(model)
    assert "nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Flatten, nn.Unflatten" in str(info.value)


def test_invalid_modules_and_shapes_are_refused():
    with pytest.raises(TypeError, match="nn.Module"):
        lift(lambda x: x)
    model = build(conv_model(), 8)
    with pytest.raises(ValueError, match=r"input_shape=\(2, 7, 9\) \(one sample, without the batch axis\) does not fit lifted layer 3"):
        lift(model, input_shape=(2, 7, 9))
    with pytest.raises(ValueError, match="input_shape"):
        lift(build(dense_model(), 9), input_shape=(4,))
    for shape, error, match in ((5, TypeError, "input_shape must be a sequence"), ((-1,), ValueError, r"input_shape\[0\]"),
                                (("5",), ValueError, r"input_shape\[0\]"), ((2.5,), ValueError, r"input_shape\[0\]")):
        with pytest.raises(error, match=match):
            lift(build(dense_model(), 9), input_shape=shape)
    net = lift(build(dense_model(), 10), input_shape=(5,))
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        net(torch.zeros(2, 4, dtype=DT))
    with pytest.raises(TypeError, match="dtype"):
        net(torch.zeros(2, 5, dtype=torch.float32))


def test_sequential_subclasses_are_not_flattened():
    """Only plain ``nn.Sequential`` containers are flattened: a subclass may override ``forward``
    (here ``2 * Sequential.forward``), so flattening it would change the function; it is refused
    by index and class."""

    class Doubled(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(nn.Linear(3, 4), Doubled(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"layer 1 \(Doubled\)"):
        lift(model)


class _CalledTwice(nn.Sequential):
    """``nn.Sequential`` whose call doubles its forward's output (``__call__`` overridden)."""

    def __call__(self, x):
        return 2 * super().__call__(x)


class _LinearCalledTwice(nn.Linear):
    """``nn.Linear`` whose call doubles its map (``_call_impl`` overridden)."""

    def _call_impl(self, x):
        return 2 * super()._call_impl(x)


def test_subclasses_that_override_the_call_are_not_taken_by_their_class():
    """``module(x)`` runs ``forward`` through ``__call__`` and ``_call_impl``: a subclass of
    ``nn.Sequential`` overriding ``__call__`` was flattened (its doubling dropped, the lifted
    network 0.6 off the model, without a word), and an ``nn.Linear`` overriding ``_call_impl``
    was taken as affine by its weight (for is_linear and its adjoint) though it maps by twice
    it. Both are refused by path and class; the oracle is the model's own forward."""
    u = torch.randn(2, 3, dtype=DT, generator=gen(130))
    for model, where in ((nn.Sequential(_CalledTwice(nn.Linear(3, 3), nn.ReLU()), nn.Linear(3, 2)), r"0 \(_CalledTwice\)"),
                         (nn.Sequential(_LinearCalledTwice(3, 3), nn.ReLU()), r"0 \(_LinearCalledTwice\)")):
        model = _pretrained(model, 131)
        with pytest.raises(TypeError, match=rf"cannot lift layer {where}: it is neither affine"):
            lift(model, input_shape=(3,))
    plain = _pretrained(nn.Sequential(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), nn.Linear(3, 2)), 131)
    assert torch.equal(lift(plain, input_shape=(3,))(u), plain(u))


def test_affine_subclasses_count_only_if_they_keep_their_forward():
    """A subclass of ``nn.Linear`` that overrides ``forward`` (here with a ReLU, not affine) is
    refused by index and class, as an ``nn.Sequential`` subclass is; one that keeps it lifts."""

    class Gated(nn.Linear):
        def forward(self, x):
            return torch.relu(super().forward(x))

    class Named(nn.Linear):
        pass

    with pytest.raises(TypeError, match=r"layer 0 \(Gated\)"):
        lift(nn.Sequential(Gated(3, 4), nn.Tanh()))
    model = build(nn.Sequential(Named(3, 4), nn.Tanh()), 14)
    u = torch.randn(2, 3, dtype=DT, generator=gen(15))
    torch.testing.assert_close(lift(model)(u), model(u), rtol=1e-14, atol=1e-15)


def test_a_convolution_subclass_that_overrides_conv_forward_is_not_taken_as_affine():
    """nn.Conv2d.forward applies the weight through ``_conv_forward``: a subclass overriding that
    (here a weight-standardising one, the kernel doubled) kept ``forward``, so lift took it as a
    plain convolution, and the adjoint of its linear part came from ``module.weight``
    (:func:`~liftinv.affine.adjoint_graph`, conv_adjoint): the lifted problem's gradient in the
    input was half the true one, without an error. It is now refused by index and class, as a
    subclass overriding ``forward``, and adjoint_graph takes its adjoint by autograd. Oracle:
    autograd of the module's own forward, float64; a subclass keeping both still lifts."""

    class Standardised(nn.Conv2d):
        def _conv_forward(self, x, weight, bias):
            return super()._conv_forward(x, 2 * weight, bias)

    class Named(nn.Conv2d):
        pass

    with pytest.raises(TypeError, match=r"layer 0 \(Standardised\): it is neither affine"):
        lift(nn.Sequential(Standardised(1, 2, 3, padding=1, bias=False), nn.Tanh()))
    for cls in (Standardised, Named):
        conv = build(cls(1, 2, 3, padding=1, bias=False), 16)
        x = torch.randn(2, 1, 5, 5, dtype=DT, generator=gen(17), requires_grad=True)
        r = torch.randn(2, 2, 5, 5, dtype=DT, generator=gen(18))
        (got,) = torch.autograd.grad(adjoint_graph(conv, x), x, r)
        (want,) = torch.autograd.grad(conv(x), x, r)
        torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    model = build(nn.Sequential(Named(1, 2, 3, padding=1), nn.Tanh()), 19)
    u = torch.randn(2, 1, 5, 5, dtype=DT, generator=gen(20))
    assert torch.equal(lift(model, input_shape=(1, 5, 5))(u), model(u))


def test_input_shape_with_too_few_dimensions_is_refused_naming_it():
    """A map indexing a dimension that the samples lack (``nn.Flatten(2)`` on ``(B, 5)``) failed
    with torch's bare IndexError 'Dimension out of range', naming neither input_shape nor the
    layer; now the ValueError of every other misfit."""
    model = build(nn.Sequential(nn.Flatten(2), nn.Linear(4, 3), nn.ReLU()), 20)
    with pytest.raises(ValueError, match=r"(?s)input_shape=\(5,\) .* does not fit lifted layer 1 .*Dimension out of range"):
        lift(model, input_shape=(5,))
    u = torch.randn(2, 3, 2, 2, dtype=DT, generator=gen(21))
    torch.testing.assert_close(lift(model, input_shape=(3, 2, 2))(u), model(u), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.complex128, torch.int64, torch.bool])
def test_a_network_without_parameters_refuses_inputs_that_are_not_real_floats(dtype):
    """Inputs must be real floating tensors, as ``check_input`` documents; without parameters it
    compared no dtype, so a complex batch ran through the real activations (tanh of complex
    numbers, a complex 'output') and integers were promoted, without an error."""
    net = lift(nn.Sequential(nn.Flatten(), nn.Tanh()), input_shape=(3,))
    with pytest.raises(TypeError, match=f"u must be a real floating tensor, got dtype {dtype}"):
        net(torch.ones(2, 3, dtype=dtype))
    u = torch.randn(2, 3, dtype=DT, generator=gen(22))
    assert torch.equal(net(u), torch.tanh(u))


def test_input_shape_is_checked_up_to_the_last_layer():
    """The dry run with ``input_shape`` runs every layer: a mismatch in the last (trailing affine)
    layer is reported with its index."""
    model = build(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(3, 2)), 11)
    with pytest.raises(ValueError, match=r"input_shape=\(5,\) .* does not fit lifted layer 2"):
        lift(model, input_shape=(5,))


@pytest.mark.parametrize("hidden", [3, 1])
def test_input_shape_without_channels_is_refused_for_convolutions(hidden):
    """``nn.Conv2d`` takes a 3-d tensor as one unbatched image: with ``input_shape=(H, W)`` the
    lifted network's inputs (B, H, W) had their samples taken as channels, and its variables
    lost the batch axis (x_1 of shape (3, 5, 7) for one sample; with one channel throughout,
    a batch of one passes and a batch of two fails) without an error. The dry run refuses it,
    naming input_shape; with the channels the lifted network computes the model."""
    model = build(nn.Sequential(nn.Conv2d(1, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 1, 3, padding=1)), 16)
    with pytest.raises(ValueError, match=r"input_shape=\(5, 7\) .* does not fit lifted layer 1"):
        lift(model, input_shape=(5, 7))
    net = lift(model, input_shape=(1, 5, 7))
    u = torch.randn(2, 1, 5, 7, dtype=DT, generator=gen(17))
    assert [x.shape[0] for x in net.feasible(u)] == [2, 2, 2]
    torch.testing.assert_close(net(u), model(u), rtol=1e-14, atol=1e-15)


def test_hardtanh_subclasses_count_only_if_they_keep_their_forward():
    """``nn.Hardtanh`` subclasses become a ``Clip`` (``nn.ReLU6`` does) only if they keep
    ``Hardtanh.forward``: one that overrides it (here twice the clip) was lifted to the clip,
    and the lifted network computed another function than the model (off by 1.0) without an
    error; now refused by index and class, as an affine subclass that overrides ``forward``."""

    class Doubled(nn.Hardtanh):
        def forward(self, x):
            return 2 * super().forward(x)

    class Named(nn.Hardtanh):
        pass

    with pytest.raises(TypeError, match=r"layer 1 \(Doubled\).*overrides its forward"):
        lift(nn.Sequential(nn.Linear(3, 4), Doubled(-0.5, 0.5)))
    model = build(nn.Sequential(nn.Linear(3, 4), Named(-0.5, 0.5), nn.Linear(4, 2), nn.ReLU6()), 18)
    u = 3 * torch.randn(5, 3, dtype=DT, generator=gen(19))
    net = lift(model)
    assert [type(layer.activation) for layer in net.layers] == [Clip, Clip]
    torch.testing.assert_close(net(u), model(u), rtol=1e-14, atol=1e-15)


def _matrix(module: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of the linear part of ``module`` on samples of ``shape``, column j the image of
    the j-th basis vector minus the image of 0 (forward passes only)."""
    n = math.prod(shape)
    with torch.no_grad():
        images = module(torch.eye(n, dtype=DT).reshape(n, *shape)) - module(torch.zeros(1, *shape, dtype=DT))
    return images.reshape(n, -1).T


def _adjoint_matrix(module: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    r"""The matrix whose row i is :math:`M^* e_i` by the backward pass of :func:`adjoint_graph`
    (the adjoint the lifted solvers use): :math:`M` itself if that adjoint is exact."""
    x = torch.zeros(1, *shape, dtype=DT, requires_grad=True)
    out = adjoint_graph(module, x)
    basis = torch.eye(out[0].numel(), dtype=DT).reshape(-1, 1, *out.shape[1:])
    return torch.stack([torch.autograd.grad(adjoint_graph(module, x), x, r)[0].reshape(-1) for r in basis])


# (model, one sample's shape): each puts the layer between affine maps and activations
LINEAR_LAYERS = {
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv1d(3, 2, 2, stride=2)), (2, 6)),
    "conv1d-reflect": (lambda: nn.Sequential(nn.Conv1d(2, 2, 3, padding=1, padding_mode="reflect"), nn.Tanh()), (2, 5)),
    "convtranspose1d": (lambda: nn.Sequential(nn.ConvTranspose1d(2, 3, 3, stride=2, output_padding=1), nn.ReLU(),
                                              nn.ConvTranspose1d(3, 1, 2, bias=False)), (2, 4)),
    "avgpool1d": (lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.AvgPool1d(2, ceil_mode=True), nn.ReLU()), (1, 7)),
    "avgpool2d": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AvgPool2d(2), nn.ReLU()), (1, 4, 6)),
    "avgpool2d-padded": (lambda: nn.Sequential(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), nn.Tanh()),
                         (2, 5, 4)),
    "adaptive-avgpool2d": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                 nn.Linear(2, 3)), (1, 5, 4)),
    "zeropad2d": (lambda: nn.Sequential(nn.ZeroPad2d((1, 0, 2, 1)), nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 3, 3)),
    "constantpad2d": (lambda: nn.Sequential(nn.ReLU(), nn.ConstantPad2d(1, 0.5), nn.Conv2d(1, 1, 2), nn.Sigmoid()), (1, 2, 3)),
    "constantpad1d": (lambda: nn.Sequential(nn.ConstantPad1d((2, 1), -0.25), nn.Conv1d(1, 2, 2), nn.ReLU()), (1, 4)),
    "reflectionpad2d": (lambda: nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 3, 4)),
    "replicationpad2d": (lambda: nn.Sequential(nn.ReplicationPad2d((2, 0, 1, 1)), nn.Conv2d(1, 1, 3), nn.Tanh()), (1, 3, 3)),
    "upsample-nearest": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
                                               nn.Conv2d(2, 1, 3, padding=1)), (1, 3, 2)),
    "upsample-nearest-fractional": (lambda: nn.Sequential(nn.UpsamplingNearest2d(size=(5, 4)), nn.ReLU()), (1, 3, 3)),
    "upsample-bilinear": (lambda: nn.Sequential(nn.Upsample(scale_factor=1.5, mode="bilinear"), nn.Tanh()), (2, 2, 3)),
    "pixelshuffle": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.PixelShuffle(2),
                                           nn.Conv2d(1, 1, 3, padding=1)), (1, 2, 3)),
    "pixelunshuffle": (lambda: nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4, 2, 1), nn.LeakyReLU(0.1)), (1, 4, 2)),
}


@pytest.mark.parametrize("name", LINEAR_LAYERS)
def test_common_affine_layers_lift_with_exact_adjoints(name):
    """Conv1d, ConvTranspose1d, average pooling, zero/constant/reflection/replication padding,
    upsampling and pixel (un)shuffle were refused as 'neither affine nor a proximal activation'. The lifted network
    computes the model (float64, bit for bit), with the model's parameters; every layer map's
    linear part (:func:`linear_part`) is its matrix built from forward passes, the backward pass
    of :func:`adjoint_graph` its transpose, and :func:`is_linear` holds where the map sends 0 to 0."""
    make, shape = LINEAR_LAYERS[name]
    model, g = make().double(), gen(30)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.6, 0.6, generator=g)
    net = lift(model, input_shape=shape)
    u = torch.randn(3, *shape, dtype=DT, generator=gen(31))
    assert torch.equal(net(u), model(u))
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}
    _check_layer_maps(net, u)


def _check_layer_maps(net: LiftedNetwork, u: torch.Tensor) -> None:
    """Every layer map's linear part (:func:`linear_part`) is its matrix built from forward
    passes, the backward pass of :func:`adjoint_graph` its transpose, and :func:`is_linear` holds
    where the map sends 0 to 0."""
    for x, layer in zip(net.feasible(u), net.layers):
        m, sample = layer.maps[0], tuple(x.shape[1:])
        matrix = _matrix(m, sample)
        torch.testing.assert_close(linear_part(m, x).flatten(1), x.flatten(1) @ matrix.T, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(_adjoint_matrix(m, sample), matrix, rtol=1e-14, atol=1e-14)
        assert is_linear(m) == (not bool(m(torch.zeros_like(x)).any()))


def _pretrained(model: nn.Module, seed: int) -> nn.Module:
    """``model`` in float64 and eval mode with random parameters and batch- and instance-norm statistics (running
    means in [-0.5, 0.5], variances in [0.5, 2]), as after training."""
    model, g = model.double().eval(), gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.6, 0.6, generator=g)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model


def _batch_norm_oracle(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\gamma (x - \mu) / \sqrt{v + \epsilon} + \beta` per channel (dim 1), written out."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_mean)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.reshape(shape)) * scale.reshape(shape) + beta.reshape(shape)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 3, bias=False),
                               nn.BatchNorm2d(2, affine=False), nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(8, 3)),
         (1, 4, 4)),
        (lambda: nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.BatchNorm1d(5), nn.Linear(5, 2)), (4,)),
        (lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), nn.ReLU()), (2, 5)),
        (lambda: nn.Sequential(nn.Linear(3, 16), nn.Unflatten(1, (2, 2, 2, 2)), nn.BatchNorm3d(2), nn.ReLU(), nn.Flatten(),
                               nn.Linear(16, 2)), (3,)),
        (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.SyncBatchNorm(2), nn.Tanh(), nn.Flatten(),
                               nn.Linear(18, 3), nn.SyncBatchNorm(3, affine=False)), (1, 3, 3)),
    ],
    ids=["conv2d", "linear", "conv1d", "batchnorm3d", "syncbatchnorm"],
)
def test_eval_mode_batch_norm_lifts_to_its_affine_map(make, shape):
    """BatchNorm1d/2d/3d and SyncBatchNorm (the same map, batch statistics synchronised in training
    mode only) in eval mode (per channel, the affine map of its running statistics) were refused
    as 'neither affine nor a proximal activation'. The lifted network equals the model
    bit for bit (float64) with the model's parameters, each batch norm its closed form; its maps
    pass the matrix and adjoint checks. Put in training mode, the lifted network keeps the map of
    the running statistics (and does not update them), where the module alone would normalise by
    the batch, and leaves the model's batch norms in eval mode (they were switched with it, so the
    model the user lifted normalised by the batch from then on)."""
    model = _pretrained(make(), 40)
    net = lift(model, input_shape=shape)
    u = torch.randn(3, *shape, dtype=DT, generator=gen(41))
    expected = model(u)
    assert torch.equal(net(u), expected)
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    x = u
    for m in model:
        x, seen = m(x), x
        if m in norms:
            torch.testing.assert_close(x, _batch_norm_oracle(m, seen), rtol=1e-14, atol=1e-14)
    _check_layer_maps(net, u)
    stats = [b.clone() for b in model.buffers()]
    net.train()
    assert torch.equal(net(u), expected) and all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    assert not any(m.training for m in norms)  # the model's batch norms stay in eval mode: model(u) is still its map
    assert torch.equal(model(u), expected)


@pytest.mark.parametrize(
    "bn, reason",
    [
        (nn.BatchNorm1d(4), "in training mode"),
        (nn.BatchNorm1d(4, track_running_stats=False).eval(), "running statistics"),
        (nn.BatchNorm1d(4, track_running_stats=False), "in training mode"),
        (nn.SyncBatchNorm(4), "in training mode"),
        (nn.SyncBatchNorm(4, track_running_stats=False).eval(), "running statistics"),
        (nn.BatchNorm3d(4), "in training mode"),
    ],
)
def test_batch_norm_that_normalises_by_the_batch_is_refused_naming_the_layer(bn, reason):
    """A batch norm in training mode, or one without running statistics (which normalises by the
    batch in eval mode too), is no affine map of each sample: refused by index, class and reason."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.ReLU(), bn), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=rf"cannot lift layer 1\.1 \({type(bn).__name__}\): .*{reason}"):
        lift(model)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.InstanceNorm1d(3, track_running_stats=True), nn.ReLU()), (2, 5)),
        (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.InstanceNorm2d(2, affine=True, track_running_stats=True),
                               nn.Tanh(), nn.Conv2d(2, 1, 2)), (1, 4, 3)),
        (lambda: nn.Sequential(nn.InstanceNorm3d(2, affine=True, track_running_stats=True), nn.ReLU()), (2, 2, 3, 2)),
    ],
    ids=["instancenorm1d", "instancenorm2d", "instancenorm3d"],
)
def test_eval_mode_instance_norm_with_running_statistics_lifts_to_its_affine_map(make, shape):
    """InstanceNorm1d/2d/3d with ``track_running_stats=True`` in eval mode normalise by their
    running statistics, per channel, an affine map as a batch norm's; they were refused as
    'neither affine nor a proximal activation'. The lifted network equals the model bit for bit
    (float64), each instance norm its closed form, and the maps pass the matrix and adjoint
    checks; a sample shape without channels (which the model takes as one unbatched sample) is
    refused naming input_shape and the layer."""
    model = _pretrained(make(), 120)
    net = lift(model, input_shape=shape)
    u = torch.randn(3, *shape, dtype=DT, generator=gen(121))
    assert torch.equal(net(u), model(u))
    norm = next(m for m in model if isinstance(m, nn.modules.instancenorm._InstanceNorm))
    torch.testing.assert_close(norm(u if model[0] is norm else model[0](u)),
                               _batch_norm_oracle(norm, u if model[0] is norm else model[0](u)), rtol=1e-14, atol=1e-14)
    _check_layer_maps(net, u)
    with pytest.raises(ValueError, match=r"(?s)input_shape=.* does not fit lifted layer 1 .*one sample without a batch axis"):
        lift(nn.Sequential(nn.InstanceNorm1d(3, track_running_stats=True).eval(), nn.ReLU()), input_shape=(5,))


@pytest.mark.parametrize("norm, reason", [
    (nn.InstanceNorm2d(2), "in training mode, where it normalises each sample by its own statistics"),
    (nn.InstanceNorm2d(2, track_running_stats=True), "in training mode, where it normalises each sample"),
    (nn.InstanceNorm1d(2, affine=True).eval(), r"running statistics \(track_running_stats=True\): without them it "
                                               "normalises each sample by its own statistics"),
])
def test_instance_norm_that_normalises_by_the_sample_is_refused_naming_the_layer(norm, reason):
    """An instance norm in training mode or without running statistics normalises each sample by
    its own statistics, no affine map: refused by path, class and that reason."""
    with pytest.raises(TypeError, match=rf"cannot lift layer 1 \({type(norm).__name__}\): .*{reason}"):
        lift(nn.Sequential(nn.Conv2d(1, 2, 1), norm, nn.ReLU()))


def test_instance_norm_whose_statistics_are_no_longer_tracked_is_refused_naming_the_layer():
    """An instance norm whose ``track_running_stats`` was set to False after construction keeps
    its running statistics, but its eval-mode forward then normalises each sample by its own
    (``F.instance_norm`` with ``use_input_stats``): lift took it as the running statistics' affine
    map and the lifted network differed from the model (by 0.7 here) without a word. It is refused
    by path, class and reason, as one without running statistics; a batch norm in eval mode still
    uses its running statistics then, and still lifts to the model bit for bit (the oracle: the
    models' own forward)."""
    for cls, shape in ((nn.InstanceNorm2d, (2, 4, 5)), (nn.BatchNorm2d, (2, 4, 5))):
        model = _pretrained(nn.Sequential(nn.Conv2d(2, 2, 1), cls(2, affine=True, track_running_stats=True),
                                          nn.ReLU()), 120)
        model[1].track_running_stats = False
        if cls is nn.BatchNorm2d:
            u = torch.randn(3, *shape, dtype=DT, generator=gen(121))
            assert torch.equal(lift(model, input_shape=shape)(u), model(u))
            continue
        with pytest.raises(TypeError, match=r"cannot lift layer 1 \(InstanceNorm2d\): bn must keep running statistics "
                                            r"\(track_running_stats=True\): without them it normalises each sample"):
            lift(model, input_shape=shape)


def test_batch_norm_input_shape_without_channels_is_refused_naming_it():
    """BatchNorm2d refuses 3-d inputs with a ValueError of its own: the dry run names input_shape
    and the layer, as for the other maps."""
    model = nn.Sequential(nn.BatchNorm2d(1).eval(), nn.ReLU())
    with pytest.raises(ValueError, match=r"(?s)input_shape=\(5, 7\) .* does not fit lifted layer 1 .*4D input"):
        lift(model, input_shape=(5, 7))
    assert lift(model, input_shape=(1, 5, 7)).input_shape == (1, 5, 7)


@pytest.mark.parametrize(
    "drop, conv, shape",
    [(nn.Dropout(0.3), nn.Conv1d, (2, 5)), (nn.Dropout1d(0.5), nn.Conv1d, (2, 5)), (nn.Dropout2d(0.2), nn.Conv2d, (2, 3, 4)),
     (nn.Dropout3d(0.2), nn.Conv2d, (2, 3, 4)), (nn.AlphaDropout(0.3), nn.Conv1d, (2, 5)),
     (nn.FeatureAlphaDropout(0.3), nn.Conv2d, (2, 3, 4))],
    ids=["Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"],
)
def test_eval_mode_dropout_lifts_to_the_identity_and_training_mode_is_refused(drop, conv, shape):
    """Dropout in eval mode is the identity (as in pre-trained classifiers); it was refused as
    'neither affine nor a proximal activation' (Dropout3d, AlphaDropout and FeatureAlphaDropout
    until later). It is dropped from the maps: the lifted network
    equals the model, also once put in training mode (where the module would zero random
    entries). In training mode it is refused by index, class and reason."""
    model = _pretrained(nn.Sequential(conv(2, 3, 3), drop, nn.ReLU(), nn.Dropout(0.5), conv(3, 2, 1)), 50)
    net = lift(model, input_shape=shape)
    u = torch.randn(4, *shape, dtype=DT, generator=gen(51))
    expected = model(u)
    assert torch.equal(net(u), expected) and net.layer(1).maps[0] is model[0] and net.layer(2).maps[0] is model[4]
    assert torch.equal(net.train()(u), expected)
    with pytest.raises(TypeError, match=rf"cannot lift layer 1 \({type(drop).__name__}\): .*training mode"):
        lift(model.train())


def test_lifting_a_lifted_network_checks_a_given_input_shape():
    """``lift(net, input_shape=...)`` of a lifted network ignored the shape without a word; now a
    shape other than the network's is refused, its own shape (any sequence) accepted."""
    mlp = MLP([3, 4, 2], ReLU())
    assert lift(mlp, input_shape=[3]) is mlp
    with pytest.raises(ValueError, match=r"input_shape=\(5,\) differs from the lifted network's input_shape \(3,\)"):
        lift(mlp, input_shape=(5,))


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5), nn.Softmax(dim=-1)), (3,)),
        (lambda: nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Softmax(dim=-3)), (1, 2, 4)),
        (lambda: nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 1), nn.Softmax2d()), (1, 2, 4)),
    ],
    ids=["dim-1", "dim-3", "softmax2d"],
)
def test_softmax_over_a_negative_dim_that_is_dim_1_lifts_to_the_softmax(make, shape):
    """``nn.Softmax(dim=-1)`` after a linear layer, ``dim=-3`` or ``nn.Softmax2d`` on images take
    the softmax over dim 1, the class dimension: they were refused ('supported over dim=1
    only'). The lifted network (softmax last layer) equals the model bit for bit in float64."""
    model = _pretrained(make(), 60)
    net = lift(model, input_shape=shape)
    u = torch.randn(3, *shape, dtype=DT, generator=gen(61))
    assert torch.equal(net(u), model(u)) and isinstance(net.layer(net.depth).activation, Softmax)


@pytest.mark.parametrize(
    "model, shape, reason",
    [
        (nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=-1)), None, "give input_shape"),
        (nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Softmax(dim=-1)), (1, 2, 4), r"dim=-1 of a 4-d input"),
        (nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=-3)), (3,), r"dim=-3 of a 2-d input"),
        (nn.Sequential(nn.Conv1d(1, 3, 2), nn.Softmax2d()), (1, 4), r"dim=-3 of a 3-d input"),  # the batch axis
    ],
)
def test_softmax_over_another_dim_is_refused_naming_the_layer(model, shape, reason):
    """A softmax over a negative dim is the class softmax only for some input dimensions: without
    ``input_shape``, or where it is not dim 1, it is refused by index and class."""
    cls = type(model[1]).__name__
    with pytest.raises(TypeError, match=rf"cannot lift layer 1 \({cls}\): .*{reason}"):
        lift(model, input_shape=shape)


def _hooked(where: str) -> tuple[nn.Module, str]:
    """A model with a forward hook or pre-hook that changes the map of one module, and that
    module's path and class."""
    inner = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    model = nn.Sequential(inner, nn.Identity(), nn.Linear(4, 2), nn.Tanh()).double()
    if where == "root":
        model.register_forward_hook(lambda m, i, o: 2 * o)
        return model, r"\(root\) \(Sequential\)"
    if where == "container":
        inner.register_forward_pre_hook(lambda m, i: (i[0] + 1,))
        return model, r"0 \(Sequential\)"
    if where == "activation":
        inner[1].register_forward_hook(lambda m, i, o: o + 1)
        return model, r"0\.1 \(ReLU\)"
    if where == "identity":
        model[1].register_forward_hook(lambda m, i, o: 3 * o)
        return model, r"1 \(Identity\)"
    model[2].register_forward_hook(lambda m, i, o: 3 * o)  # affine, but no longer its weight's map
    return model, r"2 \(Linear\)"


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("where", ["root", "container", "activation", "identity", "affine"])
def test_modules_with_forward_hooks_are_refused_naming_them(where):
    """A forward hook on a container, an activation or an nn.Identity was dropped without a word
    (the lifted network differed from the model by up to 5), one on an affine module made its
    map another than its weight's. Such modules are refused by path and class; weight and
    spectral normalisation's and pruning's pre-hooks on affine modules are kept (the lifted
    network equals the model)."""
    model, name = _hooked(where)
    u = torch.randn(3, 3, dtype=DT, generator=gen(70))
    with pytest.raises(TypeError, match=rf"cannot lift layer {name}: it has forward hooks"):
        lift(model, input_shape=(3,))
    pruned = nn.Linear(4, 4)
    nn.utils.prune.l1_unstructured(pruned, "weight", 0.5)
    normed = nn.Sequential(nn.utils.weight_norm(nn.Linear(3, 4)), nn.ReLU(), pruned, nn.Tanh(),
                           nn.utils.spectral_norm(nn.Linear(4, 2)))
    normed = _pretrained(normed, 71)
    assert torch.equal(lift(normed, input_shape=(3,))(u), normed(u))


@pytest.mark.parametrize("activation", [nn.LeakyReLU(1e-40), nn.Softshrink(1e39)], ids=["slope", "threshold"])
def test_an_activation_that_refuses_the_dtype_is_not_blamed_on_input_shape(activation):
    """A LeakyReLU whose slope is subnormal in float32 (or a Softshrink whose threshold overflows
    it) refuses float32 tensors; lift's dry run of ``input_shape`` said 'input_shape=(3,) ... does
    not fit lifted layer 1', a shape that fits. The activation's own error comes out. Oracle: the
    error of the liftinv activation called on a float32 tensor, as the lifted network's forward
    pass without input_shape raises it."""
    model = nn.Sequential(nn.Linear(3, 3), activation)
    with pytest.raises(ValueError) as own:
        as_activation(activation)(torch.zeros(2, 3))
    with pytest.raises(ValueError) as info:
        lift(model, input_shape=(3,))
    assert str(info.value) == str(own.value) and "input_shape" not in str(info.value)
    with pytest.raises(ValueError) as forward:
        lift(model)(torch.zeros(2, 3))
    assert str(forward.value) == str(own.value)


@pytest.mark.parametrize("register", ["register_module_forward_hook", "register_module_forward_pre_hook",
                                      "register_module_full_backward_hook"])
def test_global_module_hooks_are_refused(register):
    """torch's global module hooks run at every module call: a global forward hook doubling
    every ReLU's output changed the model's map (the lifted network, which applies liftinv's
    ReLU, differed from it without a word). lift refuses while any is held; once removed, the
    lifted network equals the model."""
    hooks = {"register_module_forward_hook": lambda m, i, o: 2 * o if isinstance(m, nn.ReLU) else None,
             "register_module_forward_pre_hook": lambda m, i: (2 * i[0],) if isinstance(m, nn.ReLU) else None,
             "register_module_full_backward_hook": lambda m, grad_in, grad_out: None}
    model = _pretrained(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), 75)
    u = torch.randn(5, 3, dtype=DT, generator=gen(76))
    plain = model(u)
    handle = getattr(torch.nn.modules.module, register)(hooks[register])
    try:
        if register != "register_module_full_backward_hook":
            assert not torch.allclose(model(u), plain)
        with pytest.raises(TypeError, match=r"cannot lift the model while torch holds global module hooks"):
            lift(model, input_shape=(3,))
    finally:
        handle.remove()
    assert torch.equal(lift(model, input_shape=(3,))(u), plain)


def test_a_network_whose_only_tensors_are_buffers_computes_in_their_dtype():
    """A batch norm without affine parameters holds buffers only: the dry run of ``input_shape``
    used the default dtype (float32) against the float64 statistics and refused a fitting shape
    as 'does not fit', and the lifted network took float32 inputs, failing inside
    ``F.batch_norm`` with 'mixed dtype'. Now the buffers' dtype is the network's: the lifted
    network equals the model bit for bit and refuses another dtype naming it."""
    model = _pretrained(nn.Sequential(nn.BatchNorm1d(4, affine=False), nn.ReLU(), nn.AvgPool1d(2)), 80)
    net = lift(model, input_shape=(4,))
    u = torch.randn(3, 4, dtype=DT, generator=gen(81))
    assert torch.equal(net(u), model(u))
    with pytest.raises(TypeError, match=r"u has dtype torch.float32 on cpu, the network uses torch.float64"):
        net(u.float())


def test_modules_with_backward_hooks_are_refused_naming_them():
    """liftinv takes the adjoints of generic maps by autograd: a full backward hook doubling the
    input gradient of a strided convolution made the adjoint of :func:`adjoint_graph` twice the
    transpose of the map's matrix (from forward passes), without a word. Such a module is
    refused by path and class; without the hook the maps pass the matrix and adjoint checks."""
    model = _pretrained(nn.Sequential(nn.Conv1d(1, 2, 3, stride=2), nn.ReLU(), nn.Conv1d(2, 1, 2)), 90)
    conv = model[0]
    handle = conv.register_full_backward_hook(lambda m, grad_in, grad_out: (2 * grad_in[0],))
    torch.testing.assert_close(_adjoint_matrix(conv, (1, 7)), 2 * _matrix(conv, (1, 7)), rtol=1e-14, atol=1e-14)
    with pytest.raises(TypeError, match=r"cannot lift layer 0 \(Conv1d\): it has backward hooks"):
        lift(model, input_shape=(1, 7))
    handle.remove()
    _check_layer_maps(lift(model, input_shape=(1, 7)), torch.randn(2, 1, 7, dtype=DT, generator=gen(91)))


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.spectral_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("normalise", [nn.utils.spectral_norm, nn.utils.parametrizations.spectral_norm])
def test_spectral_norm_in_training_mode_is_refused_naming_the_layer(normalise):
    """Spectral normalisation in training mode takes a power-iteration step at every forward
    pass: lift accepted it, its dry run moved the model's vectors, and the lifted network changed
    its map with every call (0.02 between two calls on the same input). It is refused by path and
    class, the model untouched; in eval mode the lifted network is the model, a fixed map."""
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Sequential(normalise(nn.Linear(4, 9)), nn.ReLU())).double()
    init_parameters_(model, gen(100))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match=r"cannot lift layer 2\.0 \(\w*Linear\): it has spectral normalisation in "
                                        r"training mode.*call \.eval\(\)"):
        lift(model, input_shape=(6,))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    net, u = lift(model.eval(), input_shape=(6,)), torch.randn(3, 6, dtype=DT, generator=gen(101))
    assert torch.equal(net(u), model(u)) and torch.equal(net(u), model(u))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("model", [nn.Identity(), nn.Sequential(), nn.Sequential(nn.Identity(), nn.Sequential()),
                                   nn.Sequential(nn.Dropout(0.3), nn.Identity()).eval()])
@pytest.mark.parametrize("shape", [None, (2, 3)])
def test_the_identity_lifts_to_one_identity_layer(model, shape):
    """The identity is a network of no layer: nn.Identity (which lift's docstring lists as an
    affine module, and takes a single such module), an empty nn.Sequential or eval-mode dropouts
    were refused with 'module has no layer to lift'. They lift to the one layer
    :math:`x_1 = x_0` (identity map and activation), whose output is the input bit for bit, as
    ``model(u)``."""
    net = lift(model, input_shape=shape)
    u = torch.randn(4, 2, 3, dtype=DT, generator=gen(110))
    assert net.depth == 1 and net.input_shape == shape
    assert torch.equal(net(u), model(u)) and torch.equal(net(u), u)


def test_a_lazy_module_not_yet_initialised_is_refused_as_such():
    """An ``nn.LazyLinear``/``nn.LazyConv1d`` before its first forward pass was refused as having
    'forward hooks or forward pre-hooks ... remove them first (the handle's .remove())': removing
    its shape-inference hook would leave it without parameters. Now the refusal names the layer
    and says to run the model once; after that it is a plain module and lifts to the model's
    function, bit for bit."""
    model = nn.Sequential(nn.LazyConv1d(2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).double()
    with pytest.raises(TypeError, match=r"cannot lift layer 0 \(LazyConv1d\): it is a lazy module whose parameters "
                                        r"are not initialised yet .* run the model once"):
        lift(model, input_shape=(1, 6))
    u = torch.randn(3, 1, 6, dtype=DT, generator=gen(130))
    expected = model(u)
    assert torch.equal(lift(model, input_shape=(1, 6))(u), expected)


class _ConvNormActivation(nn.Sequential):
    """A block as torchvision's ``Conv2dNormActivation``: an ``nn.Sequential`` subclass that only
    builds its modules."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class _Residual(nn.Sequential):
    def forward(self, x):
        return x + super().forward(x)


class _Reversed(nn.Sequential):
    def __iter__(self):
        return reversed(list(self._modules.values()))


def test_sequential_subclasses_that_keep_its_forward_are_flattened():
    """An nn.Sequential subclass that only builds its modules (torchvision's
    Conv2dNormActivation) was refused as 'neither affine nor a proximal activation'. It is
    flattened as an nn.Sequential: the lifted network equals model(u) bit for bit with the
    model's parameters. A subclass whose forward or iteration differs is still refused by path
    and class."""
    model = _pretrained(nn.Sequential(_ConvNormActivation(1, 2), _ConvNormActivation(2, 2), nn.Conv2d(2, 1, 1)), 140)
    net = lift(model, input_shape=(1, 4, 5))
    u = torch.randn(3, 1, 4, 5, dtype=DT, generator=gen(141))
    assert net.depth == 3 and torch.equal(net(u), model(u))
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}
    assert torch.equal(lift(model[0], input_shape=(1, 4, 5))(u), model[0](u))
    for cls in (_Residual, _Reversed):
        with pytest.raises(TypeError, match=rf"cannot lift layer 1 \({cls.__name__}\): it is neither affine"):
            lift(nn.Sequential(nn.Linear(2, 2), cls(nn.Linear(2, 2), nn.ReLU())))


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.spectral_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("normalise", [nn.utils.spectral_norm, nn.utils.parametrizations.spectral_norm])
def test_a_lifted_spectral_norm_stays_in_eval_mode(normalise):
    """lift takes spectral normalisation in eval mode only, but the lifted network shared the
    module itself, so its .train() (as any training loop calls) switched the model's spectral
    norm back to training mode: both then took a power-iteration step at every call (two calls
    of the lifted network differed by 0.003, and model(u) in eval mode changed). The lifted map
    keeps the module in eval mode (EvalSpectralNorm); after the model's own .train() it refuses
    to run, naming the class, instead of computing another map at each call. Oracle: the model
    in eval mode, bit for bit, and its state untouched."""
    model = nn.Sequential(normalise(nn.Linear(4, 5)), nn.Tanh(), nn.Linear(5, 3)).double()
    init_parameters_(model, gen(110))
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    net, u = lift(model, input_shape=(4,)), torch.randn(2, 4, dtype=DT, generator=gen(111))
    net.train()
    assert not model[0].training and all(not m.training for m in model[0].modules())
    first = net(u)
    assert torch.equal(first, net(u)) and torch.equal(first, model(u))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    model.train()
    with pytest.raises(RuntimeError, match=r"spectral normalisation of \w*Linear was switched to training mode.*\.eval"):
        net(u)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    model.eval()
    assert torch.equal(net(u), first)


@pytest.mark.parametrize("model, shape, depth", [
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Sigmoid(), nn.Unflatten(1, (3, 2, 2))), (1, 4, 4), 1),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.PixelShuffle(2), nn.Flatten()), (1, 4, 4), 1),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Unflatten(1, (3, 4)), nn.Linear(4, 2)), (1, 4, 4), 2),
    (lambda: nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Softmax(dim=1), nn.Flatten()), (1, 4, 4), 2),
], ids=["unflatten", "pixelshuffle-flatten", "then-linear", "softmax"])
def test_a_trailing_rearrangement_joins_the_last_layer(model, shape, depth):
    """A network ending in a reshape (Unflatten, Flatten, PixelShuffle) after its last activation
    got a last layer with the identity activation for it, whose penalty relaxes the network: the
    lifted problem of Flatten-Linear-Sigmoid-Unflatten had two layers, and inverting it gave
    another input than inverting the same network without the Unflatten. An elementwise activation
    commutes with a rearrangement, P sigma(z) = sigma(P z), so the rearrangement joins the last
    layer's map; a chain with another affine map, or after a softmax (over dim 1, which a flatten
    moves), keeps its identity layer. Oracle: the model's forward, bit for bit."""
    torch.manual_seed(0)
    model = model().double()
    net = lift(model, input_shape=shape)
    u = torch.randn(3, *shape, dtype=DT, generator=gen(120))
    assert net.depth == depth and torch.equal(net(u), model(u))
    if depth == 1:
        assert not isinstance(net.layer(1).activation, Identity)


def test_a_trailing_rearrangement_stays_after_a_custom_non_elementwise_activation():
    """lift joined a trailing Flatten to the last layer's map unless that layer's activation was
    a Softmax, though only an elementwise activation commutes with a rearrangement: after a
    liftinv activation with ``elementwise = False`` that is not a Softmax (here the group
    soft-threshold over the channels, dim 1), the lifted network applied it to the flattened
    pre-activation, all of a sample's entries as one group, and differed from the model by 0.38
    without an error. Oracle: the model's forward, bit for bit, with the Flatten in an identity
    layer of its own."""
    from liftinv.activations import Activation

    class GroupShrink(Activation):
        elementwise = False

        def prox(self, v, gamma=1.0):
            return v * (1 - 0.5 * gamma / v.norm(dim=1, keepdim=True).clamp_min(1e-300)).clamp_min(0)

    model = build(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), GroupShrink(), nn.Flatten()), 121)
    net = lift(model, input_shape=(1, 4, 4))
    u = torch.randn(2, 1, 4, 4, dtype=DT, generator=gen(122))
    assert net.depth == 2 and isinstance(net.layer(1).activation, GroupShrink)
    assert torch.equal(net(u), model(u))


def _patched(where: str) -> tuple[nn.Module, str]:
    """A model one of whose modules had its forward replaced on the instance, and that module's
    path and class."""
    inner = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    model = _pretrained(nn.Sequential(inner, nn.BatchNorm1d(4), nn.Linear(4, 2), nn.Tanh()), 110).eval()
    module, name = {"container": (inner, r"0 \(Sequential\)"), "activation": (inner[1], r"0\.1 \(ReLU\)"),
                    "batch norm": (model[1], r"1 \(BatchNorm1d\)"), "affine": (model[2], r"2 \(Linear\)")}[where]
    own = type(module).forward
    module.forward = lambda x: own(module, x) + 1  # as monkey-patching or accelerate's hooks do
    return model, name


@pytest.mark.parametrize("rearrange, name, message", [
    (nn.Flatten(0), r"2 \(Flatten\)", r"flattens the batch axis \(start_dim=0, end_dim=-1\)"),
    (nn.Unflatten(0, (1, -1)), r"2 \(Unflatten\)", r"splits the batch axis \(dim=0, unflattened_size=\(1, -1\)\)"),
])
def test_a_flatten_or_unflatten_of_the_batch_axis_is_refused_without_input_shape(rearrange, name, message):
    """nn.Flatten(0) and nn.Unflatten(0, ...) merge or split the batch axis: only the dry run of
    input_shape caught them, so without it lift took them silently, and the lifted network mixed
    the samples (a batch of 2 came out with shape (8,)). Now TypeError naming the layer; one that
    keeps the batch axis (Flatten(0, 0), Unflatten(0, (-1, 1))) is lifted as before. Oracle: the
    model's own output shape for a batch of 2, and the dry run's refusal of the same model."""
    u = torch.randn(2, 3, dtype=DT, generator=gen(114))
    model = _pretrained(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), rearrange), 115)
    assert model(u).shape[0] != 2  # the oracle: the batch axis is gone
    with pytest.raises(TypeError, match=rf"^cannot lift layer {name}: it {message}; every layer must keep the batch axis"):
        lift(model)
    with pytest.raises((TypeError, ValueError), match="batch axis"):
        lift(model, input_shape=(3,))
    for keep in (nn.Flatten(0, 0), nn.Unflatten(0, (-1, 1))):
        model = _pretrained(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), keep), 115)
        assert torch.equal(lift(model)(u), model(u)) and model(u).shape[0] == 2


def test_a_torch_compiled_module_is_refused_pointing_to_the_module_it_compiles():
    """torch.compile returns an OptimizedModule whose forward is set on the instance: lift refused
    it, at the root or nested, with 'restore it first (del module.forward)', which breaks the
    compiled module, and as_activation the same way. They now say it is a torch.compile'd module
    and to pass module._orig_mod, whose lifted network is the model bit for bit (the oracle:
    the compiled model's own module, run eagerly)."""
    from functools import partial

    compile_ = partial(torch.compile, backend="eager")  # the same wrapper, without loading inductor
    model = _pretrained(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), 112).eval()
    u = torch.randn(3, 3, dtype=DT, generator=gen(113))
    for wrapped, name in ((compile_(model), r"\(root\)"), (nn.Sequential(compile_(model[0]), model[1]), "0")):
        with pytest.raises(TypeError, match=rf"cannot lift layer {name} \(OptimizedModule\): it is a torch.compile'd "
                                            r"module.* \(module._orig_mod\)$"):
            lift(wrapped)
    with pytest.raises(TypeError, match=r"it is a torch.compile'd module; pass the module it compiles \(module._orig_mod\)"):
        as_activation(compile_(nn.ReLU()))
    assert torch.equal(lift(compile_(model)._orig_mod, input_shape=(3,))(u), model(u))


@pytest.mark.parametrize("where", ["container", "activation", "batch norm", "affine"])
def test_modules_whose_forward_was_replaced_on_the_instance_are_refused_naming_them(where):
    """A forward replaced on the instance (``module.forward = ...``) was ignored: lift reads an
    activation's, a container's or a batch norm's map off its class, so the lifted network
    differed from the model (by 1 here), without a word. Such a module is refused by path and
    class, and as_activation refuses such an activation; once restored the lifted network is the
    model bit for bit (the oracle: the model's own forward)."""
    model, name = _patched(where)
    u = torch.randn(3, 3, dtype=DT, generator=gen(111))
    with pytest.raises(TypeError, match=rf"cannot lift layer {name}: its forward was replaced on the instance"):
        lift(model, input_shape=(3,))
    relu = nn.ReLU()
    relu.forward = lambda x: torch.relu(x) + 1
    with pytest.raises(TypeError, match=r"has its forward replaced on the instance"):
        as_activation(relu)
    for m in model.modules():
        m.__dict__.pop("forward", None)
    assert torch.equal(lift(model, input_shape=(3,))(u), model(u))
