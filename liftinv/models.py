r"""Saving and loading trained reconstruction networks with the operator they were trained for.

A model file (written atomically by :func:`liftinv.checkpoint.save_checkpoint`, read with
``weights_only=True``) is a dict with

* ``format``: ``"liftinv-model"`` and ``format_version``: :data:`FORMAT_VERSION`;
* ``liftinv_version``: the package version that wrote it;
* ``architecture``: the class name and constructor arguments (:func:`architecture_config`);
* ``state_dict``: the parameters;
* ``physics``: the operator spec (:func:`operators.spec.physics_spec`);
* ``steps``: the step sizes :math:`\tau, s` the network derived from :math:`\|A\|` at construction;
* ``task``: a free-form task name (e.g. ``"ct"``) and ``extra``: plain metadata.

:func:`load_model` rebuilds the network; given a physics it first checks that the physics has the
spec the model was trained for, so a model is never used with the wrong operator unnoticed.
Supported architecture: :class:`~liftinv.architectures.UnrolledPrimalDual` (the only network that
takes a physics).
"""
from __future__ import annotations

import inspect
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from liftinv.activations import Clip
from liftinv.affine import ConvAdjoint, GradientStep
from liftinv.architectures import UnrolledPrimalDual
from liftinv.checkpoint import load_checkpoint, save_checkpoint
from liftinv.validation import check_device
from operators.checks import is_integer, is_real
from operators.spec import check_spec, physics_from_spec, physics_spec

FORMAT = "liftinv-model"
FORMAT_VERSION = 1
_ENTRY_TYPES = {"liftinv_version": str, "architecture": dict, "state_dict": dict, "physics": dict, "steps": dict,
                "task": str, "extra": dict}  # the entries besides the format, of the types save_model writes
_ENTRIES = tuple(_ENTRY_TYPES)
#: The constructor arguments a model file records: all of UnrolledPrimalDual's but the physics
#: (stored as its spec) and the generator (the parameters are stored); read off the constructor,
#: so that architecture_config, _read's check and _build name the same ones.
_CONSTRUCTOR_ARGS = tuple(name for name in inspect.signature(UnrolledPrimalDual).parameters
                          if name not in ("physics", "generator"))
_ARCHITECTURE_KEYS = ("class", *_CONSTRUCTOR_ARGS)
_STEP_RTOL = 1e-6  # relative tolerance on the dual step s rebuilt from the operator norm


@dataclass(frozen=True, eq=False)
class SavedModel:
    """A network loaded by :func:`load_model`, with what it was trained for.

    Attributes:
        net: the rebuilt network (eval mode), bound to ``physics``.
        physics: the operator passed to :func:`load_model`, or rebuilt from ``spec``.
        spec: the operator spec stored with the model.
        task: the task name stored with the model.
        version: the liftinv version that wrote the file.
        extra: the plain metadata stored with the model.
    """

    net: nn.Module
    physics: object
    spec: dict
    task: str
    version: str
    extra: dict = field(default_factory=dict)


def architecture_config(net: nn.Module) -> dict:
    r"""Constructor arguments of ``net``, read from its modules: for an
    :class:`~liftinv.architectures.UnrolledPrimalDual`, ``n_iter`` (its gradient steps),
    ``features`` and ``kernel_size`` (of its convolutions :math:`L_k`), ``img_size``,
    ``threshold`` (the upper bound of the dual clip) and ``adjoint_init``.

    The constructor builds the clips :math:`[0, 1]` (primal layers, odd) and
    :math:`[-\lambda, \lambda]` (dual layers, even) with one :math:`\lambda`; a network whose
    clips were changed since (``layer.activation.hi = ...``) cannot be rebuilt from these
    arguments and is refused.

    Raises:
        TypeError: unsupported architecture.
        ValueError: a layer's clip is not the one the constructor builds with ``threshold`` (the
            message names the layer).
    """
    if not isinstance(net, UnrolledPrimalDual):
        raise TypeError(f"net must be an UnrolledPrimalDual to be saved with its physics, got {type(net).__name__}")
    conv = next(m.conv for m in net.modules() if isinstance(m, ConvAdjoint))
    threshold = net.lifted.layer(2).activation.hi
    for k in range(1, net.lifted.depth + 1):
        activation = net.lifted.layer(k).activation
        bounds = (0.0, 1.0) if k % 2 else (-threshold, threshold)
        if not (isinstance(activation, Clip) and (activation.lo, activation.hi) == bounds):
            raise ValueError(
                f"layer {k} has the activation {activation!r}, but a model file stores one threshold and rebuilds "
                f"Clip{bounds} there (threshold = layer 2's bound {threshold!r}): it cannot save this network"
            )
    args = {
        "n_iter": sum(isinstance(m, GradientStep) for m in net.modules()),
        "features": conv.out_channels,
        "img_size": tuple(net.img_size),
        "threshold": threshold,
        "kernel_size": conv.kernel_size[0],
        "adjoint_init": net.adjoint_init,
    }
    return {"class": "UnrolledPrimalDual", **{name: args[name] for name in _CONSTRUCTOR_ARGS}}  # a KeyError if one is not read


