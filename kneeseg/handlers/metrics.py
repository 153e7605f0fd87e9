"""Ignite metric handlers for MONAI engines (``SupervisedEvaluator`` ``key_val_metric`` / ``additional_metrics``).

Each metric handler is a MONAI :class:`~monai.handlers.IgniteMetricHandler` around one of
:mod:`kneeseg.metrics.cumulative`'s metrics, so it is configured like MONAI's ``MeanDice``::

    "key_metric": {"val_f1": {"_target_": "kneeseg.handlers.F1Handler",
                              "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}}

The engine output ``pred`` is the raw network output ``(C, *spatial)`` per image (logits; set
``activation=None`` if a post-transform already applied softmax) and ``label`` holds class ids
``(1, *spatial)`` or one-hot ``(C, *spatial)``.

A handler takes its metric's arguments (positional or keyword; documented on the metric) plus
the keyword-only ``output_transform`` (engine output -> ``(y_pred, y)``, e.g.
``from_engine(["pred", "label"])``) and ``save_details`` (store the metric's per-image buffer
in ``engine.state.metric_details[name]``; default True).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partialmethod
from typing import Any

from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric

from kneeseg.metrics.cumulative import (
    HD95Metric,
    LossRateMetric,
    MAEMetric,
    OverlapMetric,
)

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
]


def _identity(x: Any) -> Any:
    return x


class _MetricHandler(IgniteMetricHandler):
    """An ``IgniteMetricHandler`` around a new ``metric_class(*args, **kwargs)``."""

    metric_class: Callable[..., CumulativeIterationMetric]

    def __init__(self, *args: Any, output_transform: Callable = _identity, save_details: bool = True, **kwargs: Any) -> None:
        metric = self.metric_class(*args, **kwargs)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class OverlapHandler(_MetricHandler):
    """Ignite handler for :class:`~kneeseg.metrics.OverlapMetric` (F1, Dice, IoU, precision, recall).

    Args (the metric's):
        metric_name: ``"f1"``, ``"dice"``, ``"iou"``, ``"precision"`` or ``"recall"``.
        num_classes: ``C`` (background included); ``None`` reads it from ``pred``.
        include_background: score class 0 too.
        aggregation: ``"image"`` (mean over images, default) or ``"pooled"`` (counts summed first).

    With ``save_details`` the per-image ``(tp, fp, fn, tn)`` counts ``(N, K, 4)`` go to
    ``engine.state.metric_details[name]``.
    """

    metric_class = OverlapMetric


class F1Handler(OverlapHandler):
    """The paper's F1 (``2PR/(P+R)``) of the argmax prediction; see :class:`OverlapHandler` (``metric_name`` fixed)."""

    __init__ = partialmethod(OverlapHandler.__init__, "f1")


class DiceHandler(OverlapHandler):
    """Dice ``2TP/(2TP+FP+FN)``; see :class:`OverlapHandler` (``metric_name`` fixed)."""

    __init__ = partialmethod(OverlapHandler.__init__, "dice")


class IoUHandler(OverlapHandler):
    """IoU (Jaccard) ``TP/(TP+FP+FN)``; see :class:`OverlapHandler` (``metric_name`` fixed)."""

    __init__ = partialmethod(OverlapHandler.__init__, "iou")


class PrecisionHandler(OverlapHandler):
    """Precision ``TP/(TP+FP)``; see :class:`OverlapHandler` (``metric_name`` fixed)."""

    __init__ = partialmethod(OverlapHandler.__init__, "precision")


class RecallHandler(OverlapHandler):
    """Recall (sensitivity) ``TP/(TP+FN)``; see :class:`OverlapHandler` (``metric_name`` fixed)."""

    __init__ = partialmethod(OverlapHandler.__init__, "recall")


class MAEHandler(_MetricHandler):
    """The paper's MAE (foreground probability vs label, per pixel); see :class:`~kneeseg.metrics.MAEMetric`.

    Args (the metric's):
        num_classes: ``C``; ``None`` reads it from ``pred``.
        include_background: include class 0.
        activation: ``"softmax"`` (``pred`` are logits) or ``None`` (probabilities).
        aggregation: ``"image"`` or ``"pooled"`` (pixel-weighted).

    With ``save_details`` the per-image, per-class MAE goes to ``engine.state.metric_details[name]``.
    """

    metric_class = MAEMetric


class HD95Handler(_MetricHandler):
    """HD95 in mm (spacing from ``spacing`` or the label's affine) or pixels; NaN values are skipped.

    See :class:`~kneeseg.metrics.HD95Metric`. Lower is better: do not use it as ``key_metric``
    with a checkpoint saver that keeps the highest value.

    Args (the metric's):
        num_classes: ``C``; ``None`` reads it from ``pred``.
        percentile: 95 for HD95, ``None`` for the maximum.
        spacing: fixed spacing for all images; ``None`` reads MetaTensor affines.
        use_meta_spacing: read spacing from MetaTensors when ``spacing`` is ``None``.
        include_background: include class 0.

    With ``save_details`` ``[hd (N, K), spacing_known (N,)]`` go to ``engine.state.metric_details[name]``.
    """

    metric_class = HD95Metric


class LossRateHandler(_MetricHandler):
    """The paper's loss rate: mean per-sample loss over the evaluated samples.

    Args (the metric's):
        loss_fn: ``loss_fn(y_pred, y)`` applied per sample (e.g. the bundle's ``@loss``, a MONAI
            ``DiceCELoss(to_onehot_y=True, softmax=True)``); ``None`` = cross-entropy over softmax.

    With ``save_details`` the per-sample losses go to ``engine.state.metric_details[name]``.
    """

    metric_class = LossRateMetric


_HANDLERS: dict[str, Callable[..., IgniteMetricHandler]] = {
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
