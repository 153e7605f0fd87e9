"""Pure tensor formulas for kneeseg's segmentation metrics (no state, no engines).

Conventions (see ``docs/metrics.md``):

- ``y_pred`` is the network output ``(B, C, *spatial)`` with one channel per class (``C >= 2``),
  logits (``activation="softmax"``, the default) or probabilities (``activation=None``).
- ``y`` is the label, either class ids ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
- Results are per image and per *foreground* class: shape ``(B, K)`` with ``K = C - 1``
  (class 0, the background, is excluded unless ``include_background=True``).
- Empty label and empty prediction: Dice/F1/IoU = 1; precision (recall) = 1 when its denominator
  is 0 and FN (FP) is 0, else 0; HD95 = 0 when both are empty and NaN when exactly one is empty.

Precision, recall, Dice and IoU are MONAI's :func:`monai.metrics.compute_confusion_matrix_metric`
of the counts, with these conventions where MONAI has no value (NaN); the paper's F1 is the
harmonic mean of precision and recall.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.utils import affine_to_spacing
from monai.metrics import compute_confusion_matrix_metric, compute_hausdorff_distance
from monai.networks.utils import one_hot

__all__ = [
    "as_tensor",
    "to_probabilities",
    "pred_to_class_ids",
    "to_class_ids",
    "to_onehot",
    "segmentation_counts",
    "precision_from_counts",
    "recall_from_counts",
    "f1_from_counts",
    "dice_from_counts",
    "iou_from_counts",
    "mae_per_class",
    "mae_foreground",
    "cross_entropy_per_sample",
    "loss_rate",
    "hausdorff_distance",
    "spacing_from_meta",
]

SpacingLike = float | Sequence[float] | Sequence[Sequence[float]] | None


def as_tensor(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` as a plain ``torch.Tensor`` (drops MONAI ``MetaTensor`` metadata), detached."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return x.detach()


def _check_pred(y_pred: torch.Tensor) -> None:
    if y_pred.ndim < 3:
        raise ValueError(f"y_pred must be (B, C, *spatial), got shape {tuple(y_pred.shape)}.")
    if y_pred.shape[1] < 2:
        raise ValueError(
            f"y_pred must have one channel per class (C >= 2, background included), got C={y_pred.shape[1]}; "
            "for a single-channel sigmoid output stack [1 - p, p] first."
        )


def to_probabilities(y_pred: torch.Tensor, activation: str | None = "softmax") -> torch.Tensor:
    """Class probabilities ``(B, C, *spatial)`` (float32) from the network output.

    Args:
        y_pred: ``(B, C, *spatial)`` logits (``activation="softmax"``) or probabilities (``None``/``"none"``).
        activation: ``"softmax"`` or ``None``/``"none"``.

    Raises:
        ValueError: unknown ``activation`` or ``C < 2``.
    """
    y_pred = as_tensor(y_pred)
    _check_pred(y_pred)
    if activation is None or str(activation).lower() == "none":
        return y_pred.float()
    if str(activation).lower() == "softmax":
        return torch.softmax(y_pred.float(), dim=1)
    raise ValueError(f"activation must be 'softmax' or None, got {activation!r}.")


def pred_to_class_ids(y_pred: torch.Tensor) -> torch.Tensor:
    """Argmax prediction ``(B, 1, *spatial)`` (int64) from logits or probabilities ``(B, C, *spatial)``."""
    y_pred = as_tensor(y_pred)
    _check_pred(y_pred)
    return torch.argmax(y_pred, dim=1, keepdim=True)


def to_class_ids(y: torch.Tensor) -> torch.Tensor:
    """Class ids ``(B, 1, *spatial)`` (int64) from class ids ``(B, 1, ...)`` or one-hot ``(B, C, ...)``."""
    y = as_tensor(y)
    if y.ndim < 3:
        raise ValueError(f"labels must be (B, 1, *spatial) or (B, C, *spatial), got shape {tuple(y.shape)}.")
    if y.shape[1] == 1:
        return torch.round(y.float()).long() if y.is_floating_point() else y.long()
    return torch.argmax(y, dim=1, keepdim=True)


def to_onehot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot labels ``(B, num_classes, *spatial)`` (float32) from class ids or one-hot.

    Raises:
        ValueError: class ids outside ``[0, num_classes)`` or a channel count that is neither 1 nor
            ``num_classes``.
    """
    y = as_tensor(y)
    if y.ndim < 3:
        raise ValueError(f"labels must be (B, 1, *spatial) or (B, C, *spatial), got shape {tuple(y.shape)}.")
    if y.shape[1] == num_classes and num_classes > 1:
        return (y > 0.5).float()
    if y.shape[1] != 1:
        raise ValueError(
            f"labels have {y.shape[1]} channels: expected 1 (class ids) or num_classes={num_classes} (one-hot)."
        )
    ids = to_class_ids(y)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        raise ValueError(
            f"label class ids must lie in [0, {num_classes - 1}], found [{int(ids.min())}, {int(ids.max())}]."
        )
    return one_hot(ids, num_classes=num_classes, dim=1)


