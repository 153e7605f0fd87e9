"""Discovery: group the slices of DICOM files into volumes and check each volume's geometry.

Files are grouped by SeriesInstanceUID, then split into volumes per echo, diffusion volume
(b-value, gradient direction) and acquisition; slices are ordered along the slice normal and
gaps, duplicates, mixed sizes and mixed orientations are recorded as the volume's issues.

Discovery (:func:`discover_series`) never raises for bad files: it returns the volumes it could
build plus a list of :class:`~kneeseg.data.dicom.volume.Problem` (path + message). Files without
the DICOM ``DICM`` marker are ignored (debug log; listed in
:attr:`~kneeseg.data.dicom.volume.DiscoveryResult.ignored`), except files named ``*.dcm``, which
are reported.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from kneeseg.data.dicom.headers import (
    FrameRecord,
    iter_files,
    read_dataset,
    records_from_dataset,
)
from kneeseg.data.dicom.volume import DiscoveryResult, Problem, SeriesVolume, SliceRef
from kneeseg.files import PathLike

__all__ = ["ORIENTATION_TOL", "discover_series"]

logger = logging.getLogger(__name__)


ORIENTATION_TOL = 1e-4  # max abs difference of direction cosines treated as "same orientation"
_DUPLICATE_TOL_MM = 1e-2  # slices closer than this along the normal are duplicates
_GAP_FACTOR = 1.5  # a step larger than 1.5 x the nominal spacing is a gap (missing slices)
_IRREGULAR_REL_TOL = 0.05  # steps deviating more than 5 % from the nominal spacing are irregular


def _echo_groups(records: list[FrameRecord]) -> list[list[FrameRecord]]:
    """Split the records of one series into echoes (EchoNumbers, else EchoTime), sorted by echo time."""
    numbers = {r.echo_number for r in records}
    times = {None if r.echo_time is None else round(r.echo_time, 2) for r in records}
    if len(numbers) > 1:
        key = lambda r: (r.echo_number is None, r.echo_number or 0)  # noqa: E731
    elif len(times) > 1:
        key = lambda r: (r.echo_time is None, round(r.echo_time or 0.0, 2))  # noqa: E731
    else:
        return [records]
    groups: dict[Any, list[FrameRecord]] = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)

    def order(group: list[FrameRecord]) -> tuple:
        tes = [r.echo_time for r in group if r.echo_time is not None]
        nums = [r.echo_number for r in group if r.echo_number is not None]
        return (not tes, float(np.median(tes)) if tes else 0.0, min(nums) if nums else 0)

    return sorted(groups.values(), key=order)


def _has_duplicate_positions(records: list[FrameRecord]) -> bool:
    pos = [tuple(np.round(r.position, 2)) for r in records if r.position is not None]
    return len(pos) != len(set(pos))


def _acquisition_groups(records: list[FrameRecord]) -> list[list[FrameRecord]] | None:
    """Split by AcquisitionNumber when positions repeat and each acquisition alone does not."""
    if not _has_duplicate_positions(records):
        return None
    groups: dict[Any, list[FrameRecord]] = defaultdict(list)
    for r in records:
        groups[r.acquisition_number].append(r)
    if len(groups) < 2 or any(_has_duplicate_positions(g) for g in groups.values()):
        return None
    return [groups[k] for k in sorted(groups, key=lambda a: (a is None, a or 0))]


def _diffusion_key(r: FrameRecord) -> tuple[float | None, tuple[float, ...] | None]:
    b = None if r.b_value is None else round(r.b_value, 1)
    d = None if r.diffusion_direction is None else tuple(round(v, 4) for v in r.diffusion_direction)
    return (b, d)


def _diffusion_groups(records: list[FrameRecord]) -> list[list[FrameRecord]] | None:
    """Split by (b-value, gradient direction) when positions repeat and these differ; else None.

    Groups are ordered by b-value (missing last), then by their lowest InstanceNumber (acquisition
    order), then by direction, so the order does not depend on file names.
    """
    if not _has_duplicate_positions(records):
        return None
    groups: dict[Any, list[FrameRecord]] = defaultdict(list)
    for r in records:
        groups[_diffusion_key(r)].append(r)
    if len(groups) < 2:
        return None

    def order(key: tuple[float | None, tuple[float, ...] | None]) -> tuple:
        b, d = key
        numbers = [r.instance_number for r in groups[key] if r.instance_number is not None]
        return (b is None, b or 0.0, min(numbers) if numbers else 0, d is not None, d or ())

    return [groups[k] for k in sorted(groups, key=order)]


def _split_acquisitions(
    records: list[FrameRecord], echo_index: int, base_id: str, diffusion_index: int | None = None
) -> list[SeriesVolume]:
    """One volume, or one per AcquisitionNumber (``<base_id>_a<n>``) when that removes repeated positions."""
    acq_groups = _acquisition_groups(records)
    if acq_groups is None:
        return [_build_volume(records, echo_index, base_id, diffusion_index)]
    return [
        _build_volume(group, echo_index, f"{base_id}_a{group[0].acquisition_number}", diffusion_index)
        for group in acq_groups
    ]


def _fmt_pos(value: float) -> str:
    return f"{value:.3f} mm"


def _most_common_text(values: Sequence[str]) -> str:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else ""


def _selection_fields(records: list[FrameRecord]) -> dict[str, Any]:
    """Volume-level selection facts (see :class:`SeriesVolume`) from the records of its slices."""
    image_type = tuple(dict.fromkeys(t for r in records for t in r.image_type))
    mosaic = [r.mosaic_images for r in records if r.mosaic_images is not None]
    b_values = tuple(sorted({round(r.b_value, 1) for r in records if r.b_value is not None}))
    directions = {r.diffusion_direction for r in records}
    direction = next(iter(directions)) if len(directions) == 1 else None
    return dict(
        body_part=_most_common_text([r.body_part for r in records]),
        protocol_name=_most_common_text([r.protocol_name for r in records]),
        image_type=image_type,
        mosaic_images=max(mosaic) if mosaic else None,
        b_value=b_values[0] if len(b_values) == 1 and all(r.b_value is not None for r in records) else None,
        b_values=b_values,
        diffusion_direction=direction,
    )


def _build_volume(
    records: list[FrameRecord], echo_index: int, volume_id: str, diffusion_index: int | None = None
) -> SeriesVolume:
    """Order slices along the normal and check geometry; problems go to ``issues``."""
    first = records[0]
    issues: list[str] = []
    sizes = Counter((r.rows, r.columns) for r in records)
    if len(sizes) > 1:
        desc = ", ".join(f"{r}x{c} ({n} slices)" for (r, c), n in sizes.most_common())
        issues.append(f"mixed image sizes (rows x columns): {desc}")
    if any(r.samples_per_pixel != 1 for r in records):
        issues.append(f"colour images (SamplesPerPixel={first.samples_per_pixel}) are not supported")
    missing_geo = [r for r in records if r.orientation is None or r.position is None or r.pixel_spacing is None]
    if missing_geo:
        issues.append(
            f"{len(missing_geo)} slice(s) without ImagePositionPatient/ImageOrientationPatient/PixelSpacing, "
            f"e.g. {missing_geo[0].path}"
        )
        geo = [r for r in records if r not in missing_geo] or records
    else:
        geo = records

    orientations = Counter(r.orientation for r in geo if r.orientation is not None)
    ref_ori = orientations.most_common(1)[0][0] if orientations else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    distinct: list[tuple[float, ...]] = []
    for ori, _ in orientations.most_common():
        if not any(np.allclose(ori, d, atol=ORIENTATION_TOL) for d in distinct):
            distinct.append(ori)
    if len(distinct) > 1:
        desc = "; ".join(
            "[" + ", ".join(f"{v:.4g}" for v in d) + "]" + f" ({sum(n for o, n in orientations.items() if np.allclose(o, d, atol=ORIENTATION_TOL))} slices)"
            for d in distinct
        )
        issues.append(f"mixed orientations (ImageOrientationPatient): {desc}")

    normal = np.cross(np.asarray(ref_ori[:3]), np.asarray(ref_ori[3:]))

    def proj(r: FrameRecord) -> float:
        return float(np.dot(normal, r.position)) if r.position is not None else 0.0

    ordered = sorted(records, key=lambda r: (proj(r), r.instance_number or 0, r.path, r.frame or 0))
    p = np.asarray([proj(r) for r in ordered])
    if len(ordered) > 1 and not missing_geo:
        steps = np.diff(p)
        dup = np.nonzero(steps < _DUPLICATE_TOL_MM)[0]
        for k in dup[:3]:
            a, b = ordered[k], ordered[k + 1]
            issues.append(
                f"duplicate slice position {_fmt_pos(p[k])} along the normal: "
                f"{_slice_name(a)} and {_slice_name(b)}"
            )
        if len(dup) > 3:
            issues.append(f"... {len(dup)} duplicate slice positions in total")
        good = steps[steps >= _DUPLICATE_TOL_MM]
        if len(good):
            nominal = float(np.median(good))
            for k in np.nonzero(steps > _GAP_FACTOR * nominal)[0]:
                n_missing = max(1, int(round(steps[k] / nominal)) - 1)
                where = ", ".join(_fmt_pos(p[k] + nominal * (m + 1)) for m in range(min(n_missing, 5)))
                issues.append(
                    f"missing slice(s): gap of {steps[k]:.3f} mm (nominal spacing {nominal:.3f} mm) between "
                    f"slice {k} at {_fmt_pos(p[k])} ({_slice_name(ordered[k])}) and slice {k + 1} at "
                    f"{_fmt_pos(p[k + 1])} ({_slice_name(ordered[k + 1])}) along the normal; "
                    f"about {n_missing} slice(s) missing at {where}"
                )
            irregular = (np.abs(steps - nominal) > _IRREGULAR_REL_TOL * nominal) & (steps >= _DUPLICATE_TOL_MM)
            irregular &= steps <= _GAP_FACTOR * nominal
            if irregular.any():
                k = int(np.nonzero(irregular)[0][0])
                issues.append(
                    f"irregular slice spacing: step of {steps[k]:.3f} mm after slice {k} at {_fmt_pos(p[k])} "
                    f"(nominal {nominal:.3f} mm, {int(irregular.sum())} irregular step(s))"
                )

    slope_set = {(r.slope, r.intercept) for r in ordered}
    spacing = Counter(r.pixel_spacing for r in geo if r.pixel_spacing is not None)
    if len(spacing) > 1:
        issues.append(f"mixed PixelSpacing: {sorted(spacing)}")
    tes = [r.echo_time for r in records if r.echo_time is not None]
    volume = SeriesVolume(
        volume_id=volume_id,
        series_uid=first.series_uid,
        study_uid=first.study_uid,
        patient_id=first.patient_id,
        modality=first.modality,
        series_description=first.series_description,
        series_number=first.series_number,
        echo_index=echo_index,
        echo_number=first.echo_number,
        echo_time=float(np.median(tes)) if tes else None,
        acquisition_number=first.acquisition_number,
        orientation=tuple(float(v) for v in ref_ori),  # type: ignore[arg-type]
        rows=sizes.most_common(1)[0][0][0],
        columns=sizes.most_common(1)[0][0][1],
        pixel_spacing=spacing.most_common(1)[0][0] if spacing else (1.0, 1.0),
        slice_thickness=first.slice_thickness,
        slices=tuple(
            SliceRef(
                path=r.path,
                frame=r.frame,
                position=tuple(r.position) if r.position is not None else (0.0, 0.0, 0.0),  # type: ignore[arg-type]
                slope=r.slope,
                intercept=r.intercept,
                instance_number=r.instance_number,
            )
            for r in ordered
        ),
        issues=tuple(issues),
        transfer_syntax=first.transfer_syntax,
        extra={
            "spacing_between_slices": first.spacing_between_slices,
            "rescale_varies": len(slope_set) > 1,
        },
        diffusion_index=diffusion_index,
        **_selection_fields(records),
    )
    return volume


def _slice_name(r: FrameRecord) -> str:
    name = os.path.basename(r.path)
    return name if r.frame is None else f"{name} frame {r.frame}"


def _slice_identity(r: FrameRecord) -> tuple:
    """What makes two slices of one series the same slice: position, echo, acquisition, diffusion."""
    pos = None if r.position is None else tuple(round(v, 2) for v in r.position)
    te = None if r.echo_time is None else round(r.echo_time, 2)
    return (pos, r.echo_number, te, r.acquisition_number, r.b_value, r.diffusion_direction)


def _series_groups(uid: str, records: list[FrameRecord]) -> list[tuple[str, list[FrameRecord], list[str]]]:
    """``(series key, records, notes)`` for the records of one SeriesInstanceUID.

    - The same instance (SOPInstanceUID and frame) in several files -- a series copied twice, a
      file duplicated -- is read once; the copies are named in a note.
    - The same UID for different series in different folders (slices that would duplicate each
      other across folders, with different instances) is split by folder, key ``<uid>_f<hash>``,
      so neither is lost nor merged into a broken volume. A series stored across folders without
      such overlap stays one series.
    """
    notes: list[str] = []
    kept: list[FrameRecord] = []
    seen: dict[tuple, FrameRecord] = {}
    copies: list[str] = []
    for r in sorted(records, key=lambda r: (r.path, r.frame or 0)):
        key = (r.sop_uid, r.frame)
        if r.sop_uid and key in seen and _slice_identity(seen[key]) == _slice_identity(r):
            copies.append(r.path)
            continue
        seen.setdefault(key, r)
        kept.append(r)
    if copies:
        shown = ", ".join(os.path.basename(c) for c in copies[:3]) + (" ..." if len(copies) > 3 else "")
        notes.append(f"{len(copies)} duplicate file(s) of instances already read ignored ({shown})")
    by_dir: dict[str, list[FrameRecord]] = defaultdict(list)
    for r in kept:
        by_dir[os.path.dirname(r.path)].append(r)
    if len(by_dir) > 1:
        owners: dict[tuple, set] = defaultdict(set)
        for folder, recs in by_dir.items():
            for r in recs:
                owners[_slice_identity(r)].add(folder)
        if any(len(f) > 1 for f in owners.values()):
            import hashlib

            out = []
            for folder, recs in sorted(by_dir.items()):
                key = f"{uid}_f{hashlib.sha1(folder.encode()).hexdigest()[:8]}"
                note = f"SeriesInstanceUID {uid} is shared by different series in {len(by_dir)} folders; this is the one in {folder}"
                out.append((key, recs, notes + [note]))
            return out
    return [(uid, kept, notes)]


def _series_volumes(key: str, records: list[FrameRecord]) -> list[SeriesVolume]:
    """The volumes of one series: per echo, then per diffusion volume, then per acquisition."""
    volumes: list[SeriesVolume] = []
    for echo_index, echo_records in enumerate(_echo_groups(records)):
        base_id = f"{key}_e{echo_index}"
        diffusion = _diffusion_groups(echo_records)
        if diffusion is None:
            volumes.extend(_split_acquisitions(echo_records, echo_index, base_id))
        else:
            for d, group in enumerate(diffusion):
                volumes.extend(_split_acquisitions(group, echo_index, f"{base_id}_d{d}", d))
    return volumes


def discover_series(source: PathLike | Sequence[PathLike]) -> DiscoveryResult:
    """Find every DICOM image volume under a folder (recursively) or in a list of files.

    Files are grouped by SeriesInstanceUID; a series with several echoes (EchoNumbers, else
    EchoTime; EffectiveEchoTime for enhanced MR) is split into one volume per echo. Echoes whose
    slice positions repeat are further split by diffusion (b-value, gradient direction) when these
    differ (volume id suffix ``_d<index>``, ordered by b-value then acquisition order), then by
    AcquisitionNumber (suffix ``_a<number>``). Slices are ordered by ImagePositionPatient projected
    on the slice normal. Each volume also carries the header facts used to select knee series
    (BodyPartExamined, ProtocolName, ImageType, Siemens mosaic size, b-value; see
    :mod:`kneeseg.data.series_kind`).

    Args:
        source: a folder (walked recursively), a file, or a sequence of folders/files.

    Returns:
        :class:`DiscoveryResult` with the volumes (sorted by patient, study, series number,
        series UID, echo), the problems (unreadable/truncated/empty files, and one entry per
        geometry issue of a volume, with the series folder as path) and the ignored non-DICOM files.
        It does not raise for bad files.
    """
    files, problems = iter_files(source)
    ignored: list[str] = []
    by_series: dict[str, list[FrameRecord]] = defaultdict(list)
    for path in files:
        ds, message = read_dataset(path)
        if ds is None:
            if message is None:
                logger.debug("ignoring non-DICOM file %s", path)
                ignored.append(path)
            else:
                problems.append(Problem(path, message))
            continue
        try:
            records, message = records_from_dataset(ds, path)
        except Exception as exc:  # malformed values (e.g. non-numeric IS/DS) end up here
            records, message = [], f"unreadable DICOM header ({type(exc).__name__}: {exc})"
        if message is not None:
            problems.append(Problem(path, message))
        elif not records:
            logger.debug("ignoring DICOM file without image data %s", path)
            ignored.append(path)
        for rec in records:
            by_series[rec.series_uid].append(rec)

    volumes: list[SeriesVolume] = []
    for uid, all_records in by_series.items():
        for key, records, notes in _series_groups(uid, all_records):
            for vol in _series_volumes(key, records):
                vol.series_key = key
                if notes:
                    vol.extra["notes"] = list(notes)
                volumes.append(vol)
    volumes.sort(
        key=lambda v: (
            v.patient_id,
            v.study_uid,
            v.series_number or 0,
            v.series_uid,
            v.echo_index,
            -1 if v.diffusion_index is None else v.diffusion_index,
            v.volume_id,
        )
    )
    for vol in volumes:
        folder = os.path.commonpath(vol.files) if vol.files else ""
        if len(vol.files) == 1:
            folder = vol.files[0]
        for issue in vol.issues:
            problems.append(Problem(folder, f"{vol.label}: {issue}", volume_id=vol.volume_id))
    return DiscoveryResult(volumes=volumes, problems=problems, ignored=ignored)
