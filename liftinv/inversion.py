r"""Stable inversion of a pre-trained network.

Given a network :math:`N` (lifted, or a torch model that :func:`liftinv.lift` accepts) and data
:math:`f_\delta \approx N(u^\dagger)`, :func:`invert` solves

.. math::
    \min_{u, x_1..x_{K-1}}\; \lambda_K B_{\Psi_K}(Pf_\delta, a_K) + \sum_{k<K} \lambda_k B_{\Psi_k}(x_k, a_k)
    + \alpha J(u), \qquad x_0 = u,

with :math:`a_k = \sum_j M_{kj} x_{i_j} + c_k(y)` and :math:`J` the regulariser
(:class:`~liftinv.potentials.TV`, ``Tikhonov``, ``L1``, ``Box``,
:class:`~liftinv.potentials.DeepinvPrior`). An identity last activation gives
:math:`\tfrac{\lambda_K}2\|a_K - f_\delta\|^2`.

**Data outside the domain of the last activation.** :math:`B_{\Psi}(f, a) = +\infty` when
:math:`f \notin \operatorname{dom}\Psi` (e.g. negative noisy entries under a ReLU). Dropping the
constant :math:`\Psi(f)` gives the Fenchel-Young form
:math:`D(f, a) = \Phi^*(a) - \langle f, a\rangle + \tfrac12\|f\|^2`, finite with gradient
:math:`\sigma(a) - f`, but for :math:`f \notin \overline{\operatorname{dom}}\,\Psi` it is unbounded
below (ReLU, :math:`f_i < 0`: :math:`D_i = \tfrac12 f_i^2 + |f_i|\,a_i \to -\infty` as
:math:`a_i \to -\infty`), so the regularised problem may have no minimiser. The data are therefore
replaced by their projection :math:`Pf_\delta` onto :math:`\overline{\operatorname{dom}}\,\Psi_K`
(``activation.project_domain``): since the exact data :math:`f = N(u^\dagger)` lie in that closed
convex set, :math:`\|Pf_\delta - f\| \le \|f_\delta - f\|`, so the noise bound carries over, and the
lifted data term is finite and bounded below.

**Saturated data.** Where the last activation is flat (:meth:`~liftinv.activations.Activation.saturation`:
:math:`0` for ReLU, :math:`lo, hi` for a clip), the clamped term is biased under additive noise:
for a ReLU output with :math:`a^\dagger_i < 0` (:math:`f_i = 0`) and a positive noise sample
:math:`f_{\delta,i} = \varepsilon_i > 0`, :math:`B(\varepsilon_i, a) = \tfrac12\varepsilon_i^2 + \varepsilon_i|a|`
for :math:`a < 0`, so :math:`B(Pf_\delta, a^\dagger)` grows with :math:`|a^\dagger_i|`, not with the noise, and
the minimiser is pulled to :math:`a_i \ge 0`: about half of the inactive constraints get the
wrong sign whatever :math:`\delta`, and the error does not fall with the noise. With a noise level
:math:`\delta` (white noise, per-entry standard deviation :math:`\delta/\sqrt m` for :math:`m` output
entries), entries of :math:`Pf_\delta` within :math:`\kappa\delta/\sqrt m` of a saturation value
:math:`v` are set to :math:`v` (``config.snap`` :math:`= \kappa`, default 3): a clean entry at
:math:`v` is then recovered exactly with probability :math:`\ge 1 - 2\Phi(-\kappa)` (99.7 %), and
:math:`B(v, \cdot)` vanishes on the whole preimage :math:`\sigma^{-1}(v)` (ReLU:
:math:`B(0, a) = \tfrac12\max(a, 0)^2`), which contains :math:`a^\dagger_i`; every other entry moves by at most :math:`\kappa\delta/\sqrt m` (snapped entries) or
not at all. The problem stays convex.

**Free output.** The clamped data term is convex in the pre-activation but biased for additive
noise: for a ReLU output with :math:`a^\dagger_i < 0` and a positive noise sample
:math:`f_{\delta,i} > 0`, :math:`B(f_{\delta,i}, a) = \tfrac12 f_{\delta,i}^2 + f_{\delta,i}|a|` for
:math:`a < 0`, so :math:`B(f_\delta, a^\dagger)` is far above :math:`\delta^2`. With
``free_output=True`` the output variable is free and the data enter through the loss
:math:`\tfrac12\|x_K - f_\delta\|^2`, i.e. the data term becomes the
inf-convolution :math:`e(a) = \min_z \tfrac12\|z - f_\delta\|^2 + \lambda_K B_{\Psi_K}(z, a)`: finite
for any data (the prox keeps :math:`z` in the domain), equal to :math:`\tfrac12 f_{\delta,i}^2` for
:math:`a_i \le -f_{\delta,i}/\lambda_K` under a ReLU, like the squared output error
:math:`\tfrac12\|\sigma(a) - f_\delta\|^2` it relaxes (its limit as :math:`\lambda_K \to \infty`), at
the price of convexity. It is solved by BCD.

**Discrepancy.** Measured on the plain forward pass against the raw data,
:math:`d(u) = \|N(u) - f_\delta\|` per sample: it is calibrated against the noise level by
definition (:math:`d(u^\dagger) = \|f - f_\delta\| \approx \delta`), does not depend on the lifting, and
for data outside the domain it includes the unavoidable part
:math:`\|f_\delta - Pf_\delta\| \le \delta` (:math:`\|N(u) - f_\delta\|^2 \ge \|N(u) - Pf_\delta\|^2 + \|f_\delta - Pf_\delta\|^2`
for the projection on a convex set).

**Parameter choice.** A regulariser with ``weight=None`` gets, per sample, :math:`\alpha` with
:math:`d(u_\alpha) = \tau\delta` (discrepancy principle) when ``noise_level`` :math:`\delta` is given,
else ``config.default_alpha``; see :func:`~liftinv.inversion_search.search_alpha` (each solve
warm-started from the previous one) and :func:`first_alpha`. The result is, per sample, the solve
of the search with the largest :math:`\alpha` among those with
:math:`d \le (1 + \text{rtol})\,\tau\delta` (Morozov's choice; if there is none, the smallest
:math:`d`, where discrepancies within ``STALL`` of each other fit as well and the larger weight is
kept: the weight at which a search that stalled stopped, see
:func:`~liftinv.inversion_search.search_alpha`): usually the last one, but not when the search
ran out of solves after a step that overshot (solves ended by ``max_time`` before converging
make that more likely). A target that no weight the data's dtype holds reaches from below (a
noise level far too large) stops the search at the largest such weight, with a ``RuntimeWarning``. A solve that stopped at ``max_iter`` or ``max_time`` and left a sample above the target is repeated once at
the same weight before the search lowers it (its discrepancy may be that of an unconverged
iterate).
:math:`\delta = 0` gives :math:`\alpha = 0` (no search: one solve when every sample has :math:`\delta = 0`).
An explicit weight is used as given.

**Solvers.** One layer with TV and the output clamped to the data (``free_output=False``): the
convex problem is solved by primal-dual iterations (PDHG, :mod:`liftinv.inversion_pdhg`), unless
the activation is a softmax (it has no :math:`\operatorname{prox}_{\mu\Phi}`, which PDHG needs).
Otherwise: block-coordinate proximal descent on the lifted problem (:mod:`liftinv.inversion_bcd`), started from the forward pass of ``x0`` (zeros by
default). ``physics`` appends the measurement layer
:math:`y = A x_K` (identity activation), so :math:`N(u)` becomes a free variable.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from time import perf_counter

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from liftinv.activations import Identity, Softmax
from liftinv.convert import InputShapeError, lift
from liftinv.inversion_bcd import LiftedBCD
from liftinv.inversion_pdhg import PrimalDual
from liftinv.inversion_search import STALL, lipschitz_estimate, search_alpha
from liftinv.layer import Layer
from liftinv.network import LiftedNetwork
from liftinv.potentials import Potential, TV
from liftinv.solvers import Nesterov, Rule
from liftinv.validation import (check_fits_dtype, check_flag, check_float_dtype, positive_finite, reference_tensor,
                                refuse_inference_mode, sample_shape)
from operators.checks import is_integer, is_real, values_trusted


@dataclass(frozen=True)
class InversionConfig:
    r"""Settings of :func:`invert` (and of the gradient baseline).

    Args:
        max_iter: iterations per solve (one solve per value of :math:`\alpha`).
        tol: a solve stops when its relative residual (PDHG: primal and dual residuals;
            BCD: of all free variables together, :math:`\|X_k - X_{k-1}\|/\|X_k\|`; gradient:
            :math:`\|u_k - u_{k-1}\|/\|u_k\|`) is at most ``tol``; 0: never.
        max_time: wall-clock seconds per solve.
        tau: discrepancy factor :math:`\tau`: target :math:`d(u_\alpha) = \tau\delta`.
        discrepancy_rtol: accepted relative deviation from the target.
        max_search: maximal number of solves of the discrepancy search.
        default_alpha: :math:`\alpha` for ``weight=None`` without a noise level, and the first
            guess of the search for regularisers other than TV (see :func:`first_alpha`); at most
            the largest number of the data's dtype (checked by :func:`invert`, where it is used).
        rule: update rule of the variable blocks in BCD.
        snap: finite :math:`\kappa \ge 0`: with a noise level, clamped data within
            :math:`\kappa\delta/\sqrt m` of a saturation value of the last activation are set to it
            (see the module docstring); 0: off.
        energy_every: on deep networks with the Nesterov rule the BCD solver evaluates the
            lifted energy (a forward pass through every layer) every this many sweeps and at the
            last sweep of each solve; the history holds NaN at the other sweeps. 1: every sweep.
            (One-layer networks and other rules evaluate it at every sweep: their momentum
            restarts read each sample's.)
        progress: show a progress bar with a step per solve (the weight search's, or the one
            solve at a given weight), with the mean weight and the mean discrepancy over its
            target.
    """

    max_iter: int = 1000
    tol: float = 1e-4
    max_time: float = math.inf
    tau: float = 1.0
    discrepancy_rtol: float = 0.05
    max_search: int = 12
    default_alpha: float = 1e-2
    rule: Rule = field(default_factory=Nesterov)
    snap: float = 3.0
    energy_every: int = 10
    progress: bool = False

    def __post_init__(self):
        for name in ("max_iter", "max_search", "energy_every"):
            value = getattr(self, name)
            if not is_integer(value) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))  # frozen; a NumPy integer becomes an int
        for name, lo, hi in (("tol", 0, math.inf), ("max_time", 0, math.inf), ("discrepancy_rtol", 0, 1),
                             ("snap", 0, math.inf)):
            value = getattr(self, name)
            if not is_real(value) or not lo <= value <= hi:
                raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
        if self.snap == math.inf:  # would set every entry to a saturation value
            raise ValueError(f"snap must be a finite number >= 0, got {self.snap!r}")
        for name in ("tau", "default_alpha"):
            positive_finite(name, getattr(self, name))
        check_flag("progress", self.progress)
        if not isinstance(self.rule, Rule):
            raise TypeError(f"rule must be a liftinv.solvers.Rule, got {type(self.rule).__name__}")


@dataclass(frozen=True)
class SearchStep:
    """One solve of the parameter search: the :math:`\\alpha` used, the discrepancy reached
    (both per sample, in the data's dtype, the weight as the regulariser applies it: the float64
    weights of :func:`~liftinv.inversion_search.search_alpha` rounded), the iterations and the
    seconds it took."""

    alpha: Tensor
    discrepancy: Tensor
    iterations: int
    seconds: float


@dataclass
class InversionHistory:
    """Per iteration (over all solves, in order; L-BFGS without a box: per call of several iterations): energy (batch sum; NaN where the BCD solver did
    not evaluate it, see ``InversionConfig.energy_every``), primal and dual residuals
    (relative; dual is NaN for methods without a dual variable) and wall-clock seconds since the
    start; per solve: :class:`SearchStep` records."""

    energy: list[float] = field(default_factory=list)
    primal_residual: list[float] = field(default_factory=list)
    dual_residual: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    steps: list[SearchStep] = field(default_factory=list)
    start: float = field(default_factory=perf_counter, repr=False)

    def record(self, energy: float, primal: float, dual: float = math.nan) -> None:
        self.energy.append(float(energy))
        self.primal_residual.append(float(primal))
        self.dual_residual.append(float(dual))
        self.time.append(perf_counter() - self.start)

    @property
    def iterations(self) -> int:
        """Entries recorded over all solves: one per iteration, but one per call of
        :data:`~liftinv.inversion_baseline.LBFGS_ITERATIONS_PER_STEP` iterations for L-BFGS without a box
        (:attr:`InversionResult.iterations` counts iterations)."""
        return len(self.energy)


@dataclass(frozen=True)
class InversionResult:
    """What :func:`invert` returns.

    Attributes:
        input: the recovered input, shape ``(B, *input_shape)``.
        variables: all lifted variables ``[x_0 = input, x_1, ..., x_K]`` (``x_K``: the clamped,
            projected and snapped data); for the single-layer PDHG solver ``[input, data]``.
        alpha: the regularisation weight used per sample, shape ``(B,)``, in the data's dtype
            (as the regulariser applies it): the chosen one, or the regulariser's own (NaN without
            a regulariser or for one without a weight, as a box).
        discrepancy: :math:`\\|N(u) - f_\\delta\\|` per sample, shape ``(B,)``.
        target: :math:`\\tau\\delta` per sample, or ``None`` without a noise level.
        history: the :class:`InversionHistory`.
    """

    input: Tensor
    variables: list[Tensor]
    alpha: Tensor
    discrepancy: Tensor
    target: Tensor | None
    history: InversionHistory

    @property
    def iterations(self) -> int:
        """Iterations over all solves, the sum of the :class:`SearchStep` records' (L-BFGS records
        one history entry per call of several iterations, so it is not the history's length)."""
        return sum(step.iterations for step in self.history.steps)

    @property
    def seconds(self) -> float:
        return self.history.time[-1] if self.history.time else 0.0


