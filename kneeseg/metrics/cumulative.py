"""kneeseg's metrics as MONAI ``CumulativeIterationMetric`` objects.

Each metric is called once per iteration with ``(y_pred, y)`` — batch-first tensors or lists of
channel-first tensors (MONAI's decollated engine output) — buffers per-image values, and
``aggregate()`` reduces them. ``y_pred`` is ``(B, C, *spatial)`` logits (or probabilities with
``activation=None``); ``y`` is class ids ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.

MONAI's own ``ConfusionMatrixMetric``/``DiceMetric`` expect one-hot binarised predictions and
use other empty-mask conventions (NaN), and its ``LossMetric`` averages per batch rather than per
sample; these classes implement the paper's definitions and kneeseg's conventions on top of
:mod:`kneeseg.metrics.functional`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

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
    "SegmentationMetrics",
]

#: name -> formula on ``(tp, fp, fn)``
OVERLAP_METRICS: Dict[str, Callable[..., torch.Tensor]] = {
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


def _num_classes(num_classes: Optional[int], y_pred: torch.Tensor) -> int:
    c = int(y_pred.shape[1])
    if num_classes is not None and int(num_classes) != c:
        raise ValueError(f"y_pred has {c} channels but num_classes={num_classes}.")
    return c


def _nanmean(x: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
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
        num_classes: Optional[int] = None,
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
        c = _num_classes(self.num_classes, y_pred)
        counts = KF.segmentation_counts(KF.pred_to_class_ids(y_pred), y, c, self.include_background)
        return torch.stack(counts, dim=-1)

    def scores(self) -> torch.Tensor:
        """Per-image, per-class scores ``(N, K)`` float64."""
        counts = _buffer(self)
        return OVERLAP_METRICS[self.metric_name](counts[..., 0], counts[..., 1], counts[..., 2])

    def aggregate(self, aggregation: Optional[str] = None) -> torch.Tensor:  # type: ignore[override]
        """Scalar tensor; ``aggregation`` overrides the constructor's choice."""
        agg = _check_aggregation(aggregation or self.aggregation)
        counts = _buffer(self)
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
        num_classes: Optional[int] = None,
        include_background: bool = False,
        activation: Optional[str] = "softmax",
        aggregation: str = "image",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.include_background = include_background
        self.activation = activation
        self.aggregation = _check_aggregation(aggregation)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any):  # type: ignore[override]
        c = _num_classes(self.num_classes, y_pred)
        probs = KF.to_probabilities(y_pred, self.activation)
        mae = KF.mae_per_class(probs, KF.to_onehot(y, c), self.include_background)
        pixels = torch.full((y_pred.shape[0],), float(np.prod(y_pred.shape[2:])), dtype=torch.float64,
                            device=mae.device)
        return mae, pixels

    def aggregate(self, aggregation: Optional[str] = None) -> torch.Tensor:  # type: ignore[override]
        agg = _check_aggregation(aggregation or self.aggregation)
        mae, pixels = _buffer(self)
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
        num_classes: Optional[int] = None,
        percentile: Optional[float] = 95.0,
        spacing: Optional[Any] = None,
        use_meta_spacing: bool = True,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.percentile = percentile
        self.spacing = spacing
        self.use_meta_spacing = use_meta_spacing
        self.include_background = include_background

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any):  # type: ignore[override]
        c = _num_classes(self.num_classes, y_pred)
        spacing, known = _resolve_spacing(self.spacing, self.use_meta_spacing, y_pred, y, kwargs.get("spacing"))
        hd = KF.hausdorff_distance(
            KF.pred_to_class_ids(y_pred), y, c, spacing=spacing, percentile=self.percentile,
            include_background=self.include_background,
        )
        return hd, torch.full((y_pred.shape[0],), float(known), dtype=torch.float64, device=hd.device)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        hd, _ = _buffer(self)
        return _nanmean(_nanmean(hd, dim=0))

    def skipped(self) -> int:
        """Number of (image, class) pairs whose HD95 is NaN (exactly one mask empty)."""
        hd, _ = _buffer(self)
        return int(torch.isnan(hd).sum())

    def unit(self) -> str:
        """``"mm"``, ``"pixel"`` or ``"mixed"`` for the buffered images."""
        _, known = _buffer(self)
        return _unit(known)


