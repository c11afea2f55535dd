"""MRI operator and k-space masks: deepinv oracles, adjoint, operator norm, mask statistics, bad input."""
from __future__ import annotations

import math

import deepinv as dinv
import numpy as np
import pytest
import torch

from operators.checks import adjoint_error, opnorm
from operators.masks import equispaced_mask, gaussian_mask, random_mask
from operators.mri import MRI
from operators.registry import OPERATORS

COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
SIZES = [(9, 11), (8, 12)]  # odd and even sizes (the centring shifts differ)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _masks(shape: tuple[int, int], seed: int = 0) -> dict[str, torch.Tensor]:
    return {
        "random": random_mask(shape, 3, 0.2, generator=_gen(seed)),
        "equispaced": equispaced_mask(shape, 2.5, 0.1),
        "gaussian": gaussian_mask(shape, 2, generator=_gen(seed)),
    }


def _coil_maps(n: int, shape: tuple[int, int], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, dtype=COMPLEX[dtype], generator=_gen(seed))


# ---------------------------------------------------------------- deepinv oracles


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_single_coil_matches_deepinv_mri(shape, dtype, tol):
    mask = random_mask(shape, 2, 0.25, generator=_gen(1))
    x = torch.randn(3, 2, *shape, dtype=dtype, generator=_gen(2))
    ours, ref = MRI(mask, dtype=dtype), dinv.physics.MRI(mask=mask.to(dtype), img_size=shape)
    y = ours.A(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert y.is_contiguous() and ours.A_adjoint(y).is_contiguous()  # as deepinv's: .view works
    torch.testing.assert_close(y, ref.A(x), rtol=0, atol=tol)
    torch.testing.assert_close(ours.A_adjoint(y), ref.A_adjoint(y), rtol=0, atol=tol)


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_multi_coil_matches_deepinv_multicoil_mri(shape, dtype, tol):
    mask = gaussian_mask(shape, 2, generator=_gen(1))
    maps = _coil_maps(4, shape, dtype)
    x = torch.randn(3, 2, *shape, dtype=dtype, generator=_gen(2))
    ours = MRI(mask, coil_maps=maps, dtype=dtype)
    ref = dinv.physics.MultiCoilMRI(mask=mask.to(dtype), coil_maps=maps, img_size=shape)
    y = ours.A(x)
    assert y.shape == (3, 2, 4, *shape) and y.is_contiguous() and ours.A_adjoint(y).is_contiguous()
    torch.testing.assert_close(y, ref.A(x), rtol=0, atol=tol)
    torch.testing.assert_close(ours.A_adjoint(y), ref.A_adjoint(y), rtol=0, atol=tol)


def test_mri_mask_edited_in_place_or_replaced_gives_the_new_operator():
    """The mask buffer scaled in place (under ``torch.no_grad``) or assigned as an attribute
    gives the A and the norm of an MRI built from the new mask (single coil: the norm is
    max |mask|), not the phase factors and norm cached for the old one."""
    g = _gen(11)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g)
    op = MRI((torch.rand(6, 7, generator=g) > 0.5).double(), dtype=torch.float64)
    for change in (lambda: op.mask.mul_(3), lambda: setattr(op, "mask", op.mask.flip(0) / 2)):
        op.A(x), opnorm(op)
        with torch.no_grad():
            change()
        fresh = MRI(op.mask.clone(), dtype=torch.float64)
        torch.testing.assert_close(op.A(x), fresh.A(x), rtol=0, atol=1e-12)
        torch.testing.assert_close(op.A_adjoint(x), fresh.A_adjoint(x), rtol=0, atol=1e-12)
        assert opnorm(op) == pytest.approx(float(op.mask.abs().max()), rel=1e-9)