class Measurement(nn.Module):
    """:math:`x \\mapsto A x` for a linear physics (held by reference, not as a submodule)."""

    def __init__(self, physics):
        super().__init__()
        if not (callable(getattr(physics, "A", None)) and callable(getattr(physics, "A_adjoint", None))):
            raise TypeError(f"physics must be a linear physics with A and A_adjoint, got {type(physics).__name__}")
        self.__dict__["physics"] = physics

    def forward(self, x: Tensor) -> Tensor:
        with values_trusted():  # applied in every sweep to the network's output, checked by the solver
            return self.physics.A(x)


# --------------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class Task:
    """A validated inversion task: the lifted network (with the measurement layer), the raw and
    projected data, the noise level, the initial input and the network's measurements ``y``."""

    network: LiftedNetwork
    data: Tensor
    projected: Tensor
    delta: Tensor | None
    x0: Tensor
    y: Tensor | None
    free_output: bool = False

    def forward(self, u: Tensor) -> Tensor:
        """:math:`N(u)` (with the physics)."""
        return self.network(u, self.y)

    def discrepancy(self, u: Tensor) -> Tensor:
        r""":math:`\|N(u) - f_\delta\|` per sample."""
        with torch.no_grad():
            return (self.forward(u) - self.data).flatten(1).norm(dim=1)


