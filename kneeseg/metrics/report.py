"""Metric reports: per-case CSV, summary JSON (both written atomically) and the paper's Table 1."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kneeseg.atomic import atomic_write_text
from kneeseg.files import PathLike

__all__ = ["write_case_csv", "write_summary_json", "read_summary_json", "format_table1", "TABLE1_COLUMNS"]

#: (summary key, column header) in the order of the paper's Table 1, then kneeseg's additions
TABLE1_COLUMNS = (
    ("loss_rate", "Loss rate"),
    ("mae", "MAE"),
    ("f1", "F1"),
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("hd95", "HD95"),
    ("train_loss", "Train loss"),
)


def write_case_csv(rows: Sequence[Mapping[str, Any]], path: PathLike,
                   columns: Sequence[str] | None = None) -> Path:
    """Write one row per case (e.g. :meth:`SegmentationMetrics.rows`) to ``path`` atomically.

    Args:
        rows: dicts; the columns are ``columns`` or the keys in first-seen order.
        path: output CSV.
        columns: explicit column order.

    Returns:
        ``path`` as a ``Path``. Missing values are empty cells, NaN is written as ``nan``.
    """
    if columns is None:
        cols: list[str] = []
        for r in rows:
            cols.extend(k for k in r if k not in cols)
        columns = cols
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_value(r.get(k)) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return v


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> ``None`` (strict JSON), tensors/numpy scalars -> Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_summary_json(summary: Mapping[str, Any], path: PathLike) -> Path:
    """Write ``summary`` as indented strict JSON (NaN/inf become ``null``) to ``path`` atomically."""
    text = json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def read_summary_json(path: PathLike) -> dict[str, Any]:
    """Read a summary written by :func:`write_summary_json` (``null`` metrics come back as NaN)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    for key in ("per_image_mean", "pooled"):
        if isinstance(data.get(key), dict):
            data[key] = {k: (float("nan") if v is None else v) for k, v in data[key].items()}
    return data


def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return "-"
    v = float(v)
    if math.isnan(v):
        return "nan"
    return f"{v:.{digits}f}"


def format_table1(results: Mapping[str, Mapping[str, Any]], aggregation: str = "per_image_mean",
                  digits: int = 4) -> str:
    """A plain-text table laid out like the paper's Table 1, one row per method.

    Columns: Method, Loss rate (mean cross-entropy), MAE, F1 (the paper's), then Dice, IoU,
    Precision, Recall, HD95 (unit from the summaries: ``mm`` or ``px``) and, when the summaries
    have it, the training loss (``train_loss``; e.g. Dice + CE).

    Args:
        results: ``{method: summary}`` with summaries from :meth:`SegmentationMetrics.aggregate`
            (or :func:`read_summary_json`); a flat ``{metric: value}`` dict is accepted too.
        aggregation: ``"per_image_mean"`` (default; mean over images) or ``"pooled"`` (micro).
        digits: decimals (HD95 uses 2).

    Raises:
        ValueError: unknown aggregation.
    """
    if aggregation not in ("per_image_mean", "pooled"):
        raise ValueError(f"aggregation must be 'per_image_mean' or 'pooled', got {aggregation!r}.")
    units = {str(s.get("hd95_unit")) for s in results.values() if s.get("hd95_unit")}
    unit = {"mm": "mm", "pixel": "px"}.get(units.pop(), "mixed") if len(units) == 1 else ("mixed" if units else "")
    columns = [(k, h) for k, h in TABLE1_COLUMNS
               if k != "train_loss" or any("train_loss" in s.get(aggregation, s) for s in results.values())]  # fmt: skip
    headers = ["Method"] + [h if k != "hd95" else (f"HD95 ({unit})" if unit else "HD95") for k, h in columns]
    body = []
    for method, summary in results.items():
        vals = summary.get(aggregation, summary)
        body.append([str(method)] + [_fmt(vals.get(k), 2 if k == "hd95" else digits) for k, _ in columns])
        n_with, n_all = summary.get("num_cases_with_structure"), summary.get("num_cases")
        if aggregation == "per_image_mean" and n_with is not None and n_all is not None and 0 < n_with < n_all:
            # images without the structure score F1 = 1 when nothing is predicted: show both means
            body[-1][0] = f"{method} (all {n_all} images)"
            part = summary.get("per_image_mean_with_structure", {})
            body.append([f"{method} ({n_with} images with the structure)"]
                        + [_fmt(part.get(k), 2 if k == "hd95" else digits) for k, _ in columns])  # fmt: skip
    widths = [max(len(r[i]) for r in [headers] + body) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    ns = sorted({int(s["num_cases"]) for s in results.values() if "num_cases" in s})
    what = "mean over images" if aggregation == "per_image_mean" else "pooled over images (micro)"
    title = f"Table 1 ({what}; foreground classes averaged" + (f"; n={'/'.join(map(str, ns))}" if ns else "") + ")"
    rule = "-" * len(line(headers))
    return "\n".join([title, rule, line(headers), rule, *(line(r) for r in body), rule])
