"""Contract tests of the penalty family (Bregman, MAC, Fenchel) over every activation: values,
gradients against float64 autograd, surrogates through an affine map, output prox against
brute-force and scipy minimisers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from test_activations import DT, brute_min, domain_points, gen, randn

from liftinv.activations import ACTIVATIONS, LeakyReLU, ReLU, Softmax, Tanh
from liftinv.penalty import BREGMAN, FENCHEL, MAC, PENALTIES, bregman
from liftinv.validation import FLOAT_DTYPES

ELEMENTWISE = [act for act in ACTIVATIONS if act.elementwise]
PEN_IDS = {BREGMAN: "bregman", MAC: "mac", FENCHEL: "fenchel"}
penalties = pytest.mark.parametrize("pen", PENALTIES, ids=PEN_IDS.get)
activations = pytest.mark.parametrize("act", ACTIVATIONS, ids=repr)


@penalties
@activations
def test_value_nonnegative_and_zero_on_constraint(pen, act):
    g = gen(20)
    shape = (3, 5, 2, 3)
    a = randn(*shape, g=g, scale=2.0)
    z = domain_points(act, shape, g)
    val = pen.value(act, z, a)
    assert val.shape == (3,)
    assert torch.all(val >= -1e-12)
    assert torch.all(pen.value(act, z + 0.1 * (act(a) - z), a) <= val + 1e-12)  # convex in z
    torch.testing.assert_close(pen.value(act, act(a), a), torch.zeros(3, dtype=DT), atol=1e-11, rtol=0)


@penalties
@activations
def test_residual_is_gradient_of_value(pen, act):
    g = gen(21)
    shape = (3, 5, 3)
    a = randn(*shape, g=g, scale=2.0).requires_grad_(True)
    z = domain_points(act, shape, g)
    (grad,) = torch.autograd.grad(pen.value(act, z, a).sum(), a)
    torch.testing.assert_close(pen.residual(act, z, a), grad, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv1x1"])
@penalties
@activations
def test_surrogate_gives_exact_affine_gradients(pen, act, conv):
    """a = W x + b: autograd of the surrogate equals autograd of the value in W, b and x."""
    g = gen(22)
    if conv:
        # 1x1 convolution on images: softmax then runs over channels
        x = randn(3, 2, 5, 4, g=g).requires_grad_(True)
        w, b = randn(5, 2, g=g, scale=0.5), randn(5, g=g)
        affine = lambda x, w, b: torch.einsum("oc,bchw->bohw", w, x) + b[:, None, None]  # noqa: E731
    else:
        x = randn(3, 7, g=g).requires_grad_(True)
        w, b = randn(5, 7, g=g, scale=0.5), randn(5, g=g)
        affine = F.linear
    w.requires_grad_(True)
    b.requires_grad_(True)
    z = domain_points(act, affine(x, w, b).shape, g)
    exact = torch.autograd.grad(pen.value(act, z, affine(x, w, b)).sum(), (w, b, x))
    surrogate = pen.surrogate(act, z, affine(x, w, b))
    assert surrogate.shape == (3,)
    for got, want in zip(torch.autograd.grad(surrogate.sum(), (w, b, x)), exact):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("tau", [0.5, 2.0, "tensor"])
@penalties
@pytest.mark.parametrize("act", ELEMENTWISE, ids=repr)
def test_prox_output_matches_brute_force(pen, act, tau):
    """argmin_z P(z, a) + |z - v|^2 / (2 tau), entry by entry (each entry a batch of one)."""
    g = gen(23)
    a, v = randn(13, g=g, scale=2.0), randn(13, g=g, scale=2.0)
    if tau == "tensor":
        t_full = 0.2 + 2 * torch.rand(13, generator=g, dtype=DT)
    else:
        t_full = torch.full((13,), tau, dtype=DT)
    z = pen.prox_output(act, a[:, None], v[:, None], t_full[:, None] if tau == "tensor" else tau)[:, 0]

    def objective(cand: torch.Tensor) -> torch.Tensor:
        n, k = cand.shape
        p = pen.value(act, cand.reshape(-1, 1), a.repeat_interleave(k)[:, None]).reshape(n, k)
        return p + (cand - v[:, None]) ** 2 / (2 * t_full[:, None])

    radius = v.abs() + t_full * a.abs() + 3
    z_bf, _ = brute_min(objective, -radius, radius)
    torch.testing.assert_close(z, z_bf, atol=1e-7, rtol=0)


@pytest.mark.parametrize("tau", [0.7, "tensor"])
@penalties
@pytest.mark.parametrize("act", ELEMENTWISE, ids=repr)
def test_in_place_variants_equal_their_pure_forms(pen, act, tau):
    """``prox_output_``, ``prox_phi_``, ``residual_`` and ``forward_`` return the storage of their
    argument holding the value of the pure method."""
    g = gen(28)
    a, v = randn(4, 6, g=g, scale=2.0), randn(4, 6, g=g, scale=2.0)
    t = 0.2 + 2 * torch.rand(4, 1, generator=g, dtype=DT) if tau == "tensor" else tau
    expected = pen.prox_output(act, a, v, t)
    work = v.clone()
    got = pen.prox_output_(act, a, work, t)
    assert got.data_ptr() == work.data_ptr()
    torch.testing.assert_close(got, expected, atol=1e-14, rtol=1e-14)
    phi = act.prox_phi_(v.clone(), t)
    torch.testing.assert_close(phi, act.prox_phi(v, t), atol=1e-14, rtol=1e-14)
    z = domain_points(act, a.shape, g)
    work = a.clone()
    got = pen.residual_(act, z, work)
    assert got.data_ptr() == work.data_ptr()
    torch.testing.assert_close(got, pen.residual(act, z, a), atol=1e-14, rtol=1e-14)
    torch.testing.assert_close(act.forward_(a.clone()), act(a), atol=0, rtol=0)


def test_mac_prox_output_softmax_against_scipy():
    act, g = Softmax(), gen(24)
    a, v = randn(2, 4, g=g, scale=2.0), randn(2, 4, g=g)
    z = MAC.prox_output(act, a, v, 0.7)
    for i in range(2):
        def objective(zi: np.ndarray) -> float:
            zt = torch.tensor(zi, dtype=DT)[None]
            return (MAC.value(act, zt, a[i : i + 1]) + ((zt - v[i]) ** 2).sum() / 1.4).item()

        res = minimize(objective, np.zeros(4), method="BFGS", options={"gtol": 1e-10})
        np.testing.assert_allclose(z[i].numpy(), res.x, atol=1e-6)
    with pytest.raises(ValueError, match="gamma == 1"):
        BREGMAN.prox_output(act, a, v, 0.7)


@activations
def test_bregman_and_fenchel_agree(act):
    g = gen(25)
    shape = (4, 3, 5)
    a = randn(*shape, g=g, scale=2.0)
    z = domain_points(act, shape, g)
    torch.testing.assert_close(FENCHEL.value(act, z, a), BREGMAN.value(act, z, a), atol=1e-11, rtol=1e-11)
    torch.testing.assert_close(bregman(act, z, a), act.divergence(z, a).flatten(1).sum(1))
    young = sum(t.flatten(1).sum(1) for t in (0.5 * z**2 - z * a, act.psi(z), act.conjugate(a)))  # term by term, float64
    torch.testing.assert_close(FENCHEL.value(act, z, a), young, atol=1e-11, rtol=1e-11)


@activations
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e3])
def test_fenchel_penalty_in_float32_is_nonnegative_and_accurate(act, scale):
    """The Fenchel penalty in float32 was the sum of three per-sample sums of size |a|^2 that
    cancel: negative at z = sigma(a) (-8 for a soft-threshold layer at |a| ~ 1e3, -1.5e-6 for tanh
    at |a| ~ 1e-6) and 14-20 % off elsewhere. Oracle: the float64 Bregman penalty (closed forms
    checked against mpmath) at the same float32 inputs; >= 0, and within 1e-4 relative plus
    16 eps sum (|z - sigma(a)| + eps (1 + |a|))(1 + |a|), the divergences' float32 accuracy."""
    g, eps = gen(31), torch.finfo(torch.float32).eps
    a = scale * torch.randn(3, 2, 25, dtype=torch.float32, generator=g)
    for off in (0.0, 1e-2):
        noise = off * scale * torch.randn(a.shape, dtype=torch.float32, generator=g)
        z = act.project_domain(act(a) + noise) if act.elementwise else act(a + noise)
        value = FENCHEL.value(act, z, a)
        ref = BREGMAN.value(act, z.double(), a.double())
        assert value.dtype == torch.float32 and bool((value >= 0).all())
        size = 1 + a.abs().double()  # rounding of sigma(a) moves B by about (eps |a|)^2
        slack = 16 * eps * ((((z - act(a)).abs().double() + eps * size) * size).sum((1, 2)))
        assert bool(((value.double() - ref).abs() <= 1e-4 * ref + slack).all())