def _check_plain(value: object, name: str) -> None:
    """Raise unless ``value`` is made of tensors, str/int/float/bool/None (NumPy integers, floats
    and bools too: :func:`~liftinv.checkpoint.save_checkpoint` writes them as the Python scalars of
    equal value), lists, tuples and str-keyed dicts."""
    if value is None or isinstance(value, (str, int, float, bool, Tensor, np.integer, np.floating, np.bool_)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{name}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{name} keys must be strings, got {key!r}")
            _check_plain(item, f"{name}[{key!r}]")
        return
    raise TypeError(f"{name} must hold only tensors, numbers, strings, lists and dicts, got {type(value).__name__}")


def save_model(net: nn.Module, path: str | os.PathLike, *, task: str, physics, extra: dict | None = None) -> None:
    """Write ``net`` with its constructor arguments, ``physics``' spec, ``task`` and ``extra`` to
    ``path`` atomically (temporary file + ``os.replace``).

    Args:
        net: an :class:`~liftinv.architectures.UnrolledPrimalDual` bound to ``physics``.
        path: target file (``.pt`` by convention); its folder is created.
        task: non-empty task name, e.g. ``"ct"``.
        physics: the operator the network was trained for (``Radon``, ``Blur`` or ``MRI``).
        extra: plain metadata (noise level, training method, scores...); NumPy numbers in it are
            stored as the Python numbers of equal value.

    Raises:
        TypeError: unsupported ``net`` or ``physics``, non-plain ``extra``.
        ValueError: empty ``task``, ``net`` bound to an operator with another spec than ``physics``,
            ``physics`` of another norm than the one ``net``'s steps were computed for (a kernel
            or mask changed since; :func:`load_model` could not rebuild them), or a clip of
            ``net`` changed since its construction (see :func:`architecture_config`).
    """
    config = architecture_config(net)
    if not isinstance(task, str) or not task.strip():
        raise ValueError(f"task must be a non-empty string, got {task!r}")
    spec = physics_spec(physics)
    bound = net.physics
    if bound is not physics:
        check_spec(physics_spec(bound), spec, context="net is bound to")
    net.check_norm(physics)  # else load_model, which rebuilds s from the norm, could never read the file
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
    _check_plain(extra, "extra")
    from liftinv import __version__

    save_checkpoint(path, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "liftinv_version": __version__,
        "architecture": config, "state_dict": net.state_dict(), "physics": spec,
        "steps": {"tau": net.tau, "s": net.s}, "task": task, "extra": extra,
    })


def _build(config: dict, physics) -> UnrolledPrimalDual:
    if config.get("class") != "UnrolledPrimalDual":
        raise ValueError(f"unsupported architecture {config.get('class')!r} in the model file")
    return UnrolledPrimalDual(
        physics, **{name: config[name] for name in _CONSTRUCTOR_ARGS},
        generator=torch.Generator().manual_seed(0),  # overwritten by the state dict; keeps the global RNG untouched
    )


