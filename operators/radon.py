r"""2-D parallel-beam CT: Radon transform as a precomputed sparse matrix with its exact transpose.

Geometry (the scikit-image convention). Pixel ``(i, j)`` of an ``N x N`` image sits at
:math:`x = j - c`, :math:`y = c - i` with :math:`c = \lfloor N/2 \rfloor`; detector ``d`` of
``n_det`` sits at :math:`s = d - \lfloor n_{det}/2 \rfloor` (unit spacing); the ray of angle
:math:`\theta` (degrees) through detector ``d`` is :math:`\{x\cos\theta + y\sin\theta = s\}`.
Sinograms are ``(B, C, n_det, n_angles)``, as :func:`skimage.transform.radon` returns them.

Line integrals use Joseph's method (P. M. Joseph, IEEE TMI 1982): a ray steps through the rows
(if :math:`|\cos\theta| \ge |\sin\theta|`) or the columns, linearly interpolates the two pixels it
crosses in each, and weights the sum by the step length :math:`1/\max(|\cos\theta|, |\sin\theta|)`.
Pixels outside the image are zero. ``A_adjoint`` multiplies by the transposed matrix, so the
adjoint is exact to rounding.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import torch
from deepinv.physics import LinearPhysics
from deepinv.physics.noise import ZeroNoise
from torch import Tensor

from operators.checks import (check_conversion, check_operator_dtype, check_tensor, clear_opnorm, fixed_at_construction,
                              is_integer)

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
_CHUNK_ENTRIES = 1 << 22  # candidate matrix entries generated per construction step


def default_detectors(img_size: int, circle: bool) -> int:
    r"""Detector count of :func:`skimage.transform.radon`: :math:`N` if ``circle`` else
    :math:`\lceil\sqrt2 N\rceil` (the image diagonal)."""
    return img_size if circle else img_size + int(math.ceil(math.sqrt(2) * img_size - img_size))


def fourier_filter(size: int, name: str, *, dtype=torch.float64, device="cpu") -> Tensor:
    r"""FBP filter on the ``size``-point FFT grid, as scikit-image's ``_get_fourier_filter``.

    The ramp is the DFT of the band-limited spatial ramp (Kak & Slaney, ch. 3, eq. 61):
    :math:`h[0] = 1/4`, :math:`h[n] = -1/(\pi n)^2` for odd :math:`n` (distance to 0 modulo
    ``size``), 0 otherwise; :math:`H = 2\,\mathrm{Re}\,\mathrm{DFT}(h)`. It is multiplied by
    :math:`\sin\omega/\omega` with :math:`\omega = \pi k/\text{size}` (shepp-logan),
    ``fftshift`` of :math:`\sin(\pi m/\text{size})` (cosine) or of the symmetric Hamming/Hann
    window (hamming, hann). The even part :math:`(H[k] + H[-k])/2` is returned: scikit-image keeps
    the real part of the inverse FFT, which equals filtering a real signal with the even part.
    """
    if name not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {name!r}")
    if size < 2 or size % 2:
        raise ValueError(f"size must be an even integer >= 2, got {size}")
    n = torch.arange(size, dtype=torch.float64)
    dist = torch.minimum(n, size - n)
    odd = dist % 2 == 1
    h = torch.zeros(size, dtype=torch.float64)
    h[odd] = -1.0 / (math.pi * dist[odd]) ** 2
    h[0] = 0.25
    filt = 2 * torch.fft.fft(h).real
    if name == "shepp-logan":
        omega = math.pi * torch.fft.fftfreq(size, dtype=torch.float64)[1:]
        filt[1:] *= torch.sin(omega) / omega
    elif name == "cosine":
        filt *= torch.fft.fftshift(torch.sin(math.pi * n / size))
    elif name == "hamming":
        filt *= torch.fft.fftshift(torch.hamming_window(size, periodic=False, dtype=torch.float64))
    elif name == "hann":
        filt *= torch.fft.fftshift(torch.hann_window(size, periodic=False, dtype=torch.float64))
    even = 0.5 * (filt + torch.roll(torch.flip(filt, (0,)), 1))
    return even.to(dtype=dtype, device=device)


def _crossing(c: int, slope_s: Tensor, slope_k: Tensor, s: Tensor, k: Tensor) -> Tensor:
    """Interpolation coordinate where ray ``s`` meets step line ``k``: :math:`c + a s + b (k - c)`.

    Both matrices are built through this one expression (float64, same operation order), so their
    weights are bitwise equal and one is exactly the transpose of the other.
    """
    return c + slope_s * s + slope_k * (k - c)


def _weight(p: Tensor, tap: Tensor, step: Tensor) -> Tensor:
    """Joseph weight ``step * (1 - f)`` for ``tap == 0`` and ``step * f`` otherwise, f = p - floor(p)."""
    frac = p - torch.floor(p)
    return step * torch.where(tap == 0, 1 - frac, frac)


def _ray_slopes(angles_deg: Tensor, device) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per angle: ``rowstep`` (:math:`|\cos\theta| \ge |\sin\theta|`) and the slopes ``a, b`` of
    :func:`_crossing`: :math:`(1/\cos\theta, \tan\theta)` or :math:`(-1/\sin\theta, \cot\theta)`."""
    theta = torch.deg2rad(angles_deg.to(device=device, dtype=torch.float64))
    cos, sin = torch.cos(theta), torch.sin(theta)
    rowstep = cos.abs() >= sin.abs()
    return rowstep, torch.where(rowstep, 1 / cos, -1 / sin), torch.where(rowstep, sin / cos, cos / sin)


