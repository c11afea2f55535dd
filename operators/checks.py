r"""Input validation, adjoint tests and cached operator norms shared by all operators."""
from __future__ import annotations

import torch
from torch import Tensor


def check_tensor(
    x: Tensor,
    name: str,
    *,
    ndim: int | None = None,
    channels: int | None = None,
    spatial: tuple[int, int] | None = None,
    like: Tensor | None = None,
    finite: bool = True,
) -> Tensor:
    """Validate a tensor argument and return it unchanged.

    Raises:
        TypeError: ``x`` is not a floating tensor, or its dtype/device differ from ``like``.
        ValueError: wrong number of dimensions, channel count or spatial size, or NaN/Inf entries.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if like is not None:
        if x.dtype != like.dtype and not (x.is_complex() or like.is_complex()):
            raise TypeError(f"{name} has dtype {x.dtype} but the operator uses {like.dtype}")
        if x.device != like.device:
            raise TypeError(f"{name} is on {x.device} but the operator is on {like.device}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels (dim 1), got shape {tuple(x.shape)}")
    if spatial is not None and tuple(x.shape[-2:]) != tuple(spatial):
        raise ValueError(f"{name} must have spatial size {tuple(spatial)}, got shape {tuple(x.shape)}")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf entries")
    return x


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Real inner product <a, b> summed over everything (complex tensors: real part of a^H b)."""
    return (a.conj() * b).real.sum() if a.is_complex() else (a * b).sum()


def adjoint_error(physics, x: Tensor, generator: torch.Generator | None = None) -> float:
    r"""Relative dot-product test :math:`|\langle Ax, y\rangle - \langle x, A^*y\rangle| / (|Ax||y|)`
    for a random ``y`` of the shape of :math:`Ax`."""
    ax = physics.A(x)
    y = torch.randn(ax.shape, dtype=ax.dtype, device=ax.device, generator=generator)
    aty = physics.A_adjoint(y)
    err = (_dot(ax, y) - _dot(x, aty)).abs()
    scale = ax.norm() * y.norm() + x.norm() * aty.norm()
    return float(err / scale)


def power_iteration(
    apply_normal, x0: Tensor, *, max_iter: int = 200, rtol: float = 1e-6
) -> tuple[float, Tensor]:
    r"""Largest eigenvalue of a positive semidefinite map ``apply_normal`` (e.g. :math:`A^*A`) by the
    power method from ``x0``; returns ``(lambda_max, last iterate)`` so callers can warm start."""
    x = x0 / x0.norm()
    lam = 0.0
    for _ in range(max_iter):
        y = apply_normal(x)
        new = float(_dot(x, y))
        norm = y.norm()
        if norm == 0:
            return 0.0, x
        x = y / norm
        if abs(new - lam) <= rtol * abs(new):
            return new, x
        lam = new
    return lam, x


def opnorm(physics, x_shape: tuple[int, ...] | None = None, *, max_iter: int = 200, rtol: float = 1e-6) -> float:
    r"""Operator norm :math:`\|A\|_2` by power iteration on :math:`A^*A`, cached on the physics.

    ``x_shape`` defaults to ``physics.img_size`` prefixed by a batch of 1. The cache is keyed by
    shape and dtype and cleared when the operator changes (operators call :func:`clear_opnorm`).
    """
    shape = tuple(x_shape) if x_shape is not None else (1, *physics.img_size)
    dtype = getattr(physics, "dtype", torch.float64)
    key = (shape, dtype)
    cache = physics.__dict__.setdefault("_opnorm_cache", {})
    if key not in cache:
        device = physics._device_holder.device if hasattr(physics, "_device_holder") else "cpu"
        g = torch.Generator(device=device).manual_seed(0)
        x0 = torch.randn(shape, dtype=dtype, device=device, generator=g)
        with torch.no_grad():
            lam, _ = power_iteration(lambda v: physics.A_adjoint(physics.A(v)), x0, max_iter=max_iter, rtol=rtol)
        cache[key] = lam**0.5
    return cache[key]


def clear_opnorm(physics) -> None:
    """Forget the cached operator norms of ``physics`` (call after changing the operator)."""
    physics.__dict__.pop("_opnorm_cache", None)
