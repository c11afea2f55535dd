r"""Lifted networks: layers wired into a directed acyclic graph of variables.

Variable 0 is the network input :math:`u`; layer :math:`k = 1..K` produces variable :math:`k`,
:math:`x_k = \sigma_k(a_k)` with :math:`a_k = \sum_j M_{kj} x_{i_j} + c_k(y)`. The output is
:math:`x_K`. The lifted energy replaces every constraint by a penalty,

.. math:: E(x_1..x_K) = \sum_k \lambda_k P_k(x_k, a_k(x)),

which is zero exactly at the forward pass (:meth:`LiftedNetwork.feasible`). MLPs, ResNets,
unrolled proximal networks and unrolled reconstruction networks all share this shape.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from liftinv.penalty import BREGMAN, Penalty, check_penalty
from liftinv.layer import Layer, TermShapeError, is_module_sequence
from liftinv.validation import check_float_dtype, integer_index, reference_tensor, sample_shape
from operators.checks import is_real


def _readers(layers: Sequence[Layer]) -> list[list[tuple[int, int]]]:
    """``(k, position)`` of the layers reading each variable ``0..K``, after checking that every
    entry of ``layers`` is a :class:`~liftinv.layer.Layer` and that layer ``k`` reads variables
    in ``[0, k - 1]`` (a ``TypeError`` or ``ValueError`` naming it)."""
    readers: list[list[tuple[int, int]]] = [[] for _ in range(len(layers) + 1)]
    for k, layer in enumerate(layers, start=1):
        if not isinstance(layer, Layer):
            raise TypeError(f"layers[{k - 1}] must be a liftinv Layer, got {type(layer).__name__}")
        if max(layer.inputs) >= k or min(layer.inputs) < 0:
            raise ValueError(f"layer {k} reads variables {layer.inputs}; they must lie in [0, {k - 1}]")
        for pos, i in enumerate(layer.inputs):
            readers[i].append((k, pos))
    return readers


class LiftedNetwork(nn.Module):
    """A network of :class:`~liftinv.layer.Layer` s.

    Args:
        layers: layer ``k-1`` of the sequence produces variable ``k``; its inputs must be ``< k``
            (a ``TypeError`` naming ``layers`` for a single layer or a generator).
        input_shape: shape of one input sample (without batch; a sequence of integers >= 1),
            used to validate inputs, or ``None`` (inputs of any sample shape). Checked again when
            assigned (stored as a tuple of ints).
    """

    def __init__(self, layers: Sequence[Layer], *, input_shape: Sequence[int] | None = None):
        super().__init__()
        if not is_module_sequence(layers):
            raise TypeError(f"layers must be a sequence of liftinv Layers (one layer in a list: [layer]), "
                            f"got {type(layers).__name__}")
        if len(layers) == 0:
            raise ValueError("layers must not be empty")
        _readers(layers)  # checks the layers and what they read
        self.layers = nn.ModuleList(layers)
        self.input_shape = input_shape
        self._readers_of: tuple[tuple[Layer, ...], list] = ((), [])  # (the layers, their readers)

    def __setstate__(self, state: dict) -> None:
        if "input_shape" in state:  # a network pickled while input_shape was a plain attribute
            state["_input_shape"] = state.pop("input_shape")
        state.pop("_consumers", None)  # pickled while the readers were kept from the constructor
        state.setdefault("_readers_of", ((), []))
        super().__setstate__(state)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one input sample (without batch), a tuple of ints, or ``None``."""
        return self._input_shape

    @input_shape.setter
    def input_shape(self, value: Sequence[int] | None) -> None:
        self._input_shape = None if value is None else sample_shape("input_shape", value)

    @property
    def depth(self) -> int:
        """Number of layers ``K`` (variables are ``0..K``)."""
        return len(self.layers)

    def layer(self, k: int) -> Layer:
        """The layer producing variable ``k`` (``1 <= k <= K``; an ``IndexError`` otherwise, where
        ``layers[k - 1]`` would give the last layer for ``k = 0``); ``k`` is an integer (a
        ``TypeError`` for a bool, float or tensor, which ``True == 1`` would take for 1)."""
        k = integer_index("k", k, "a variable index")
        if not 1 <= k <= len(self.layers):
            raise IndexError(f"k must lie in [1, {len(self.layers)}] (variable 0 is the input, made by no layer), got {k!r}")
        return self.layers[k - 1]

    def consumers(self, i: int) -> list[tuple[int, int]]:
        """``(k, position)`` of every layer ``k`` that reads variable ``i`` (``0 <= i <= K``; an
        ``IndexError`` otherwise, where a negative ``i`` would count from the end); ``i`` is an
        integer (a ``TypeError`` for a bool, float or tensor). Read off the layers as they are
        now, so a layer replaced in ``layers`` after construction is counted (and checked as the
        constructor checks its layers); kept until a layer is replaced, added or removed (the
        solvers ask for them many times per sweep)."""
        i = integer_index("i", i, "a variable index")
        if not 0 <= i <= len(self.layers):
            raise IndexError(f"i must lie in [0, {len(self.layers)}], got {i!r}")
        layers = tuple(self.layers._modules.values())
        if layers != self._readers_of[0]:  # compares the layers by identity
            self._readers_of = (layers, _readers(layers))
        return list(self._readers_of[1][i])

    def check_variable_count(self, xs: Sequence[Tensor]) -> None:
        """A ``ValueError`` unless ``xs`` holds the ``K + 1`` variables ``x_0..x_K``."""
        if len(xs) != self.depth + 1:
            raise ValueError(f"xs must hold K + 1 = {self.depth + 1} variables, got {len(xs)}")

    def check_input(self, u: Tensor, name: str = "u") -> None:
        """Validate an input batch: a finite real floating tensor of a dtype torch computes with
        (:data:`~liftinv.validation.FLOAT_DTYPES`, also in a network without parameters or
        buffers, which fixes no dtype), of the dtype and device of the parameters (of the floating
        buffers in a network without parameters: :func:`~liftinv.validation.reference_tensor`),
        whose sample shape is ``input_shape``."""
        if not isinstance(u, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(u).__name__}")
        check_float_dtype(name, u)  # also where a network without parameters checks no dtype below
        ref = reference_tensor(self)
        if ref is not None and (u.dtype != ref.dtype or u.device != ref.device):
            raise TypeError(f"{name} has dtype {u.dtype} on {u.device}, the network uses {ref.dtype} on {ref.device}")
        if self.input_shape is not None and tuple(u.shape[1:]) != self.input_shape:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, self.input_shape))}), got {tuple(u.shape)}")
        if not bool(torch.isfinite(u).all()):
            raise ValueError(f"{name} contains NaN or Inf entries")

    def feasible(self, u: Tensor, y: Tensor | None = None) -> list[Tensor]:
        """All variables ``[x_0 = u, x_1, ..., x_K]`` of the forward pass (every penalty is zero).
        A layer whose terms differ in shape is named: ``TermShapeError`` (a ``ValueError``,
        :meth:`~liftinv.layer.Layer.preactivation`)."""
        self.check_input(u)
        xs = [u]
        for k, layer in enumerate(self.layers, start=1):
            try:
                xs.append(layer(xs, y))
            except TermShapeError as err:
                raise TermShapeError(f"lifted layer {k}: {err}") from None
        return xs

    def forward(self, u: Tensor, y: Tensor | None = None) -> Tensor:
        """Plain forward pass (inference): the output ``x_K``."""
        return self.feasible(u, y)[-1]

    def preactivation(self, k: int, xs: Sequence[Tensor], y: Tensor | None = None) -> Tensor:
        r""":math:`a_k` computed from the variables ``xs``."""
        return self.layer(k).preactivation(xs, y)

    def penalties(self, xs: Sequence[Tensor], y: Tensor | None = None, penalty: Penalty = BREGMAN) -> Tensor:
        r"""Unweighted per-sample penalties :math:`P_k(x_k, a_k)`, shape ``(K, B)``, of the variables
        ``xs = [x_0, ..., x_K]`` (a ``ValueError`` for another count) under ``penalty`` (a liftinv
        ``Penalty``, a ``TypeError`` otherwise)."""
        self.check_variable_count(xs)
        check_penalty(penalty)
        return torch.stack(
            [penalty.value(self.layer(k).activation, xs[k], self.preactivation(k, xs, y)) for k in range(1, self.depth + 1)]
        )

    def weights(self) -> Tensor:
        r"""Penalty weights :math:`\lambda_k`, shape ``(K,)``, in float64 (the default dtype would
        round them, e.g. :math:`\lambda = 0.1` to 7 digits in float32 energies of float64 networks)."""
        return torch.tensor([layer.weight for layer in self.layers], dtype=torch.float64)

    def check_weights(self, dtype: torch.dtype) -> None:
        r"""A ``ValueError`` naming ``layers[k].weight`` unless every penalty weight lies in
        :math:`[\text{tiny}, \max]` of ``torch.finfo(dtype)``, the dtype the energy is computed in
        (the weights multiply its tensors): a larger weight becomes Inf there (a NaN energy at the
        forward pass, :math:`\infty \cdot 0`), a smaller one a subnormal number or 0."""
        info = torch.finfo(dtype)
        for k, layer in enumerate(self.layers):
            if not info.tiny <= layer.weight <= info.max:
                raise ValueError(f"layers[{k}].weight = {layer.weight!r} overflows or vanishes in {dtype} (the penalty "
                                 f"weights multiply the network's tensors: they must lie in [{info.tiny:.3g}, "
                                 f"{info.max:.3g}])")

    def scale_weights_by_depth(self, ratio: float) -> None:
        r"""Multiply the penalty weights by powers of ``ratio`` (a finite real number > 0) that grow
        from the output down: :math:`\lambda_k \leftarrow \text{ratio}^{K-k}\,\lambda_k` for
        :math:`k = 1..K`, so the output layer keeps its weight and factors already set (such as
        those of an unrolled network's dual layers) are kept. :math:`k` is the layer's index in
        :attr:`layers` (the variable it produces): its depth on a chain; in a network whose layers
        also read variables further back (ResNets, unrolled networks) the factor follows the
        index, not the layer's distance to the output in the graph. The new weights are checked before
        any is set (a ``ValueError`` naming ``ratio`` where one would overflow or vanish in the dtype of
        the network's parameters, float64 without any: outside :math:`[\text{tiny}, \max]` of its
        ``torch.finfo``, as the weights multiply the network's tensors; convert the network first).

        Why: from the forward pass, a BCD step on a hidden variable :math:`x_k` passes the
        residuals of the layers reading it on to the layers below damped by :math:`t_k/(1+t_k)`,
        with :math:`t_k = s_k\lambda_k` its step (about :math:`1/(\lambda_{k+1}\|M_{k+1}\|^2)`)
        times its weight (see :mod:`liftinv.bench.alignment`). ``ratio > 1`` makes each
        :math:`t_k` grow with :math:`\lambda_k/\lambda_{k+1}`: the lifted problem then enforces
        the layers near the input more strictly, and as ``ratio`` grows a sweep's parameter
        gradients approach those of backpropagation through the forward pass, up to rounding:
        the residual :math:`\lambda_k(\sigma_k(a_k) - x_k^+)` a layer hands on is a difference of
        values of the size of :math:`x_k` that differ by about :math:`|g_k|/\lambda_k`, lost
        once :math:`\lambda_k` approaches :math:`|g_k|/(\epsilon |x_k|)` (:math:`\epsilon` the
        dtype's machine epsilon). On a small PNN (:math:`K = 5`, ``sweep_alignment``) the bottom
        group's cosine with backpropagation is 1.0 at ratio 100 in float64 but 0.23 at ratio 1e4
        (:math:`\lambda_1 = 10^{16}`); in float32 it is 0.99 at ratio 10 but 0.61 at ratio 100
        (:math:`\lambda_1 = 10^8`).
        """
        if not is_real(ratio):
            raise TypeError(f"ratio must be a real number, got {ratio!r}")
        try:
            r = float(ratio)
        except OverflowError:  # an integer (or fraction) beyond the float range
            r = math.inf
        if not (math.isfinite(r) and r > 0):
            raise ValueError(f"ratio must be a finite number > 0 (within the float range), got {ratio!r}")
        K = self.depth
        try:
            new = [r ** (K - k) * layer.weight for k, layer in enumerate(self.layers, start=1)]
        except OverflowError:  # a power beyond the float range
            new = [math.inf]
        ref = reference_tensor(self)
        dtype = ref.dtype if ref is not None else torch.float64
        info = torch.finfo(dtype)
        if not all(info.tiny <= w <= info.max for w in new):  # NaN and Inf fail too
            raise ValueError(f"ratio = {ratio!r} makes a penalty weight overflow or vanish in {dtype} over {K} layers "
                             f"(the weights multiply the network's tensors: they must lie in [{info.tiny:.3g}, "
                             f"{info.max:.3g}])")
        for layer, w in zip(self.layers, new):
            layer.weight = w

    def energy(self, xs: Sequence[Tensor], y: Tensor | None = None, penalty: Penalty = BREGMAN) -> Tensor:
        r"""Per-sample lifted energy :math:`\sum_k \lambda_k P_k(x_k, a_k)`, shape ``(B,)`` (the weights
        checked against the penalties' dtype by :meth:`check_weights`)."""
        p = self.penalties(xs, y, penalty)
        self.check_weights(p.dtype)
        return (self.weights().to(p) [:, None] * p).sum(0)

    def gaps(self, xs: Sequence[Tensor], y: Tensor | None = None, penalty: Penalty = BREGMAN) -> Tensor:
        r"""Batch-mean penalty of each layer, shape ``(K,)``: how far each constraint is violated."""
        return self.penalties(xs, y, penalty).mean(1)
