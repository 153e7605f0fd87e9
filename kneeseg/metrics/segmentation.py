"""All of kneeseg's metrics in one pass (:class:`SegmentationMetrics`): one row per image and the summary.

The per-image values are those of :mod:`kneeseg.metrics.cumulative`'s single metrics (overlap
counts, MAE, HD95, loss rate), computed by them; this class adds the case ids, the per-image
rows and the summary (``docs/metrics.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from kneeseg.metrics import functional as KF
from kneeseg.metrics.cumulative import (
    OVERLAP_METRICS,
    HD95Metric,
    LossRateMetric,
    MAEMetric,
    OverlapMetric,
    metric_buffer,
    nan_mean,
    class_count,
    distance_unit,
)

__all__ = ["SegmentationMetrics"]


def _case_ids_of(t: Any, n: int) -> list[str] | None:
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
        num_classes: int | None = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        activation: str | None = "softmax",
        include_background: bool = False,
        compute_hd95: bool = True,
        hd_percentile: float | None = 95.0,
        spacing: Any | None = None,
        use_meta_spacing: bool = True,
        class_names: Sequence[str] | None = None,
        train_loss_fn: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        self._case_ids: list[str] = []
        super().__init__()
        self.num_classes = num_classes
        self.include_background = include_background
        self.compute_hd95 = compute_hd95
        self.class_names = list(class_names) if class_names is not None else None
        # the single metrics compute the per-image values (their buffers stay unused)
        self._overlap = OverlapMetric("f1", num_classes, include_background)
        self._mae = MAEMetric(num_classes, include_background, activation)
        self._hd95 = HD95Metric(num_classes, hd_percentile, spacing, use_meta_spacing, include_background)
        self._loss = LossRateMetric(loss_fn)
        self._train_loss = None if train_loss_fn is None else LossRateMetric(train_loss_fn)
        self._seen_classes: int | None = None

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
        c = class_count(self.num_classes, y_pred)
        if self._seen_classes is not None and self._seen_classes != c:
            raise ValueError(f"y_pred changed from {self._seen_classes} to {c} channels between calls.")
        self._seen_classes = c
        b = y_pred.shape[0]
        counts = self._overlap._compute_tensor(y_pred, y)
        dev = counts.device
        mae, pixels = (t.to(dev) for t in self._mae._compute_tensor(y_pred, y))
        loss = self._loss.per_sample(y_pred, y).to(dev)
        if self._train_loss is not None:
            train_loss = self._train_loss.per_sample(y_pred, y).to(dev)
        else:
            train_loss = torch.full((b,), float("nan"), dtype=torch.float64, device=dev)
        if self.compute_hd95:
            hd, known_t = self._hd95._compute_tensor(y_pred, y, **kwargs)
        else:
            hd = torch.full((b, counts.shape[1]), float("nan"), dtype=torch.float64, device=dev)
            _, known = self._hd95.resolve_spacing(y_pred, y, kwargs.get("spacing"))
            known_t = torch.full((b,), float(known), dtype=torch.float64, device=dev)
        return counts, mae, pixels, loss, hd.double().to(dev), known_t.to(dev), train_loss

    # ------------------------------------------------------------------ results
    def _classes(self) -> list[str]:
        c = self._seen_classes or self.num_classes or 0
        first = 0 if self.include_background else 1
        names = self.class_names or [str(i) for i in range(c)]
        return [str(names[i]) for i in range(first, c)]

    def _results(self):
        return metric_buffer(self)

    def case_ids(self) -> list[str]:
        """Case ids in buffer order (gathered across ranks under torch.distributed)."""
        ids = list(self._case_ids)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from monai.utils import string_list_all_gather

            ids = string_list_all_gather(ids)
        return ids

    def rows(self) -> list[dict[str, Any]]:
        """One dict per image: ``case_id``, ``loss``, ``mae``, ``f1``, ``dice``, ``iou``, ``precision``,
        ``recall``, ``hd95`` (class means; HD95 NaN-skipping), ``hd95_unit``, then per class ``<name>``:
        ``tp_<name>``, ``fp_<name>``, ``fn_<name>``, ``tn_<name>``, the five scores, ``mae_<name>``, ``hd95_<name>``."""
        counts, mae, _, loss, hd, known, train_loss = self._results()
        tp, fp, fn, tn = counts.unbind(-1)
        scores = {k: f(tp, fp, fn) for k, f in OVERLAP_METRICS.items()}
        ids = self.case_ids()
        classes = self._classes()
        out: list[dict[str, Any]] = []
        for i in range(counts.shape[0]):
            row: dict[str, Any] = {"case_id": ids[i] if i < len(ids) else f"case_{i:04d}",
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

    def aggregate(self) -> dict[str, Any]:  # type: ignore[override]
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
        hd_cls = nan_mean(hd, dim=0)  # (K,)
        lr = KF.loss_rate(loss)
        image_mean: dict[str, float | None] = {"loss_rate": lr, "mae": float(mae.mean(0).mean())}
        pooled: dict[str, float | None] = {"loss_rate": lr, "mae": float(mae_pooled_cls.mean())}
        std: dict[str, float | None] = {"loss_rate": _std(loss), "mae": _std(mae.mean(1))}
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
        with_structure: dict[str, float | None] = {}
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
        per_class: dict[str, Any] = {}
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
            "hd95_percentile": self._hd95.percentile if self.compute_hd95 else None,
            "hd95_unit": distance_unit(known) if self.compute_hd95 else None,
            "hd95_evaluated": int((~torch.isnan(hd)).sum()) if self.compute_hd95 else 0,
            "hd95_skipped": int(torch.isnan(hd).sum()) if self.compute_hd95 else 0,
        }


def _float_nanmean(x: torch.Tensor) -> float:
    x = x.double()
    return float("nan") if bool(torch.isnan(x).all()) else float(torch.nanmean(x))


def _std(x: torch.Tensor) -> float | None:
    x = x.double()
    x = x[~torch.isnan(x)]
    if x.numel() == 0:
        return None
    return float(x.std(unbiased=True)) if x.numel() > 1 else 0.0
