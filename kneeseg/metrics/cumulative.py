"""kneeseg's metrics as MONAI ``CumulativeIterationMetric`` objects.

Each metric is called once per iteration with ``(y_pred, y)`` — batch-first tensors or lists of
channel-first tensors (MONAI's decollated engine output) — buffers per-image values, and
``aggregate()`` reduces them. ``y_pred`` is ``(B, C, *spatial)`` logits (or probabilities with
``activation=None``); ``y`` is class ids ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.

MONAI's own ``ConfusionMatrixMetric``/``DiceMetric`` expect one-hot binarised predictions and
use other empty-mask conventions (NaN), and its ``LossMetric`` averages per batch rather than per
sample; these classes implement the paper's definitions and kneeseg's conventions on top of
:mod:`kneeseg.metrics.functional`. All of them in one pass, with per-image rows and a summary:
:class:`kneeseg.metrics.segmentation.SegmentationMetrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric

from kneeseg.metrics import functional as KF

__all__ = [
    "OVERLAP_METRICS",
    "OverlapMetric",
    "MAEMetric",
    "HD95Metric",
    "LossRateMetric",
]

#: name -> formula on ``(tp, fp, fn)``
OVERLAP_METRICS: dict[str, Callable[..., torch.Tensor]] = {
    "f1": KF.f1_from_counts,
    "dice": KF.dice_from_counts,
    "iou": KF.iou_from_counts,
    "precision": KF.precision_from_counts,
    "recall": KF.recall_from_counts,
}

_AGGREGATIONS = ("image", "pooled")


def _check_aggregation(aggregation: str) -> str:
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {_AGGREGATIONS}, got {aggregation!r}.")
    return aggregation


def class_count(num_classes: int | None, y_pred: torch.Tensor) -> int:
    c = int(y_pred.shape[1])
    if num_classes is not None and int(num_classes) != c:
        raise ValueError(f"y_pred has {c} channels but num_classes={num_classes}.")
    return c


def nan_mean(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return torch.nanmean(x.double(), dim=dim) if dim is not None else torch.nanmean(x.double())


class OverlapMetric(CumulativeIterationMetric):
    """F1, Dice, IoU, precision or recall of the argmax prediction, per image and foreground class.

    The buffer holds per-image counts ``(N, K, 4)`` = ``(tp, fp, fn, tn)``; ``aggregate()`` returns a
    scalar tensor: with ``aggregation="image"`` the mean over images of the per-image score, with
    ``"pooled"`` the score of the counts summed over all images (micro); both then averaged over the
    ``K`` foreground classes.

    Args:
        metric_name: ``"f1"``, ``"dice"``, ``"iou"``, ``"precision"`` or ``"recall"``.
        num_classes: ``C`` (background included); ``None`` takes it from ``y_pred``'s channels.
        include_background: score class 0 too.
        aggregation: ``"image"`` (default) or ``"pooled"``.

    Raises:
        ValueError: unknown ``metric_name`` or ``aggregation``.
    """

    def __init__(
        self,
        metric_name: str = "f1",
        num_classes: int | None = None,
        include_background: bool = False,
        aggregation: str = "image",
    ) -> None:
        super().__init__()
        if metric_name not in OVERLAP_METRICS:
            raise ValueError(f"metric_name must be one of {sorted(OVERLAP_METRICS)}, got {metric_name!r}.")
        self.metric_name = metric_name
        self.num_classes = num_classes
        self.include_background = include_background
        self.aggregation = _check_aggregation(aggregation)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """``y_pred (B, C, *spatial)``, ``y (B, 1|C, *spatial)`` -> counts ``(B, K, 4)``."""
        c = class_count(self.num_classes, y_pred)
        counts = KF.segmentation_counts(KF.pred_to_class_ids(y_pred), y, c, self.include_background)
        return torch.stack(counts, dim=-1)

    def scores(self) -> torch.Tensor:
        """Per-image, per-class scores ``(N, K)`` float64."""
        counts = metric_buffer(self)
        return OVERLAP_METRICS[self.metric_name](counts[..., 0], counts[..., 1], counts[..., 2])

    def aggregate(self, aggregation: str | None = None) -> torch.Tensor:  # type: ignore[override]
        """Scalar tensor; ``aggregation`` overrides the constructor's choice."""
        agg = _check_aggregation(aggregation or self.aggregation)
        counts = metric_buffer(self)
        if agg == "image":
            return self.scores().mean(dim=0).mean()
        total = counts.sum(dim=0)
        return OVERLAP_METRICS[self.metric_name](total[..., 0], total[..., 1], total[..., 2]).mean()


