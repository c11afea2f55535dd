r"""Training entry point: lifted training (BCD or ISGM on the lifted energy) or backpropagation,
through one function so that comparisons are one argument apart.

Per mini-batch: clean images -> ``task.observe`` ->
network input :math:`u` and measurements :math:`y` -> forward pass :math:`x_0..x_K` (the
auxiliaries start feasible) -> top variable clamped to the target -> a
:class:`~liftinv.problem.LiftedProblem` with the hidden variables and the parameters free ->
``sweeps_per_batch`` solver steps, parameters updated in place. For each layer :math:`k` the
energy is :math:`\sum_i \lambda_k P_k(x_k^i, a_k^i)` with :math:`x_K^i` the target, so at a
feasible point only the top term, the loss, remains. Backpropagation minimises the unlifted loss
:math:`\tfrac1B\sum_i \tfrac12\|N(u^i) - t^i\|^2` with ``torch.optim.Adam`` or ``SGD``.

Inference is always the plain forward pass ``model(observation)``; validation reports its loss,
PSNR and SSIM. Every epoch ends with an atomic checkpoint (network, solver or optimizer state,
epoch, generator state, history); ``resume=True`` continues from it to the same result as an
uninterrupted run (bit-identical on CPU: every random draw comes from ``generator``, a model's
own draws (dropout) from torch's global RNG seeded per batch from it (:func:`_step_rng`), and the
lifted problem, with its warm-started power iterations, is rebuilt at the start of every epoch).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from liftinv.checkpoint import check_output_file, load_checkpoint, save_checkpoint
from liftinv.evaluation import HeldOut, bind_to_task, derived_seed, eval_mode
from liftinv.history import TrainHistory
from liftinv.methods import Backprop, Lifted, lifted_view, runner
from liftinv.solvers.rules import check_real
from liftinv.tasks import Task
from liftinv.validation import check_flag, positive_int, refuse_inference_mode
from operators.checks import is_integer
from operators.spec import check_spec, physics_spec

CHECKPOINT_FORMAT = 1

#: Key mixed into the seed of a training step's global RNG (the bytes of "step"), see :func:`_step_rng`.
STEP_KEY = 0x73746570


class CheckpointExistsError(ValueError):
    """:func:`train` refuses to start a new run over an existing checkpoint (``path``) without
    ``resume=True`` or ``overwrite=True``: the previous run's checkpoint would be replaced after
    the first epoch."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        super().__init__(f"checkpoint {path} exists: pass resume=True to continue from it or overwrite=True to "
                         "replace it (or delete it)")


class SeedMismatchError(ValueError):
    """:func:`train` refuses to resume ``path`` with a ``generator`` seeded with ``seed`` (its
    ``initial_seed()``) when the checkpoint continues a run whose generator was seeded with
    ``saved``: the generator's state comes from the checkpoint, so the seed would have no effect."""

    def __init__(self, path: str | os.PathLike, seed: int, saved: int):
        self.path, self.seed, self.saved = path, seed, saved
        super().__init__(f"generator is seeded with {seed}, but checkpoint {path} continues a run whose generator was "
                         f"seeded with {saved}, from the state it records: pass generator=None (or one seeded with "
                         f"{saved}) to resume it, or start a new run")


@dataclass
class TrainResult:
    """The trained ``model`` (the object passed in, updated in place) and its ``history``."""

    model: nn.Module
    history: TrainHistory


def _images(data: TensorDataset | Tensor, name: str, like: Tensor) -> Tensor:
    """Clean images ``(N, C, H, W)`` of ``data`` in the dtype and on the device of ``like``,
    detached (data, not unknowns: no gradient reaches the caller's tensor)."""
    images = data.tensors[0] if isinstance(data, TensorDataset) else data
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a TensorDataset or a Tensor of images, got {type(data).__name__}")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"{name} must hold images (N, C, H, W) with N >= 1, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must hold floating-point images, got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains NaN or Inf entries")
    cast = images.detach().to(dtype=like.dtype, device=like.device)
    if not bool(torch.isfinite(cast).all()):
        raise ValueError(f"{name} has entries beyond the range of the model's {like.dtype} (Inf once cast)")
    return cast


