r"""Input validation, adjoint tests and cached operator norms shared by all operators."""
from __future__ import annotations

import numbers
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

_VALUES_TRUSTED: ContextVar[bool] = ContextVar("values_trusted", default=False)


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number: a :class:`numbers.Real` that is not a ``bool``, so
    Python ``int``/``float`` and NumPy integer and floating scalars (``np.float32(0.5)``,
    ``np.int64(3)``), but not ``True``, ``np.bool_``, complex numbers, strings or tensors."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer: a :class:`numbers.Integral` that is not a ``bool``, so
    Python ``int`` and NumPy integer scalars (``np.int64(3)``, ``np.uint8(3)``), but not ``True``,
    ``np.bool_`` (not a :class:`numbers.Integral`), floats such as ``2.0`` or tensors. Callers that
    keep the value convert it with ``int(value)``, so that no NumPy scalar is stored."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@contextmanager
def values_trusted() -> Iterator[None]:
    """Within the block, :func:`check_tensor` skips its NaN/Inf scan (types, devices and shapes
    are still checked): for callers whose inputs are checked already, such as network layers that
    apply an operator in every forward pass, where each scan is a pass over the data and, on a
    GPU, a host read."""
    token = _VALUES_TRUSTED.set(True)
    try:
        yield
    finally:
        _VALUES_TRUSTED.reset(token)


def _unwrapped(x: Tensor) -> Tensor:
    """The plain tensor under ``torch.func``'s wrappers of ``x`` (``vmap``'s batched tensors, with
    every mapped sample, and ``grad``'s tracking tensors); ``x`` itself where there are none. A
    Python ``bool`` of a value computed from a ``vmap``-batched tensor is refused by torch
    ('data-dependent control flow'); one of the plain tensor is not. These are private torch
    functions: a torch without them leaves ``x`` as it is (vmap then refuses the scan, as before)."""
    functorch = getattr(torch._C, "_functorch", None)
    wrapped, unwrap = (getattr(functorch, name, None) for name in ("is_functorch_wrapped_tensor", "get_unwrapped"))
    while wrapped is not None and unwrap is not None and wrapped(x):
        x = unwrap(x)
    return x


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite: one reduction (a sum is NaN/Inf whenever an entry
    is), and the exact test only when the sum is not finite (NaN/Inf entries or an overflow).
    Under ``torch.func.vmap`` the test covers every mapped sample (see :func:`_unwrapped`)."""
    x = _unwrapped(x)
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def check_tensor(
    x: Tensor,
    name: str,
    *,
    ndim: int | None = None,
    channels: int | None = None,
    spatial: tuple[int, int] | None = None,
    like: Tensor | None = None,
    finite: bool = True,
) -> Tensor:
    """Validate a tensor argument and return it unchanged.

    Raises:
        TypeError: ``x`` is not a dense (strided) floating tensor, or its dtype/device differ from
            ``like``.
        ValueError: wrong number of dimensions, channel count or spatial size, or NaN/Inf entries
            (with ``finite``, outside :func:`values_trusted`).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:  # sparse tensors failed later inside torch, naming nothing
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}: convert it with .to_dense()")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if like is not None:
        if x.dtype != like.dtype and not (x.is_complex() or like.is_complex()):
            raise TypeError(f"{name} has dtype {x.dtype} but the operator uses {like.dtype}")
        if x.device != like.device:
            raise TypeError(f"{name} is on {x.device} but the operator is on {like.device}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels (dim 1), got shape {tuple(x.shape)}")
    if spatial is not None and tuple(x.shape[-2:]) != tuple(spatial):
        raise ValueError(f"{name} must have spatial size {tuple(spatial)}, got shape {tuple(x.shape)}")
    if finite and not _VALUES_TRUSTED.get() and not all_finite(x):
        raise ValueError(f"{name} contains NaN or Inf entries")
    return x


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Real inner product <a, b> summed over everything (complex tensors: real part of a^H b)."""
    return (a.conj() * b).real.sum() if a.is_complex() else (a * b).sum()


def adjoint_error(physics, x: Tensor, generator: torch.Generator | None = None) -> float:
    r"""Relative dot-product test
    :math:`|\langle Ax, y\rangle - \langle x, A^*y\rangle| / (\|Ax\|\|y\| + \|x\|\|A^*y\|)`
    for a random ``y`` of the shape of :math:`Ax` (0 for an exact adjoint, up to rounding), drawn
    on ``generator``'s device (a ``torch.Generator``, else a ``TypeError`` naming it; a CPU
    generator gives the same ``y`` on every device). A zero scale (:math:`x = 0`, so both
    products are 0) gives 0."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    ax = physics.A(x)
    device = ax.device if generator is None else generator.device
    y = torch.randn(ax.shape, dtype=ax.dtype, device=device, generator=generator).to(ax.device)
    aty = physics.A_adjoint(y)
    err = (_dot(ax, y) - _dot(x, aty)).abs()
    scale = ax.norm() * y.norm() + x.norm() * aty.norm()
    return float(err / scale) if bool(scale > 0) else float(err)


