"""The results of a batch run: ``manifest.csv`` (one row per series or problem) and the per-series records.

Each work item ends as a record (``OUT/.kneeseg/records/<key>.json``: its manifest row plus how
it was made), written when the item is done; the manifest is written from the records at the
end of a run (:func:`collect_rows`, :func:`write_results_csv`), so a killed run loses no
finished series and a rerun rebuilds it. :func:`read_results_csv` reads it back.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.atomic import atomic_write_text
from kneeseg.files import PathLike
from kneeseg.inference.planning import WorkItem, safe_name

__all__ = [
    "MANIFEST_COLUMNS",
    "RECORDS_DIR",
    "RESULTS_CSV",
    "collect_rows",
    "manifest_columns",
    "measurement_fields",
    "outputs_exist",
    "read_record",
    "read_results_csv",
    "record_path",
    "write_record",
    "write_results_csv",
]

#: File name of the results CSV in the output folder (documented for users).
RESULTS_CSV = "manifest.csv"

#: Fixed manifest columns; per foreground class ``volume_ml_<class>``, ``components_<class>`` (3D
#: components before the largest-component cleanup), ``extent_mm_<class>`` (across the model's
#: slices) and ``confidence_<class>`` (mean probability over the mask) follow.
MANIFEST_COLUMNS = [
    "status",
    "reason",
    "qc",
    "notes",
    "patient_id",
    "study_uid",
    "series_uid",
    "series_number",
    "series_description",
    "modality",
    "plane",
    "echo_index",
    "slices",
    "rows",
    "columns",
    "source",
    "seconds",
    "runtime",
    "nifti",
    "dicom_seg",
    "preview",
]

#: Folder of the per-series records, relative to the output folder.
RECORDS_DIR = Path(".kneeseg") / "records"


_MEASURES = (("volume_ml", "volume_ml"), ("components", "raw_components"), ("extent_mm", "through_plane_mm"),
             ("confidence", "confidence"))  # (column prefix, quality-check measurement)


def manifest_columns(class_names: Mapping[int, str]) -> list[str]:
    """Manifest header: :data:`MANIFEST_COLUMNS` plus the per-class measurement columns."""
    names = [safe_name(n, f"class_{c}") for c, n in sorted(class_names.items()) if c > 0]
    return MANIFEST_COLUMNS + [f"{prefix}_{n}" for n in names for prefix, _ in _MEASURES]


def measurement_fields(class_names: Mapping[int, str], measurements: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """A row's per-class measurement columns (see :func:`manifest_columns`) from the quality
    checks' ``measurements`` (:class:`~kneeseg.inference.qc.QCResult`); empty where not measured."""
    fields: dict[str, Any] = {}
    for c, name in class_names.items():
        if c > 0:
            measured = measurements.get(c, {})
            for prefix, key in _MEASURES:
                value = measured.get(key)
                if value is None:
                    shown: Any = ""
                elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                    shown = int(value)  # counts stay integers (components_<class> = 2, not 2.0)
                else:
                    shown = round(float(value), 4)
                fields[f"{prefix}_{safe_name(name, f'class_{c}')}"] = shown
    return fields


def write_results_csv(path: PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` as CSV (atomic)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return atomic_write_text(path, buf.getvalue())


def read_results_csv(path: PathLike) -> list[dict[str, str]]:
    """Rows of a manifest CSV as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ============================================================================ records


def record_path(out: Path, key: str) -> Path:
    """Where the record of work item ``key`` lives under the output folder ``out``."""
    return out / RECORDS_DIR / f"{key}.json"


def read_record(out: Path, key: str) -> dict[str, Any] | None:
    """The record of work item ``key``, or ``None`` when there is none (or it cannot be read)."""
    path = record_path(out, key)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def outputs_exist(out: Path, record: Mapping[str, Any]) -> bool:
    """Whether every output file a record names is there."""
    return all((out / record[k]).is_file() for k in ("nifti", "dicom_seg", "preview") if record.get(k))


def write_record(out: Path, key: str, row: Mapping[str, Any], **extra: Any) -> None:
    """Write a series' record (its row, plus ``extra``) as JSON (atomic)."""
    data = dict(row)
    data.update(extra)
    atomic_write_text(record_path(out, key), json.dumps(data, indent=1, sort_keys=True, default=str))


def collect_rows(
    out: Path, items: Sequence[WorkItem], produced: Mapping[str, dict[str, Any]] | None = None,
    missing: str | None = None,
) -> list[dict[str, Any]]:
    """One row per item: its record, else the row this process produced (a record it could not
    write), else a row saying that no result was recorded -- ``failed``, or with ``missing="interrupted"``
    an ``interrupted`` row that a rerun segments. No item is ever dropped."""
    rows = []
    for it in items:
        rec = read_record(out, it.key)
        if rec is None and produced and it.key in produced:
            rec = dict(produced[it.key])
        if rec is None and missing == "interrupted":
            rec = dict(it.row, status="interrupted", reason="not segmented: the run was interrupted (rerun to resume)")
        if rec is None:  # not reached (e.g. a rank died): say so instead of dropping the row
            rec = dict(it.row, status="failed", reason="no result recorded (the worker stopped before finishing)")
        rows.append(rec)
    return rows
