r"""Ready-made training setups on the bundled data, shared by ``liftinv train`` and the training
benchmark. Each builds fresh models (seeded), the task, the clean train/val/test images and the
lifted configurations tuned for it.

* ``denoising``: proximal neural network (clip activations, 4 layers of 16 5x5 filters) for
  Gaussian denoising (:math:`\sigma = 0.1`) of 32x32 natural patches.
* ``deblurring``: unrolled primal-dual network (4 iterations, 8 3x3 filters) for Gaussian blur
  (standard deviation 1.5 px, zero boundary) plus noise :math:`\sigma = 0.01` on 32x32 patches.
* ``ct``: unrolled primal-dual network (10 iterations from :math:`x_0 = 0`, 8 3x3 filters) for
  sparse-view CT (16 angles in [0, 180)) with noise :math:`\sigma = 0.1` on the sinogram (about
  0.4% of its maximum at 32x32, 0.2% at 64x64), on ellipse phantoms resized to 32x32 (``quick``)
  or 64x64.
* ``autoencoder``: sparse denoising autoencoder MLP 256-128-64-128-256 on 16x16 patches (ReLU
  hidden layers, soft-threshold code layer, identity output), input noise :math:`\sigma = 0.1`.

Penalty weights :math:`\lambda_k` are 1 (smaller hidden weights learned faster in the first
epoch but plateaued lower in our tuning), except for the dual layers of the CT network, weighted
:math:`1/s^2`: their maps carry the dual step :math:`s = \|A\|^2/2.02` (about 245 at 32x32, 490
at 64x64), which otherwise makes the primal variables' Lipschitz constants, hence their BCD
steps, tiny. For lifted BCD, :meth:`Setup.model` then multiplies them by powers of
:attr:`Setup.depth_ratio` growing from the output down (10 on the denoiser and on deblurring,
3 on the autoencoder: :meth:`~liftinv.network.LiftedNetwork.scale_weights_by_depth`). That
brings one sweep's parameter gradients close to backpropagation's (``python -m liftinv.bench
alignment``), and per epoch the denoiser then learned as much as backpropagation, deblurring and
the autoencoder more than with equal weights. On deblurring the parameter blocks also move at
the end of each sweep (``BCD(defer_params=True)``): moved at once, a layer's new parameters
reach the variables below it through the layers that read variables of several depths, and
ratio 10 then learned less than equal weights (26.95 against 28.67 dB test PSNR after 12
epochs); deferred, ratio 10 learned more than ratio 3 without deferral (validation PSNR over
epochs 8-12 higher by 0.13, 0.30 and 0.23 dB on average for three seeds; ratio 3 was 0.17-0.19
dB above equal weights over 12 epochs; the validation curve goes up and down by a few tenths of
a dB from epoch to epoch). On CT ratios of 1.3-10 made no difference beyond the
epoch-to-epoch spread or learned less, and on the denoiser (:math:`K = 5`) ratios of 100 and more lose the bottom layers'
gradients to float32 rounding (a residual times :math:`\lambda_k`; alignment of the bottom
group: cosine 1.00 at ratio 10, 0.68 at 100, -0.41 at 300). Lifted BCD updates the parameters
with Adam (it matched backpropagation epoch for epoch, where Nesterov and heavy ball with
Lipschitz steps were slower) and keeps Lipschitz constants for 20 batches; on denoising and deblurring it moves each layer's parameters with
that layer's input variable (``BCD(interleave=True)``: on deblurring the default order levels
off at a lower validation PSNR, and with the depth ratio 3 it fell to 23.4 dB at epoch 12 of the
quick setup, so ``--sweep-order top-down`` there wants ``--depth-ratio 1``, where deferral changes
nothing; on the denoiser it learns as much per epoch at a lower cost per
epoch; see ``liftinv train --sweep-order``; no gain on CT).

ISGM's proximal weight :math:`1/\eta = 2` is orders of magnitude below most parameter blocks'
Lipschitz constants on these setups, so its inner steps are about :math:`1/L`. On the PNN denoiser
it takes two interleaved inner sweeps with steps :math:`1.9/L`, Nesterov extrapolation (0.9) on
the parameter blocks and Lipschitz constants kept for 20 batches: faster per second than one plain
sweep with fresh constants, at a higher peak memory (the first sweep keeps every cached
pre-activation for the second). Elsewhere it takes that plain sweep: in our tuning the
extrapolated variant's validation PSNR swung by more than 1 dB from epoch to epoch on deblurring,
it learned less on CT and it diverged on the autoencoder, as did kept constants.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from liftinv.activations import ReLU, SoftThreshold
from liftinv.architectures import MLP, ProximalNeuralNetwork, UnrolledPrimalDual
from liftinv.data import load_dataset
from liftinv.penalty import BREGMAN
from liftinv.solvers import BCD, ISGM, Adam, Nesterov
from liftinv.tasks import Autoencoder, Denoising, Reconstruction, Task
from liftinv.methods import Backprop, Lifted, lifted_view
from liftinv.validation import check_flag, seed_int
from operators.blur import Blur
from operators.kernels import gaussian_kernel
from operators.radon import Radon

#: Names accepted by :func:`build_setup`.
SETUP_NAMES = ("denoising", "deblurring", "ct", "autoencoder")

#: Seed of the test images' observation noise (``evaluate(..., seed=TEST_SEED)`` in ``liftinv
#: train`` and the training benchmark). :func:`~liftinv.training.train` draws the validation noise
#: with seed 0: with the same seed the two held-out sets had the same noise field image for image
#: (the first ``len(val)`` test images), so the test scores were not independent of the validation
#: ones that select configurations.
TEST_SEED = 1


@dataclass(frozen=True)
class Setup:
    """A task on bundled data with its model factory and tuned lifted methods.

    Attributes:
        name: one of :data:`SETUP_NAMES`.
        make_model: builds a fresh, identically initialised model (dtype and device of the setup).
        task: the :class:`~liftinv.tasks.Task`.
        train, val, test: clean images ``(N, C, H, W)`` (held-out noise: validation seed 0 in
            :func:`~liftinv.training.train`, test :data:`TEST_SEED`).
        batch_size: training batch size.
        bcd: lifted Bregman with BCD (the update rule that worked best in our tuning).
        isgm: lifted Bregman with ISGM.
        depth_ratio: the ratio of :meth:`~liftinv.network.LiftedNetwork.scale_weights_by_depth`
            that :meth:`model` applies for lifted BCD methods.
    """

    name: str
    make_model: Callable[[], nn.Module]
    task: Task
    train: Tensor
    val: Tensor
    test: Tensor
    batch_size: int
    bcd: Lifted
    isgm: Lifted
    depth_ratio: float = 1.0

    def ratio_for(self, method: Lifted | Backprop) -> float:
        """The depth ratio :meth:`model` applies for ``method``: :attr:`depth_ratio` when it is
        lifted with a :class:`~liftinv.solvers.BCD` solver, else 1 (ISGM keeps the weights: in
        our tuning, the denoiser's ISGM learned less with them scaled)."""
        return self.depth_ratio if isinstance(method, Lifted) and isinstance(method.solver, BCD) else 1.0

    def model(self, method: Lifted | Backprop) -> nn.Module:
        """A fresh model to train with ``method``: :attr:`make_model`'s, with its penalty weights
        scaled by :meth:`ratio_for` ``(method)`` from the output down."""
        model, ratio = self.make_model(), self.ratio_for(method)
        if ratio != 1:
            lifted_view(model)[0].scale_weights_by_depth(ratio)
        return model


def _split(name: str, size: int | None, counts: tuple[int, int, int], dtype, device) -> list[Tensor]:
    return [
        load_dataset(name, split, size=size, dtype=dtype).tensors[0][:n].to(device)
        for split, n in zip(("train", "val", "test"), counts)
    ]


def build_setup(
    name: str, *, quick: bool = True, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Setup:
    """The setup ``name`` (see the module docstring); ``quick`` uses fewer images (train / val /
    test 512 / 64 / 128 instead of 2048 / 256 / 256; CT: the same 512 / 64 / 64 phantoms at 32x32
    instead of 64x64). ``seed`` (an integer, Python or NumPy, not a bool) seeds the generator of
    every ``make_model`` call.

    Raises:
        ValueError: unknown ``name``, or ``seed`` not an integer.
        TypeError: ``quick`` is not a bool.
    """
    if name not in SETUP_NAMES:
        raise ValueError(f"name must be one of {SETUP_NAMES}, got {name!r}")
    check_flag("quick", quick)
    seed = seed_int("seed", seed)
    counts = (512, 64, 128) if quick else (2048, 256, 256)

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def lifted(lr: float, interleave: bool = False, extrapolated_isgm: bool = False, defer: bool = False) -> tuple[Lifted, Lifted]:
        solver = BCD(param_rule=Adam(lr), interleave=interleave, defer_params=defer)
        bcd = Lifted(BREGMAN, solver, lipschitz_every=20, power_iters=1)
        if extrapolated_isgm:
            inner = BCD(param_rule=Nesterov(0.9), step_scale=1.9, interleave=True)
            isgm = Lifted(BREGMAN, ISGM(eta=0.5, inner=inner, inner_steps=2), lipschitz_every=20, power_iters=1)
        else:
            isgm = Lifted(BREGMAN, ISGM(eta=0.5, inner=BCD(), inner_steps=1), power_iters=1)
        return bcd, isgm

    if name == "denoising":
        train, val, test = _split("patches", None, counts, dtype, device)

        def make_model() -> nn.Module:
            net = ProximalNeuralNetwork(1, 16, 4, kernel_size=5, threshold=0.05, generator=gen())
            return net.to(dtype=dtype, device=device)

        bcd, isgm = lifted(5e-3, interleave=True, extrapolated_isgm=True)
        return Setup(name, make_model, Denoising(0.1), train, val, test, 32, bcd, isgm, depth_ratio=10)

    if name == "deblurring":
        train, val, test = _split("patches", None, counts, dtype, device)
        physics = Blur(gaussian_kernel(1.5, dtype=dtype), img_size=(1, 32, 32), boundary="zero", dtype=dtype, device=device)

        def make_model() -> nn.Module:
            net = UnrolledPrimalDual(physics, 4, 8, (1, 32, 32), threshold=0.02, generator=gen())
            return net.to(dtype=dtype, device=device)

        bcd, isgm = lifted(1e-2, interleave=True, defer=True)
        return Setup(name, make_model, Reconstruction(physics, 0.01), train, val, test, 32, bcd, isgm, depth_ratio=10)

    if name == "ct":
        size = 32 if quick else 64
        train, val, test = _split("ellipses", size, (512, 64, 64), dtype, device)
        physics = Radon(size, 16, dtype=dtype, device=device)

        def make_model() -> nn.Module:
            net = UnrolledPrimalDual(physics, 10, 8, (1, size, size), threshold=0.1, adjoint_init=False, generator=gen())
            for layer in list(net.lifted.layers)[1::2]:  # dual layers: their maps carry s ~ |A|^2 / 2
                layer.weight = 1 / net.s**2
            return net.to(dtype=dtype, device=device)

        bcd, isgm = lifted(1e-2)
        return Setup(name, make_model, Reconstruction(physics, 0.1), train, val, test, 16, bcd, isgm)

    train, val, test = _split("patches", 16, counts, dtype, device)

    def make_model() -> nn.Module:
        acts = [ReLU(), SoftThreshold(0.01), ReLU()]
        return MLP([256, 128, 64, 128, 256], acts, generator=gen()).to(dtype=dtype, device=device)

    bcd, isgm = lifted(1e-3)
    return Setup(name, make_model, Autoencoder(0.1), train, val, test, 32, bcd, isgm, depth_ratio=3)