def binary_exponent(tensors: Sequence[Tensor]) -> Tensor | None:
    r"""The integer :math:`e` (a tensor) with :math:`2^{e-1} \le \max |t_i| < 2^e` over the entries
    of ``tensors`` (0 when they are all 0, or the largest is not finite; ``None`` when there are no
    entries): scaling by :math:`2^{-e}`, which is exact, keeps their squares from overflowing or
    underflowing (in float32 from entries of about :math:`1.8 \cdot 10^{19}`, and below about
    :math:`10^{-19}`)."""
    peaks = [t.abs().amax() for t in tensors if t.numel()]
    return torch.frexp(torch.stack(peaks).amax())[1] if peaks else None


def scaled_norm(t: Tensor) -> Tensor:
    r"""Euclidean norm of ``t`` as :math:`2^e \|2^{-e} t\|` (:func:`binary_exponent`; ``t.norm()``
    when ``t`` is empty): in float32 the plain norm was Inf from entries of about
    :math:`1.8 \cdot 10^{19}` and 0 below about :math:`10^{-19}`."""
    exponent = binary_exponent([t])
    if exponent is None:
        return t.norm()
    return torch.ldexp(torch.ldexp(t, -exponent).norm(), exponent)


def lanczos_max(apply_normal, x0: Tensor, *, max_iter: int = 60, rtol: float = 1e-10) -> float:
    r"""Largest eigenvalue of a symmetric positive semidefinite map (e.g. :math:`A^*A`) by the
    Lanczos method with full reorthogonalisation, from ``x0``.

    The largest Ritz value converges to :math:`\lambda_{\max}` from below much faster than the
    power method when the top eigenvalues cluster; iterations stop when the residual bound
    :math:`\beta_k |s_k|` of the top Ritz pair is below :math:`\max(\text{rtol}, 100\,\varepsilon)`
    times its value, :math:`\varepsilon` the machine epsilon of ``x0``'s dtype; ``rtol`` lies in
    :math:`[0, 1)` (a bound as large as the Ritz value says nothing about it). A bound at rounding
    level also means the Krylov space is exhausted: going on would build the basis from rounding
    noise, which loses orthogonality and can lift the Ritz value above :math:`\lambda_{\max}`.
    Norms are taken after an exact scaling by a power of two (:func:`scaled_norm`), so eigenvalues
    whose vectors' squared norms leave the dtype's range are estimated too.
    """
    if not is_integer(max_iter) or max_iter < 1:  # no iteration would return 0 as the eigenvalue
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if not is_real(rtol) or not 0 <= rtol < 1:  # NaN never stops, >= 1 stops at the first Rayleigh quotient
        raise ValueError(f"rtol must be a number in [0, 1), got {rtol!r}")
    tol = max(rtol, 100 * torch.finfo(x0.dtype).eps)
    basis = [x0 / scaled_norm(x0)]
    alphas: list[float] = []
    betas: list[float] = []
    theta = 0.0
    for _ in range(max_iter):
        w = apply_normal(basis[-1])
        alphas.append(float(_dot(basis[-1], w)))
        for v in basis:  # full reorthogonalisation (twice is enough)
            w = w - _dot(v, w) * v
        for v in basis:
            w = w - _dot(v, w) * v
        beta = float(scaled_norm(w))
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            t = t + torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(t)
        theta = float(evals[-1])
        if beta * abs(float(evecs[-1, -1])) <= tol * abs(theta) or beta <= 1e-300:
            break
        betas.append(beta)
        basis.append(w / beta)
    return max(theta, 0.0)


