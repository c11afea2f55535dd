r"""Helpers shared by the architecture builders: argument checks, seeded initialisation and
convolution norms."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from liftinv.validation import positive_int
from operators.checks import is_real


def positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise naming ``name``."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def odd_int(name: str, value: object) -> int:
    """Return ``value`` if it is an odd positive integer (a 'same'-padded kernel size)."""
    value = positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd, got {value}")
    return value


def check_linear_physics(physics: object) -> None:
    """Raise a ``TypeError`` naming ``physics`` unless it has callable ``A`` and ``A_adjoint`` (a
    deepinv ``LinearPhysics``)."""
    if not all(callable(getattr(physics, name, None)) for name in ("A", "A_adjoint")):
        raise TypeError(f"physics must be a deepinv LinearPhysics (callable A and A_adjoint), got {type(physics).__name__}")


def check_channels(u: Tensor, channels: int, name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``u`` has shape ``(B, channels, H, W)``."""
    if u.ndim != 4 or u.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(u.shape)}")


def init_parameters_(module: nn.Module, generator: torch.Generator | None) -> None:
    r"""Redraw the weight and bias of every ``nn.Linear``/``nn.Conv2d``/``nn.ConvTranspose2d`` in
    ``module`` i.i.d. uniform on :math:`[-1/\sqrt{n}, 1/\sqrt{n}]` with :math:`n` = ``weight[0].numel()``
    (PyTorch's default bounds) from ``generator``; ``None`` keeps PyTorch's initialisation."""
    if generator is None:
        return
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            bound = 1.0 / math.sqrt(m.weight[0].numel())
            for p in (m.weight, m.bias):
                if p is not None:
                    nn.init.uniform_(p, -bound, bound, generator=generator)


def conv_norm(conv: nn.Conv2d, grid: int = 64) -> float:
    r"""Operator norm of a stride-1 convolution :math:`L`, from its symbol.

    Returns :math:`\max_\omega \|\hat L(\omega)\|_2` over a ``grid`` x ``grid`` frequency grid,
    with :math:`\hat L(\omega) = \sum_s W_s e^{-i\langle\omega, s\rangle}` the (out x in) matrix
    symbol; with ``groups`` :math:`G` it is block diagonal, its norm the largest of the
    :math:`G` blocks' (out/G x in/G, ``weight`` reshaped by group). A zero-padded convolution on
    any image size is a compression of the convolution on :math:`\mathbb Z^2`, whose norm is
    :math:`\sup_\omega\|\hat L(\omega)\|_2`; the grid maximum approximates that supremum from
    below (relative error :math:`O((k/\text{grid})^2)` for a ``k`` x ``k`` kernel). ``grid``
    must be an integer >= the kernel size (a smaller FFT would crop the kernel).
    """
    grid = positive_int("grid", grid)
    if grid < max(conv.kernel_size):
        raise ValueError(f"grid must be at least the kernel size {tuple(conv.kernel_size)} (the FFT would crop the "
                         f"kernel), got {grid}")
    weight = conv.weight.detach()
    blocks = weight.reshape(conv.groups, weight.shape[0] // conv.groups, *weight.shape[1:])
    symbol = torch.fft.fft2(blocks, s=(grid, grid))
    return float(torch.linalg.matrix_norm(symbol.permute(0, 3, 4, 1, 2), ord=2).max())


def normalised_conv(
    in_channels: int, out_channels: int, kernel_size: int, generator: torch.Generator | None
) -> nn.Conv2d:
    r"""A bias-free 'same'-padded ``nn.Conv2d`` rescaled so that :func:`conv_norm` is 1."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    init_parameters_(conv, generator)
    with torch.no_grad():
        conv.weight.div_(conv_norm(conv))
    return conv
