"""DICOM Segmentation (SEG) export of label maps predicted on a DICOM MR series, and its validation.

:func:`write_dicom_seg` turns a kneeseg label map (``(columns, rows, slices)``, the layout of
:func:`kneeseg.data.dicom.loading.load_volume`) into a BINARY DICOM Segmentation instance with
highdicom: one segment per foreground class, SNOMED CT coded anatomy
(:mod:`kneeseg.inference.seg_codes`), the source MR instances referenced (every slice of a
single-frame series, only the instances of the chosen echo of a multi-echo series, or the frames
of an enhanced multi-frame file) and the kneeseg algorithm identified. :func:`validate_dicom_seg`
runs ``dciodvfy`` (Debian/Ubuntu package ``dicom3tools``) and returns its error lines.

highdicom (the ``dicom-seg`` extra, which needs pydicom 3) is imported only when a SEG is built,
so this module also imports in environments with pydicom 2.4 and without highdicom.

Segment numbers run 1..n over the foreground class ids of ``class_names`` in ascending order
(DICOM requires consecutive segment numbers starting at 1); the segment label is the class name.
Every class gets a segment, even when it is empty in this volume (empty frames are omitted, so an
empty segment simply has no frames).
"""

from __future__ import annotations

import datetime
import logging
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

import kneeseg
from kneeseg.atomic import atomic_path
from kneeseg.data.dicom.discovery import ORIENTATION_TOL
from kneeseg.data.dicom.volume import SeriesVolume
from kneeseg.data.orientation import volume_to_dicom_frames
from kneeseg.files import PathLike
from kneeseg.inference.seg_codes import lookup_codes

__all__ = [
    "DEFAULT_ALGORITHM_NAME",
    "dciodvfy_messages",
    "segment_descriptions",
    "validate_dicom_seg",
    "write_dicom_seg",
]


logger = logging.getLogger(__name__)

DEFAULT_ALGORITHM_NAME = "kneeseg csam_unet"

_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_MAX_LO = 64  # DICOM LO value length (SegmentLabel, ManufacturerModelName, ...)


# ====================================================================== segments


def _foreground_classes(class_names: Mapping[int, str]) -> list[tuple[int, str]]:
    """Sorted ``(class_id, name)`` for ids > 0, validated."""
    out = []
    for key, name in class_names.items():
        integral = isinstance(key, (int, np.integer)) and not isinstance(key, bool)
        if not integral and not (isinstance(key, str) and key.strip().isdigit()):  # JSON keys are strings
            raise ValueError(f"class_names: class id {key!r} is not a non-negative integer")
        cid = int(key)
        if cid < 0:
            raise ValueError(f"class_names: negative class id {cid}")
        if cid == 0:
            continue
        name = str(name)
        if not name.strip():
            raise ValueError(f"class_names: class {cid} has an empty name")
        if len(name) > _MAX_LO or "\\" in name:
            raise ValueError(
                f"class_names: name of class {cid} ({name!r}) cannot be a DICOM segment label "
                f"(at most {_MAX_LO} characters, no backslash)"
            )
        out.append((cid, name))
    out.sort()
    ids = [c for c, _ in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"class_names: duplicate class ids {ids}")
    if not out:
        raise ValueError("class_names has no foreground class (id > 0): nothing to put in a DICOM SEG")
    return out


