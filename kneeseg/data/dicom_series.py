"""DICOM series discovery, grouping, slice ordering, geometry and pixel decoding.

This module needs only numpy and pydicom (2.4 or 3.x); it imports neither torch nor MONAI,
so it can be used by light-weight tools. The MONAI ``ImageReader`` lives in
:mod:`kneeseg.data.dicom_reader`.

Array and affine convention (identical to what nibabel returns for ``dcm2niix -x i`` output):

- a volume is a float32 array shaped ``(columns, rows, slices)``: axis 0 (``i``) runs along the
  DICOM row direction (``ImageOrientationPatient[:3]``, left to right in the stored image),
  axis 1 (``j``) runs *against* the DICOM column direction (the stored rows are flipped, as
  dcm2niix does: ``j = rows - 1 - r``), axis 2 (``k``) is the slice index in ascending order of
  the position projected on the slice normal ``row_dir x col_dir``;
- ``affine`` maps ``(i, j, k, 1)`` to RAS+ millimetres (NIfTI / MONAI / nibabel convention);
  ``affine_lps`` maps the same indices to DICOM patient (LPS) millimetres, for DICOM writers
  (:func:`volume_to_dicom_frames` undoes the axis change). The layout helpers live in
  :mod:`kneeseg.data.orientation`, the home of every axis flip and of the slice-orientation rule.

Discovery (:func:`discover_series`) never raises for bad files: it returns the volumes it could
build plus a list of :class:`Problem` (path + message). Files without the DICOM ``DICM`` marker
are ignored (debug log; listed in :attr:`DiscoveryResult.ignored`), except files named ``*.dcm``,
which are reported. Reading (:func:`load_series`) raises :class:`DicomSeriesError` with a message
naming the series, file and problem.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from kneeseg.data.orientation import dicom_plane_to_volume, plane_of, volume_to_dicom_frames
from kneeseg.files import PathLike

__all__ = [
    "DicomSeriesError",
    "DiscoveryResult",
    "Problem",
    "SeriesVolume",
    "SliceRef",
    "discover_series",
    "load_series",
    "load_volume",
    "select_volume",
    "volume_to_dicom_frames",
]

logger = logging.getLogger(__name__)


#: diag(-1, -1, 1, 1): converts between DICOM LPS and NIfTI/MONAI RAS world coordinates.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_ORIENTATION_TOL = 1e-4  # max abs difference of direction cosines treated as "same orientation"
_DUPLICATE_TOL_MM = 1e-2  # slices closer than this along the normal are duplicates
_GAP_FACTOR = 1.5  # a step larger than 1.5 x the nominal spacing is a gap (missing slices)
_IRREGULAR_REL_TOL = 0.05  # steps deviating more than 5 % from the nominal spacing are irregular
_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}


class DicomSeriesError(ValueError):
    """A DICOM series cannot be read as one volume; the message names the series/file and the problem."""


@dataclass(frozen=True)
class Problem:
    """A file or volume that could not be used: ``path`` and a human-readable ``message``.

    ``volume_id`` is None for file problems (unreadable, truncated, empty) and names the volume
    for geometry problems (gap, duplicates, mixed orientation/size).
    """

    path: str
    message: str
    volume_id: str | None = None  # set for geometry problems of a discovered volume

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class SliceRef:
    """One 2D slice of a volume: a single-frame file (``frame is None``) or one frame of a multi-frame file."""

    path: str
    frame: int | None
    position: tuple[float, float, float]  # ImagePositionPatient, LPS mm
    slope: float = 1.0
    intercept: float = 0.0
    instance_number: int | None = None


@dataclass
class SeriesVolume:
    """One 3D volume found in a DICOM series (one echo / acquisition of one SeriesInstanceUID).

    ``slices`` are in slice order (ascending position along the normal ``row_dir x col_dir``).
    ``issues`` lists geometry problems (gap, duplicates, mixed orientation/size); a volume with
    issues is reported by discovery and refused by :func:`load_volume`.
    """

    volume_id: str
    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    series_description: str
    series_number: int | None
    echo_index: int
    echo_number: int | None
    echo_time: float | None
    acquisition_number: int | None
    orientation: tuple[float, float, float, float, float, float]
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]  # DICOM PixelSpacing: (between rows, between columns) in mm
    slice_thickness: float | None
    slices: tuple[SliceRef, ...]
    issues: tuple[str, ...] = ()
    transfer_syntax: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    series_key: str = ""  # SeriesInstanceUID, or <uid>_f<hash> when one UID names series in several folders
    # header facts used to decide whether a series is a knee MR volume (see kneeseg.data.series_kind)
    body_part: str = ""  # BodyPartExamined, stripped, upper case ("" when missing)
    protocol_name: str = ""  # ProtocolName
    image_type: tuple[str, ...] = ()  # ImageType values of all slices (union, in order of first appearance)
    mosaic_images: int | None = None  # Siemens NumberOfImagesInMosaic (largest over the slices)
    b_value: float | None = None  # diffusion b-value (s/mm^2) shared by all slices; None if absent or mixed
    b_values: tuple[float, ...] = ()  # distinct b-values of the slices, ascending
    diffusion_direction: tuple[float, float, float] | None = None  # gradient direction shared by all slices
    diffusion_index: int | None = None  # index of this b-value/direction when discovery split a diffusion series

    # ------------------------------------------------------------------ descriptive
    @property
    def label(self) -> str:
        """Short description used in messages: UID, description, echo."""
        desc = f" '{self.series_description}'" if self.series_description else ""
        te = f", TE {self.echo_time:g} ms" if self.echo_time is not None else ""
        return f"series {self.series_uid}{desc} (volume {self.volume_id}{te})"

    @property
    def num_slices(self) -> int:
        return len(self.slices)

    @property
    def files(self) -> list[str]:
        """Distinct file paths in slice order (one path for an enhanced multi-frame file)."""
        return list(dict.fromkeys(s.path for s in self.slices))

    @property
    def is_valid(self) -> bool:
        return not self.issues

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(columns, rows, slices)``."""
        return (self.columns, self.rows, self.num_slices)

    # ------------------------------------------------------------------ geometry
    @property
    def row_direction(self) -> np.ndarray:
        return np.asarray(self.orientation[:3], dtype=float)

    @property
    def column_direction(self) -> np.ndarray:
        return np.asarray(self.orientation[3:], dtype=float)

    @property
    def normal(self) -> np.ndarray:
        """Slice normal ``row_dir x col_dir`` (LPS)."""
        return np.cross(self.row_direction, self.column_direction)

    @property
    def plane(self) -> str:
        """Acquisition plane, the dominant axis of the slice normal: ``"sagittal"``, ``"coronal"`` or ``"axial"``."""
        return plane_of(self.normal)

    @property
    def positions(self) -> np.ndarray:
        """``(slices, 3)`` ImagePositionPatient of each slice in slice order (LPS mm)."""
        return np.asarray([s.position for s in self.slices], dtype=float)

    @property
    def slice_vector(self) -> np.ndarray:
        """LPS step from one slice to the next (first-to-last position / (n-1))."""
        pos = self.positions
        if len(pos) > 1:
            return (pos[-1] - pos[0]) / (len(pos) - 1)
        step = self.extra.get("spacing_between_slices") or self.slice_thickness or 1.0
        return self.normal * float(step)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along the array axes ``(i, j, k)`` in mm."""
        return (
            float(self.pixel_spacing[1]),
            float(self.pixel_spacing[0]),
            float(np.linalg.norm(self.slice_vector)),
        )

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 affine from array indices ``(i, j, k)`` to DICOM LPS mm."""
        dr, dc = float(self.pixel_spacing[0]), float(self.pixel_spacing[1])
        aff = np.eye(4)
        aff[:3, 0] = self.row_direction * dc
        aff[:3, 1] = -self.column_direction * dr  # j = rows - 1 - r
        aff[:3, 2] = self.slice_vector
        aff[:3, 3] = np.asarray(self.slices[0].position, dtype=float) + (self.rows - 1) * dr * self.column_direction
        return aff

    @property
    def affine(self) -> np.ndarray:
        """4x4 affine from array indices ``(i, j, k)`` to RAS+ mm (what nibabel reports for dcm2niix output)."""
        return LPS_TO_RAS @ self.affine_lps

    def describe(self) -> dict[str, Any]:
        """Descriptive metadata as a plain dict (JSON-friendly)."""
        return {
            "volume_id": self.volume_id,
            "patient_id": self.patient_id,
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "series_number": self.series_number,
            "modality": self.modality,
            "series_description": self.series_description,
            "echo_index": self.echo_index,
            "echo_number": self.echo_number,
            "echo_time": self.echo_time,
            "acquisition_number": self.acquisition_number,
            "orientation": list(self.orientation),
            "rows": self.rows,
            "columns": self.columns,
            "num_slices": self.num_slices,
            "pixel_spacing": list(self.pixel_spacing),
            "transfer_syntax": self.transfer_syntax,
            "body_part": self.body_part,
            "protocol_name": self.protocol_name,
            "image_type": "\\".join(self.image_type),  # one string (DICOM style): fixed type for batch collation
            "mosaic_images": self.mosaic_images,
            "b_value": self.b_value,
            "diffusion_direction": list(self.diffusion_direction) if self.diffusion_direction else None,
            "diffusion_index": self.diffusion_index,
            "files": self.files,
            "issues": list(self.issues),
        }


