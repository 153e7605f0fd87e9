"""The evaluation report handler: per-case CSV and summary JSON after every evaluator run, and the Table 1 row in the log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import from_engine
from monai.utils import min_version, optional_import

from kneeseg.files import PathLike
from kneeseg.metrics.report import format_table1, write_case_csv, write_summary_json
from kneeseg.metrics.segmentation import SegmentationMetrics

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["MetricsReportHandler"]


class MetricsReportHandler:
    """Writes the per-case CSV and the summary JSON at the end of every evaluator run, and logs
    (and prints) the Table 1 row.

    Attach it as a ``val_handlers`` entry of a MONAI ``SupervisedEvaluator``. It accumulates a
    :class:`~kneeseg.metrics.SegmentationMetrics` over the epoch (reset at ``EPOCH_STARTED``) and at
    ``EPOCH_COMPLETED`` writes ``<output_dir>/<csv_name>`` and ``<output_dir>/<json_name>``
    atomically, then stores the summary in ``engine.state.metrics_summary``. Under
    ``torch.distributed`` every rank accumulates and only rank 0 writes.

    Args:
        output_dir: folder for the files (created).
        num_classes: ``C``; ``None`` reads it from ``pred``.
        loss_fn: loss for the loss rate (default cross-entropy over softmax: the paper's).
        train_loss_fn: the training loss, reported as its own ``train_loss`` column (optional).
        method: the method name shown in the table and stored in the summary.
        activation: ``"softmax"`` (logits) or ``None`` (probabilities).
        include_background: include class 0 in the class-wise metrics.
        compute_hd95: compute HD95.
        hd_percentile: percentile for HD95.
        spacing: fixed spacing for HD95; ``None`` reads MetaTensor affines.
        class_names: names of classes ``0..C-1``.
        output_transform: engine output -> ``(y_pred, y)``; default ``from_engine(["pred", "label"])``.
        csv_name: per-case CSV file name.
        json_name: summary JSON file name.
        print_table: also ``print`` the table (it is always logged).
        table_aggregation: ``"per_image_mean"`` (default) or ``"pooled"`` for the console table.
        name: logger name.
        title: what the numbers are measured on, printed above the table and stored in the summary
            (``"at each image's own resolution"``, ``"on the network grid ..."``).
    """

    def __init__(
        self,
        output_dir: PathLike,
        num_classes: int | None = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        method: str = "model",
        activation: str | None = "softmax",
        include_background: bool = False,
        compute_hd95: bool = True,
        hd_percentile: float | None = 95.0,
        spacing: Any | None = None,
        class_names: Sequence[str] | None = None,
        output_transform: Callable | None = None,
        csv_name: str = "metrics_per_case.csv",
        json_name: str = "metrics_summary.json",
        print_table: bool = True,
        table_aggregation: str = "per_image_mean",
        name: str = "kneeseg.metrics",
        train_loss_fn: Callable[..., torch.Tensor] | None = None,
        title: str | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.title = title
        self.method = method
        self.metrics = SegmentationMetrics(
            num_classes=num_classes, loss_fn=loss_fn, activation=activation, include_background=include_background,
            compute_hd95=compute_hd95, hd_percentile=hd_percentile, spacing=spacing, class_names=class_names,
            train_loss_fn=train_loss_fn,
        )
        self.output_transform = output_transform or from_engine(["pred", "label"])
        self.csv_name = csv_name
        self.json_name = json_name
        self.print_table = print_table
        self.table_aggregation = table_aggregation
        self.logger = logging.getLogger(name)
        self.summary: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Register on ``EPOCH_STARTED``, ``ITERATION_COMPLETED`` and ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.metrics.reset()

    def _update(self, engine: Engine) -> None:
        y_pred, y = self.output_transform(engine.state.output)
        self.metrics(y_pred, y)

    def _write(self, engine: Engine) -> None:
        summary = self.metrics.aggregate()
        summary = {"method": self.method, "epoch": int(getattr(engine.state, "epoch", 0) or 0), **summary}
        if self.title:
            summary["measured"] = self.title
        rows = self.metrics.rows()
        self.summary = summary
        engine.state.metrics_summary = summary  # type: ignore[attr-defined]
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        if dist and torch.distributed.get_rank() != 0:
            return
        csv_path = write_case_csv(rows, self.output_dir / self.csv_name)
        json_path = write_summary_json(summary, self.output_dir / self.json_name)
        table = format_table1({self.method: summary}, aggregation=self.table_aggregation)
        if self.title:
            table = f"{self.title}:\n{table}"
        self.logger.info("metrics over %d cases -> %s, %s\n%s", summary["num_cases"], csv_path, json_path, table)
        if self.print_table:
            print(table, flush=True)
