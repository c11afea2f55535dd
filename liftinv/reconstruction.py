r"""One entry point for reconstructions :math:`y \mapsto x`: :func:`reconstruct` with a method.

Methods are small frozen dataclasses:

* :class:`Adjoint`: :math:`A^* y`;
* :class:`FBP`: filtered back-projection (``Radon`` only);
* :class:`ZeroFilled`: zero-filled inverse FFT (``MRI`` only);
* :class:`Tikhonov`: :math:`\operatorname{argmin}_x \tfrac12\|Ax - y\|^2 + \tfrac{w}{2}\|x\|^2` by CG;
* :class:`Wiener`: the same minimiser in closed form (circular ``Blur`` only);
* :class:`TV`: :math:`\operatorname{argmin}_x \tfrac12\|Ax - y\|^2 + w\,\mathrm{TV}(x) + \iota_{[lo,hi]}(x)` by PDHG;
* :class:`Trained`: a trained network ``net(y, physics)``; a :class:`~liftinv.models.SavedModel`
  from :func:`~liftinv.models.load_model` is accepted as a method too, and its operator spec is
  checked against ``physics``.

They wrap :mod:`liftinv.classical` and :func:`liftinv.tv.pdhg_tv`. :func:`default_method` picks
FBP for CT, zero-filled for MRI and Tikhonov for blur.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from liftinv import classical
from liftinv.models import SavedModel
from liftinv.tv import _check_box
from operators.blur import Blur
from operators.checks import check_tensor, is_integer, is_real
from operators.mri import MRI
from operators.radon import FILTERS, Radon
from operators.spec import check_spec, physics_spec


def _weight(name: str, value: object, *, strict: bool = False) -> None:
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if strict else '>= 0'}, got {value!r}")


def _count(name: str, value: object) -> int:
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _require(method: object, physics, cls: type) -> None:
    if not isinstance(physics, cls):
        raise TypeError(f"{type(method).__name__} needs a {cls.__name__} physics, got {type(physics).__name__}")


@dataclass(frozen=True)
class Adjoint:
    r""":math:`x = A^* y` (:func:`liftinv.classical.adjoint`)."""

    def __call__(self, y: Tensor, physics) -> Tensor:
        return classical.adjoint(y, physics)


@dataclass(frozen=True)
class FBP:
    r"""Filtered back-projection :math:`\frac{\pi}{2 n_{angles}} A^\top (h * y)`
    (:func:`liftinv.classical.fbp`); ``filter`` is one of :data:`operators.radon.FILTERS`."""

    filter: str = "ramp"

    def __post_init__(self):
        if self.filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}, got {self.filter!r}")

    def __call__(self, y: Tensor, physics) -> Tensor:
        _require(self, physics, Radon)
        return classical.fbp(y, physics, self.filter)


@dataclass(frozen=True)
class ZeroFilled:
    r"""Zero-filled reconstruction :math:`A^* y` of MRI data (:func:`liftinv.classical.zero_filled`)."""

    def __call__(self, y: Tensor, physics) -> Tensor:
        _require(self, physics, MRI)
        return classical.zero_filled(y, physics)


@dataclass(frozen=True)
class Tikhonov:
    r""":math:`\operatorname{argmin}_x \tfrac12\|Ax - y\|^2 + \tfrac{w}{2}\|x\|^2` by conjugate
    gradients (:func:`liftinv.classical.tikhonov` with ``lam = weight``)."""

    weight: float
    n_iter: int = 200
    tol: float = 1e-6

    def __post_init__(self):
        _weight("weight", self.weight)
        object.__setattr__(self, "n_iter", _count("n_iter", self.n_iter))  # frozen
        _weight("tol", self.tol)

    def __call__(self, y: Tensor, physics) -> Tensor:
        return classical.tikhonov(y, physics, self.weight, n_iter=self.n_iter, tol=self.tol)


@dataclass(frozen=True)
class Wiener:
    r"""Closed-form Tikhonov deconvolution of a circular blur (:func:`liftinv.classical.wiener`, ``lam = weight > 0``)."""

    weight: float

    def __post_init__(self):
        _weight("weight", self.weight, strict=True)

    def __call__(self, y: Tensor, physics) -> Tensor:
        _require(self, physics, Blur)
        return classical.wiener(y, physics, self.weight)


@dataclass(frozen=True)
class TV:
    r""":math:`\operatorname{argmin}_x \tfrac12\|Ax - y\|^2 + w\,\mathrm{TV}(x) + \iota_{[lo,hi]}(x)`
    by PDHG (:func:`liftinv.tv.pdhg_tv`); ``box=None`` drops the constraint."""

    weight: float
    n_iter: int = 500
    tol: float = 1e-5
    box: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self):
        _weight("weight", self.weight)
        object.__setattr__(self, "n_iter", _count("n_iter", self.n_iter))  # frozen
        _weight("tol", self.tol)
        _check_box(self.box)

    def __call__(self, y: Tensor, physics) -> Tensor:
        return classical.tv_reconstruction(y, physics, self.weight, box=self.box, n_iter=self.n_iter, tol=self.tol)


@dataclass(frozen=True, eq=False)
class Trained:
    """A trained reconstruction network, run as ``model(y, physics)`` without gradients.

    Args:
        model: an ``nn.Module`` taking ``(y, physics)`` (e.g. an
            :class:`~liftinv.architectures.UnrolledPrimalDual`).
        spec: the operator spec the model was trained for; when given, the physics passed to
            :func:`reconstruct` must match it (``ValueError`` naming the differing settings).
    """

    model: nn.Module
    spec: dict | None = None

    def __post_init__(self):
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(self.model).__name__}")

    def __call__(self, y: Tensor, physics) -> Tensor:
        if self.spec is not None:
            check_spec(self.spec, physics_spec(physics), context="model was trained for")
        ref = next(self.model.parameters(), None)
        if ref is not None and y.dtype != ref.dtype:
            raise TypeError(f"y has dtype {y.dtype} but the model uses {ref.dtype}")
        with torch.no_grad():
            return self.model(y, physics)


Method = Adjoint | FBP | ZeroFilled | Tikhonov | Wiener | TV | Trained
METHODS = (Adjoint, FBP, ZeroFilled, Tikhonov, Wiener, TV, Trained)


def default_method(physics) -> Method:
    """:class:`FBP` for ``Radon``, :class:`ZeroFilled` for ``MRI``, ``Tikhonov(0.03)`` for
    ``Blur`` (the demo's weight for noise level 0.02 on [0, 1] images), else :class:`Adjoint`."""
    if isinstance(physics, Radon):
        return FBP()
    if isinstance(physics, MRI):
        return ZeroFilled()
    if isinstance(physics, Blur):
        return Tikhonov(0.03)
    return Adjoint()


def reconstruct(y: Tensor, physics, method: Method | SavedModel | None = None) -> Tensor:
    """Reconstruct images from measurements ``y`` of ``physics`` with ``method``.

    Args:
        y: measurements in the layout of ``physics.A(x)``; checked to be a finite floating tensor
            of the operator's dtype and shape (the shape by the operator itself).
        physics: a deepinv ``LinearPhysics`` (``A``, ``A_adjoint``).
        method: one of :data:`METHODS`, a :class:`~liftinv.models.SavedModel`, or ``None`` for
            :func:`default_method`.

    Raises:
        TypeError: unknown method; a method that needs another operator class (``FBP`` without
            ``Radon``...); ``y`` not a floating tensor or of another dtype than the operator.
        ValueError: NaN/Inf in ``y``; a shape the operator rejects; a trained model used with an
            operator other than the one it was trained for.
    """
    if not (callable(getattr(physics, "A", None)) and callable(getattr(physics, "A_adjoint", None))):
        raise TypeError(f"physics must be a linear operator with A and A_adjoint, got {type(physics).__name__}")
    check_tensor(y, "y")
    dtype = getattr(physics, "dtype", None)
    if isinstance(dtype, torch.dtype) and not y.is_complex() and y.dtype != dtype:
        raise TypeError(f"y has dtype {y.dtype} but the operator uses {dtype}")
    if isinstance(method, SavedModel):
        method = Trained(method.net, method.spec)
    elif method is None:
        method = default_method(physics)
    elif not isinstance(method, METHODS):
        kind = type(method)
        raise TypeError(f"method must be one of liftinv.reconstruction's {[m.__name__ for m in METHODS]} or a SavedModel, "
                        f"got {kind.__module__}.{kind.__qualname__}")
    return method(y, physics)


__all__ = [
    "METHODS", "TV", "Adjoint", "FBP", "Method", "Tikhonov", "Trained", "Wiener", "ZeroFilled",
    "default_method", "reconstruct",
]
