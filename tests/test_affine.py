"""The affine maps' adjoints (dot-product tests), the tensor-free graphs built from them, and
the linear-part helpers."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

import liftinv.affine as affine
from liftinv.affine import (
    Chain,
    ConvAdjoint,
    GradientStep,
    NormalStep,
    ScaledConv,
    Transposed,
    Unbiased,
    _NormalStepFunction,
    adjoint_graph,
    conv_adjoint,
    is_linear,
    linear_part,
)
from operators import OPERATORS

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _conv(stride: int = 1, groups: int = 1, c_in: int = 2, bias: bool = False) -> nn.Conv2d:
    layer = nn.Conv2d(c_in, 4, 3, stride=stride, padding=1, groups=groups, bias=bias).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, dtype=DT, generator=gen(0)))
    return layer


def _dense(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, dtype=DT, generator=gen(0)))
    return layer


def _maps() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    physics, shape = OPERATORS["radon-circle"](DT, "cpu")
    return {
        "scaled_conv": (ScaledConv(_conv(), -0.7), (3, 2, 8, 9)),
        "scaled_conv_stride2": (ScaledConv(_conv(stride=2), 1.5), (3, 2, 9, 8)),
        "scaled_conv_groups": (ScaledConv(_conv(groups=2), 2.0), (3, 2, 8, 8)),
        "scaled_conv_one_channel": (ScaledConv(_conv(c_in=1), 0.6), (3, 1, 8, 9)),
        "conv_adjoint": (ConvAdjoint(_conv(), -0.3), (3, 4, 8, 9)),
        "conv_adjoint_one_channel": (ConvAdjoint(_conv(c_in=1), 1.3), (3, 4, 8, 9)),
        "normal_step": (NormalStep(_conv(), 0.2), (3, 4, 8, 9)),
        "gradient_step": (GradientStep(physics, 0.01), tuple(shape)),
        "unbiased_conv": (Unbiased(_conv(bias=True)), (3, 2, 8, 9)),
        "transposed_conv": (Transposed(_conv(bias=True)), (3, 4, 8, 9)),
        "transposed_dense": (Transposed(_dense(3, 5)), (3, 5)),
        "chain_conv": (Chain(Transposed(_conv(bias=True)), Unbiased(_conv(bias=True))), (3, 4, 8, 9)),
        "chain_dense": (Chain(Transposed(_dense(3, 5)), Unbiased(_dense(3, 4))), (3, 5)),
    }


@pytest.mark.parametrize("name", sorted(_maps()))
def test_adjoint_passes_the_dot_product_test(name):
    """<M x, r> = <x, M^* r> for the ``apply_adjoint`` method of each linear map."""
    module, shape = _maps()[name]
    x = torch.randn(shape, dtype=DT, generator=gen(1))
    with torch.no_grad():
        mx = module(x)
        r = torch.randn(mx.shape, dtype=DT, generator=gen(2))
        lhs, rhs = (mx * r).sum(), (x * module.apply_adjoint(r, x.shape)).sum()
    assert abs(lhs - rhs) <= 1e-12 * mx.norm() * r.norm() + 1e-12 * x.norm() * module.apply_adjoint(r, x.shape).norm()


def test_normal_step_gradients_match_its_composition_and_finite_differences():
    """NormalStep's written-out vector-Jacobian products (input and kernel) equal autograd's
    through ``u - tau L(L^* u)`` composed of torch convolutions, pass gradcheck (finite
    differences) and gradgradcheck (the parameter Lipschitz estimates differentiate them), and
    the forward value is the composition's."""
    step = NormalStep(_conv(), 0.2)
    weight = step.adjoint.conv.weight
    u = torch.randn(3, 4, 8, 9, dtype=DT, generator=gen(5), requires_grad=True)
    r = torch.randn(3, 4, 8, 9, dtype=DT, generator=gen(6))
    composed = u - 0.2 * F.conv2d(F.conv_transpose2d(u, weight, padding=1), weight, padding=1)
    out = step(u)
    torch.testing.assert_close(out, composed, rtol=1e-13, atol=1e-13)
    for mine, ref in zip(torch.autograd.grad(out, [u, weight], r), torch.autograd.grad(composed, [u, weight], r)):
        torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-12)
    kernel = weight.detach().clone().requires_grad_()
    small = u.detach()[:1, :, :5, :6].clone().requires_grad_()

    def normal_step(x, w):
        return _NormalStepFunction.apply(x, w, 0.2, (1, 1))

    assert torch.autograd.gradcheck(normal_step, (small, kernel))
    assert torch.autograd.gradgradcheck(normal_step, (small, kernel))


