"""Example instances of every activation, and conversion of ``torch.nn`` activation modules.

A scalar map is the proximal map of a proper convex lsc function exactly when it is
non-decreasing and 1-Lipschitz (firmly non-expansive); :func:`as_activation` converts the torch
modules whose :math:`\\Psi` liftinv implements and refuses the others with the reason.
"""
from __future__ import annotations

import math

from torch import nn

from liftinv.validation import forward_replaced, is_compiled, keeps_forward

from .base import Activation
from .piecewise import Clip, Identity, LeakyReLU, ReLU, SoftThreshold
from .smooth import Sigmoid, Tanh
from .softmax import Softmax

#: One small instance of every activation, for contract tests.
ACTIVATIONS: tuple[Activation, ...] = (
    Identity(),
    ReLU(),
    LeakyReLU(0.2),
    SoftThreshold(0.3),
    Clip(-0.5, 1.5),
    Tanh(),
    Sigmoid(),
    Softmax(),
)

SUPPORTED = (
    "nn.Identity, nn.ReLU, nn.LeakyReLU(0 <= negative_slope <= 1), nn.Hardtanh (and nn.ReLU6), "
    "nn.Softshrink, nn.Tanh, nn.Sigmoid, nn.Softmax(dim=1), liftinv activations"
)

_MONOTONE_LIPSCHITZ = (
    "is monotone and 1-Lipschitz, hence a proximal map, but liftinv has no closed form of its Psi"
)
_NOT_PROX = ", hence not a proximal map"
_STEEP = "has slope above 1 (not non-expansive)" + _NOT_PROX
#: Refused torch modules (checked in order with isinstance) and why.
_REASONS: dict[type, str] = {
    nn.GELU: "is non-monotone" + _NOT_PROX,
    nn.SiLU: "is non-monotone" + _NOT_PROX,
    nn.Mish: "is non-monotone" + _NOT_PROX,
    nn.Hardswish: "is non-monotone" + _NOT_PROX,
    nn.Softmin: "is decreasing (non-monotone)" + _NOT_PROX,
    nn.LogSoftmax: "has the non-symmetric Jacobian I - 1 softmax^T, so it is not the gradient of "
    "a convex function" + _NOT_PROX,
    nn.SELU: "has slope scale = 1.0507 > 1 (not non-expansive)" + _NOT_PROX,
    nn.PReLU: "has an unconstrained learnable slope (it may be negative or above 1); "
    "use nn.LeakyReLU with a fixed slope in [0, 1]",
    nn.RReLU: "has a random slope in training mode; use nn.LeakyReLU with a fixed slope in [0, 1]",
    nn.Hardshrink: "with lambd > 0 is discontinuous" + _NOT_PROX,
    nn.Threshold: "with value != threshold is discontinuous" + _NOT_PROX,
    nn.Softplus: _MONOTONE_LIPSCHITZ,
    nn.CELU: _MONOTONE_LIPSCHITZ,
    nn.LogSigmoid: _MONOTONE_LIPSCHITZ,
    nn.Softsign: _MONOTONE_LIPSCHITZ,
    nn.Tanhshrink: _MONOTONE_LIPSCHITZ,
    nn.Hardsigmoid: _MONOTONE_LIPSCHITZ,
}

#: torch activations that :func:`as_activation` takes as their exact class only (a subclass may
#: compute another map; ``nn.Hardtanh``'s subclasses that keep its ``forward`` are taken).
_EXACT_CLASSES = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Softshrink, nn.Hardshrink, nn.Threshold, nn.ELU, nn.Tanh,
                  nn.Sigmoid, nn.Softmax)


def as_activation(module: nn.Module) -> Activation:
    """Convert a torch activation module to the liftinv activation with the same forward map.

    Args:
        module: a liftinv :class:`Activation` (returned as it is) or one of ``nn.Identity``,
            ``nn.ReLU``, ``nn.LeakyReLU`` (``0 <= negative_slope <= 1``; 0 gives ReLU, 1 the
            identity), ``nn.Hardtanh`` (incl. ``nn.ReLU6``, not a subclass overriding
            ``forward``; finite bounds, ``min_val < max_val``) -> :class:`Clip`,
            ``nn.Softshrink`` (``lambd >= 0``) -> :class:`SoftThreshold` (``lambd = 0`` gives
            the identity), ``nn.Tanh``, ``nn.Sigmoid``, ``nn.Softmax(dim=1)``, and the
            continuous cases of discontinuous maps: ``nn.Hardshrink(lambd <= 0)`` (the
            identity) and ``nn.Threshold(0, 0)`` (ReLU); and ``nn.ELU(alpha=0)``, which is ReLU.

    Raises:
        TypeError: the module is not a proximal map (non-monotone, slope above 1, discontinuous)
            or is one whose :math:`\\Psi` liftinv does not implement, or its ``forward`` was
            replaced on the instance (``module.forward = ...``); the message says which.
    """
    if isinstance(module, Activation):
        return module
    converted = _convert(module)
    if converted is None:
        raise TypeError(f"{module!r} cannot be used as a proximal activation: {_reason(module)}. "
                        f"Supported: {SUPPORTED}.")
    return converted