def _noise(noise_level, batch: int, like: Tensor) -> Tensor | None:
    """``noise_level`` as a tensor ``(batch,)`` of ``like``'s dtype and device, checked as given
    (``float(10**400)`` overflows, and ``1e39`` is Inf in float32): finite, >= 0 and at most the
    dtype's largest number, else a ``ValueError`` naming it."""
    if noise_level is None:
        return None
    largest = torch.finfo(like.dtype).max
    if isinstance(noise_level, Tensor):
        if noise_level.dtype == torch.bool or noise_level.is_complex():
            raise TypeError(f"noise_level must be None, a number or a real tensor, got a tensor of dtype {noise_level.dtype}")
        given = noise_level.detach()
        if given.ndim > 1 or (given.ndim == 1 and given.shape[0] != batch):
            raise ValueError(f"noise_level must be a number or a tensor of shape ({batch},), got shape {tuple(given.shape)}")
        valid, fits = torch.stack([(torch.isfinite(given) & (given >= 0)).all(), (given <= largest).all()]).tolist()
        shown = repr(given.tolist())
    elif not is_real(noise_level):
        raise TypeError(f"noise_level must be None, a number or a tensor, got {type(noise_level).__name__}")
    else:
        valid = noise_level >= 0 and (is_integer(noise_level) or math.isfinite(noise_level))
        fits = noise_level <= largest
        big = is_integer(noise_level) and abs(noise_level) > largest  # float() may overflow
        shown = f"{Decimal(int(noise_level)):.3e}" if big else repr(float(noise_level))
    if not valid:
        raise ValueError(f"noise_level must be finite and >= 0, got {shown}")
    if not fits:
        raise ValueError(f"noise_level = {shown} overflows {like.dtype} (largest {largest:.3g}), the dtype of output")
    if isinstance(noise_level, Tensor):
        return given.to(like).expand(batch).clone()
    return torch.tensor(float(noise_level), dtype=like.dtype, device=like.device).expand(batch).clone()


