"""The DICOM series volume model: what discovery found and the geometry derived from it.

A :class:`SeriesVolume` is one 3D volume of a DICOM series (one echo / acquisition / diffusion
volume of one SeriesInstanceUID) with its slices in order, its header facts and its affines;
:class:`DiscoveryResult` holds the volumes and the :class:`Problem` list of a discovery;
:class:`DicomSeriesError` is raised when a series cannot be read as one volume.

Array and affine convention (identical to what nibabel returns for ``dcm2niix -x i`` output):

- a volume is a float32 array shaped ``(columns, rows, slices)``: axis 0 (``i``) runs along the
  DICOM row direction (``ImageOrientationPatient[:3]``, left to right in the stored image),
  axis 1 (``j``) runs *against* the DICOM column direction (the stored rows are flipped, as
  dcm2niix does: ``j = rows - 1 - r``), axis 2 (``k``) is the slice index in ascending order of
  the position projected on the slice normal ``row_dir x col_dir``;
- ``affine`` maps ``(i, j, k, 1)`` to RAS+ millimetres (NIfTI / MONAI / nibabel convention);
  ``affine_lps`` maps the same indices to DICOM patient (LPS) millimetres, for DICOM writers
  (:func:`~kneeseg.data.orientation.volume_to_dicom_frames` undoes the axis change). The layout
  helpers live in :mod:`kneeseg.data.orientation`, the home of every axis flip and of the
  slice-orientation rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kneeseg.data.orientation import LPS_TO_RAS, plane_of

__all__ = ["LPS_TO_RAS", "DicomSeriesError", "DiscoveryResult", "Problem", "SeriesVolume", "SliceRef"]




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
    def is_mosaic(self) -> bool:
        """Siemens MOSAIC images: several slices tiled in one 2D image (ImageType MOSAIC, or
        NumberOfImagesInMosaic above 1 on a slice)."""
        return "MOSAIC" in self.image_type or (self.mosaic_images or 0) > 1

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
