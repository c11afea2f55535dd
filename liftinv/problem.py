r"""The lifted problem: one energy over variable and parameter blocks, as solvers see it.

.. math::
    E(\Theta, X) = \sum_{\text{samples}} \Big[ \sum_{k=1}^K \lambda_k P_k\big(x_k, a_k(X, \Theta)\big)
    + \sum_{i} T_i(x_i) \Big]

with :math:`a_k = \sum_j M_{kj} x_{i_j} + c_k(y)` (see :mod:`liftinv.network`) and potentials
:math:`T_i` on chosen variables (a loss on a free output, a regulariser on a free input).
Training frees the hidden variables and the parameters; inversion frees every variable but the
clamped output and freezes the parameters: one code path.

Block structure (everything local to one layer, never a graph through :math:`\sigma`):

* ``Var(k)``: smooth part :math:`f_k = \sum_{j \ni k} \lambda_j P_j(x_j, a_j)` plus smooth terms,
  gradient :math:`\sum_j \lambda_j M_{jk}^* r_j` with residuals :math:`r_j = \partial_a P_j`
  (for Bregman :math:`r_j = \sigma_j(a_j) - x_j`); nonsmooth part :math:`\lambda_k P_k(\cdot, a_k)`
  (or a nonsmooth term on the input), handled by its prox.
* ``Params(g)``: a group of parameters (one per layer; shared parameters join the first layer
  using them); smooth, gradient by autograd of :math:`\sum_k \lambda_k\langle r_k, a_k(\Theta)\rangle`
  with :math:`r_k` detached.

Pre-activations :math:`a_k` are cached with the graph of layer :math:`k`'s affine maps to its
free input variables (and to its parameters, through the maps that hold them, when it has no
free input, when a parameter gradient asked for it, or when the forward pass was asked for them),
so every block gradient is one backward pass through those maps, and
:meth:`LiftedProblem.forward` (the forward pass that starts each training batch) leaves the first
sweep nothing to recompute. When a variable :math:`x_i` moves, the cached :math:`a_k` of a layer
with two or more free inputs is updated in place, :math:`a_k \mathrel{+}= M_{ki}(x_i^+ - x_i)`
(one map instead of all of them, slice by slice of the batch, so the temporaries stay small), and
its graph still gives the vector-Jacobian products for the variables (linear maps: they do not
depend on the point; each free variable has one graph leaf, re-pointed at its current value, so
no graph keeps an old value alive); parameter gradients of such a layer then come from its maps
that hold parameters, evaluated at the current variables with the residual of the cached
:math:`a_k`. After :data:`REFRESH_EVERY` such updates the cache is dropped and evaluated again
when next read, so their rounding errors do not accumulate. Other caches are dropped when an
input or a parameter moves. (A Gauss-Seidel sweep of an unrolled network moves the inputs of a
layer one at a time; the updates spare it the full re-evaluation, e.g. the :math:`A^*A` of a
gradient step.)
A solver may say which blocks the rest of its step moves (:meth:`LiftedProblem.expect`, as
:class:`~liftinv.solvers.BCD` does); caches that none of them reads are then dropped rather than
kept and updated (on the interleaved sweep of the unrolled deblurring network: a lower peak and
fewer map evaluations).
With ``cache_preactivations=False`` neither the forward pass's pre-activations nor in-place
updates are kept: memory for time.
Graphs to the variables only apply the maps that have an adjoint by
:func:`~liftinv.affine.adjoint_graph`, so they keep no tensor alive; and block gradients pull
back through the layers in decreasing order (for the unrolled networks that computes the
largest residual, of a dual layer, before the other terms of the sum exist: a lower peak), and
a later term whose layer reads each of the block's variables through one map with a known
adjoint is added into the sum in place, slice by slice of the batch (the image of a primal
residual by an unrolled network's :math:`L_k` is dual-sized: without the slices it would be
alive next to the sum).

Lipschitz constants are Gauss-Newton bounds :math:`\lambda_{\max}(\sum_j \lambda_j J_j^*J_j)`,
with :math:`J_j` the Jacobian of the pre-activation :math:`a_j` in the block, by warm-started
power iteration. They bound the block's curvature when :math:`a_j` is affine in the block (the
variables always; dense and convolution weights) and the penalty's Hessian in :math:`a` is
:math:`\preceq I` (Bregman: :math:`\operatorname{diag}\sigma'`). They omit the curvature
:math:`\sum_j \lambda_j \langle r_j, \nabla^2 a_j\rangle` of maps nonlinear in their parameters
(``NormalStep`` is quadratic in :math:`L`, a ``Chain`` bilinear), which is zero where the
residuals :math:`r_j` are (at the forward pass) and small near it, and of MAC's Hessian in
:math:`a` (:math:`\sigma'^2 + (\sigma - z)\sigma''`). Where :math:`\sigma` has kinks (ReLU, leaky
ReLU, clip, soft-threshold) MAC's gradient jumps there, so no constant bounds its curvature: plain
steps :math:`1/L` need not descend (a leaky ReLU MLP can settle into a 2-cycle of the energy),
while the Bregman penalty's gradient :math:`\sigma(a) - z` is 1-Lipschitz in :math:`a`. Power
iteration approaches :math:`\lambda_{\max}` from below: with few iterations (the trainer's
defaults, warm-started across batches) an estimate can fall well below it, which
``LIPSCHITZ_MARGIN`` does not cover.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain

import torch
from torch import Tensor

from liftinv.activations import Softmax
from liftinv.penalty import BREGMAN, BregmanPenalty, Penalty, check_penalty
from liftinv.affine import GradientStep, adjoint_graph, adjoint_method, linear_part
from liftinv.layer import Layer, shares_storage
from liftinv.blocks import Block, Params, Var
from liftinv.network import LiftedNetwork
from liftinv.potentials import Potential
from liftinv.validation import check_flag, check_float_dtype, positive_int, reference_tensor
from operators.checks import Stamp, binary_exponent, is_integer, state_of, values_trusted



#: Relative safety margin on power-iteration Lipschitz estimates (they converge from below; with
#: few iterations they can be further below than this margin, see the module docstring).
LIPSCHITZ_MARGIN = 1.05
#: Penalty values are computed on slices of the batch of at most this many entries (at least one
#: sample): their closed forms allocate a few temporaries the size of their arguments, which the
#: slices keep small whatever the batch (the penalties are per sample, the sums unchanged).
PENALTY_SLICE = 2**16
#: In-place pre-activation updates (:meth:`LiftedProblem.set`) work on slices of the batch of at
#: most this many entries of the moved variable and of the pre-activation (at least one sample).
UPDATE_SLICE = 2**15
#: In-place updates a cached pre-activation takes before it is recomputed instead (dropped by
#: :meth:`LiftedProblem.set`, evaluated again when next read): each update adds the rounding of
#: :math:`a_k + M_{ki}(x_i^+ - x_i)` (and, for a map with a bias, of :math:`f(d) - f(0)`, see
#: :func:`~liftinv.affine.linear_part`), which near convergence does not average out, so without
#: a refresh the cache drifts from :math:`a_k` in proportion to the number of updates (in float32,
#: hundreds of ulps of its scale after a few thousand).
REFRESH_EVERY = 16


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * z).sum() for x, z in zip(a, b))


def _accumulate(total: dict, key: object, g: Tensor | None) -> None:
    """``total[key] += g`` (in place after the first term; ``None`` adds nothing). A first term
    that shares storage with another entry is copied: autograd hands one cotangent unchanged to
    every input that a layer reads through the identity or a view (:math:`x_1 + x_2`), and the
    in-place sums of one variable's gradient must not change another's."""
    if g is None:
        return
    if key in total:
        total[key].add_(g)
    else:
        total[key] = g.clone() if shares_storage(g, list(total.values())) else g


def _batch_slices(*tensors: Tensor) -> Iterator[slice]:
    """Consecutive slices of the batch (the first dimension, shared by ``tensors``), each holding
    at most :data:`UPDATE_SLICE` entries of every one of them (one sample at least)."""
    size = max(1, UPDATE_SLICE // max(*(t.shape[1:].numel() for t in tensors), 1))
    for start in range(0, len(tensors[0]), size):
        yield slice(start, start + size)


def _fresh(a: Tensor, keep: bool) -> bool:
    """Whether a pre-activation ``a`` that is not kept may be overwritten by its residual: a
    result of the maps (not a variable or a view of one)."""
    return not keep and a.grad_fn is not None and a._base is None


@contextmanager
def _frozen(params: Sequence[Tensor]) -> Iterator[None]:
    """Parameters that do not require grad inside the block (graphs to the variables only)."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _trainable(module: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _check_variables(network: LiftedNetwork, xs: Sequence[Tensor]) -> None:
    """Raise a ``TypeError`` or ``ValueError`` naming ``xs[k]`` unless every variable is a real
    floating tensor of a dtype torch computes with (:data:`~liftinv.validation.FLOAT_DTYPES`, as
    :meth:`~liftinv.network.LiftedNetwork.check_input`) of the network's dtype and device (:func:`~liftinv.validation.reference_tensor`;
    those of ``xs[0]`` for a network with neither parameters nor buffers) with the batch size of
    ``xs[0]``. No pass over the values: the maps would otherwise fail inside torch, or the
    penalties name their own arguments (``z`` and ``a``)."""
    ref = reference_tensor(network)
    for k, x in enumerate(xs):
        name = f"xs[{k}]"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        check_float_dtype(name, x)  # also where a network without parameters fixes no dtype
        like = xs[0] if ref is None else ref
        if x.dtype != like.dtype or x.device != like.device:
            raise TypeError(f"{name} has dtype {x.dtype} on {x.device}, the network uses {like.dtype} on {like.device}")
        if x.ndim == 0 or x.shape[0] != xs[0].shape[0]:
            raise ValueError(f"{name} must have a batch dimension of size {xs[0].shape[0] if xs[0].ndim else 'B'} "
                             f"(that of xs[0]), got shape {tuple(x.shape)}")