def test_full_mask_single_coil_is_unitary_centred_fft():
    shape = (7, 10)
    op = MRI(torch.ones(shape), dtype=torch.float64)
    x = torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(3))
    z = torch.complex(x[:, 0], x[:, 1])
    ref = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(z, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    torch.testing.assert_close(op.A(z), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(op.A_adjoint(op.A(x)), x, rtol=0, atol=1e-12)
    assert opnorm(op) == pytest.approx(1.0, rel=1e-9)


# ---------------------------------------------------------------- adjoint and norm


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("mask_type", ["random", "equispaced", "gaussian"])
@pytest.mark.parametrize("n_coils", [None, 3])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("complex_input", [False, True])
def test_mri_adjoint_dot_product(shape, mask_type, n_coils, dtype, tol, complex_input):
    g = _gen(4)
    maps = None if n_coils is None else _coil_maps(n_coils, shape, dtype)
    op = MRI(_masks(shape)[mask_type], coil_maps=maps, dtype=dtype)
    x = torch.randn(3, 2, *shape, dtype=dtype, generator=g)
    if complex_input:
        x = torch.complex(x[:, 0], x[:, 1])
    assert adjoint_error(op, x, generator=g) < tol


@pytest.mark.parametrize("n_coils", [None, 2])
def test_mri_adjoint_is_autograd_transpose(n_coils):
    shape = (5, 6)
    maps = None if n_coils is None else _coil_maps(n_coils, shape, torch.float64)
    op = MRI(random_mask(shape, 2, 0.2, generator=_gen(5)), coil_maps=maps, dtype=torch.float64)
    x = torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(6), requires_grad=True)
    y = torch.randn(op.A(x).shape, dtype=torch.float64, generator=_gen(7))
    (grad,) = torch.autograd.grad((op.A(x) * y).sum(), x)
    torch.testing.assert_close(op.A_adjoint(y), grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_coils", [None, 3])
def test_mri_opnorm_matches_dense_svd(n_coils):
    shape = (4, 5)
    maps = None if n_coils is None else _coil_maps(n_coils, shape, torch.float64, seed=8)
    op = MRI(gaussian_mask(shape, 2, generator=_gen(8)), coil_maps=maps, dtype=torch.float64)
    n = 2 * math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, 2, *shape)
    mat = torch.stack([op.A(e).flatten() for e in basis], dim=1)
    mat_adj = torch.stack([op.A_adjoint(e.reshape(op.A(basis[0]).shape)).flatten() for e in torch.eye(mat.shape[0], dtype=torch.float64)], 1)
    torch.testing.assert_close(mat_adj, mat.T, rtol=0, atol=1e-12)
    sigma_max = torch.linalg.matrix_norm(mat, ord=2).item()
    assert opnorm(op, max_iter=2000, rtol=1e-12) == pytest.approx(sigma_max, rel=1e-6)


# ---------------------------------------------------------------- representations and noise


@pytest.mark.parametrize("n_coils", [None, 3])
def test_complex_representations_agree_with_real(n_coils):
    shape = (9, 8)
    maps = None if n_coils is None else _coil_maps(n_coils, shape, torch.float32)
    op = MRI(random_mask(shape, 2, 0.2, generator=_gen(9)), coil_maps=maps)
    x = torch.randn(2, 2, *shape, generator=_gen(10))
    z = torch.complex(x[:, 0], x[:, 1])
    y = op.A(x)
    y_bare, y_channel = op.A(z), op.A(z[:, None])
    assert y_bare.is_complex() and y_bare.shape == (2, *([] if n_coils is None else [n_coils]), *shape)
    assert y_channel.shape == (2, 1, *y_bare.shape[1:])
    torch.testing.assert_close(torch.view_as_real(y_bare).movedim(-1, 1), y)
    torch.testing.assert_close(y_channel[:, 0], y_bare)
    torch.testing.assert_close(op.A_adjoint(y_bare), torch.complex(*op.A_adjoint(y).unbind(1)))
    assert op.A_adjoint(y_channel).shape == (2, 1, *shape)


def test_mri_noise_only_on_sampled_entries():
    shape = (16, 17)
    mask = random_mask(shape, 4, 0.1, generator=_gen(11))
    op = MRI(mask, noise_model=dinv.physics.GaussianNoise(sigma=0.2, rng=_gen(12)), dtype=torch.float64)
    x = torch.randn(4, 2, *shape, dtype=torch.float64, generator=_gen(13))
    noise = op(x) - op.A(x)
    assert noise[..., ~mask].abs().max() == 0
    assert noise[..., mask].std().item() == pytest.approx(0.2, rel=0.1)


def test_mri_noise_on_complex_data_only_on_sampled_entries():
    r"""Complex k-space data get :math:`M \odot N(y)` too: zero noise where the mask is 0."""
    shape = (10, 11)
    mask = random_mask(shape, 3, 0.1, generator=_gen(23))
    op = MRI(mask, noise_model=dinv.physics.GaussianNoise(sigma=0.3, rng=_gen(24)), dtype=torch.float64)
    y = torch.zeros(3, *shape, dtype=torch.complex128)
    noise = op.noise(y)
    assert noise.is_complex() and noise[..., ~mask].abs().max() == 0
    assert noise[..., mask].abs().min() > 0



@pytest.mark.parametrize("complex_data", [False, True])
def test_mri_noise_with_a_weighted_mask_keeps_the_measurement(complex_data):
    r"""deepinv's contract :math:`y = N(Ax)`: with ``ZeroNoise`` ``physics(x)`` is :math:`Ax` for a
    weighted mask too (it was :math:`M \odot Ax = M^2 F x`), and Gaussian noise of sigma lands on
    the sampled entries alone, unscaled by the weights (it was :math:`M` times the noisy
    measurement). Oracle: ``A`` itself, and the noise's standard deviation over 6400 draws."""
    shape = (10, 8)
    weights = torch.rand(shape, dtype=torch.float64, generator=_gen(50)) * 0.8 + 0.1
    weights[:, ::3] = 0
    x = torch.randn(64, 2, *shape, dtype=torch.float64, generator=_gen(51))
    if complex_data:
        x = torch.complex(x[:, 0], x[:, 1])
    clean = MRI(weights, dtype=torch.float64)
    torch.testing.assert_close(clean(x), clean.A(x), rtol=0, atol=0)
    noisy = MRI(weights, noise_model=dinv.physics.GaussianNoise(sigma=0.2, rng=_gen(52)), dtype=torch.float64)
    noise = noisy(x) - noisy.A(x)
    noise = torch.view_as_real(noise).movedim(-1, 1) if complex_data else noise
    sampled = weights != 0
    assert noise[..., ~sampled].abs().max() == 0
    assert noise[..., sampled].std().item() == pytest.approx(0.2, rel=0.05)

def test_mri_works_with_deepinv_least_squares_prox():
    """deepinv's iterative prox_l2 through our A and A_adjoint meets A^T (A z - y) + (z - u) / gamma = 0."""
    shape = (9, 10)
    op = MRI(random_mask(shape, 2, 0.2, generator=_gen(19)), coil_maps=_coil_maps(3, shape, torch.float64), dtype=torch.float64)
    y = op.A(torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(20)))
    u = torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(21))
    z = op.prox_l2(u, y, gamma=0.5)
    residual = op.A_adjoint(op.A(z) - y) + (z - u) / 0.5
    assert residual.norm() < 1e-3 * u.norm()


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("build", [lambda s, a, c: random_mask(s, a, c, generator=_gen(14)), equispaced_mask])
@pytest.mark.parametrize("shape, acceleration, center_fraction", [((32, 40), 4, 0.08), ((15, 33), 3, 0.1), ((8, 64), 8, 0.0)])
def test_cartesian_mask_statistics(build, shape, acceleration, center_fraction):
    mask = build(shape, acceleration, center_fraction)
    height, width = shape
    assert mask.shape == shape and mask.dtype == torch.bool
    assert (mask == mask[:1]).all()  # whole columns: phase encoding along the last axis
    columns = mask[0]
    assert int(columns.sum()) == round(width / acceleration)
    n_low = round(width * center_fraction)
    start = (width - n_low + 1) // 2
    assert columns[start : start + n_low].all()
    if n_low:
        assert start <= width // 2 < start + n_low  # the zero frequency is in the centre block
    assert mask.float().mean().item() == pytest.approx(1 / acceleration, abs=0.5 / width)