class MAEMetric(CumulativeIterationMetric):
    """The paper's MAE: mean over pixels of ``|onehot(y)_c - softmax(y_pred)_c|`` over foreground classes.

    The buffer holds per-image, per-class MAE ``(N, K)`` and pixel counts ``(N,)``; ``aggregate()``
    is the mean over images (``"image"``) or the pixel-weighted mean (``"pooled"``; the same when all
    images have one size).

    Args:
        num_classes: ``C``; ``None`` takes it from ``y_pred``.
        include_background: include class 0.
        activation: ``"softmax"`` (``y_pred`` are logits) or ``None`` (already probabilities).
        aggregation: ``"image"`` or ``"pooled"``.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        include_background: bool = False,
        activation: str | None = "softmax",
        aggregation: str = "image",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.include_background = include_background
        self.activation = activation
        self.aggregation = _check_aggregation(aggregation)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any):  # type: ignore[override]
        c = class_count(self.num_classes, y_pred)
        probs = KF.to_probabilities(y_pred, self.activation)
        mae = KF.mae_per_class(probs, KF.to_onehot(y, c), self.include_background)
        pixels = torch.full((y_pred.shape[0],), float(np.prod(y_pred.shape[2:])), dtype=torch.float64,
                            device=mae.device)
        return mae, pixels

    def aggregate(self, aggregation: str | None = None) -> torch.Tensor:  # type: ignore[override]
        agg = _check_aggregation(aggregation or self.aggregation)
        mae, pixels = metric_buffer(self)
        per_image = mae.mean(dim=1)
        if agg == "image":
            return per_image.mean()
        return (per_image * pixels).sum() / pixels.sum()


class HD95Metric(CumulativeIterationMetric):
    """95th-percentile symmetric Hausdorff distance of the argmax prediction (MONAI's implementation).

    Distances are in mm when the spacing is known — the ``spacing`` argument, else the affine of the
    label (or prediction) ``MetaTensor`` when ``use_meta_spacing`` — and in pixels otherwise.
    Per image and class: 0 when label and prediction are both empty, NaN when exactly one is
    empty. ``aggregate()`` skips NaN (mean over images per class, then over classes);
    :meth:`skipped` tells how many (image, class) pairs were skipped.

    Args:
        num_classes: ``C``; ``None`` takes it from ``y_pred``.
        percentile: 95 (HD95); ``None`` gives the maximum distance.
        spacing: fixed spacing (number or one value per spatial axis) for every image.
        use_meta_spacing: read the spacing from MetaTensor affines when ``spacing`` is ``None``.
        include_background: include class 0.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        percentile: float | None = 95.0,
        spacing: Any | None = None,
        use_meta_spacing: bool = True,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.percentile = percentile
        self.spacing = spacing
        self.use_meta_spacing = use_meta_spacing
        self.include_background = include_background

    def resolve_spacing(self, y_pred: torch.Tensor, y: torch.Tensor, call_spacing: Any = None) -> tuple[Any, bool]:
        """Return ``(spacing for MONAI, known: bool)``: call argument > constructor argument > metadata."""
        if call_spacing is not None:
            return call_spacing, True
        if self.spacing is not None:
            return self.spacing, True
        if self.use_meta_spacing:
            for t in (y, y_pred):
                s = KF.spacing_from_meta(t, y_pred.ndim - 2)
                if s is not None:
                    return s, True
        return None, False

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any):  # type: ignore[override]
        c = class_count(self.num_classes, y_pred)
        spacing, known = self.resolve_spacing(y_pred, y, kwargs.get("spacing"))
        hd = KF.hausdorff_distance(
            KF.pred_to_class_ids(y_pred), y, c, spacing=spacing, percentile=self.percentile,
            include_background=self.include_background,
        )
        return hd, torch.full((y_pred.shape[0],), float(known), dtype=torch.float64, device=hd.device)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        hd, _ = metric_buffer(self)
        return nan_mean(nan_mean(hd, dim=0))

    def skipped(self) -> int:
        """Number of (image, class) pairs whose HD95 is NaN (exactly one mask empty)."""
        hd, _ = metric_buffer(self)
        return int(torch.isnan(hd).sum())

    def unit(self) -> str:
        """``"mm"``, ``"pixel"`` or ``"mixed"`` for the buffered images."""
        _, known = metric_buffer(self)
        return distance_unit(known)


def _cpu(buf: Any) -> Any:
    """Buffers to CPU for the reductions (they may live on the GPU during the run)."""
    if isinstance(buf, torch.Tensor):
        return buf.cpu()
    if isinstance(buf, (list, tuple)):
        return [_cpu(b) for b in buf]
    return buf


def metric_buffer(metric: CumulativeIterationMetric) -> Any:
    """The metric's buffer on CPU; ``ValueError`` when nothing was evaluated yet."""
    buf = metric.get_buffer()
    if buf is None or (isinstance(buf, torch.Tensor) and buf.numel() == 0) or (
        isinstance(buf, list) and (not buf or buf[0].numel() == 0)
    ):
        raise ValueError(f"{type(metric).__name__}: no images were evaluated.")
    return _cpu(buf)


def distance_unit(known: torch.Tensor) -> str:
    if known.numel() == 0 or bool((known == 0).all()):
        return "pixel"
    return "mm" if bool((known == 1).all()) else "mixed"


class LossRateMetric(CumulativeIterationMetric):
    """The paper's loss rate: the loss of each sample, averaged over the evaluated samples.

    Per-sample (not per-batch, unlike MONAI's ``LossMetric``) so that a short last batch does not
    change the weights. With the default loss the mean equals
    ``torch.nn.functional.cross_entropy(logits, labels)`` over the whole set of equal-sized samples.

    Args:
        loss_fn: ``loss_fn(y_pred, y) -> tensor`` called on one sample at a time with
            ``y_pred (1, C, *spatial)`` and ``y`` as given (e.g. MONAI's ``DiceCELoss(to_onehot_y=True,
            softmax=True)``, the training loss); non-scalar results are averaged. ``None``: cross-entropy
            over softmax outputs (:func:`~kneeseg.metrics.functional.cross_entropy_per_sample`).
    """

    def __init__(self, loss_fn: Callable[..., torch.Tensor] | None = None) -> None:
        super().__init__()
        self.loss_fn = loss_fn

    def per_sample(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses ``(B,)`` float64."""
        if self.loss_fn is None:
            return KF.cross_entropy_per_sample(y_pred, y).double()
        y_pred, y = KF.as_tensor(y_pred), KF.as_tensor(y)
        with torch.no_grad():
            vals = [torch.as_tensor(self.loss_fn(y_pred[b : b + 1].float(), y[b : b + 1])).double().mean()
                    for b in range(y_pred.shape[0])]
        return torch.stack(vals)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        return self.per_sample(y_pred, y)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        losses = metric_buffer(self)
        return torch.as_tensor(KF.loss_rate(losses), dtype=torch.float64)
