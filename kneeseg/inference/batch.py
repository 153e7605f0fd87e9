"""Batch inference over a folder tree of DICOM files: every knee MR series in, segmentations out.

:func:`predict_folder` (and ``kneeseg infer DICOM_ROOT -o OUT``):

1. discovers every series under the root (:func:`kneeseg.data.discover_series`; unreadable
   files and non-DICOM files are reported, never fatal);
2. selects the volumes the model applies to: MR, a single plane, the plane the model was
   trained on (sagittal for the shipped bundle), the series filter; everything else becomes a
   ``skipped`` row with its reason, broken series a ``failed`` row;
3. segments each selected volume slice by slice in its acquisition plane
   (:class:`~kneeseg.inference.segmenter.SliceSegmenter`) and maps the labels back to the
   original geometry;
4. writes per series ``OUT/<patient>/<series folder>/``: ``seg.nii.gz`` (label map with the
   series' affine), ``seg.dcm`` (DICOM Segmentation referencing the source instances) and
   ``preview.png``, then a record; ``OUT/manifest.csv`` has one row per series/problem.

Robustness: every output is written atomically (temporary file + rename) and a series'
record (``OUT/.kneeseg/records/<id>.json``) is written last, so a killed run leaves only
complete files; rerunning skips the series whose record says ``ok`` (unless ``overwrite``)
and removes stale temporary files. Reading and preprocessing the next series runs in a
background thread while the current one is inferred, and a writer thread saves outputs.

Scale-out: under ``torchrun`` (``WORLD_SIZE`` > 1) rank 0 discovers, broadcasts the work list,
rank ``r`` takes items ``r, r + N, ...``; after a barrier rank 0 merges the records into one
manifest. All ranks must see the same output folder (a shared file system across nodes).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from kneeseg.atomic import atomic_write_text
from kneeseg.data.nifti import write_nifti
from kneeseg.files import PathLike

__all__ = [
    "FORMATS",
    "MANIFEST_COLUMNS",
    "BatchResult",
    "WorkItem",
    "plan_work",
    "predict_folder",
    "read_manifest",
]

logger = logging.getLogger(__name__)


#: Output formats: NIfTI label map, DICOM Segmentation, PNG preview.
FORMATS = ("nifti", "seg", "png")

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

_RECORDS = Path(".kneeseg") / "records"
_FILE_NAMES = {"nifti": "seg.nii.gz", "seg": "seg.dcm", "png": "preview.png"}


@dataclass
class WorkItem:
    """One manifest row to produce: a volume to segment, or a volume/file to report.

    ``key`` names the record file; ``volume`` is set for volumes; ``status``/``reason`` are
    preset for rows decided at planning time (``skipped``/``failed``), empty for work.
    """

    key: str
    row: Dict[str, Any]
    volume: Any = None
    status: str = ""
    reason: str = ""

    @property
    def todo(self) -> bool:
        return not self.status


@dataclass
class BatchResult:
    """What :func:`predict_folder` did: the manifest path and its rows, and counts per status."""

    manifest: Path
    rows: List[Dict[str, Any]]
    counts: Dict[str, int] = field(default_factory=dict)
    resumed: int = 0
    manifest_error: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise (skipped series are not failures; an unwritable
        manifest is a failure)."""
        return 1 if self.failed or self.manifest_error else 0


# ============================================================================ planning


def _safe(text: str, fallback: str) -> str:
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


def _volume_row(vol: Any, root: Path) -> Dict[str, Any]:
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


def _file_row(path: str, root: Path) -> Dict[str, Any]:
    try:
        source = os.path.relpath(path, root)
    except ValueError:
        source = path
    return {"source": source}


def _file_key(prefix: str, path: str) -> str:
    return f"{prefix}-{hashlib.sha1(path.encode()).hexdigest()[:16]}"


