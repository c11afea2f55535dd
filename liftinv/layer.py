r"""A lifted layer: :math:`x_k = \sigma_k\big(\sum_j M_{kj} x_{i_j} + c_k(y)\big)` with weight
:math:`\lambda_k` on its penalty."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from liftinv.activations import Activation, as_activation
from liftinv.affine import ScaledConv
from liftinv.validation import integer_index, keeps_forward, positive_finite
from operators.checks import fixed_at_construction


def shares_storage(t: Tensor, others: Sequence[Tensor]) -> bool:
    """Whether ``t`` may share storage with one of ``others`` (True when storages are not
    accessible, e.g. under ``torch.func`` transforms)."""
    try:
        return t.untyped_storage().data_ptr() in {x.untyped_storage().data_ptr() for x in others}
    except (NotImplementedError, RuntimeError):
        return True


def _shared_convolutions(maps: Sequence[nn.Module]) -> list[tuple[int, list[tuple[int, float]]]]:
    r"""``[(first, [(position, coefficient), ...])]`` in order of first position: maps that are
    ``ScaledConv`` of the same convolution (non-zero scales; instances that keep its ``forward``,
    whose map is :math:`s_j L`) form one group, with the coefficients
    :math:`s_j / s_{\text{first}}`; every other map is a group of its own, coefficient 1 (also
    a module that the layer applies to several inputs)."""
    groups: dict[tuple[str, int], tuple[int, list[tuple[int, float]]]] = {}
    for pos, m in enumerate(maps):
        scaled = isinstance(m, ScaledConv) and m.scale != 0 and keeps_forward(m, ScaledConv)
        key = ("conv", id(m.conv)) if scaled else ("alone", pos)
        if key in groups:
            first, parts = groups[key]
            parts.append((pos, m.scale / maps[first].scale))
        else:
            groups[key] = (pos, [(pos, 1.0)])
    return list(groups.values())


def is_module_sequence(value: object) -> bool:
    """Whether ``value`` is a sequence that may hold modules: a ``Sequence`` that is no string,
    or an ``nn.ModuleList`` or ``nn.Sequential`` (which are not registered as ``Sequence``), but
    no other module (an ``nn.Linear`` given for ``[nn.Linear]`` has no ``len``)."""
    if isinstance(value, (nn.ModuleList, nn.Sequential)):
        return True
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


class TermShapeError(ValueError):
    """The terms of a layer's pre-activation (or the variables that one convolution reads in
    :meth:`Layer.terms`) differ in shape: they are summed, never broadcast."""


class Layer(nn.Module):
    r"""One layer of a :class:`~liftinv.network.LiftedNetwork`.

    Args:
        inputs: indices of the variables it reads (0 is the network input; all smaller than the
            index of the variable this layer produces).
        maps: one affine ``nn.Module`` per input, :math:`M_{kj}` (a sequence, also of one map;
            a ``TypeError`` naming ``maps`` otherwise).
        activation: a proximal activation (a torch activation is converted by
            :func:`~liftinv.activations.as_activation`).
        data_map: optional affine map :math:`c_k` of the measurements ``y``.
        weight: the penalty weight :math:`\lambda_k`, a finite real number > 0. It is part of the
            lifted network: checked again when assigned, and saved in the module's state dict (as
            extra state, a 0-d float64 tensor), so checkpoints and model files keep it; a state
            dict without it (written before it was saved) leaves the layer's weight as it is.

    ``inputs`` is fixed at construction (a tuple of ints): a :class:`~liftinv.network.LiftedNetwork`
    checks it against the layer's position and keeps the readers of each variable from it.
    """

    inputs = fixed_at_construction(
        "inputs", "The indices of the variables the layer reads, fixed at construction (a tuple of ints).")

    def __init__(
        self,
        inputs: Sequence[int],
        maps: Sequence[nn.Module],
        activation: nn.Module,
        *,
        data_map: nn.Module | None = None,
        weight: float = 1.0,
    ):
        super().__init__()
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise TypeError(f"inputs must be a sequence of variable indices, got {inputs!r}")
        inputs = tuple(integer_index(f"inputs[{j}]", i, "a variable index") for j, i in enumerate(inputs))
        if not is_module_sequence(maps):
            raise TypeError(f"maps must be a sequence of nn.Modules, one per input (a single map in a list: [map]), "
                            f"got {type(maps).__name__}")
        if len(inputs) == 0 or len(inputs) != len(maps):
            raise ValueError(f"inputs and maps must be non-empty and of equal length, got {len(inputs)} and {len(maps)}")
        if len(set(inputs)) != len(inputs):
            raise ValueError(f"inputs must be distinct, got {inputs}")
        for name, m in [*((f"maps[{j}]", m) for j, m in enumerate(maps)), ("data_map", data_map)]:
            if not isinstance(m, nn.Module) and not (name == "data_map" and m is None):
                raise TypeError(f"{name} must be an nn.Module (its tensors move and are saved with the network), "
                                f"got {type(m).__name__}")
        self.weight = weight
        self.inputs = inputs
        self.maps = nn.ModuleList(maps)
        self.activation: Activation = as_activation(activation)
        self.data_map = data_map

    def __setstate__(self, state: dict) -> None:
        if "inputs" in state:  # a layer pickled while inputs was a plain attribute
            state["_inputs"] = state.pop("inputs")
        super().__setstate__(state)

    @property
    def weight(self) -> float:
        r"""The penalty weight :math:`\lambda_k`."""
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        self._weight = positive_finite("weight", value)

    def get_extra_state(self) -> Tensor:
        return torch.tensor(self.weight, dtype=torch.float64)

    def set_extra_state(self, state: Tensor) -> None:
        if not isinstance(state, Tensor) or state.numel() != 1:
            raise ValueError(f"a Layer's extra state must be its penalty weight (one number), got {state!r}")
        self.weight = state.item()

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        state_dict.setdefault(prefix + "_extra_state", self.get_extra_state())  # a state dict without the weight keeps it
        super()._load_from_state_dict(state_dict, prefix, *args)

    def terms(
        self, xs: Sequence[Tensor], y: Tensor | None = None, combine: bool = True
    ) -> list[tuple[nn.Module, Tensor]]:
        r"""Pairs ``(map, input)`` whose images sum to :math:`a_k`: each map with its input, except
        that with ``combine`` the maps :math:`s_j L` scaling one convolution :math:`L`
        (``ScaledConv`` sharing ``conv``, as in the dual update :math:`s L(2x_{k+1} - x_k)` of an
        unrolled network) are evaluated once, the first :math:`s_1 L` on
        :math:`\sum_j (s_j/s_1) x_{i_j}`: one convolution (and one of each in the backward pass)
        instead of one per input, for one input-sized temporary. Then the data term. A
        ``ValueError`` if ``maps`` (a public ``nn.ModuleList``) no longer holds one map per input,
        where pairing them would drop a term or fail on an index."""
        if len(self.maps) != len(self.inputs):
            raise ValueError(f"the layer has {len(self.maps)} maps for its {len(self.inputs)} inputs {self.inputs}: maps "
                             "was changed after construction, but inputs are fixed (build a new Layer)")
        if self.data_map is not None and y is None:
            raise ValueError("this network needs measurements y (a layer has a data term)")
        data = [] if self.data_map is None else [(self.data_map, y)]
        if not combine:
            return [(m, xs[i]) for m, i in zip(self.maps, self.inputs)] + data
        pairs = []
        for first, parts in _shared_convolutions(self.maps):  # from the maps as they are now
            x = xs[self.inputs[parts[0][0]]]
            for pos, c in parts[1:]:
                if xs[self.inputs[pos]].shape != x.shape:  # the combination would broadcast
                    raise TermShapeError(
                        f"maps[{first}] and maps[{pos}] scale one convolution, so they must read variables of one "
                        f"shape: x_{self.inputs[first]} has shape {tuple(x.shape)}, x_{self.inputs[pos]} "
                        f"{tuple(xs[self.inputs[pos]].shape)}")
                x = x + c * xs[self.inputs[pos]]
            pairs.append((self.maps[first], x))
        return pairs + data

    def _term_names(self, combine: bool) -> list[str]:
        """How errors name the terms of :meth:`terms` (in its order): the map and what it reads."""
        firsts = [first for first, _ in _shared_convolutions(self.maps)] if combine else range(len(self.maps))
        names = [f"maps[{j}] (reading x_{self.inputs[j]})" for j in firsts]
        return names + ([] if self.data_map is None else ["data_map (reading y)"])

    def reads_alone(self, pos: int) -> bool:
        """Whether :meth:`terms` (with ``combine``) applies the map at input position ``pos`` to
        that input alone, not to a combination of inputs (a ``ScaledConv`` sharing its
        convolution with another map of the layer): the vector-Jacobian product of :math:`a_k` in
        that input is then the adjoint of that one map."""
        return any(parts == [(pos, 1.0)] for _, parts in _shared_convolutions(self.maps))

    def preactivation(
        self, xs: Sequence[Tensor], y: Tensor | None = None, apply: Callable[[nn.Module, Tensor], Tensor] | None = None,
        combine: bool = True,
    ) -> Tensor:
        r""":math:`a_k = \sum_j M_{kj} x_{i_j} + c_k(y)` by :meth:`terms` (with ``combine``), summed
        in place into the first term unless that term shares an input's storage (a map may return
        its input or a view of it). ``apply(map, x)`` evaluates each map (default ``map(x)``).
        Every term must have the shape of the first (nothing is broadcast): a
        :class:`TermShapeError` (a ``ValueError``) naming the two maps and their shapes otherwise."""
        pairs = self.terms(xs, y, combine)
        inputs = [x for _, x in pairs]
        apply = apply or (lambda m, x: m(x))
        a = apply(*pairs[0])
        owned = not shares_storage(a, inputs)
        for j, (m, x) in enumerate(pairs[1:], start=1):
            term = apply(m, x)
            if term.shape != a.shape:
                names = self._term_names(combine)
                raise TermShapeError(f"the terms of the pre-activation must have one shape: {names[0]} gives "
                                     f"{tuple(a.shape)}, {names[j]} gives {tuple(term.shape)}")
            a = a.add_(term) if owned else a + term
            owned = True
        return a

    def forward(self, xs: Sequence[Tensor], y: Tensor | None = None) -> Tensor:
        return self.activation(self.preactivation(xs, y))

    def extra_repr(self) -> str:
        return f"inputs={self.inputs}, weight={self.weight}"
