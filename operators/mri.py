r"""Single- and multi-coil Cartesian MRI :math:`y_n = M F (S_n x)` with exact adjoint.

:math:`F` is the orthonormal centred 2-D DFT of deepinv's ``MRIMixin.fft``,
:math:`F x = \operatorname{fftshift}(\operatorname{fft2}(\operatorname{ifftshift}(x)))`,
:math:`M` multiplies by a real ``(H, W)`` mask and :math:`S_n` by the complex sensitivity map of
coil :math:`n` (single coil: :math:`S = 1`). The adjoint is
:math:`A^* y = \sum_n \bar S_n F^{-1}(M y_n)` (:math:`F` is unitary).

The shifts are applied as diagonal phase factors instead of copies: with :math:`s = \lfloor N/2 \rfloor`
per axis, :math:`F x = D_{\text{out}} \operatorname{fft2}(D_{\text{in}} x)` where
:math:`D_{\text{in}}[i] = e^{2\pi i s (i - s)/N}` and :math:`D_{\text{out}}[k] = e^{2\pi i k s/N}`
(separable over the two axes).

Representations (the output uses the input's): real ``(B, 2, H, W)`` (real, imaginary channels),
complex ``(B, 1, H, W)`` or complex ``(B, H, W)``. Measurements have the same layout with a coil
axis after the channel axis for multi-coil data: ``(B, 2, N, H, W)`` as deepinv's
``MultiCoilMRI``, complex ``(B, 1, N, H, W)`` or ``(B, N, H, W)``.
"""
from __future__ import annotations

import math

import torch
from deepinv.physics import LinearPhysics
from deepinv.physics.noise import NoiseModel, ZeroNoise
from torch import Tensor

from operators.checks import (ValueCaches, check_operator_dtype, check_tensor, empty_batch, one_for_the_batch,
                              with_zero_sample)

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _centring_phases(n: int) -> tuple[Tensor, Tensor]:
    r"""1-D factors :math:`(D_\text{in}, D_\text{out})` in complex128 with
    :math:`\operatorname{fftshift}(\operatorname{fft}(\operatorname{ifftshift}(x))) = D_\text{out}\operatorname{fft}(D_\text{in} x)`;
    exponents are reduced modulo ``n`` so that even sizes give real parts of exactly +-1."""
    s, idx = n // 2, torch.arange(n, dtype=torch.int64)

    def phase(m: Tensor) -> Tensor:
        angle = (2 * math.pi / n) * torch.remainder(m, n).to(torch.float64)
        return torch.polar(torch.ones_like(angle), angle)

    return phase(s * (idx - s)), phase(s * idx)


