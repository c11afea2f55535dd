r"""Affine maps that feed a layer's activation.

A layer's pre-activation is :math:`a = \sum_j M_j x_{i_j} + c(y)`: each :math:`M_j` is an affine
``nn.Module`` (``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.ConvTranspose1d/2d``, chains of them
with pooling, padding, upsampling, pixel (un)shuffle or ``nn.Flatten``/``nn.Unflatten``, see
:data:`liftinv.convert.AFFINE`, or the maps below) and :math:`c(y)` an optional affine map of the
measurements. Adjoints and parameter gradients are taken by autograd through one map at a time
(exact, since the maps are affine), so any affine module is admissible. A map whose linear part
has a known adjoint (an ``apply_adjoint(r, input_shape)`` method, or a plain stride-1
``nn.Conv2d``) can be applied by :func:`adjoint_graph`, whose graph keeps no tensor.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm

from liftinv.validation import keeps_forward, positive_finite, real_float
from operators.checks import fixed_at_construction, values_trusted


#: Most elements of the per-channel temporary of :func:`conv_adjoint`'s one-channel path (the
#: batch is processed in slices of at most this many, and at least one sample): smaller slices
#: cost speed, larger ones memory.
ADJOINT_SLICE = 2**15


def _same_padding(weight: Tensor, padding) -> bool:
    """Whether ``padding`` (as ``F.conv_transpose2d`` takes it: one integer, Python or NumPy, or a
    sequence of one or two) is ``kernel // 2`` in both dimensions of an odd kernel."""
    kh, kw = weight.shape[-2:]
    pad = tuple(padding) if isinstance(padding, Sequence) else (padding,)
    ph, pw = pad * 2 if len(pad) == 1 else pad
    return kh % 2 == 1 and kw % 2 == 1 and (ph, pw) == (kh // 2, kw // 2)


def _adjoint_cpu(u: Tensor, weight: Tensor, padding) -> Tensor:
    r""":math:`L^* u` (``conv_transpose2d``) for "same" padding, by forward convolutions: with one
    output channel, :math:`\sum_c \check w_c \star u_c`, the per-channel convolution with the
    flipped kernels summed over the channels, slice by slice of the batch; with several, the
    convolution with the flipped kernels, input and output channels swapped."""
    flipped = weight.flip(-1, -2)
    if weight.shape[1] > 1:
        return F.conv2d(u, flipped.transpose(0, 1), padding=padding)
    n = max(1, ADJOINT_SLICE // max(1, u.shape[1:].numel()))
    out = u.new_empty(len(u), 1, *u.shape[2:])
    for start in range(0, len(u), n):
        part = F.conv2d(u[start:start + n], flipped, padding=padding, groups=u.shape[1])
        torch.sum(part, 1, keepdim=True, out=out[start:start + n])
        del part  # before the next slice's is allocated
    return out


class _ConvAdjointFunction(torch.autograd.Function):
    r""":math:`L^* u` for a "same"-padded convolution :math:`L = W \star \cdot` by
    :func:`_adjoint_cpu`, with the vector-Jacobian products of the transpose:
    :math:`\bar u = L \bar y` and :math:`\bar W = \partial_W \langle u, L_W \bar y\rangle`
    (``conv2d_weight``), and the Jacobian-vector product :math:`L_W^*\dot u + L_{\dot W}^* u`
    (so ``torch.func.vjp``/``jvp`` apply too)."""

    @staticmethod
    def forward(u: Tensor, weight: Tensor, padding) -> Tensor:
        return _adjoint_cpu(u, weight, padding)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        u, weight, ctx.padding = inputs
        ctx.save_for_backward(u, weight)
        ctx.save_for_forward(u, weight)

    @staticmethod
    def backward(ctx, g: Tensor):
        u, weight = ctx.saved_tensors
        grad_u = F.conv2d(g, weight, padding=ctx.padding) if ctx.needs_input_grad[0] else None
        grad_w = torch.nn.grad.conv2d_weight(g, weight.shape, u, padding=ctx.padding) if ctx.needs_input_grad[1] else None
        return grad_u, grad_w, None

    @staticmethod
    def jvp(ctx, du: Tensor | None, dw: Tensor | None, _) -> Tensor:
        u, weight = ctx.saved_tensors
        return _adjoint_tangent(u, weight, ctx.padding, du, dw)


def _sum_defined(*terms: Tensor | None) -> Tensor | None:
    """The sum of the terms that are not ``None`` (``None`` if none is)."""
    defined = [t for t in terms if t is not None]
    return sum(defined[1:], defined[0]) if defined else None


def _adjoint_tangent(u: Tensor, weight: Tensor, padding, du: Tensor | None, dw: Tensor | None) -> Tensor | None:
    r""":math:`L_W^*\dot u + L_{\dot W}^* u`: the tangent of :math:`L_W^* u` (``None`` tangents are zero)."""
    return _sum_defined(conv_adjoint(du, weight, padding) if du is not None else None,
                        conv_adjoint(u, dw, padding) if dw is not None else None)


def conv_adjoint(u: Tensor, weight: Tensor, padding) -> Tensor:
    r""":math:`L^* u`, i.e. ``F.conv_transpose2d(u, weight, padding=padding)``, for the stride-1,
    one-group convolution :math:`L` with ``weight``. On the CPU, with "same" padding (odd
    kernels, ``padding = kernel // 2``), it is computed by forward convolutions with the flipped
    kernels (:func:`_adjoint_cpu`; to one channel, per input channel and summed, in slices of the
    batch of at most :data:`ADJOINT_SLICE` elements, the size of its one temporary): the same
    values, faster than oneDNN's transposed convolution with few channels (``python -m
    liftinv.bench conv-adjoint``), with the first derivatives written out."""
    if u.device.type == "cpu" and u.dim() == 4 and _same_padding(weight, padding):
        return _ConvAdjointFunction.apply(u, weight, padding)
    return F.conv_transpose2d(u, weight, padding=padding)


def _check_zero_padding(conv: nn.Conv2d, name: str) -> None:
    """The maps built on a convolution's weight apply ``F.conv2d`` with zero padding: refuse
    another ``padding_mode`` ("reflect", "replicate", "circular" pad otherwise)."""
    if conv.padding_mode != "zeros":
        raise ValueError(f"{name} must have padding_mode='zeros' (its weight is applied with zero padding), "
                         f"got {conv.padding_mode!r}")


def _check_numeric_padding(conv: nn.Conv2d) -> None:
    """``conv`` must be an ``nn.Conv2d`` whose class keeps its ``forward`` (the maps apply its
    weight); adjoints need the padding in pixels (``nn.Conv2d`` also accepts "same" and
    "valid"), and zero padding (:func:`_check_zero_padding`)."""
    if not keeps_forward(conv, nn.Conv2d):
        what = "overrides forward" if isinstance(conv, nn.Conv2d) else "is not one"
        raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}, which {what}")
    if isinstance(conv.padding, str):
        raise ValueError(f"conv must have numeric padding (e.g. padding=kernel_size // 2), got {conv.padding!r}")
    _check_zero_padding(conv, "conv")


def _fixed_number(name: str, value: object, positive: bool = False) -> float:
    """``value`` as a float if it is a finite real number (> 0 if ``positive``,
    :func:`~liftinv.validation.positive_finite`; a Python or NumPy number, not a bool, string or
    tensor: :func:`~operators.checks.is_real`), else a ``ValueError`` naming ``name``: the fixed
    scales and steps of the maps below."""
    if positive:
        return positive_finite(name, value)
    number = real_float(value)  # NaN for what is not a real number, +-inf beyond the float range
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


class ScaledConv(nn.Module):
    r""":math:`x \mapsto s\,Lx` for a bias-free, zero-padded ``nn.Conv2d`` :math:`L` (shared, not
    copied) and a fixed finite real :math:`s` (a Python or NumPy number), computed as the
    convolution with the weight :math:`sW` (the scale touches the kernel, not the feature maps)."""

    scale = fixed_at_construction("scale", r"The scale :math:`s`, fixed at construction.")

    def __init__(self, conv: nn.Conv2d, scale: float = 1.0):
        super().__init__()
        _check_numeric_padding(conv)
        if conv.bias is not None:
            raise ValueError("conv must be a bias-free nn.Conv2d")
        self.conv = conv
        self.scale = _fixed_number("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        return F.conv2d(x, self.scale * c.weight, None, c.stride, c.padding, c.dilation, c.groups)

    def apply_adjoint(self, r: Tensor, input_shape: torch.Size) -> Tensor:
        """:math:`s L^* r` on inputs of ``input_shape``."""
        c = self.conv
        return torch.nn.grad.conv2d_input(input_shape, self.scale * c.weight, r, c.stride, c.padding, c.dilation, c.groups)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class ConvAdjoint(nn.Module):
    r""":math:`L^*`: the transposed convolution sharing the weight of ``conv`` (a bias-free
    ``nn.Conv2d`` with zero ``padding = kernel // 2``, stride 1, no dilation, one group), times an
    optional fixed ``scale``, a finite real number (applied to the kernel)."""

    scale = fixed_at_construction("scale", "The scale, fixed at construction.")

    def __init__(self, conv: nn.Conv2d, scale: float = 1.0):
        super().__init__()
        _check_numeric_padding(conv)
        if conv.bias is not None or conv.stride != (1, 1):
            raise ValueError("conv must be a bias-free stride-1 nn.Conv2d to have a transpose")
        if conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError(f"conv must have dilation 1 and groups 1 to have a transpose, got dilation={conv.dilation}, "
                             f"groups={conv.groups}")
        self.conv = conv
        self.scale = _fixed_number("scale", scale)

    def forward(self, u: Tensor) -> Tensor:
        return conv_adjoint(u, self.scale * self.conv.weight, self.conv.padding)

    def apply_adjoint(self, r: Tensor, input_shape: torch.Size) -> Tensor:
        """:math:`s L r`."""
        return F.conv2d(r, self.scale * self.conv.weight, padding=self.conv.padding)


class _NormalStepFunction(torch.autograd.Function):
    r""":math:`u - \tau L L^* u` with its vector-Jacobian products written out, keeping
    :math:`v = L^* u` (one channel per image, where :math:`u` has many; a second, non-differentiable
    output, which ``setup_context`` saves):

    .. math::
        \bar u = r - \tau L L^* r, \qquad
        \bar W = -\tau\big(\partial_W\langle r, L_W v\rangle + \partial_W\langle L^* r, L_W^* u\rangle\big)

    (both terms by ``conv2d_weight``). The input's product is summed in place, one layer-sized
    temporary, where autograd through the composition would add the identity branch's cotangent
    out of place when that cotangent is the caller's. Twice differentiable (a backward pass with
    ``create_graph`` recomputes :math:`v` with its graph); the Jacobian-vector product is
    :math:`\dot u - \tau(L_W \dot v + L_{\dot W} v)` with :math:`\dot v = L_W^*\dot u + L_{\dot W}^* u`
    (so ``torch.func.vjp``/``jvp`` apply too)."""

    @staticmethod
    def forward(u: Tensor, weight: Tensor, tau: float, padding) -> tuple[Tensor, Tensor]:
        v = conv_adjoint(u, weight, padding)
        return F.conv2d(v, -tau * weight, padding=padding).add_(u), v

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        u, weight, ctx.tau, ctx.padding = inputs
        v = output[1]
        ctx.mark_non_differentiable(v)
        ctx.save_for_backward(u, weight, v)
        ctx.save_for_forward(u, weight, v)

    @staticmethod
    def backward(ctx, r: Tensor, _):
        u, weight, v = ctx.saved_tensors
        tau, padding = ctx.tau, ctx.padding
        if torch.is_grad_enabled():  # a differentiable backward (create_graph): v as a function of u and W
            v = conv_adjoint(u, weight, padding)
        q = conv_adjoint(r, weight, padding)
        grad_u = F.conv2d(q, -tau * weight, padding=padding).add_(r) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(v, weight.shape, r, padding=padding)
            grad_w = grad_w + torch.nn.grad.conv2d_weight(q, weight.shape, u, padding=padding)
            grad_w = -tau * grad_w
        return grad_u, grad_w, None, None

    @staticmethod
    def jvp(ctx, du: Tensor | None, dw: Tensor | None, _tau, _padding) -> tuple[Tensor, None]:
        u, weight, v = ctx.saved_tensors
        tau, padding = ctx.tau, ctx.padding
        dv = _adjoint_tangent(u, weight, padding, du, dw)
        dout = _sum_defined(du, F.conv2d(dv, -tau * weight, padding=padding),
                            F.conv2d(v, -tau * dw, padding=padding) if dw is not None else None)
        return dout, None


class NormalStep(nn.Module):
    r""":math:`u \mapsto u - \tau L L^* u` for a convolution :math:`L` (dual forward-backward step
    of a proximal neural network); :math:`\tau` is a fixed step, a finite number > 0. Its state
    is the weight of :math:`L`, ``adjoint.conv.weight``.

    The state dicts of earlier versions (training checkpoints included) also hold
    ``step.conv.weight``, a second entry for the same shared weight (of a submodule
    :math:`-\tau L` that nothing applied): on load it is dropped if equal to
    ``adjoint.conv.weight``, taken as that entry if it is absent, and refused otherwise
    (``load_state_dict``'s ``RuntimeError``; the two entries of such a state dict are always
    equal)."""

    tau = fixed_at_construction("tau", r"The step :math:`\tau`, fixed at construction.")

    def __init__(self, conv: nn.Conv2d, tau: float):
        super().__init__()
        tau = _fixed_number("tau", tau, positive=True)
        self.adjoint = ConvAdjoint(conv)
        self.tau = tau
        self.register_load_state_dict_pre_hook(_drop_old_step)

    def forward(self, u: Tensor) -> Tensor:
        conv = self.adjoint.conv
        return _NormalStepFunction.apply(u, conv.weight, self.tau, conv.padding)[0]

    def apply_adjoint(self, r: Tensor, input_shape: torch.Size) -> Tensor:
        """The map is self-adjoint."""
        return self(r)


def _drop_old_step(module: NormalStep, state_dict: dict, prefix: str, local_metadata, strict, missing_keys,
                   unexpected_keys, error_msgs: list[str]) -> None:
    """:class:`NormalStep`'s rule for the ``step.conv.weight`` entry of earlier state dicts (a
    load pre-hook); a refusal is an error message, which ``load_state_dict`` raises as a
    ``RuntimeError`` after the load, as it does a shape mismatch."""
    old, weight = prefix + "step.conv.weight", prefix + "adjoint.conv.weight"
    if old not in state_dict:
        return
    value = state_dict.pop(old)
    if weight not in state_dict:
        state_dict[weight] = value
        return
    current = state_dict[weight]
    if not (torch.is_tensor(value) and torch.is_tensor(current) and value.shape == current.shape
            and torch.equal(value, current.to(value.device))):
        error_msgs.append(f"state dict entry {old} (an earlier version's second entry for {weight}) differs from "
                          f"{weight}: both are the weight of one convolution")


class GradientStep(nn.Module):
    r"""Linear part :math:`x \mapsto x - \tau A^*A x` of the gradient step
    :math:`x - \tau A^*(Ax - y)` on :math:`\tfrac12\|Ax-y\|^2`; its data part is
    :class:`MeasurementAdjoint` (:math:`\tau A^* y`). ``tau``, a finite number > 0, is fixed:
    a parameter without gradient (so that it is in the state dict), stored in torch's default
    dtype, in which it must stay finite and > 0 (float32: about 1.4e-45 to 3.4e38)."""

    def __init__(self, physics, tau: float):
        super().__init__()
        value = _fixed_number("tau", tau, positive=True)
        stored = torch.tensor(value)
        if not (math.isfinite(float(stored)) and float(stored) > 0):
            raise ValueError(f"tau must be a finite number > 0 in the default dtype {stored.dtype}, in which it is stored, "
                             f"got {tau!r} (stored as {float(stored)})")
        self.bind(physics)
        self.tau = nn.Parameter(stored, requires_grad=False)

    def bind(self, physics) -> None:
        """Use ``physics`` from now on. It is held by reference, not registered as a submodule,
        so checkpoints stay small and one physics can serve many steps."""
        self.__dict__["physics"] = physics

    def forward(self, x: Tensor) -> Tensor:
        with values_trusted():  # the network's inputs are checked; NaN inside is caught by its users
            return x - self.tau * self.physics.A_adjoint(self.physics.A(x))

    def apply_adjoint(self, r: Tensor, input_shape: torch.Size) -> Tensor:
        """The map is self-adjoint (``A_adjoint`` is the adjoint of ``A``, as deepinv's
        ``LinearPhysics`` requires)."""
        return self(r)


class MeasurementAdjoint(nn.Module):
    r""":math:`y \mapsto \tau A^* y`, sharing :math:`\tau` with a :class:`GradientStep`."""

    def __init__(self, step: GradientStep):
        super().__init__()
        self.step = step

    def forward(self, y: Tensor) -> Tensor:
        with values_trusted():
            return self.step.tau * self.step.physics.A_adjoint(y)


def _check_transposable(module: nn.Module, name: str) -> None:
    """Raise unless ``module`` is an ``nn.Linear`` or an ``nn.Conv2d`` (whose class keeps its
    ``forward``: the maps use its weight) with stride 1, ``padding = kernel // 2`` (whose
    transpose maps back to the input's shape) and zero padding."""
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise TypeError(f"{name} must be an nn.Linear or nn.Conv2d, got {type(module).__name__}")
    if not keeps_forward(module, nn.Linear, nn.Conv2d):
        raise TypeError(f"{name} is a {type(module).__name__}, which overrides forward: its map need not be its weight's")
    if isinstance(module, nn.Conv2d) and (
        module.stride != (1, 1) or module.padding != tuple(k // 2 for k in module.kernel_size)
        or module.dilation != (1, 1) or module.groups != 1
    ):
        raise ValueError(f"{name} must be a stride-1 conv with padding kernel // 2, got {module}")
    if isinstance(module, nn.Conv2d):
        _check_zero_padding(module, name)


def _times(module: nn.Linear | nn.Conv2d, x: Tensor) -> Tensor:
    """:math:`Wx`, the linear part of ``module`` (no bias)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, module.weight)
    return F.conv2d(x, module.weight, padding=module.padding)


def _times_transpose(module: nn.Linear | nn.Conv2d, r: Tensor) -> Tensor:
    r""":math:`W^\top r` for the linear part :math:`W` of ``module``."""
    if isinstance(module, nn.Linear):
        return r @ module.weight
    return conv_adjoint(r, module.weight, module.padding)


class _SharedWeight(nn.Module):
    """A map built on the weight of ``module`` (an ``nn.Linear``, or an ``nn.Conv2d`` with stride
    1 and padding ``kernel // 2``), shared, not copied; the bias is not used."""

    def __init__(self, module: nn.Linear | nn.Conv2d):
        super().__init__()
        _check_transposable(module, "module")
        self.module = module


class Unbiased(_SharedWeight):
    r""":math:`x \mapsto Wx`: the linear part of ``module``."""

    def forward(self, x: Tensor) -> Tensor:
        return _times(self.module, x)

    def apply_adjoint(self, r: Tensor, input_shape: torch.Size) -> Tensor:
        r""":math:`W^\top r`."""
        return _times_transpose(self.module, r)


class Transposed(_SharedWeight):
    r""":math:`x \mapsto W^\top x`: the adjoint of the linear part of ``module``."""

    def forward(self, x: Tensor) -> Tensor:
        return _times_transpose(self.module, x)

    def apply_adjoint(self, r: Tensor, input_shape: torch.Size) -> Tensor:
        """:math:`W r`."""
        return _times(self.module, r)


class Chain(nn.Sequential):
    r""":math:`x \mapsto g(f(x))` for two affine maps, each an ``nn.Linear``, a stride-1
    ``nn.Conv2d`` with padding ``kernel // 2`` (bias or not), an :class:`Unbiased` or a
    :class:`Transposed` (parameters shared, not copied), with the adjoint of its linear part,
    :math:`F^\top G^\top r`, written out (:func:`adjoint_graph` then keeps no intermediate
    result). A ResNet whose residual stream is eliminated reads :math:`z_i` through
    :math:`W_j V_i` (:class:`~liftinv.architectures.ResNet`)."""

    def __init__(self, first: nn.Module, then: nn.Module):
        for name, m in (("first", first), ("then", then)):
            if not isinstance(m, _SharedWeight):
                _check_transposable(m, name)
        super().__init__(first, then)

    def apply_adjoint(self, r: Tensor, input_shape: torch.Size) -> Tensor:
        r""":math:`F^\top G^\top r`."""
        for m in reversed(self):
            r = m.apply_adjoint(r, None) if isinstance(m, _SharedWeight) else _times_transpose(m, r)
        return r


#: Batch norms whose map in eval mode, with running statistics, is :class:`EvalBatchNorm`'s
#: (``nn.SyncBatchNorm`` synchronises batch statistics in training mode only).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

#: Instance norms, whose map in eval mode with running statistics (``track_running_stats=True``)
#: is :class:`EvalBatchNorm`'s too, on batched inputs; without them (the default), or in
#: training mode, they normalise each sample by its own statistics.
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


class _OwnTrainingFlag(nn.Module):
    """Base of the maps that apply the eval-mode map of a user's module (shared, not copied):
    :meth:`train` sets this map's ``training`` flag only, so the user's module keeps its own mode
    (switching it would change the model it came from)."""

    def train(self, mode: bool = True) -> "_OwnTrainingFlag":
        """Set this map's ``training`` flag only (the shared module keeps its own mode)."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {type(mode).__name__}")
        self.training = mode
        return self


class EvalBatchNorm(_OwnTrainingFlag):
    r""":math:`x \mapsto \gamma\,(x - \mu)/\sqrt{v + \epsilon} + \beta` per channel (dim 1):
    the map of ``bn`` (an ``nn.BatchNorm1d``, ``nn.BatchNorm2d``, ``nn.BatchNorm3d`` or
    ``nn.SyncBatchNorm`` of :data:`BATCH_NORMS`, or an ``nn.InstanceNorm1d/2d/3d`` of
    :data:`INSTANCE_NORMS`, shared, not copied) in eval
    mode, with its running mean :math:`\mu` and variance :math:`v`, its ``eps``
    :math:`\epsilon` and its affine parameters :math:`\gamma, \beta` (1 and 0 without them),
    whatever its ``training`` flag: a network holding this map keeps it in training mode, where
    ``bn`` itself would normalise by the batch (by each sample, an instance norm), and leaves the
    running statistics as they are. ``bn`` must keep running statistics
    (``track_running_stats=True``; an instance norm whose flag was set to False after
    construction normalises by the sample in eval mode although it holds them, and is refused
    too). An instance norm takes an input without a batch axis as one
    sample whose channels are the first axis: such inputs are refused."""

    def __init__(self, bn: nn.modules.batchnorm._NormBase):
        super().__init__()
        if not keeps_forward(bn, *BATCH_NORMS, *INSTANCE_NORMS):
            raise TypeError("bn must be an nn.BatchNorm1d/2d/3d, nn.SyncBatchNorm or nn.InstanceNorm1d/2d/3d that keeps "
                            f"its forward, got {type(bn).__name__}")
        # an instance norm normalises by each sample's statistics in eval mode too once its
        # track_running_stats is False, even if it still holds running statistics
        untracked = isinstance(bn, INSTANCE_NORMS) and not bn.track_running_stats
        if bn.running_mean is None or bn.running_var is None or untracked:
            each = "sample" if isinstance(bn, INSTANCE_NORMS) else "batch"
            raise ValueError(f"bn must keep running statistics (track_running_stats=True): without them it normalises "
                             f"each {each} by its own statistics, in eval mode too, which is no affine map of a sample")
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        bn = self.bn
        bn._check_input_dim(x)
        if isinstance(bn, INSTANCE_NORMS) and x.dim() == bn._get_no_batch_dim():
            raise ValueError(f"{type(bn).__name__} takes a {x.dim()}-d input as one sample without a batch axis, "
                             f"got shape {tuple(x.shape)}: give each sample its channel axis")
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def spectral_norms(module: nn.Module) -> list[nn.Module]:
    """The spectral normalisations of ``module`` whose ``training`` flag decides whether its
    forward pass takes a power-iteration step: ``module`` itself for ``torch.nn.utils.spectral_norm``
    (a pre-hook), the parametrizations of ``torch.nn.utils.parametrizations.spectral_norm``."""
    hooked = [module] if any(isinstance(h, SpectralNorm) for h in module._forward_pre_hooks.values()) else []
    if not parametrize.is_parametrized(module):
        return hooked
    return hooked + [p for ps in module.parametrizations.values() for p in ps if isinstance(p, _SpectralNorm)]


class EvalSpectralNorm(_OwnTrainingFlag):
    r"""The map of an affine ``module`` with spectral normalisation (shared, not copied) in eval
    mode, :math:`x \mapsto (W/\sigma) x + b` with the power-iteration vectors kept: a network
    holding it keeps it in eval mode in training mode too (its :meth:`train` sets this map's flag
    only; in training mode ``module`` would take a power-iteration step at every call, which is no
    fixed map), and it refuses, naming ``module``, to run after ``module`` was switched to
    training mode (a ``.train()`` of the model it came from)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        if not spectral_norms(module):
            raise ValueError(f"module must have spectral normalisation, got {type(module).__name__}")
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        if any(m.training for m in spectral_norms(self.module)):
            raise RuntimeError(f"the spectral normalisation of {type(self.module).__name__} was switched to training mode "
                               "after it was lifted (the model's .train()), where every forward pass takes a "
                               "power-iteration step and changes its weight, which is no fixed map; call .eval() on "
                               "the model")
        return self.module(x)


#: Modules that are linear (no constant part) whatever their parameters, if their class keeps the
#: ``forward`` of one of these (see :func:`is_linear`).
LINEAR_MODULES = (ScaledConv, ConvAdjoint, NormalStep, GradientStep, Unbiased, Transposed)

#: torch modules that are linear whatever their settings, if their class keeps the ``forward``
#: of one of these (e.g. ``nn.ZeroPad2d`` is a ``nn.ConstantPad2d`` with value 0, see
#: :func:`is_linear`; ``nn.Upsample`` interpolates linearly in every mode; a subclass of
#: ``nn.Identity`` whose ``forward`` adds a constant is not linear).
LINEAR_TORCH = (nn.Identity, nn.Flatten, nn.Unflatten, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                nn.AdaptiveAvgPool2d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d,
                nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle)


def is_linear(module: nn.Module) -> bool:
    """Whether the affine ``module`` is known to be linear, :math:`f(0) = 0`: the maps of this
    module, bias-free ``nn.Linear``/``nn.Conv1d/2d/3d``/``nn.ConvTranspose1d/2d``, the modules
    of :data:`LINEAR_TORCH`, constant padding by 0 (``nn.ConstantPad1d/2d``, ``nn.ZeroPad1d/2d``), and ``nn.Sequential`` chains of
    them (only if their class keeps its ``forward``: a subclass whose ``forward`` adds a constant is
    not linear)."""
    if keeps_forward(module, *LINEAR_MODULES, *LINEAR_TORCH):
        return True
    if keeps_forward(module, nn.ConstantPad1d, nn.ConstantPad2d):
        return module.value == 0
    if keeps_forward(module, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d):
        return module.bias is None
    if keeps_forward(module, nn.Sequential):
        return all(is_linear(m) for m in module)
    return False


class _ByAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, module: nn.Module, adjoint) -> Tensor:
        ctx.adjoint, ctx.shape = adjoint, x.shape
        return module(x)

    @staticmethod
    def backward(ctx, r: Tensor):
        return ctx.adjoint(r, ctx.shape), None, None


def adjoint_method(module: nn.Module):
    """``adjoint(r, input_shape)`` of the linear part of ``module``: its ``apply_adjoint`` method
    (if ``module`` keeps the ``forward`` of the class that defines it: a subclass that overrides
    ``forward`` keeps an adjoint of another map), or for an ``nn.Conv2d`` (whose class keeps its
    ``forward``) with stride 1, no dilation, one group, numeric zero padding (bias or not)
    :func:`conv_adjoint` of its weight; ``None`` for other modules."""
    owner = next((cls for cls in type(module).__mro__ if "apply_adjoint" in vars(cls)), None)
    if owner is not None and callable(module.apply_adjoint) and keeps_forward(module, owner):
        return module.apply_adjoint
    if (keeps_forward(module, nn.Conv2d) and module.stride == (1, 1) and module.dilation == (1, 1) and module.groups == 1
            and module.padding_mode == "zeros" and not isinstance(module.padding, str)):
        return lambda r, input_shape: conv_adjoint(r, module.weight, module.padding)
    return None


def adjoint_graph(module: nn.Module, x: Tensor) -> Tensor:
    r""":math:`Mx` for an affine ``module`` whose linear part has a known adjoint (an
    ``apply_adjoint`` method, or a plain stride-1 ``nn.Conv2d``: :func:`conv_adjoint`), with a
    graph to ``x`` whose backward pass is :math:`r \mapsto M^* r` by that adjoint: the graph keeps
    no tensor (autograd would keep the intermediate results of :math:`M`, e.g. the blurred image
    inside :math:`A^*A`) and avoids oneDNN's slow backward of convolutions with few channels. The
    parameters of ``module`` get no gradient through it. Other modules, or an ``x`` that does not
    require grad, are applied as they are."""
    adjoint = adjoint_method(module)
    if x.requires_grad and adjoint is not None:
        return _ByAdjoint.apply(x, module, adjoint)
    return module(x)


def linear_part(module: nn.Module, x: Tensor) -> Tensor:
    r"""Apply the linear part of an affine ``module``: :math:`Mx = f(x) - f(0)` (:math:`f(x)`
    alone when :func:`is_linear`)."""
    out = module(x)
    return out if is_linear(module) else out - module(torch.zeros_like(x))
