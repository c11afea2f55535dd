r"""Proximal activations :math:`\sigma = \operatorname{prox}_\Psi` (see :mod:`.base`)."""
from .base import Activation, check_step, real_hparam
from .piecewise import Clip, Identity, LeakyReLU, ReLU, SoftThreshold
from .registry import ACTIVATIONS, as_activation
from .smooth import LegendreActivation, Sigmoid, Tanh
from .softmax import Softmax

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Clip",
    "Identity",
    "LeakyReLU",
    "LegendreActivation",
    "ReLU",
    "Sigmoid",
    "SoftThreshold",
    "Softmax",
    "Tanh",
    "as_activation",
    "check_step",
    "real_hparam",
]
