"""DICOM writers for the series that selection must tell apart: head, Siemens MOSAIC, diffusion.

Works with pydicom 2.4 and 3.x (no torch/MONAI imports). Built on the writers of
:mod:`dicom_helpers`; the ones a selection test also needs are imported here as well, so that the
test can use one module (``import dicom_selection_helpers as h``).
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from dicom_helpers import SAGITTAL_IOP, make_enhanced_mr, make_slice, save_dataset, synthetic_volume, write_series

__all__ = [
    "AXIAL_IOP",
    "DWI_SCHEME",
    "SAGITTAL_IOP",
    "SIEMENS_MR_HEADER",
    "add_private",
    "make_mosaic",
    "save_dataset",
    "set_attributes",
    "synthetic_volume",
    "write_diffusion_series",
    "write_enhanced_diffusion",
    "write_head_series",
    "write_series",
]


AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SIEMENS_MR_HEADER = "SIEMENS MR HEADER"  # private creator of Siemens group 0019 (NumberOfImagesInMosaic, B_value ...)


def add_private(ds: Dataset, group: int, creator: str, offset: int, vr: str, value) -> None:
    """Add private element ``(group, xx<offset>)`` in the block of ``creator`` (reserved if needed)."""
    ds.private_block(group, creator, create=True).add_new(offset, vr, value)


def set_attributes(paths: Sequence[str | Path], **attributes) -> None:
    """Rewrite DICOM files with extra/changed attributes given by keyword (e.g. ``BodyPartExamined="BRAIN"``)."""
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        save_dataset(ds, path)


def write_head_series(
    folder: str | Path,
    *,
    body_part: str | None = "BRAIN",
    series_description: str = "AX T2 FLAIR",
    orientation: Sequence[float] = AXIAL_IOP,
    slices: int = 4,
    **slice_kwargs,
) -> list[Path]:
    """A small head MR series (axial by default) with BodyPartExamined ``body_part`` (None: tag absent)."""
    paths = write_series(
        folder, synthetic_volume(rows=12, columns=10, slices=slices), orientation=orientation,
        series_description=series_description, **slice_kwargs,
    )  # fmt: skip
    if body_part is not None:
        set_attributes(paths, BodyPartExamined=body_part)
    return paths


def make_mosaic(
    tiles: int = 9,
    tile_shape: tuple[int, int] = (8, 8),
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"),
    mosaic_count: int | None = None,
    instance_number: int = 1,
    acquisition_number: int = 1,
    series_description: str = "ep2d_bold_moco",
) -> Dataset:
    """A Siemens MOSAIC MR image: ``tiles`` axial slices tiled (row-major) in one square grid image.

    Like scanner output: ImageType ends with MOSAIC, Manufacturer SIEMENS, private creator
    'SIEMENS MR HEADER' in (0019,0010) with NumberOfImagesInMosaic (0019,100A) US (``mosaic_count``,
    default ``tiles``), and the CSA header creator 'SIEMENS CSA HEADER' in (0029,0010). The geometry
    tags describe the whole tiled matrix (as on the scanner), which is why it cannot be read as is.
    """
    grid = int(np.ceil(np.sqrt(tiles)))
    tr, tc = tile_shape
    pixels = np.zeros((grid * tr, grid * tc), dtype=np.uint16)
    for t in range(tiles):
        r, c = divmod(t, grid)
        pixels[r * tr:(r + 1) * tr, c * tc:(c + 1) * tc] = 100 * (t + 1) + np.arange(tr * tc).reshape(tr, tc) % 50
    ds = make_slice(
        pixels, (-120.0, -120.0, 10.0), orientation=AXIAL_IOP, pixel_spacing=(3.0, 3.0),
        series_uid=series_uid or generate_uid(), study_uid=study_uid or generate_uid(),
        instance_number=instance_number, acquisition_number=acquisition_number, echo_time=30.0,
        series_description=series_description, slice_thickness=3.0,
    )  # fmt: skip
    ds.ImageType = list(image_type)
    ds.Manufacturer = "SIEMENS"
    ds.ProtocolName = series_description
    add_private(ds, 0x0019, SIEMENS_MR_HEADER, 0x08, "CS", "IMAGE NUM 4")
    add_private(ds, 0x0019, SIEMENS_MR_HEADER, 0x09, "LO", "1.0")
    add_private(ds, 0x0019, SIEMENS_MR_HEADER, 0x0A, "US", tiles if mosaic_count is None else mosaic_count)
    add_private(ds, 0x0029, "SIEMENS CSA HEADER", 0x08, "CS", "IMAGE NUM 4")
    add_private(ds, 0x0029, "SIEMENS CSA HEADER", 0x09, "LO", "20100114")
    return ds


#: b = 0 then three orthogonal directions at b = 1000 (s/mm^2)
DWI_SCHEME: tuple[tuple[float, tuple[float, float, float] | None], ...] = (
    (0.0, None),
    (1000.0, (1.0, 0.0, 0.0)),
    (1000.0, (0.0, 1.0, 0.0)),
    (1000.0, (0.0, 0.0, 1.0)),
)


def _add_diffusion_tags(ds: Dataset, b: float, direction, vendor: str) -> None:
    """Diffusion tags of one slice as ``vendor`` writes them ("standard", "siemens", "ge", "philips")."""
    if vendor == "standard":
        ds.DiffusionBValue = float(b)
        if direction is not None:
            ds.DiffusionGradientOrientation = [float(v) for v in direction]
    elif vendor == "siemens":
        ds.Manufacturer = "SIEMENS"
        add_private(ds, 0x0019, SIEMENS_MR_HEADER, 0x0C, "IS", int(b))
        add_private(ds, 0x0019, SIEMENS_MR_HEADER, 0x0D, "CS", "DIRECTIONAL" if direction else "NONE")
        if direction is not None:
            add_private(ds, 0x0019, SIEMENS_MR_HEADER, 0x0E, "FD", [float(v) for v in direction])
    elif vendor == "ge":  # b-value with the 1e9 bias of multi-b-value DWI; no standard tag
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        add_private(ds, 0x0043, "GEMS_PARM_01", 0x39, "IS", [int(b) + 1_000_000_000, 8, 0, 0])
        for offset, value in zip((0xBB, 0xBC, 0xBD), direction or (0.0, 0.0, 0.0)):
            add_private(ds, 0x0019, "GEMS_ACQU_01", offset, "DS", f"{value:.6f}")
    elif vendor == "philips":
        ds.Manufacturer = "Philips Medical Systems"
        add_private(ds, 0x2001, "Philips Imaging DD 001", 0x03, "FL", float(b))
        for offset, value in zip((0xB0, 0xB1, 0xB2), direction or (0.0, 0.0, 0.0)):
            add_private(ds, 0x2005, "Philips MR Imaging DD 001", offset, "FL", float(value))
    else:
        raise ValueError(f"unknown vendor {vendor!r}")


def write_diffusion_series(
    folder: str | Path,
    *,
    scheme: Sequence[tuple[float, tuple[float, float, float] | None]] = DWI_SCHEME,
    vendor: str = "standard",
    slices: int = 3,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "OTHER"),
    series_description: str = "AX SE-EPI",
    series_uid: str | None = None,
) -> list[Path]:
    """A diffusion series: one file per (b-value/direction, slice), every volume at the same positions.

    All files share one AcquisitionNumber and EchoTime (as scanners write them), InstanceNumber runs
    in acquisition order (volume by volume) and file names are shuffled. Returns the paths in
    acquisition order.
    """
    folder = Path(folder)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    n = len(scheme) * slices
    names = np.random.default_rng(7).permutation(n)
    paths: list[Path] = []
    for v, (b, direction) in enumerate(scheme):
        for k in range(slices):
            index = v * slices + k
            pixels = np.full((10, 12), 100 + 10 * v + k, dtype=np.uint16)
            ds = make_slice(
                pixels, (-50.0, -60.0, 20.0 + 4.0 * k), orientation=AXIAL_IOP, pixel_spacing=(2.0, 2.0),
                series_uid=series_uid, study_uid=study_uid, instance_number=index + 1, echo_time=80.0,
                series_description=series_description, slice_thickness=4.0,
            )  # fmt: skip
            ds.ImageType = list(image_type)
            _add_diffusion_tags(ds, b, direction, vendor)
            paths.append(save_dataset(ds, folder / f"DWI{names[index]:04d}.dcm"))
    return paths


def write_enhanced_diffusion(path: str | Path, scheme=DWI_SCHEME, slices: int = 3) -> Path:
    """One Enhanced MR file holding a diffusion series: DiffusionBValue / DiffusionGradientOrientation
    in the per-frame MRDiffusionSequence (frames in acquisition order, volume by volume)."""
    series_uid, study_uid = generate_uid(), generate_uid()
    sources = [
        make_slice(
            np.full((10, 12), 100 + 10 * v + k, dtype=np.uint16), (-50.0, -60.0, 20.0 + 4.0 * k),
            orientation=AXIAL_IOP, pixel_spacing=(2.0, 2.0), series_uid=series_uid, study_uid=study_uid,
            instance_number=v * slices + k + 1, series_description="DTI enhanced",
        )  # fmt: skip
        for v in range(len(scheme))
        for k in range(slices)
    ]
    out = make_enhanced_mr(sources, path)
    ds = pydicom.dcmread(out)
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        b, direction = scheme[f // slices]
        diffusion = Dataset()
        diffusion.DiffusionBValue = float(b)
        diffusion.DiffusionDirectionality = "DIRECTIONAL" if direction else "NONE"
        if direction is not None:
            gradient = Dataset()
            gradient.DiffusionGradientOrientation = [float(x) for x in direction]
            diffusion.DiffusionGradientDirectionSequence = DicomSequence([gradient])
        item.MRDiffusionSequence = DicomSequence([diffusion])
    return save_dataset(ds, out)