def opnorm(
    physics,
    x_shape: tuple[int, ...] | None = None,
    *,
    dtype: torch.dtype | None = None,
    like: Tensor | None = None,
    max_iter: int = 60,
    rtol: float = 1e-10,
) -> float:
    r"""Operator norm :math:`\|A\|_2 = \lambda_{\max}(A^*A)^{1/2}` by Lanczos (:func:`lanczos_max`).

    ``x_shape`` defaults to ``physics.img_size`` prefixed by a batch of 1; ``dtype`` to the
    ``dtype`` attribute of the physics (liftinv operators have one) or else of its first submodule
    that has one (a composition of liftinv operators, deepinv's ``physics1 * physics2``), else
    that of ``like``, else torch's default; the start vector lies on the device of that module,
    else (no module has a dtype) of ``like``, else of the physics' deepinv device holder, else
    on the CPU. A physics built from plain functions (deepinv's
    ``LinearPhysics(A=..., A_adjoint=...)``) has no dtype, and its device holder (the CPU unless
    built with ``device=``) need not be where its functions compute: give the data as ``like``. The norm
    is cached, keyed by shape, dtype, ``max_iter`` and ``rtol`` (a norm computed to a looser
    tolerance is not returned for a stricter one), on a physics whose class sets ``clears_opnorm = True``
    (liftinv's operators: they call :func:`clear_opnorm` whenever :math:`A` changes, after their
    ``refresh_caches`` method, which this calls first where there is one, has seen an edit of
    their tensors); any other physics, which deepinv's ``update_parameters`` may change without
    notice, gets it recomputed.
    """
    if x_shape is None and getattr(physics, "img_size", None) is None:
        raise ValueError(f"x_shape is needed: {type(physics).__name__} has no img_size to take it from")
    shape = tuple(x_shape) if x_shape is not None else (1, *physics.img_size)
    modules = physics.modules() if isinstance(physics, torch.nn.Module) else (physics,)
    typed = next((m for m in modules if isinstance(getattr(m, "dtype", None), torch.dtype)), None)
    dtype = dtype or (typed.dtype if typed is not None else like.dtype if like is not None else torch.get_default_dtype())
    key = (shape, dtype, max_iter, rtol)
    if callable(getattr(physics, "refresh_caches", None)):
        physics.refresh_caches()
    cache = physics.__dict__.setdefault("_opnorm_cache", {}) if getattr(physics, "clears_opnorm", False) else {}
    if key not in cache:
        if typed is None and like is not None:  # the data: a physics of plain functions applies them where they are
            device = like.device
        else:
            holder = physics if typed is None else typed
            device = holder._device_holder.device if hasattr(holder, "_device_holder") else "cpu"
        g = torch.Generator(device=device).manual_seed(0)
        x0 = torch.randn(shape, dtype=dtype, device=device, generator=g)
        with torch.no_grad():
            lam = lanczos_max(lambda v: physics.A_adjoint(physics.A(v)), x0, max_iter=max_iter, rtol=rtol)
        cache[key] = lam**0.5
    return cache[key]