def _check_fit(model: nn.Module, task: Task, images: Tensor) -> None:
    """Bind a model that has ``bind(physics)`` to a reconstruction task's physics (which checks
    that it is the operator the model was built for), then run one observation through
    ``model`` in eval mode (:func:`~liftinv.evaluation.eval_mode`: the check is no training
    batch of a batch norm's running statistics, and draws no dropout): it must accept it and
    output the target's shape."""
    bind_to_task(model, task)
    batch = task.observe(images[:2], torch.Generator(device=images.device).manual_seed(0))
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(batch.observation)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"train_set images of shape {tuple(images.shape[1:])} do not fit the model under {task!r}: {err}") from err
    if out.shape != batch.target.shape:
        raise ValueError(f"the model outputs shape {tuple(out.shape)} but the task's target has shape {tuple(batch.target.shape)}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    model: nn.Module,
    train_set: TensorDataset | Tensor,
    *,
    task: Task,
    method: Lifted | Backprop = Lifted(),
    epochs: int,
    batch_size: int,
    val_set: TensorDataset | Tensor | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    time_budget: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> TrainResult:
    r"""Train ``model`` on clean images ``train_set`` for ``task`` with ``method``.

    Each epoch visits ``N // batch_size`` batches of a random permutation (the last incomplete
    batch is dropped). Training and validation images are moved to the dtype and device of the
    model's first trainable parameter.

    Args:
        model: a :class:`~liftinv.network.LiftedNetwork`, or a module with ``.lifted`` and
            ``.lifted_inputs`` (unrolled reconstruction); any module for :class:`Backprop`,
            trained in the modes its modules are in (``train()`` is not called: a model in eval
            mode, as :func:`~liftinv.models.load_model` returns it, trains with its dropouts off
            and its batch norms on their running statistics, which stay as they are); validation
            always scores it in eval mode (:func:`~liftinv.evaluation.eval_mode`).
        train_set: clean images ``(N, C, H, W)`` (a ``TensorDataset`` whose first tensor they are).
        task: :class:`~liftinv.tasks.Denoising`, :class:`~liftinv.tasks.Reconstruction` (a
            model with ``bind(physics)``, as the unrolled networks, is bound to the task's
            physics, which must then be the operator it was built for; any other model must
            use that physics itself) or :class:`~liftinv.tasks.Autoencoder`.
        method: :class:`Lifted` (default: lifted Bregman, plain BCD) or :class:`Backprop`.
        epochs: total number of epochs (a resumed run continues up to it, from a checkpoint that
            holds no more).
        batch_size: samples per batch, at most ``N``.
        val_set: clean held-out images of the training images' shape, scored after every epoch
            (observations drawn once from seed 0 by
            :func:`~liftinv.evaluation.held_out_generator`, a stream apart from ``generator``'s).
        checkpoint: file written atomically after every complete epoch.
        resume: continue from ``checkpoint`` (which must exist and come from the same method, but
            for the ``momentum`` of a :class:`Backprop` with Adam, which does not use it; the same
            task kind and noise level, batch size, training-set size and image shape, and the same
            physics as its spec when it is a ``Radon``, ``Blur`` or ``MRI``,
            :func:`operators.spec.check_spec`, and the model's dtype: a change of any of them
            would not give the uninterrupted run's result; a custom physics and the training
            images themselves are not compared).
        overwrite: start a new run even though ``checkpoint`` exists, replacing it after the
            first complete epoch. Without ``resume`` or ``overwrite`` an existing checkpoint is
            refused (:class:`CheckpointExistsError`) before any work: nothing written is lost.
        time_budget: stop after the batch at which the cumulative training time (the batches'
            observations and steps; not validation or checkpointing) reaches this many seconds
            (the last epoch is then partial and not checkpointed, unless that batch ends it). A
            resumed run starts from the time its checkpoint records, that of its complete epochs:
            one whose complete epochs reached the budget trains no more, while a partial epoch
            after them, which the checkpoint does not hold, is trained again.
        generator: source of every random draw (shuffling, noise); default seeded with 0 on CPU.
            The model's own draws in a step (dropout in training mode) come from torch's global
            RNG, seeded for each batch from the generator's ``initial_seed()`` and the iteration
            (:func:`_step_rng`; the caller's global RNG state is restored after the step).
            A resumed run continues from the generator state of the checkpoint: ``None`` takes
            it, and a generator seeded otherwise (``initial_seed()``) than the checkpoint's run
            is refused (:class:`SeedMismatchError`), as its seed would have no effect.
        progress: show a tqdm progress bar and a log line per epoch.

    Returns:
        :class:`TrainResult` with the model and its :class:`~liftinv.history.TrainHistory`.

    Raises:
        ValueError: bad sizes, data that do not fit the model, NaN/Inf data, invalid arguments, a
            checkpoint to resume that another run wrote or whose entries are missing or bad.
        CheckpointExistsError: ``checkpoint`` exists and neither ``resume`` nor ``overwrite`` is set
            (a ``ValueError``; ``liftinv train``: exit status 2).
        SeedMismatchError: ``resume`` with a ``generator`` of another seed than the checkpoint's
            run (a ``ValueError``; ``liftinv train --seed``: exit status 2).
        TypeError: wrong argument types.
        IsADirectoryError: ``checkpoint`` is a folder (``''`` included: the current folder), as a
            file that cannot be written (``liftinv train``: exit status 1).
        NotADirectoryError: ``checkpoint``'s folder cannot be created (a file is in the way),
            found before training (exit status 1).
        OSError: no file can be created in ``checkpoint``'s folder (a read-only or virtual file
            system; :func:`~liftinv.checkpoint.check_output_file`), found before training (exit
            status 1).
        RuntimeError: called under ``torch.inference_mode``.
        FloatingPointError: a non-finite block update, penalty, loss or gradient; the message names
            the block (or parameter) and the iteration; the last checkpoint stays as it was.
    """
    _check_arguments(model, task, method, epochs, batch_size, time_budget, resume, overwrite, checkpoint, progress)
    ref = next((p for p in model.parameters() if p.requires_grad), None)
    if ref is None:
        raise ValueError("model has no trainable parameters")
    seeded = generator is not None  # a resumed run compares its seed with the checkpoint's
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    images = _images(train_set, "train_set", ref)
    if batch_size > images.shape[0]:
        raise ValueError(f"batch_size must be at most the number of training images {images.shape[0]}, got {batch_size}")
    heldout = None
    if val_set is not None:
        val_images = _images(val_set, "val_set", ref)
        if val_images.shape[1:] != images.shape[1:]:
            raise ValueError(f"val_set images have shape {tuple(val_images.shape[1:])}, train_set images {tuple(images.shape[1:])}")
        heldout = HeldOut(val_images, task, batch_size)
    _check_fit(model, task, images)
    trainer = runner(model, method)
    config = {"method": _method_record(method), "task": type(task).__name__, "noise_sigma": getattr(task, "noise_sigma", None),
              "batch_size": batch_size, "n_train": int(images.shape[0]), "image_shape": list(images.shape[1:])}
    physics = _physics_record(task)

    history, start = TrainHistory(), 0
    if resume:
        history, start = _resume(checkpoint, config, physics, epochs, model, trainer, generator, seeded, ref.device)
    else:
        metrics = heldout.evaluate(model) if heldout is not None else None
        history.append(epoch=0, seconds=0.0, **_metric_fields(metrics))

    n_batches = images.shape[0] // batch_size
    budget = math.inf if time_budget is None else time_budget
    seconds = history.seconds[-1]
    device = ref.device
    bar = tqdm(total=(epochs - start) * n_batches, disable=not progress, unit="batch", desc=method.name)
    try:
        for epoch in range(start, epochs):
            if seconds >= budget:  # spent by the last complete epoch (of this run or of the resumed one)
                break
            trainer.start_epoch()
            order = torch.randperm(images.shape[0], generator=generator, device=generator.device).to(device)
            losses: list[float] = []
            for b in range(n_batches):
                _sync(device)
                tic = time.perf_counter()
                batch = task.observe(images[order[b * batch_size : (b + 1) * batch_size]], generator)
                iteration = epoch * n_batches + b + 1
                try:
                    with _step_rng(generator.initial_seed(), iteration, device):
                        losses.append(trainer.step(batch, iteration))
                except FloatingPointError as err:
                    raise FloatingPointError(f"{err} (epoch {epoch + 1}, batch {b + 1}){_kept(checkpoint, history)}") from err
                _sync(device)
                seconds += time.perf_counter() - tic
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
                if seconds >= budget:
                    break
            complete = len(losses) == n_batches
            bad = next((n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)
            if bad is not None:
                raise FloatingPointError(f"non-finite parameter {bad} after epoch {epoch + 1}{_kept(checkpoint, history)}")
            try:
                summary = trainer.summary()
            except FloatingPointError as err:
                raise FloatingPointError(f"{err} of epoch {epoch + 1}{_kept(checkpoint, history)}") from err
            metrics = heldout.evaluate(model) if heldout is not None else None
            history.append(
                epoch=epoch + len(losses) / n_batches, seconds=seconds, train_loss=sum(losses) / len(losses),
                **summary, **_metric_fields(metrics),
            )
            if progress:
                tqdm.write(_log_line(history))
            if checkpoint is not None and complete:
                payload = {
                    "format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch + 1, "model": model.state_dict(),
                    "runner": trainer.state_dict(), "generator": generator.get_state(), "history": history.as_dict(),
                    "physics": physics,
                }
                save_checkpoint(checkpoint, payload)
            if not complete:
                break
    finally:
        bar.close()
    return TrainResult(model, history)


@contextmanager
def _step_rng(seed: int, iteration: int, device: torch.device) -> Iterator[None]:
    """torch's global RNG (the CPU one, and the CUDA one of ``device``) within the block seeded
    with :func:`~liftinv.evaluation.derived_seed` ``(STEP_KEY, seed, iteration)``, the caller's
    state restored after it: a model's own draws (dropout masks) in a training step are a function
    of the run's seed and the step, so a run is reproducible and a resumed run draws what the
    uninterrupted one drew, whatever the global RNG did before."""
    word = derived_seed(STEP_KEY, seed, iteration)
    index = (device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else None
    with torch.random.fork_rng(devices=[] if index is None else [index], device_type="cuda"):
        torch.default_generator.manual_seed(word)
        if index is not None:
            torch.cuda.default_generators[index].manual_seed(word)
        yield


def _check_arguments(model, task, method, epochs, batch_size, time_budget, resume, overwrite, checkpoint,
                     progress) -> None:
    """The checks of :func:`train`'s arguments that need no data."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a liftinv.tasks.Task, got {type(task).__name__}")
    if not isinstance(method, (Lifted, Backprop)):
        raise TypeError(f"method must be Lifted(...) or Backprop(...), got {type(method).__name__}")
    refuse_inference_mode("train")
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    if time_budget is not None:
        check_real("time_budget", time_budget)
        if not time_budget > 0:
            raise ValueError(f"time_budget must be positive, got {time_budget}")
    check_flag("resume", resume)
    check_flag("overwrite", overwrite)
    check_flag("progress", progress)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if resume and overwrite:
        raise ValueError("resume=True continues from the checkpoint and overwrite=True replaces it: pass one of them")
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path (str or os.PathLike), got {type(checkpoint).__name__}")
        if Path(checkpoint).is_dir():  # '' is the current folder
            raise IsADirectoryError(f"checkpoint must be a file path, got the directory {str(checkpoint)!r}")
        check_output_file(checkpoint, "checkpoint")  # a folder that takes no file included
        if not (resume or overwrite) and Path(checkpoint).exists():
            raise CheckpointExistsError(checkpoint)


def _method_record(method: Lifted | Backprop) -> str:
    """The method as a checkpoint's config records it, which a resumed run must match: its
    ``repr``, with Adam's unused ``momentum`` at its default (so another value neither blocks a
    resume nor changes the record of a run that left it)."""
    if isinstance(method, Backprop) and method.optimizer == "adam":
        method = dataclasses.replace(method, momentum=Backprop.momentum)  # the class attribute is the default
    return repr(method)


def _physics_record(task: Task) -> dict | None:
    """The spec (:func:`operators.spec.physics_spec`) of the task's physics, which a resumed run
    must share; ``None`` for a task without physics or with a custom operator (no spec)."""
    physics = getattr(task, "physics", None)
    try:
        return None if physics is None else physics_spec(physics)
    except TypeError:  # not a Radon, Blur or MRI
        return None


def _config_difference(saved: dict, now: dict) -> str:
    """The entries where a checkpoint's config ``saved`` and this run's ``now`` differ, ``KEY
    SAVED (checkpoint) vs NOW (this run)``; two strings (the method's repr) cut to the fields
    where they differ (:func:`_differing_fields`)."""
    parts = []
    for key in dict.fromkeys([*saved, *now]):
        a, b = saved.get(key), now.get(key)
        if a != b:
            if isinstance(a, str) and isinstance(b, str):
                a, b = _differing_fields(a, b)
            parts.append(f"{key} {a} (checkpoint) vs {b} (this run)")
    return "; ".join(parts)


def _differing_fields(a: str, b: str) -> tuple[str, str]:
    """``a`` and ``b``, two different reprs ``Name(field=value, ...)``, each cut to the fields
    from the one of their first differing character to the one of their last (a nested repr
    kept whole): ``cache_preactivations=False`` and ``cache_preactivations=True``."""
    n = min(len(a), len(b))
    first = next((i for i in range(n) if a[i] != b[i]), n)
    common_end = next((i for i in range(n - first) if a[-1 - i] != b[-1 - i]), n - first)

    def cut(text: str) -> str:
        start, depth = first, 0
        while start > 0 and not (depth == 0 and text[start - 1] == " ") and depth >= 0:
            depth += {")": 1, "(": -1}.get(text[start - 1], 0)
            start -= 1
        start += depth < 0  # stopped after an opening parenthesis: the field starts behind it
        if start == 0:  # the reprs differ in their name: whole
            return text
        stop, depth = len(text) - common_end, 0
        while stop < len(text) and not (depth == 0 and text[stop] in ",)"):
            depth += {"(": 1, ")": -1}.get(text[stop], 0)
            stop += 1
        return text[start:stop]

    return cut(a), cut(b)


def _resume(checkpoint, config: dict, physics: dict | None, epochs: int, model: nn.Module, trainer,
            generator: torch.Generator, seeded: bool, device: torch.device) -> tuple[TrainHistory, int]:
    """Load ``checkpoint`` (written with the same ``config`` and ``physics`` spec, at most
    ``epochs`` epochs, and, when the caller ``seeded`` the ``generator``, by a run of its seed)
    into the model, the trainer and the generator; returns its history and epoch. A refused
    checkpoint leaves the model and the generator as they were."""
    ckpt = load_checkpoint(checkpoint, map_location=device)
    if ckpt.get("format") != CHECKPOINT_FORMAT or not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"checkpoint {checkpoint} was written with {ckpt.get('config')}, this run uses {config}")
    if ckpt["config"] != config:
        raise ValueError(f"checkpoint {checkpoint} was written by another run than this one: "
                         f"{_config_difference(ckpt['config'], config)}")
    saved = ckpt.get("physics")
    if (saved is None) != (physics is None):
        raise ValueError(f"checkpoint {checkpoint} was written for physics {saved and saved.get('operator')}, "
                         f"this run uses {physics and physics['operator']}")
    if physics is not None:
        try:
            check_spec(saved, physics, context=f"checkpoint {checkpoint} was written for")
        except TypeError as err:
            raise ValueError(f"checkpoint {checkpoint} holds a bad physics spec: {err}") from err
    missing = [key for key in ("epoch", "model", "runner", "generator", "history") if key not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {checkpoint} lacks the entries {missing}")
    epoch = ckpt["epoch"]
    if not is_integer(epoch) or epoch < 1:
        raise ValueError(f"checkpoint {checkpoint} holds the epoch {epoch!r}, not an integer >= 1")
    if epochs < epoch:
        raise ValueError(f"epochs must be at least the {epoch} epochs that checkpoint {checkpoint} holds, got {epochs}")
    try:
        history = TrainHistory.from_dict(ckpt["history"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {checkpoint} holds a bad history: {err}") from err
    if not history.epoch or history.epoch[-1] != epoch:
        last = history.epoch[-1] if history.epoch else "no record"
        raise ValueError(f"checkpoint {checkpoint} holds epoch {epoch} but its history ends at {last}")
    state = ckpt["generator"]
    if not (isinstance(state, Tensor) and state.dtype == torch.uint8 and state.ndim == 1):
        raise ValueError(f"checkpoint {checkpoint} holds no generator state (a uint8 vector), got {state!r}")
    if seeded:
        _check_seed(checkpoint, state, generator)
    _check_dtypes(checkpoint, ckpt["model"], model)
    kept = copy.deepcopy(model.state_dict())  # load_state_dict copies what fits before it raises
    try:
        model.load_state_dict(ckpt["model"])
        trainer.load_state_dict(ckpt["runner"])
        generator.set_state(state.cpu())  # map_location moved it; RNG states live on the CPU
    except (KeyError, RuntimeError, TypeError, ValueError) as err:  # torch's messages name what does not fit
        model.load_state_dict(kept)
        raise ValueError(f"checkpoint {checkpoint} does not fit this run: {type(err).__name__}: {err}") from err
    return history, int(epoch)


def _check_seed(checkpoint, state: Tensor, generator: torch.Generator) -> None:
    """Refuse to resume with ``generator`` when the generator ``state`` of ``checkpoint`` comes
    from a run of another seed (a state records its generator's ``initial_seed()``). A state
    that does not fit a generator of this device is left to the load, which names it."""
    saved = torch.Generator(device=generator.device)
    try:
        saved.set_state(state.cpu())
    except (RuntimeError, ValueError):
        return
    if saved.initial_seed() != generator.initial_seed():
        raise SeedMismatchError(checkpoint, generator.initial_seed(), saved.initial_seed())


def _check_dtypes(checkpoint, saved, model: nn.Module) -> None:
    """Refuse a checkpoint whose floating entries have another dtype than the model's:
    ``load_state_dict`` would cast them, and the resumed run would not be the uninterrupted one
    (the run continues in the dtype the checkpoint was written in, or a new one starts)."""
    if not isinstance(saved, dict):
        return  # load_state_dict names what does not fit
    current = model.state_dict()
    for key, value in saved.items():
        now = current.get(key)
        if (isinstance(value, Tensor) and isinstance(now, Tensor) and value.is_floating_point()
                and now.is_floating_point() and value.dtype != now.dtype):
            raise ValueError(f"checkpoint {checkpoint} was written in {value.dtype} (model entry {key}), this run "
                             f"uses {now.dtype}: a resumed run continues in the dtype it was written in")


def _kept(checkpoint, history: TrainHistory) -> str:
    """What the checkpoint holds when training stops: the last complete epoch, or nothing of this
    run before the first one (the last record is then the untrained model's, epoch 0), in which
    case a file there is the previous run's, which ``overwrite`` replaces after an epoch only."""
    if checkpoint is None:
        return ""
    if history.epoch[-1] == 0:
        if Path(checkpoint).exists():
            return f"; no checkpoint was written, so {checkpoint} still holds the previous run's"
        return f"; no checkpoint was written to {checkpoint}"
    return f"; checkpoint {checkpoint} keeps epoch {history.epoch[-1]:g}"


def _metric_fields(metrics) -> dict:
    if metrics is None:
        return {}
    return {"val_loss": metrics.loss, "val_psnr": metrics.psnr, "val_ssim": metrics.ssim}


def _log_line(h: TrainHistory) -> str:
    """One line per epoch: the training loss, the lifted energy and gaps (lifted methods) and the
    validation scores (with a validation set)."""
    parts = [f"epoch {h.epoch[-1]:.3g} ({h.seconds[-1]:.1f}s): train loss {h.train_loss[-1]:.4g}"]
    if math.isfinite(h.energy[-1]):
        parts.append(f"energy {h.energy[-1]:.4g}, gaps [{' '.join(f'{g:.2e}' for g in h.gaps[-1])}]")
    if math.isfinite(h.val_loss[-1]):
        parts.append(f"val loss {h.val_loss[-1]:.4g}, PSNR {h.val_psnr[-1]:.2f} dB, SSIM {h.val_ssim[-1]:.3f}")
    return ", ".join(parts)


__all__ = ["Backprop", "CheckpointExistsError", "Lifted", "SeedMismatchError", "TrainResult", "lifted_view", "train"]