def _cpu(buf: Any) -> Any:
    """Buffers to CPU for the reductions (they may live on the GPU during the run)."""
    if isinstance(buf, torch.Tensor):
        return buf.cpu()
    if isinstance(buf, (list, tuple)):
        return [_cpu(b) for b in buf]
    return buf


def _buffer(metric: CumulativeIterationMetric) -> Any:
    """The metric's buffer on CPU; ``ValueError`` when nothing was evaluated yet."""
    buf = metric.get_buffer()
    if buf is None or (isinstance(buf, torch.Tensor) and buf.numel() == 0) or (
        isinstance(buf, list) and (not buf or buf[0].numel() == 0)
    ):
        raise ValueError(f"{type(metric).__name__}: no images were evaluated.")
    return _cpu(buf)


def _unit(known: torch.Tensor) -> str:
    if known.numel() == 0 or bool((known == 0).all()):
        return "pixel"
    return "mm" if bool((known == 1).all()) else "mixed"


def _resolve_spacing(spacing: Any, use_meta: bool, y_pred: torch.Tensor, y: torch.Tensor, call_spacing: Any = None):
    """Return ``(spacing for MONAI, known: bool)``: call argument > constructor argument > metadata."""
    if call_spacing is not None:
        return call_spacing, True
    if spacing is not None:
        return spacing, True
    if use_meta:
        for t in (y, y_pred):
            s = KF.spacing_from_meta(t, y_pred.ndim - 2)
            if s is not None:
                return s, True
    return None, False


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

    def __init__(self, loss_fn: Optional[Callable[..., torch.Tensor]] = None) -> None:
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
        losses = _buffer(self)
        return torch.as_tensor(KF.loss_rate(losses), dtype=torch.float64)


def _case_ids_of(t: Any, n: int) -> Optional[List[str]]:
    meta = getattr(t, "meta", None)
    if not isinstance(meta, dict) or "filename_or_obj" not in meta:
        return None
    v = meta["filename_or_obj"]
    vals = [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]
    return vals if len(vals) == n else None