class MRI(ValueCaches, LinearPhysics):
    r"""Cartesian MRI :math:`y_n = M F (S_n x)` as a deepinv ``LinearPhysics`` (see module docstring).

    Args:
        mask: real ``(H, W)`` sampling mask (bool or float, usually 0/1) in centred k-space, or
            deepinv's ``(C, H, W)`` / ``(B, C, H, W)`` layout of one (see :meth:`update_parameters`).
        coil_maps: complex ``(N, H, W)`` sensitivity maps, or ``(B, N, H, W)`` as deepinv's (see
            :meth:`update_parameters`); ``None`` for single-coil data.
        noise_model: deepinv noise model; ``physics(x)`` returns :math:`1_{M \ne 0} \odot N(Ax)`
            (noise only on sampled k-space entries; deepinv's MRI operators' :math:`M \odot N(Ax)`
            for a 0/1 mask).
        dtype: real floating dtype; complex inputs must have the matching complex dtype.
        device: device of the operator (inputs must match).
    """

    clears_opnorm = True  #: calls clear_opnorm whenever A changes, so opnorm caches its norm
    _cache, _dtype_buffer = "_factors", "mask"  #: see :class:`~operators.checks.ValueCaches`

    def __init__(
        self,
        mask: Tensor,
        *,
        coil_maps: Tensor | None = None,
        noise_model: NoiseModel | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        check_operator_dtype(dtype)
        super().__init__(noise_model=ZeroNoise() if noise_model is None else noise_model, device=device)
        self.register_buffer("mask", torch.zeros((), dtype=dtype, device=device))
        self.register_buffer("coil_maps", None)
        self.update_parameters(mask=mask, coil_maps=coil_maps)

    @property
    def dtype(self) -> torch.dtype:
        """Real dtype of the operator."""
        return self.mask.dtype

    @property
    def n_coils(self) -> int | None:
        """Number of coils, ``None`` for the single-coil operator."""
        return None if self.coil_maps is None else self.coil_maps.shape[0]

    def update_parameters(self, mask: Tensor | None = None, coil_maps: Tensor | None = None, **noise_params) -> None:
        """Replace the mask and/or coil maps (validated, copied to the operator's dtype/device and
        detached: no gradient reaches them; the same mask, or the same mask and coil maps, again
        keep the cached factors and operator norms).

        The mask is ``(H, W)``, or ``(C, H, W)`` or ``(B, C, H, W)`` as deepinv's MRI takes it
        (``C``: the real and imaginary channels, 2 or 1; deepinv's mask generators draw
        ``(B, 2, H, W)`` for ``img_size = (2, H, W)``), accepted when it is one mask for the whole
        batch: equal along ``B`` and ``C`` (different masks per sample or per channel are refused).
        The coil maps are ``(N, H, W)``, or ``(B, N, H, W)`` as deepinv's ``MultiCoilMRI`` and its
        data sets give them, accepted when equal along ``B``. Both are validated before either is
        replaced: a refused update changes nothing.

        ``noise_params`` are the noise model's parameters, which deepinv passes to every
        ``update_parameters`` (and, through ``physics(x, **params)``, to :meth:`A`); they are not
        used here.
        """
        if mask is None and coil_maps is None:
            return
        if mask is None:
            mask = self.mask
        else:
            if not isinstance(mask, Tensor) or not (mask.dtype == torch.bool or mask.is_floating_point()):
                raise TypeError(f"mask must be a bool or real floating tensor, got {getattr(mask, 'dtype', type(mask))}")
            with torch.inference_mode(False):  # a normal tensor, which later calls under autograd may save
                mask = check_tensor(mask.detach().to(dtype=self.dtype, device=self.mask.device), "mask")
                mask = one_for_the_batch(mask, "mask", ndim=2, axes=("sample", "real/imaginary channel")).clone()
            check_tensor(mask, "mask", ndim=2, finite=False)
            if mask.numel() == 0:
                raise ValueError(f"mask must be non-empty, got shape {tuple(mask.shape)}")
            if coil_maps is None and torch.equal(mask, self.mask):  # deepinv may pass its parameters at every call
                return
        if coil_maps is not None:
            coil_maps = one_for_the_batch(check_tensor(coil_maps, "coil_maps"), "coil_maps", ndim=3, axes=("sample",))
            check_tensor(coil_maps, "coil_maps", ndim=3, spatial=tuple(mask.shape), finite=False)
            if not coil_maps.is_complex():
                raise TypeError(f"coil_maps must be a complex tensor, got dtype {coil_maps.dtype}")
            if len(coil_maps) == 0:
                raise ValueError(f"coil_maps must hold at least one coil, got shape {tuple(coil_maps.shape)}")
            with torch.inference_mode(False):
                maps = coil_maps.detach().to(dtype=_COMPLEX[self.dtype], device=self.mask.device, copy=True)
                maps = torch.view_as_real(maps)
            if self.coil_maps is not None and torch.equal(maps, self.coil_maps) and torch.equal(mask, self.mask):
                return  # deepinv may pass its parameters at every call
            self._buffers["coil_maps"] = maps  # not self.coil_maps = (__setattr__)
        elif self.coil_maps is not None and mask.shape != self.coil_maps.shape[1:3]:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not match the coil maps {tuple(self.coil_maps.shape[:3])}")
        self._buffers["mask"] = mask  # not self.mask =, which comes back here (__setattr__)
        self.img_size = (2, *self.mask.shape)
        self._clear_caches()

    def __setattr__(self, name: str, value) -> None:
        """``op.mask = m`` is ``op.update_parameters(mask=m)``: validated, copied to the operator's
        dtype and device, checked against the coil maps and followed by ``img_size`` (a plain buffer
        assignment took a bool mask, which became the operator's dtype, or a mask of another shape,
        which ``img_size`` and the coil maps did not follow, without a word).

        ``op.coil_maps = S`` is ``op.update_parameters(coil_maps=S)`` as well, where ``S`` may also
        be the buffer's own layout, the real view ``(..., N, H, W, 2)`` of complex maps (what
        ``state_dict`` holds and ``load_state_dict(..., assign=True)`` assigns); ``None`` makes the
        operator single-coil. (A plain buffer assignment took complex maps, maps of another size or
        real maps, and ``A`` failed later in ``view_as_complex``, naming none of them; a real view
        of another dtype was not converted.)"""
        buffers = self.__dict__.get("_buffers", {})
        if name == "mask" and "mask" in buffers:
            if value is None:  # would update nothing
                raise TypeError("mask must be a bool or real floating tensor, got None")
            self.update_parameters(mask=value)
        elif name == "coil_maps" and "coil_maps" in buffers and value is not None:
            if isinstance(value, Tensor) and value.is_floating_point() and value.ndim > 0 and value.shape[-1] == 2:
                value = torch.view_as_complex(value.detach().to(self.dtype).contiguous())  # the stored real view
            self.update_parameters(coil_maps=value)
        else:
            super().__setattr__(name, value)

    def _phases(self) -> tuple[Tensor, Tensor]:
        r"""``(D_in S_n or D_in, M D_out)`` in the operator's complex dtype, cached per dtype/device,
        computed outside inference mode (later calls under autograd save them for backward)."""
        self.refresh_caches()
        key = (self.mask.dtype, self.mask.device)
        if key not in self._factors:
            (in_h, out_h), (in_w, out_w) = (_centring_phases(n) for n in self.mask.shape)
            cdtype, device = _COMPLEX[self.mask.dtype], self.mask.device
            with torch.inference_mode(False):
                d_in = (in_h[:, None] * in_w[None, :]).to(cdtype).to(device)
                if self.coil_maps is not None:
                    d_in = torch.view_as_complex(self.coil_maps) * d_in
                m_out = (out_h[:, None] * out_w[None, :]).to(cdtype).to(device) * self.mask
            self._factors[key] = (d_in, m_out)
        return self._factors[key]

    def _to_complex(self, t: Tensor, name: str, coil_axis: bool) -> tuple[Tensor, str]:
        """Validate ``t`` and return its complex core ``(B, [N,] H, W)`` and its representation."""
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        core_ndim = 4 if coil_axis else 3
        if t.is_complex() and t.ndim == core_ndim:
            rep, channels = "complex", None
        else:
            rep, channels = ("complex1", 1) if t.is_complex() else ("real", 2)
        check_tensor(t, name, ndim=core_ndim + (rep != "complex"), channels=channels, spatial=tuple(self.mask.shape), like=self.mask)
        if t.is_complex() and t.dtype != _COMPLEX[self.dtype]:
            raise TypeError(f"{name} has dtype {t.dtype} but the operator uses {_COMPLEX[self.dtype]}")
        if coil_axis and t.shape[-3] != self.n_coils:
            raise ValueError(f"{name} must have {self.n_coils} coils (dim -3), got shape {tuple(t.shape)}")
        if rep == "real":
            return torch.complex(t[:, 0], t[:, 1]), rep
        return (t[:, 0] if rep == "complex1" else t), rep

    @staticmethod
    def _from_complex(z: Tensor, rep: str) -> Tensor:
        """Complex core ``(B, [N,] H, W)`` back to the representation ``rep``: the real layout is a
        contiguous copy (as deepinv's: ``.view`` works on it), the complex ones are views."""
        if rep == "real":
            return torch.view_as_real(z).movedim(-1, 1).contiguous()
        return z.unsqueeze(1) if rep == "complex1" else z

    def A(self, x: Tensor, **params) -> Tensor:
        r"""k-space data :math:`M F (S_n x)` in the representation of ``x`` (see module docstring;
        ``params``: see :meth:`update_parameters`)."""
        self.update_parameters(**params)
        z, rep = self._to_complex(x, "x", coil_axis=False)
        if empty_batch(x):
            return self.A(with_zero_sample(x))[:0]
        d_in, m_out = self._phases()
        if self.coil_maps is not None:
            z = z[:, None]
        return self._from_complex(torch.fft.fft2(z * d_in, norm="ortho").mul_(m_out), rep)

    def A_adjoint(self, y: Tensor, **params) -> Tensor:
        r"""Image :math:`\sum_n \bar S_n F^{-1}(M y_n)` in the representation of ``y`` (``params``:
        see :meth:`update_parameters`)."""
        self.update_parameters(**params)
        z, rep = self._to_complex(y, "y", coil_axis=self.coil_maps is not None)
        if empty_batch(y):
            return self.A_adjoint(with_zero_sample(y))[:0]
        d_in, m_out = self._phases()
        x = torch.fft.ifft2(z * m_out.conj(), norm="ortho").mul_(d_in.conj())
        return self._from_complex(x if self.coil_maps is None else x.sum(1), rep)

    def noise(self, y: Tensor, **params) -> Tensor:
        r""":math:`1_{M \ne 0} \odot N(y)`: noise only on the sampled k-space entries, where the
        measurement is kept at its scale (deepinv's :math:`M \odot N(y)` for a 0/1 mask; for a
        weighted mask that would scale :math:`y = Ax` by :math:`M` once more, so that even
        ``ZeroNoise`` gave :math:`M^2 F S x \ne Ax`). Complex data get it on their real and
        imaginary parts as the real layout does (a complex draw would split the variance between
        them)."""
        support = (self.mask != 0).to(self.mask.dtype)
        if y.is_complex():
            return torch.view_as_complex(self.noise_model(torch.view_as_real(y), **params).contiguous()) * support
        return self.noise_model(y, **params) * support