def _check_free_softmax(network: LiftedNetwork, free_vars: Sequence[int], penalty: Penalty) -> None:
    r"""A ``ValueError`` naming the layer if a free variable :math:`x_k` (:math:`k \ge 1`) is the
    output of a :class:`~liftinv.activations.Softmax` under the Bregman or Fenchel penalty: its
    prox (:meth:`prox`, :math:`\operatorname{prox}_{\mu\Phi}`, :math:`\mu > 0`) needs the
    softmax's prox at :math:`\gamma = \mu/(1+\mu) \ne 1`, which does not exist in closed form
    (``Softmax.prox`` refuses it), so a solver would fail at its first step of that block. A
    softmax layer's output must be clamped (the top layer); MAC's prox needs only
    :math:`\sigma(a)`."""
    if not isinstance(penalty, BregmanPenalty):
        return
    for k in free_vars:
        if k >= 1 and isinstance(network.layer(k).activation, Softmax):
            raise ValueError(
                f"variable {k} is free, but layer {k}'s activation is a Softmax: the prox of a free variable under "
                f"the {type(penalty).__name__} needs Softmax.prox at gamma != 1, which exists only at gamma == 1; "
                "a softmax layer must be the clamped output layer (a hidden softmax, or one followed by a "
                "rearrangement such as nn.Flatten, which lift keeps in a last identity layer, cannot take lifted "
                "block updates with this penalty; the MAC penalty needs no such prox)")