def test_random_mask_uses_generator():
    a, b = (random_mask((4, 64), 4, 0.1, generator=_gen(seed)) for seed in (15, 15))
    c = random_mask((4, 64), 4, 0.1, generator=_gen(16))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_equispaced_mask_outer_columns_are_evenly_spaced():
    width, n_low = 60, 6
    columns = equispaced_mask((2, width), 5, n_low / width)[0]
    start = (width - n_low + 1) // 2
    outer = torch.cat([columns[:start], columns[start + n_low :]])
    gaps = torch.diff(torch.nonzero(outer).flatten())
    assert gaps.max() - gaps.min() <= 1


def test_mask_counts_round_to_the_nearest_integer():
    """``round(W / acceleration)`` columns, ``round(H W / acceleration)`` points: 11 / 3 = 3.67 gives
    4 columns, 5 * 7 / 2 = 17.5 gives 18 points (not the truncated 3 and 17)."""
    assert int(random_mask((3, 11), 3, 0.0, generator=_gen(40))[0].sum()) == 4
    assert int(equispaced_mask((3, 11), 3, 0.0)[0].sum()) == 4
    assert int(gaussian_mask((5, 7), 2, generator=_gen(41)).sum()) == 18


@pytest.mark.parametrize("build", [lambda s, a, c: random_mask(s, a, c, generator=_gen(42)), equispaced_mask])
def test_cartesian_mask_centre_block_may_use_every_allowed_column(build):
    """n_low = n_total is allowed (the mask is the centre block alone), and center_fraction = 1
    with acceleration 1 samples everything."""
    columns = build((2, 40), 4, 0.25)[0]
    expected = torch.zeros(40, dtype=torch.bool)
    expected[(40 - 10 + 1) // 2 : (40 - 10 + 1) // 2 + 10] = True
    assert torch.equal(columns, expected)
    assert build((3, 8), 1, 1.0).all()


def test_equispaced_mask_outer_columns_follow_the_index_formula():
    """Outer column m (of the n_outer non-centre columns, in order) is sampled for
    m = floor(k n_outer / n_extra), k = 0..n_extra-1."""
    width, n_low = 60, 6  # n_total = 12, n_extra = 6, n_outer = 54: outer indices 0, 9, ..., 45
    columns = equispaced_mask((2, width), 5, n_low / width)[0]
    start = (width - n_low + 1) // 2
    outer = [j for j in range(width) if not start <= j < start + n_low]
    expected = {outer[k * 54 // 6] for k in range(6)} | set(range(start, start + n_low))
    assert set(torch.nonzero(columns).flatten().tolist()) == expected


def test_gaussian_mask_one_point_distribution_is_the_density():
    r"""With one point per mask, P(point (i, j)) = :math:`\rho_{ij}/\sum\rho`, :math:`\rho = \exp(-(u^2+v^2)/(2\,\mathrm{std}^2))`,
    :math:`u = (i - \lfloor H/2\rfloor)/H`, :math:`v = (j - \lfloor W/2\rfloor)/W`: the empirical
    frequencies of 3000 seeded draws on an even 8 x 6 grid are within 0.02 of it."""
    shape, std = (8, 6), 0.15
    g = _gen(43)
    counts = sum(gaussian_mask(shape, 48, generator=g, std=std).double() for _ in range(3000)) / 3000
    i, j = torch.meshgrid(torch.arange(8.0, dtype=torch.float64), torch.arange(6.0, dtype=torch.float64), indexing="ij")
    rho = torch.exp(-(((i - 4) / 8) ** 2 + ((j - 3) / 6) ** 2) / (2 * std**2))
    assert (counts - rho / rho.sum()).abs().max() < 0.02
    assert counts.argmax() == 4 * 6 + 3  # the zero frequency (H//2, W//2) is the mode


def test_gaussian_mask_density():
    """Exact count; the sampled fraction decreases from the k-space centre outwards."""
    shape = (48, 50)
    masks = [gaussian_mask(shape, 4, generator=_gen(seed)) for seed in range(5)]
    assert all(int(m.sum()) == round(48 * 50 / 4) and m.dtype == torch.bool for m in masks)
    assert not torch.equal(masks[0], masks[1])
    u = (torch.arange(48) - 24)[:, None] / 48
    v = (torch.arange(50) - 25)[None, :] / 50
    radius = torch.hypot(u, v)
    density = torch.stack(masks).float().mean(0)
    rings = torch.stack([density[(radius >= r) & (radius < r + 0.1)].mean() for r in (0.0, 0.1, 0.2, 0.3)])
    assert (torch.diff(rings) < 0).all() and rings[0] > 4 * rings[-1]



@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_mask_with_a_narrow_density_takes_the_most_probable_points(seed):
    r"""With std = 0.005 on a 16 x 16 grid the density :math:`\exp(-r^2/(2\,\text{std}^2))`,
    :math:`r^2 = (d_i^2 + d_j^2)/256`, falls by :math:`e^{-78}` from one level :math:`d_i^2 + d_j^2`
    to the next, so drawing 81 points without replacement in proportion to it takes the 81 points
    of the disc :math:`d_i^2 + d_j^2 \le 25` (the next level, 26, has probability below
    :math:`10^{-30}`). Most of that disc underflows to density 0 in float64 (levels above 9), and
    multinomial filled such points by ``topk``'s order of ties: whole rows below the centre, the
    same for every seed."""
    di, dj = torch.meshgrid(torch.arange(16) - 8, torch.arange(16) - 8, indexing="ij")
    disc = di**2 + dj**2 <= 25
    assert int(disc.sum()) == 81
    mask = gaussian_mask((16, 16), 256 / 81, generator=_gen(seed), std=0.005)
    assert torch.equal(mask, disc)

@pytest.mark.parametrize("std", [1e-10, 1e-160, 1e-200])
def test_gaussian_mask_with_a_vanishing_std_takes_the_nearest_points_drawing_among_ties(std):
    r"""As std -> 0 the density :math:`\exp(-r^2/(2\,\text{std}^2))` makes each level of
    :math:`d_i^2 + d_j^2` infinitely more probable than the next, while the points of one level
    stay equally probable: 8 points of an 8 x 8 grid are the centre, its 4 neighbours and 3 of the
    4 diagonal points, each diagonal point left out in a quarter of the draws. The log-densities
    were -inf beyond the centre (std 1e-160; NaN at the centre once std**2 underflows to 0) and
    the draw filled the mask by topk's order of ties, row 5 (the same for every seed); at std
    1e-10 the exponential draws were lost in the rounding of the log-densities, and the same
    diagonal point was always left out."""
    di, dj = torch.meshgrid(torch.arange(8) - 4, torch.arange(8) - 4, indexing="ij")
    level = di**2 + dj**2
    left_out = set()
    for seed in range(40):
        mask = gaussian_mask((8, 8), 8, generator=_gen(seed), std=std)
        assert int(mask.sum()) == 8 and bool(mask[level <= 1].all()) and not bool(mask[level > 2].any())
        left_out |= {tuple(p) for p in torch.nonzero(~mask & (level == 2)).tolist()}
    assert left_out == {(3, 3), (3, 5), (5, 3), (5, 5)}


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: random_mask((8, 8), 0.5), "acceleration"),
        (lambda: random_mask((8, 8), float("nan")), "acceleration"),
        (lambda: random_mask((8, 8), 4, center_fraction=1.5), "center_fraction"),
        (lambda: random_mask((8, 40), 8, center_fraction=0.5), "center_fraction"),
        (lambda: equispaced_mask((8, 0), 2), "shape"),
        (lambda: equispaced_mask((8, 8, 8), 2), "shape"),
        (lambda: random_mask(16, 4), r"shape must be \(H, W\) with positive integers, got 16"),  # was len()'s TypeError
        (lambda: gaussian_mask(16, 4), r"shape must be \(H, W\) with positive integers, got 16"),
        (lambda: gaussian_mask((8, 8), 0), "acceleration"),
        (lambda: gaussian_mask((8, 8), 2, std=0.0), "std"),
    ],
)
def test_mask_bad_arguments(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ---------------------------------------------------------------- MRI: bad input


@pytest.mark.parametrize(
    "build, exc, name",
    [
        (lambda: MRI(torch.ones(1, 1, 1, 4, 4)), ValueError, "mask"),
        (lambda: MRI(torch.stack([torch.ones(4, 4), torch.eye(4)])), ValueError, "mask"),
        (lambda: MRI(torch.ones(4, 4, dtype=torch.complex64)), TypeError, "mask"),
        (lambda: MRI(torch.ones(4, 4, dtype=torch.int64)), TypeError, "mask"),
        (lambda: MRI(torch.full((4, 4), float("nan"))), ValueError, "mask"),
        (lambda: MRI(torch.ones(4, 4), coil_maps=torch.ones(2, 4, 4)), TypeError, "coil_maps"),
        (lambda: MRI(torch.ones(4, 4), coil_maps=torch.ones(2, 4, 5, dtype=torch.complex64)), ValueError, "coil_maps"),
        (lambda: MRI(torch.ones(4, 4), coil_maps=torch.ones(4, 4, dtype=torch.complex64)), ValueError, "coil_maps"),
        (lambda: MRI(torch.ones(4, 4), dtype=torch.float16), TypeError, "dtype"),
        (lambda: MRI(torch.ones(0, 4)), ValueError, "mask"),
        (lambda: MRI(torch.ones(4, 4), coil_maps=torch.ones(0, 4, 4, dtype=torch.complex64)), ValueError, "coil_maps"),
    ],
)
def test_mri_bad_construction(build, exc, name):
    with pytest.raises(exc, match=name):
        build()


def _bad_images():
    x = torch.randn(2, 2, 6, 7)
    nan = x.clone()
    nan[1, 1, 2, 3] = float("nan")
    return [
        (torch.randn(2, 1, 6, 7), ValueError, "2 channels"),
        (torch.randn(2, 3, 6, 7), ValueError, "2 channels"),
        (torch.randn(2, 6, 7), ValueError, "dimensions"),
        (x[..., :6], ValueError, "spatial"),
        (nan, ValueError, "NaN"),
        (x.double(), TypeError, "dtype"),
        (torch.randn(2, 6, 7, dtype=torch.complex128), TypeError, "dtype"),
        (torch.randn(2, 2, 6, 7, dtype=torch.complex64), ValueError, "1 channels"),
        (x.numpy(), TypeError, "Tensor"),
    ]


@pytest.mark.parametrize("bad, exc, what", _bad_images())
def test_mri_bad_images(bad, exc, what):
    with pytest.raises(exc, match=f"^x .*{what}"):
        MRI(torch.ones(6, 7)).A(bad)


@pytest.mark.parametrize(
    "bad, what",
    [
        (torch.randn(2, 2, 3, 6, 7), "coils"),
        (torch.randn(2, 2, 6, 7), "dimensions"),
        (torch.randn(2, 4, 6, 7, dtype=torch.complex64), "coils"),
        (torch.randn(2, 3, 2, 6, 7), "2 channels"),
    ],
)
def test_mri_bad_multicoil_measurements(bad, what):
    op = MRI(torch.ones(6, 7), coil_maps=torch.ones(2, 6, 7, dtype=torch.complex64))
    with pytest.raises(ValueError, match=f"^y .*{what}"):
        op.A_adjoint(bad)


def test_mri_update_mask_refreshes_operator():
    shape = (6, 7)
    op = MRI(torch.ones(shape), dtype=torch.float64)
    x = torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(17))
    op.A(x)
    new = random_mask(shape, 2, 0.2, generator=_gen(18))
    op.update(mask=new)
    torch.testing.assert_close(op.A(x), MRI(new, dtype=torch.float64).A(x))
    with pytest.raises(ValueError, match="mask"):
        MRI(torch.ones(shape), coil_maps=torch.ones(1, *shape, dtype=torch.complex64)).update(mask=torch.ones(5, 5))


