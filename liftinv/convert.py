r"""Convert a plain torch network into a :class:`~liftinv.network.LiftedNetwork`.

An ``nn.Sequential`` (nested ones are flattened) of affine modules and proximal activations
becomes one layer per activation: the affine modules between two activations compose into the
layer's map :math:`M_k` and the activation closes the layer,
:math:`x_k = \sigma_k(M_k x_{k-1})`; a trailing affine chain gets the identity activation (one
that only rearranges entries joins the last layer, see :func:`lift`). The lifted network reuses
the original modules, so it shares their parameters and computes the same function.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils.prune import BasePruningMethod
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from liftinv.activations import Identity, Softmax, as_activation
from liftinv.affine import BATCH_NORMS, INSTANCE_NORMS, EvalBatchNorm, EvalSpectralNorm, spectral_norms
from liftinv.layer import Layer
from liftinv.network import LiftedNetwork
from liftinv.validation import forward_replaced, is_compiled, keeps_forward, reference_tensor, sample_shape

#: Affine modules that may appear between activations (``nn.Identity`` is dropped); subclasses
#: that keep the ``forward`` of one of them count too (``nn.ZeroPad2d``, ``nn.UpsamplingNearest2d``).
#: Upsampling is linear in every mode, constant padding affine (linear for the value 0). Their
#: adjoints are taken by autograd (see :mod:`liftinv.affine`).
AFFINE = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Flatten, nn.Unflatten, nn.Identity, nn.Conv1d,
          nn.ConvTranspose1d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.ConstantPad1d,
          nn.ConstantPad2d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d, nn.Upsample,
          nn.PixelShuffle, nn.PixelUnshuffle)


#: Modules whose map in eval mode is affine, refused in training mode: batch norm and instance
#: norm with running statistics (:data:`~liftinv.affine.BATCH_NORMS`,
#: :data:`~liftinv.affine.INSTANCE_NORMS`, the running statistics' per-channel affine map,
#: :class:`~liftinv.affine.EvalBatchNorm`) and dropout (the identity, dropped).
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


#: Affine modules that only rearrange the entries of a sample (a permutation :math:`P`): they
#: commute with elementwise activations, :math:`P\sigma(z) = \sigma(Pz)`.
REARRANGE = (nn.Flatten, nn.Unflatten, nn.PixelShuffle, nn.PixelUnshuffle)


def _is_affine(module: nn.Module) -> bool:
    """An instance of a class of :data:`AFFINE` that keeps its ``forward``
    (:func:`~liftinv.validation.keeps_forward`)."""
    return keeps_forward(module, *AFFINE)


def _layer(module: nn.Module, path: str) -> str:
    """How errors name a layer of the model: its path in the model and its class."""
    return f"{path or '(root)'} ({type(module).__name__})"


def _eval_mode_map(module: nn.Module, path: str) -> nn.Module | None:
    """The eval-mode map of a batch or instance norm (:class:`~liftinv.affine.EvalBatchNorm`) or
    a dropout (``nn.Identity``) of :data:`~liftinv.affine.BATCH_NORMS`,
    :data:`~liftinv.affine.INSTANCE_NORMS` or :data:`DROPOUT`, ``None`` for other modules; a
    ``TypeError`` naming the layer for one in training mode, or a norm without running
    statistics (either normalises by the batch or by the sample, or draws random entries)."""
    if keeps_forward(module, *BATCH_NORMS):
        does = "normalises each batch by its own statistics"
    elif keeps_forward(module, *INSTANCE_NORMS):
        does = "normalises each sample by its own statistics"
    elif keeps_forward(module, *DROPOUT):
        does = "zeroes random entries"
    else:
        return None
    where = f"cannot lift layer {_layer(module, path)}"
    if module.training:
        raise TypeError(f"{where}: it is in training mode, where it {does}, which is no affine map of a sample; "
                        "call .eval() on the model first")
    if isinstance(module, DROPOUT):
        return nn.Identity()
    try:
        return EvalBatchNorm(module)
    except ValueError as err:
        raise TypeError(f"{where}: {err}") from err


def _check_power_iteration(module: nn.Module, path: str) -> None:
    r"""A ``TypeError`` naming the layer if ``module`` has spectral normalisation
    (``torch.nn.utils.spectral_norm`` or ``torch.nn.utils.parametrizations.spectral_norm``) in
    training mode: its weight :math:`W / \sigma(W)` then takes one more step of the power
    iteration for :math:`\sigma` at every forward pass, so the map changes with every call (the
    lifted network's energies and adjoints are of no fixed map, and the dry run of
    ``input_shape`` would move the model's vectors). In eval mode the vectors are kept and the map
    is fixed (lifted to :class:`~liftinv.affine.EvalSpectralNorm`, which keeps it so)."""
    if any(m.training for m in spectral_norms(module)):
        raise TypeError(f"cannot lift layer {_layer(module, path)}: it has spectral normalisation in training mode, "
                        "where every forward pass takes a power-iteration step and changes its weight, which is no "
                        "fixed map; call .eval() on the model first")


def _softmax_dim(module: nn.Module) -> int | None:
    """The negative ``dim`` of an ``nn.Softmax`` (-3 for an ``nn.Softmax2d`` that keeps its
    ``forward``): the softmax over dim 1, the class dimension of liftinv's
    :class:`~liftinv.activations.Softmax`, exactly where its input has ``ndim >= -dim`` dimensions
    with ``dim % ndim == 1`` (checked by the dry run of ``input_shape``); ``None`` for other
    modules."""
    dim = getattr(module, "dim", None)
    if type(module) is nn.Softmax and isinstance(dim, int) and not isinstance(dim, bool) and dim < 0:
        return dim
    return -3 if keeps_forward(module, nn.Softmax2d) else None


def _check_hooks(module: nn.Module, path: str) -> None:
    """A ``TypeError`` naming the layer if ``module`` has forward hooks or forward pre-hooks, but
    for the pre-hooks of ``torch.nn.utils.weight_norm``/``spectral_norm`` and of pruning
    (``torch.nn.utils.prune``) on an affine module of :data:`AFFINE` (they recompute its weight,
    and the lifted network calls such a module as it is): a hook may change the module's output
    or input, and the lifted network applies containers, activations, batch norms and dropouts
    by their maps without calling them (their hooks would be dropped), and takes adjoints and
    linear parts of the affine maps from their weights. Likewise for backward hooks, which may
    change the gradients that liftinv takes as the adjoints of the maps. So is a module whose
    ``forward`` was replaced on the instance (``module.forward = ...``, as monkey-patching or
    accelerate's hooks do: :func:`~liftinv.validation.forward_replaced`), whose map the lifted
    network would read off its class; a ``torch.compile``'d module is refused as such, pointing to
    the module it compiles (``._orig_mod``). A lazy module
    (``nn.LazyLinear``, ``nn.LazyConv2d``, ...) whose parameters are not initialised yet is refused
    as such (its pre-hook infers them at the first forward pass, after which it is the plain
    module)."""
    where = f"cannot lift layer {_layer(module, path)}"
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        raise TypeError(f"{where}: it is a lazy module whose parameters are not initialised yet (its pre-hook infers "
                        "their shapes at the first forward pass); run the model once on an input first")
    if is_compiled(module):
        raise TypeError(f"{where}: it is a torch.compile'd module, whose map liftinv cannot read; lift the module it "
                        f"compiles instead, which shares its parameters (module._orig_mod)")
    if forward_replaced(module):
        raise TypeError(f"{where}: its forward was replaced on the instance (module.forward = ...), so it may compute "
                        f"another map than its class's, which the lifted network would use; restore it first "
                        f"(del module.forward)")
    kept = (WeightNorm, SpectralNorm, BasePruningMethod) if _is_affine(module) else ()
    if module._forward_hooks or any(not isinstance(h, kept) for h in module._forward_pre_hooks.values()):
        raise TypeError(f"{where}: it has forward hooks or forward pre-hooks, which may change its map and which the "
                        "lifted network would not run as the model does; remove them first (the handle's .remove())")
    if module._backward_hooks or module._backward_pre_hooks:
        raise TypeError(f"{where}: it has backward hooks or backward pre-hooks, which may change the gradients that "
                        "liftinv takes as the adjoints of its maps; remove them first (the handle's .remove())")


def _check_global_hooks() -> None:
    """A ``TypeError`` if torch holds global module hooks (``register_module_forward_hook``,
    ``register_module_forward_pre_hook``, ``register_module_full_backward_hook``,
    ``register_module_full_backward_pre_hook`` of ``torch.nn.modules.module``): they run at every
    module call, so they may change the model's map, or the gradients taken as adjoints, as a
    module's own hooks may (:func:`_check_hooks`)."""
    hooks = torch.nn.modules.module
    if (hooks._global_forward_hooks or hooks._global_forward_pre_hooks or hooks._global_backward_hooks
            or hooks._global_backward_pre_hooks):
        raise TypeError("cannot lift the model while torch holds global module hooks (torch.nn.modules.module."
                        "register_module_forward_hook, _forward_pre_hook, _full_backward_hook or "
                        "_full_backward_pre_hook), which run at every module call and may change the model's map "
                        "or gradients, and which the lifted network would not run as the model does; remove them "
                        "first (the handle's .remove())")


def _check_batch_axis(module: nn.Module, path: str) -> None:
    """A ``TypeError`` naming the layer if ``module`` is an ``nn.Flatten`` or ``nn.Unflatten`` that
    merges or splits the batch axis by its own arguments (``start_dim=0`` with ``end_dim != 0``;
    ``dim=0`` with sizes other than ``(-1, 1, ..., 1)``), whatever the input: the lifted network's
    layers must keep it (dim 0), which the dry run of ``input_shape`` checks for negative dims."""
    if keeps_forward(module, nn.Flatten) and module.start_dim == 0 and module.end_dim != 0:
        what = f"flattens the batch axis (start_dim=0, end_dim={module.end_dim})"
    elif keeps_forward(module, nn.Unflatten) and module.dim == 0:
        sizes = [s[1] if isinstance(s, tuple) else s for s in module.unflattened_size]  # named sizes: (name, size)
        if sizes[0] == -1 and all(s == 1 for s in sizes[1:]):
            return
        what = f"splits the batch axis (dim=0, unflattened_size={tuple(module.unflattened_size)})"
    else:
        return
    raise TypeError(f"cannot lift layer {_layer(module, path)}: it {what}; every layer must keep the batch axis "
                    f"(dim 0) of its input")


def _leaves(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of the modules of a possibly nested ``nn.Sequential``, in the order its
    forward pass applies them: a module held twice appears twice (``named_children`` would list
    it once). A subclass of ``nn.Sequential`` that keeps its ``forward`` and iteration (as
    torchvision's ``Conv2dNormActivation``) is flattened too. Each module met, container or not,
    must have no hooks (:func:`_check_hooks`)."""
    _check_hooks(module, path)
    if not (keeps_forward(module, nn.Sequential) and type(module).__iter__ is nn.Sequential.__iter__):
        return [(path, module)]
    return [leaf for name, child in module._modules.items() for leaf in _leaves(child, f"{path}.{name}".lstrip("."))]


def _chain(modules: list[nn.Module]) -> nn.Module:
    if not modules:
        return nn.Identity()
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def lift(module: nn.Module, input_shape: Sequence[int] | None = None) -> LiftedNetwork:
    r"""The lifted form of ``module``, computing the same function with shared parameters.

    Args:
        module: an ``nn.Sequential`` (nested ones, and subclasses that keep its ``forward``, are
            flattened) of the affine modules of
            :data:`AFFINE` (``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.ConvTranspose1d/2d``,
            ``nn.AvgPool1d/2d``, ``nn.AdaptiveAvgPool1d/2d``, ``nn.ZeroPad1d/2d``,
            ``nn.ConstantPad1d/2d``, ``nn.ReflectionPad1d/2d``, ``nn.ReplicationPad1d/2d``,
            ``nn.Upsample`` in any mode, ``nn.PixelShuffle``, ``nn.PixelUnshuffle``,
            ``nn.Flatten``, ``nn.Unflatten``, ``nn.Identity``; with spectral normalisation in eval
            mode, lifted to :class:`~liftinv.affine.EvalSpectralNorm`, which the lifted network
            keeps in eval mode), ``nn.BatchNorm1d/2d/3d`` and
            ``nn.SyncBatchNorm`` and ``nn.InstanceNorm1d/2d/3d`` in eval mode with running
            statistics (``track_running_stats=True``; lifted to their affine map,
            :class:`~liftinv.affine.EvalBatchNorm`, which the lifted network keeps in training
            mode), ``nn.Dropout/1d/2d/3d``, ``nn.AlphaDropout`` and ``nn.FeatureAlphaDropout`` in
            eval mode (the identity, dropped) and proximal activations (``nn.ReLU``,
            ``nn.LeakyReLU``, ``nn.Hardtanh``, ``nn.Softshrink``, ``nn.Tanh``, ``nn.Sigmoid``,
            ``nn.Softmax(dim=1)`` or liftinv activations; see
            :func:`~liftinv.activations.as_activation`; ``nn.Softmax`` with a negative ``dim``
            and ``nn.Softmax2d`` (``dim=-3``) too where, for ``input_shape``, that dim is dim 1
            of the softmax's input, e.g. ``dim=-1`` after an ``nn.Linear``); a single
            such module; a :class:`LiftedNetwork`, returned as it is; or a model that holds its
            lifted form as ``.lifted`` (the unrolled reconstruction networks: that lifted
            network, whose input is :math:`x_0` and whose data maps read the measurements
            :math:`y`), which is returned. A module of no layer (``nn.Identity``, an empty
            ``nn.Sequential``, eval-mode dropouts) is the identity, lifted to the one layer
            :math:`x_1 = x_0`. A trailing chain that only rearranges entries (``nn.Flatten``,
            ``nn.Unflatten``, ``nn.PixelShuffle``, ``nn.PixelUnshuffle``) after an elementwise
            activation (``activation.elementwise``) joins the last layer's map (they commute with
            the activation); any other trailing affine chain, or one after an activation that is
            not elementwise (softmax, a custom one), becomes a last layer with the identity
            activation.
        input_shape: shape of one input sample (without batch). The lifted network then checks
            its inputs against it, and the conversion runs zero batches of one and of two
            samples through it, every layer keeping the batch axis. A given lifted network is
            returned as it is: ``input_shape`` must equal its own if it has one, and is neither
            checked nor set on it otherwise.

    Raises:
        TypeError: a module is neither affine nor a proximal activation (the message names its
            index in ``module``, its class and the supported set); a subclass of an affine module
            that overrides ``forward`` is not taken as affine; a batch or instance norm or dropout in
            training mode, or a norm without running statistics (it normalises by the batch or the
            sample), is refused, naming it, and so is an affine module with spectral normalisation
            in training mode (its weight changes at every call); so is a softmax over a negative dim without
            ``input_shape``, or one whose dim is not dim 1 of its input for ``input_shape``, and a
            module (container or not) with forward hooks or pre-hooks other than weight or spectral
            normalisation's or pruning's on an affine module, or with backward hooks (or any
            module while torch holds global module hooks), or whose
            ``forward`` was replaced on the instance (a ``torch.compile``'d module: lift the
            module it compiles, ``module._orig_mod``); an ``nn.Flatten(0)`` or ``nn.Unflatten(0,
            ...)`` that merges or splits the batch axis (the dry run of ``input_shape`` finds one
            that does so through a negative dim).
        ValueError: ``input_shape`` does not fit the network (a layer fails or does not keep the
            batch axis), or differs from the ``input_shape`` of a given lifted network.
    """
    given = module if isinstance(module, LiftedNetwork) else getattr(module, "lifted", None)
    if isinstance(given, LiftedNetwork):
        shape = None if input_shape is None else sample_shape("input_shape", input_shape)
        if shape is not None and given.input_shape is not None and shape != given.input_shape:
            raise ValueError(f"input_shape={shape} differs from the lifted network's input_shape {given.input_shape}")
        return given
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    _check_global_hooks()
    layers, chain, softmax_dims = [], [], {}
    for path, m in _leaves(module, ""):
        _check_batch_axis(m, path)
        mapped = m if _is_affine(m) else _eval_mode_map(m, path)
        if mapped is m and spectral_norms(m):
            _check_power_iteration(m, path)
            mapped = EvalSpectralNorm(m)
        if mapped is not None:
            if not isinstance(mapped, nn.Identity):
                chain.append(mapped)
            continue
        try:
            act = as_activation(m) if _softmax_dim(m) is None else Softmax()
        except TypeError as err:
            names = ", ".join(f"nn.{c.__name__}" for c in AFFINE)
            raise TypeError(
                f"cannot lift layer {_layer(m, path)}: it is neither affine "
                f"({names}, nn.BatchNorm1d/2d/3d, nn.SyncBatchNorm, nn.InstanceNorm1d/2d/3d and the dropouts "
                f"nn.Dropout/1d/2d/3d, nn.AlphaDropout, nn.FeatureAlphaDropout in eval mode, nested nn.Sequential) nor a "
                f"proximal activation: {err}"
            ) from err
        if _softmax_dim(m) is not None:
            softmax_dims[len(layers) + 1] = (_layer(m, path), _softmax_dim(m))
        layers.append(Layer([len(layers)], [_chain(chain)], act))
        chain = []
    if chain and layers and layers[-1].activation.elementwise and all(keeps_forward(m, *REARRANGE) for m in chain):
        # a trailing rearrangement P of an elementwise activation's output joins its layer,
        # P sigma(M x) = sigma(P M x): the same network with no identity layer to relax it
        last = layers.pop()
        layers.append(Layer(last.inputs, [_chain([last.maps[0], *chain])], last.activation))
    elif chain or not layers:  # a module of no layer (the identity) lifts to one identity layer
        layers.append(Layer([len(layers)], [_chain(chain)], Identity()))
    net = LiftedNetwork(layers, input_shape=input_shape)
    if input_shape is not None:
        _dry_run(net, softmax_dims)
    elif softmax_dims:
        where, dim = next(iter(softmax_dims.values()))
        raise TypeError(f"cannot lift layer {where}: it takes the softmax over dim={dim}, the class dimension (dim 1) "
                        "only for inputs of some number of dimensions; give input_shape so that lift can check it")
    return net


class InputShapeError(ValueError):
    """``input_shape`` does not fit lifted layer ``layer`` (a ``ValueError`` of :func:`lift`):
    the layer's map ``map`` fails on it, or does not keep the batch axis, as ``reason`` says."""

    def __init__(self, input_shape: tuple[int, ...], layer: int, map: nn.Module, reason: str):
        self.input_shape, self.layer, self.map, self.reason = input_shape, layer, map, reason
        super().__init__(f"input_shape={input_shape} (one sample, without the batch axis) does not fit lifted layer "
                         f"{layer} (map {map}): {reason}")


def _dry_run(net: LiftedNetwork, softmax_dims: dict[int, tuple[str, int]] | None = None) -> None:
    """Run zero batches of one and of two samples of ``net.input_shape`` through every layer,
    naming the one that fails or whose output does not keep the batch axis (dim 0): e.g. an
    ``nn.Conv2d`` given a sample shape without channels takes a batch as one unbatched image,
    whose channels are the samples (it fails on one of the two batch sizes). ``softmax_dims``
    maps a layer ``k`` to ``(name, dim)`` of the negative-``dim`` softmax it lifts
    (:func:`_softmax_dim`), a ``TypeError`` naming it unless ``dim`` is dim 1 of its input."""
    softmax_dims = softmax_dims or {}
    ref = reference_tensor(net)
    dtype, device = (torch.get_default_dtype(), "cpu") if ref is None else (ref.dtype, ref.device)
    for batch in (1, 2):
        xs = [torch.zeros((batch, *net.input_shape), dtype=dtype, device=device)]
        with torch.no_grad():
            for k in range(1, net.depth + 1):
                layer, a = net.layer(k), None
                try:
                    a = layer.preactivation(xs)
                    xs.append(layer.activation(a))
                except (RuntimeError, IndexError, ValueError) as err:  # IndexError: a dimension out of range;
                    if a is not None and isinstance(err, ValueError):  # the activation's own check, not the
                        raise  # shape's (a slope or a threshold that the dtype cannot hold)
                    # ValueError: a batch norm's check of the input's dimensions
                    raise InputShapeError(net.input_shape, k, layer.maps[0], str(err)) from err
                if xs[-1].dim() == 0 or xs[-1].shape[0] != batch:
                    raise InputShapeError(net.input_shape, k, layer.maps[0],
                                          f"it maps a batch of {batch} to shape {tuple(xs[-1].shape)}, which does "
                                          "not keep the batch axis (dim 0)")
                where, dim = softmax_dims.get(k, (None, None))
                if dim is not None and not (-xs[-1].dim() <= dim and dim % xs[-1].dim() == 1):
                    raise TypeError(f"cannot lift layer {where}: with input_shape={net.input_shape} it takes the softmax "
                                    f"over dim={dim} of a {xs[-1].dim()}-d input, which is not dim 1 (the class "
                                    "dimension, the only one liftinv's Softmax takes)")
