"""Write a 2D slice with a declared orientation as a DICOM series, stored in any in-plane layout.

A 2D dataset (knee-acl PNGs) has no geometry; its manifest declares where its columns and rows
point. :func:`write_slice_series` places every pixel of such an image at a fixed patient
position and stores the series in the requested layout (which way the stored columns and rows
run), so the 8 in-plane layouts of one image are the same anatomy. This is how kneeseg checks
that a model gives the same mask for a slice whatever the scanner's storage order, and that a
DICOM evaluation equals the PNG evaluation (``benchmarks/dicom_geometries.py``, the tests).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.atomic import atomic_write_bytes
from kneeseg.data.dicom.values import decimal_string
from kneeseg.data.orientation import SliceOrientation, map_2d
from kneeseg.files import PathLike

__all__ = ["write_slice_series"]


_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_slice_series(
    folder: PathLike,
    image_hw: np.ndarray,
    declared: Any,
    layout: Any,
    *,
    slices: int = 3,
    spacing: float = 0.5,
    slice_step: float = 1.5,
    origin: Sequence[float] = (20.0, -30.0, 40.0),
    series_description: str = "SAG",
    patient_id: str = "SLICE",
    body_part: str | None = None,
    uid_seed: str | None = None,
) -> list[Path]:
    """Write ``image_hw`` (``(H, W)``, orientation ``declared``) as ``slices`` identical slices
    of a DICOM series whose stored images run as ``layout``.

    Args:
        folder: output folder (files ``IM0001.dcm`` ...).
        image_hw: 2D intensities (rounded to uint16).
        declared: the image's orientation (e.g. ``"IP"``: superior left, anterior up).
        layout: where the stored columns and rows point (``"PI"``: the standard sagittal
            storage, ImageOrientationPatient ``[0,1,0, 0,0,-1]``); must be in the same plane.
        slices: copies along the normal (a volume, so 3D post-processing applies).
        spacing: in-plane pixel size (mm, square so every layout keeps it).
        slice_step: distance between slices (mm).
        origin: LPS position of the image's first pixel (row 0, column 0 of ``image_hw``).
        series_description, patient_id, body_part: header values (``body_part``: BodyPartExamined).
        uid_seed: makes the UIDs reproducible (default: random).

    Returns:
        The written paths in slice order. The slices' positions do not depend on ``layout``.

    Raises:
        ValueError: a 3D image, or a layout in another plane than ``declared``.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    img = np.asarray(image_hw)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D (H, W) image, got shape {img.shape}")
    src, dst = SliceOrientation.parse(declared), SliceOrientation.parse(layout)
    amap = map_2d(src, dst)
    stored = np.ascontiguousarray(amap.apply(img.T).T)  # (rows, columns) in the layout
    rows, cols = np.meshgrid(np.arange(img.shape[0]), np.arange(img.shape[1]), indexing="ij")
    r0, c0 = int(amap.apply(rows.T).T[0, 0]), int(amap.apply(cols.T).T[0, 0])
    right, down = src.vectors()
    first = np.asarray(origin, dtype=float) + (c0 * right + r0 * down) * spacing
    row_dir, col_dir = dst.vectors()
    normal = np.cross(row_dir, col_dir)
    if normal.sum() < 0:  # the slices occupy the same positions whichever way the normal points
        first = first - normal * slice_step * (slices - 1)
    pixels = np.clip(np.rint(stored), 0, 65535).astype("<u2")
    entropy = [uid_seed] if uid_seed is not None else None
    study = str(generate_uid(entropy_srcs=entropy + ["study"] if entropy else None))
    series = str(generate_uid(entropy_srcs=entropy + ["series", dst.code] if entropy else None))
    frame = str(generate_uid(entropy_srcs=entropy + ["frame"] if entropy else None))
    out = []
    for k in range(slices):
        sop = str(generate_uid(entropy_srcs=entropy + ["sop", dst.code, str(k)] if entropy else None))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = _MR_IMAGE_STORAGE, sop
        ds.Modality, ds.Manufacturer = "MR", "kneeseg"
        ds.PatientID, ds.PatientName = patient_id, patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = series_description, 1, k + 1
        if body_part:
            ds.BodyPartExamined = body_part
        position = first + normal * slice_step * k
        ds.ImagePositionPatient = [decimal_string(v) for v in position]
        ds.ImageOrientationPatient = [decimal_string(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [decimal_string(spacing), decimal_string(spacing)]
        ds.SliceThickness = decimal_string(slice_step)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
        buf = io.BytesIO()
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(buf, enforce_file_format=True)
        else:  # pragma: no cover - pydicom 2.4
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(buf, write_like_original=False)
        out.append(atomic_write_bytes(Path(folder) / f"IM{k + 1:04d}.dcm", buf.getvalue()))
    return out