def test_mri_update_coil_maps_with_the_same_mask_replaces_the_maps():
    r"""``update(mask=M, coil_maps=S')`` with the current mask :math:`M` still gives
    :math:`y_n = M F (S'_n x)` (the same-mask shortcut applies only when no maps are passed)."""
    shape = (6, 7)
    mask = random_mask(shape, 2, 0.2, generator=_gen(25))
    op = MRI(mask, coil_maps=_coil_maps(2, shape, torch.float64, seed=26), dtype=torch.float64)
    x = torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(27))
    op.A(x)
    new_maps = _coil_maps(3, shape, torch.float64, seed=28)
    op.update(mask=mask, coil_maps=new_maps)
    assert op.n_coils == 3
    torch.testing.assert_close(op.A(x), MRI(mask, coil_maps=new_maps, dtype=torch.float64).A(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"mask": torch.ones(6, 7), "coil_maps": torch.ones(2, 6, 7)},  # real maps
        {"mask": torch.ones(5, 5), "coil_maps": torch.ones(2, 6, 7, dtype=torch.complex128)},  # maps of another size
    ],
)
def test_mri_refused_update_changes_nothing(bad):
    """An update whose coil maps are refused keeps the old mask too: the operator still equals
    one built from its original mask and maps (not a new mask with stale factors)."""
    shape = (6, 7)
    mask, maps = random_mask(shape, 2, 0.2, generator=_gen(31)), _coil_maps(2, shape, torch.float64, seed=32)
    op = MRI(mask, coil_maps=maps, dtype=torch.float64)
    x = torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(33))
    op.A(x)
    with pytest.raises((TypeError, ValueError), match="coil_maps"):
        op.update(**bad)
    assert torch.equal(op.mask, mask.double()) and op.img_size == (2, *shape)
    torch.testing.assert_close(op.A(x), MRI(mask, coil_maps=maps, dtype=torch.float64).A(x), rtol=0, atol=0)