def _convert(module: nn.Module) -> Activation | None:
    # Exact type checks where torch subclasses change the map (nn.ReLU6 is a Hardtanh: allowed);
    # an instance whose forward was replaced computes another map than its class's.
    if forward_replaced(module):
        return None
    if type(module) is nn.Identity:
        return Identity()
    if type(module) is nn.ReLU:
        return ReLU()
    if type(module) is nn.LeakyReLU and 0 <= module.negative_slope <= 1:
        slope = module.negative_slope
        return ReLU() if slope == 0 else Identity() if slope == 1 else LeakyReLU(slope)
    if keeps_forward(module, nn.Hardtanh) and -math.inf < module.min_val < module.max_val < math.inf:
        return Clip(module.min_val, module.max_val)
    if type(module) is nn.Softshrink and module.lambd >= 0:
        return Identity() if module.lambd == 0 else SoftThreshold(module.lambd)
    if type(module) is nn.Hardshrink and module.lambd <= 0:  # x if |x| > lambd: the identity
        return Identity()
    if type(module) is nn.Threshold and module.threshold == module.value == 0:  # max(x, 0)
        return ReLU()
    if type(module) is nn.ELU and module.alpha == 0:  # alpha (e^x - 1) = 0 for x <= 0: max(x, 0)
        return ReLU()
    if type(module) is nn.Tanh:
        return Tanh()
    if type(module) is nn.Sigmoid:
        return Sigmoid()
    if type(module) is nn.Softmax and module.dim == 1:
        return Softmax()
    return None


def _reason(module: nn.Module) -> str:
    name = type(module).__name__
    if is_compiled(module):
        return "it is a torch.compile'd module; pass the module it compiles (module._orig_mod)"
    if forward_replaced(module):
        return (f"this {name} has its forward replaced on the instance (module.forward = ...), so it may compute "
                f"another map than nn.{name}'s")
    for cls in _EXACT_CLASSES:
        if isinstance(module, cls) and type(module) is not cls:
            return (f"{name} subclasses nn.{cls.__name__}, which is taken as nn.{cls.__name__} itself only (a "
                    "subclass may compute another map)")
    if isinstance(module, nn.LeakyReLU):
        slope = module.negative_slope
        if math.isnan(slope):
            return f"LeakyReLU with negative_slope={slope} is not a number"
        if slope < 0:
            return f"LeakyReLU with negative_slope={slope} < 0 is non-monotone" + _NOT_PROX
        return f"LeakyReLU with negative_slope={slope} > 1 " + _STEEP
    if isinstance(module, nn.ELU):
        if math.isnan(module.alpha):
            return f"ELU with alpha={module.alpha} is not a number"
        if module.alpha < 0:
            return f"ELU with alpha={module.alpha} < 0 is non-monotone" + _NOT_PROX
        if module.alpha > 1:
            return f"ELU with alpha={module.alpha} > 1 " + _STEEP
        return f"ELU with alpha={module.alpha} in (0, 1] " + _MONOTONE_LIPSCHITZ
    if isinstance(module, nn.Hardtanh) and not keeps_forward(module, nn.Hardtanh):
        return f"{name} subclasses nn.Hardtanh but overrides its forward, so it may not be the clip"
    if isinstance(module, nn.Hardtanh):
        return (f"{name} with min_val={module.min_val}, max_val={module.max_val}: liftinv's Clip needs finite "
                "bounds, min_val < max_val (as torch's constructor asks)")
    if isinstance(module, nn.Softshrink) and not module.lambd >= 0:
        return f"Softshrink with lambd={module.lambd} (not >= 0) is not a soft-threshold (torch refuses it too)"
    if isinstance(module, nn.Threshold) and module.threshold == module.value:
        return (f"Threshold with threshold = value = {module.threshold} is max(x, {module.threshold}), a proximal "
                "map (the projection onto a half-line), but liftinv has it only for 0 (ReLU)")
    if isinstance(module, nn.Softmax):
        implicit = (" (torch's deprecated implicit dim, 0 or 1 by the input's number of dimensions; pass dim=1)"
                    if module.dim is None else "")
        return f"Softmax is supported over dim=1 only (the class dimension), got dim={module.dim}{implicit}"
    for cls, why in _REASONS.items():
        if isinstance(module, cls):
            return f"{name} {why}"
    return f"{name} is not a recognised proximal activation"