@pytest.mark.parametrize("name", sorted(_maps()))
def test_adjoint_graph_gives_the_autograd_vector_jacobian_product(name):
    """The value is M x, and the VJP through the graph equals autograd's through the module."""
    module, shape = _maps()[name]
    x = torch.randn(shape, dtype=DT, generator=gen(3), requires_grad=True)
    out = adjoint_graph(module, x)
    expected = module(x)
    r = torch.randn(out.shape, dtype=DT, generator=gen(4))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(out, x, r)[0], torch.autograd.grad(expected, x, r)[0], rtol=1e-12, atol=1e-12)


def test_adjoint_graph_distrusts_the_adjoint_of_a_subclass_that_overrides_forward():
    """A subclass of :class:`ScaledConv` (or an instance) whose ``forward`` doubles the map kept
    ``ScaledConv.apply_adjoint``, which adjoint_graph used: the input's vector-Jacobian product
    was half autograd's. Now such a module gets autograd's graph. Oracle: autograd through the
    module (float64)."""

    class Doubled(ScaledConv):
        def forward(self, x):
            return 2 * super().forward(x)

    conv = _conv()
    patched = ScaledConv(conv, 0.5)
    patched.forward = lambda x: 2 * ScaledConv.forward(patched, x)
    x = torch.randn(2, 2, 5, 5, dtype=DT, generator=gen(8), requires_grad=True)
    r = torch.randn(2, 4, 5, 5, dtype=DT, generator=gen(9))
    for module in (Doubled(conv, 0.5), patched):
        out, expected = adjoint_graph(module, x), module(x)
        assert type(out.grad_fn).__name__ != "_ByAdjointBackward"
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        torch.testing.assert_close(torch.autograd.grad(out, x, r)[0], torch.autograd.grad(expected, x, r)[0],
                                   rtol=1e-12, atol=1e-12)
    assert type(adjoint_graph(ScaledConv(conv, 0.5), x).grad_fn).__name__ == "_ByAdjointBackward"
    assert type(adjoint_graph(Chain(conv, Unbiased(_conv(c_in=4))), x).grad_fn).__name__ == "_ByAdjointBackward"


@pytest.mark.parametrize(
    "conv, uses_adjoint",
    [(nn.Conv2d(2, 3, 3, padding=1), True), (nn.Conv2d(1, 4, 5, padding=2, bias=False), True),
     (nn.Conv2d(2, 3, 3, padding=0), True), (nn.Conv2d(2, 3, 3, stride=2, padding=1), False),
     (nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), False), (nn.Conv2d(2, 4, 3, padding=1, groups=2), False)],
)
def test_adjoint_graph_of_a_torch_convolution(conv, uses_adjoint):
    """A plain stride-1 ``nn.Conv2d`` (bias or not) gets the graph by :func:`conv_adjoint`: the
    value and the input's vector-Jacobian product equal autograd's through the module; strided,
    circularly padded or grouped convolutions keep autograd's graph."""
    conv = conv.double()
    x = torch.randn(3, conv.in_channels, 8, 9, dtype=DT, generator=gen(8), requires_grad=True)
    out = adjoint_graph(conv, x)
    expected = conv(x)
    assert (type(out.grad_fn).__name__ == "_ByAdjointBackward") == uses_adjoint
    r = torch.randn(out.shape, dtype=DT, generator=gen(9))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(out, x, r)[0], torch.autograd.grad(expected, x, r)[0], rtol=1e-12, atol=1e-12)