@pytest.mark.parametrize("n_coils", [None, 2])
def test_mri_load_state_dict_takes_the_loaded_mask_and_maps(n_coils):
    """``load_state_dict`` from an MRI with another mask (and maps) of the same shapes gives that
    operator's A and norm, not the factors or norm cached for the old ones."""
    shape = (6, 7)
    op, other = (
        MRI(random_mask(shape, 2, 0.2, generator=_gen(seed)), dtype=torch.float64,
            coil_maps=None if n_coils is None else _coil_maps(n_coils, shape, torch.float64, seed=seed))
        for seed in (34, 35)
    )
    x = torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(36))
    op.A(x), opnorm(op)
    op.load_state_dict(other.state_dict())
    torch.testing.assert_close(op.A(x), other.A(x), rtol=0, atol=1e-12)
    assert opnorm(op) == pytest.approx(opnorm(other), rel=1e-10)


def test_mri_to_float64_recomputes_the_phase_factors():
    """After ``.to(torch.float64)`` a float32 operator is the float64 operator to float64
    rounding: the cached factors are keyed by dtype, not reused from float32."""
    shape = (9, 8)
    mask = random_mask(shape, 2, 0.2, generator=_gen(29))
    op = MRI(mask, coil_maps=_coil_maps(2, shape, torch.float32, seed=30))
    op.A(torch.zeros(1, 2, *shape))  # fill the float32 cache
    op = op.to(torch.float64)
    ref = MRI(mask, coil_maps=_coil_maps(2, shape, torch.float32, seed=30).to(torch.complex128), dtype=torch.float64)
    x = torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(31))
    torch.testing.assert_close(op.A(x), ref.A(x), rtol=0, atol=1e-13)
    torch.testing.assert_close(op.A_adjoint(ref.A(x)), ref.A_adjoint(ref.A(x)), rtol=0, atol=1e-13)