def empty_batch(t: object) -> bool:
    """Whether ``t`` is a tensor with an empty batch (first axis of size 0). FFTs and grouped
    convolutions refuse those, so an operator validates ``t`` (errors then quote its own shape),
    applies itself to :func:`with_zero_sample` of it instead and returns none of the result."""
    return isinstance(t, Tensor) and t.ndim > 0 and t.shape[0] == 0


def with_zero_sample(t: Tensor, dim: int = 0) -> Tensor:
    """``t`` followed by one zero sample along the batch axis (along axis ``dim``: one zero channel
    for ``dim=1``): the batch an operator applies itself to in place of an empty ``t``. The first
    ``t.shape[dim]`` entries of the result along ``dim`` (none) still depend on ``t`` in autograd's
    graph, so ``torch.autograd.grad`` of them with respect to ``t`` is an empty gradient, as for
    any other batch (a fresh zero sample would cut the graph: the result would not require grad
    and the gradient call would fail)."""
    return torch.cat((t, t.new_zeros(*t.shape[:dim], 1, *t.shape[dim + 1:])), dim)


def one_for_the_batch(t: Tensor, name: str, ndim: int, axes: tuple[str, ...]) -> Tensor:
    """``t[0, ..., 0]`` (its last ``ndim`` axes) for a ``t`` with at most ``len(axes)`` leading axes,
    named by ``axes`` (the last name for the axis next to the ``ndim`` others), along each of which
    ``t`` is constant. deepinv's generators draw parameters with a batch and a channel axis,
    ``(B, 2, H, W)`` for an MRI mask, ``(B, C, h, w)`` for a blur filter; the operators hold one for
    every sample, so a ``t`` that differs along a leading axis is refused naming that axis."""
    extra = t.ndim - ndim
    if extra > len(axes) or 0 in t.shape[: max(extra, 0)]:
        raise ValueError(
            f"{name} must have at most {len(axes)} non-empty leading axes ({', '.join(axes)}) before "
            f"the {ndim}-D {name}, got shape {tuple(t.shape)}"
        )
    for dim, axis in enumerate(axes[len(axes) - extra :]):
        if not torch.equal(t, t.narrow(dim, 0, 1).expand_as(t)):
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} differs along dim {dim}: a different {name} per "
                f"{axis} is not supported (one {ndim}-D {name} for the whole batch)"
            )
    return t[(0,) * max(extra, 0)]


#: The dtypes the operators compute in: their constructors take no other, and module
#: conversions to another (``half()``, ``bfloat16()``, ``to(torch.float16)``) are refused
#: (:func:`check_conversion`): FFTs have no bfloat16, and half precision only for power-of-two
#: sizes on a GPU, sparse products none on the CPU, MRI's complex factors no complex32.
DTYPES = (torch.float32, torch.float64)


def check_operator_dtype(dtype: object) -> None:
    """The ``dtype`` argument of an operator's constructor: a ``TypeError`` unless it is one of
    :data:`DTYPES`."""
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")


def fixed_at_construction(name: str, doc: str) -> property:
    """A property ``name`` (stored as ``_name``) that the constructor sets once and that refuses
    later assignments, with an ``AttributeError`` naming the class, the attribute and the way
    forward (a new instance): what the object builds or caches for it (system matrices, norms,
    pre-activations and Lipschitz constants of a lifted problem) would stay that of the old
    value. ``doc`` is the property's docstring."""
    key = "_" + name

    def get(self):
        return self.__dict__[key]

    def set_(self, value) -> None:
        if key in self.__dict__:
            cls = type(self).__name__
            raise AttributeError(f"{cls}'s {name} is fixed at construction (what is built for it would keep the old "
                                 f"value): build a new {cls}(..., {name}={value!r})")
        self.__dict__[key] = value

    return property(get, set_, doc=doc)