def segment_descriptions(
    class_names: Mapping[int, str],
    *,
    algorithm_name: str,
    algorithm_version: str,
    codes: Mapping[str, tuple] | None = None,
) -> list:
    """highdicom ``SegmentDescription`` per foreground class (id > 0), ordered by class id.

    Segment numbers are 1..n in ascending class id order; labels are the class names; the
    algorithm type is AUTOMATIC with an ``AlgorithmIdentificationSequence`` (name, version,
    family "Artificial Intelligence", DCM 123110). Codes: see
    :func:`~kneeseg.inference.seg_codes.lookup_codes`.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=str(algorithm_name),
        family=dcm_codes.DCM.ArtificialIntelligence,  # DCM 123110
        version=str(algorithm_version),
    )
    descriptions = []
    for number, (_, name) in enumerate(_foreground_classes(class_names), start=1):
        category, prop_type = lookup_codes(name, codes)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=category,
                segmented_property_type=prop_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    return descriptions


# ====================================================================== writing


def _uid(seed: str | None, purpose: str) -> str:
    """Deterministic UID from ``(seed, purpose)`` when a seed is given, else a fresh random one."""
    if seed is None:
        return str(pydicom.uid.generate_uid())
    return str(pydicom.uid.generate_uid(entropy_srcs=[str(seed), purpose]))


def _label_lut(labels: np.ndarray, class_ids: Sequence[int], volume: SeriesVolume) -> np.ndarray:
    """Map class ids to segment numbers 1..n (uint8/uint16 label map); other values are an error."""
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(np.isfinite(labels)):
            raise ValueError(f"labels for {volume.label} must be an integer label map, got dtype {labels.dtype}")
        rounded = np.rint(labels)
        if not np.array_equal(rounded, labels):
            raise ValueError(f"labels for {volume.label} hold non-integer values (dtype {labels.dtype})")
        labels = rounded.astype(np.int64)
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if lo < 0:
        raise ValueError(f"labels for {volume.label} hold negative values (min {lo})")
    dtype = np.uint8 if len(class_ids) < 256 else np.uint16
    lut = np.full(max(hi, max(class_ids)) + 1, -1, dtype=np.int64)
    lut[0] = 0
    for number, cid in enumerate(class_ids, start=1):
        lut[cid] = number
    mapped = lut[labels]
    if (mapped < 0).any():
        unknown = sorted(int(v) for v in np.unique(labels[mapped < 0]))
        raise ValueError(
            f"labels for {volume.label} hold class id(s) {unknown} that are not in class_names "
            f"(foreground ids {list(class_ids)})"
        )
    return mapped.astype(dtype)


#: Type 2 patient/study attributes highdicom copies from the source; absent ones are added empty
#: (in memory only) so that sources lacking them (anonymised data) can still be referenced.
_TYPE2_SOURCE_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _valid_date(value: Any) -> bool:
    """A DA value validators accept: ``YYYYMMDD``, a real calendar date, year 1000 or later."""
    text = str(value).strip()
    if not re.fullmatch(r"[1-9][0-9]{3}[01][0-9][0-3][0-9]", text):
        return False
    try:
        datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def _read_header(path: str) -> Any:
    """Header of a source file, tidied in memory for highdicom (the file is not changed).

    Missing type 2 patient/study attributes are added empty, and placeholder dates that are not
    valid DA values (e.g. ``00010101`` written by some anonymisers) are emptied, since the SEG
    copies them and would otherwise fail validation.
    """
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    for keyword in _TYPE2_SOURCE_KEYWORDS:
        if keyword not in ds:
            setattr(ds, keyword, "")
    for elem in ds:
        if elem.VR == "DA" and elem.value not in (None, "") and not elem.VM > 1 and not _valid_date(elem.value):
            logger.debug("%s: ignoring invalid date %s = %r", path, elem.keyword or elem.tag, elem.value)
            elem.value = ""
    return ds


def _share_orientation(sources: Sequence[Any], volume: SeriesVolume) -> None:
    """Give the single-frame source headers (in memory) the series' one orientation.

    Discovery accepts orientations within its tolerance (``ORIENTATION_TOL``, 1e-4 per direction
    cosine) as one series, and the SEG describes that series; highdicom compares them exactly and
    would refuse a series whose slices differ by 2e-5. The reader's tolerance is the one rule: within
    it the slices share the first slice's orientation, beyond it the volume has issues and no SEG
    is written (checked before)."""
    first = [float(v) for v in sources[0].ImageOrientationPatient]
    for ds in sources[1:]:
        ori = [float(v) for v in ds.ImageOrientationPatient]
        if ori != first:
            if not np.allclose(ori, first, atol=ORIENTATION_TOL):  # not reached: discovery split or flagged it
                raise ValueError(f"{volume.label}: slice orientations {first} and {ori} differ beyond {ORIENTATION_TOL}")
            ds.ImageOrientationPatient = list(sources[0].ImageOrientationPatient)


def _source_datasets(volume: SeriesVolume) -> tuple[list, set | None]:
    """Source datasets (headers only) and, for a multi-frame source, the 1-based frame numbers of ``volume``.

    Single-frame series: one dataset per slice, in slice order (the order of the SEG pixel array).
    Enhanced multi-frame source: the one dataset; the file may hold frames of other echoes or
    stacks, which the SEG must not reference.
    """
    multi = [s for s in volume.slices if s.frame is not None]
    if not multi:
        return [_read_header(s.path) for s in volume.slices], None
    paths = {s.path for s in volume.slices}
    if len(multi) != len(volume.slices) or len(paths) != 1:
        raise ValueError(
            f"{volume.label}: a DICOM SEG can reference either single-frame images or one multi-frame image; "
            f"this volume spans {len(paths)} file(s), {len(multi)} of {len(volume.slices)} slices from "
            "multi-frame files"
        )
    (path,) = paths
    ds = _read_header(path)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    own = {int(s.frame) + 1 for s in volume.slices}  # type: ignore[arg-type]
    if max(own) > n_frames:
        raise ValueError(f"{volume.label}: frame {max(own) - 1} is outside {path} ({n_frames} frames)")
    return [ds], own


def _plane_positions(volume: SeriesVolume) -> list:
    """highdicom plane positions of the volume's slices (slice order)."""
    import highdicom as hd

    return [
        hd.PlanePositionSequence(
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            image_position=[float(v) for v in s.position],
        )
        for s in volume.slices
    ]


