"""Planning a batch run: the series under a folder tree become work items, and names become file names.

:func:`plan_work` discovers every series (:func:`kneeseg.data.discover_series`) and decides for
each volume whether to segment it or to report it as ``skipped``/``failed`` with its reason
(:class:`WorkItem`); :func:`safe_name` makes the file-name-safe names of records, output
folders and manifest columns.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kneeseg.files import PathLike

__all__ = ["WorkItem", "plan_work", "safe_name"]


@dataclass
class WorkItem:
    """One manifest row to produce: a volume to segment, or a volume/file to report.

    ``key`` names the record file; ``volume`` is set for volumes; ``status``/``reason`` are
    preset for rows decided at planning time (``skipped``/``failed``), empty for work.
    """

    key: str
    row: dict[str, Any]
    volume: Any = None
    status: str = ""
    reason: str = ""

    @property
    def todo(self) -> bool:
        return not self.status



def safe_name(text: str, fallback: str) -> str:
    """A readable, file-name-safe form of ``text`` (ASCII letters, digits, ``._-``), at most 64
    characters, that two different texts never share: when the text had to be changed (other
    characters) or shortened, a hash of the whole text is added, and a long text keeps its start
    and its end (``..._e0_a12``: suffixes are never dropped)."""
    text = str(text or "")
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    if out == text and len(out) <= 64:
        return out or fallback
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    if len(out) + 13 <= 64:
        return f"{out}-{digest}" if out else f"{fallback}-{digest}"
    return f"{out[:26]}-{digest}-{out[-24:]}"


def _volume_row(vol: Any, root: Path) -> dict[str, Any]:
    folder = os.path.commonpath(vol.files) if len(vol.files) > 1 else vol.files[0]
    try:
        source = os.path.relpath(folder, root)
    except ValueError:
        source = folder
    if source == ".":  # the input folder is the series itself: name it
        source = Path(root).resolve().name or str(root)
    return {
        "patient_id": vol.patient_id,
        "study_uid": vol.study_uid,
        "series_uid": vol.series_uid,
        "series_number": "" if vol.series_number is None else vol.series_number,
        "series_description": vol.series_description,
        "modality": vol.modality,
        "plane": vol.plane,
        "echo_index": vol.echo_index,
        "slices": vol.num_slices,
        "rows": vol.rows,
        "columns": vol.columns,
        "source": source,
    }


def _file_row(path: str, root: Path) -> dict[str, Any]:
    try:
        source = os.path.relpath(path, root)
    except ValueError:
        source = path
    return {"source": source}


def _file_key(prefix: str, path: str) -> str:
    return f"{prefix}-{hashlib.sha1(path.encode()).hexdigest()[:16]}"


def _unreadable_note(vol: Any, unreadable: Mapping[str, Sequence[Any]]) -> str:
    """``segmented from 11 files; 1 unreadable file(s) beside them ...: IM12.dcm: ...`` when files beside the
    series' own could not be read (a broken file of the series would otherwise go unmentioned)."""
    folders = sorted({os.path.dirname(f) for f in vol.files})
    broken = [p for d in folders for p in unreadable.get(d, [])]
    if not broken:
        return ""
    first = broken[0]
    more = f" (+{len(broken) - 1} more)" if len(broken) > 1 else ""
    n = len(set(vol.files))
    return (f"segmented from {n} files; {len(broken)} unreadable file(s) beside them, the series may lack a slice: "
            f"{os.path.basename(first.path)}: {first.message}{more}")


