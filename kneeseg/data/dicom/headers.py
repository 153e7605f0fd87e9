"""Reading DICOM files: which files to read, and the header facts of every slice in them.

:func:`iter_files` lists the files of a folder tree or file list; :func:`read_dataset` reads
one file (files without the ``DICM`` marker are not DICOM, except damaged ``*.dcm`` files, which
are reported); :func:`records_from_dataset` turns a dataset into one :class:`FrameRecord` per
slice (a single-frame image, or each frame of an enhanced multi-frame image), or a message saying
why the file cannot be used (truncated, no pixel data, no SeriesInstanceUID ...). Grouping the
records into volumes is :mod:`kneeseg.data.dicom.discovery`'s job.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from kneeseg.data.dicom.tags import (
    diffusion_facts,
    float_or_none,
    float_list,
    int_or_none,
    selection_facts,
    transfer_syntax,
)
from kneeseg.data.dicom.volume import Problem
from kneeseg.files import PathLike

_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}


@dataclass
class FrameRecord:
    """Header facts of one slice (a single-frame file or one frame of an enhanced file)."""

    path: str
    frame: int | None
    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    series_description: str
    series_number: int | None
    echo_number: int | None
    echo_time: float | None
    acquisition_number: int | None
    instance_number: int | None
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    spacing_between_slices: float | None
    slope: float
    intercept: float
    samples_per_pixel: int
    transfer_syntax: str
    body_part: str = ""
    protocol_name: str = ""
    image_type: tuple[str, ...] = ()
    mosaic_images: int | None = None
    b_value: float | None = None
    diffusion_direction: tuple[float, float, float] | None = None
    sop_uid: str = ""


def _fg_item(frame_item: Any, shared_item: Any, seq_name: str) -> Any:
    """First item of a functional-group sequence, per-frame first, then shared (or None)."""
    for group in (frame_item, shared_item):
        if group is not None:
            seq = group.get(seq_name)
            if seq:
                return seq[0]
    return None


def _expected_native_bytes(ds: Any) -> int:
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(float_or_none(ds.get("NumberOfFrames")) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if bits == 1:
        return (rows * cols * frames * spp + 7) // 8
    return rows * cols * frames * spp * (bits // 8)


def _has_dicm_marker(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dataset(path: str) -> tuple[Any | None, str | None]:
    """Read a DICOM file; return ``(dataset, None)``, ``(None, None)`` if not DICOM, or ``(None, message)``."""
    try:
        size = os.path.getsize(path)
        has_marker = size > 0 and _has_dicm_marker(path)
    except OSError as exc:  # vanished file, symlink loop, no permission
        return None, f"cannot read the file ({exc.strerror or exc})"
    if size == 0:
        return None, "empty file (0 bytes)"
    suffix = Path(path).suffix.lower()
    if not has_marker:
        if suffix not in _DICOM_SUFFIXES:
            return None, None
        try:  # a '.dcm' file may lack the 128-byte preamble: try once without it
            ds = pydicom.dcmread(path, force=True)
            if "SOPClassUID" not in ds and "Rows" not in ds:
                raise InvalidDicomError("no DICOM attributes found")
        except Exception:
            return None, f"not a DICOM file (no 'DICM' marker, {size} bytes) although named '{suffix}'"
        return ds, None
    try:
        return pydicom.dcmread(path), None
    except Exception as exc:  # pydicom raises many types for damaged files
        return None, f"unreadable DICOM file ({type(exc).__name__}: {exc})"


def records_from_dataset(ds: Any, path: str) -> tuple[list[FrameRecord], str | None]:
    """Header facts of every slice in ``ds``; ``([], None)`` for non-image DICOM, ``([], msg)`` on error."""
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    sop_name = pydicom.uid.UID(str(ds.get("SOPClassUID", ""))).name if "SOPClassUID" in ds else ""
    if not has_pixels:
        if "Rows" in ds or "Image Storage" in sop_name:
            return [], "truncated or incomplete file: no Pixel Data element"
        return [], None  # DICOMDIR, structured report, presentation state ...: not an image
    if "Rows" not in ds or "Columns" not in ds:
        return [], "image without Rows/Columns"
    ts = transfer_syntax(ds)
    if not ts.is_compressed and "PixelData" in ds:
        expected = _expected_native_bytes(ds)
        have = len(ds.PixelData)
        if have < expected:
            return [], f"truncated pixel data: {have} of {expected} bytes"

    common = dict(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        series_number=int_or_none(ds.get("SeriesNumber")),
        acquisition_number=int_or_none(ds.get("AcquisitionNumber")),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        transfer_syntax=str(ts),
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        **selection_facts(ds),
    )
    if not common["series_uid"]:
        return [], "no SeriesInstanceUID"
    n_frames = int(float_or_none(ds.get("NumberOfFrames")) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        if len(per_frame) != n_frames:
            return [], f"enhanced multi-frame: {len(per_frame)} per-frame items for {n_frames} frames"
        shared_seq = ds.get("SharedFunctionalGroupsSequence")
        shared = shared_seq[0] if shared_seq else None
        records = []
        for f, item in enumerate(per_frame):
            pos = _fg_item(item, shared, "PlanePositionSequence")
            ori = _fg_item(item, shared, "PlaneOrientationSequence")
            meas = _fg_item(item, shared, "PixelMeasuresSequence")
            pvt = _fg_item(item, shared, "PixelValueTransformationSequence")
            echo = _fg_item(item, shared, "MREchoSequence")
            content = _fg_item(item, None, "FrameContentSequence")
            b_value, direction = diffusion_facts(ds, _fg_item(item, shared, "MRDiffusionSequence"))
            records.append(
                FrameRecord(
                    frame=f,
                    b_value=b_value,
                    diffusion_direction=direction,
                    echo_number=None,
                    echo_time=float_or_none(echo.get("EffectiveEchoTime")) if echo is not None else None,
                    instance_number=(
                        int_or_none(content.get("InStackPositionNumber")) if content is not None else None
                    ),
                    orientation=float_list(ori.get("ImageOrientationPatient"), 6) if ori is not None else None,
                    position=float_list(pos.get("ImagePositionPatient"), 3) if pos is not None else None,  # type: ignore[arg-type]
                    pixel_spacing=float_list(meas.get("PixelSpacing"), 2) if meas is not None else None,  # type: ignore[arg-type]
                    slice_thickness=float_or_none(meas.get("SliceThickness")) if meas is not None else None,
                    spacing_between_slices=(
                        float_or_none(meas.get("SpacingBetweenSlices")) if meas is not None else None
                    ),
                    slope=(float_or_none(pvt.get("RescaleSlope")) if pvt is not None else None) or 1.0,
                    intercept=(float_or_none(pvt.get("RescaleIntercept")) if pvt is not None else None) or 0.0,
                    **common,  # type: ignore[arg-type]
                )
            )
        return records, None
    if n_frames > 1:
        return [], f"multi-frame file ({n_frames} frames) without per-frame geometry is not supported"
    slope = float_or_none(ds.get("RescaleSlope"))
    intercept = float_or_none(ds.get("RescaleIntercept"))
    b_value, direction = diffusion_facts(ds)
    rec = FrameRecord(
        frame=None,
        b_value=b_value,
        diffusion_direction=direction,
        echo_number=int_or_none(ds.get("EchoNumbers")),
        echo_time=float_or_none(ds.get("EchoTime")),
        instance_number=int_or_none(ds.get("InstanceNumber")),
        orientation=float_list(ds.get("ImageOrientationPatient"), 6),
        position=float_list(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        pixel_spacing=float_list(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
        slice_thickness=float_or_none(ds.get("SliceThickness")),
        spacing_between_slices=float_or_none(ds.get("SpacingBetweenSlices")),
        slope=1.0 if slope is None else slope,
        intercept=0.0 if intercept is None else intercept,
        **common,  # type: ignore[arg-type]
    )
    return [rec], None


def iter_files(source: PathLike | Sequence[PathLike]) -> tuple[list[str], list[Problem]]:
    if isinstance(source, (str, os.PathLike)):
        sources = [source]
    else:
        sources = list(source)
    files: list[str] = []
    problems: list[Problem] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            # symlinked folders are followed (a PACS export or a study folder is often a link); each
            # real folder is read once, so a link loop or a second link to a folder ends there
            seen: set[tuple[int, int]] = set()
            for dirpath, dirnames, filenames in os.walk(p, followlinks=True):
                try:
                    st = os.stat(dirpath)
                except OSError:
                    dirnames[:] = []
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    dirnames[:] = []
                    continue
                seen.add((st.st_dev, st.st_ino))
                dirnames.sort()
                files.extend(os.path.join(dirpath, name) for name in sorted(filenames))
        elif p.is_file():
            files.append(str(p))
        else:
            problems.append(Problem(str(p), "no such file or folder"))
    return files, problems