def _csr(counts: Tensor, cols: list[Tensor], vals: list[Tensor], shape: tuple[int, int]) -> Tensor:
    """CSR tensor from per-row entry counts and the entries in row-major, column-sorted order."""
    values = torch.cat(vals)
    index_dtype = torch.int32 if max(values.numel(), *shape) < 2**31 - 1 else torch.int64
    crow = torch.zeros(shape[0] + 1, dtype=index_dtype, device=values.device)
    crow[1:] = torch.cumsum(counts, 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow, torch.cat(cols).to(index_dtype), values, size=shape, check_invariants=False
        )


def _append_kept(keep: Tensor, col: Tensor, w: Tensor, cols: list, vals: list, counts: list, dtype) -> None:
    """Append the kept entries (last two dimensions: the entries of one matrix row) of a chunk."""
    idx = torch.nonzero(keep.flatten()).flatten()
    cols.append(col.expand_as(keep).flatten()[idx])
    vals.append(w.flatten()[idx].to(dtype))
    counts.append(keep.sum((-2, -1)).flatten())


def joseph_matrices(
    img_size: int, angles_deg: Tensor, n_det: int, circle: bool, *, dtype=torch.float32, device="cpu"
) -> tuple[Tensor, Tensor]:
    r"""Joseph system matrix :math:`M` and its transpose, both sparse CSR with sorted indices.

    Rays are indexed ``a * n_det + d``. A row-stepping ray (:math:`|\cos\theta| \ge |\sin\theta|`)
    meets image row ``k`` at column :math:`p = c + s/\cos\theta + (k - c)\tan\theta`; a
    column-stepping ray meets column ``k`` at row :math:`p = c - s/\sin\theta + (k - c)\cot\theta`.
    The ray gets :math:`w(1 - f)` from pixel :math:`\lfloor p\rfloor` and :math:`w f` from
    :math:`\lfloor p\rfloor + 1` of that line, :math:`f = p - \lfloor p\rfloor`,
    :math:`w = 1/\max(|\cos\theta|, |\sin\theta|)`; with ``circle`` only pixels with
    :math:`(i-c)^2 + (j-c)^2 \le c^2` count. :math:`M` acts on
    :math:`[\mathrm{vec}(x); \mathrm{vec}(x^\top)]` (shape ``(n_angles * n_det, 2 N^2)``):
    row-stepping rays read :math:`x` and column-stepping rays read :math:`x^\top`, both at index
    ``k * N + q``, so every row of :math:`M` and of :math:`M^\top` is generated already sorted.
    """
    n, n_ang, c = img_size, angles_deg.numel(), img_size // 2
    rowstep, slope_s, slope_k = _ray_slopes(angles_deg, device)
    steps = slope_s.abs()
    line = torch.arange(n, device=device, dtype=torch.float64)
    taps = torch.arange(2, device=device)
    s_all = torch.arange(n_det, device=device, dtype=torch.float64) - n_det // 2

    cols, vals, counts = [], [], []  # M: chunks of angles, entries ordered (a, d, k, tap)
    k = line.int()[:, None]
    per_chunk = max(1, _CHUNK_ENTRIES // (2 * n * n_det))
    for a0 in range(0, n_ang, per_chunk):
        a = torch.arange(a0, min(a0 + per_chunk, n_ang), device=device)[:, None, None]
        p = _crossing(c, slope_s[a], slope_k[a], s_all[:, None], line)[..., None]  # (A, D, N, 1)
        q = torch.floor(p).int() + taps
        w = _weight(p, taps, steps[a][..., None])
        keep = (q >= 0) & (q < n) & (w > 0)
        if circle:
            keep &= (k - c) ** 2 + (q - c) ** 2 <= c * c
        offset = torch.where(rowstep[a], 0, n * n)[..., None].int()
        _append_kept(keep, offset + k * n + q, w, cols, vals, counts, dtype)
    forward = _csr(torch.cat(counts), cols, vals, (n_ang * n_det, 2 * n * n))

    cols, vals, counts = [], [], []  # M^T: pixels (k, q) of x, then of x^T; entries ordered (a, d)
    shift = torch.arange(-1, 2, device=device, dtype=torch.float64)
    q = line[:, None, None]  # (N, 1, 1)
    for group in (rowstep, ~rowstep):
        a = torch.nonzero(group).flatten()
        sl_s, sl_k = slope_s[a][:, None], slope_k[a][:, None]  # (A, 1)
        per_chunk = max(1, _CHUNK_ENTRIES // (3 * n * max(1, a.numel())))
        for k0 in range(0, n, per_chunk):
            k = line[k0 : k0 + per_chunk, None, None, None]  # (K, 1, 1, 1)
            s = torch.round((q - c - sl_k * (k - c)) / sl_s) + shift  # (K, N, A, 3): rays near (k, q)
            p = _crossing(c, sl_s, sl_k, s, k)
            tap = q.int() - torch.floor(p).int()
            w = _weight(p, tap, steps[a][:, None])
            d = s.int() + n_det // 2
            keep = ((tap == 0) | (tap == 1)) & (d >= 0) & (d < n_det) & (w > 0)
            if circle:
                keep &= (k - c) ** 2 + (q - c) ** 2 <= c * c
            _append_kept(keep, a[:, None].int() * n_det + d, w, cols, vals, counts, dtype)
    transpose = _csr(torch.cat(counts), cols, vals, (2 * n * n, n_ang * n_det))
    return forward, transpose


@dataclass(frozen=True)
class _Pair:
    """A sparse matrix and its transpose. Not a tensor, so that ``torch.func`` transforms, which
    wrap every tensor argument (sparse CSR tensors cannot be wrapped), pass it through as it is."""

    mat: Tensor
    mat_t: Tensor

    @property
    def T(self) -> _Pair:
        return _Pair(self.mat_t, self.mat)


class _SparseMatmul(torch.autograd.Function):
    """``pair.mat @ x`` for dense 2-D ``x``; the backward multiplies by ``pair.mat_t``. Written for
    ``torch.func`` too: the map is linear, so its JVP applies the same matrix, and under ``vmap``
    the mapped axis joins the columns of ``x``."""

    @staticmethod
    def forward(x: Tensor, pair: _Pair) -> Tensor:
        return pair.mat @ x

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.pair = inputs[1]

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _SparseMatmul.apply(grad, ctx.pair.T), None

    @staticmethod
    def jvp(ctx, dx: Tensor, _) -> Tensor:
        return _SparseMatmul.apply(dx, ctx.pair)

    @staticmethod
    def vmap(info, in_dims, x: Tensor, pair: _Pair):
        columns = x.movedim(in_dims[0], 1)  # (rows, V, cols)
        out = _SparseMatmul.apply(columns.reshape(columns.shape[0], -1), pair)
        return out.reshape(out.shape[0], *columns.shape[1:]), 1


def uniform_angles(count: int) -> Tensor:
    r"""``count`` angles in degrees uniform on :math:`[0, 180)` without the endpoint,
    :math:`180 k / \text{count}`, float64 on the CPU (the geometry of ``Radon(n, count)``)."""
    return torch.arange(count, dtype=torch.float64) * (180.0 / count)


def _parse_angles(angles) -> Tensor:
    """Angles in degrees as a float64 CPU tensor (a copy: the caller may change theirs), validated."""
    if not (is_integer(angles) or isinstance(angles, Tensor)):
        raise TypeError(f"angles must be an int or a 1-D tensor of degrees, got {type(angles).__name__}")
    if is_integer(angles):
        angles = int(angles)
        if angles < 1:
            raise ValueError(f"angles must be >= 1, got {angles}")
        return uniform_angles(angles)
    if angles.layout != torch.strided:
        raise TypeError(f"angles must be a dense (strided) tensor, got layout {angles.layout}: convert it with "
                        ".to_dense()")
    if angles.ndim != 1 or angles.numel() == 0:
        raise ValueError(f"angles must be a non-empty 1-D tensor, got shape {tuple(angles.shape)}")
    if angles.is_complex() or angles.dtype == torch.bool:
        raise TypeError(f"angles must be real, got dtype {angles.dtype}")
    angles = angles.detach().to("cpu", torch.float64, copy=True)
    if not bool(torch.isfinite(angles).all()):
        raise ValueError(f"angles must be finite, got {angles.tolist()}")
    return angles


class Radon(LinearPhysics):
    r"""Parallel-beam Radon transform :math:`A` with exact adjoint and filtered back-projection.

    :math:`(Ax)[d, a] = \sum_{\text{pixels}} W_{(d,a),(i,j)}\, x[i, j]` with Joseph's weights (see
    :func:`joseph_matrices`); :math:`A^\top` is the transposed matrix (ray-driven back-projection).
    The forward model matches :func:`skimage.transform.radon` with the same ``circle`` flag up to
    interpolation (both approximate line integrals with unit pixel spacing).

    Args:
        img_size: side ``N`` of the square ``N x N`` images.
        angles: number of angles, uniform on :math:`[0, 180)` degrees without the endpoint, or a
            1-D tensor of angles in degrees (sparse- or limited-angle geometries).
        n_detectors: detector count; default as scikit-image, ``N`` if ``circle`` else
            :math:`\lceil\sqrt2 N\rceil`.
        circle: the object is zero outside the inscribed disc :math:`(i-c)^2 + (j-c)^2 \le c^2`,
            :math:`c = \lfloor N/2\rfloor`: :math:`A` ignores pixels outside it and :math:`A^\top`
            returns zero there.
        noise_model: deepinv noise model applied by ``physics(x)`` (default ``ZeroNoise``).
        dtype: ``torch.float32`` or ``torch.float64``.
        device: where the system matrices live; inputs must be on the same device.
    """

    # the system matrices, FBP filters and cached norms are built for the constructor's geometry
    n = fixed_at_construction("n", "Side ``N`` of the ``N x N`` images, fixed at construction.")
    n_detectors = fixed_at_construction("n_detectors", "Detector count, fixed at construction.")
    circle = fixed_at_construction("circle", "Whether the object is supported on the inscribed disc, fixed at "
                                             "construction.")

    clears_opnorm = True  #: calls clear_opnorm whenever A changes, so opnorm caches its norm

    def __init__(
        self,
        img_size: int,
        angles: int | Tensor = 180,
        *,
        n_detectors: int | None = None,
        circle: bool = False,
        noise_model=None,
        dtype=torch.float32,
        device="cpu",
    ):
        if not is_integer(img_size):
            raise TypeError(f"img_size must be an int, got {type(img_size).__name__}")
        img_size = int(img_size)
        if img_size < 2:
            raise ValueError(f"img_size must be >= 2, got {img_size}")
        if not isinstance(circle, bool):
            raise TypeError(f"circle must be a bool, got {type(circle).__name__}")
        if n_detectors is None:
            n_detectors = default_detectors(img_size, circle)
        elif not is_integer(n_detectors):
            raise TypeError(f"n_detectors must be an int or None, got {type(n_detectors).__name__}")
        elif n_detectors < 1:
            raise ValueError(f"n_detectors must be >= 1, got {n_detectors}")
        else:
            n_detectors = int(n_detectors)
        check_operator_dtype(dtype)
        angles = _parse_angles(angles)
        super().__init__(
            img_size=(1, img_size, img_size),
            noise_model=ZeroNoise() if noise_model is None else noise_model,
            device=device,
        )
        self._n, self._n_detectors, self._circle = img_size, n_detectors, circle
        self._set_angles(angles, dtype, device)

    def _set_angles(self, angles: Tensor, dtype, device) -> None:
        """Angles (degrees, parsed) and the system matrices built for them."""
        self.register_buffer("_angles", angles.to(device), persistent=False)
        matrix, transpose = joseph_matrices(self.n, angles, self.n_detectors, self.circle, dtype=dtype, device=device)
        self.register_buffer("_matrix", matrix, persistent=False)
        self.register_buffer("_matrix_t", transpose, persistent=False)
        self._filters: dict = {}
        clear_opnorm(self)

    def update_parameters(self, angles: int | Tensor | None = None, **noise_params) -> None:
        """Replace the angles (a count or degrees, as in the constructor) and rebuild the system
        matrices; the sinogram shape follows. The same angles again keep the matrices (deepinv may
        pass its parameters at every call).

        ``noise_params`` are the noise model's parameters, which deepinv passes to every
        ``update_parameters`` (and, through ``physics(x, **params)``, to :meth:`A`); they are
        not used here.
        """
        if angles is not None:
            angles = _parse_angles(angles)
            if not torch.equal(angles.to(self._angles), self._angles):
                self._set_angles(angles, self.dtype, self._matrix.device)

    def get_extra_state(self) -> dict:
        """The geometry, which ``state_dict`` holds (the system matrices built from it are not
        saved): ``n``, ``n_detectors``, ``circle`` and ``angles`` (float64 degrees)."""
        return {"n": self.n, "n_detectors": self.n_detectors, "circle": self.circle, "angles": self.angles}

    def set_extra_state(self, state: dict) -> None:
        """Take the angles of a loaded geometry (:meth:`update_parameters`); one of another ``n``,
        ``n_detectors`` or ``circle``, fixed at construction, is refused naming them."""
        keys = ("n", "n_detectors", "circle", "angles")
        if not isinstance(state, dict) or any(k not in state for k in keys):
            raise ValueError(f"a Radon's extra state must be its geometry, a dict with {keys}, got {state!r}")
        differ = [f"{k}={state[k]!r} (this Radon's {getattr(self, k)!r})" for k in keys[:3] if state[k] != getattr(self, k)]
        if differ:
            raise ValueError(f"the state is of a Radon with {', '.join(differ)}, which are fixed at construction: "
                             "build a Radon of that geometry")
        self.update_parameters(angles=state["angles"])

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        state_dict.setdefault(prefix + "_extra_state", self.get_extra_state())  # a state without the geometry keeps it
        super()._load_from_state_dict(state_dict, prefix, *args)

    def __deepcopy__(self, memo: dict) -> Radon:
        """A deep copy (as deepinv's ``clone``): sparse CSR matrices cannot be deep-copied by
        ``copy.deepcopy``, so they are cloned, and recorded in ``memo`` as the copies of the
        originals for whatever else the copy reaches holds them (a ``Stamp`` of the operator's
        buffers, as a network that checks its physics keeps)."""
        sparse = {name: self._buffers[name] for name in ("_matrix", "_matrix_t")}
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        clones = {name: m.clone() for name, m in sparse.items()}
        memo.update({id(m): clones[name] for name, m in sparse.items()})
        state = dict(self.__dict__, _buffers={k: v for k, v in self._buffers.items() if k not in sparse})
        new.__dict__.update(copy.deepcopy(state, memo))
        new._buffers.update(clones)
        return new

    def _apply(self, fn, recurse: bool = True) -> Radon:
        """Module conversions (``to``, ``float``, ``double``, ``cuda``) convert the system
        matrices; the angles, the float64 record of the geometry, only follow their device (with
        the matrices' dtype, ``net.float()`` of a float32 operator rounded them, and its spec
        described another geometry). A change of dtype may round the matrices (float64 -> float32
        -> float64 does): the operator norms cached for them as they were are cleared. A
        conversion to a dtype outside :data:`~operators.checks.DTYPES` (``half``) is refused
        (:func:`~operators.checks.check_conversion`)."""
        angles = self._buffers.get("_angles")  # None while LinearPhysics.__init__ moves the module
        check_conversion(self, fn, self._buffers.get("_matrix"))
        dtype = None if angles is None else self.dtype
        super()._apply(fn, recurse)
        if angles is not None:
            self._angles = angles.to(self._matrix.device)
            if self.dtype != dtype:
                clear_opnorm(self)
        return self

    @property
    def angles(self) -> Tensor:
        """The angles in degrees (float64), a copy: the system matrices are built for them, so the
        geometry changes only by :meth:`update_parameters` (an edit of the tensor the operator held
        changed its spec and sinogram shape and kept the matrices)."""
        return self._angles.clone()

    @angles.setter
    def angles(self, value) -> None:
        raise AttributeError("Radon's angles are set by update_parameters(angles=...), which rebuilds the system matrices")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the operator (of its system matrices)."""
        return self._matrix.dtype

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(n_detectors, n_angles)``: the last two dimensions of a sinogram."""
        return self.n_detectors, self._angles.numel()

    def _check(self, t: Tensor, name: str, spatial: tuple[int, int]) -> Tensor:
        check_tensor(t, name, ndim=4, spatial=spatial, like=self._matrix)
        if t.is_complex():
            raise TypeError(f"{name} must be real, got dtype {t.dtype}")
        return t

    def _forward(self, x: Tensor) -> Tensor:
        """Unchecked :math:`Ax`: ``M [vec(x); vec(x^T)]`` with batch*channels as dense columns."""
        b, ch, n, _ = x.shape
        flat = x.reshape(b * ch, n, n)
        stacked = torch.stack((flat, flat.transpose(-1, -2)), 1).reshape(b * ch, 2 * n * n)
        rays = _SparseMatmul.apply(stacked.T, _Pair(self._matrix, self._matrix_t))  # (n_ang * n_det, BC)
        return rays.T.reshape(b, ch, self._angles.numel(), self.n_detectors).transpose(-1, -2).contiguous()

    def _backward(self, rays: Tensor) -> Tensor:
        r"""Unchecked :math:`A^\top y` of ``rays`` = ``y`` in ray order ``(B, C, n_angles, n_detectors)``;
        the two halves of ``M^T y`` are the contributions to :math:`x` and to :math:`x^\top`."""
        b, ch, n = rays.shape[0], rays.shape[1], self.n
        columns = rays.reshape(b * ch, rays.shape[-2] * rays.shape[-1]).T  # not -1: b * ch may be 0
        both = _SparseMatmul.apply(columns, _Pair(self._matrix_t, self._matrix)).T.reshape(b, ch, 2, n, n)
        return both[:, :, 0] + both[:, :, 1].transpose(-1, -2)

    def A(self, x: Tensor, **params) -> Tensor:
        r"""Sinogram :math:`Ax` of shape ``(B, C, n_detectors, n_angles)`` of ``x`` ``(B, C, N, N)``
        (``params``: see :meth:`update_parameters`)."""
        self.update_parameters(**params)
        return self._forward(self._check(x, "x", (self.n, self.n)))

    def A_adjoint(self, y: Tensor, **params) -> Tensor:
        r"""Back-projection :math:`A^\top y` (exact transpose of :meth:`A`) of shape ``(B, C, N, N)``
        (``params``: see :meth:`update_parameters`)."""
        self.update_parameters(**params)
        return self._backward(self._check(y, "y", self.sinogram_shape).transpose(-1, -2))

    def _filter_matrix(self, name: str) -> Tensor:
        r"""Cached symmetric Toeplitz matrix :math:`\frac{\pi}{2 n_{angles}} F`,
        :math:`F_{ij} = h[(i - j) \bmod P]` with :math:`h` the inverse DFT of :func:`fourier_filter`
        (see :meth:`fbp` for :math:`P`), on this operator's dtype and device, computed outside
        inference mode (later calls under autograd save it for backward)."""
        key = (name, self.dtype, self._matrix.device)
        if key not in self._filters:
            m = math.ceil(math.sqrt(2) * self.n_detectors) if self.circle else self.n_detectors
            size = max(64, 2 ** math.ceil(math.log2(2 * m)))
            with torch.inference_mode(False):
                kernel = torch.fft.irfft(fourier_filter(size, name)[: size // 2 + 1], n=size)
                i = torch.arange(self.n_detectors)
                toeplitz = kernel[(i[:, None] - i[None, :]) % size] * (math.pi / (2 * self._angles.numel()))
                self._filters[key] = toeplitz.to(dtype=self.dtype, device=self._matrix.device)
        return self._filters[key]

    def fbp(self, y: Tensor, filter: str = "ramp") -> Tensor:
        r"""Filtered back-projection :math:`\frac{\pi}{2 n_{angles}} A^\top (h * y)`, as
        :func:`skimage.transform.iradon`.

        Each projection (column of ``y``) is zero-padded to
        :math:`P = \max(64, 2^{\lceil\log_2 2m\rceil})` samples, :math:`m` = ``n_detectors``
        (:math:`\lceil\sqrt2\, n_{det}\rceil` with ``circle``, as scikit-image pads circle
        sinograms), multiplied by :func:`fourier_filter` in the Fourier domain and cropped back.
        As :math:`P \ge 2 n_{det}` this circular convolution is the product with the Toeplitz
        matrix :math:`F_{ij} = h[(i - j) \bmod P]`, :math:`h` = inverse DFT of the filter, which is
        how it is computed (one matrix product, the matrix cached per filter).

        Args:
            y: sinogram ``(B, C, n_detectors, n_angles)``.
            filter: one of ``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"``, ``"hann"``.
        """
        if filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
        self._check(y, "y", self.sinogram_shape)
        return self._backward(torch.matmul(y.transpose(-1, -2), self._filter_matrix(filter)))