def plan_work(
    root: PathLike,
    *,
    slice_plane: str | None = "sagittal",
    any_plane: bool = False,
    series_filter: str | None = None,
    echo: int | str = 0,
    modalities: Sequence[str] = ("MR",),
    body_part: str | None = "KNEE",
    any_body_part: bool = False,
) -> list[WorkItem]:
    """Discover the series under ``root`` and decide, for each, whether to segment it.

    Args:
        root: folder searched recursively.
        slice_plane: the plane the model was trained on; volumes in another plane are skipped
            unless ``any_plane`` (then they are segmented in their own plane).
        series_filter: regular expression (case-insensitive search) on SeriesDescription;
            non-matching series are skipped.
        echo: echo index segmented in multi-echo series (``"all"``: every echo, one row each).
        modalities: accepted modalities.
        body_part: the body part the model segments (the bundle's ``body_part``): series whose
            BodyPartExamined / descriptions name another one are skipped (a missing tag is
            accepted and noted, :func:`kneeseg.data.series_kind.body_part_decision`); ``None``
            or ``any_body_part`` accepts every body part.

    Siemens MOSAIC and multi-volume diffusion series are skipped with one row per series
    (:func:`kneeseg.data.series_kind.series_skip_reason`).

    Returns:
        Work items in discovery order (patient, study, series number, echo), then one item per
        unreadable file and per ignored non-DICOM file.
    """
    from kneeseg.data.dicom.discovery import discover_series
    from kneeseg.data.series_kind import body_part_decision, series_skip_reason

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"input not found: {root}")
    result = discover_series(root)
    unreadable: dict[str, list[Any]] = {}  # folder -> files in it that could not be read at all
    for problem in result.problems:
        if problem.volume_id is None:
            unreadable.setdefault(os.path.dirname(problem.path), []).append(problem)
    series_in: dict[str, set[str]] = {}  # folder -> series read from it
    for vol in result.volumes:
        for f in vol.files:
            series_in.setdefault(os.path.dirname(f), set()).add(vol.series_uid)
    pattern = re.compile(series_filter, re.IGNORECASE) if series_filter else None
    items: list[WorkItem] = []
    by_series: dict[str, list[Any]] = {}
    for vol in result.volumes:
        by_series.setdefault(vol.series_key or vol.series_uid, []).append(vol)
    done_series: set = set()
    for vol in result.volumes:
        uid = vol.series_key or vol.series_uid
        if uid in done_series:
            continue
        series = by_series[uid]
        n_echoes = max(v.echo_index for v in series) + 1
        skip_series = series_skip_reason(series) if vol.modality in modalities else None
        if skip_series is not None or (echo != "all" and n_echoes > 1 and int(echo) >= n_echoes):
            done_series.add(uid)  # one row for the whole series
            row = _volume_row(vol, root)
            if skip_series is None:
                skip_series = f"--echo {echo}: the series has {n_echoes} echoes (0-{n_echoes - 1})"
            items.append(WorkItem(key=safe_name(f"{uid}_series", "series"), row=row, volume=None,
                                  status="skipped", reason=skip_series))  # fmt: skip
            continue
        if echo != "all" and n_echoes > 1 and vol.echo_index != int(echo):
            continue  # another echo of a multi-echo series: one row per series
        row = _volume_row(vol, root)
        item = WorkItem(key=safe_name(vol.volume_id, "volume"), row=row, volume=vol)
        accept, note = (True, "") if body_part is None else body_part_decision(vol, body_part, any_body_part)
        echo_note = (f"echo {int(echo)} of {n_echoes} segmented (--echo all segments every echo)"
                     if echo != "all" and n_echoes > 1 else "")  # fmt: skip
        row["notes"] = "; ".join([n for n in [note, echo_note, _unreadable_note(vol, unreadable),
                                              *vol.extra.get("notes", [])] if n])  # fmt: skip
        if vol.modality not in modalities:
            item.status = "skipped"
            item.reason = f"modality {vol.modality or 'unknown'}: the model segments {'/'.join(modalities)} images"
        elif vol.issues:
            joined = "; ".join(vol.issues)
            unsupported = any(i.startswith(("mixed orientations", "colour images")) for i in vol.issues)
            item.status, item.reason = ("skipped" if unsupported else "failed"), joined
        elif not accept:
            item.status, item.reason = "skipped", note
            row["notes"] = ""
        elif pattern is not None and not pattern.search(vol.series_description or ""):
            item.status = "skipped"
            item.reason = f"series description {vol.series_description!r} does not match --series-filter {series_filter!r}"
        elif slice_plane and not any_plane and row["plane"] != slice_plane:
            item.status = "skipped"
            item.reason = (
                f"{row['plane']} slices; the model was trained on {slice_plane} slices "
                "(pass --any-plane to segment it in its own plane)"
            )
        items.append(item)
    for problem in result.problems:
        if problem.volume_id is None:
            row = _file_row(problem.path, root)
            beside = series_in.get(os.path.dirname(problem.path), set())
            if len(beside) == 1:  # the file's folder holds one series: most likely it was one of its files
                row["series_uid"] = next(iter(beside))
            items.append(WorkItem(key=_file_key("file", problem.path), row=row, status="failed",
                                  reason=problem.message))  # fmt: skip
    ignored_by_folder: dict[str, list[str]] = {}
    for path in result.ignored:  # one row per folder, however many such files it holds
        ignored_by_folder.setdefault(os.path.dirname(path), []).append(os.path.basename(path))
    for folder, names in ignored_by_folder.items():
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        reason = f"not a DICOM image file: {shown}" if len(names) == 1 else f"{len(names)} files that are not DICOM images: {shown}"
        items.append(WorkItem(key=_file_key("ignored", folder), row=_file_row(folder, root), status="skipped",
                              reason=reason))  # fmt: skip
    return items
