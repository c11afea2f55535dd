"""Training history (one record per evaluation) and its plots."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from liftinv.checkpoint import write_figure
from operators.checks import is_real

_NAN = float("nan")


@dataclass(eq=False)
class TrainHistory:
    r"""What training records. Index 0 is the untrained model, index ``k`` the model after the
    ``k``-th (possibly partial) epoch. Lifted-only entries are NaN (or empty) for backprop.

    Attributes:
        epoch: epochs done, fractional for a final epoch cut short by a time budget.
        seconds: cumulative wall-clock seconds spent in training steps (validation and
            checkpointing excluded; the device is synchronised before reading the clock).
        energy: per-sample lifted energy :math:`E/B` of the epoch's last batch after its sweeps.
        gaps: per-layer batch-mean penalties :math:`P_k` of that batch (the weights
            :math:`\lambda_k` not applied).
        train_loss: per-sample unlifted loss :math:`\tfrac12\|N(u) - t\|^2` of each batch
            before its update, averaged over the epoch.
        val_loss: the same loss on the validation set (plain forward pass).
        val_psnr: mean PSNR (dB) of the validation outputs.
        val_ssim: mean SSIM of the validation outputs (NaN for images smaller than 11x11).

    Two histories are equal (``==``) when every field holds the same records, a NaN equal to a
    NaN (a backprop run's energy, an SSIM of small images): a history equals its round trip
    through :meth:`as_dict` and a checkpoint (:meth:`from_dict`), where each NaN is another
    float object, which list equality (``nan != nan``) would call different.
    """

    epoch: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    energy: list[float] = field(default_factory=list)
    gaps: list[list[float]] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_psnr: list[float] = field(default_factory=list)
    val_ssim: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.epoch)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    def append(
        self,
        *,
        epoch: float,
        seconds: float,
        train_loss: float = _NAN,
        energy: float = _NAN,
        gaps: list[float] | None = None,
        val_loss: float = _NAN,
        val_psnr: float = _NAN,
        val_ssim: float = _NAN,
    ) -> None:
        """Add one record; ``gaps`` is any sequence of real numbers (list, tuple, 1-D tensor or
        array), ``None`` for none (recorded as ``[]``)."""
        self.epoch.append(float(epoch))
        self.seconds.append(float(seconds))
        self.energy.append(float(energy))
        self.gaps.append([] if gaps is None else [float(g) for g in gaps])
        self.train_loss.append(float(train_loss))
        self.val_loss.append(float(val_loss))
        self.val_psnr.append(float(val_psnr))
        self.val_ssim.append(float(val_ssim))

    def as_dict(self) -> dict[str, list]:
        """Plain lists (JSON- and ``torch.load(weights_only=True)``-safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, list]) -> TrainHistory:
        """Inverse of :meth:`as_dict`: ``d`` maps every field to a list (or tuple) with one entry
        per record, a real number (``gaps``: a list or tuple of real numbers), read as floats.

        Raises:
            TypeError: ``d`` is not a mapping, or a field or an entry has another type (the
                message names the field and, for an entry, its record).
            ValueError: a field is missing or the fields have different lengths.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"history must be a mapping of its fields, got {type(d).__name__}")
        missing = [f.name for f in fields(cls) if f.name not in d]
        if missing:
            raise ValueError(f"history is missing the fields {missing}")
        for f in fields(cls):
            if not isinstance(d[f.name], (list, tuple)):
                raise TypeError(f"history field {f.name} must be a list, got {type(d[f.name]).__name__}")
        lengths = {f.name: len(d[f.name]) for f in fields(cls)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"history fields have different lengths: {lengths}")
        return cls(**{f.name: [(_numbers if f.name == "gaps" else _number)(f.name, i, v) for i, v in enumerate(d[f.name])]
                      for f in fields(cls)})


def _same(a, b) -> bool:
    """Equality of two records (floats, or lists of floats for ``gaps``), a NaN equal to a NaN."""
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _number(name: str, record: int, value: object) -> float:
    """``value`` as a float if it is a real number (not a bool), else a ``TypeError`` naming the
    field ``name`` and the ``record``."""
    if not is_real(value):
        raise TypeError(f"history field {name}[{record}] must be a real number, got {type(value).__name__}")
    return float(value)


def _numbers(name: str, record: int, values: object) -> list[float]:
    """``values`` as a list of floats if it is a list or tuple of real numbers (:func:`_number`)."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"history field {name}[{record}] must be a list of real numbers, got {type(values).__name__}")
    return [_number(f"{name}[{record}]", j, v) for j, v in enumerate(values)]


def plot_history(history: TrainHistory, path: str | os.PathLike | None = None, *, title: str = ""):
    """Four panels against epochs (whole-number ticks): training and validation loss, lifted
    energy, per-layer gaps (log scale), validation PSNR. Saves it to ``path`` when given
    (:func:`_finish`); returns the ``matplotlib.figure.Figure`` (built without pyplot, so no
    backend is touched)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(16, 3.6))
    axes = fig.subplots(1, 4)
    ep = history.epoch
    axes[0].plot(ep, history.train_loss, "o-", label="train (before update)")
    axes[0].plot(ep, history.val_loss, "s-", label="validation")
    axes[0].set(title="unlifted loss per sample", xlabel="epoch", yscale="log")
    axes[0].legend()
    axes[1].plot(ep, history.energy, "o-")
    axes[1].set(title="lifted energy per sample", xlabel="epoch")
    depth = max((len(g) for g in history.gaps), default=0)
    for k in range(depth):
        values = [g[k] if len(g) > k else _NAN for g in history.gaps]
        axes[2].plot(ep, [max(v, 1e-16) if math.isfinite(v) else _NAN for v in values], "o-", ms=3,
                     label=f"layer {k + 1}")
    axes[2].set(title="per-layer gaps", xlabel="epoch", yscale="log" if depth else "linear")
    if depth:
        axes[2].legend(fontsize="small", ncol=2)
    axes[3].plot(ep, history.val_psnr, "o-")
    axes[3].set(title="validation PSNR (dB)", xlabel="epoch")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    return _finish(fig, title, path)


def plot_psnr_vs_time(
    histories: Mapping[str, TrainHistory], path: str | os.PathLike | None = None, *, title: str = ""
):
    """Validation PSNR against training seconds (left) and against epochs (right), one line per
    named history: methods compared at equal wall-clock time and per pass over the data (epoch
    axis with whole-number ticks). Saves it to ``path`` when given (:func:`_finish`).

    Raises:
        ValueError: ``histories`` is empty (a figure with no line to compare).
    """
    if not histories:
        raise ValueError("histories must name at least one TrainHistory to plot, got none")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.2))
    by_time, by_epoch = fig.subplots(1, 2, sharey=True)
    for name, h in histories.items():
        by_time.plot(h.seconds, h.val_psnr, "o-", ms=3, label=name)
        by_epoch.plot(h.epoch, h.val_psnr, "o-", ms=3, label=name)
    by_time.set(xlabel="training time (s)", ylabel="validation PSNR (dB)")
    by_epoch.set(xlabel="epochs")
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    for ax in (by_time, by_epoch):
        ax.grid(alpha=0.3)
    by_epoch.legend(fontsize="small")
    return _finish(fig, title, path)


def _finish(fig, title: str, path: str | os.PathLike | None):
    """Title and tight layout; write the figure to ``path`` when given, in the format of its suffix
    (``.png``, ``.pdf``, ``.svg``...), atomically (:func:`~liftinv.checkpoint.write_figure`, which
    creates its folder)."""
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        write_figure(fig, path, dpi=100)
    return fig
