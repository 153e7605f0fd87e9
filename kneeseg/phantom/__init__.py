"""The synthetic knee phantom: kneeseg's embedded default dataset.

Each case is a sagittal 3D knee MR volume with femur (distal condyles, intercondylar notch,
metaphysis and shaft), tibia (sloped plateau, tuberosity, shaft), patella (oval, anterior to
the femur) and the patellar ligament (the paper's target: a thin band from the patella's lower
pole to the tibial tuberosity, elliptic in cross-section so it tapers and vanishes at its
medial and lateral edges), in fat, muscle, cartilage and tendon background with a dark
cortical rim around bright marrow. Case parameters (size, flexion, slope, ligament length
and thickness, position, contrast: PD, T1 or fat-suppressed PD) vary per case.

Image formation: every tissue is a signed distance field (mm); tissues are composited with
anti-aliased partial-volume fractions (a ramp as wide as the voxel's extent along the
surface normal, so thick slices blur through-plane edges), then a smooth multiplicative bias
field, low-frequency tissue texture and Rician noise (magnitude of complex Gaussian noise)
are applied. Labels are the same distance fields thresholded at the voxel centres.

Label ids (:py:data:`PHANTOM_LABELS`): 0 background, 1 femur, 2 tibia, 3 patella,
4 patellar ligament.

Layout written by :py:func:`generate_phantom` (paths in the datalists are relative to
``out_dir``)::

    out_dir/
      dataset.json                 MSD datalist: training / validation / test (image, label, dicom)
      dataset_2d.json              2D datalist of the PNG slices, same case split
      imagesTr/<case>.nii.gz       uint16 image, (columns, rows, slices), RAS affine
      labelsTr/<case>.nii.gz       uint8 labels, same grid
      dicom/<case>/IM0001.dcm ...  MR Image Storage series, one file per slice
      png/<case>_<slice>_img.png   8-bit slice (rows x columns) and
      png/<case>_<slice>_mask.png  its class-id mask, for every ligament slice plus a few without

Arrays in memory are ``(slices, rows, columns)`` (DICOM pixel order per slice); NIfTI files
use dcm2niix's layout, ``(columns, rows, slices)`` with the row axis reversed (so the second
voxel axis points superior), and the affine derived from the DICOM geometry (LPS -> RAS flips
the first two world axes): the NIfTI files equal ``dcm2niix``'s conversion of the DICOM series
in values and affine. Everything is deterministic in ``(seed, case)``.

Modules: :mod:`~kneeseg.phantom.case` (label ids, defaults, geometry, :class:`PhantomCase`),
:mod:`~kneeseg.phantom.anatomy` (distance fields, case parameters),
:mod:`~kneeseg.phantom.render` (:func:`render_case`), :mod:`~kneeseg.phantom.dicom_writer`
(:func:`write_dicom_series`), :mod:`~kneeseg.phantom.dataset` (:func:`generate_phantom`, NIfTI
and PNG writers, datalists). This package only re-exports their public names.
"""

from __future__ import annotations

from kneeseg.phantom.case import (
    DEFAULT_FOV_MM,
    DEFAULT_SHAPE,
    PHANTOM_LABELS,
    PNG_ORIENTATION,
    PhantomCase,
)
from kneeseg.phantom.dataset import (
    generate_phantom,
    write_case_nifti,
    write_png_slices,
)
from kneeseg.phantom.dicom_writer import write_dicom_series
from kneeseg.phantom.render import render_case

__all__ = [
    "DEFAULT_FOV_MM",
    "PNG_ORIENTATION",
    "DEFAULT_SHAPE",
    "PHANTOM_LABELS",
    "PhantomCase",
    "generate_phantom",
    "render_case",
    "write_dicom_series",
    "write_case_nifti",
    "write_png_slices",
]
