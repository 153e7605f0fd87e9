"""The phantom case: label ids, default size and field of view, acquisition geometry, and
:class:`PhantomCase`, the container of one rendered case with its NIfTI layout and affine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kneeseg.data.orientation import LPS_TO_RAS, SliceOrientation, dicom_plane_to_volume

__all__ = ["DEFAULT_FOV_MM", "DEFAULT_SHAPE", "PHANTOM_LABELS", "PNG_ORIENTATION", "PhantomCase"]


PHANTOM_LABELS: dict[int, str] = {0: "background", 1: "femur", 2: "tibia", 3: "patella", 4: "patellar_ligament"}
"""Class id -> name of the phantom's label maps."""
DEFAULT_SHAPE: tuple[int, int, int] = (256, 256, 40)
"""Default case size as (columns, rows, slices) = (anterior-posterior, superior-inferior, left-right)."""
DEFAULT_FOV_MM: tuple[float, float, float] = (150.0, 150.0, 120.0)
"""Default field of view in mm along (columns, rows, slices); spacing = fov / shape."""

# DICOM direction cosines of a sagittal acquisition (LPS): rows run posterior, columns inferior.
ROW_DIR = np.array([0.0, 1.0, 0.0])
COL_DIR = np.array([0.0, 0.0, -1.0])
SLICE_DIR = np.cross(ROW_DIR, COL_DIR)  # (-1, 0, 0): towards the patient's right
PNG_ORIENTATION = SliceOrientation.parse([*ROW_DIR, *COL_DIR])
"""Orientation of the phantom's PNG slices (declared in ``dataset_2d.json``): the DICOM storage order."""


@dataclass
class PhantomCase:
    """One rendered phantom case, in DICOM pixel order.

    Attributes:
        case_id: e.g. ``"case_000"``.
        seed, index: the generator seed and case number it was rendered from.
        image: ``(slices, rows, columns)`` uint16 stored values (real value = stored; slope 1).
        label: ``(slices, rows, columns)`` uint8 class ids (:py:data:`PHANTOM_LABELS`).
        spacing: ``(column_spacing, row_spacing, slice_spacing)`` in mm, i.e. along
            (columns, rows, slices).
        origin_lps: LPS position (mm) of the centre of the first pixel of the first slice.
        params: the sampled anatomy and acquisition parameters.
    """

    case_id: str
    seed: int
    index: int
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    origin_lps: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def slice_position(self, k: int) -> np.ndarray:
        """ImagePositionPatient (LPS, mm) of slice ``k``."""
        return self.origin_lps + k * self.spacing[2] * SLICE_DIR

    def to_nifti_layout(self, volume: np.ndarray) -> np.ndarray:
        """``(slices, rows, columns)`` -> ``(columns, rows, slices)`` with the row axis reversed,
        exactly as dcm2niix stores a DICOM series (first NIfTI row = last DICOM row)."""
        return np.ascontiguousarray(np.stack([dicom_plane_to_volume(p) for p in volume], axis=-1))

    def affine_ras(self) -> np.ndarray:
        """4x4 voxel -> RAS affine of :py:meth:`to_nifti_layout` arrays (matches dcm2niix)."""
        dx, dy, dz = self.spacing
        ny = self.image.shape[1]
        lps = np.eye(4)
        lps[:3, 0] = ROW_DIR * dx
        lps[:3, 1] = -COL_DIR * dy  # reversed rows
        lps[:3, 2] = SLICE_DIR * dz
        lps[:3, 3] = self.origin_lps + (ny - 1) * dy * COL_DIR
        return LPS_TO_RAS @ lps
