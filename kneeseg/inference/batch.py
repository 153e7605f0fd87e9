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

This module runs a batch (:func:`predict_folder`: the loader, inference and writer threads, the
sharding); its parts live in :mod:`kneeseg.inference.planning` (step 2, work items),
:mod:`kneeseg.inference.outputs` (step 4, a series' files), :mod:`kneeseg.inference.results`
(``manifest.csv`` and the records) and :mod:`kneeseg.inference.distributed` (the torchrun group).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kneeseg.files import PathLike
from kneeseg.inference.distributed import barrier, broadcast, dist_context
from kneeseg.inference.outputs import (
    FORMATS,
    check_writable,
    clean_stale_temporaries,
    write_outputs,
)
from kneeseg.inference.planning import WorkItem, plan_work
from kneeseg.inference.results import (
    RESULTS_CSV,
    collect_rows,
    manifest_columns,
    outputs_exist,
    read_record,
    write_record,
    write_results_csv,
)

__all__ = ["BatchResult", "Interrupted", "iter_rows", "predict_folder"]

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What :func:`predict_folder` did: the manifest path and its rows, and counts per status."""

    manifest: Path
    rows: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)
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


# ============================================================================ the run


_STOP = object()


def predict_folder(
    root: PathLike,
    out: PathLike,
    *,
    bundle: PathLike | None = None,
    ckpt: PathLike | Sequence[PathLike] | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    runtime: str = "auto",
    device: str = "cpu",
    formats: Sequence[str] = FORMATS,
    series_filter: str | None = None,
    any_plane: bool = False,
    echo: int | str = 0,
    any_body_part: bool = False,
    overwrite: bool = False,
    slice_batch: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> BatchResult:
    """Segment every applicable DICOM series under ``root`` into ``out`` (see the module doc).

    Args:
        root: input folder (searched recursively).
        out: output folder (created).
        bundle, ckpt, preset, overrides: the model (see :func:`~kneeseg.inference.segmenter.load_segmenter`;
            several checkpoints make a fold ensemble).
        runtime: ``auto`` (default: the fastest exact runtime this machine has, see
            :func:`kneeseg.execution.runtimes.choose_runtime`), ``eager``, ``bf16`` or ``onnx``. The
            resolved runtime is printed once and is each row's ``runtime``.
        device: ``auto`` (CUDA when available, else the CPU), ``cpu`` or ``cuda[:i]`` (under torchrun
            with CUDA, rank r uses ``cuda:<local rank>``).
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
    from kneeseg.inference.segmenter import load_model, load_segmenter

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    on_terminal = progress is None and _is_terminal(sys.stderr)  # a bar over the series, lines above it
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown output format(s) {bad}; choose from {list(FORMATS)}")
    out = Path(out)
    # checks first: the input and the model, before anything is written
    if not Path(root).exists():
        raise FileNotFoundError(f"input not found: {root}")
    model = load_model(bundle, ckpt, preset=preset, overrides=overrides)
    started = time.perf_counter()
    rank, world, own_group = dist_context()
    try:
        if device == "auto":  # the GPU when there is one, as nnU-Net and TotalSegmentator choose
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and world > 1 and ":" not in device:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        tag = f"[rank {rank}/{world}] " if world > 1 else ""
        if rank == 0:
            check_writable(out)
            stale = clean_stale_temporaries(out)
            if stale:
                say(f"{tag}removed {stale} temporary file(s) left by an interrupted run")
        segmenter, settings = load_segmenter(
            runtime=runtime, device=device, slice_batch=slice_batch, model=model,
            onnx_cache=out / ".kneeseg" / "cache" if rank == 0 else None,
        )  # fmt: skip
        say(f"{tag}runtime: {segmenter.runtime_choice.describe()}")
        items: list[WorkItem] | None = None
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
        items = broadcast(items, world)
        assert items is not None
        columns = manifest_columns(settings["class_names"])
        mine = [it for i, it in enumerate(items) if i % world == rank]
        todo = sum(1 for it in items if it.todo)
        if rank == 0:
            say(f"{tag}{len(items)} manifest row(s): {todo} series to segment, {len(items) - todo} skipped/failed at discovery")
            for it in items:
                if not it.todo:  # one line each: what it is and why, as the manifest row says
                    say(f"{tag}  {it.status}: {_row_name(it.row)}: {it.reason}")
        produced: dict[str, dict[str, Any]] = {}
        interrupted = False
        with _interrupt_on_sigterm():
            try:
                resumed = _run_items(out, mine, segmenter, settings, formats, overwrite, say, tag, produced,
                                     bar=on_terminal and world == 1)  # fmt: skip
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the series in hand were finished or dropped whole
                interrupted, resumed = True, 0
        segmenter.close()
        if not interrupted:
            barrier(world)
        rows = collect_rows(out, items, produced, missing="interrupted" if interrupted else None)
        manifest = out / RESULTS_CSV
        manifest_error = ""
        if rank == 0:
            try:
                write_results_csv(manifest, rows, columns)
            except OSError as exc:  # the records are complete; a rerun writes the manifest
                manifest_error = f"could not write {manifest}: {exc.strerror or exc} (rerun to write it from the records)"
                say(f"{tag}error: {manifest_error}")
        if not interrupted:
            barrier(world)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        if interrupted:
            raise Interrupted(done=sum(1 for it, r in zip(items, rows) if it.todo and r["status"] != "interrupted"),
                              total=sum(1 for it in items if it.todo), manifest=manifest)  # fmt: skip
        if rank == 0:
            say(f"{tag}done in {time.perf_counter() - started:.1f} s: "
                + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; manifest {manifest}")  # fmt: skip
        return BatchResult(manifest=manifest, rows=rows, counts=counts, resumed=resumed, manifest_error=manifest_error,
                           seconds=round(time.perf_counter() - started, 2))  # fmt: skip
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()


class Interrupted(Exception):
    """A batch run stopped by Ctrl-C or SIGTERM: ``done`` of ``total`` series finished (their outputs
    complete and recorded), the manifest written from the records; a rerun resumes."""

    def __init__(self, done: int, total: int, manifest: Path) -> None:
        super().__init__(f"interrupted after {done} of {total} series; rerun the same command to resume "
                         f"(manifest so far: {manifest})")  # fmt: skip
        self.done, self.total, self.manifest = done, total, manifest


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` like Ctrl-C does (in the main thread), so that both end
    a batch run the same way: the series in hand finished or dropped whole, the manifest written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _row_name(row: Mapping[str, Any]) -> str:
    """A manifest row's series or file, for a console line."""
    for key in ("source", "series_instance_uid"):
        if row.get(key):
            desc = f" '{row['series_description']}'" if row.get("series_description") else ""
            return f"{row[key]}{desc}"
    return "?"


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
    produced: dict[str, dict[str, Any]],
    bar: bool = False,
) -> int:
    """Process this rank's items: loader thread -> inference (this thread) -> writer thread.

    Every item ends as a row in ``produced`` (and, when the disk allows, as a record): an error
    anywhere -- reading, inference, writing an output or the record itself -- becomes a
    ``failed`` row naming the problem, and the run goes on. ``seconds`` is the time spent on the
    series itself, the sum of its stages (read, preprocess, network, postprocess, write; each in
    the record's ``stage_seconds``): the stages of consecutive series overlap in wall time, these
    sums do not.
    """
    from kneeseg.data.dicom.loading import load_volume
    from kneeseg.handlers.progress import format_duration

    def record(it: WorkItem, row: dict[str, Any], **extra: Any) -> dict[str, Any]:
        try:
            write_record(out, it.key, row, **extra)
        except Exception as exc:  # e.g. disk full: the row is kept in memory and ends in the manifest
            row = dict(row, status="failed", reason=f"could not write its record: {_describe(exc, it)}"
                       + (f" (after: {row['reason']})" if row.get("reason") else ""))  # fmt: skip
        produced[it.key] = row
        return row

    runtime = segmenter.runtime
    runtime_reason = segmenter.runtime_choice.reason
    pending: list[WorkItem] = []
    resumed = 0
    for it in items:
        if not it.todo:
            record(it, dict(it.row, status=it.status, reason=it.reason, seconds=""))
            continue
        rec = read_record(out, it.key)
        if not overwrite and rec is not None and rec.get("status") == "ok" and outputs_exist(out, rec) \
                and rec.get("model") == settings.get("ckpt_digest") and set(rec.get("formats", [])) == set(formats):
            resumed += 1
            continue
        pending.append(it)
    if resumed:
        say(f"{tag}{resumed} series already done (resuming; --overwrite redoes them)")
    if not pending:
        return resumed

    progress: dict[str, Any] = {"done": 0, "t0": time.perf_counter()}  # the writer's count, for the time left
    tqdm_bar = _series_bar(len(pending)) if bar else None
    if tqdm_bar is not None:  # the per-series lines print above the bar
        say = lambda line: tqdm_bar.write(line, file=sys.stderr)  # noqa: E731
    loaded: queue.Queue[Any] = queue.Queue(maxsize=1)
    finished: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def loader() -> None:
        try:
            for it in pending:
                if stop.is_set():
                    break
                t0 = time.perf_counter()
                stages: dict[str, float] = {}
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
        fields: dict[str, Any] = {}
        if error is None:
            try:
                fields = write_outputs(out, it, image, meta, prediction, formats, settings)
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
        progress["done"] += 1
        done, total = progress["done"], len(pending)
        per_series = (time.perf_counter() - progress["t0"]) / done
        left = f", {format_duration(per_series * (total - done))} left" if done < total else ""
        say(f"{tag}[{done}/{total}{left}] " + _progress_line("", it, row, seconds))
        if tqdm_bar is not None:
            tqdm_bar.update(1)

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
        if tqdm_bar is not None:
            tqdm_bar.close()
    return resumed


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _series_bar(total: int) -> Any:
    """A tqdm bar over ``total`` series on stderr, sized for terminals that report no size."""
    from tqdm.auto import tqdm

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
        width, lines = size.columns, size.lines
    except (AttributeError, OSError, ValueError):
        width, lines = 0, 0
    return tqdm(total=total, unit="series", file=sys.stderr, desc="segmenting", dynamic_ncols=width > 0,
                ncols=None if width > 0 else 100, nrows=None if lines > 0 else 24, leave=True)  # fmt: skip


def _describe(error: BaseException, item: WorkItem) -> str:
    text = str(error).strip() or type(error).__name__
    if type(error).__name__ not in ("DicomSeriesError", "ValueError", "FileNotFoundError"):
        text = f"{type(error).__name__}: {text}"
    return text.replace("\n", " ")


def iter_rows(result: BatchResult, status: str | None = None) -> Iterable[dict[str, Any]]:
    """Rows of a result, optionally only one status."""
    return (r for r in result.rows if status is None or r.get("status") == status)