def snap_saturated(activation, f: Tensor, radius: Tensor) -> Tensor:
    r"""``f`` with every entry within ``radius`` (per sample, shape ``(B,)``) of a saturation value
    :math:`v` of ``activation`` set to the nearest such :math:`v`."""
    r = radius.to(f).reshape(-1, *(1,) * (f.ndim - 1))
    out, dist = f, torch.full_like(f, math.inf)
    for v in activation.saturation():
        d = (f - v).abs()
        take = (d <= r) & (d < dist)
        out, dist = torch.where(take, torch.full_like(f, v), out), torch.where(take, d, dist)
    return out


def _check_output(output) -> None:
    if not isinstance(output, Tensor):
        raise TypeError(f"output must be a torch.Tensor, got {type(output).__name__}")
    check_float_dtype("output", output, ValueError)  # isfinite below fails on float8
    if output.ndim < 2:
        raise ValueError(f"output must have a batch axis, shape (B, ...), got shape {tuple(output.shape)}")
    if output.shape[0] == 0:
        raise ValueError(f"output must hold at least one sample, got shape {tuple(output.shape)}")
    if not bool(torch.isfinite(output).all()):
        raise ValueError("output contains NaN or Inf entries")


def _network(network, input_shape, x0: Tensor | None, any_module: bool) -> tuple[LiftedNetwork, tuple[int, ...]]:
    """The lifted ``network`` and the shape of one input: ``input_shape``, else ``x0``'s, else the
    network's own (see :func:`prepare` for ``any_module``)."""
    if x0 is not None and not isinstance(x0, Tensor):
        raise TypeError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
    if input_shape is not None:
        input_shape = sample_shape("input_shape", input_shape)
    shape_of_x0 = input_shape is None and x0 is not None
    if shape_of_x0:
        input_shape = tuple(x0.shape[1:])
    try:
        net = lift(network, input_shape=None if isinstance(network, LiftedNetwork) else input_shape)
    except TypeError:
        if not (any_module and isinstance(network, nn.Module)):
            raise
        net = LiftedNetwork([Layer([0], [network], Identity())], input_shape=input_shape)
    except ValueError as err:
        message = str(err)
        if any_module and isinstance(err, InputShapeError):  # the gradient baseline lifts nothing: name the module
            message = (f"input_shape={err.input_shape} (one sample, without the batch axis) does not fit the network "
                       f"at its module {err.map}: {err.reason}")
        raise ValueError(f"x0 of shape {tuple(x0.shape)} does not fit the network: {message}" if shape_of_x0 else message) from err
    shape = input_shape if input_shape is not None else net.input_shape
    if shape is None:
        raise ValueError("the input shape is unknown: pass input_shape (or x0) for this network")
    if net.input_shape is not None and shape != net.input_shape:
        given = f"x0 of shape {tuple(x0.shape)}" if shape_of_x0 else f"input_shape {shape}"
        raise ValueError(f"{given} does not match the network's input shape {net.input_shape}")
    return net, shape


