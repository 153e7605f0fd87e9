"""Training curves as a PNG (and JSON), updated after every epoch."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.atomic import atomic_write_bytes
from kneeseg.files import PathLike

__all__ = ["TrainingCurveHandler", "plot_training_curves"]


def _panel_of(name: str) -> str:
    """Which panel a validation metric goes to: losses, overlap scores (0-1), error rates, distances."""
    base = name[4:] if name.startswith("val_") else name
    if "loss" in base and base != "loss_rate":
        return "loss"
    if base in ("mae", "loss_rate"):
        return "error"
    if base.startswith("hd"):
        return "distance"
    return "overlap"


def plot_training_curves(history: dict[str, Any], path: PathLike, title: str = "training") -> Path:
    """Draw the training curves to ``path`` (PNG, atomic write).

    One panel per kind of number, so that no scale hides another: losses (the training loss per
    epoch and the validation loss), overlap scores on a fixed 0-1 axis (Dice, F1, IoU, precision,
    recall), error rates (MAE, loss rate) and, when recorded, HD95. Epoch ticks are whole numbers,
    legends sit outside the plotting area, and a series equal to one already drawn (F1 and Dice of
    one foreground class) is drawn dashed over it and labelled as equal, so every line stays visible.

    Args:
        history: ``{"epoch": [...], "loss": [...], "val_epoch": [...], "val": {name: [...]}}``.
        path: output PNG.
        title: figure title.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    val: dict[str, list[Any]] = dict(history.get("val", {}) or {})
    series: dict[str, list[tuple[str, list[Any], list[float]]]] = {"loss": [], "overlap": [], "error": [], "distance": []}
    if history.get("loss"):
        series["loss"].append(("train loss", list(history["epoch"]), list(history["loss"])))
    for name, values in sorted(val.items(), key=lambda kv: (kv[0] != "val_dice", kv[0])):
        xs = list(history.get("val_epoch", []))[-len(values) :] if values else []
        ys = [np.nan if v is None or (isinstance(v, float) and math.isinf(v)) else float(v) for v in values]
        label = "validation loss" if name == "val_train_loss" else name
        series[_panel_of(name)].append((label, xs, ys))
    panels = [k for k in ("loss", "overlap", "error", "distance") if series[k]] or ["loss"]
    titles = {"loss": "loss", "overlap": "overlap (validation)", "error": "error rate (validation)",
              "distance": "HD95 (validation)"}  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), dpi=110, squeeze=False,
                             constrained_layout=True)  # fmt: skip
    epochs = [e for _, xs, _ in (s for k in panels for s in series[k]) for e in xs]
    for ax, panel in zip(axes[0], panels):
        drawn: list[tuple[str, list[Any], list[float]]] = []
        for label, xs, ys in series[panel]:
            same = next((d for d in drawn if d[1] == xs and np.allclose(d[2], ys, equal_nan=True)), None)
            if same is not None:
                ax.plot(xs, ys, linestyle="--", marker="x", ms=6, lw=1.6, label=f"{label} (= {same[0]})")
            else:
                ax.plot(xs, ys, marker="o", ms=3, lw=1.4, label=label)
            drawn.append((label, xs, ys))
        ax.set_title(titles[panel], fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        if panel == "overlap":
            ax.set_ylim(0.0, 1.0)
        if panel == "distance":
            ax.set_ylabel("pixels or mm")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out


class TrainingCurveHandler:
    """Ignite handler: after every epoch, plots the mean training loss and the validation metrics.

    Attach it to a MONAI ``SupervisedTrainer`` (``train#handlers`` in a bundle). It reads the
    loss from each iteration's output (``output[0]["loss"]`` after decollation, or
    ``output["loss"]``) and the validation metrics from ``validator.state.metrics`` when a
    validator is given; it writes ``<output_dir>/training_curves.png`` and ``history.json``
    atomically, so a crash never leaves a half-written file. A resumed run continues the history
    from ``history.json`` (each epoch once: the entries of the epochs it redoes are replaced); a new
    run starts an empty one.

    Args:
        output_dir: where the PNG and JSON go.
        validator: the evaluator whose ``state.metrics`` hold the validation metrics (optional).
        title: figure title.
        resume: whether this run continues an earlier one (the bundle's ``resume``).
    """

    def __init__(
        self, output_dir: PathLike, validator: Any | None = None, title: str = "training", resume: bool = False
    ) -> None:
        self.output_dir = Path(output_dir)
        self.validator = validator
        self.title = title
        self.resume = bool(resume)
        self.history: dict[str, Any] = {"epoch": [], "loss": [], "val_epoch": [], "val": {}}
        self._losses: list[float] = []
        self._last_val_epoch = -1

    def attach(self, engine: Any) -> None:
        """Register with an ignite engine."""
        from ignite.engine import Events

        hist = self.output_dir / "history.json"
        if self.resume and hist.is_file():
            try:
                self.history = json.loads(hist.read_text())
            except (OSError, ValueError):
                pass
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _iteration(self, engine: Any) -> None:
        out = engine.state.output
        item = out[0] if isinstance(out, (list, tuple)) and out else out
        if isinstance(item, dict) and "loss" in item:
            self._losses.append(float(item["loss"]))

    def _epoch(self, engine: Any) -> None:
        epoch = int(engine.state.epoch)
        self._drop_from(epoch)  # entries of the epochs a resumed run redoes
        self.history["epoch"].append(epoch)
        self.history["loss"].append(float(np.mean(self._losses)) if self._losses else float("nan"))
        self._losses = []
        if self.validator is not None:
            val_epoch = int(getattr(self.validator.state, "epoch", 0) or 0)
            metrics = dict(getattr(self.validator.state, "metrics", {}) or {})
            if metrics and val_epoch != self._last_val_epoch and val_epoch > 0:
                self._last_val_epoch = val_epoch
                self.history["val_epoch"].append(epoch)
                for name, value in metrics.items():
                    try:
                        self.history["val"].setdefault(name, []).append(float(value))
                    except (TypeError, ValueError):
                        continue
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.output_dir / "history.json", json.dumps(self.history, indent=1).encode())
        plot_training_curves(self.history, self.output_dir / "training_curves.png", self.title)

    def _drop_from(self, epoch: int) -> None:
        """Forget the training and validation entries of ``epoch`` and later."""
        h = self.history
        keep = [i for i, e in enumerate(h["epoch"]) if e < epoch]
        h["epoch"] = [h["epoch"][i] for i in keep]
        h["loss"] = [h["loss"][i] for i in keep]
        val_epochs = list(h.get("val_epoch", []))
        n_keep = sum(1 for e in val_epochs if e < epoch)  # validation epochs only grow
        for name, values in list(h.get("val", {}).items()):
            offset = len(val_epochs) - len(values)  # a metric recorded from a later validation on
            h["val"][name] = values[: max(0, n_keep - offset)]
        h["val_epoch"] = val_epochs[:n_keep]