def test_adjoint_graph_keeps_no_tensor():
    """The graph of A^*A x saves nothing (autograd's keeps the padded and blurred images), and a
    module without ``apply_adjoint`` or an input without grad is applied as it is."""
    physics, shape = OPERATORS["blur-zero-gaussian"](DT, "cpu")
    step = GradientStep(physics, 0.5)
    x = torch.randn(shape, dtype=DT, generator=gen(5), requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        adjoint_graph(step, x)
    assert saved == []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        step(x)
    assert len(saved) > 0
    linear = nn.Linear(3, 2).double()
    z = torch.randn(4, 3, dtype=DT, generator=gen(6))
    torch.testing.assert_close(adjoint_graph(linear, z), linear(z), rtol=0, atol=0)
    assert adjoint_graph(step, x.detach()).grad_fn is None


def test_linear_part_and_is_linear():
    """is_linear for bias-free maps and chains of them; linear_part removes a bias."""
    biased, free = nn.Linear(3, 2).double(), nn.Linear(3, 2, bias=False).double()
    assert not is_linear(biased) and is_linear(free)
    assert is_linear(nn.Sequential(nn.Flatten(), free)) and not is_linear(nn.Sequential(nn.Flatten(), biased))
    assert all(is_linear(m) for m, _ in _maps().values())
    assert not is_linear(Chain(_conv(bias=True), Unbiased(_conv(c_in=4)))) and not is_linear(Chain(free, _dense(2, 3)))
    x = torch.randn(4, 3, dtype=DT, generator=gen(7))
    with torch.no_grad():
        torch.testing.assert_close(linear_part(biased, x), x @ biased.weight.T, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(linear_part(free, x), free(x), rtol=0, atol=0)


def test_is_linear_distrusts_a_subclass_of_liftinvs_maps_that_overrides_forward():
    """A subclass of :class:`ScaledConv` (or an instance) whose ``forward`` adds a constant is
    affine, not linear: is_linear said True (isinstance), so linear_part kept the constant. Oracle:
    the linear part ``f(x) - f(0)``, and the scaled convolution written out."""

    class Shifted(ScaledConv):
        def forward(self, x):
            return super().forward(x) + 1.0

    conv = _conv()
    shifted, patched = Shifted(conv, 0.5), ScaledConv(conv, 0.5)
    patched.forward = lambda x: ScaledConv.forward(patched, x) + 1.0
    x = torch.randn(2, 2, 5, 5, dtype=DT, generator=gen(8))
    written_out = F.conv2d(x, 0.5 * conv.weight, None, 1, 1)
    with torch.no_grad():
        for m in (shifted, patched):
            assert not is_linear(m)
            torch.testing.assert_close(linear_part(m, x), m(x) - m(torch.zeros_like(x)), rtol=0, atol=0)
            torch.testing.assert_close(linear_part(m, x), written_out, rtol=1e-12, atol=1e-12)
    assert is_linear(ScaledConv(conv, 0.5)) and is_linear(Unbiased(conv)) and is_linear(Transposed(conv))


@pytest.mark.parametrize(
    "c_in, kernel, padding, written_out",
    [(1, (3, 3), (1, 1), True), (1, (5, 5), 2, True), (1, (3, 5), (1, 2), True), (3, (3, 3), (1, 1), True),
     (2, (5, 3), (2, 1), True), (1, (3, 3), (0, 0), False), (2, (3, 3), (0, 1), False), (1, (4, 4), (2, 2), False),
     (1, (3, 4), (1, 2), False), (2, (4, 3), (2, 1), False)],
)
def test_conv_adjoint_equals_conv_transpose2d_with_its_gradients(monkeypatch, c_in, kernel, padding, written_out):
    """Values and both vector-Jacobian products equal ``F.conv_transpose2d``'s (autograd, float64;
    float32 values too), over batch slices of uneven sizes; "same" padding takes the path by
    forward convolutions (per channel to one channel, else with swapped channels), everything
    else (also a kernel even in one direction only, padded by half of it) the transposed convolution; gradcheck, and gradgradcheck (the parameter Lipschitz
    estimates differentiate it twice)."""
    monkeypatch.setattr(affine, "ADJOINT_SLICE", 2 * 6 * 8 * 9)  # slices of 2 samples: 2, 2, 2, 1
    g = gen(3)
    u = torch.randn(7, 6, 8, 9, dtype=DT, generator=g, requires_grad=True)
    w = torch.randn(6, c_in, *kernel, dtype=DT, generator=g, requires_grad=True)
    out = conv_adjoint(u, w, padding)
    ref = F.conv_transpose2d(u, w, padding=padding)
    assert (type(out.grad_fn).__name__ == "_ConvAdjointFunctionBackward") == written_out
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    cot = torch.randn(ref.shape, dtype=DT, generator=g)
    for mine, theirs in zip(torch.autograd.grad(out, (u, w), cot), torch.autograd.grad(ref, (u, w), cot)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-11)
    with torch.no_grad():
        torch.testing.assert_close(conv_adjoint(u.float(), w.float(), padding), ref.float(), rtol=1e-5, atol=1e-5)
    small_u = u[:2, :, :5, :4].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: conv_adjoint(a, b, padding), (small_u, w))
    assert torch.autograd.gradgradcheck(lambda a, b: conv_adjoint(a, b, padding), (small_u, w))


@pytest.mark.parametrize("kind", [Unbiased, Transposed])
@pytest.mark.parametrize("options", [dict(stride=2), dict(padding=0), dict(dilation=2), dict(groups=2)],
                         ids=["stride", "padding", "dilation", "groups"])
def test_shared_weight_maps_refuse_convolutions_without_a_plain_transpose(kind, options):
    """Only a stride-1, undilated, one-group convolution padded by ``kernel // 2`` has the
    transpose (``conv_adjoint`` of its weight) that maps back to the input's shape; ``Unbiased``,
    ``Transposed`` and ``Chain`` refuse the others, naming the module."""
    conv = nn.Conv2d(4, 4, 3, **{"padding": 1, **options}).double()
    with pytest.raises(ValueError, match="module must be a stride-1 conv with padding kernel // 2"):
        kind(conv)
    with pytest.raises(ValueError, match="first must be a stride-1 conv"):
        Chain(conv, Unbiased(_conv(c_in=4)))


@pytest.mark.parametrize("kind", [ScaledConv, ConvAdjoint])
def test_convolution_maps_refuse_string_padding(kind):
    with pytest.raises(ValueError, match="conv must have numeric padding"):
        kind(nn.Conv2d(1, 4, 3, padding="same", bias=False))


def _composed_normal_step(u, w):
    return u - 0.2 * F.conv2d(F.conv_transpose2d(u, w, padding=1), w, padding=1)


@pytest.mark.parametrize("c_in", [1, 3])
def test_written_out_maps_compose_with_torch_func_and_forward_mode(c_in):
    """``torch.func.vjp``/``jvp`` (the inversion's Lipschitz estimate uses both) and forward-mode
    autograd through ``conv_adjoint`` and ``NormalStep`` give the products of their torch
    compositions, for the input and the kernel together."""
    g = gen(10)
    w = torch.randn(4, c_in, 3, 3, dtype=DT, generator=g)
    cases = [(lambda a, b: conv_adjoint(a, b, 1), lambda a, b: F.conv_transpose2d(a, b, padding=1), 4)]
    if c_in == 1:
        cases.append((lambda a, b: _NormalStepFunction.apply(a, b, 0.2, (1, 1))[0], _composed_normal_step, 4))
    for mine, theirs, channels in cases:
        u = torch.randn(2, channels, 6, 7, dtype=DT, generator=g)
        du, dw = torch.randn(u.shape, dtype=DT, generator=g), torch.randn(w.shape, dtype=DT, generator=g)
        _, tangent = torch.func.jvp(mine, (u, w), (du, dw))
        _, expected = torch.func.jvp(theirs, (u, w), (du, dw))
        torch.testing.assert_close(tangent, expected, rtol=1e-12, atol=1e-12)
        out, pullback = torch.func.vjp(mine, u, w)
        ref_out, ref_pullback = torch.func.vjp(theirs, u, w)
        r = torch.randn(out.shape, dtype=DT, generator=g)
        torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
        for a, b in zip(pullback(r), ref_pullback(r)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        with fwAD.dual_level():
            dual = fwAD.unpack_dual(mine(fwAD.make_dual(u, du), fwAD.make_dual(w, dw))).tangent
        torch.testing.assert_close(dual, expected, rtol=1e-12, atol=1e-12)


def test_conv_adjoint_of_an_empty_batch_is_empty():
    u, w = torch.zeros(0, 4, 8, 8, dtype=DT), torch.ones(4, 1, 3, 3, dtype=DT)
    assert conv_adjoint(u, w, 1).shape == F.conv_transpose2d(u, w, padding=1).shape == (0, 1, 8, 8)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_maps_on_a_convolution_weight_refuse_other_padding_modes(mode):
    """The maps built on a convolution's weight apply it with zero padding (``F.conv2d``), so
    for another ``padding_mode`` they computed another map than the convolution (and than its
    adjoint, the vector-Jacobian product of ``conv`` by autograd): they refuse it, naming the
    argument; with zero padding they agree with that oracle."""
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode, bias=False).double()
    for kind, name in ((ScaledConv, "conv"), (ConvAdjoint, "conv"), (Unbiased, "module"), (Transposed, "module")):
        with pytest.raises(ValueError, match=f"{name} must have padding_mode='zeros'.*'{mode}'"):
            kind(conv)
    with pytest.raises(ValueError, match="first must have padding_mode='zeros'"):
        Chain(conv, Unbiased(_conv(c_in=3)))
    conv.padding_mode = "zeros"
    x = torch.randn(2, 2, 5, 6, dtype=DT, generator=gen(1)).requires_grad_()
    r = torch.randn(2, 3, 5, 6, dtype=DT, generator=gen(2))
    vjp = torch.autograd.grad(conv(x), x, r)[0]
    torch.testing.assert_close(ScaledConv(conv, 1.0)(x), conv(x), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(ConvAdjoint(conv)(r), vjp, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("kind", [ConvAdjoint, lambda conv: NormalStep(conv, 0.5)])
@pytest.mark.parametrize("options", [dict(dilation=2, padding=2), dict(groups=2, padding=1)], ids=["dilation", "groups"])
def test_conv_adjoint_refuses_dilated_and_grouped_convolutions(kind, options):
    """``conv_adjoint`` is ``conv_transpose2d`` without dilation or groups, which is not the
    adjoint (autograd's vector-Jacobian product) of a dilated or grouped convolution: its output
    had another shape than the convolution's input, and the error came later from an unrelated
    operation. Now refused at construction, naming the argument."""
    conv = nn.Conv2d(4, 4, 3, bias=False, **options).double()
    with pytest.raises(ValueError, match="conv must have dilation 1 and groups 1"):
        kind(conv)


class _Standardised(nn.Conv2d):
    """A weight-standardised convolution: affine in x, but not by its raw weight."""

    def forward(self, x):
        w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class _Shifted(nn.Linear):
    """A bias-free linear layer plus a constant: affine, not linear."""

    def forward(self, x):
        return super().forward(x) + 1.0


def test_torch_subclasses_that_override_forward_get_no_adjoint_or_linearity_from_their_class():
    """``adjoint_graph`` took any ``nn.Conv2d`` instance's adjoint from its raw weight and
    ``is_linear`` any bias-free ``nn.Linear``'s, though a subclass may override ``forward``: the
    vector-Jacobian product of a weight-standardised convolution was off (by 0.025 of 0.22 in a
    lifted problem's input gradient) and the linear part of a shifted layer kept its constant.
    Oracles: autograd's vector-Jacobian product, and f(x) - f(0)."""
    conv = _Standardised(2, 3, 3, padding=1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, dtype=DT, generator=gen(3)))
    x = torch.randn(2, 2, 5, 6, dtype=DT, generator=gen(4)).requires_grad_()
    r = torch.randn(2, 3, 5, 6, dtype=DT, generator=gen(5))
    expected = torch.autograd.grad(conv(x), x, r)[0]
    torch.testing.assert_close(torch.autograd.grad(adjoint_graph(conv, x), x, r)[0], expected, rtol=1e-13, atol=1e-14)
    shifted = _Shifted(3, 2, bias=False).double()
    u = torch.randn(4, 3, dtype=DT, generator=gen(6))
    assert not is_linear(shifted)
    torch.testing.assert_close(linear_part(shifted, u), shifted(u) - shifted(torch.zeros_like(u)), rtol=0, atol=0)
    assert is_linear(nn.utils.parametrizations.weight_norm(nn.Conv2d(2, 2, 3, bias=False)))  # keeps forward


def test_shared_weight_maps_refuse_subclasses_that_override_forward():
    """``Unbiased``, ``Transposed`` and ``Chain`` apply (and transpose) a module's weight: for a
    subclass overriding ``forward`` that is another map (a ``Chain`` applied the module's
    forward and transposed its raw weight, so its adjoint failed the dot-product test)."""
    conv = _Standardised(2, 2, 3, padding=1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, dtype=DT, generator=gen(7)))
    for kind in (Unbiased, Transposed):
        with pytest.raises(TypeError, match="module is a _Standardised, which overrides forward"):
            kind(conv)
    with pytest.raises(TypeError, match="first is a _Standardised, which overrides forward"):
        Chain(conv, Unbiased(_conv(c_in=2)))
    with pytest.raises(TypeError, match="then is a _Shifted, which overrides forward"):
        Chain(_dense(3, 3), _Shifted(3, 2))


@pytest.mark.parametrize("kind", [ScaledConv, ConvAdjoint, lambda conv: NormalStep(conv, 0.5)])
def test_convolution_maps_refuse_other_modules_and_subclasses_that_override_forward(kind):
    """``ScaledConv``, ``ConvAdjoint`` and ``NormalStep`` apply the weight of an ``nn.Conv2d``:
    a weight-standardised subclass gave another map than the convolution (autograd's oracle)
    without an error, and a bias-free ``nn.Linear`` failed with 'Linear object has no attribute
    padding'; both now a TypeError naming conv."""
    conv = _Standardised(2, 2, 3, padding=1, bias=False).double()
    with pytest.raises(TypeError, match="conv must be an nn.Conv2d, got _Standardised, which overrides forward"):
        kind(conv)
    with pytest.raises(TypeError, match="conv must be an nn.Conv2d, got Linear, which is not one"):
        kind(nn.Linear(2, 2, bias=False))


@pytest.mark.parametrize("make, name", [
    (ScaledConv, "scale"), (ConvAdjoint, "scale"), (NormalStep, "tau"),
    (lambda conv, tau: GradientStep(OPERATORS["blur-zero-gaussian"](DT, "cpu")[0], tau), "tau"),
], ids=["scaled_conv", "conv_adjoint", "normal_step", "gradient_step"])
def test_fixed_scales_and_steps_are_finite_real_numbers(make, name):
    """ScaledConv, ConvAdjoint and NormalStep took their scale or step through float(): NaN and
    inf were kept (every output NaN or inf, no error), the string '2' became 2.0 and True 1.0, and
    NormalStep took tau <= 0 (tau = -1 gives the expanding u + L L^* u). Now, as GradientStep's
    tau, a ValueError naming the argument; a finite scale of either sign (a NormalStep's tau > 0)
    and NumPy numbers are taken as the float of equal value. Oracle: F.conv2d with the weight
    scaled by that float."""
    positive = name == "tau"
    bad = [float("nan"), float("inf"), -float("inf"), "2", True, torch.tensor(2.0), None]
    bad += [0.0, -0.5] if positive else []
    for value in bad:
        with pytest.raises(ValueError, match=rf"{name} must be a {'positive ' if positive else ''}finite number, got"):
            make(_conv(), value)
    if make is ScaledConv:
        conv, x = _conv(), torch.randn(2, 2, 5, 6, dtype=DT, generator=gen(301))
        for value in (np.float32(0.25), np.int64(-2), -0.7):
            m = make(conv, value)
            assert type(m.scale) is float and m.scale == float(value)
            assert torch.equal(m(x), F.conv2d(x, float(value) * conv.weight, padding=conv.padding))


@pytest.mark.parametrize("make, name", [(ScaledConv, "scale"), (ConvAdjoint, "scale"), (NormalStep, "tau")],
                         ids=["scaled_conv", "conv_adjoint", "normal_step"])
def test_fixed_scales_beyond_the_float_range_are_refused_by_name(make, name):
    """An integer beyond the float range passed the finiteness test of the fixed scales and steps
    through math.isfinite, which raised "OverflowError: int too large to convert to float" (naming
    nothing). Now the ValueError naming the argument that NaN and inf get; integers in range are
    still taken as their float. Oracle: the error for inf, and float(3)."""
    for big in (10**400, -10**400):
        with pytest.raises(ValueError) as want:
            make(_conv(), math.inf if big > 0 else -math.inf)
        message = str(want.value).replace(repr(math.inf if big > 0 else -math.inf), repr(big))
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            make(_conv(), big)
    assert float(getattr(make(_conv(), 3), name)) == 3.0


@pytest.mark.parametrize("padding", [np.int64(1), [1], (1,), (np.int64(1), 1), [0]], ids=repr)
@pytest.mark.parametrize("c_in", [1, 2])
def test_conv_adjoint_takes_every_padding_conv_transpose2d_takes(padding, c_in):
    """conv_adjoint is F.conv_transpose2d(u, weight, padding=padding), but its test for "same"
    padding unpacked the padding as an int or a pair, so a NumPy integer failed with
    "'numpy.int64' object is not iterable" and a one-element sequence with 'not enough values to
    unpack', paddings torch takes. Oracle: F.conv_transpose2d, its value and the gradients of
    <g, L^* u> in u and the weight by autograd, float64."""
    w = torch.randn(3, c_in, 3, 3, dtype=DT, generator=gen(311), requires_grad=True)
    u = torch.randn(2, 3, 5, 6, dtype=DT, generator=gen(312), requires_grad=True)
    want = F.conv_transpose2d(u, w, padding=padding)
    got = conv_adjoint(u, w, padding)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    g = torch.randn(want.shape, dtype=DT, generator=gen(313))
    for a, b in zip(torch.autograd.grad(got, (u, w), g), torch.autograd.grad(want, (u, w), g)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("tau", [1e39, 1e-50])
def test_gradient_step_refuses_a_tau_its_dtype_cannot_hold(tau):
    """GradientStep checked tau as a Python float, then stored it in torch's default dtype:
    in float32 tau = 1e39 became inf (every output inf or NaN, without an error) and 1e-50
    became 0 (no step), against 'a finite number > 0'. Oracle: torch.tensor(tau) in float32 is
    inf or 0; in float64 the same tau is stored exactly."""
    physics = OPERATORS["blur-zero-gaussian"](DT, "cpu")[0]
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float32)
        assert not (math.isfinite(float(torch.tensor(tau))) and float(torch.tensor(tau)) > 0)
        with pytest.raises(ValueError, match=r"tau must be a finite number > 0 in the default dtype torch.float32"):
            GradientStep(physics, tau)
        torch.set_default_dtype(torch.float64)
        assert float(GradientStep(physics, tau).tau) == tau
    finally:
        torch.set_default_dtype(previous)


class _ShiftedIdentity(nn.Identity):
    """The identity plus a constant: affine, not linear."""

    def forward(self, x):
        return x + 1.0


class _ShiftedFlatten(nn.Flatten):
    """Flatten plus a constant: affine, not linear."""

    def forward(self, x):
        return super().forward(x) + 1.0


@pytest.mark.parametrize("make", [_ShiftedIdentity, _ShiftedFlatten, lambda: nn.Unflatten(1, (3, 1))])
def test_identity_flatten_and_unflatten_are_linear_only_if_they_keep_their_forward(make):
    """``is_linear`` took every instance of ``nn.Identity``, ``nn.Flatten`` and ``nn.Unflatten`` as
    linear, by isinstance, though its docstring takes torch classes only if they keep their
    forward: the linear part of an identity plus a constant kept the constant (1 off), as would
    a lifted problem's incremental pre-activation update through such a map. Oracle: f(x) - f(0)
    and f(0) = 0 exactly where is_linear holds."""
    m = make()
    u = torch.randn(4, 3, dtype=DT, generator=gen(7))
    assert is_linear(m) == (not bool(m(torch.zeros_like(u)).any()))
    torch.testing.assert_close(linear_part(m, u), m(u) - m(torch.zeros_like(u)), rtol=0, atol=0)