def _first_class(include_background: bool) -> int:
    return 0 if include_background else 1


def segmentation_counts(
    y_pred_labels: torch.Tensor, y: torch.Tensor, num_classes: int, include_background: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """True/false positives/negatives per image and class.

    Args:
        y_pred_labels: predicted class ids ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``
            (use :func:`pred_to_class_ids` on logits).
        y: label class ids ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
        num_classes: ``C``, background included.
        include_background: keep class 0 (default: foreground classes only).

    Returns:
        ``(tp, fp, fn, tn)``, each ``(B, K)`` float64 with ``K = C - 1`` (or ``C``).
    """
    # counted here, not with monai.metrics.get_confusion_matrix: that one returns float32 counts,
    # inexact beyond 2**24 pixels per image (a 512 x 512 x 64 volume's TN)
    p = to_onehot(y_pred_labels, num_classes).bool()
    t = to_onehot(y, num_classes).bool()
    if p.shape != t.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and label {tuple(t.shape)} shapes differ.")
    c0 = _first_class(include_background)
    p, t = p[:, c0:], t[:, c0:]
    dims = tuple(range(2, p.ndim))
    tp = (p & t).sum(dim=dims)
    fp = (p & ~t).sum(dim=dims)
    fn = (~p & t).sum(dim=dims)
    tn = (~p & ~t).sum(dim=dims)
    return tp.double(), fp.double(), fn.double(), tn.double()


def _ratio(num: torch.Tensor, den: torch.Tensor, if_zero: torch.Tensor) -> torch.Tensor:
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, if_zero.to(num.dtype))


def _confusion_ratio(metric_name: str, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, if_undefined: Callable) -> torch.Tensor:
    """MONAI's confusion-matrix metric ``metric_name`` of the counts (float64, their broadcast shape),
    and ``if_undefined(tp, fp, fn)`` where MONAI has no value (NaN: a zero denominator)."""
    tp, fp, fn = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float64) for v in (tp, fp, fn)))
    matrix = torch.stack([tp, fp, torch.zeros_like(tp), fn], dim=-1)  # MONAI's (tp, fp, tn, fn); tn unused here
    value = compute_confusion_matrix_metric(metric_name, matrix).reshape(tp.shape)
    return torch.where(torch.isnan(value), if_undefined(tp, fp, fn).to(value.dtype), value)


def precision_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """``TP / (TP + FP)``; when nothing is predicted: 1 if ``FN == 0`` (label empty too) else 0."""
    return _confusion_ratio("precision", tp, fp, fn, lambda tp, fp, fn: fn == 0)


def recall_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """``TP / (TP + FN)``; when the label is empty: 1 if ``FP == 0`` (prediction empty too) else 0."""
    return _confusion_ratio("recall", tp, fp, fn, lambda tp, fp, fn: fp == 0)


def f1_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """The paper's F1: ``2 P R / (P + R)`` from :func:`precision_from_counts` and :func:`recall_from_counts`.

    Equals ``2 TP / (2 TP + FP + FN)`` (Dice) whenever ``TP > 0``; 1 when label and prediction
    are both empty; 0 when exactly one is empty (``P + R = 0``).
    """
    p = precision_from_counts(tp, fp, fn)
    r = recall_from_counts(tp, fp, fn)
    return _ratio(2 * p * r, p + r, torch.zeros_like(p))


def dice_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """``2 TP / (2 TP + FP + FN)`` (MONAI's "f1 score"); 1 when label and prediction are both empty."""
    return _confusion_ratio("f1 score", tp, fp, fn, lambda tp, fp, fn: torch.ones_like(tp))