def test_bregman_is_cross_entropy_for_one_hot_softmax():
    g = gen(26)
    a = randn(5, 4, g=g, scale=2.0)
    labels = torch.randint(0, 4, (5,), generator=g)
    z = F.one_hot(labels, 4).to(DT)
    torch.testing.assert_close(bregman(Softmax(), z, a), F.cross_entropy(a, labels, reduction="none"))


def test_mac_residual_has_sigma_prime():
    """MAC's gradient is sigma'(a)(sigma(a) - z); Bregman's is sigma(a) - z."""
    g = gen(27)
    a, z = randn(3, 5, g=g, scale=2.0), randn(3, 5, g=g).clamp(-0.9, 0.9)
    s = torch.tanh(a)
    torch.testing.assert_close(MAC.residual(Tanh(), z, a), (1 - s**2) * (s - z))
    torch.testing.assert_close(BREGMAN.residual(Tanh(), z, a), s - z)


@activations
def test_bregman_residual_keeps_its_graph(act):
    """residual(z, a) = sigma(a) - z differentiates through sigma: its vector-Jacobian product in
    a is that of sigma alone (tanh: (1 - tanh(a)^2) w), and in z it is -w. It subtracted z in
    the storage of sigma(a), which tanh, sigmoid, softmax and ReLU keep for their backward."""
    g = gen(28)
    a = randn(3, 5, g=g, scale=2.0).requires_grad_(True)
    z = domain_points(act, (3, 5), g).requires_grad_(True)
    w = randn(3, 5, g=g)
    grad_a, grad_z = torch.autograd.grad(BREGMAN.residual(act, z, a), (a, z), w)
    (want,) = torch.autograd.grad(act(a), a, w)
    torch.testing.assert_close(grad_a, want, atol=1e-14, rtol=1e-14)
    torch.testing.assert_close(grad_z, -w, atol=0, rtol=0)
    if isinstance(act, Tanh):
        torch.testing.assert_close(grad_a, (1 - torch.tanh(a.detach()) ** 2) * w)
    with torch.no_grad():  # the same values as without a graph
        torch.testing.assert_close(BREGMAN.residual(act, z, a), act(a) - z, atol=0, rtol=0)