@dataclass
class DiscoveryResult:
    """What :func:`discover_series` found: usable and faulty ``volumes``, ``problems`` and ``ignored`` files."""

    volumes: list[SeriesVolume]
    problems: list[Problem]
    ignored: list[str] = field(default_factory=list)

    @property
    def valid_volumes(self) -> list[SeriesVolume]:
        return [v for v in self.volumes if v.is_valid]

    @property
    def series_uids(self) -> list[str]:
        return list(dict.fromkeys(v.series_uid for v in self.volumes))


# ====================================================================== file reading


@dataclass
class _FrameRecord:
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


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
        if value is None:
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    f = _float_or_none(value)
    return None if f is None else int(round(f))


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _fg_item(frame_item: Any, shared_item: Any, seq_name: str) -> Any:
    """First item of a functional-group sequence, per-frame first, then shared (or None)."""
    for group in (frame_item, shared_item):
        if group is not None:
            seq = group.get(seq_name)
            if seq:
                return seq[0]
    return None


# ---------------------------------------------------------------------- selection facts
# Header facts that tell a knee MR volume from a brain scan, a Siemens MOSAIC or a diffusion series.
# They are read defensively: a missing, malformed or wrongly encoded value gives "" / () / None and
# never makes discovery fail.

_SIEMENS_MR_HEADER = "SIEMENS MR HEADER"  # private creator of Siemens group 0019 (not "SIEMENS CSA HEADER", 0029)
_GE_PARAMETERS = "GEMS_PARM_01"
_PHILIPS_IMAGING = "Philips Imaging DD 001"
#: GE adds 1e9 to the b-value in (0043,1039) for multi-b-value and synthetic DWI (BIAS_FOR_BVALUE, stored in
#: (0043,107F)); DTI has no bias. Removing it as ``b % 1e9`` (not ``% 10000``) keeps b-values >= 10000.
_GE_BVALUE_BIAS = 1_000_000_000
_MAX_B_VALUE = 100_000.0  # larger (or negative) b-values are treated as garbage
_MAX_MOSAIC_IMAGES = 4096  # NumberOfImagesInMosaic above this is a mis-decoded value