@pytest.mark.parametrize("n", [8, 64, 1000, 1001])
def test_centring_phases_are_the_shift_theorem_with_exact_signs(n):
    r""":math:`D_\text{in}[i] = e^{2\pi i s(i-s)/n}`, :math:`D_\text{out}[k] = e^{2\pi i ks/n}`,
    :math:`s = \lfloor n/2\rfloor` (exponents in exact integer arithmetic mod n); for even n
    they are :math:`\pm 1` with real parts exactly :math:`\pm 1`."""
    from operators.mri import _centring_phases

    d_in, d_out = _centring_phases(n)
    s, i = n // 2, torch.arange(n)
    for d, m in ((d_in, s * (i - s)), (d_out, s * i)):
        angle = 2 * math.pi * torch.remainder(m, n).double() / n
        torch.testing.assert_close(d, torch.polar(torch.ones(n, dtype=torch.float64), angle), rtol=0, atol=1e-15)
        if n % 2 == 0:
            assert set(d.real.tolist()) <= {1.0, -1.0}


@pytest.mark.parametrize("name", ["GaussianMaskGenerator", "RandomMaskGenerator", "EquispacedMaskGenerator"])
@pytest.mark.parametrize("size", ["img_size", "spatial"])
def test_mri_takes_masks_from_deepinv_generators(name, size):
    """``physics(x, **generator.step(B))``, as deepinv's trainer calls it, with the generator built
    on ``physics.img_size = (2, H, W)`` (masks ``(B, 2, H, W)``) or on ``(H, W)`` (masks
    ``(B, 1, H, W)``): one mask for the batch is used, as by deepinv's own MRI on the same mask;
    masks that differ per sample or per real/imaginary channel are refused, naming the dim."""
    shape = (16, 16)
    x = torch.randn(3, 2, *shape, dtype=torch.float64, generator=_gen(20))
    op = MRI(torch.ones(shape), dtype=torch.float64)
    generator = getattr(dinv.physics.generator, name)(op.img_size if size == "img_size" else shape, acceleration=4, rng=_gen(21))
    mask = generator.step(1)["mask"]
    assert mask.shape == (1, 2 if size == "img_size" else 1, *shape) and float(mask.mean()) < 0.5
    same = mask.expand(3, -1, -1, -1)  # one mask drawn for the three samples
    reference = dinv.physics.MRI(mask=same.double(), img_size=(2, *shape))
    for params in ({"mask": mask}, {"mask": same}):
        torch.testing.assert_close(op(x, **params), reference(x), rtol=0, atol=1e-14)
        torch.testing.assert_close(op.A_adjoint(reference(x), **params), reference.A_adjoint(reference(x)), rtol=0, atol=1e-14)
    different = torch.cat([mask, 1 - mask])
    with pytest.raises(ValueError, match=r"^mask of shape \(2, .*\) differs along dim 0: a different mask per sample is not supported"):
        op(x, mask=different)
    with pytest.raises(ValueError, match=r"^mask of shape \(1, 2, 16, 16\) differs along dim 1: a different mask per real/imaginary channel"):
        op.update(mask=torch.cat([mask[:, :1], 1 - mask[:, :1]], 1))
    with pytest.raises(ValueError, match=r"^mask must have at most 2 non-empty leading axes \(sample, real/imaginary channel\)"):
        op.update(mask=mask[None])
    torch.testing.assert_close(op.mask, mask[0, 0].double(), rtol=0, atol=0)  # refused updates changed nothing