def check_conversion(physics, fn, t: Tensor | None) -> None:
    """A ``TypeError`` naming ``physics``'s class and the dtype if the module conversion ``fn`` (of
    ``nn.Module._apply``) would give its floating tensor ``t`` a dtype outside :data:`DTYPES`;
    checked on an empty tensor of ``t``'s dtype and device, before anything is converted, so a
    refused conversion leaves the operator as it was. Nothing to check while ``t`` is ``None``."""
    if t is None:
        return
    dtype = fn(torch.empty(0, dtype=t.dtype, device=t.device)).dtype
    if dtype not in DTYPES:
        raise TypeError(f"{type(physics).__name__} computes in torch.float32 or torch.float64 only, got a conversion to "
                        f"{dtype}; convert it with .float() or .double()")


def _version(obj: object) -> int | None:
    """The version counter of a tensor (``None`` for other objects, and for tensors made in
    inference mode, which have none)."""
    return obj._version if isinstance(obj, Tensor) and not obj.is_inference() else None


def _storage(obj: object):
    """A weak reference to the storage of a dense tensor (``None`` for other objects): an
    assignment to ``.data`` and a module conversion (``to``, ``float``, ``double``, which assign
    ``.data`` of parameters) give a tensor another storage and keep its version counter."""
    return weakref.ref(obj.untyped_storage()) if _dense(obj) is not None else None


def _unchanged(obj: object, version: int | None, storage) -> bool:
    """Whether ``obj`` has the version counter and storage it had when stamped."""
    return _version(obj) == version and (storage is None or storage() is obj.untyped_storage())


def _dense(obj: object) -> Tensor | None:
    """``obj`` if it is a dense (strided) tensor, else ``None``."""
    return obj if isinstance(obj, Tensor) and obj.layout == torch.strided else None


def _ref(obj: object):
    """A weak reference to ``obj``, or a strong one where ``obj`` takes no weak reference."""
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


_STALE = object()  #: stands for a stamped object that changed: no object is it


class Stamp:
    r"""Whether some objects are still the same and unchanged, without reading their values: each
    object's identity (held by a weak reference, so no object is kept alive and a new one never
    passes for a freed one) and, for a tensor, its version counter, which every in-place change
    through the tensor advances (``copy_`` by ``load_state_dict``, an edit under
    ``torch.no_grad``, ``set_``), and its storage (weakly held), which an assignment to ``.data``
    and a module conversion (``float()``, then ``double()``: rounded values) replace without
    advancing the counter. :meth:`matches` is False once one of them was replaced or changed in
    place (a tensor made in inference mode has no version counter, and an in-place edit through
    ``.data``, which has a counter of its own, advances none: only a replacement is seen then). A deep copy stamps
    the copies of the objects (a copy of a cache stays valid for the copies); a pickled stamp
    matches nothing.

    With ``keep``, the stamp also holds (strongly) the dense tensors among the objects, so that
    :meth:`same_values` can tell a tensor replaced by an equal one (deepinv's ``update_parameters``
    assigns new tensors at every call, with the same values) from a changed one."""

    def __init__(self, objects: Iterable[object], keep: bool = False):
        objects = list(objects)
        self._entries = [(_ref(obj), _version(obj), _storage(obj)) for obj in objects]
        self._kept = [_dense(obj) for obj in objects] if keep else None

    def matches(self, objects: Iterable[object]) -> bool:
        """Whether ``objects`` are, in order, the stamped objects, each unchanged since."""
        n = 0
        for obj in objects:
            if n == len(self._entries):
                return False
            ref, version, storage = self._entries[n]
            if ref() is not obj or not _unchanged(obj, version, storage):
                return False
            n += 1
        return n == len(self._entries)

    def same_values(self, objects: Iterable[object]) -> bool:
        """Whether ``objects`` are, in order, the stamped objects unchanged (as :meth:`matches`) or,
        where a dense tensor was replaced, a tensor equal to it (``torch.equal``, of its dtype,
        shape and device) while the replaced one is unchanged since the stamp. Needs a stamp made
        with ``keep`` (without, as :meth:`matches`); a tensor changed in place is a change."""
        objects = list(objects)
        if self._kept is None or len(objects) != len(self._entries):
            return self.matches(objects)
        for obj, (ref, version, storage), old in zip(objects, self._entries, self._kept):
            if ref() is obj:
                if not _unchanged(obj, version, storage):
                    return False
            elif old is None or not _unchanged(old, version, storage) or _dense(obj) is None or not (
                obj.dtype == old.dtype and obj.shape == old.shape and obj.device == old.device and torch.equal(obj, old)
            ):
                return False
        return True

    def __deepcopy__(self, memo: dict) -> Stamp:
        import copy

        new = Stamp(())
        for ref, version, storage in self._entries:
            obj = ref()
            if obj is None or not _unchanged(obj, version, storage):  # stale already: so is the copy
                new._entries.append((_ref(_STALE), None, None))
            else:
                obj = copy.deepcopy(obj, memo)
                new._entries.append((_ref(obj), _version(obj), _storage(obj)))
        if self._kept is not None:
            new._kept = [None if old is None or entry[0]() is _STALE else copy.deepcopy(old, memo)
                         for old, entry in zip(self._kept, new._entries)]
        return new

    def __reduce__(self):
        return Stamp, ((),)


