"""Segmentation metrics: the paper's loss rate, MAE and F1, plus Dice, IoU, precision, recall and HD95.

- :mod:`~kneeseg.metrics.functional`: pure tensor formulas (per image, per foreground class).
- :mod:`~kneeseg.metrics.cumulative`: MONAI ``CumulativeIterationMetric`` classes, one metric each.
- :mod:`~kneeseg.metrics.segmentation`: :class:`SegmentationMetrics`, all of them in one pass (rows and summary).
- :mod:`~kneeseg.metrics.report`: per-case CSV, summary JSON and the Table 1 text layout.

Their ignite handlers for MONAI engines are :mod:`kneeseg.handlers`. Conventions are in ``docs/metrics.md``.
"""

from kneeseg.metrics.cumulative import (
    OVERLAP_METRICS,
    HD95Metric,
    LossRateMetric,
    MAEMetric,
    OverlapMetric,
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
from kneeseg.metrics.report import (
    TABLE1_COLUMNS,
    format_table1,
    read_summary_json,
    write_case_csv,
    write_summary_json,
)
from kneeseg.metrics.segmentation import SegmentationMetrics

__all__ = [
    "OVERLAP_METRICS",
    "TABLE1_COLUMNS",
    "HD95Metric",
    "LossRateMetric",
    "MAEMetric",
    "OverlapMetric",
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
