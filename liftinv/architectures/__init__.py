r"""Lifted architectures: MLP, ResNet, proximal neural network, unrolled primal-dual.

Each builds a :class:`~liftinv.network.LiftedNetwork` (the unrolled network wraps one as
``.lifted``). :data:`ARCHITECTURES` maps a name to a function ``generator -> Example`` building a
tiny float64 instance with an example input, for contract tests.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from liftinv.activations import LeakyReLU, ReLU, Sigmoid, SoftThreshold, Tanh
from liftinv.affine import Transposed
from liftinv.convert import lift
from liftinv.network import LiftedNetwork
from operators.blur import Blur

from ._common import conv_norm, init_parameters_
from .mlp import MLP
from .pnn import ProximalNeuralNetwork
from .resnet import ResNet
from .unrolled import UnrolledPrimalDual


@dataclass(frozen=True)
class Example:
    """A lifted network with an example input ``u`` and measurements ``y`` (``None`` if unused):
    ``network.feasible(u, y)`` runs it."""

    network: LiftedNetwork
    u: Tensor
    y: Tensor | None = None


def _randn(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=generator)


def _mlp(generator: torch.Generator) -> Example:
    acts = [ReLU(), LeakyReLU(0.2), SoftThreshold(0.1)]
    net = MLP([5, 7, 6, 4, 3], acts, weights=[1.0, 0.5, 2.0, 1.0], output_activation=Sigmoid(), generator=generator)
    return Example(net.double(), _randn(generator, 3, 5))


def _resnet(generator: torch.Generator) -> Example:
    net = ResNet(5, 2, Tanh(), in_features=4, out_features=3, rho=2.0, generator=generator)
    return Example(net.double(), _randn(generator, 3, 4))


def _resnet_tied(generator: torch.Generator) -> Example:
    net = ResNet(5, 2, ReLU(), tied=True, weight=0.5, generator=generator)
    return Example(net.double(), _randn(generator, 3, 5))


def _resnet_conv(generator: torch.Generator) -> Example:
    net = ResNet(3, 2, LeakyReLU(0.1), in_features=2, out_features=1, kernel_size=3, tied=True, generator=generator)
    return Example(net.double(), _randn(generator, 2, 2, 5, 7))


def _resnet_exact(generator: torch.Generator) -> Example:
    net = ResNet(5, 2, Tanh(), in_features=4, out_features=3, rho=2.0, residual="exact", generator=generator)
    return Example(net.double(), _randn(generator, 3, 4))


def _resnet_conv_exact(generator: torch.Generator) -> Example:
    net = ResNet(3, 3, LeakyReLU(0.1), in_features=2, out_features=1, kernel_size=3, tied=True, residual="exact",
                 generator=generator)
    return Example(net.double(), _randn(generator, 2, 2, 5, 7))


def _pnn(generator: torch.Generator) -> Example:
    net = ProximalNeuralNetwork(1, 4, 3, kernel_size=3, threshold=0.1, generator=generator)
    return Example(net.double(), _randn(generator, 2, 1, 7, 9))


def _unrolled(generator: torch.Generator) -> Example:
    kernel = torch.rand(3, 3, dtype=torch.float64, generator=generator)
    physics = Blur(kernel / kernel.sum(), img_size=(1, 7, 9), boundary="zero", dtype=torch.float64)
    net = UnrolledPrimalDual(physics, 3, 2, (1, 7, 9), threshold=0.05, generator=generator).double()
    x = torch.rand(2, 1, 7, 9, dtype=torch.float64, generator=generator)
    u, y = net.lifted_inputs(physics.A(x) + 0.05 * _randn(generator, 2, 1, 7, 9))
    return Example(net.lifted, u, y)


def _lifted_convnet(generator: torch.Generator) -> Example:
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2), nn.Hardtanh(-0.5, 0.5), nn.Flatten(), nn.Linear(18, 5), nn.Softshrink(0.05),
        nn.Linear(5, 18), nn.Unflatten(1, (3, 2, 3)), nn.ConvTranspose2d(3, 1, 3, stride=2), nn.Tanh(),
    )
    init_parameters_(model, generator)
    return Example(lift(model.double(), input_shape=(2, 5, 7)), _randn(generator, 3, 2, 5, 7))


#: Tiny instances of every architecture: name -> ``generator -> Example``.
ARCHITECTURES: dict[str, Callable[[torch.Generator], Example]] = {
    "mlp": _mlp,
    "resnet": _resnet,
    "resnet_tied": _resnet_tied,
    "resnet_conv": _resnet_conv,
    "resnet_exact": _resnet_exact,
    "resnet_conv_exact": _resnet_conv_exact,
    "pnn": _pnn,
    "unrolled_primal_dual": _unrolled,
    "lifted_convnet": _lifted_convnet,
}

__all__ = [
    "ARCHITECTURES",
    "Example",
    "MLP",
    "ProximalNeuralNetwork",
    "ResNet",
    "Transposed",
    "UnrolledPrimalDual",
    "conv_norm",
]