def iou_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Jaccard ``TP / (TP + FP + FN)`` (MONAI's "threat score"); 1 when label and prediction are both empty."""
    return _confusion_ratio("threat score", tp, fp, fn, lambda tp, fp, fn: torch.ones_like(tp))


def mae_per_class(probs: torch.Tensor, y_onehot: torch.Tensor, include_background: bool = False) -> torch.Tensor:
    """Mean over pixels of ``|onehot(y)_c - p_c|`` per image and class.

    Args:
        probs: class probabilities ``(B, C, *spatial)`` (see :func:`to_probabilities`).
        y_onehot: one-hot labels ``(B, C, *spatial)`` (see :func:`to_onehot`).
        include_background: keep class 0.

    Returns:
        ``(B, K)`` float64.
    """
    probs, y_onehot = as_tensor(probs), as_tensor(y_onehot)
    if probs.shape != y_onehot.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and one-hot labels {tuple(y_onehot.shape)} shapes differ.")
    c0 = _first_class(include_background)
    err = (y_onehot[:, c0:].double() - probs[:, c0:].double()).abs()
    return err.mean(dim=tuple(range(2, err.ndim)))


def mae_foreground(probs: torch.Tensor, y_onehot: torch.Tensor, include_background: bool = False) -> torch.Tensor:
    """The paper's MAE per image ``(B,)``: :func:`mae_per_class` averaged over the foreground classes.

    For two classes this is the mean over pixels of ``|y - p_fg|``.
    """
    return mae_per_class(probs, y_onehot, include_background).mean(dim=1)


def cross_entropy_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over softmax outputs, averaged over the pixels of each sample: ``(B,)`` float.

    ``cross_entropy_per_sample(x, y).mean() == torch.nn.functional.cross_entropy(x, y[:, 0])`` when
    all samples have the same size.

    Args:
        logits: ``(B, C, *spatial)``.
        y: class ids ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
    """
    logits = as_tensor(logits)
    _check_pred(logits)
    target = to_class_ids(y)[:, 0]
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return ce.flatten(1).mean(dim=1)


def loss_rate(losses: torch.Tensor | Sequence[float]) -> float:
    """The paper's loss rate: the mean of per-sample losses over the evaluated samples.

    Raises:
        ValueError: no losses.
    """
    t = torch.as_tensor(losses if isinstance(losses, torch.Tensor) else list(losses), dtype=torch.float64)
    if t.numel() == 0:
        raise ValueError("loss_rate needs at least one sample loss.")
    return float(t.mean())


def hausdorff_distance(
    y_pred_labels: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    spacing: SpacingLike = None,
    percentile: float | None = 95.0,
    include_background: bool = False,
) -> torch.Tensor:
    """Symmetric (percentile) Hausdorff distance per image and class, via MONAI's
    :func:`monai.metrics.compute_hausdorff_distance` on the edges of the masks.

    Args:
        y_pred_labels: predicted class ids ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
        y: label class ids ``(B, 1, *spatial)`` or one-hot ``(B, C, *spatial)``.
        num_classes: ``C``.
        spacing: pixel spacing (mm): a number, one sequence for all images or one per image; ``None``
            measures in pixels.
        percentile: 95 for HD95; ``None`` for the maximum (classic Hausdorff distance).
        include_background: keep class 0.

    Returns:
        ``(B, K)`` float32: 0 where both masks are empty, NaN where exactly one is empty.
    """
    p = to_onehot(y_pred_labels, num_classes)
    t = to_onehot(y, num_classes)
    with warnings.catch_warnings():  # MONAI warns on every empty mask; our convention handles them
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(
            p, t, include_background=include_background, percentile=percentile, spacing=spacing
        ).float()
    c0 = _first_class(include_background)
    dims = tuple(range(2, p.ndim))
    p_empty = p[:, c0:].sum(dim=dims) == 0
    t_empty = t[:, c0:].sum(dim=dims) == 0
    hd = torch.where(p_empty & t_empty, torch.zeros_like(hd), hd)
    return torch.where(p_empty ^ t_empty, torch.full_like(hd, float("nan")), hd)


def spacing_from_meta(x: torch.Tensor, spatial_dims: int | None = None) -> list | None:
    """Per-image pixel spacing read from a MONAI ``MetaTensor``'s affine, or ``None``.

    The affine is kept up to date by MONAI's spatial transforms (resize, pad), so the spacing is that
    of the evaluated array. Falls back to ``meta["pixdim"][1:]`` (NIfTI header) when there is no
    affine; plain tensors and images whose meta says ``has_geometry: False`` (2D files, slices cut
    from volumes) return ``None`` (distances then stay in pixels).

    Args:
        x: ``(B, C, *spatial)`` tensor, batched or not.
        spatial_dims: number of spatial dimensions (default ``x.ndim - 2``).

    Returns:
        a list of ``B`` lists of ``spatial_dims`` floats, or ``None``.
    """
    n = x.shape[0]
    sd = spatial_dims or x.ndim - 2
    meta = getattr(x, "meta", None)
    if not isinstance(meta, dict):
        return None
    flag = meta.get("has_geometry")
    if flag is not None and not bool(torch.as_tensor(flag).bool().all()):
        return None  # e.g. a PNG: its affine is a placeholder, distances stay in pixels
    affine = getattr(x, "affine", None)
    rows: list = []
    if affine is not None:
        a = as_tensor(affine).double()
        mats = [a] * n if a.ndim == 2 else list(a)
        for m in mats:
            r = m.shape[-1] - 1
            s = [float(v) for v in affine_to_spacing(m, r=r)][:sd]
            rows.append(s + [1.0] * (sd - len(s)))
    elif "pixdim" in meta:
        pd = np.atleast_2d(np.asarray(meta["pixdim"], dtype=float))
        rows = [[float(v) for v in row[1 : 1 + sd]] for row in pd]
        rows = rows * n if len(rows) == 1 else rows
    else:
        return None
    if len(rows) != n:
        rows = (rows * n)[:n]
    return rows
