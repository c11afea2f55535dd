r"""Operator specifications: every setting that determines :math:`A`, as a plain dict.

:func:`physics_spec` records a :class:`~operators.radon.Radon`, :class:`~operators.blur.Blur` or
:class:`~operators.mri.MRI`; :func:`physics_from_spec` rebuilds an operator with the same
:math:`A` and :math:`A^*`; :func:`check_spec` compares two specs and names the settings that
differ, e.g. ``model was trained for Radon(angles=30) but got Radon(angles=60)``.

A spec holds only strings, numbers, booleans, ``None``, tuples and CPU tensors, so it can be
stored in a ``torch.save`` file and read back with ``weights_only=True``. Keys:

* ``Radon``: ``img_size`` (int), ``angles`` (float64 degrees), ``n_detectors``, ``circle``, ``dtype``;
* ``Blur``: ``kernel`` (``(C, h, w)``), ``img_size`` (``(C, H, W)`` or ``None``), ``boundary``,
  ``use_fft`` (the argument, ``None`` for automatic), ``dtype``;
* ``MRI``: ``mask`` (``(H, W)``), ``coil_maps`` (complex ``(N, H, W)`` or ``None``), ``dtype``;

plus ``operator``, the class name. The noise model and the device are not part of a spec: they do
not change :math:`A`. ``use_fft`` changes only the rounding of :math:`Ax`, so :func:`check_spec`
ignores it (:data:`IGNORED`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from operators.blur import Blur
from operators.mri import MRI
from operators.radon import Radon, uniform_angles

#: Spec keys per operator class name (``operator`` excluded).
KEYS: dict[str, tuple[str, ...]] = {
    "Radon": ("img_size", "angles", "n_detectors", "circle", "dtype"),
    "Blur": ("kernel", "img_size", "boundary", "use_fft", "dtype"),
    "MRI": ("mask", "coil_maps", "dtype"),
}
#: Keys that :func:`check_spec` does not compare (they do not change :math:`A` beyond rounding).
IGNORED = frozenset({"use_fft"})
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_RTOL = 1e-5  # tensors compare equal within float32 rounding: |a - b| <= _RTOL * max|b|


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def physics_spec(physics) -> dict:
    """The spec of ``physics`` (see the module docstring for its keys): a snapshot, its tensors are
    copies of the operator's.

    Raises:
        TypeError: ``physics`` is not a ``Radon``, ``Blur`` or ``MRI`` (custom operators have no spec).
    """
    if isinstance(physics, Radon):
        return {
            "operator": "Radon", "img_size": physics.n, "angles": physics.angles.detach().to("cpu", torch.float64, copy=True),
            "n_detectors": physics.n_detectors, "circle": physics.circle, "dtype": _dtype_name(physics.dtype),
        }
    if isinstance(physics, Blur):
        return {
            "operator": "Blur", "kernel": physics.kernel.detach().to("cpu", copy=True),
            "img_size": None if physics.img_size is None else tuple(physics.img_size),
            "boundary": physics.boundary, "use_fft": physics._use_fft, "dtype": _dtype_name(physics.dtype),
        }
    if isinstance(physics, MRI):
        maps = None if physics.coil_maps is None else torch.view_as_complex(physics.coil_maps).detach().to("cpu", copy=True)
        mask = physics.mask.detach().to("cpu", copy=True)
        return {"operator": "MRI", "mask": mask, "coil_maps": maps, "dtype": _dtype_name(physics.dtype)}
    raise TypeError(f"physics must be an operators Radon, Blur or MRI to have a spec, got {type(physics).__name__}")


def _validated(spec: object) -> dict:
    """``spec`` if it is a dict with a known ``operator`` and all of its keys, else raise."""
    if not isinstance(spec, dict):
        raise TypeError(f"spec must be a dict, got {type(spec).__name__}")
    name = spec.get("operator")
    if name not in KEYS:
        raise ValueError(f"spec['operator'] must be one of {sorted(KEYS)}, got {name!r}")
    missing = [k for k in KEYS[name] if k not in spec]
    if missing:
        raise ValueError(f"spec for {name} lacks {missing}")
    if spec["dtype"] not in _DTYPES:
        raise ValueError(f"spec['dtype'] must be one of {sorted(_DTYPES)}, got {spec['dtype']!r}")
    return spec


def physics_from_spec(spec: dict, *, device: torch.device | str = "cpu", noise_model=None):
    """Rebuild the operator described by ``spec`` on ``device`` with ``noise_model`` (default: none).

    Raises:
        TypeError, ValueError: ``spec`` is not a valid spec, or the operator rejects its settings.
    """
    spec = _validated(spec)
    name, dtype = spec["operator"], _DTYPES[spec["dtype"]]
    if name == "Radon":
        return Radon(spec["img_size"], spec["angles"], n_detectors=spec["n_detectors"], circle=spec["circle"],
                     noise_model=noise_model, dtype=dtype, device=device)
    if name == "Blur":
        img_size = None if spec["img_size"] is None else tuple(spec["img_size"])
        return Blur(spec["kernel"], img_size=img_size, boundary=spec["boundary"], use_fft=spec["use_fft"],
                    noise_model=noise_model, dtype=dtype, device=device)
    return MRI(spec["mask"], coil_maps=spec["coil_maps"], noise_model=noise_model, dtype=dtype, device=device)


def _same(a: object, b: object) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.shape != b.shape:
            return False
        a, b = a.detach().cpu(), b.detach().cpu()
        dtype = torch.complex128 if a.is_complex() or b.is_complex() else torch.float64
        a, b = a.to(dtype), b.to(dtype)
        scale = float(b.abs().max()) if b.numel() else 0.0
        return bool(((a - b).abs() <= _RTOL * scale).all())
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return tuple(a) == tuple(b)
    return a == b


def spec_differences(expected: dict, actual: dict) -> list[str]:
    """Keys whose values differ between two specs (``["operator"]`` for different operator
    classes); :data:`IGNORED` keys are skipped. Tensors are equal within float32 rounding."""
    expected, actual = _validated(expected), _validated(actual)
    if expected["operator"] != actual["operator"]:
        return ["operator"]
    return [k for k in KEYS[expected["operator"]] if k not in IGNORED and not _same(expected[k], actual[k])]


def _uniform_angles(angles: Tensor) -> bool:
    """Whether ``angles`` are :func:`~operators.radon.uniform_angles` of their count (to 1e-9 degrees)."""
    return bool(torch.allclose(angles, uniform_angles(angles.numel()), rtol=0, atol=1e-9))


def _describe_value(key: str, value: object, other: object) -> str:
    if not isinstance(value, Tensor):
        return repr(value)
    if key == "angles":
        if _uniform_angles(value):
            return str(value.numel())
        degrees = [round(float(a), 3) for a in value]
        return str(degrees) if len(degrees) <= 6 else f"<{len(degrees)} angles in [{min(degrees)}, {max(degrees)}] deg>"
    shape = "x".join(str(s) for s in value.shape)
    text = f"<{shape} tensor, mean {complex(value.mean()) if value.is_complex() else float(value.mean()):.4g}"
    if isinstance(other, Tensor) and other.shape == value.shape and not _same(value, other):
        differing = int(((value.to(torch.complex128) - other.to(torch.complex128)).abs() > 0).sum())
        text += f", {differing} entries differ"
    return text + ">"


def describe(spec: dict, keys: list[str] | None = None, other: dict | None = None) -> str:
    """``Name(key=value, ...)`` for ``keys`` (default: all); tensors are summarised by shape and
    mean, with the count of entries that differ from ``other``'s when given."""
    keys = KEYS[spec["operator"]] if keys is None else keys
    other = other if other is not None and other.get("operator") == spec["operator"] else {}
    items = ", ".join(f"{k}={_describe_value(k, spec[k], other.get(k))}" for k in keys)
    return f"{spec['operator']}({items})"


def check_spec(expected: dict, actual: dict, context: str = "expected") -> None:
    """Raise unless two specs agree on every compared setting.

    Raises:
        ValueError: ``"{context} Radon(angles=30) but got Radon(angles=60)"``, naming only the
            settings that differ (all of them when the operator classes differ).
    """
    keys = spec_differences(expected, actual)
    if not keys:
        return
    if keys == ["operator"]:
        raise ValueError(f"{context} {describe(expected)} but got {describe(actual)}")
    raise ValueError(f"{context} {describe(expected, keys)} but got {describe(actual, keys, other=expected)}")


__all__ = ["IGNORED", "KEYS", "check_spec", "describe", "physics_from_spec", "physics_spec", "spec_differences"]
