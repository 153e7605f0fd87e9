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


def plot_training_curves(history: dict[str, Any], path: PathLike, title: str = "training") -> Path:
    """Draw loss per epoch (left) and validation metrics (right) to ``path`` (PNG, atomic write).

    Args:
        history: ``{"epoch": [...], "loss": [...], "val_epoch": [...], "val": {name: [...]}}``.
        path: output PNG.
        title: figure title.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    ax = axes[0]
    if history.get("loss"):
        ax.plot(history["epoch"], history["loss"], marker="o", ms=3, label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    ax = axes[1]
    for name, values in sorted(history.get("val", {}).items()):
        xs = history["val_epoch"][-len(values) :]
        ys = [np.nan if v is None or (isinstance(v, float) and math.isinf(v)) else v for v in values]
        ax.plot(xs, ys, marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation metric")
    ax.grid(alpha=0.3)
    if history.get("val"):
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
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
    atomically, so a crash never leaves a half-written file. On resume it continues the
    history from ``history.json``.

    Args:
        output_dir: where the PNG and JSON go.
        validator: the evaluator whose ``state.metrics`` hold the validation metrics (optional).
        title: figure title.
    """

    def __init__(self, output_dir: PathLike, validator: Any | None = None, title: str = "training") -> None:
        self.output_dir = Path(output_dir)
        self.validator = validator
        self.title = title
        self.history: dict[str, Any] = {"epoch": [], "loss": [], "val_epoch": [], "val": {}}
        self._losses: list[float] = []
        self._last_val_epoch = -1

    def attach(self, engine: Any) -> None:
        """Register with an ignite engine."""
        from ignite.engine import Events

        hist = self.output_dir / "history.json"
        if hist.is_file():
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
        # drop entries a resumed run is about to redo
        keep = [i for i, e in enumerate(self.history["epoch"]) if e < epoch]
        self.history["epoch"] = [self.history["epoch"][i] for i in keep]
        self.history["loss"] = [self.history["loss"][i] for i in keep]
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