def plan_work(
    root: PathLike,
    *,
    slice_plane: Optional[str] = "sagittal",
    any_plane: bool = False,
    series_filter: Optional[str] = None,
    echo: Union[int, str] = 0,
    modalities: Sequence[str] = ("MR",),
    body_part: Optional[str] = "KNEE",
    any_body_part: bool = False,
) -> List[WorkItem]:
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
    from kneeseg.data.dicom_series import discover_series
    from kneeseg.data.series_kind import body_part_decision, series_skip_reason

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"input not found: {root}")
    result = discover_series(root)
    pattern = re.compile(series_filter, re.IGNORECASE) if series_filter else None
    items: List[WorkItem] = []
    by_series: Dict[str, List[Any]] = {}
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
            items.append(WorkItem(key=_safe(f"{uid}_series", "series"), row=row, volume=None,
                                  status="skipped", reason=skip_series))  # fmt: skip
            continue
        if echo != "all" and n_echoes > 1 and vol.echo_index != int(echo):
            continue  # another echo of a multi-echo series: one row per series
        row = _volume_row(vol, root)
        item = WorkItem(key=_safe(vol.volume_id, "volume"), row=row, volume=vol)
        accept, note = (True, "") if body_part is None else body_part_decision(vol, body_part, any_body_part)
        row["notes"] = "; ".join([n for n in [note, *vol.extra.get("notes", [])] if n])
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
            items.append(
                WorkItem(key=_file_key("file", problem.path), row=_file_row(problem.path, root),
                         status="failed", reason=problem.message)
            )  # fmt: skip
    ignored_by_folder: Dict[str, List[str]] = {}
    for path in result.ignored:  # one row per folder, however many such files it holds
        ignored_by_folder.setdefault(os.path.dirname(path), []).append(os.path.basename(path))
    for folder, names in ignored_by_folder.items():
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        reason = f"not a DICOM image file: {shown}" if len(names) == 1 else f"{len(names)} files that are not DICOM images: {shown}"
        items.append(WorkItem(key=_file_key("ignored", folder), row=_file_row(folder, root), status="skipped",
                              reason=reason))  # fmt: skip
    return items


# ============================================================================ records and manifest


def _record_path(out: Path, key: str) -> Path:
    return out / _RECORDS / f"{key}.json"


def _read_record(out: Path, key: str) -> Optional[Dict[str, Any]]:
    path = _record_path(out, key)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _outputs_exist(out: Path, record: Mapping[str, Any]) -> bool:
    return all((out / record[k]).is_file() for k in ("nifti", "dicom_seg", "preview") if record.get(k))


def _check_writable(out: Path) -> None:
    """Create ``out`` and prove a file can be written there, or raise a clear ``OSError``."""
    from kneeseg.atomic import atomic_write_bytes

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = atomic_write_bytes(out / ".kneeseg-write-test", b"")
        probe.unlink()
    except OSError as exc:
        error = OSError(f"output folder {out} is not writable: {exc.strerror or exc}")
        error.errno = exc.errno
        raise error from exc


def _clean_stale_temporaries(out: Path) -> int:
    """Remove the temporary files a killed run of this tool left behind, and nothing else.

    Only kneeseg's own temporaries (``.<name>.kneeseg-<random>.tmp``, :func:`kneeseg.atomic.atomic_path`)
    of the files this tool writes are removed: ``manifest.csv``, the series outputs, the records
    and the ONNX cache. Other ``.tmp`` files under ``out`` are left alone.
    """
    from kneeseg.atomic import is_temporary_of

    removed = 0
    if not out.is_dir():
        return 0
    for dirpath, _dirnames, filenames in os.walk(out):
        rel = Path(dirpath).relative_to(out)
        for name in filenames:
            if not is_temporary_of(name):
                continue
            target = name[1 : name.rindex(".kneeseg-")]
            if rel == _RECORDS:
                ours = target.endswith(".json")
            elif rel == _RECORDS.parent / "cache":
                ours = target.endswith(".onnx")
            elif rel == Path("."):
                ours = target == "manifest.csv"
            else:
                ours = target in _FILE_NAMES.values()
            if ours:
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