def state_of(obj: object) -> list:
    """``obj`` and the tensors that define it, its parameters and buffers if it is an
    ``nn.Module`` (what a :class:`Stamp` of a physics or a network holds)."""
    tensors = [*obj.parameters(), *obj.buffers()] if isinstance(obj, torch.nn.Module) else []
    return [obj, *tensors]


def clear_opnorm(physics) -> None:
    """Forget the cached operator norms of ``physics`` (call after changing the operator)."""
    physics.__dict__.pop("_opnorm_cache", None)


class ValueCaches:
    r"""Mixin for a ``LinearPhysics`` that caches values computed from its buffers: a dict, the
    attribute named by ``_cache``, and the operator norms of :func:`opnorm`. Both are cleared
    (:meth:`_clear_caches`) when ``load_state_dict`` copies new buffers in place, when a module
    conversion (``to``, ``float``, ``double``, ...) changes the dtype of the buffer named by
    ``_dtype_buffer`` (that may round the buffers: float64 -> float32 -> float64 does; a move to
    another device keeps them, their keys hold the device), and when a buffer was replaced (an
    attribute assignment) or changed in place (an edit under ``torch.no_grad``) since they were
    filled: :meth:`refresh_caches`, which the operator calls before reading its cache and
    :func:`opnorm` before reading the norms, compares a :class:`Stamp` of the buffers. A
    conversion to a dtype outside :data:`DTYPES` is refused (:func:`check_conversion`)."""

    _cache: str
    _dtype_buffer: str

    def _clear_caches(self) -> None:
        setattr(self, self._cache, {})
        clear_opnorm(self)
        self._cache_stamp = Stamp(self.buffers())

    def refresh_caches(self) -> None:
        """Clear the caches if a buffer was replaced or changed in place since they were filled."""
        stamp = self.__dict__.get("_cache_stamp")  # None until the caches are first cleared
        if stamp is None or not stamp.matches(self.buffers()):
            self._clear_caches()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._clear_caches()

    def _apply(self, fn, recurse: bool = True):
        before = self._buffers.get(self._dtype_buffer)  # None while LinearPhysics.__init__ moves the module
        check_conversion(self, fn, before)
        if before is not None:
            self.refresh_caches()  # the caches kept below must be those of the buffers as they are
        super()._apply(fn, recurse)
        if before is not None:
            if self._buffers[self._dtype_buffer].dtype != before.dtype:
                self._clear_caches()
            else:
                self._cache_stamp = Stamp(self.buffers())  # the same values, on another device
        return self
