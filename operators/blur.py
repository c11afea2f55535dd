r"""Blur (2-D convolution) with circular, reflect, replicate or zero boundaries, exact adjoint.

The forward map is the true convolution, centred as in :class:`deepinv.physics.BlurFFT` and
:class:`deepinv.physics.Blur`: with a kernel :math:`k` of size :math:`h \times w` and centre
:math:`c = (\lfloor h/2 \rfloor, \lfloor w/2 \rfloor)`,

.. math::

    (Ax)[b, ch, i, j] = \sum_{p, q} k[p, q]\, \tilde x[b, ch, i - p + c_0, j - q + c_1],

where :math:`\tilde x` extends the image beyond its border according to ``boundary``:
``"circular"`` (periodic), ``"reflect"`` (mirror without repeating the edge, torch's
``reflect`` = scipy's ``mirror``), ``"replicate"`` (edge value, scipy's ``nearest``) or ``"zero"``.
The output has the size of the input. Writing :math:`A = K P` with :math:`P` the padding and
:math:`K` the valid convolution, the adjoint is :math:`A^* = P^* K^*`: the transposed
convolution followed by folding the padded border back onto the image.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from deepinv.physics import LinearPhysics
from deepinv.physics.noise import NoiseModel, ZeroNoise
from scipy.fft import next_fast_len
from torch import Tensor

from operators.checks import (ValueCaches, check_operator_dtype, check_tensor, empty_batch, fixed_at_construction,
                              is_integer, one_for_the_batch, with_zero_sample)

BOUNDARIES = ("circular", "reflect", "replicate", "zero")
#: Kernels with more entries than this use FFT convolution for non-circular boundaries by default.
FFT_MIN_KERNEL_AREA = 256


def _fold(z: Tensor, before: int, after: int, boundary: str, dim: int) -> Tensor:
    """Adjoint of padding ``before``/``after`` entries along ``dim`` with torch's ``F.pad`` modes."""
    n = z.shape[dim] - before - after
    out = z.narrow(dim, before, n)
    if boundary == "zero":
        return out
    out = out.clone()
    low, high = z.narrow(dim, 0, before), z.narrow(dim, before + n, after)
    if boundary == "circular":
        out.narrow(dim, n - before, before).add_(low)
        out.narrow(dim, 0, after).add_(high)
    elif boundary == "reflect":
        out.narrow(dim, 1, before).add_(low.flip(dim))
        out.narrow(dim, n - 1 - after, after).add_(high.flip(dim))
    else:  # replicate
        out.narrow(dim, 0, 1).add_(low.sum(dim, keepdim=True))
        out.narrow(dim, n - 1, 1).add_(high.sum(dim, keepdim=True))
    return out


def _check_kernel_fits(kernel: Tensor, shape: tuple[int, ...], name: str = "kernel") -> None:
    """``kernel`` ``(C_k, h, w)`` must fit in an image of shape ``(..., C, H, W)``, with ``C_k`` 1 or
    ``C``; errors call it ``name`` (the argument it was passed as)."""
    channels, height, width = shape[-3:]
    n_k, h, w = kernel.shape
    if h > height or w > width:
        raise ValueError(f"{name} of spatial size {(h, w)} is larger than the image {(height, width)}")
    if n_k not in (1, channels):
        raise ValueError(f"{name} has {n_k} channels but the image has {channels}")


