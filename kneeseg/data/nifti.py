"""NIfTI: the one writer kneeseg uses, and input checks.

- :func:`write_nifti`: an array + affine to a ``.nii`` / ``.nii.gz`` file, atomically, with the
  affine as qform and sform (scanner code) and a deterministic gzip stream (no time stamp), so
  that a rerun writes the same bytes. Batch inference writes its masks and the phantom its
  images and labels through it.

Volumes are loaded with MONAI's ``LoadImaged`` + ``NibabelReader`` (spatial axes in voxel
order i, j, k; for a sagittal knee series converted from DICOM, i/j are the in-plane column/row
axes and k the slice axis). This module adds what the reader does not check:

- :func:`count_nonfinite` / :func:`check_finite`: NaN/Inf voxels, with a message naming the file
  ("<path>: image contains 12 NaN values"). The transform form is
  :class:`kneeseg.transforms.CheckFinited`, which takes the file from ``meta["filename_or_obj"]``.
- :func:`check_nifti`: open a file with nibabel and validate it (readable, 2-4 dimensions,
  non-empty, invertible affine, positive voxel sizes, finite values); returns a summary.

All errors are ``ValueError`` s whose message starts with the offending file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.atomic import atomic_write_bytes
from kneeseg.files import PathLike

__all__ = ["NiftiSummary", "check_finite", "check_nifti", "count_nonfinite", "nonfinite_message", "write_nifti"]


def write_nifti(
    path: PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    time_unit: str | None = None,
    description: str | None = None,
    compresslevel: int = 6,
) -> Path:
    """Write ``data`` (kept in its dtype) with ``affine`` (RAS, 4 x 4) to ``path`` atomically.

    The affine is stored as qform and sform with code 1 (scanner), spatial units are mm, the time
    unit is ``time_unit`` (None: unknown). A ``.gz`` path is gzip-compressed at ``compresslevel``
    with no file name or time in the gzip header, so the bytes depend on the content only.
    Returns the path.
    """
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", time_unit)
    if description is not None:
        img.header["descrip"] = description.encode()
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = img.to_bytes()
    if str(path).endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=compresslevel, mtime=0)
    return atomic_write_bytes(path, raw)


def count_nonfinite(array: Any) -> tuple[int, int]:
    """Return ``(number of NaN, number of +-Inf)`` values in an array or tensor."""
    try:
        import torch

        if isinstance(array, torch.Tensor):
            return int(torch.isnan(array).sum()), int(torch.isinf(array).sum())
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.asarray(array)
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.complexfloating):
        return 0, 0
    return int(np.isnan(arr).sum()), int(np.isinf(arr).sum())


def nonfinite_message(source: Any, n_nan: int, n_inf: int, what: str = "image") -> str:
    """Format "<source>: image contains 12 NaN values [and 3 Inf values]"."""
    parts = []
    if n_nan:
        parts.append(f"{n_nan} NaN value{'s' if n_nan != 1 else ''}")
    if n_inf:
        parts.append(f"{n_inf} Inf value{'s' if n_inf != 1 else ''}")
    return f"{source}: {what} contains {' and '.join(parts)}"


def check_finite(array: Any, source: Any = "<array>", what: str = "image") -> None:
    """Raise when ``array`` holds NaN or Inf values.

    Raises:
        ValueError: "<source>: image contains 12 NaN values" (and/or "... Inf values").
    """
    n_nan, n_inf = count_nonfinite(array)
    if n_nan or n_inf:
        raise ValueError(nonfinite_message(source, n_nan, n_inf, what))


@dataclass(frozen=True)
class NiftiSummary:
    """What :func:`check_nifti` found: array shape (nibabel order), voxel sizes (mm), dtype."""

    path: str
    shape: tuple[int, ...]
    zooms: tuple[float, ...]
    dtype: str
    affine: np.ndarray


def check_nifti(path: str | Path, check_values: bool = True) -> NiftiSummary:
    """Open a NIfTI file with nibabel and check it is usable as a knee volume or slice.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        check_values: also load the voxels and reject NaN/Inf (costs one full read).

    Raises:
        ValueError: unreadable file, not 2-4 dimensions, an empty axis, singular affine,
            non-positive voxel size, NaN/Inf voxels; every message starts with the path.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises several types (ImageFileError, OSError, EOFError...)
        raise ValueError(f"{path}: cannot be read as NIfTI ({type(e).__name__}: {e})") from e
    shape = tuple(int(s) for s in img.shape)
    if not 2 <= len(shape) <= 4:
        raise ValueError(f"{path}: expected a 2D, 3D or 4D image, got shape {shape}")
    if min(shape) < 1:
        raise ValueError(f"{path}: image has an empty axis, shape {shape}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"{path}: affine is singular or not finite:\n{affine}")
    zooms = tuple(float(z) for z in img.header.get_zooms()[: min(len(shape), 3)])
    if any(z <= 0 for z in zooms):
        raise ValueError(f"{path}: non-positive voxel size {zooms}")
    if check_values:
        check_finite(np.asanyarray(img.dataobj), path)
    return NiftiSummary(str(path), shape, zooms, str(img.get_data_dtype()), affine)