class _NetworkState:
    """What the maps and the constants of ``network`` depend on beyond the variables: the
    submodules and parameters of its modules (its structure, from which :class:`LiftedProblem`
    derives its parameter groups and their layers, and the layers with several free inputs),
    compared by identity; for a :class:`~operators.checks.Stamp`, the parameters and buffers of
    its modules and each physics that a ``GradientStep`` holds by reference (with its parameters
    and buffers); and the layers' penalty weights. The modules are listed once (a state is read at every entry point of
    :class:`LiftedProblem`: no walk through the module tree)."""

    def __init__(self, network: LiftedNetwork):
        named = list(network.named_modules())
        modules = [m for _, m in named]
        # every dict, empty ones included: a buffer registered on a module that had none (which
        # its forward may read) is a change of the network, as one added where there were some
        self.tensors = [d for m in modules for d in (m._parameters, m._buffers)]
        # a layer's activation is read as it is (by the penalties), so it may be replaced
        self.parts = [(prefix, d, m if isinstance(m, Layer) else None) for prefix, m in named
                      for d in (m._modules, m._parameters)]
        self.steps = [m for m in modules if isinstance(m, GradientStep)]
        self.layers = list(network.layers)
        self.built = [self._entries(d, layer) for _, d, layer in self.parts]
        # watched at every entry point: every dict, empty ones included (a submodule or parameter
        # added to a module that had none, e.g. a map appended to an empty nn.Sequential)
        self.dicts = [d for _, d, _ in self.parts]
        self.listed = self._listed()

    def _listed(self) -> list[object]:
        """Every submodule and parameter of the modules (activations included), in order."""
        return list(chain.from_iterable(map(dict.values, self.dicts)))

    def same_structure(self) -> bool:
        """Whether every submodule and parameter is the one :meth:`check_structure` last saw (by
        identity, in C loops: it runs at every entry point of :class:`LiftedProblem`)."""
        now = self._listed()
        return len(now) == len(self.listed) and all(map(operator.is_, now, self.listed))

    @staticmethod
    def _entries(d: dict, layer: Layer | None) -> list[tuple[str, object]]:
        """``(name, object)`` of a module's submodules (a layer's activation excepted) or
        parameters ``d`` (``None`` entries included)."""
        return [(name, obj) for name, obj in d.items() if not (layer is not None and name == "activation")]

    def check_structure(self) -> None:
        """A ``RuntimeError`` naming the first submodule or parameter replaced, added or removed
        since the problem was built (its parameter groups, their layers and the layers' free
        inputs would be those of the old network: wrong energies and gradients)."""
        for (prefix, d, layer), built in zip(self.parts, self.built):
            now = self._entries(d, layer)
            for n in range(max(len(now), len(built))):
                old, new = (built[n] if n < len(built) else None), (now[n] if n < len(now) else None)
                if old is None or new is None or old[0] != new[0] or old[1] is not new[1]:
                    name = f"{prefix}.{(old or new)[0]}".lstrip(".")
                    raise RuntimeError(
                        f"the network's {name!r} was replaced, added or removed after this LiftedProblem was built: "
                        "its parameter groups and the layers' free inputs are those of the network as it was; build a "
                        "new LiftedProblem (parameters may change in place, e.g. load_state_dict, and activations be "
                        "replaced)")
        self.listed = self._listed()  # a replaced activation

    def objects(self) -> list:
        physics = {id(m.physics): m.physics for m in self.steps}
        return [*chain.from_iterable(map(dict.values, self.tensors)), *(t for p in physics.values() for t in state_of(p))]

    def weights(self) -> list[float]:
        return [layer.weight for layer in self.layers]


def _unit_scale(v: list[Tensor]) -> list[Tensor]:
    r"""``v`` times :math:`2^{-e}` (:func:`~operators.checks.binary_exponent`; ``v`` itself without
    entries): its sum of squares neither overflows nor underflows (in float32 :math:`|v|^2`
    overflows from :math:`|v| \approx 1.8 \cdot 10^{19}`), and since the scaling is exact,
    :math:`v/|v|` is bit for bit that of the unscaled ``v``."""
    exponent = binary_exponent(v)
    return v if exponent is None else [torch.ldexp(t, -exponent) for t in v]


def power_iteration(apply, v: list[Tensor], iters: int) -> tuple[float, list[Tensor]]:
    """Largest eigenvalue of the PSD map ``apply`` on lists of tensors, from ``v`` (0 once an
    iterate vanishes: a zero iterate is divided by 1, and the linear map keeps it zero). Each
    iterate is normalised after an exact scaling by a power of two (:func:`_unit_scale`), so
    eigenvalues up to the dtype's largest number are estimated (the squared norm of an iterate of
    a float32 map with eigenvalue 1e21 overflowed, and the estimate came out 0). The estimate is
    read on the host once, after the last iteration, so the iterations do not wait for the
    device."""
    lam = None
    for _ in range(iters):
        v = _unit_scale(v)
        norm = _dot(v, v).sqrt()
        v = [t / torch.where(norm == 0, 1, norm) for t in v]
        w = apply(v)
        lam = _dot(v, w)
        v = w
    return (0.0 if lam is None else max(float(lam), 0.0)), v


