"""Finding and describing data: DICOM series discovery and reading, 2D/NIfTI inputs and
manifests (the synthetic knee phantom is :mod:`kneeseg.phantom`).

Attributes are imported lazily so that the pure-DICOM part (the ``kneeseg.data.dicom`` package)
works without torch or MONAI installed (e.g. in a MONAI Label environment pinned to pydicom 2.4).
"""

from __future__ import annotations

from kneeseg.lazy import lazy_exports

_EXPORTS = {
    # DICOM series (numpy + pydicom only)
    "DicomSeriesError": "kneeseg.data.dicom.volume",
    "DiscoveryResult": "kneeseg.data.dicom.volume",
    "Problem": "kneeseg.data.dicom.volume",
    "SeriesVolume": "kneeseg.data.dicom.volume",
    "SliceRef": "kneeseg.data.dicom.volume",
    "discover_series": "kneeseg.data.dicom.discovery",
    "load_series": "kneeseg.data.dicom.loading",
    "load_volume": "kneeseg.data.dicom.loading",
    "select_volume": "kneeseg.data.dicom.loading",
    "volume_to_dicom_frames": "kneeseg.data.orientation",
    # slice orientation: the geometry rule (numpy only)
    "AxisMap": "kneeseg.data.orientation",
    "SliceOrientation": "kneeseg.data.orientation",
    "datalist_orientation": "kneeseg.data.orientation",
    "map_2d": "kneeseg.data.orientation",
    "map_volume": "kneeseg.data.orientation",
    "plane_of": "kneeseg.data.orientation",
    # weak (slice-range) labels of unlabelled volumes
    "load_weak_datalist": "kneeseg.data.weak_labels",
    "write_slice_series": "kneeseg.data.slice_series",
    # which series to segment: body part, Siemens MOSAIC, diffusion (numpy + pydicom only)
    "body_part_decision": "kneeseg.data.series_kind",
    "body_part_of": "kneeseg.data.series_kind",
    "diffusion_summary": "kneeseg.data.series_kind",
    "is_mosaic": "kneeseg.data.series_kind",
    "series_skip_reason": "kneeseg.data.series_kind",
    # MONAI reader
    "KneeDicomReader": "kneeseg.data.dicom.monai_reader",
    # NIfTI writing
    "write_nifti": "kneeseg.data.nifti",
    # manifests
    "ManifestError": "kneeseg.data.manifest",
    "build_manifest": "kneeseg.data.manifest",
    "write_manifest": "kneeseg.data.manifest",
    "assign_groups": "kneeseg.data.splits",
    "split_counts": "kneeseg.data.splits",
    "find_image_mask_pairs": "kneeseg.data.manifest",
    # 2D images, labelme, NIfTI checks
    "Image2DReader": "kneeseg.data.images2d",
    "LabelmeReader": "kneeseg.data.images2d",
    "labelme_to_mask": "kneeseg.data.images2d",
    "read_image2d": "kneeseg.data.images2d",
    "read_mask2d": "kneeseg.data.images2d",
    "NiftiSummary": "kneeseg.data.nifti",
    "check_nifti": "kneeseg.data.nifti",
    "check_finite": "kneeseg.data.nifti",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