def _read(path: str | os.PathLike, device: torch.device | str) -> dict:
    """The payload of a model file, with its format and entries checked: each entry of the type
    :func:`save_model` writes (:data:`_ENTRY_TYPES`), the architecture with every constructor
    argument :func:`_build` reads and the steps with ``tau`` and ``s``, positive finite numbers."""
    payload = load_checkpoint(path, map_location=device, name="model")
    if payload.get("format") != FORMAT or "format_version" not in payload:
        raise ValueError(f"{path} is not a liftinv model file (no format {FORMAT!r})")
    version = payload["format_version"]
    if is_integer(version) and version > FORMAT_VERSION:
        raise ValueError(f"{path} has model format {version}; this liftinv reads up to {FORMAT_VERSION}")
    if not (is_integer(version) and version >= 1):
        raise ValueError(f"{path} has model format {version!r}, which no liftinv writes (formats are the integers 1 "
                         f"to {FORMAT_VERSION})")
    missing = [key for key in _ENTRIES if key not in payload]
    if missing:
        raise ValueError(f"{path} is not a complete liftinv model file (missing {missing})")
    for key, kind in _ENTRY_TYPES.items():
        if not isinstance(payload[key], kind):
            raise ValueError(f"{path} is not a valid liftinv model file: its {key} must be a {kind.__name__}, got "
                             f"{type(payload[key]).__name__}")
    for key, needed in (("architecture", _ARCHITECTURE_KEYS), ("steps", ("tau", "s"))):
        absent = [name for name in needed if name not in payload[key]]
        if absent:
            raise ValueError(f"{path} is not a valid liftinv model file: its {key} lacks {absent}")
    for name, step in payload["steps"].items():
        if name in ("tau", "s") and not (is_real(step) and 0 < step < math.inf):
            raise ValueError(f"{path} is not a valid liftinv model file: its steps[{name!r}] must be a positive finite "
                             f"number, got {step!r}")
    return payload


def model_spec(path: str | os.PathLike) -> dict:
    """The operator spec stored in a model file, without building the model.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable, or not a complete liftinv model file.
    """
    return _read(path, "cpu")["physics"]


def load_model(path: str | os.PathLike, physics=None, *, device: torch.device | str = "cpu") -> SavedModel:
    """Rebuild a model written by :func:`save_model` on ``device``.

    Args:
        path: the model file.
        physics: the operator to use; its spec must match the stored one. ``None`` rebuilds the
            operator from the stored spec (without noise model).
        device: where the network (and a rebuilt physics) live: a device this machine has
            (:func:`~liftinv.validation.check_device`, a ``ValueError`` naming ``device``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable, or not a complete liftinv model file (an entry missing or not of
            the type :func:`save_model` writes, naming the file and the entry; a step that is not a
            positive finite number; constructor arguments that the architecture refuses);
            ``physics`` differs from the operator the model was
            trained for (``"model was trained for Radon(angles=30) but got Radon(angles=60)"``); or
            its operator norm gives other step sizes than at training time; or the file's
            parameters do not fit the architecture it records (entries missing, unexpected or of
            another shape).
    """
    try:
        device = check_device(device)  # else torch.load's failure to place the tensors there blames the file
    except ValueError as err:
        raise ValueError(f"device: {err}") from None
    payload = _read(path, device)
    from liftinv import __version__

    if payload["liftinv_version"] != __version__:
        warnings.warn(f"{path} was written by liftinv {payload['liftinv_version']}, this is {__version__}", stacklevel=2)
    spec = payload["physics"]
    if physics is None:
        physics = physics_from_spec(spec, device=device)
    else:
        check_spec(spec, physics_spec(physics), context="model was trained for")
    try:
        net = _build(payload["architecture"], physics)
    except (TypeError, ValueError) as err:  # a constructor argument of another type or value than save_model writes
        raise ValueError(f"{path} is not a valid liftinv model file: its architecture cannot be built: {err}") from err
    saved_s = payload["steps"]["s"]
    if not math.isclose(net.s, saved_s, rel_tol=_STEP_RTOL):
        raise ValueError(
            f"the operator norm of the physics gives the dual step s={net.s:.9g}, but the model was trained with s={saved_s:.9g}"
        )
    try:
        net.load_state_dict(payload["state_dict"], assign=True)
    except RuntimeError as err:  # missing, unexpected or misshapen entries: torch's message names them
        raise ValueError(f"{path} holds parameters that do not fit the architecture it records: "
                         f"{' '.join(str(err).split())}") from err
    net.to(device).eval()
    return SavedModel(net, physics, spec, payload["task"], payload["liftinv_version"], payload["extra"])


__all__ = ["FORMAT", "FORMAT_VERSION", "SavedModel", "architecture_config", "load_model", "model_spec", "save_model"]