def _safe_get(ds: Any, keyword: Any) -> Any:
    """``ds.get(keyword)``, or None when the element is missing or cannot be decoded."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _text(value: Any) -> str:
    """A string attribute, stripped ("" for None or an undecodable value)."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1", errors="replace")
    try:
        return str(value).strip().strip("\x00").strip()
    except Exception:
        return ""


def _image_type(value: Any) -> tuple[str, ...]:
    """ImageType values, upper case (a single string is split at backslashes)."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, bytearray)):
        parts: list[Any] = _text(value).split("\\")
    else:
        try:
            parts = list(value)
        except TypeError:
            parts = [value]
    return tuple(t for t in (_text(p).upper() for p in parts) if t)


def _private_element(ds: Any, group: int, creator: str, offset: int) -> Any:
    """The private element ``(group, xx<offset>)`` of the block reserved by ``creator``, or None.

    The creator is compared case-insensitively after stripping; a missing creator, a missing element
    or an element that cannot be decoded gives None.
    """
    try:
        for block in range(0x10, 0x100):
            tag = Tag(group, block)
            if tag not in ds:
                continue
            if _text(ds[tag].value).upper() == creator.upper():
                data_tag = Tag(group, (block << 8) | offset)
                return ds[data_tag] if data_tag in ds else None
    except Exception:
        return None
    return None


def _numbers(value: Any, binary: str | None = None, little_endian: bool = True) -> list[float] | None:
    """Numbers held by an element value, or None if it holds none that are finite.

    Args:
        value: a number, a string ("1000" or "0\\\\8\\\\0\\\\0"), a multi-value, or raw bytes (VR UN/OB).
        binary: struct code ("H", "f", "d") of the vendor's binary encoding; raw bytes are unpacked with
            it. Without it raw bytes are read as text (IS/DS values).
        little_endian: byte order of raw binary values.
    """
    try:
        if isinstance(value, (bytes, bytearray)):
            raw = bytes(value)
            if binary is None:
                value = raw.decode("ascii").strip("\x00 ").split("\\")
            else:
                size = struct.calcsize(binary)
                if not raw or len(raw) % size:
                    return None
                order = "<" if little_endian else ">"
                value = struct.unpack(f"{order}{len(raw) // size}{binary}", raw)
        elif isinstance(value, str):
            value = value.split("\\")
        elif not isinstance(value, (list, tuple)) and type(value).__name__ != "MultiValue":
            value = [value]
        out = [float(v) for v in value]
    except Exception:
        return None
    return out if out and all(math.isfinite(v) for v in out) else None


def _private_numbers(ds: Any, group: int, creator: str, offset: int, binary: str | None = None) -> list[float] | None:
    """Numbers of a private element (see :func:`_private_element`), decoded defensively."""
    elem = _private_element(ds, group, creator, offset)
    if elem is None:
        return None
    try:
        little = _transfer_syntax(ds) != pydicom.uid.ExplicitVRBigEndian
        return _numbers(elem.value, binary, little)
    except Exception:
        return None


def _valid_b(value: float | None) -> float | None:
    return value if value is not None and 0.0 <= value <= _MAX_B_VALUE else None


def _valid_direction(values: list[float] | None) -> tuple[float, float, float] | None:
    return (values[0], values[1], values[2]) if values is not None and len(values) == 3 else None


def _mosaic_images(ds: Any) -> int | None:
    """Siemens NumberOfImagesInMosaic (0019,xx0A, US) or None."""
    values = _private_numbers(ds, 0x0019, _SIEMENS_MR_HEADER, 0x0A, "H")
    if values is None or len(values) != 1 or values[0] != int(values[0]):
        return None
    n = int(values[0])
    return n if 0 < n <= _MAX_MOSAIC_IMAGES else None


def _standard_diffusion(container: Any) -> tuple[float | None, tuple[float, float, float] | None]:
    """DiffusionBValue (0018,9087) and DiffusionGradientOrientation (0018,9089) of a dataset or MR Diffusion item.

    The orientation is read from the item itself or from its DiffusionGradientDirectionSequence.
    """
    if container is None:
        return None, None
    values = _numbers(_safe_get(container, "DiffusionBValue"))
    b = _valid_b(values[0]) if values else None
    direction = _valid_direction(_numbers(_safe_get(container, "DiffusionGradientOrientation")))
    if direction is None:
        seq = _safe_get(container, "DiffusionGradientDirectionSequence")
        try:
            item = seq[0] if seq else None
        except Exception:
            item = None
        if item is not None:
            direction = _valid_direction(_numbers(_safe_get(item, "DiffusionGradientOrientation")))
    return b, direction


def _private_vector(
    ds: Any, group: int, creator: str, offsets: tuple[int, int, int], binary: str | None = None
) -> tuple[float, float, float] | None:
    """A gradient direction stored as three single-valued private elements (GE, Philips), or None."""
    values = [_private_numbers(ds, group, creator, offset, binary) for offset in offsets]
    if any(v is None or len(v) != 1 for v in values):
        return None
    return _valid_direction([v[0] for v in values])  # type: ignore[index]


def _vendor_diffusion(ds: Any) -> tuple[float | None, tuple[float, float, float] | None]:
    """``(b_value, direction)`` from private tags of the vendor whose b-value tag is present.

    Siemens: b (0019,xx0C) IS, direction (0019,xx0E) FD x 3 ('SIEMENS MR HEADER').
    GE: b = first value of (0043,xx39) IS ('GEMS_PARM_01'), less the 1e9 bias when present; direction
    (0019,xxBB/BC/BD) DS ('GEMS_ACQU_01'), read only when b > 0 (other sequences use these "user data"
    slots for other things, e.g. 2.0 in a DESS knee series).
    Philips: b (2001,xx03) FL ('Philips Imaging DD 001'), direction (2005,xxB0/B1/B2) FL
    ('Philips MR Imaging DD 001').
    """
    siemens = _private_numbers(ds, 0x0019, _SIEMENS_MR_HEADER, 0x0C)
    if siemens:
        direction = _valid_direction(_private_numbers(ds, 0x0019, _SIEMENS_MR_HEADER, 0x0E, "d"))
        return _valid_b(siemens[0]), direction
    ge = _private_numbers(ds, 0x0043, _GE_PARAMETERS, 0x39)
    if ge:
        b = _valid_b(ge[0] % _GE_BVALUE_BIAS if ge[0] >= _GE_BVALUE_BIAS else ge[0])
        direction = _private_vector(ds, 0x0019, "GEMS_ACQU_01", (0xBB, 0xBC, 0xBD)) if b else None
        return b, direction
    philips = _private_numbers(ds, 0x2001, _PHILIPS_IMAGING, 0x03, "f")
    if philips:
        direction = _private_vector(ds, 0x2005, "Philips MR Imaging DD 001", (0xB0, 0xB1, 0xB2), "f")
        return _valid_b(philips[0]), direction
    siemens_direction = _valid_direction(_private_numbers(ds, 0x0019, _SIEMENS_MR_HEADER, 0x0E, "d"))
    return None, siemens_direction


def _diffusion_facts(ds: Any, frame_item: Any = None) -> tuple[float | None, tuple[float, float, float] | None]:
    """``(b_value, gradient direction)`` of a slice: standard tags first, then vendor private tags.

    For an enhanced MR frame, ``frame_item`` is its MRDiffusionSequence item (per-frame or shared).
    Standard tags are also looked for at the top level and in a top-level MRDiffusionSequence.
    """
    b, direction = _standard_diffusion(frame_item)
    top = _safe_get(ds, "MRDiffusionSequence")
    try:
        top_item = top[0] if top else None
    except Exception:
        top_item = None
    for container in (ds, top_item):
        if b is not None and direction is not None:
            break
        b2, d2 = _standard_diffusion(container)
        b = b if b is not None else b2
        direction = direction if direction is not None else d2
    if b is None or direction is None:
        vendor_b, vendor_direction = _vendor_diffusion(ds)
        b = b if b is not None else vendor_b
        direction = direction if direction is not None else vendor_direction
    return b, direction


def _selection_facts(ds: Any) -> dict[str, Any]:
    """File-level facts for :class:`_FrameRecord`: body part, protocol, ImageType, mosaic size."""
    return dict(
        body_part=_text(_safe_get(ds, "BodyPartExamined")).upper(),
        protocol_name=_text(_safe_get(ds, "ProtocolName")),
        image_type=_image_type(_safe_get(ds, "ImageType")),
        mosaic_images=_mosaic_images(ds),
    )


def _expected_native_bytes(ds: Any) -> int:
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(_float_or_none(ds.get("NumberOfFrames")) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if bits == 1:
        return (rows * cols * frames * spp + 7) // 8
    return rows * cols * frames * spp * (bits // 8)


def _transfer_syntax(ds: Any) -> pydicom.uid.UID:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return pydicom.uid.UID(ts) if ts else pydicom.uid.ImplicitVRLittleEndian


def _has_dicm_marker(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_dataset(path: str) -> tuple[Any | None, str | None]:
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


def _records_from_dataset(ds: Any, path: str) -> tuple[list[_FrameRecord], str | None]:
    """Header facts of every slice in ``ds``; ``([], None)`` for non-image DICOM, ``([], msg)`` on error."""
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    sop_name = pydicom.uid.UID(str(ds.get("SOPClassUID", ""))).name if "SOPClassUID" in ds else ""
    if not has_pixels:
        if "Rows" in ds or "Image Storage" in sop_name:
            return [], "truncated or incomplete file: no Pixel Data element"
        return [], None  # DICOMDIR, structured report, presentation state ...: not an image
    if "Rows" not in ds or "Columns" not in ds:
        return [], "image without Rows/Columns"
    ts = _transfer_syntax(ds)
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
        series_number=_int_or_none(ds.get("SeriesNumber")),
        acquisition_number=_int_or_none(ds.get("AcquisitionNumber")),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        transfer_syntax=str(ts),
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        **_selection_facts(ds),
    )
    if not common["series_uid"]:
        return [], "no SeriesInstanceUID"
    n_frames = int(_float_or_none(ds.get("NumberOfFrames")) or 1)
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
            b_value, direction = _diffusion_facts(ds, _fg_item(item, shared, "MRDiffusionSequence"))
            records.append(
                _FrameRecord(
                    frame=f,
                    b_value=b_value,
                    diffusion_direction=direction,
                    echo_number=None,
                    echo_time=_float_or_none(echo.get("EffectiveEchoTime")) if echo is not None else None,
                    instance_number=(
                        _int_or_none(content.get("InStackPositionNumber")) if content is not None else None
                    ),
                    orientation=_floats(ori.get("ImageOrientationPatient"), 6) if ori is not None else None,
                    position=_floats(pos.get("ImagePositionPatient"), 3) if pos is not None else None,  # type: ignore[arg-type]
                    pixel_spacing=_floats(meas.get("PixelSpacing"), 2) if meas is not None else None,  # type: ignore[arg-type]
                    slice_thickness=_float_or_none(meas.get("SliceThickness")) if meas is not None else None,
                    spacing_between_slices=(
                        _float_or_none(meas.get("SpacingBetweenSlices")) if meas is not None else None
                    ),
                    slope=(_float_or_none(pvt.get("RescaleSlope")) if pvt is not None else None) or 1.0,
                    intercept=(_float_or_none(pvt.get("RescaleIntercept")) if pvt is not None else None) or 0.0,
                    **common,  # type: ignore[arg-type]
                )
            )
        return records, None
    if n_frames > 1:
        return [], f"multi-frame file ({n_frames} frames) without per-frame geometry is not supported"
    slope = _float_or_none(ds.get("RescaleSlope"))
    intercept = _float_or_none(ds.get("RescaleIntercept"))
    b_value, direction = _diffusion_facts(ds)
    rec = _FrameRecord(
        frame=None,
        b_value=b_value,
        diffusion_direction=direction,
        echo_number=_int_or_none(ds.get("EchoNumbers")),
        echo_time=_float_or_none(ds.get("EchoTime")),
        instance_number=_int_or_none(ds.get("InstanceNumber")),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
        slice_thickness=_float_or_none(ds.get("SliceThickness")),
        spacing_between_slices=_float_or_none(ds.get("SpacingBetweenSlices")),
        slope=1.0 if slope is None else slope,
        intercept=0.0 if intercept is None else intercept,
        **common,  # type: ignore[arg-type]
    )
    return [rec], None


def _iter_files(source: PathLike | Sequence[PathLike]) -> tuple[list[str], list[Problem]]:
    if isinstance(source, (str, os.PathLike)):
        sources = [source]
    else:
        sources = list(source)
    files: list[str] = []
    problems: list[Problem] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                files.extend(os.path.join(dirpath, name) for name in sorted(filenames))
        elif p.is_file():
            files.append(str(p))
        else:
            problems.append(Problem(str(p), "no such file or folder"))
    return files, problems


# ====================================================================== grouping and geometry


def _echo_groups(records: list[_FrameRecord]) -> list[list[_FrameRecord]]:
    """Split the records of one series into echoes (EchoNumbers, else EchoTime), sorted by echo time."""
    numbers = {r.echo_number for r in records}
    times = {None if r.echo_time is None else round(r.echo_time, 2) for r in records}
    if len(numbers) > 1:
        key = lambda r: (r.echo_number is None, r.echo_number or 0)  # noqa: E731
    elif len(times) > 1:
        key = lambda r: (r.echo_time is None, round(r.echo_time or 0.0, 2))  # noqa: E731
    else:
        return [records]
    groups: dict[Any, list[_FrameRecord]] = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)

    def order(group: list[_FrameRecord]) -> tuple:
        tes = [r.echo_time for r in group if r.echo_time is not None]
        nums = [r.echo_number for r in group if r.echo_number is not None]
        return (not tes, float(np.median(tes)) if tes else 0.0, min(nums) if nums else 0)

    return sorted(groups.values(), key=order)


def _has_duplicate_positions(records: list[_FrameRecord]) -> bool:
    pos = [tuple(np.round(r.position, 2)) for r in records if r.position is not None]
    return len(pos) != len(set(pos))


def _acquisition_groups(records: list[_FrameRecord]) -> list[list[_FrameRecord]] | None:
    """Split by AcquisitionNumber when positions repeat and each acquisition alone does not."""
    if not _has_duplicate_positions(records):
        return None
    groups: dict[Any, list[_FrameRecord]] = defaultdict(list)
    for r in records:
        groups[r.acquisition_number].append(r)
    if len(groups) < 2 or any(_has_duplicate_positions(g) for g in groups.values()):
        return None
    return [groups[k] for k in sorted(groups, key=lambda a: (a is None, a or 0))]


def _diffusion_key(r: _FrameRecord) -> tuple[float | None, tuple[float, ...] | None]:
    b = None if r.b_value is None else round(r.b_value, 1)
    d = None if r.diffusion_direction is None else tuple(round(v, 4) for v in r.diffusion_direction)
    return (b, d)


def _diffusion_groups(records: list[_FrameRecord]) -> list[list[_FrameRecord]] | None:
    """Split by (b-value, gradient direction) when positions repeat and these differ; else None.

    Groups are ordered by b-value (missing last), then by their lowest InstanceNumber (acquisition
    order), then by direction, so the order does not depend on file names.
    """
    if not _has_duplicate_positions(records):
        return None
    groups: dict[Any, list[_FrameRecord]] = defaultdict(list)
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
    records: list[_FrameRecord], echo_index: int, base_id: str, diffusion_index: int | None = None
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


def _selection_fields(records: list[_FrameRecord]) -> dict[str, Any]:
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
    records: list[_FrameRecord], echo_index: int, volume_id: str, diffusion_index: int | None = None
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
        if not any(np.allclose(ori, d, atol=_ORIENTATION_TOL) for d in distinct):
            distinct.append(ori)
    if len(distinct) > 1:
        desc = "; ".join(
            "[" + ", ".join(f"{v:.4g}" for v in d) + "]" + f" ({sum(n for o, n in orientations.items() if np.allclose(o, d, atol=_ORIENTATION_TOL))} slices)"
            for d in distinct
        )
        issues.append(f"mixed orientations (ImageOrientationPatient): {desc}")

    normal = np.cross(np.asarray(ref_ori[:3]), np.asarray(ref_ori[3:]))

    def proj(r: _FrameRecord) -> float:
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


def _slice_name(r: _FrameRecord) -> str:
    name = os.path.basename(r.path)
    return name if r.frame is None else f"{name} frame {r.frame}"


def _slice_identity(r: _FrameRecord) -> tuple:
    """What makes two slices of one series the same slice: position, echo, acquisition, diffusion."""
    pos = None if r.position is None else tuple(round(v, 2) for v in r.position)
    te = None if r.echo_time is None else round(r.echo_time, 2)
    return (pos, r.echo_number, te, r.acquisition_number, r.b_value, r.diffusion_direction)


def _series_groups(uid: str, records: list[_FrameRecord]) -> list[tuple[str, list[_FrameRecord], list[str]]]:
    """``(series key, records, notes)`` for the records of one SeriesInstanceUID.

    - The same instance (SOPInstanceUID and frame) in several files -- a series copied twice, a
      file duplicated -- is read once; the copies are named in a note.
    - The same UID for different series in different folders (slices that would duplicate each
      other across folders, with different instances) is split by folder, key ``<uid>_f<hash>``,
      so neither is lost nor merged into a broken volume. A series stored across folders without
      such overlap stays one series.
    """
    notes: list[str] = []
    kept: list[_FrameRecord] = []
    seen: dict[tuple, _FrameRecord] = {}
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
    by_dir: dict[str, list[_FrameRecord]] = defaultdict(list)
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


def _series_volumes(key: str, records: list[_FrameRecord]) -> list[SeriesVolume]:
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
    files, problems = _iter_files(source)
    ignored: list[str] = []
    by_series: dict[str, list[_FrameRecord]] = defaultdict(list)
    for path in files:
        ds, message = _read_dataset(path)
        if ds is None:
            if message is None:
                logger.debug("ignoring non-DICOM file %s", path)
                ignored.append(path)
            else:
                problems.append(Problem(path, message))
            continue
        try:
            records, message = _records_from_dataset(ds, path)
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


# ====================================================================== selection and loading


def _volume_summary(v: SeriesVolume) -> str:
    te = f"TE {v.echo_time:g} ms, " if v.echo_time is not None else ""
    acq = f", acquisition {v.acquisition_number}, volume_id {v.volume_id}" if "_a" in v.volume_id else ""
    if v.diffusion_index is not None:
        b = f", b = {v.b_value:g} s/mm^2" if v.b_value is not None else ""
        acq = f"{b}, volume_id {v.volume_id}"
    return f"echo={v.echo_index} ({te}{v.num_slices} slices{acq})"


def select_volume(
    result: DiscoveryResult,
    *,
    echo: int | None = None,
    series_uid: str | None = None,
    volume_id: str | None = None,
    source: str = "input",
    strict: bool = True,
) -> SeriesVolume:
    """Pick exactly one volume from a discovery result, or raise :class:`DicomSeriesError` saying why.

    Args:
        result: output of :func:`discover_series`.
        echo: 0-based echo index (echoes sorted by echo time) for multi-echo series.
        series_uid: SeriesInstanceUID to pick when the input holds several series.
        volume_id: exact :attr:`SeriesVolume.volume_id` (overrides the other selectors).
        source: name of the input used in messages.
        strict: if True, any file problem (unreadable/truncated/empty file) is an error.

    Raises:
        DicomSeriesError: no series, several series, several echoes/acquisitions without a
            selector, an unknown selector, unreadable files (``strict``).
    """
    file_problems = [p for p in result.problems if p.volume_id is None]
    if strict and file_problems:
        listed = "; ".join(str(p) for p in file_problems[:5])
        more = f" (and {len(file_problems) - 5} more)" if len(file_problems) > 5 else ""
        raise DicomSeriesError(f"{source}: {len(file_problems)} DICOM file(s) could not be read: {listed}{more}")
    for p in file_problems:
        logger.warning("skipping %s", p)
    volumes = result.volumes
    if not volumes:
        raise DicomSeriesError(f"{source}: no DICOM image series found")
    if volume_id is not None:
        volumes = [v for v in volumes if v.volume_id == volume_id]
        if not volumes:
            ids = ", ".join(v.volume_id for v in result.volumes)
            raise DicomSeriesError(f"{source}: no volume with id {volume_id}; available: {ids}")
        return volumes[0]
    if series_uid is not None:
        volumes = [v for v in volumes if v.series_uid == series_uid]
        if not volumes:
            uids = ", ".join(result.series_uids)
            raise DicomSeriesError(f"{source}: no series with SeriesInstanceUID {series_uid}; available: {uids}")
    uids = list(dict.fromkeys(v.series_uid for v in volumes))
    if len(uids) > 1:
        desc = "; ".join(
            f"{u} ('{next(v.series_description for v in volumes if v.series_uid == u)}', "
            f"{sum(len(v.files) for v in volumes if v.series_uid == u)} files)"
            for u in uids
        )
        raise DicomSeriesError(
            f"{source} holds {len(uids)} DICOM series: {desc}; pass series_uid=... or point at one series"
        )
    if echo is not None:
        chosen = [v for v in volumes if v.echo_index == echo]
        if not chosen:
            listed = "; ".join(_volume_summary(v) for v in volumes)
            raise DicomSeriesError(f"{source}: series {uids[0]} has no echo={echo}; available: {listed}")
        volumes = chosen
    if len(volumes) > 1:
        listed = "; ".join(_volume_summary(v) for v in volumes)
        what = "echo volumes" if len({v.echo_index for v in volumes}) > 1 else "acquisitions"
        if len({v.echo_index for v in volumes}) == 1 and any(v.diffusion_index is not None for v in volumes):
            what = "diffusion volumes"
        raise DicomSeriesError(
            f"{source}: series {uids[0]} holds {len(volumes)} {what} ({listed}); pass echo=<index> "
            "(or volume_id=...) to choose one"
        )
    return volumes[0]


def _decode(path: str, ds_cache: dict[str, np.ndarray]) -> np.ndarray:
    if path not in ds_cache:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            raise DicomSeriesError(f"{path}: cannot read DICOM file ({type(exc).__name__}: {exc})") from exc
        ts = _transfer_syntax(ds)
        try:
            ds_cache[path] = np.asarray(ds.pixel_array)
        except Exception as exc:  # decoder plugins raise various types
            raise DicomSeriesError(
                f"{path}: cannot decode pixel data ({ts.name}, {ts}): {type(exc).__name__}: {exc}"
            ) from exc
    return ds_cache[path]


def load_volume(volume: SeriesVolume) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode the pixels of one volume.

    Returns:
        ``(array, meta)``: float32 array shaped ``(columns, rows, slices)`` with RescaleSlope/Intercept
        applied, and a meta dict with ``affine`` (RAS), ``affine_lps``, ``spatial_shape``, ``spacing``
        ``(i, j, k)`` mm, ``pixdim`` (NIfTI-style, 8 values), ``space`` ("RAS") and the fields of
        :meth:`SeriesVolume.describe`.

    Raises:
        DicomSeriesError: the volume has geometry issues, or a file cannot be read/decoded.
    """
    if volume.issues:
        raise DicomSeriesError(f"{volume.label}: " + "; ".join(volume.issues))
    # slice-major storage (each plane contiguous, written and later read as a whole), seen as
    # (columns, rows, slices)
    planes = np.empty((volume.num_slices, volume.columns, volume.rows), dtype=np.float32)
    out = np.moveaxis(planes, 0, 2)
    cache: dict[str, np.ndarray] = {}
    for k, ref in enumerate(volume.slices):
        pixels = _decode(ref.path, cache)
        if ref.frame is not None:
            pixels = pixels[ref.frame] if pixels.ndim == 3 else pixels
        if pixels.shape != (volume.rows, volume.columns):
            where = ref.path if ref.frame is None else f"{ref.path} frame {ref.frame}"
            raise DicomSeriesError(
                f"{where}: decoded pixel array has shape {pixels.shape}, expected ({volume.rows}, {volume.columns})"
            )
        # rescale by hand: per-frame values of enhanced MR are handled the same on pydicom 2.4 and 3.x
        plane = pixels.astype(np.float32)
        if ref.slope != 1.0 or ref.intercept != 0.0:
            plane = plane * np.float32(ref.slope) + np.float32(ref.intercept)
        planes[k] = dicom_plane_to_volume(plane)
        if ref.frame is None:
            cache.pop(ref.path, None)  # single-frame files are used once
    affine = volume.affine
    meta = volume.describe()
    spacing = np.asarray(volume.spacing, dtype=float)
    qfac = 1.0 if np.linalg.det(affine[:3, :3]) >= 0 else -1.0
    meta.update(
        affine=affine,
        affine_lps=volume.affine_lps,
        spatial_shape=np.asarray(out.shape, dtype=int),
        spacing=spacing,
        pixdim=np.asarray([qfac, *spacing, 1.0, 1.0, 1.0, 1.0], dtype=float),
        space="RAS",
    )
    return out, meta


def load_series(
    source: SeriesVolume | PathLike | Sequence[PathLike],
    echo: int | None = None,
    *,
    series_uid: str | None = None,
    volume_id: str | None = None,
    strict: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Load one DICOM volume from a :class:`SeriesVolume`, a series folder, or a list of files.

    Args:
        source: a discovered volume, a folder (searched recursively) or files of one series.
        echo: 0-based echo index (by echo time) when the series has several echoes; required then.
        series_uid: which series to read when the folder holds several.
        volume_id: exact volume id (see :attr:`SeriesVolume.volume_id`).
        strict: if True (default) any unreadable/truncated/empty DICOM file in ``source`` is an error;
            if False such files are logged and skipped.

    Returns:
        ``(array, meta)`` as :func:`load_volume`: float32 ``(columns, rows, slices)`` and RAS ``affine``.

    Raises:
        DicomSeriesError: with a message naming the series/file and the problem.
    """
    if isinstance(source, SeriesVolume):
        return load_volume(source)
    name = str(source) if isinstance(source, (str, os.PathLike)) else f"{len(source)} files"
    result = discover_series(source)
    volume = select_volume(
        result, echo=echo, series_uid=series_uid, volume_id=volume_id, source=name, strict=strict
    )
    return load_volume(volume)