class LiftedProblem:
    r"""A lifted network bound to one batch: the energy, its blocks, gradients and proxes.

    ``incremental`` (class attribute): update cached pre-activations of layers with several free
    inputs when one input moves, rather than recompute them (see the module docstring); a
    subclass whose solver moves all inputs of a layer at once sets it to False.

    ``majorises_coupling`` (class attribute, False): whether the variable blocks' constants
    (:meth:`lipschitz`) majorise the coupling between them, so that any Jacobi group of variable
    blocks takes a descent step; otherwise :class:`~liftinv.solvers.BCD` splits each group of its
    schedule into groups of blocks that share no layer penalty (:meth:`var_layers`).

    What depends on the network (pre-activations with their graphs, Lipschitz constants) is
    cached; it is dropped when the network changes other than by :meth:`set`: a parameter or
    buffer replaced or changed in place (``load_state_dict``, an edit under ``torch.no_grad``), a
    layer's penalty weight, or a physics of a ``GradientStep`` (noticed at the next call of
    :meth:`lipschitz`, :meth:`grads`, :meth:`prox`, :meth:`penalties`, :meth:`preactivation`,
    :meth:`set`, :meth:`rebind` or :meth:`forward`; power-iteration vectors are kept as warm starts).
    The network's structure is fixed for the problem's life: a submodule or parameter replaced,
    added or removed after construction (``net.layers[k] = ...``, ``layer.maps[j] = ...``, a data
    map set, ``module.weight = nn.Parameter(...)``) is refused at those calls with a
    ``RuntimeError`` naming it (the parameter groups and the layers with several free inputs are
    derived at construction); a layer's activation may be replaced (the penalties read it as it is).

    Args:
        network: the lifted network (:meth:`set` gives its parameters new values).
        xs: initial variables ``[x_0, ..., x_K]`` (e.g. ``network.feasible(u)``, with ``x_K``
            replaced by a clamped target): real floating tensors of the network's dtype and
            device with one batch size (checked here and by :meth:`rebind`, naming ``xs[k]``);
            detached, never modified in place (updates replace them). The layers' penalty weights
            must lie in the range of their dtype (:meth:`~liftinv.network.LiftedNetwork.check_weights`,
            here and when a weight or the network changes).
        y: measurements for layers with a data term.
        free_vars: indices (integers in ``[0, K]``, in a sequence or other iterable) of the
            variables that are optimised; the others stay fixed. With ``BREGMAN`` or
            ``FENCHEL``, the output of a softmax layer cannot be free (a ``ValueError`` naming it:
            its prox exists only at :math:`\gamma = 1`); it must be clamped.
        train_params: whether the parameters are blocks (a bool: a ``TypeError`` otherwise).
        penalty: ``BREGMAN`` (default), ``MAC`` or ``FENCHEL`` (a ``Penalty``; a ``TypeError``
            otherwise).
        terms: potentials on variables, ``{index: Potential}`` (a loss on a free output, a
            regulariser on a free input; a ``TypeError`` naming ``terms[index]`` for anything
            else). A nonsmooth term is allowed on the input only.
        power_iters: power iterations per Lipschitz refresh (warm started; the first estimate
            of a block takes four times as many), an integer >= 1.
        cache_preactivations: keep the pre-activations of the forward pass and update those of
            layers with several free inputs in place when one input moves (the default: no map
            is evaluated twice). ``False`` keeps none from the forward pass and drops a
            pre-activation as soon as one of its inputs moves (or a gradient has used its
            storage), recomputing it when it is needed again: a lower peak memory (about the
            variables' own) for more map evaluations per sweep.
    """

    incremental = True
    majorises_coupling = False

    def __init__(
        self,
        network: LiftedNetwork,
        xs: Sequence[Tensor],
        y: Tensor | None = None,
        *,
        free_vars: Sequence[int],
        train_params: bool,
        penalty: Penalty = BREGMAN,
        terms: Mapping[int, Potential] | None = None,
        power_iters: int = 8,
        cache_preactivations: bool = True,
    ):
        K = network.depth
        network.check_variable_count(xs)
        if terms is not None and not isinstance(terms, Mapping):
            raise TypeError(f"terms must be a mapping {{index: Potential}} or None, got {type(terms).__name__}")
        if isinstance(free_vars, (str, bytes)) or not isinstance(free_vars, Iterable):
            raise TypeError(f"free_vars must be a sequence of variable indices (one variable: [k]), got {free_vars!r}")
        terms = dict(terms or {})
        free_vars = list(free_vars)
        for name, indices in (("free_vars", free_vars), ("terms", list(terms))):
            for i in indices:
                if not is_integer(i):
                    raise TypeError(f"{name} must hold variable indices (integers), got {i!r}")
                if not 0 <= i <= K:
                    raise ValueError(f"variable index {i} out of range [0, {K}]")
        _check_variables(network, xs)
        network.check_weights(xs[0].dtype)
        terms = {int(i): term for i, term in terms.items()}
        check_penalty(penalty)
        self.free_vars = tuple(sorted({int(i) for i in free_vars}))
        _check_free_softmax(network, self.free_vars, penalty)
        for i, term in terms.items():
            if not isinstance(term, Potential):
                raise TypeError(f"terms[{i}] must be a liftinv Potential, got {type(term).__name__}")
            if i > 0 and not term.smooth:
                raise ValueError(f"terms[{i}] is nonsmooth; nonsmooth terms are supported on the input (0) only")
        self.network = network
        self.xs = [x.detach() for x in xs]
        self.y = y
        self.penalty = penalty
        self.terms = terms
        self.power_iters = positive_int("power_iters", power_iters)
        check_flag("train_params", train_params)
        check_flag("cache_preactivations", cache_preactivations)
        self.cache_preactivations = cache_preactivations
        self.param_groups = self._group_parameters() if train_params else []
        self._layers_of_group = [self._layers_using(g) for g in self.param_groups]
        self._pre: dict[int, Tensor] = {}
        self._updates: dict[int, int] = {}  # in-place updates of each cached a_k since it was evaluated
        self._param_graph: set[int] = set()  # cached a_k whose graph reaches the parameters at this state
        self._leaves: dict[int, Tensor] = {}
        self._multi = {
            k for k in range(1, K + 1)
            if self.incremental and self.cache_preactivations and sum(i in self.free_vars for i in network.layer(k).inputs) >= 2
        }
        self._lip: dict[Block, float] = {}
        self._eigvec: dict[Block, list[Tensor]] = {}
        self._needed: set[int] | None = None  # layers a solver still reads in its step (None: unknown)
        self._state = _NetworkState(network)
        self._stamp, self._weights = Stamp(self._state.objects()), self._state.weights()
        self._changes = 0  # changes of the network other than by set, noticed by _sync

    def _sync(self) -> None:
        """Drop the caches that depend on the network if it changed other than by :meth:`set`
        (see the class docstring)."""
        state, weights = self._state.objects(), self._state.weights()
        if weights == self._weights and self._state.same_structure() and self._stamp.matches(state):
            return
        self._state.check_structure()
        self.network.check_weights(self.xs[0].dtype)  # a weight set since, or the network converted
        self._pre.clear()
        self._param_graph.clear()
        self._lip.clear()
        self._stamp, self._weights = Stamp(state), weights
        self._changes += 1

    def network_changes(self) -> int:
        """How many changes of the network other than by :meth:`set` (a parameter or buffer
        replaced or changed in place, a layer's penalty weight, a physics; see the class
        docstring) the problem has noticed, this call included: a Lipschitz constant kept outside
        the problem is stale once the count moves."""
        self._sync()
        return self._changes

    # ----------------------------------------------------------------- structure
    def _group_parameters(self) -> list[list[Tensor]]:
        seen: set[int] = set()
        groups = []
        for layer in self.network.layers:
            group = [p for p in layer.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in group)
            if group:
                groups.append(group)
        return groups

    def _layers_using(self, group: Sequence[Tensor]) -> list[int]:
        ids = {id(p) for p in group}
        return [k for k in range(1, self.network.depth + 1) if ids & {id(p) for p in self.network.layer(k).parameters()}]

    def blocks(self) -> list[Block]:
        """Free variable blocks (in index order) followed by parameter blocks."""
        return [Var(k) for k in self.free_vars] + [Params(g) for g in range(len(self.param_groups))]

    def _check_block(self, block: object) -> None:
        """A ``TypeError`` or ``ValueError`` naming ``block`` unless it is one of :meth:`blocks`
        (a fixed variable has no gradient, constant or prox of its own)."""
        if not isinstance(block, (Var, Params)):
            raise TypeError(f"block must be a Var or a Params, got {type(block).__name__}")
        if isinstance(block, Var) and block.index not in self.free_vars or (
            isinstance(block, Params) and not (is_integer(block.index) and 0 <= block.index < len(self.param_groups))
        ):
            raise ValueError(f"{block} is not a block of this problem, whose blocks are {self.blocks()}")

    # ----------------------------------------------------------------- state
    def _check_held(self, block: object) -> None:
        """A ``TypeError`` or ``ValueError`` naming ``block`` unless it is a variable of the
        network (a fixed one included, e.g. the clamped output) or one of :meth:`blocks`'
        parameter groups (``Var(-1)`` or ``Params(-1)`` would index from the end)."""
        if isinstance(block, Var):
            if not 0 <= block.index < len(self.xs):
                raise ValueError(f"{block} is not a variable of this problem, whose variables are 0..{len(self.xs) - 1}")
        else:
            self._check_block(block)

    def get(self, block: Block) -> list[Tensor]:
        """Current values of a block, a variable (a fixed one included) or a parameter block (a
        ``TypeError`` or ``ValueError`` naming any other); the problem never modifies them in
        place (:meth:`set` replaces variables, and parameters' storages)."""
        self._check_held(block)
        if isinstance(block, Var):
            return [self.xs[block.index]]
        return [p.detach() for p in self.param_groups[block.index]]

    def _check_values(self, block: object, values: object) -> list[Tensor]:
        """The tensors that replace ``block``'s current ones (:meth:`get`); a ``TypeError`` or
        ``ValueError`` naming ``block`` or ``values[j]`` unless ``block`` is a variable of the
        network (a fixed one included, e.g. the clamped output) or one of :meth:`blocks`'
        parameter groups, and ``values`` a sequence of as many tensors, each of the shape, dtype
        and device of the one it replaces (no pass over the values)."""
        self._check_held(block)
        current = [self.xs[block.index]] if isinstance(block, Var) else self.param_groups[block.index]
        if not isinstance(values, Sequence) or isinstance(values, str):
            raise TypeError(f"values must be a sequence of tensors (one for a variable: [x]), got {type(values).__name__}")
        if len(values) != len(current):
            raise ValueError(f"values must hold {len(current)} tensor(s), those of {block}, got {len(values)}")
        for j, (v, old) in enumerate(zip(values, current)):
            if not isinstance(v, Tensor):
                raise TypeError(f"values[{j}] must be a torch.Tensor, got {type(v).__name__}")
            if v.dtype != old.dtype or v.device != old.device:
                raise TypeError(f"values[{j}] has dtype {v.dtype} on {v.device}, {block} has {old.dtype} on {old.device}")
            if v.shape != old.shape:
                raise ValueError(f"values[{j}] must have the shape of {block}, {tuple(old.shape)}, got {tuple(v.shape)}")
        return list(values)

    def set(self, block: Block, values: Sequence[Tensor]) -> None:
        """Replace the values of a block and invalidate what depends on them. ``block`` is a
        variable (a fixed one included) or a parameter block, ``values`` a sequence of tensors
        with the shapes, dtypes and devices of its current ones (a ``TypeError`` or ``ValueError``
        naming ``block`` or ``values[j]``, the problem left as it was)."""
        values = self._check_values(block, values)
        self._sync()
        if isinstance(block, Var):
            i = block.index
            old, new = self.xs[i], values[0].detach()
            self.xs[i] = new
            for k, pos in self.network.consumers(i):
                if k not in self._pre:
                    continue
                if k not in self._multi or not self._still_read(k) or self._updates[k] >= REFRESH_EVERY:
                    self._drop(k)
                    continue
                self._add_change(k, pos, old, new)
                self._updates[k] += 1
                self._param_graph.discard(k)
            if i in self._leaves:  # re-point the leaf (``set_`` would detach it from the graphs)
                self._leaves[i].data = new
            # parameter Lipschitz constants depend on the layer inputs X
            for b in [b for b in self._lip if isinstance(b, Params)]:
                del self._lip[b]
        else:
            with torch.no_grad():
                for p, v in zip(self.param_groups[block.index], values):
                    p.set_(v.detach().to(p))  # a new storage: earlier values stay as they were
            for k in self._layers_of_group[block.index]:
                self._drop(k)
            self._lip.clear()
            self._stamp = Stamp(self._state.objects())  # set_ advanced the version counters

    def _add_change(self, k: int, pos: int, old: Tensor, new: Tensor) -> None:
        r"""In place, :math:`a_k \mathrel{+}= M(x^+ - x)` for the map :math:`M` of layer ``k`` at
        input position ``pos``, on slices of the batch of at most :data:`UPDATE_SLICE` entries
        of :math:`x` or of :math:`a_k` (each map acts on every sample alone), so the difference
        and its image are slice-sized temporaries. The graph of :math:`a_k` stays that of the
        maps to the variables."""
        m, a = self.network.layer(k).maps[pos], self._pre[k]
        with torch.no_grad():
            for part in _batch_slices(new, a):
                a[part] += linear_part(m, new[part] - old[part])

    def expect(self, later: Sequence[Block] | None) -> None:
        """Hint from a solver: the blocks it still moves in its current step (``None``: not
        known, the default). A cached pre-activation that none of them reads (as an input's
        consumer, a variable's own layer for its prox, or a parameter's layer) is then consumed by
        :meth:`grads` and dropped by :meth:`set` rather than kept and updated in place: no work
        and no memory for a cache that the step no longer needs (a later step recomputes it)."""
        if later is None:
            self._needed = None
            return
        needed: set[int] = set()
        for b in later:
            if isinstance(b, Var):
                needed.add(b.index)
                needed.update(k for k, _ in self.network.consumers(b.index))
            else:
                needed.update(self._layers_of_group[b.index])
        self._needed = needed

    def _still_read(self, k: int) -> bool:
        return self._needed is None or k in self._needed

    def _drop(self, k: int) -> None:
        self._pre.pop(k, None)
        self._param_graph.discard(k)

    def rebind(self, xs: Sequence[Tensor], y: Tensor | None = None) -> None:
        """Hold a new batch: replace every variable and the measurements. Lipschitz constants
        of variable blocks (they depend on the maps and on the variable's sample shape: a
        zero-padded convolution has a larger norm on larger images) and power-iteration vectors
        are kept, except those of a variable whose sample shape changes (a convolutional
        network on images of another size), which are recomputed when next asked for."""
        if len(xs) != len(self.xs):
            raise ValueError(f"xs must hold {len(self.xs)} variables, got {len(xs)}")
        _check_variables(self.network, xs)
        shapes = self._sample_shapes()
        self._hold(xs, y)
        self._forget_other_shapes(shapes)

    def _sample_shapes(self) -> list[torch.Size]:
        return [x.shape[1:] for x in self.xs]

    def _forget_other_shapes(self, shapes: Sequence[torch.Size]) -> None:
        """Drop the Lipschitz constant and power-iteration vector of each variable whose sample
        shape is no longer the one in ``shapes`` (they were computed for that shape)."""
        for i, (shape, x) in enumerate(zip(shapes, self.xs)):
            if shape != x.shape[1:]:
                self._lip.pop(Var(i), None)
                self._eigvec.pop(Var(i), None)

    def _hold(self, xs: Sequence[Tensor], y: Tensor | None) -> None:
        """:meth:`rebind` without its checks and without dropping the variables' constants."""
        self._sync()
        self.xs = [x.detach() for x in xs]
        self.y = y
        self._pre.clear()
        self._param_graph.clear()
        self._leaves.clear()
        for b in [b for b in self._lip if isinstance(b, Params)]:
            del self._lip[b]

    def forward(self, u: Tensor, y: Tensor | None = None, *, param_graphs: bool = False) -> Tensor:
        r"""Hold a new batch at its forward pass, :math:`x_0 = u`, :math:`x_k = \sigma_k(a_k)`
        (every penalty zero; as :meth:`rebind` with ``network.feasible(u, y)``), and return the
        output :math:`x_K`. The pre-activations stay cached with their graphs (unless
        ``cache_preactivations`` is False), so the first variable sweep after it needs no
        further forward computation; with ``param_graphs`` the graphs also reach the
        parameters (as backpropagation's do), for a solver that takes parameter gradients
        before the layer's inputs move (``BCD(interleave=True)``): one backward pass per layer
        then gives the variable and the parameter gradients, instead of a second evaluation of
        the maps that hold the parameters."""
        self.network.check_input(u)
        shapes = self._sample_shapes()  # compared with the forward pass's, not with u's
        self._hold([u.detach()] * len(self.xs), y)
        try:
            for k in range(1, self.network.depth + 1):
                a = self._preactivation_graph(k, params=param_graphs).detach()
                x = self.network.layer(k).activation(a)
                if self.cache_preactivations:
                    # the cached a_k is consumed in place by _pullback: x_k must not share its storage
                    self.xs[k] = x.clone() if shares_storage(x, [a]) else x
                else:
                    self._drop(k)
                    self.xs[k] = x
        finally:
            self._forget_other_shapes(shapes)
        return self.xs[-1]

    def _input(self, i: int) -> Tensor:
        """Variable ``i`` as the maps read it: a free variable as a leaf that requires grad (an
        alias of its value; one per variable and batch, re-pointed by :meth:`set`), so
        pre-activations carry the graphs of their vector-Jacobian products."""
        if i not in self.free_vars:
            return self.xs[i]
        if i not in self._leaves:
            self._leaves[i] = self.xs[i].detach().requires_grad_()
        return self._leaves[i]

    def _preactivation_graph(self, k: int, params: bool = False) -> Tensor:
        r""":math:`a_k` at the current state, with the graph of the affine maps of layer
        :math:`k` only: to its free input variables, and to its parameters if ``params`` or if
        it has no free input (the graph then stays current until the parameters move). Cached
        (see the module docstring)."""
        if k not in self._pre:
            layer = self.network.layer(k)
            xs = [self._input(i) if i in layer.inputs else None for i in range(k)]
            params = params or not any(i in self.free_vars for i in layer.inputs)

            def apply(m: torch.nn.Module, x: Tensor) -> Tensor:  # autograd only where it must reach parameters
                return m(x) if params and _trainable(m) else adjoint_graph(m, x)

            # a graph to the parameters would keep a combination of inputs (Layer.terms) for their
            # gradient, where the maps one by one keep the variables, which stay alive anyway
            with torch.enable_grad(), _frozen([] if params else list(layer.parameters())):
                self._pre[k] = layer.preactivation(xs, self.y, apply, combine=not params)
            self._updates[k] = 0
            if params:
                self._param_graph.add(k)
        return self._pre[k]

    def preactivation(self, k: int) -> Tensor:
        r""":math:`a_k` at the current state (cached, detached)."""
        self._sync()
        return self._preactivation_graph(k).detach()

    # ----------------------------------------------------------------- energy
    def penalties(self) -> Tensor:
        r"""Unweighted per-sample penalties :math:`P_k`, shape ``(K, B)``, each computed on
        slices of the batch of at most :data:`PENALTY_SLICE` entries (pre-activations that were
        not cached are computed without a graph and not kept)."""
        self._sync()
        values = []
        for k in range(1, self.network.depth + 1):
            if k in self._pre:
                a = self._pre[k].detach()
            else:
                with torch.no_grad():
                    a = self.network.preactivation(k, self.xs, self.y)
            act, size = self.network.layer(k).activation, max(1, PENALTY_SLICE // a[0].numel())
            values.append(torch.cat([self.penalty.value(act, z, b) for z, b in zip(self.xs[k].split(size), a.split(size))]))
        return torch.stack(values)

    def energies(self) -> Tensor:
        r"""The lifted energy of each sample, shape ``(B,)``:
        :math:`\sum_k \lambda_k P_k(x_k, a_k) + \sum_i T_i(x_i)` (the potentials' values are per
        sample)."""
        p = self.penalties()
        total = (self.network.weights().to(p)[:, None] * p).sum(0)
        for i, term in self.terms.items():
            total = total + term.value(self.xs[i])
        return total

    def energy(self) -> Tensor:
        """The lifted energy summed over the batch (a scalar tensor): the sum of :meth:`energies`."""
        return self.energies().sum()

    def gaps(self) -> Tensor:
        """Batch-mean penalty of each layer, shape ``(K,)``."""
        return self.penalties().mean(1)

    # ----------------------------------------------------------------- gradients
    def grads(self, blocks: Sequence[Block]) -> list[list[Tensor]]:
        r"""Gradients of the smooth part of each block, all at the current state (Jacobi):
        :math:`\sum_k \lambda_k J_k^* r_k` over the layers :math:`k` that read a variable block
        or use a parameter block, with :math:`J_k` the Jacobian of :math:`a_k` in the block and
        :math:`r_k = \partial_a P_k` (one backward pass through layer :math:`k`'s affine maps for
        all the blocks it touches, never through :math:`\sigma`), plus the gradients of smooth
        terms on the variables.

        The cached pre-activations read here are consumed (the caller moves the blocks next,
        which makes them stale), except those of the variable blocks themselves, whose proxes
        read them next, and those that :meth:`set` updates in place (unless :meth:`expect` says
        that no later block of the step reads them).

        :meth:`grads`, :meth:`lipschitz` and :meth:`prox` take the problem's :meth:`blocks` only
        (a ``ValueError`` naming any other, e.g. a fixed variable)."""
        self._sync()
        for b in blocks:
            self._check_block(b)
        variables = {b.index for b in blocks if isinstance(b, Var)}
        params = {id(p) for b in blocks if isinstance(b, Params) for p in self.param_groups[b.index]}
        layers = {k for i in variables for k, _ in self.network.consumers(i)}
        layers |= {k for b in blocks if isinstance(b, Params) for k in self._layers_of_group[b.index]}
        total: dict[object, Tensor] = {}
        for k in sorted(layers, reverse=True):
            layer = self.network.layer(k)
            keys = [i for i in layer.inputs if i in variables]
            own = [p for p in layer.parameters() if id(p) in params]
            keep = k in variables or (k in self._multi and not own and self._still_read(k))
            adjoints = None if own or not all(i in total for i in keys) else self._adjoints(k, keys)
            if adjoints is not None:
                self._add_pullback(k, {i: total[i] for i in keys}, adjoints, keep)
                continue
            for key, g in zip(keys + [id(p) for p in own], self._pullback(k, keys, own, keep)):
                _accumulate(total, key, g)
        out = []
        for b in blocks:
            if isinstance(b, Params):
                out.append([total[id(p)] if id(p) in total else torch.zeros_like(p) for p in self.param_groups[b.index]])
                continue
            i = b.index
            grad = total[i] if i in total else torch.zeros_like(self.xs[i])
            if i in self.terms and self.terms[i].smooth:
                grad = grad + self.terms[i].grad(self.xs[i])
            out.append([grad])
        return out

    def _pullback(self, k: int, keys: Sequence[int], own: Sequence[Tensor], keep: bool) -> tuple[Tensor | None, ...]:
        r""":math:`\lambda_k J^* r_k` with :math:`J` the Jacobian of :math:`a_k` with respect to
        the variables ``keys`` and the parameters ``own`` (``None`` where :math:`a_k` does not
        depend on one). Unless ``keep``, consumes the cached :math:`a_k`: :math:`\lambda_k r_k`
        is computed in its storage (the backward pass of affine maps never reads their output;
        autograd's version check would refuse one that did)."""
        a = self._preactivation_graph(k, params=bool(own))
        param_graph = k in self._param_graph
        if not keep:
            self._drop(k)
        wrt = [self._input(i) for i in keys] + (list(own) if param_graph else [])
        through_graph = bool(wrt) and a.requires_grad
        rest = [] if param_graph else list(own)  # by the maps that hold them
        if not (through_graph or rest):
            return (None,) * (len(keys) + len(own))
        cotangent = self._cotangent(k, a, self.xs[k], _fresh(a, keep))
        if through_graph:
            grads = torch.autograd.grad(a, wrt, cotangent, retain_graph=keep, allow_unused=True)
        else:
            grads = (None,) * len(wrt)
        return (*grads, *self._param_pullback(k, rest, cotangent))

    def _cotangent(self, k: int, a: Tensor, z: Tensor, fresh: bool) -> Tensor:
        r""":math:`\lambda_k r_k = \lambda_k \partial_a P_k(z, a)` of layer :math:`k` at its output
        ``z`` and pre-activation ``a`` (or at slices of both), in the storage of ``a`` if
        ``fresh`` (see :func:`_fresh`)."""
        layer = self.network.layer(k)
        residual = self.penalty.residual_ if fresh else self.penalty.residual
        return residual(layer.activation, z, a.detach()).mul_(layer.weight)

    def _adjoints(self, k: int, keys: Sequence[int]) -> list | None:
        r"""The adjoints ``adjoint(r, input_shape)`` of the maps of layer :math:`k` that read the
        variables ``keys``, when the backward pass of :math:`a_k`'s graph to them is exactly
        these adjoints applied to the cotangent (each variable read by a map alone,
        :meth:`~liftinv.layer.Layer.reads_alone`, that has one,
        :func:`~liftinv.affine.adjoint_method`, through a graph that does not reach the
        parameters, so :func:`~liftinv.affine.adjoint_graph` applied it); else ``None``."""
        layer = self.network.layer(k)
        positions = [layer.inputs.index(i) for i in keys]
        adjoints = [adjoint_method(layer.maps[pos]) if layer.reads_alone(pos) else None for pos in positions]
        if not keys or None in adjoints or not self._preactivation_graph(k).requires_grad or k in self._param_graph:
            return None
        return adjoints

    def _add_pullback(self, k: int, totals: Mapping[int, Tensor], adjoints: Sequence, keep: bool) -> None:
        r"""In place, :math:`g_i \mathrel{+}= \lambda_k M_{ki}^* r_k` for each variable :math:`i`
        of ``totals`` (:math:`g_i` its gradient so far, :math:`M_{ki}^*` its map's adjoint among
        ``adjoints``, see :meth:`_adjoints`): the terms that :meth:`_pullback` would give, added
        slice by slice of the batch of at most :data:`UPDATE_SLICE` entries of :math:`a_k` or of a
        :math:`g_i` (each map acts on every sample alone), so the cotangent and its images are
        slice-sized temporaries where the backward pass makes full-size ones. Unless ``keep``,
        consumes the cached :math:`a_k` as :meth:`_pullback` does."""
        a = self._preactivation_graph(k)
        fresh = _fresh(a, keep)
        if not keep:
            self._drop(k)
        with torch.no_grad():
            for part in _batch_slices(a, *totals.values()):
                cotangent = self._cotangent(k, a[part], self.xs[k][part], fresh)
                for (i, g), adjoint in zip(totals.items(), adjoints):
                    g[part] += adjoint(cotangent, self.xs[i][part].shape)

    def _param_pullback(self, k: int, own: Sequence[Tensor], cotangent: Tensor) -> tuple[Tensor | None, ...]:
        r"""The vector-Jacobian product of :math:`a_k` in the parameters ``own`` with
        ``cotangent``, by a graph of the maps of layer :math:`k` that hold them, evaluated at the
        current variables (:math:`a_k` is affine in each map's parameters: the other maps and
        the cached value play no part)."""
        if not own:
            return ()
        total: dict[int, Tensor] = {}
        for m, x in self.network.layer(k).terms(self.xs, self.y):  # one map at a time: one output alive at once
            ids = {id(p) for p in m.parameters()}
            wrt = [p for p in own if id(p) in ids]
            if wrt:
                with torch.enable_grad():
                    grads = torch.autograd.grad(m(x), wrt, cotangent, allow_unused=True)
                for p, g in zip(wrt, grads):
                    _accumulate(total, id(p), g)
        return tuple(total.get(id(p)) for p in own)

    def var_layers(self, index: int) -> list[int]:
        """The layers whose penalty the variable ``index`` enters, in increasing order: its own
        layer (``index`` > 0) and every layer that reads it (two variables that share one are
        coupled through its pre-activation)."""
        return sorted({k for k, _ in self.network.consumers(index)} | ({index} if index > 0 else set()))

    def param_layers(self, index: int) -> list[int]:
        """The layers that use the parameter group ``index``, in increasing order."""
        return list(self._layers_of_group[index])

    def param_outputs(self, index: int) -> list[int]:
        """The free variables output by the layers that use the parameter group ``index``."""
        return [k for k in self.param_layers(index) if k in self.free_vars]

    def param_inputs(self, index: int) -> list[int]:
        """The free variables read by the layers that use the parameter group ``index``."""
        return sorted({i for k in self.param_layers(index) for i in self.network.layer(k).inputs if i in self.free_vars})

    # ----------------------------------------------------------------- Lipschitz constants
    def lipschitz(self, block: Block) -> float:
        """Lipschitz constant of the gradient of the block's smooth part (cached until the
        parameters change; power iterations warm-start from the last eigenvector)."""
        self._sync()
        if block not in self._lip:
            self._check_block(block)
            if isinstance(block, Var):
                lam = self._var_lipschitz(block)
            else:
                lam = self._param_lipschitz(block)
            self._lip[block] = LIPSCHITZ_MARGIN * lam
        return self._lip[block]

    def _var_lipschitz(self, block: Var) -> float:
        i = block.index
        x = self.xs[i][:1]  # the maps act on every sample alike: one sample has the same norm

        def normal(v: list[Tensor]) -> list[Tensor]:
            out = torch.zeros_like(x)
            for k, pos in self.network.consumers(i):
                layer = self.network.layer(k)
                with torch.enable_grad():
                    xx = x.detach().requires_grad_()
                    mv = linear_part(layer.maps[pos], v[0]).detach()
                    out = out + layer.weight * torch.autograd.grad(layer.maps[pos](xx), xx, mv)[0]
            return [out]

        lam = self._power(block, normal, [x])
        term = self.terms.get(i)
        return lam + (term.lipschitz() if term is not None and term.smooth else 0.0)

    def _param_lipschitz(self, block: Params) -> float:
        group = self.param_groups[block.index]

        def normal(v: list[Tensor]) -> list[Tensor]:
            out = [torch.zeros_like(p) for p in group]
            for k in self._layers_of_group[block.index]:
                with torch.enable_grad():
                    a = self.network.preactivation(k, self.xs, self.y)
                    r = torch.zeros_like(a, requires_grad=True)
                    jt = torch.autograd.grad(a, group, r, create_graph=True, allow_unused=True)
                    pairs = [(g, vv) for g, vv in zip(jt, v) if g is not None]
                    jv = torch.autograd.grad([g for g, _ in pairs], r, [vv for _, vv in pairs])[0]
                    jtjv = torch.autograd.grad(a, group, jv, allow_unused=True)
                w = self.network.layer(k).weight
                out = [o + w * g if g is not None else o for o, g in zip(out, jtjv)]
            return out

        return self._power(block, normal, [p.detach() for p in group])

    def _power(self, block: Block, normal, like: list[Tensor]) -> float:
        v = self._eigvec.get(block)
        iters = self.power_iters
        if v is None:
            g = torch.Generator(device=like[0].device).manual_seed(0)
            v = [torch.randn(t.shape, dtype=t.dtype, device=t.device, generator=g) for t in like]
            iters = 4 * self.power_iters
        lam, v = power_iteration(lambda w: [t.detach() for t in normal(w)], v, iters)
        self._eigvec[block] = v
        return lam

    # ----------------------------------------------------------------- proxes
    def prox(self, block: Block, values: Sequence[Tensor], step: float) -> list[Tensor]:
        """Prox of ``step`` times the block's nonsmooth part at ``values`` (a variable's in the
        storage of ``values``, the caller's temporaries)."""
        self._sync()
        self._check_block(block)
        if isinstance(block, Params):
            return list(values)
        i = block.index
        if i == 0:
            term = self.terms.get(0)
            if term is None or term.smooth:
                return [values[0]]
            with values_trusted():  # the solver checks gradients and proxes for NaN/Inf: no scan here
                return [term.prox(values[0], step)]
        layer = self.network.layer(i)
        a = self._preactivation_graph(i).detach()  # preactivation() without its second _sync
        return [self.penalty.prox_output_(layer.activation, a, values[0], step * layer.weight)]