@penalties
@activations
def test_empty_batch_gives_empty_values(pen, act):
    """A batch of no sample has no per-sample value (shape (0,)): the sum over its samples is 0 and
    the values of a batch with an empty part are those of the rest (the reshape to (0, -1) failed
    as ambiguous)."""
    g = gen(29)
    a = randn(2, 4, 3, g=g)
    z = domain_points(act, a.shape, g)
    for method in (pen.value, pen.surrogate):
        empty = method(act, z[:0], a[:0])
        assert empty.shape == (0,) and empty.dtype == DT
        torch.testing.assert_close(torch.cat([method(act, z, a), empty]), method(act, z, a), atol=0, rtol=0)


@penalties
def test_bad_inputs(pen):
    act = Tanh()
    z, a = torch.zeros(2, 3, dtype=DT), torch.zeros(2, 3, dtype=DT)
    shapes = r"z and a must have the same shape, got z \(2, 3\) and a \(2, 4\)"
    with pytest.raises(ValueError, match=shapes):
        pen.value(act, z, torch.zeros(2, 4, dtype=DT))
    with pytest.raises(ValueError, match="z and a must have the same shape"):
        pen.residual(act, z, a[:, :2])
    with pytest.raises(ValueError, match="z and a must have the same shape"):
        pen.surrogate(act, z[:1], a)
    with pytest.raises(ValueError, match="a and v must have the same shape"):
        pen.prox_output(act, a, z[:, :1], 1.0)
    with pytest.raises(TypeError, match="same dtype"):
        pen.value(act, z.float(), a)
    with pytest.raises(ValueError, match="batch dimension"):
        pen.value(act, z[0, 0], a[0, 0])
    with pytest.raises(TypeError, match="a must be a torch.Tensor"):
        pen.residual(act, z, a.tolist())
    with pytest.raises(ValueError, match="tau must be positive, got -1"):
        pen.prox_output(act, a, z, -1.0)


@penalties
def test_tensors_on_different_devices_are_refused(pen):
    """z and a (a and v) on two devices raise a ValueError naming both, before any computation
    (a ``meta`` tensor stands for a second device)."""
    act, cpu = Tanh(), torch.zeros(2, 3, dtype=DT)
    meta = torch.zeros(2, 3, dtype=DT, device="meta")
    with pytest.raises(ValueError, match="z and a must be on the same device, got cpu and meta"):
        pen.value(act, cpu, meta)
    with pytest.raises(ValueError, match="same device"):
        pen.residual(act, meta, cpu)
    with pytest.raises(ValueError, match="a and v must be on the same device"):
        pen.prox_output(act, cpu, meta, 1.0)


@penalties
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, torch.float8_e4m3fn])
def test_tensors_of_a_dtype_torch_does_not_compute_in_are_refused_by_name(pen, dtype):
    """Integer, bool, complex or float8 z and a passed the checks: ReLU's Bregman value of
    z = (1, 2), a = (3, -1) as int64 came out as 6 (the value of the float tensors), while
    LeakyReLU and Tanh failed inside torch ('"leaky_relu_cpu" not implemented for 'Long'',
    'logaddexp_cpu'), and MAC with 'only Tensors of floating point dtype can require gradients',
    naming neither argument. Oracle: LiftedProblem's rule for variables, validation.FLOAT_DTYPES
    (the float tensors give the closed form 1/2 (z - relu(a))^2 + z max(-a, 0), summed: 6)."""
    assert dtype not in FLOAT_DTYPES
    z, a = torch.tensor([[1.0, 2.0]], dtype=DT), torch.tensor([[3.0, -1.0]], dtype=DT)
    assert float(BREGMAN.value(ReLU(), z, a)) == 6.0
    bad = torch.zeros(1, 2, dtype=dtype)
    for act in (ReLU(), LeakyReLU(0.5), Tanh()):
        message = f"must be a real floating tensor, got dtype {dtype}"
        with pytest.raises(TypeError, match="z " + message):
            pen.value(act, bad, a)
        with pytest.raises(TypeError, match="a " + message):
            pen.residual(act, z, bad)
        with pytest.raises(TypeError, match="v " + message):
            pen.prox_output(act, a, bad, 0.5)