def test_mri_takes_coil_maps_with_a_batch_axis():
    """deepinv's data sets give ``params = {"mask": (C, H, W), "coil_maps": (N, H, W)}`` per sample,
    which a data loader batches to ``(B, ...)``: with one sample (or equal maps), the maps are
    used as by deepinv's ``MultiCoilMRI``; different maps per sample are refused, naming the dim."""
    shape = (12, 12)
    maps = _coil_maps(3, shape, torch.float64, seed=40)
    mask = dinv.physics.generator.GaussianMaskGenerator((2, *shape), acceleration=2, rng=_gen(41)).step(1)["mask"].double()
    x = torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(42))
    reference = dinv.physics.MultiCoilMRI(mask=mask, coil_maps=maps[None], img_size=(2, *shape))
    op = MRI(torch.ones(shape), coil_maps=_coil_maps(2, shape, torch.float64, seed=43), dtype=torch.float64)
    for batched in (maps[None], maps.expand(2, -1, -1, -1)):
        torch.testing.assert_close(op(x, mask=mask, coil_maps=batched), reference(x), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match=r"^coil_maps of shape \(2, 3, 12, 12\) differs along dim 0: a different coil_maps per sample"):
        op.update(coil_maps=torch.stack([maps, 2 * maps]))


@pytest.mark.parametrize("layout", ["real", "complex"])
def test_mri_noise_sigma_is_per_real_component_in_every_layout(layout):
    """Gaussian noise of standard deviation sigma on the real and the imaginary part of every
    sampled entry, whether the data are real (B, 2, H, W) or complex (a complex draw would give
    each part sigma / sqrt(2))."""
    op = MRI(torch.ones(32, 32), noise_model=dinv.physics.GaussianNoise(0.5, rng=_gen(22)), dtype=torch.float64)
    zeros = torch.zeros(100, 2, 32, 32, dtype=torch.float64)
    y = op(zeros if layout == "real" else torch.complex(zeros[:, 0], zeros[:, 1]))
    parts = y if layout == "real" else torch.stack((y.real, y.imag), 1)
    assert float(parts[:, 0].std()) == pytest.approx(0.5, rel=0.02) and float(parts[:, 1].std()) == pytest.approx(0.5, rel=0.02)


def test_mri_mask_assignment_is_validated_as_the_constructor_mask():
    """``op.mask = m`` replaced the buffer as it was: a bool mask (what the mask functions return)
    made the operator's dtype torch.bool (A refused float64 images: 'the operator uses
    torch.bool'), and a mask of another size was applied while ``img_size`` kept the old one
    (opnorm's default shape: opnorm failed) and the coil maps the old size (a broadcasting error
    in A). Now the assignment is ``update_parameters(mask=m)``.
    Oracle: an MRI built from the assigned mask (A bit for bit, ``img_size``, the norm max |M| = 1)."""
    g = _gen(13)
    mask = random_mask((6, 5), 2, 0.2, generator=g)
    op = MRI(torch.ones(8, 7), dtype=torch.float64)
    op.mask = mask
    fresh = MRI(mask, dtype=torch.float64)
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, generator=g)
    assert op.dtype == torch.float64 and op.img_size == (2, 6, 5)
    torch.testing.assert_close(op.A(x), fresh.A(x), rtol=0, atol=0)
    assert opnorm(op) == pytest.approx(1.0, rel=1e-9)
    multi = MRI(torch.ones(8, 7), coil_maps=_coil_maps(2, (8, 7), torch.float64), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"mask of shape \(6, 5\) does not match the coil maps"):
        multi.mask = mask
    with pytest.raises(TypeError, match="mask must be"):
        multi.mask = None
    assert multi.mask.shape == (8, 7) and multi.img_size == (2, 8, 7)


