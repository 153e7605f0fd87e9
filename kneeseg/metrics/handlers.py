"""Ignite handlers for MONAI engines (``SupervisedEvaluator`` ``key_val_metric`` / ``additional_metrics``).

Each metric handler is a MONAI :class:`~monai.handlers.IgniteMetricHandler` around one of
:mod:`kneeseg.metrics.cumulative`'s metrics, so it is configured like MONAI's ``MeanDice``::

    "key_metric": {"val_f1": {"_target_": "kneeseg.metrics.F1Handler",
                              "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}}

The engine output ``pred`` is the raw network output ``(C, *spatial)`` per image (logits; set
``activation=None`` if a post-transform already applied softmax) and ``label`` holds class ids
``(1, *spatial)`` or one-hot ``(C, *spatial)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.utils import min_version, optional_import

from kneeseg.files import PathLike
from kneeseg.metrics.cumulative import HD95Metric, LossRateMetric, MAEMetric, OverlapMetric, SegmentationMetrics
from kneeseg.metrics.report import format_table1, write_case_csv, write_summary_json

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = [
    "OverlapHandler",
    "F1Handler",
    "DiceHandler",
    "IoUHandler",
    "PrecisionHandler",
    "RecallHandler",
    "MAEHandler",
    "HD95Handler",
    "LossRateHandler",
    "metric_handler",
    "MetricsReportHandler",
]


def _identity(x: Any) -> Any:
    return x


class OverlapHandler(IgniteMetricHandler):
    """Ignite handler for :class:`~kneeseg.metrics.OverlapMetric` (F1, Dice, IoU, precision, recall).

    Args:
        metric_name: ``"f1"``, ``"dice"``, ``"iou"``, ``"precision"`` or ``"recall"``.
        num_classes: ``C`` (background included); ``None`` reads it from ``pred``.
        include_background: score class 0 too.
        aggregation: ``"image"`` (mean over images, default) or ``"pooled"`` (counts summed first).
        output_transform: engine output -> ``(y_pred, y)``, e.g. ``from_engine(["pred", "label"])``.
        save_details: store the per-image ``(tp, fp, fn, tn)`` counts ``(N, K, 4)`` in
            ``engine.state.metric_details[name]``.
    """

    def __init__(
        self,
        metric_name: str = "f1",
        num_classes: Optional[int] = None,
        include_background: bool = False,
        aggregation: str = "image",
        output_transform: Callable = _identity,
        save_details: bool = True,
    ) -> None:
        metric = OverlapMetric(metric_name, num_classes, include_background, aggregation)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class F1Handler(OverlapHandler):
    """The paper's F1 (``2PR/(P+R)``) of the argmax prediction; see :class:`OverlapHandler`."""

    def __init__(self, num_classes: Optional[int] = None, include_background: bool = False,
                 aggregation: str = "image", output_transform: Callable = _identity, save_details: bool = True) -> None:
        super().__init__("f1", num_classes, include_background, aggregation, output_transform, save_details)


class DiceHandler(OverlapHandler):
    """Dice ``2TP/(2TP+FP+FN)``; see :class:`OverlapHandler`."""

    def __init__(self, num_classes: Optional[int] = None, include_background: bool = False,
                 aggregation: str = "image", output_transform: Callable = _identity, save_details: bool = True) -> None:
        super().__init__("dice", num_classes, include_background, aggregation, output_transform, save_details)


class IoUHandler(OverlapHandler):
    """IoU (Jaccard) ``TP/(TP+FP+FN)``; see :class:`OverlapHandler`."""

    def __init__(self, num_classes: Optional[int] = None, include_background: bool = False,
                 aggregation: str = "image", output_transform: Callable = _identity, save_details: bool = True) -> None:
        super().__init__("iou", num_classes, include_background, aggregation, output_transform, save_details)


class PrecisionHandler(OverlapHandler):
    """Precision ``TP/(TP+FP)``; see :class:`OverlapHandler`."""

    def __init__(self, num_classes: Optional[int] = None, include_background: bool = False,
                 aggregation: str = "image", output_transform: Callable = _identity, save_details: bool = True) -> None:
        super().__init__("precision", num_classes, include_background, aggregation, output_transform, save_details)


class RecallHandler(OverlapHandler):
    """Recall (sensitivity) ``TP/(TP+FN)``; see :class:`OverlapHandler`."""

    def __init__(self, num_classes: Optional[int] = None, include_background: bool = False,
                 aggregation: str = "image", output_transform: Callable = _identity, save_details: bool = True) -> None:
        super().__init__("recall", num_classes, include_background, aggregation, output_transform, save_details)


