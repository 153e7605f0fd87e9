"""Segmentation metrics: the paper's loss rate, MAE and F1, plus Dice, IoU, precision, recall and HD95.

- :mod:`~kneeseg.metrics.functional`: pure tensor formulas (per image, per foreground class).
- :mod:`~kneeseg.metrics.cumulative`: MONAI ``CumulativeIterationMetric`` classes.
- :mod:`~kneeseg.metrics.handlers`: ignite handlers for MONAI engines (bundle ``_target_`` names).
- :mod:`~kneeseg.metrics.report`: per-case CSV, summary JSON and the Table 1 text layout.

Conventions are in ``docs/metrics.md``.
"""

from kneeseg.metrics.cumulative import (
    OVERLAP_METRICS,
    HD95Metric,
    LossRateMetric,
    MAEMetric,
    OverlapMetric,
    SegmentationMetrics,
)
from kneeseg.metrics.functional import (
    cross_entropy_per_sample,
    dice_from_counts,
    f1_from_counts,
    hausdorff_distance,
    iou_from_counts,
    loss_rate,
    mae_foreground,
    mae_per_class,
    precision_from_counts,
    pred_to_class_ids,
    recall_from_counts,
    segmentation_counts,
    spacing_from_meta,
    to_class_ids,
    to_onehot,
    to_probabilities,
)
from kneeseg.metrics.handlers import (
    DiceHandler,
    F1Handler,
    HD95Handler,
    IoUHandler,
    LossRateHandler,
    MAEHandler,
    MetricsReportHandler,
    OverlapHandler,
    PrecisionHandler,
    RecallHandler,
    metric_handler,
)
from kneeseg.metrics.report import TABLE1_COLUMNS, format_table1, read_summary_json, write_case_csv, write_summary_json

__all__ = [
    "OVERLAP_METRICS",
    "TABLE1_COLUMNS",
    "DiceHandler",
    "F1Handler",
    "HD95Handler",
    "HD95Metric",
    "IoUHandler",
    "LossRateHandler",
    "LossRateMetric",
    "MAEHandler",
    "MAEMetric",
    "MetricsReportHandler",
    "OverlapHandler",
    "OverlapMetric",
    "PrecisionHandler",
    "RecallHandler",
    "SegmentationMetrics",
    "cross_entropy_per_sample",
    "dice_from_counts",
    "f1_from_counts",
    "format_table1",
    "hausdorff_distance",
    "iou_from_counts",
    "loss_rate",
    "mae_foreground",
    "mae_per_class",
    "metric_handler",
    "precision_from_counts",
    "pred_to_class_ids",
    "read_summary_json",
    "recall_from_counts",
    "segmentation_counts",
    "spacing_from_meta",
    "to_class_ids",
    "to_onehot",
    "to_probabilities",
    "write_case_csv",
    "write_summary_json",
]