def _check_y(y, net: LiftedNetwork, batch: int) -> None:
    if y is None:
        return
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if all(layer.data_map is None for layer in net.layers):
        raise ValueError("y is given, but no layer of the network reads measurements (it has no data map)")
    if y.ndim == 0 or y.shape[0] != batch:
        raise ValueError(f"y must hold one measurement per sample of output, shape ({batch}, ...), got {tuple(y.shape)}")


def _start(x0: Tensor | None, net: LiftedNetwork, output: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``x0`` checked against the network and ``output``, or zeros of the input's shape."""
    batch = output.shape[0]
    if x0 is None:
        return output.new_zeros(batch, *shape)
    if tuple(x0.shape) != (batch, *shape):
        raise ValueError(f"x0 must have shape {(batch, *shape)}, got {tuple(x0.shape)}")
    net.check_input(x0, "x0")
    if x0.dtype != output.dtype:  # a network without parameters has no dtype of its own
        raise TypeError(f"x0 has dtype {x0.dtype}, output has {output.dtype}")
    return x0


class OutputShapeError(ValueError):
    """The output (the data) does not have the shape ``(B, *expected)`` of the network's output,
    ``expected`` the shape of one sample; ``got`` is the output's shape."""

    def __init__(self, expected: tuple[int, ...], got: tuple[int, ...]):
        self.expected, self.got = expected, got
        super().__init__(f"output must have shape (B, {', '.join(map(str, expected))}) for this network, got {got}")


@torch.no_grad()
def _output_shape(net: LiftedNetwork, measurement: Measurement | None, x0: Tensor, y: Tensor | None,
                  shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one sample of :math:`N(u)` (of :math:`A N(u)` with a ``measurement``), by a
    forward pass of the first sample of ``x0``."""
    try:
        expected = net(x0[:1], None if y is None else y[:1])
    except RuntimeError as err:
        raise ValueError(f"input shape {shape} does not fit the network: {err}") from err
    if measurement is not None:
        try:
            expected = measurement(expected)
        except (TypeError, ValueError, RuntimeError) as err:
            raise (TypeError if isinstance(err, TypeError) else ValueError)(
                f"physics does not accept the network's output (shape (B, {', '.join(map(str, expected.shape[1:]))}), "
                f"dtype {expected.dtype}): {err}") from err
    return tuple(expected.shape[1:])


def prepare(network, output, *, input_shape=None, noise_level=None, physics=None, x0=None, y=None,
            free_output: bool = False, snap: float = 0.0, any_module: bool = False) -> Task:
    """Validate the arguments of :func:`invert` and build the :class:`Task` (``snap``: see
    :class:`InversionConfig`). With ``any_module``, a module that :func:`~liftinv.lift` refuses
    becomes one layer whose map is the whole module (identity activation): a network for plain
    forward passes :math:`N(u)` only (its "map" is not affine), as the gradient baseline needs."""
    check_flag("free_output", free_output)
    _check_output(output)
    output = output.detach()  # the data: a result must not hold the caller's graph to them
    net, shape = _network(network, input_shape, x0, any_module)
    ref = reference_tensor(net)
    if ref is not None and output.dtype != ref.dtype:
        raise TypeError(f"output has dtype {output.dtype}, the network uses {ref.dtype}")
    net.check_weights(output.dtype)
    batch = output.shape[0]
    _check_y(y, net, batch)
    x0 = _start(x0, net, output, shape)
    measurement = None if physics is None else Measurement(physics)
    expected = _output_shape(net, measurement, x0, y, shape)
    if measurement is not None:
        net = LiftedNetwork([*net.layers, Layer([net.depth], [measurement], Identity())], input_shape=net.input_shape)
    if tuple(output.shape[1:]) != expected:
        raise OutputShapeError(expected, tuple(output.shape))
    act = net.layer(net.depth).activation
    if free_output and isinstance(act, Softmax):
        raise ValueError("free_output=True needs a last activation with a prox; a softmax output must stay clamped "
                         "(free_output=False)")
    projected = act.project_domain(output)
    if not bool(act.in_domain(projected).all()):
        raise ValueError(f"output lies outside the domain of the last activation {act} and cannot be projected onto it")
    delta = _noise(noise_level, batch, output)
    if delta is not None and snap > 0:
        projected = snap_saturated(act, projected, snap * delta / math.sqrt(output[0].numel()))
    return Task(net, output, projected, delta, x0.detach().clone(), y, free_output)


def first_alpha(task: Task, regularizer: Potential, config: InversionConfig) -> Tensor:
    r"""First guess of the discrepancy search, per sample. For TV, from the optimality condition
    :math:`J_N^* s = -\alpha\,\partial\mathrm{TV}(u)` with :math:`\|s\| \approx \tau\delta` (the residual
    at the target) and :math:`\|\partial\mathrm{TV}\| \le \sqrt{8n}` (:math:`n` input entries):
    :math:`\alpha_0 = \operatorname{Lip}(N)\,\tau\delta/\sqrt{8n}`
    (:func:`~liftinv.inversion_search.lipschitz_estimate`; one for the batch, but one per sample
    for a network that reads measurements ``y``, whose Jacobian depends on them, so that a
    sample's guess does not depend on the others'); otherwise, or where that estimate is
    not a positive finite number (a network flat at the random input, e.g. every ReLU inactive:
    the search multiplies and divides :math:`\alpha_0` by 10 and could not leave 0),
    ``config.default_alpha``. The guess is capped at the largest number of the data's dtype, in
    which the regulariser applies it (the search's ``max_alpha``)."""
    default = torch.full_like(task.delta, config.default_alpha)
    if not isinstance(regularizer, TV):
        return default
    ys = [None] if task.y is None else [task.y[b:b + 1] for b in range(task.y.shape[0])]
    lip = task.delta.new_tensor([lipschitz_estimate(lambda x: task.network(x, y), task.x0[:1]) for y in ys])
    usable = (lip > 0) & torch.isfinite(lip)
    guess = (lip * config.tau * task.delta / math.sqrt(8 * task.x0[0].numel())).clamp_max(torch.finfo(lip.dtype).max)
    return torch.where(usable, guess, default)


# --------------------------------------------------------------------------------- entry point
def solve_task(task: Task, solver, regularizer: Potential | None, config: InversionConfig) -> InversionResult:
    """Run ``solver`` (with ``solve(regularizer, history)`` and ``input``) on ``task``, choosing
    the weight of ``regularizer`` when it is ``None`` (see the module docstring). A
    :class:`~liftinv.potentials.TV` regulariser is used through a :meth:`~liftinv.potentials.TV.cold`
    copy: its prox's warm start holds the dual of the last batch of the same shape it was applied
    to, so an earlier inversion with the same object would change the result."""
    if regularizer is not None and not isinstance(regularizer, Potential):
        raise TypeError(f"regularizer must be a liftinv Potential or None, got {type(regularizer).__name__}")
    if isinstance(regularizer, TV):  # its prox's warm start from what the object solved before
        regularizer = regularizer.cold()
    history = InversionHistory()
    batch = task.data.shape[0]
    weight = getattr(regularizer, "weight", None)
    if isinstance(weight, Tensor) and weight.shape != (batch,):
        raise ValueError(f"the regularizer's weight must be a number or one per sample, shape ({batch},), got shape {tuple(weight.shape)}")
    free = regularizer is not None and getattr(regularizer, "weight", 0.0) is None
    if free:  # the regulariser applies it in the data's dtype
        check_fits_dtype("config.default_alpha", config.default_alpha, task.data.dtype, "output")
    target = None if task.delta is None else config.tau * task.delta
    best: list = []  # [input, variables, alpha, discrepancy] of the selected solve per sample
    unsettled = [False]  # whether the last solve stopped at its iteration or time limit

    def solve(alpha: Tensor | None) -> Tensor:
        start = perf_counter()
        iterations = solver.solve(regularizer if alpha is None else regularizer.with_weight(alpha), history)
        unsettled[0] = iterations >= config.max_iter or perf_counter() - start >= config.max_time
        d = task.discrepancy(solver.input)
        weights = _given_weight(regularizer, task.data) if alpha is None else alpha.to(task.data.dtype, copy=True)
        history.steps.append(SearchStep(weights, d.clone(), iterations, perf_counter() - start))
        variables = [v.clone() for v in getattr(solver, "xs", [solver.input, task.projected])]
        state = [solver.input.clone(), variables, weights, d]  # d is fresh and never modified
        if best:  # a second solve: the search runs, so there is a target
            *_, alpha_best, d_best = best
            better = _morozov_prefers(d, weights, d_best, alpha_best, (1 + config.discrepancy_rtol) * target)
            state = _per_sample_where(better, state, best)
        best[:] = state
        bar.update()
        bar.set_postfix(alpha=f"{float(weights.mean()):.3g}",
                        **({} if target is None else {"fit": f"{float((d / target).mean()):.3g}"}))
        return d

    search = free and task.delta is not None
    with tqdm(total=config.max_search if search else 1, desc="invert", unit="solve", leave=False,
              disable=not config.progress) as bar:
        if search:
            search_alpha(solve, task.delta, first_alpha(task, regularizer, config), tau=config.tau,
                         rtol=config.discrepancy_rtol, max_search=config.max_search, unsettled=lambda: unsettled[0],
                         max_alpha=torch.finfo(task.data.dtype).max)  # solve applies the weights in the data's dtype
        else:
            solve(task.data.new_full((batch,), config.default_alpha) if free else None)
    recovered, variables, alpha, discrepancy = best
    return InversionResult(recovered, variables, alpha, discrepancy, target, history)


def _given_weight(regularizer: Potential | None, data: Tensor) -> Tensor:
    """The weight of a regulariser that came with one, per sample; NaN for none or a regulariser
    without a weight (e.g. a box constraint)."""
    weight = getattr(regularizer, "weight", None)
    if weight is None:
        return data.new_full((data.shape[0],), math.nan)
    return torch.as_tensor(weight, dtype=data.dtype, device=data.device).expand(data.shape[0]).clone()


def _morozov_prefers(d: Tensor, alpha: Tensor, d_best: Tensor, alpha_best: Tensor, bound: Tensor) -> Tensor:
    r"""Per sample, whether the solve ``(d, alpha)`` replaces the kept ``(d_best, alpha_best)``
    under Morozov's rule: the largest weight among solves with ``d <= bound`` (the later of equal
    weights); while none fits, the smaller ``d``, where two discrepancies within
    :data:`~liftinv.inversion_search.STALL` of each other (the smaller at least
    :math:`(1 - \text{STALL})` times the larger) fit as well and the larger weight is kept, as
    where the search stalls (of equal weights, the smaller ``d``)."""
    fits, fits_best = d <= bound, d_best <= bound
    closer = torch.where(alpha > alpha_best, d_best >= (1 - STALL) * d,
                         torch.where(alpha < alpha_best, d < (1 - STALL) * d_best, d < d_best))
    return torch.where(fits_best, fits & (alpha >= alpha_best), fits | closer)


def _per_sample_where(mask: Tensor, new: list, old: list) -> list:
    """``new`` where ``mask`` (per sample, first dimension), else ``old``, through nested lists."""
    if isinstance(new, list):
        return [_per_sample_where(mask, a, b) for a, b in zip(new, old)]
    return torch.where(mask.view(-1, *[1] * (new.ndim - 1)), new, old)


def invert(
    network: LiftedNetwork | nn.Module,
    output: Tensor,
    *,
    input_shape: Sequence[int] | None = None,
    regularizer: Potential | None = None,
    noise_level: float | Tensor | None = None,
    physics=None,
    x0: Tensor | None = None,
    y: Tensor | None = None,
    free_output: bool = False,
    config: InversionConfig = InversionConfig(),
) -> InversionResult:
    r"""Recover the input of ``network`` from noisy ``output`` by lifted inversion.

    Args:
        network: a :class:`LiftedNetwork` or a torch model accepted by :func:`liftinv.lift`
            (its parameters are not changed). A :class:`~liftinv.architectures.ResNet` is best
            built with ``residual="exact"`` (or converted by ``with_residual("exact")``): the same
            network, whose lifted problem is not a relaxation of it and couples the output to
            every block (faster solves).
        output: observed outputs :math:`f_\delta`, shape ``(B, *output_shape)`` (with ``physics``:
            the measurements :math:`y = A N(u) + \text{noise}`).
        input_shape: shape of one input sample; needed when neither the network nor ``x0``
            knows it.
        regularizer: :math:`J` on the input, e.g. ``TV()`` (weight chosen), ``TV(0.1, box=(0, 1))``,
            ``Tikhonov()``, ``L1(w)``, ``Box(lo, hi)``, ``DeepinvPrior(prior)``; ``None``: none.
            ``TV``, ``Tikhonov``, ``L1`` and ``DeepinvPrior`` with ``weight=None`` get their
            weight chosen (see the module docstring).
        noise_level: :math:`\delta \ge 0`, the expected norm of the noise in one sample's output
            (a number or a tensor ``(B,)``), at most the largest number of ``output``'s dtype.
        physics: a linear physics :math:`A` (``A``/``A_adjoint``) observing the network's output.
        x0: initial input, shape ``(B, *input_shape)``; zeros by default.
        y: measurements of networks with data maps (:meth:`LiftedNetwork.feasible`), one per
            sample, shape ``(B, ...)``; refused for a network without data maps.
        free_output: ``False``: the output variable is clamped to the projected data (convex for
            one layer); ``True``: it is free, with the loss :math:`\tfrac12\|x_K - f_\delta\|^2`
            (see the module docstring; refused for a softmax output, which has no prox).
        config: :class:`InversionConfig`.

    Returns:
        :class:`InversionResult`.

    **Batches.** The samples' problems are independent and are solved side by side, each with its
    own weight search and momentum restarts (BCD tests each sample alone, for a step against its
    momentum or an increase of its own energy, and restarts only the samples that pass the test,
    see :mod:`liftinv.inversion_bcd`); with a fixed weight (or ``weight=None`` without a
    noise level), ``tol = 0`` and no ``max_time``, a sample's result is that of the sample inverted
    alone, with these exceptions, where a sample's iterates depend on the others' (not the
    minimiser they converge to): a solve stops when the change (BCD) or the residuals (PDHG) of
    the whole batch fall below ``tol``, or at ``max_time`` for the whole batch, so the weight search's
    test of a solve that stopped at its limit (:func:`~liftinv.inversion_search.search_alpha`'s
    ``unsettled``) is one for the batch; and a smooth regulariser with per-sample weights
    (e.g. ``Tikhonov(w)``, ``w`` of shape ``(B,)``) gives the input block of BCD one step size, from
    the largest weight in the batch.

    Raises:
        TypeError: unsupported layers (from :func:`liftinv.lift`), wrong argument types or dtypes.
        ValueError: shapes not matching the network, NaN/Inf in ``output``, a negative or
            non-finite ``noise_level``, or one above the largest number of ``output``'s dtype.
        RuntimeError: called under ``torch.inference_mode`` for a problem solved by block-coordinate
            descent (one layer with TV is solved by PDHG, which needs no autograd).
    """
    if not isinstance(config, InversionConfig):
        raise TypeError(f"config must be an InversionConfig, got {type(config).__name__}")
    task = prepare(network, output, input_shape=input_shape, noise_level=noise_level, physics=physics, x0=x0, y=y,
                   free_output=free_output, snap=config.snap)
    if (task.network.depth == 1 and not free_output and isinstance(regularizer, TV)
            and not isinstance(task.network.layer(1).activation, Softmax)):  # which has no prox_phi
        solver = PrimalDual(task.network, task.x0, task.projected, task.y, config)
    else:
        refuse_inference_mode("invert with block-coordinate descent")
        solver = LiftedBCD(task.network, task.x0, task.data, task.projected, task.y, task.free_output, config)
    return solve_task(task, solver, regularizer, config)