class MAEHandler(IgniteMetricHandler):
    """The paper's MAE (foreground probability vs label, per pixel); see :class:`~kneeseg.metrics.MAEMetric`.

    Args:
        num_classes: ``C``; ``None`` reads it from ``pred``.
        include_background: include class 0.
        activation: ``"softmax"`` (``pred`` are logits) or ``None`` (probabilities).
        aggregation: ``"image"`` or ``"pooled"`` (pixel-weighted).
        output_transform: engine output -> ``(y_pred, y)``.
        save_details: store per-image, per-class MAE in ``engine.state.metric_details[name]``.
    """

    def __init__(
        self,
        num_classes: Optional[int] = None,
        include_background: bool = False,
        activation: Optional[str] = "softmax",
        aggregation: str = "image",
        output_transform: Callable = _identity,
        save_details: bool = True,
    ) -> None:
        metric = MAEMetric(num_classes, include_background, activation, aggregation)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class HD95Handler(IgniteMetricHandler):
    """HD95 in mm (spacing from ``spacing`` or the label's affine) or pixels; NaN values are skipped.

    See :class:`~kneeseg.metrics.HD95Metric`. Lower is better: do not use it as ``key_metric``
    with a checkpoint saver that keeps the highest value.

    Args:
        num_classes: ``C``; ``None`` reads it from ``pred``.
        percentile: 95 for HD95, ``None`` for the maximum.
        spacing: fixed spacing for all images; ``None`` reads MetaTensor affines.
        use_meta_spacing: read spacing from MetaTensors when ``spacing`` is ``None``.
        include_background: include class 0.
        output_transform: engine output -> ``(y_pred, y)``.
        save_details: store ``[hd (N, K), spacing_known (N,)]`` in ``engine.state.metric_details[name]``.
    """

    def __init__(
        self,
        num_classes: Optional[int] = None,
        percentile: Optional[float] = 95.0,
        spacing: Optional[Any] = None,
        use_meta_spacing: bool = True,
        include_background: bool = False,
        output_transform: Callable = _identity,
        save_details: bool = True,
    ) -> None:
        metric = HD95Metric(num_classes, percentile, spacing, use_meta_spacing, include_background)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class LossRateHandler(IgniteMetricHandler):
    """The paper's loss rate: mean per-sample loss over the evaluated samples.

    Args:
        loss_fn: ``loss_fn(y_pred, y)`` applied per sample (e.g. the bundle's ``@loss``, a MONAI
            ``DiceCELoss(to_onehot_y=True, softmax=True)``); ``None`` = cross-entropy over softmax.
        output_transform: engine output -> ``(y_pred, y)``.
        save_details: store per-sample losses in ``engine.state.metric_details[name]``.
    """

    def __init__(
        self,
        loss_fn: Optional[Callable[..., torch.Tensor]] = None,
        output_transform: Callable = _identity,
        save_details: bool = True,
    ) -> None:
        super().__init__(metric_fn=LossRateMetric(loss_fn), output_transform=output_transform,
                         save_details=save_details)


_HANDLERS: Dict[str, Callable[..., IgniteMetricHandler]] = {
    "f1": F1Handler,
    "dice": DiceHandler,
    "iou": IoUHandler,
    "precision": PrecisionHandler,
    "recall": RecallHandler,
    "mae": MAEHandler,
    "hd95": HD95Handler,
    "loss_rate": LossRateHandler,
}


def metric_handler(name: str, **kwargs: Any) -> IgniteMetricHandler:
    """Build a handler by name (``f1``, ``dice``, ``iou``, ``precision``, ``recall``, ``mae``, ``hd95``,
    ``loss_rate``); ``kwargs`` go to its constructor.

    Raises:
        ValueError: unknown name.
    """
    key = name.lower()
    if key not in _HANDLERS:
        raise ValueError(f"unknown metric {name!r}; choose from {sorted(_HANDLERS)}.")
    return _HANDLERS[key](**kwargs)


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
    """

    def __init__(
        self,
        output_dir: PathLike,
        num_classes: Optional[int] = None,
        loss_fn: Optional[Callable[..., torch.Tensor]] = None,
        method: str = "model",
        activation: Optional[str] = "softmax",
        include_background: bool = False,
        compute_hd95: bool = True,
        hd_percentile: Optional[float] = 95.0,
        spacing: Optional[Any] = None,
        class_names: Optional[Sequence[str]] = None,
        output_transform: Optional[Callable] = None,
        csv_name: str = "metrics_per_case.csv",
        json_name: str = "metrics_summary.json",
        print_table: bool = True,
        table_aggregation: str = "per_image_mean",
        name: str = "kneeseg.metrics",
        train_loss_fn: Optional[Callable[..., torch.Tensor]] = None,
    ) -> None:
        self.output_dir = Path(output_dir)
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
        self.summary: Optional[Dict[str, Any]] = None

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
        rows = self.metrics.rows()
        self.summary = summary
        engine.state.metrics_summary = summary  # type: ignore[attr-defined]
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        if dist and torch.distributed.get_rank() != 0:
            return
        csv_path = write_case_csv(rows, self.output_dir / self.csv_name)
        json_path = write_summary_json(summary, self.output_dir / self.json_name)
        table = format_table1({self.method: summary}, aggregation=self.table_aggregation)
        self.logger.info("metrics over %d cases -> %s, %s\n%s", summary["num_cases"], csv_path, json_path, table)
        if self.print_table:
            print(table, flush=True)
