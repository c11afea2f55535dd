r"""Classical reconstructions :math:`y \mapsto x` for linear inverse problems :math:`y = Ax + e`.

Every function takes the measurements first and the operator second and returns images
(B, C, H, W). They use only ``physics.A`` and ``physics.A_adjoint`` unless named after a
specific operator (:func:`fbp` for :class:`operators.radon.Radon`, :func:`wiener` for a circular
:class:`operators.blur.Blur`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from liftinv.tv import pdhg_tv
from operators.checks import check_tensor, is_integer, is_real, values_trusted


def _check_nonneg(value: float, name: str, *, strict: bool = False) -> None:
    ok = is_real(value) and math.isfinite(value)  # NumPy scalars too
    if not ok or value < 0 or (strict and value == 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def adjoint(y: Tensor, physics) -> Tensor:
    r"""Back-projection :math:`A^* y`."""
    check_tensor(y, "y")
    return physics.A_adjoint(y)


def fbp(y: Tensor, radon, filter: str = "ramp") -> Tensor:
    r"""Filtered back-projection of a sinogram (B, C, n_detectors, n_angles) by ``radon.fbp``
    (scikit-image's ``iradon`` convention); ``filter`` is one of ``"ramp"``, ``"shepp-logan"``,
    ``"cosine"``, ``"hamming"``, ``"hann"``."""
    if not callable(getattr(radon, "fbp", None)):
        raise TypeError(f"radon must provide fbp(y, filter) (operators.radon.Radon), got {type(radon).__name__}")
    check_tensor(y, "y", ndim=4)
    return radon.fbp(y, filter=filter)


def zero_filled(y: Tensor, mri) -> Tensor:
    r"""Zero-filled reconstruction :math:`A^* y`: inverse FFT of the k-space data with unsampled
    entries set to zero (coil-combined with the conjugate sensitivities for multi-coil data),
    as (B, 2, H, W) real/imaginary channels."""
    if not hasattr(mri, "mask"):
        raise TypeError(f"mri must be an MRI operator with a sampling mask, got {type(mri).__name__}")
    return adjoint(y, mri)


def tikhonov(
    y: Tensor, physics, lam: float, *, n_iter: int = 200, tol: float = 1e-6, x0: Tensor | None = None
) -> Tensor:
    r"""Tikhonov-regularised least squares
    :math:`\operatorname{argmin}_x \tfrac12\|Ax - y\|^2 + \tfrac{\lambda}{2}\|x\|^2`, i.e. the solution of
    :math:`(A^*A + \lambda I)x = A^*y`, by conjugate gradients per sample (matrix-free: only
    :math:`A` and :math:`A^*`).

    Each sample stops when its residual :math:`r = A^*y - (A^*A + \lambda I)x` has
    :math:`\|r\| \le \mathrm{tol}\,\|A^*y\|`, or, where :math:`A^*y = 0` (solution 0, or with
    :math:`\lambda = 0` the part of ``x0`` in the null space of :math:`A`: no multiple of
    :math:`\|A^*y\|` would ever be reached), :math:`\|r\| \le \mathrm{tol}\,\|r_0\|`, the start's
    residual. Its iterate is then kept while the others go on, so a sample's result does not
    depend on the rest of the batch; the loop ends when every sample has stopped, or after
    ``n_iter`` iterations. With :math:`\lambda = 0` and ``x0 = 0`` CG converges to the
    minimum-norm least-squares solution.

    Args:
        y: measurements.
        physics: linear operator with ``A`` and ``A_adjoint``.
        lam: :math:`\lambda \ge 0`.
        n_iter: maximum number of CG iterations.
        tol: relative residual tolerance.
        x0: initial image; default zero.
    """
    check_tensor(y, "y")
    _check_nonneg(lam, "lam")
    _check_nonneg(tol, "tol")
    if not is_integer(n_iter) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive int, got {n_iter!r}")
    n_iter = int(n_iter)
    b = physics.A_adjoint(y)

    def normal(v: Tensor) -> Tensor:
        with values_trusted():  # y and x0 are checked: no NaN/Inf scan (a host read) per iteration
            return physics.A_adjoint(physics.A(v)) + lam * v

    def dot(u: Tensor, v: Tensor) -> Tensor:  # real inner product Re<u, v>, per sample (also for complex images)
        uv = (u.conj() * v).real if u.is_complex() else u * v
        return uv.flatten(1).sum(1).view(-1, *([1] * (u.ndim - 1)))

    if x0 is None:
        x, r = torch.zeros_like(b), b.clone()
    else:
        check_tensor(x0, "x0", like=b)
        if x0.shape != b.shape:
            raise ValueError(f"x0 must have the shape {tuple(b.shape)} of A^*y, got {tuple(x0.shape)}")
        x = x0.clone()
        r = b - normal(x)
    p, rs = r.clone(), dot(r, r)
    bb = dot(b, b)
    threshold = tol**2 * torch.where(bb == 0, rs, bb)  # A^*y = 0: the start's residual sets the scale (docstring)
    for _ in range(n_iter):
        active = rs > threshold  # a sample that met its tolerance keeps x, r and p
        if not bool(active.any()):
            break
        ap = normal(p)
        curv = dot(p, ap)
        alpha = torch.where(active & (curv > 0), rs / curv, torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = dot(r, r)
        p = torch.where(active, r + torch.where(rs > 0, rs_new / rs, torch.zeros_like(rs)) * p, p)
        rs = rs_new
    return x


def wiener(y: Tensor, blur, lam: float) -> Tensor:
    r"""Closed-form Tikhonov deconvolution for a circular blur (Wiener filter with constant
    noise-to-signal ratio :math:`\lambda`):

    .. math::
        x = \mathcal F^{-1}\Big[\frac{\overline{H}\,\mathcal F y}{|H|^2 + \lambda}\Big],
        \qquad H = \mathcal F\big(A\delta_0\big),

    the minimiser of :math:`\tfrac12\|Ax - y\|^2 + \tfrac{\lambda}{2}\|x\|^2` (same as
    :func:`tikhonov`). The transfer function :math:`H` is read off the operator as the FFT of its
    impulse response, so no kernel-centring convention is assumed.

    Raises:
        ValueError: ``blur`` is not circular (``blur.boundary != "circular"``) or ``lam <= 0``;
            ``y`` is not of the blur's channels and size (:meth:`~operators.blur.Blur.check_input`).
        TypeError: ``y`` is complex (a blur takes real images), or of another dtype or device than the blur.
    """
    if getattr(blur, "boundary", None) != "circular":
        raise ValueError(
            f"wiener needs a circular blur (boundary='circular'), got boundary={getattr(blur, 'boundary', None)!r}; "
            "use tikhonov for other boundaries"
        )
    _check_nonneg(lam, "lam", strict=True)
    blur.check_input(y, "y")  # else the blur would refuse the impulse below, built like y, as 'x' of its shape
    delta = torch.zeros((1, *y.shape[1:]), dtype=y.dtype, device=y.device)
    delta[..., 0, 0] = 1.0
    impulse = blur.A(delta)
    if y.numel() == 0:  # no sample or no channel: nothing to deconvolve (FFTs refuse empty axes)
        return y.clone()
    transfer = torch.fft.fft2(impulse)
    x = torch.fft.ifft2(transfer.conj() * torch.fft.fft2(y) / (transfer.abs() ** 2 + lam))
    return x.real


def tv_reconstruction(
    y: Tensor,
    physics,
    weight: float,
    *,
    box: tuple[float, float] | None = (0.0, 1.0),
    n_iter: int = 500,
    tol: float = 1e-5,
    x0: Tensor | None = None,
) -> Tensor:
    r"""TV-regularised reconstruction
    :math:`\operatorname{argmin}_x \tfrac12\|Ax - y\|^2 + w\,\mathrm{TV}(x) + \iota_{[lo,hi]}(x)` by
    :func:`liftinv.tv.pdhg_tv` (which also returns the objective history)."""
    x, _ = pdhg_tv(physics, y, weight, box=box, n_iter=n_iter, tol=tol, x0=x0)
    return x
