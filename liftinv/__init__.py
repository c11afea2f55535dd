"""liftinv: lifted Bregman training and stable inversion of neural networks for imaging.

The main nouns: proximal :mod:`~liftinv.activations`, the :mod:`~liftinv.penalty` family
(``BREGMAN``, ``MAC``, ``FENCHEL``), :class:`Layer` and :class:`LiftedNetwork`, ready-made
:mod:`~liftinv.architectures`, :func:`lift` for plain torch models, :class:`LiftedProblem` (the
energy as blocks) and the :mod:`~liftinv.solvers` (``BCD``, ``ISGM``); the entry points
:func:`train`, :func:`invert` and :func:`reconstruct`.
"""
__version__ = "0.1.0"

from liftinv.activations import (
    Activation, Clip, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, SoftThreshold, Tanh, as_activation,
)
from liftinv.architectures import ARCHITECTURES, MLP, ProximalNeuralNetwork, ResNet, UnrolledPrimalDual
from liftinv.convert import lift
from liftinv.inversion import InversionConfig, InversionResult, invert
from liftinv.inversion_baseline import GradientOptimizer, invert_gradient
from liftinv.layer import Layer
from liftinv.models import load_model, save_model
from liftinv.network import LiftedNetwork
from liftinv.penalty import BREGMAN, FENCHEL, MAC, bregman
from liftinv.potentials import L1, TV, Box, DeepinvPrior, SquaredError, Tikhonov
from liftinv.problem import LiftedProblem
from liftinv.reconstruction import reconstruct
from liftinv.training import Backprop, Lifted, train
