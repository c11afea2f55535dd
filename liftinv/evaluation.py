r"""Held-out evaluation by the plain forward pass: unlifted loss, PSNR and SSIM.

The observations of a held-out set are drawn once, from a generator seeded from ``seed``
(:func:`held_out_generator`), so every model (and every method being compared) is scored on the
same noisy inputs.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from liftinv.metrics import SSIM_SIDE, psnr, ssim
from liftinv.tasks import Task
from liftinv.validation import positive_int, seed_int


def sample_loss(output: Tensor, target: Tensor) -> Tensor:
    r"""Per-sample unlifted loss :math:`\tfrac12\|N(u) - t\|^2`, shape ``(B,)``."""
    return 0.5 * (output - target).pow(2).flatten(1).sum(1)


#: Key mixed into a held-out seed (the bytes of "held"), see :func:`held_out_generator`.
HELD_OUT_KEY = 0x68656C64


def derived_seed(key: int, *values: int) -> int:
    """The 32-bit word of NumPy's ``SeedSequence([key, *values mod 2**64])``: a seed for a stream
    of its own, apart from the streams of other keys and of the integers themselves (torch's CPU
    generator keeps the low 32 bits of its seed, so one word is all it takes)."""
    return int(np.random.SeedSequence([key, *(int(v) % 2**64 for v in values)]).generate_state(1)[0])


def held_out_generator(seed: int) -> torch.Generator:
    """The CPU generator of a held-out set's noise: seeded with the 32-bit word of NumPy's
    ``SeedSequence([HELD_OUT_KEY, seed mod 2**64])``, not with ``seed`` itself. A training run
    seeds its generator with a small integer too (:func:`~liftinv.training.train`'s default and
    ``liftinv train --seed``: 0); with the same seed, the noise of the first epoch's batches
    continued the stream the held-out noise was drawn from, after the shuffle's draws (in float32
    most of the validation noise values came back in training, shifted by ``N - 1`` entries).
    The derived seed is :func:`derived_seed` ``(HELD_OUT_KEY, seed)``."""
    return torch.Generator().manual_seed(derived_seed(HELD_OUT_KEY, seed))


@dataclass(frozen=True)
class Metrics:
    """Means over a held-out set: ``loss`` (:func:`sample_loss`), ``psnr`` (dB, data range 1) and
    ``ssim`` (NaN when the images are smaller than the 11x11 SSIM window)."""

    loss: float
    psnr: float
    ssim: float


def bind_to_task(model: nn.Module, task: Task) -> None:
    """Bind a model that has ``bind(physics)`` (the unrolled networks) to the physics of a task
    that has one (:class:`~liftinv.tasks.Reconstruction`), so that it reconstructs with the
    operator that took the observations; its ``bind`` refuses an operator it was not built for.
    Any other model or task is left as it is."""
    physics, bind = getattr(task, "physics", None), getattr(model, "bind", None)
    if physics is not None and callable(bind):
        bind(physics)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode within the block (dropout off, batch norm on its running
    statistics), every module's own mode restored after it."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.train(training)


class HeldOut:
    """A held-out set with fixed observations, evaluated chunk by chunk without gradients, with the
    model in eval mode (:func:`eval_mode`: a held-out score is that of the trained model, not of
    one normalising by the batch or dropping entries).

    Args:
        images: clean images ``(N, C, H, W)``, ``N >= 1``.
        task: turns them into observations and targets.
        batch_size: chunk size of the forward passes, an integer >= 1 (the observations do not
            depend on it).
        seed: seed of the held-out noise, an integer (Python or NumPy, not a bool): the noise is
            drawn all at once by :func:`held_out_generator` on the CPU, then moved to the images'
            device, so the observations are the same on every device (as the training noise of
            :func:`~liftinv.training.train`'s default generator).

    Raises:
        ValueError: ``batch_size`` is not an integer >= 1, ``seed`` is not an integer, or there
            is no image.
    """

    def __init__(self, images: Tensor, task: Task, batch_size: int, seed: int = 0):
        batch_size = positive_int("batch_size", batch_size)
        seed = seed_int("seed", seed)
        if images.ndim == 0 or images.shape[0] == 0:
            raise ValueError(f"images must hold at least one image (N, C, H, W), got shape {tuple(images.shape)}")
        batch = task.observe(images, held_out_generator(seed))
        self.chunks = list(zip(batch.observation.split(batch_size), batch.target.split(batch_size), images.split(batch_size)))
        self.task = task
        self.count = images.shape[0]

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> Metrics:
        """Mean loss, PSNR and SSIM of ``model(observation)`` against the targets, a model with
        ``bind(physics)`` bound to the task's physics first (:func:`bind_to_task`, as
        :func:`~liftinv.training.train` binds it).

        Raises:
            ValueError: ``model.bind`` refuses the task's physics (an operator of another spec
                or norm than the one the network was built for).
        """
        bind_to_task(model, self.task)
        loss = value_psnr = value_ssim = 0.0
        with eval_mode(model):
            for obs, target, clean in self.chunks:
                out = model(obs)
                loss += float(sample_loss(out, target).sum())
                image = self.task.image(out, clean)
                value_psnr += float(psnr(image, clean).sum())
                if min(clean.shape[-2:]) >= SSIM_SIDE:
                    value_ssim += float(ssim(image, clean).sum())
                else:
                    value_ssim = float("nan")
        n = self.count
        return Metrics(loss / n, value_psnr / n, value_ssim / n)


def evaluate(model: nn.Module, images: Tensor, *, task: Task, batch_size: int = 64, seed: int = 0) -> Metrics:
    """Score ``model`` on clean ``images`` ``(N, C, H, W)`` under ``task`` (see :class:`HeldOut`;
    a model with ``bind(physics)`` is bound to the task's physics)."""
    return HeldOut(images, task, batch_size, seed).evaluate(model)