_MEASURES = (("volume_ml", "volume_ml"), ("components", "raw_components"), ("extent_mm", "through_plane_mm"),
             ("confidence", "confidence"))  # (column prefix, quality-check measurement)


def manifest_columns(class_names: Mapping[int, str]) -> List[str]:
    """Manifest header: :data:`MANIFEST_COLUMNS` plus the per-class measurement columns."""
    names = [_safe(n, f"class_{c}") for c, n in sorted(class_names.items()) if c > 0]
    return MANIFEST_COLUMNS + [f"{prefix}_{n}" for n in names for prefix, _ in _MEASURES]


def write_manifest(path: PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` as CSV (atomic)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return atomic_write_text(path, buf.getvalue())


def read_manifest(path: PathLike) -> List[Dict[str, str]]:
    """Rows of a manifest CSV as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ============================================================================ outputs


def _write_outputs(
    out: Path,
    item: WorkItem,
    image: np.ndarray,
    meta: Mapping[str, Any],
    prediction: Any,
    formats: Sequence[str],
    settings: Mapping[str, Any],
) -> Dict[str, Any]:
    """Check and write one volume's results; returns the row's qc, path and measurement fields."""
    from kneeseg.inference.qc import quality_check

    vol = item.volume
    labels = prediction.labels
    affine = np.asarray(meta["affine"], dtype=float)
    class_names: Mapping[int, str] = settings["class_names"]
    normal_ras = np.diag([-1.0, -1.0, 1.0]) @ settings["slice_orientation"].normal
    qc = quality_check(labels, prediction.confidence, affine, class_names, settings.get("qc", {}), normal_ras,
                       prediction.raw_components)  # fmt: skip
    folder = Path(_safe(vol.patient_id, "anonymous")) / _safe(
        f"{vol.series_number if vol.series_number is not None else 'x'}_{vol.volume_id}", item.key
    )
    fields: Dict[str, Any] = {"qc": qc.verdict, "nifti": "", "dicom_seg": "", "preview": ""}
    if "nifti" in formats:
        rel = folder / _FILE_NAMES["nifti"]
        write_nifti(out / rel, labels.astype(np.uint8), affine, time_unit="sec")
        fields["nifti"] = rel.as_posix()
    if "seg" in formats:
        from kneeseg.inference.dicom_seg import write_dicom_seg

        rel = folder / _FILE_NAMES["seg"]
        write_dicom_seg(
            vol, labels, out / rel, class_names=class_names,
            algorithm_name=f"kneeseg {settings['network_name']}",
            uid_seed=f"{vol.volume_id}|{settings.get('ckpt_digest', '')}",
        )  # fmt: skip
        fields["dicom_seg"] = rel.as_posix()
    if "png" in formats:
        from kneeseg.inference.preview import save_overlay_png

        rel = folder / _FILE_NAMES["png"]
        desc = f" '{vol.series_description}'" if vol.series_description else ""
        save_overlay_png(
            image, labels, out / rel, title=f"{vol.patient_id} series {vol.series_number}{desc}",
            class_names={c: n for c, n in class_names.items() if c > 0}, affine=affine,
            subtitle=f"QC: {qc.verdict}",
        )  # fmt: skip
        fields["preview"] = rel.as_posix()
    for c, name in class_names.items():
        if c > 0:
            measured = qc.measurements.get(c, {})
            for prefix, key in _MEASURES:
                value = measured.get(key)
                fields[f"{prefix}_{_safe(name, f'class_{c}')}"] = "" if value is None else round(float(value), 4)
    return fields


# ============================================================================ distributed


def _dist_context() -> Tuple[int, int, bool]:
    """``(rank, world_size, initialised_here)``; initialises a gloo group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    dist.init_process_group("gloo", timeout=_dt.timedelta(hours=24))
    return dist.get_rank(), dist.get_world_size(), True


def _broadcast(obj: Any, world: int) -> Any:
    if world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# ============================================================================ the run


_STOP = object()


def predict_folder(
    root: PathLike,
    out: PathLike,
    *,
    bundle: Optional[PathLike] = None,
    ckpt: Union[PathLike, Sequence[PathLike], None] = None,
    preset: Optional[str] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    runtime: str = "auto",
    device: str = "cpu",
    formats: Sequence[str] = FORMATS,
    series_filter: Optional[str] = None,
    any_plane: bool = False,
    echo: Union[int, str] = 0,
    any_body_part: bool = False,
    overwrite: bool = False,
    slice_batch: Optional[int] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> BatchResult:
    """Segment every applicable DICOM series under ``root`` into ``out`` (see the module doc).

    Args:
        root: input folder (searched recursively).
        out: output folder (created).
        bundle, ckpt, preset, overrides: the model (see :func:`~kneeseg.inference.segmenter.load_segmenter`;
            several checkpoints make a fold ensemble).
        runtime: ``auto`` (default: the fastest exact runtime this machine has, see
            :func:`kneeseg.engines.runtime.choose_runtime`), ``eager``, ``bf16`` or ``onnx``. The
            resolved runtime is printed once and is each row's ``runtime``.
        device: ``cpu`` or ``cuda[:i]`` (under torchrun with CUDA, rank r uses ``cuda:<local rank>``).
        formats: subset of :data:`FORMATS`.
        series_filter: regex on SeriesDescription.
        any_plane: segment series in any plane (default: only the model's plane).
        echo: echo index for multi-echo series, or ``"all"``.
        any_body_part: segment series whatever their body part (default: only the bundle's
            ``body_part``; a missing BodyPartExamined is accepted and noted).
        overwrite: redo series that a previous run finished.
        slice_batch: slices per forward pass (default: the bundle's ``slice_batch_size``).
        progress: callable receiving one line per event (default: print to stderr).

    Returns:
        :class:`BatchResult` (the merged manifest on every rank).
    """
    from kneeseg.inference.segmenter import load_segmenter

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown output format(s) {bad}; choose from {list(FORMATS)}")
    out = Path(out)
    started = time.perf_counter()
    rank, world, own_group = _dist_context()
    try:
        if device.startswith("cuda") and world > 1 and ":" not in device:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        tag = f"[rank {rank}/{world}] " if world > 1 else ""
        if rank == 0:
            _check_writable(out)
            stale = _clean_stale_temporaries(out)
            if stale:
                say(f"{tag}removed {stale} temporary file(s) left by an interrupted run")
        segmenter, settings = load_segmenter(
            bundle, ckpt, runtime=runtime, device=device, preset=preset, overrides=overrides,
            slice_batch=slice_batch, onnx_cache=out / ".kneeseg" / "cache" if rank == 0 else None,
        )  # fmt: skip
        say(f"{tag}runtime: {segmenter.runtime_choice.describe()}")
        items: Optional[List[WorkItem]] = None
        if rank == 0:
            say(f"{tag}discovering DICOM series under {root} ...")
            t_discover = time.perf_counter()
            items = plan_work(root, slice_plane=settings["slice_plane"], any_plane=any_plane,
                              series_filter=series_filter, echo=echo, body_part=settings["body_part"] or None,
                              any_body_part=any_body_part)  # fmt: skip
            if not items:
                say(f"{tag}no files under {root}: nothing to segment")
            else:
                say(f"{tag}discovery took {time.perf_counter() - t_discover:.1f} s")
        items = _broadcast(items, world)
        assert items is not None
        columns = manifest_columns(settings["class_names"])
        mine = [it for i, it in enumerate(items) if i % world == rank]
        todo = sum(1 for it in items if it.todo)
        if rank == 0:
            say(f"{tag}{len(items)} manifest row(s): {todo} series to segment, {len(items) - todo} skipped/failed at discovery")
        produced: Dict[str, Dict[str, Any]] = {}
        resumed = _run_items(out, mine, segmenter, settings, formats, overwrite, say, tag, produced)
        segmenter.close()
        _barrier(world)
        rows = _collect_rows(out, items, produced)
        manifest = out / "manifest.csv"
        manifest_error = ""
        if rank == 0:
            try:
                write_manifest(manifest, rows, columns)
            except OSError as exc:  # the records are complete; a rerun writes the manifest
                manifest_error = f"could not write {manifest}: {exc.strerror or exc} (rerun to write it from the records)"
                say(f"{tag}error: {manifest_error}")
        _barrier(world)
        counts: Dict[str, int] = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        if rank == 0:
            say(f"{tag}done in {time.perf_counter() - started:.1f} s: "
                + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; manifest {manifest}")  # fmt: skip
        return BatchResult(manifest=manifest, rows=rows, counts=counts, resumed=resumed, manifest_error=manifest_error,
                           seconds=round(time.perf_counter() - started, 2))  # fmt: skip
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _collect_rows(
    out: Path, items: Sequence[WorkItem], produced: Optional[Mapping[str, Dict[str, Any]]] = None
) -> List[Dict[str, Any]]:
    """One row per item: its record, else the row this process produced (a record it could not
    write), else a ``failed`` row saying that no result was recorded. No item is ever dropped."""
    rows = []
    for it in items:
        rec = _read_record(out, it.key)
        if rec is None and produced and it.key in produced:
            rec = dict(produced[it.key])
        if rec is None:  # not reached (e.g. a rank died): say so instead of dropping the row
            rec = dict(it.row, status="failed", reason="no result recorded (the worker stopped before finishing)")
        rows.append(rec)
    return rows


def _progress_line(tag: str, it: WorkItem, row: Mapping[str, Any], seconds: float) -> str:
    r = it.row
    desc = f" '{r.get('series_description')}'" if r.get("series_description") else ""
    line = (f"{tag}{row['status']:7s} {r.get('source', '')} (series {r.get('series_number', '')}{desc}, "
            f"{r.get('slices', '?')} slices) {seconds:.1f} s")  # fmt: skip
    if row.get("reason"):
        line += f": {row['reason']}"
    if row.get("qc"):
        line += f" [qc {row['qc']}]"
    return line


def _run_items(
    out: Path,
    items: Sequence[WorkItem],
    segmenter: Any,
    settings: Mapping[str, Any],
    formats: Sequence[str],
    overwrite: bool,
    say: Callable[[str], None],
    tag: str,
    produced: Dict[str, Dict[str, Any]],
) -> int:
    """Process this rank's items: loader thread -> inference (this thread) -> writer thread.

    Every item ends as a row in ``produced`` (and, when the disk allows, as a record): an error
    anywhere -- reading, inference, writing an output or the record itself -- becomes a
    ``failed`` row naming the problem, and the run goes on. ``seconds`` is the time spent on the
    series itself, the sum of its stages (read, preprocess, network, postprocess, write; each in
    the record's ``stage_seconds``): the stages of consecutive series overlap in wall time, these
    sums do not.
    """
    from kneeseg.data.dicom_series import load_volume

    def record(it: WorkItem, row: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
        try:
            _record(out, it, row, **extra)
        except Exception as exc:  # e.g. disk full: the row is kept in memory and ends in the manifest
            row = dict(row, status="failed", reason=f"could not write its record: {_describe(exc, it)}"
                       + (f" (after: {row['reason']})" if row.get("reason") else ""))  # fmt: skip
        produced[it.key] = row
        return row

    runtime = segmenter.runtime
    runtime_reason = segmenter.runtime_choice.reason
    pending: List[WorkItem] = []
    resumed = 0
    for it in items:
        if not it.todo:
            record(it, dict(it.row, status=it.status, reason=it.reason, seconds=""))
            continue
        rec = _read_record(out, it.key)
        if not overwrite and rec is not None and rec.get("status") == "ok" and _outputs_exist(out, rec) \
                and rec.get("model") == settings.get("ckpt_digest") and set(rec.get("formats", [])) == set(formats):
            resumed += 1
            continue
        pending.append(it)
    if resumed:
        say(f"{tag}{resumed} series already done (resuming; --overwrite redoes them)")
    if not pending:
        return resumed

    loaded: "queue.Queue[Any]" = queue.Queue(maxsize=1)
    finished: "queue.Queue[Any]" = queue.Queue(maxsize=1)
    stop = threading.Event()

    def loader() -> None:
        try:
            for it in pending:
                if stop.is_set():
                    break
                t0 = time.perf_counter()
                stages: Dict[str, float] = {}
                try:
                    image, meta = load_volume(it.volume)
                    stages["read"] = time.perf_counter() - t0
                    # slices in the acquisition plane (the planner only passes other planes with --any-plane)
                    prepared = segmenter.preprocess(image, meta["affine"], space="RAS", slice_axis=2)
                    stages["preprocess"] = time.perf_counter() - t0 - stages["read"]
                    job = (it, stages, image, meta, prepared, None)
                except Exception as exc:  # recorded as a failed row; the batch goes on
                    stages.setdefault("read", time.perf_counter() - t0)
                    job = (it, stages, None, None, None, exc)
                loaded.put(job)
        finally:
            loaded.put(_STOP)  # whatever happened, the main thread stops waiting

    def write_one(job: Any) -> None:
        it, stages, image, meta, prediction, error = job
        t0 = time.perf_counter()
        fields: Dict[str, Any] = {}
        if error is None:
            try:
                fields = _write_outputs(out, it, image, meta, prediction, formats, settings)
            except Exception as exc:
                error = exc
        stages["write"] = time.perf_counter() - t0
        seconds = round(sum(stages.values()), 2)
        if error is None:
            row = dict(it.row, status="ok", reason="", seconds=seconds, runtime=runtime, **fields)
        else:
            row = dict(it.row, status="failed", reason=_describe(error, it), seconds=seconds, runtime=runtime)
        row = record(it, row, model=settings.get("ckpt_digest"), formats=list(formats), runtime_reason=runtime_reason,
                     stage_seconds={k: round(v, 3) for k, v in stages.items()})  # fmt: skip
        say(_progress_line(tag, it, row, seconds))

    def writer() -> None:
        while True:
            job = finished.get()
            if job is _STOP:
                return
            try:
                write_one(job)
            except BaseException as exc:  # never leave the main thread waiting on a dead writer
                it = job[0]
                produced[it.key] = dict(it.row, status="failed", reason=f"writer error: {_describe(exc, it)}")

    load_thread = threading.Thread(target=loader, name="kneeseg-loader", daemon=True)
    write_thread = threading.Thread(target=writer, name="kneeseg-writer", daemon=True)
    load_thread.start()
    write_thread.start()
    try:
        while True:
            job = loaded.get()
            if job is _STOP:
                break
            it, stages, image, meta, prepared, error = job
            prediction = None
            t0 = time.perf_counter()
            if error is None:
                try:
                    prediction = segmenter.predict_full(prepared)
                    stages.update(prediction.timings)
                except Exception as exc:
                    error = exc
            if prediction is None:
                stages["network"] = time.perf_counter() - t0
            del prepared
            finished.put((it, stages, image, meta, prediction, error))
            del image, meta, prediction
    finally:
        stop.set()
        while load_thread.is_alive():  # unblock a loader waiting on a full queue
            try:
                loaded.get(timeout=0.1)
            except queue.Empty:
                pass
        finished.put(_STOP)
        write_thread.join()
    return resumed


def _describe(error: BaseException, item: WorkItem) -> str:
    text = str(error).strip() or type(error).__name__
    if type(error).__name__ not in ("DicomSeriesError", "ValueError", "FileNotFoundError"):
        text = f"{type(error).__name__}: {text}"
    return text.replace("\n", " ")


def _record(out: Path, item: WorkItem, row: Mapping[str, Any], **extra: Any) -> None:
    data = dict(row)
    data.update(extra)
    atomic_write_text(_record_path(out, item.key), json.dumps(data, indent=1, sort_keys=True, default=str))


def iter_rows(result: BatchResult, status: Optional[str] = None) -> Iterable[Dict[str, Any]]:
    """Rows of a result, optionally only one status."""
    return (r for r in result.rows if status is None or r.get("status") == status)