class SegmentationMetrics(CumulativeIterationMetric):
    """All of kneeseg's metrics in one pass: per-image rows and a summary.

    Each call buffers, per image: the loss, the MAE, the ``(tp, fp, fn, tn)`` counts, the HD95 per
    foreground class and whether the spacing was known, plus a case id (``case_ids=`` argument, else
    ``meta["filename_or_obj"]`` of ``y`` or ``y_pred``, else ``case_0000``, ...).
    :meth:`rows` returns one dict per image; :meth:`aggregate` returns the summary dict (see
    ``docs/metrics.md``) with ``per_image_mean`` and ``pooled`` aggregates, per-class values and the
    number of skipped (NaN) HD95 values.

    Args:
        num_classes: ``C``; ``None`` takes it from ``y_pred``.
        loss_fn: as in :class:`LossRateMetric` (default cross-entropy, the paper's loss rate).
        train_loss_fn: optionally the training loss (e.g. Dice + CE), reported as its own
            ``train_loss`` so that the loss rate stays the paper's cross-entropy.
        activation: ``"softmax"`` (logits) or ``None`` (probabilities).
        include_background: include class 0 in the class-wise metrics.
        compute_hd95: compute HD95 (the slowest metric).
        hd_percentile: percentile of the Hausdorff distance.
        spacing: fixed spacing for HD95; ``None`` reads MetaTensor affines (``use_meta_spacing``).
        use_meta_spacing: see :class:`HD95Metric`.
        class_names: names for the classes ``0..C-1`` (used in row/summary keys); default their ids.
    """

    def __init__(
        self,
        num_classes: Optional[int] = None,
        loss_fn: Optional[Callable[..., torch.Tensor]] = None,
        activation: Optional[str] = "softmax",
        include_background: bool = False,
        compute_hd95: bool = True,
        hd_percentile: Optional[float] = 95.0,
        spacing: Optional[Any] = None,
        use_meta_spacing: bool = True,
        class_names: Optional[Sequence[str]] = None,
        train_loss_fn: Optional[Callable[..., torch.Tensor]] = None,
    ) -> None:
        self._case_ids: List[str] = []
        super().__init__()
        self.num_classes = num_classes
        self.activation = activation
        self.include_background = include_background
        self.compute_hd95 = compute_hd95
        self.hd_percentile = hd_percentile
        self.spacing = spacing
        self.use_meta_spacing = use_meta_spacing
        self.class_names = list(class_names) if class_names is not None else None
        self._loss = LossRateMetric(loss_fn)
        self._train_loss = None if train_loss_fn is None else LossRateMetric(train_loss_fn)
        self._seen_classes: Optional[int] = None

    def reset(self) -> None:
        super().reset()
        self._case_ids = []

    def __call__(self, y_pred: Any, y: Any = None, **kwargs: Any):  # type: ignore[override]
        ids = kwargs.pop("case_ids", None)
        if y is None:
            raise ValueError("SegmentationMetrics needs labels y.")
        if isinstance(y_pred, (list, tuple)):
            n = len(y_pred)
            if ids is None:
                found = [(_case_ids_of(l, 1) or _case_ids_of(p, 1) or [None])[0] for p, l in zip(y_pred, y)]
                ids = found
        else:
            n = int(y_pred.shape[0])
            if ids is None:
                ids = _case_ids_of(y, n) or _case_ids_of(y_pred, n) or [None] * n
        ids = [str(i) if i is not None else None for i in ids]
        if len(ids) != n:
            raise ValueError(f"got {len(ids)} case ids for {n} images.")
        start = len(self._case_ids)
        ret = super().__call__(y_pred, y, **kwargs)
        self._case_ids.extend(i if i is not None else f"case_{start + k:04d}" for k, i in enumerate(ids))
        return ret

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any):  # type: ignore[override]
        c = _num_classes(self.num_classes, y_pred)
        if self._seen_classes is not None and self._seen_classes != c:
            raise ValueError(f"y_pred changed from {self._seen_classes} to {c} channels between calls.")
        self._seen_classes = c
        b = y_pred.shape[0]
        spacing, known = _resolve_spacing(self.spacing, self.use_meta_spacing, y_pred, y, kwargs.get("spacing"))
        pred_ids = KF.pred_to_class_ids(y_pred)
        y_oh = KF.to_onehot(y, c)
        counts = torch.stack(KF.segmentation_counts(pred_ids, y_oh, c, self.include_background), dim=-1)
        mae = KF.mae_per_class(KF.to_probabilities(y_pred, self.activation), y_oh, self.include_background)
        dev = counts.device
        pixels = torch.full((b,), float(np.prod(y_pred.shape[2:])), dtype=torch.float64, device=dev)
        loss = self._loss.per_sample(y_pred, y).to(dev)
        if self._train_loss is not None:
            train_loss = self._train_loss.per_sample(y_pred, y).to(dev)
        else:
            train_loss = torch.full((b,), float("nan"), dtype=torch.float64, device=dev)
        if self.compute_hd95:
            hd = KF.hausdorff_distance(pred_ids, y_oh, c, spacing=spacing, percentile=self.hd_percentile,
                                       include_background=self.include_background).double()
        else:
            hd = torch.full((b, counts.shape[1]), float("nan"), dtype=torch.float64, device=dev)
        known_t = torch.full((b,), float(known), dtype=torch.float64, device=dev)
        return counts, mae, pixels, loss, hd.to(dev), known_t, train_loss

    # ------------------------------------------------------------------ results
    def _classes(self) -> List[str]:
        c = self._seen_classes or self.num_classes or 0
        first = 0 if self.include_background else 1
        names = self.class_names or [str(i) for i in range(c)]
        return [str(names[i]) for i in range(first, c)]

    def _results(self):
        return _buffer(self)

    def case_ids(self) -> List[str]:
        """Case ids in buffer order (gathered across ranks under torch.distributed)."""
        ids = list(self._case_ids)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from monai.utils import string_list_all_gather

            ids = string_list_all_gather(ids)
        return ids

    def rows(self) -> List[Dict[str, Any]]:
        """One dict per image: ``case_id``, ``loss``, ``mae``, ``f1``, ``dice``, ``iou``, ``precision``,
        ``recall``, ``hd95`` (class means; HD95 NaN-skipping), ``hd95_unit``, then per class ``<name>``:
        ``tp_<name>``, ``fp_<name>``, ``fn_<name>``, ``tn_<name>``, the five scores, ``mae_<name>``, ``hd95_<name>``."""
        counts, mae, _, loss, hd, known, train_loss = self._results()
        tp, fp, fn, tn = counts.unbind(-1)
        scores = {k: f(tp, fp, fn) for k, f in OVERLAP_METRICS.items()}
        ids = self.case_ids()
        classes = self._classes()
        out: List[Dict[str, Any]] = []
        for i in range(counts.shape[0]):
            row: Dict[str, Any] = {"case_id": ids[i] if i < len(ids) else f"case_{i:04d}",
                                   "loss": float(loss[i]), "mae": float(mae[i].mean())}
            if self._train_loss is not None:
                row["train_loss"] = float(train_loss[i])
            for k in OVERLAP_METRICS:
                row[k] = float(scores[k][i].mean())
            row["hd95"] = _float_nanmean(hd[i])
            row["hd95_unit"] = "mm" if known[i] == 1 else "pixel"
            for j, name in enumerate(classes):
                row[f"tp_{name}"] = int(tp[i, j])
                row[f"fp_{name}"] = int(fp[i, j])
                row[f"fn_{name}"] = int(fn[i, j])
                row[f"tn_{name}"] = int(tn[i, j])
                for k in OVERLAP_METRICS:
                    row[f"{k}_{name}"] = float(scores[k][i, j])
                row[f"mae_{name}"] = float(mae[i, j])
                row[f"hd95_{name}"] = float(hd[i, j])
            out.append(row)
        return out

    def aggregate(self) -> Dict[str, Any]:  # type: ignore[override]
        """Summary dict: ``num_cases``, ``classes``, ``per_image_mean`` (all images),
        ``num_cases_with_structure`` and ``per_image_mean_with_structure`` (the same means over the
        images whose truth holds the class), ``pooled``, ``per_image_std``, ``per_class``,
        ``hd95_unit``, ``hd95_skipped``, ``hd95_evaluated``, ``table_shows``."""
        counts, mae, pixels, loss, hd, known, train_loss = self._results()
        tp, fp, fn, _ = counts.unbind(-1)
        n = counts.shape[0]
        classes = self._classes()
        per_img_cls = {k: f(tp, fp, fn) for k, f in OVERLAP_METRICS.items()}  # (N, K)
        tot = counts.sum(dim=0)
        pooled_cls = {k: f(tot[:, 0], tot[:, 1], tot[:, 2]) for k, f in OVERLAP_METRICS.items()}  # (K,)
        mae_pooled_cls = (mae * pixels[:, None]).sum(0) / pixels.sum()
        hd_cls = _nanmean(hd, dim=0)  # (K,)
        lr = KF.loss_rate(loss)
        image_mean: Dict[str, Optional[float]] = {"loss_rate": lr, "mae": float(mae.mean(0).mean())}
        pooled: Dict[str, Optional[float]] = {"loss_rate": lr, "mae": float(mae_pooled_cls.mean())}
        std: Dict[str, Optional[float]] = {"loss_rate": _std(loss), "mae": _std(mae.mean(1))}
        if self._train_loss is not None:
            image_mean["train_loss"] = pooled["train_loss"] = KF.loss_rate(train_loss)
            std["train_loss"] = _std(train_loss)
        for k in OVERLAP_METRICS:
            image_mean[k] = float(per_img_cls[k].mean(0).mean())
            pooled[k] = float(pooled_cls[k].mean())
            std[k] = _std(per_img_cls[k].mean(1))
        image_mean["hd95"] = _float_nanmean(hd_cls) if self.compute_hd95 else None
        pooled["hd95"] = None  # a distance has no pooled (micro) form
        std["hd95"] = _std(torch.tensor([_float_nanmean(r) for r in hd], dtype=torch.float64))
        # the same means over the images whose truth holds the class: a structure-free image with an
        # empty prediction scores F1 = 1, which flatters datasets with many such images
        has = (tp + fn) > 0  # (N, K)
        with_structure: Dict[str, Optional[float]] = {}
        if bool(has.any()):
            def masked(x: torch.Tensor) -> float:
                per_cls = [x[has[:, j], j].double().mean() for j in range(x.shape[1]) if bool(has[:, j].any())]
                return float(torch.stack(per_cls).mean())

            for k in OVERLAP_METRICS:
                with_structure[k] = masked(per_img_cls[k])
            with_structure["mae"] = masked(mae)
            rows_with = has.any(dim=1)
            with_structure["loss_rate"] = KF.loss_rate(loss[rows_with])
            with_structure["hd95"] = image_mean["hd95"]  # HD95 is only defined where the truth is not empty
        per_class: Dict[str, Any] = {}
        for j, name in enumerate(classes):
            pim = {k: float(per_img_cls[k][:, j].mean()) for k in OVERLAP_METRICS}
            pim["mae"] = float(mae[:, j].mean())
            pim["hd95"] = float(hd_cls[j]) if self.compute_hd95 else None
            pp = {k: float(pooled_cls[k][j]) for k in OVERLAP_METRICS}
            pp["mae"] = float(mae_pooled_cls[j])
            pp.update({"tp": int(tot[j, 0]), "fp": int(tot[j, 1]), "fn": int(tot[j, 2]), "tn": int(tot[j, 3])})
            per_class[name] = {
                "per_image_mean": pim,
                "pooled": pp,
                "hd95_skipped": int(torch.isnan(hd[:, j]).sum()) if self.compute_hd95 else 0,
            }
        return {
            "num_cases": int(n),
            "classes": classes,
            "table_shows": "per_image_mean",
            "per_image_mean": image_mean,
            "num_cases_with_structure": int(has.any(dim=1).sum()),
            "per_image_mean_with_structure": with_structure,
            "pooled": pooled,
            "per_image_std": std,
            "per_class": per_class,
            "hd95_percentile": self.hd_percentile if self.compute_hd95 else None,
            "hd95_unit": _unit(known) if self.compute_hd95 else None,
            "hd95_evaluated": int((~torch.isnan(hd)).sum()) if self.compute_hd95 else 0,
            "hd95_skipped": int(torch.isnan(hd).sum()) if self.compute_hd95 else 0,
        }


def _float_nanmean(x: torch.Tensor) -> float:
    x = x.double()
    return float("nan") if bool(torch.isnan(x).all()) else float(torch.nanmean(x))


def _std(x: torch.Tensor) -> Optional[float]:
    x = x.double()
    x = x[~torch.isnan(x)]
    if x.numel() == 0:
        return None
    return float(x.std(unbiased=True)) if x.numel() > 1 else 0.0