class Blur(ValueCaches, LinearPhysics):
    r"""Convolution :math:`y = k * x` with a fixed kernel, as a deepinv ``LinearPhysics``.

    Args:
        kernel: real kernel of shape ``(h, w)`` shared by all channels, or ``(C, h, w)`` one per
            channel; it is copied to ``dtype``/``device``.
        img_size: optional image size ``(C, H, W)``; inputs are then checked against it and it is
            the default shape of :func:`operators.checks.opnorm`.
        boundary: one of ``"circular"``, ``"reflect"``, ``"replicate"``, ``"zero"``.
        use_fft: ``True`` convolves by FFT (on the image grid for ``"circular"``, on a padded grid
            otherwise), ``False`` by padding and direct depthwise convolution; ``None`` picks FFT
            for ``"circular"`` or when ``h * w > FFT_MIN_KERNEL_AREA``. Same result either way.
        noise_model: deepinv noise model applied by ``physics(x)``; default ``ZeroNoise``.
        dtype: real floating dtype of the operator (inputs must match).
        device: device of the operator (inputs must match).
    """

    # the cached operator norms are those of the operator with this boundary
    boundary = fixed_at_construction("boundary", "The boundary condition, fixed at construction.")

    clears_opnorm = True  #: calls clear_opnorm whenever A changes, so opnorm caches its norm
    _cache, _dtype_buffer = "_spectra", "kernel"  #: see :class:`~operators.checks.ValueCaches`

    def __init__(
        self,
        kernel: Tensor,
        *,
        img_size: tuple[int, int, int] | None = None,
        boundary: str = "circular",
        use_fft: bool | None = None,
        noise_model: NoiseModel | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        check_operator_dtype(dtype)
        if use_fft is not None and not isinstance(use_fft, bool):
            raise TypeError(f"use_fft must be a bool or None, got {use_fft!r}")
        if img_size is not None and (
            not isinstance(img_size, Sequence) or len(img_size) != 3 or any(not is_integer(n) or n < 1 for n in img_size)
        ):
            raise ValueError(f"img_size must be (C, H, W) positive integers, got {img_size!r}")
        super().__init__(
            img_size=None if img_size is None else tuple(int(n) for n in img_size),
            noise_model=ZeroNoise() if noise_model is None else noise_model,
            device=device,
        )
        self._boundary = boundary
        self._use_fft = use_fft
        self.register_buffer("kernel", torch.zeros(1, 1, 1, dtype=dtype, device=device))
        self._spectra: dict[tuple, Tensor] = {}
        self.update_parameters(kernel=kernel)

    @property
    def dtype(self) -> torch.dtype:
        """Real dtype of the operator."""
        return self.kernel.dtype

    @property
    def use_fft(self) -> bool:
        """Whether :meth:`A` and :meth:`A_adjoint` convolve by FFT (see the ``use_fft`` argument)."""
        if self._use_fft is not None:
            return self._use_fft
        h, w = self.kernel.shape[-2:]
        return self.boundary == "circular" or h * w > FFT_MIN_KERNEL_AREA

    def update_parameters(self, kernel: Tensor | None = None, filter: Tensor | None = None, **noise_params) -> None:
        """Replace the kernel (validated, copied to the operator's dtype/device and detached: no
        gradient reaches a kernel that requires one); clears the cached spectra and operator norms
        (the same kernel again keeps them). ``filter`` is deepinv's name for it, ``(B, C, h, w)``
        as its blur generators draw it, accepted when all ``B`` kernels are equal (one kernel for
        the whole batch: different kernels per sample are refused).

        ``noise_params`` are the noise model's parameters, which deepinv passes to every
        ``update_parameters`` (and, through ``physics(x, **params)``, to :meth:`A`); they are not
        used here.
        """
        if filter is not None and kernel is not None:
            raise ValueError("pass the kernel as kernel or as filter, not both")
        name, kernel = ("kernel", kernel) if filter is None else ("filter", filter)
        if kernel is None:
            return
        check_tensor(kernel, name)
        if filter is not None:
            kernel = one_for_the_batch(kernel, name, ndim=3, axes=("sample",))
        if kernel.is_complex() or kernel.ndim not in (2, 3) or min(kernel.shape) < 1:
            raise ValueError(f"{name} must be a real (h, w) or (C, h, w) tensor, got {kernel.dtype} {tuple(kernel.shape)}")
        with torch.inference_mode(False):  # a normal tensor, which later calls under autograd may save
            kernel = kernel.detach().to(dtype=self.dtype, device=self.kernel.device, copy=True)
            kernel = (kernel if kernel.ndim == 3 else kernel[None]).contiguous()
        if torch.equal(kernel, self.kernel):  # deepinv may pass its parameters at every call
            return
        if self.img_size is not None:
            _check_kernel_fits(kernel, self.img_size, name)
        self._buffers["kernel"] = kernel  # not self.kernel =, which comes back here (__setattr__)
        self._clear_caches()

    def __setattr__(self, name: str, value) -> None:
        """``op.kernel = k`` is ``op.update_parameters(kernel=k)``: validated, copied to the
        operator's dtype and device and checked against ``img_size`` as the constructor's kernel (a
        plain buffer assignment took a 2-D kernel, another dtype, which became the operator's, or a
        kernel larger than the image, which the circular FFT cropped, without a word)."""
        if name == "kernel" and "kernel" in self.__dict__.get("_buffers", {}):
            self.update_parameters(kernel=check_tensor(value, "kernel"))  # None would update nothing
        else:
            super().__setattr__(name, value)

    def check_input(self, x: Tensor, name: str) -> Tensor:
        """Return ``x`` if it is an input :meth:`A` and :meth:`A_adjoint` take (a finite real
        ``(B, C, H, W)`` tensor of the operator's dtype and device, of ``img_size`` when set, that
        the kernel fits), else raise naming it ``name``."""
        if self.img_size is None:
            check_tensor(x, name, ndim=4, like=self.kernel)
        else:
            check_tensor(x, name, ndim=4, channels=self.img_size[0], spatial=self.img_size[1:], like=self.kernel)
        _check_kernel_fits(self.kernel, tuple(x.shape))  # img_size, a plain attribute, may have changed
        if x.is_complex():
            raise TypeError(f"{name} must be real, got dtype {x.dtype}")
        return x

    def _pads(self) -> tuple[int, int, int, int]:
        """``F.pad`` widths (left, right, top, bottom): ``h - 1 - c`` before and ``c`` after."""
        h, w = self.kernel.shape[-2:]
        return (w - 1 - w // 2, w // 2, h - 1 - h // 2, h // 2)

    def _half(self) -> tuple[int, int]:
        r"""Kernel centre :math:`c = (\lfloor h/2 \rfloor, \lfloor w/2 \rfloor)`."""
        return self.kernel.shape[-2] // 2, self.kernel.shape[-1] // 2

    def _spectrum(self, grid: tuple[int, int], shift: tuple[int, int]) -> Tensor:
        r"""rfft2 of :math:`g` on ``grid`` with :math:`g[(p - s) \bmod N] = k[p]`, so that
        :math:`(g \circledast u)[i] = \sum_p k[p] u[i - p + s]`. Cached per grid/shift/dtype/device,
        computed outside inference mode (later calls under autograd save it for backward)."""
        self.refresh_caches()
        key = (grid, shift, self.kernel.dtype, self.kernel.device)
        if key not in self._spectra:
            h, w = self.kernel.shape[-2:]
            with torch.inference_mode(False):
                placed = F.pad(self.kernel, (0, grid[1] - w, 0, grid[0] - h))
                placed = torch.roll(placed, shifts=(-shift[0], -shift[1]), dims=(-2, -1))
                self._spectra[key] = torch.fft.rfft2(placed)
        return self._spectra[key]

    def _fft_grid(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """FFT grid and kernel shift: the image grid for circular, else a fast size >= H + h - 1."""
        h, w = self.kernel.shape[-2:]
        if self.boundary == "circular":
            return (height, width), self._half()
        grid = (next_fast_len(height + h - 1, real=True), next_fast_len(width + w - 1, real=True))
        # Zero boundary: rfft2's own zero extension replaces the padding, centre shift c.
        return grid, (self._half() if self.boundary == "zero" else (h - 1, w - 1))

    def _direct(self, x: Tensor, transpose: bool) -> Tensor:
        """Depthwise (transposed) valid convolution with the flipped kernel, every image and
        channel as one group of a single ``(1, B C, H, W)`` input (the fastest layout on CPU)."""
        batch, channels = x.shape[:2]
        weight = self.kernel.flip((-2, -1))[:, None]
        weight = weight.expand(batch * channels, -1, -1, -1) if len(weight) == 1 else weight.repeat(batch, 1, 1, 1)
        conv = F.conv_transpose2d if transpose else F.conv2d
        out = conv(x.reshape(1, batch * channels, *x.shape[-2:]), weight.contiguous(), groups=batch * channels)
        return out.reshape(batch, channels, *out.shape[-2:])

    def A(self, x: Tensor, **params) -> Tensor:
        r"""Blurred image :math:`k * x` of shape ``(B, C, H, W)`` (see the module formula;
        ``params``: see :meth:`update_parameters`)."""
        self.update_parameters(**params)
        self.check_input(x, "x")
        if empty_batch(x):
            return self.A(with_zero_sample(x))[:0]
        if x.shape[1] == 0:  # no channel (a 1-channel kernel fits): grouped convolutions and FFTs refuse it
            return self.A(with_zero_sample(x, 1))[:, :0]
        height, width = x.shape[-2:]
        mode = "constant" if self.boundary == "zero" else self.boundary
        if not self.use_fft:
            return self._direct(F.pad(x, self._pads(), mode=mode), transpose=False)
        grid, shift = self._fft_grid(height, width)
        if self.boundary not in ("circular", "zero"):
            x = F.pad(x, self._pads(), mode=mode)
        out = torch.fft.irfft2(torch.fft.rfft2(x, s=grid) * self._spectrum(grid, shift), s=grid)
        return out if self.boundary == "circular" else out[..., :height, :width]

    def A_adjoint(self, y: Tensor, **params) -> Tensor:
        r"""Adjoint :math:`A^* y = P^*(\bar k \star y)`: correlation with the kernel (transposed
        convolution), then the adjoint of the boundary padding (border folded back; ``params``:
        see :meth:`update_parameters`)."""
        self.update_parameters(**params)
        self.check_input(y, "y")
        if empty_batch(y):
            return self.A_adjoint(with_zero_sample(y))[:0]
        if y.shape[1] == 0:  # no channel, as in A
            return self.A_adjoint(with_zero_sample(y, 1))[:, :0]
        height, width = y.shape[-2:]
        if not self.use_fft:
            z = self._direct(y, transpose=True)
        else:
            grid, shift = self._fft_grid(height, width)
            z = torch.fft.irfft2(torch.fft.rfft2(y, s=grid) * self._spectrum(grid, shift).conj(), s=grid)
            if self.boundary in ("circular", "zero"):
                return z if self.boundary == "circular" else z[..., :height, :width]
            h, w = self.kernel.shape[-2:]
            z = z[..., : height + h - 1, : width + w - 1]
        left, right, top, bottom = self._pads()
        return _fold(_fold(z, top, bottom, self.boundary, -2), left, right, self.boundary, -1)