def test_mri_coil_maps_assignment_is_validated_like_update_parameters():
    """``op.coil_maps = S`` was a plain buffer assignment: complex (N, H, W) maps, the layout the
    constructor and update_parameters take, were stored as they came and A failed later in
    view_as_complex ('only supported for half, float and double tensors'), as it did for real
    maps and maps of another size, naming none of them. Now it is update_parameters(coil_maps=S)
    (the mask assignment's routing): oracle, an MRI built from those maps, bit for bit, for
    complex maps of the operator's or another dtype and for the stored real view (what
    load_state_dict(assign=True) assigns); real maps and maps of another size are refused naming
    coil_maps and change nothing."""
    shape = (6, 7)
    mask = random_mask(shape, 2, 0.2, generator=_gen(50))
    old, new = _coil_maps(2, shape, torch.float64, seed=51), _coil_maps(3, shape, torch.float64, seed=52)
    x = torch.randn(2, 2, *shape, dtype=torch.float64, generator=_gen(53))
    expected = MRI(mask, coil_maps=new, dtype=torch.float64).A(x)
    for value in (new, new.to(torch.complex64), torch.view_as_real(new), torch.view_as_real(new).float(), new[None]):
        op = MRI(mask, coil_maps=old, dtype=torch.float64)
        op.A(x)
        op.coil_maps = value
        reference = expected if value.dtype in (torch.complex128, torch.float64) else \
            MRI(mask, coil_maps=new.to(torch.complex64), dtype=torch.float64).A(x)
        assert op.coil_maps.shape == (3, *shape, 2) and op.coil_maps.dtype == torch.float64
        torch.testing.assert_close(op.A(x), reference, rtol=0, atol=0)
    for bad, error in ((new.real, TypeError), (_coil_maps(3, (5, 5), torch.float64), ValueError)):
        op = MRI(mask, coil_maps=old, dtype=torch.float64)
        with pytest.raises(error, match="coil_maps"):
            op.coil_maps = bad
        torch.testing.assert_close(op.A(x), MRI(mask, coil_maps=old, dtype=torch.float64).A(x), rtol=0, atol=0)
    op = MRI(mask, coil_maps=old, dtype=torch.float64)
    op.coil_maps = None  # single-coil
    torch.testing.assert_close(op.A(x), MRI(mask, dtype=torch.float64).A(x), rtol=0, atol=0)


@pytest.mark.parametrize("assign", [False, True])
def test_mri_load_state_dict_takes_the_coil_maps(assign):
    """load_state_dict, in place or with assign=True (which assigns the buffers, so it goes through
    the validated coil_maps assignment), gives the operator of the saved maps (oracle: that
    operator), the buffer still the real view of the operator's dtype."""
    shape = (6, 7)
    mask = random_mask(shape, 2, 0.2, generator=_gen(54))
    source = MRI(mask, coil_maps=_coil_maps(2, shape, torch.float64, seed=55), dtype=torch.float64)
    op = MRI(mask, coil_maps=_coil_maps(2, shape, torch.float64, seed=56), dtype=torch.float64)
    x = torch.randn(1, 2, *shape, dtype=torch.float64, generator=_gen(57))
    op.A(x)
    op.load_state_dict(source.state_dict(), assign=assign)
    assert op.coil_maps.shape == (2, *shape, 2) and op.coil_maps.dtype == torch.float64
    torch.testing.assert_close(op.A(x), source.A(x), rtol=0, atol=0)


def test_mri_passing_the_current_mask_and_coil_maps_keeps_the_caches():
    """deepinv's MultiCoilMRI and its data sets pass mask and coil maps at every call: the operator's
    own again keep the phase factors and the cached norm, as the mask alone does (every call
    dropped them, so each opnorm after physics(x, **params) ran Lanczos again); other maps replace them."""
    physics, shape = OPERATORS["mri-gaussian-multicoil"](torch.float64, "cpu")
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = physics.A(x)
    norm, factors = opnorm(physics), physics._factors
    maps = torch.view_as_complex(physics.coil_maps).clone()
    assert torch.equal(physics(x, mask=physics.mask.clone(), coil_maps=maps[None].expand(2, -1, -1, -1)), y)
    assert physics._factors is factors and physics.__dict__["_opnorm_cache"]
    physics.update(coil_maps=2 * maps)
    assert physics._factors is not factors
    assert opnorm(physics) == pytest.approx(2 * norm, rel=1e-9)


@pytest.mark.parametrize("draw", [lambda g: random_mask((8, 8), 2, generator=g), lambda g: gaussian_mask((8, 8), 2, generator=g)])
@pytest.mark.parametrize("generator", [0, np.random.default_rng(0)])
def test_random_masks_refuse_a_generator_that_is_not_a_cpu_generator_by_name(draw, generator):
    """A seed or a NumPy generator is refused naming generator (it failed inside torch:
    'randperm() received an invalid combination of arguments - got (int, generator=int)'); a CPU
    torch.Generator draws as before (the same mask for the same seed)."""
    with pytest.raises(TypeError, match="^generator must be a CPU torch.Generator or None, got "):
        draw(generator)
    assert torch.equal(draw(torch.Generator().manual_seed(1)), draw(torch.Generator().manual_seed(1)))