def _keep_own_frames(seg: Any, own: set) -> None:
    """Drop per-frame source references to frames of the multi-frame source outside ``own``.

    highdicom references every source frame at a SEG frame's position; in a multi-echo enhanced
    file that includes the other echoes' frames at the same position.
    """
    for item in seg.get("PerFrameFunctionalGroupsSequence", []):
        for derivation in item.get("DerivationImageSequence", []):
            sources = list(derivation.get("SourceImageSequence", []))
            keep = [src for src in sources if int(src.get("ReferencedFrameNumber", 0) or 0) in own]
            if keep and len(keep) != len(sources):
                derivation.SourceImageSequence = keep


def _write_dataset(ds: Any, path: Path) -> None:
    """Write ``ds`` as a DICOM Part-10 file (pydicom 3.x and 2.4)."""
    if int(pydicom.__version__.split(".")[0]) >= 3:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:  # pragma: no cover - highdicom needs pydicom 3; kept so the writer stays version-neutral
        pydicom.dcmwrite(path, ds, write_like_original=False)


def write_dicom_seg(
    volume: SeriesVolume,
    labels: np.ndarray,
    out_path: PathLike,
    *,
    class_names: Mapping[int, str],
    algorithm_name: str = DEFAULT_ALGORITHM_NAME,
    algorithm_version: str = kneeseg.__version__,
    series_description: str = "kneeseg segmentation",
    series_number: int | None = None,
    uid_seed: str | None = None,
    content_creator: str | None = None,
    codes: Mapping[str, tuple] | None = None,
) -> Path:
    """Write ``labels`` predicted on ``volume`` as a BINARY DICOM Segmentation to ``out_path`` (atomically).

    Args:
        volume: the discovered source volume (:func:`kneeseg.data.dicom.discovery.discover_series`).
        labels: integer class-id map shaped ``(columns, rows, slices)`` == ``volume.shape``.
        out_path: the ``.dcm`` file to write (parent folders are created).
        class_names: class id -> name; every id > 0 becomes a segment (see the module docstring).
            Label values not listed here are an error.
        algorithm_name, algorithm_version: AlgorithmIdentificationSequence, ManufacturerModelName
            and SoftwareVersions.
        series_description: SeriesDescription of the SEG series.
        series_number: SeriesNumber; default 1000 + the source series number (1000 if it has none).
        uid_seed: if given, SeriesInstanceUID, SOPInstanceUID and DimensionOrganizationUID are
            derived from it, so rerunning on the same input writes the same UIDs.
        content_creator: ContentCreatorName (DICOM person name, e.g. ``"Doe^Jane"``); empty if None.
        codes: per class name ``(category_code, type_code)`` overrides (see
            :func:`~kneeseg.inference.seg_codes.lookup_codes`).

    Returns:
        ``Path(out_path)``.

    Raises:
        ValueError: wrong label shape or values, a volume with geometry issues, or a volume that
            spans several multi-frame files.
    """
    import highdicom as hd

    labels = np.asarray(labels)
    if labels.shape != volume.shape:
        raise ValueError(
            f"labels shape {labels.shape} does not match {volume.label}: expected (columns, rows, slices) "
            f"= {volume.shape}"
        )
    if volume.issues:
        raise ValueError(f"{volume.label}: cannot write a SEG for a volume with issues: " + "; ".join(volume.issues))
    classes = _foreground_classes(class_names)
    mapped = _label_lut(labels, [c for c, _ in classes], volume)
    frames = volume_to_dicom_frames(mapped)  # (slices, rows, columns), frame k = volume.slices[k]
    sources, own_frames = _source_datasets(volume)
    if own_frames is None:
        _share_orientation(sources, volume)
    descriptions = segment_descriptions(
        class_names, algorithm_name=algorithm_name, algorithm_version=algorithm_version, codes=codes
    )
    if series_number is None:
        series_number = 1000 + (volume.series_number or 0)
    version = str(algorithm_version)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        plane_positions=None if own_frames is None else _plane_positions(volume),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=_uid(uid_seed, "series"),
        series_number=int(series_number),
        sop_instance_uid=_uid(uid_seed, "instance"),
        instance_number=1,
        manufacturer="kneeseg",
        manufacturer_model_name=str(algorithm_name)[:_MAX_LO],
        software_versions=version,
        device_serial_number=f"kneeseg-{kneeseg.__version__}",
        content_description=f"{algorithm_name} {version}"[:_MAX_LO],
        content_label="KNEESEG",
        content_creator_name=content_creator,
        series_description=str(series_description)[:_MAX_LO],
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
        omit_empty_frames=bool(frames.any()),  # an all-empty SEG keeps its (empty) frames
    )
    if own_frames is not None:
        _keep_own_frames(seg, own_frames)
    if uid_seed is not None:  # highdicom draws this one at random
        dim_uid = _uid(uid_seed, "dimension-organization")
        for item in seg.get("DimensionOrganizationSequence", []):
            item.DimensionOrganizationUID = dim_uid
        for item in seg.get("DimensionIndexSequence", []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = dim_uid
    out = Path(out_path)
    with atomic_path(out) as tmp:
        _write_dataset(seg, tmp)
    return out


# ====================================================================== validation


def _dciodvfy() -> str:
    exe = shutil.which("dciodvfy")
    if exe is None:
        raise FileNotFoundError(
            "dciodvfy not found on PATH: install the 'dicom3tools' package (Debian/Ubuntu: "
            "apt-get install dicom3tools) to validate DICOM files"
        )
    return exe


def dciodvfy_messages(path: PathLike) -> list[str]:
    """All ``Error``/``Warning`` lines that ``dciodvfy`` prints for ``path`` (stripped)."""
    exe = _dciodvfy()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such DICOM file: {p}")
    proc = subprocess.run([exe, str(p)], capture_output=True, text=True, errors="replace")
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines()]
    messages = [ln for ln in lines if ln.startswith(("Error", "Warning"))]
    if proc.returncode != 0 and not any(ln.startswith("Error") for ln in messages):
        tail = " | ".join(ln for ln in lines if ln)[-500:]
        messages.append(f"Error - dciodvfy exited with status {proc.returncode}: {tail}")
    return messages


def validate_dicom_seg(path: PathLike) -> list[str]:
    """Run ``dciodvfy`` on ``path``; return its ``Error`` lines (an empty list means valid).

    Warnings are not returned (see :func:`dciodvfy_messages`). A readable file that is not a
    Segmentation Storage instance is reported as an error too.

    Raises:
        FileNotFoundError: ``dciodvfy`` (package ``dicom3tools``) is not installed, or ``path`` is missing.
    """
    errors = [ln for ln in dciodvfy_messages(path) if ln.startswith("Error")]
    try:
        sop_class = str(pydicom.dcmread(path, stop_before_pixels=True).get("SOPClassUID", ""))
    except Exception:  # unreadable: dciodvfy has reported it
        sop_class = _SEGMENTATION_STORAGE
    if sop_class != _SEGMENTATION_STORAGE:
        errors.append(
            f"Error - SOP Class UID {sop_class or '(none)'} is not Segmentation Storage ({_SEGMENTATION_STORAGE})"
        )
    return errors
