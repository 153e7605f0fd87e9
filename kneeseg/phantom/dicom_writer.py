"""Writing a phantom case as a DICOM MR Image Storage series, one file per slice, with UIDs
derived from (seed, case, slice) so that reruns write identical files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from kneeseg.atomic import atomic_write_bytes
from kneeseg.data.dicom.values import decimal_string
from kneeseg.phantom.case import COL_DIR, ROW_DIR, SLICE_DIR, PhantomCase
from kneeseg.files import PathLike
from kneeseg import __version__

__all__ = ["write_dicom_series"]


_UID_NAMESPACE = "kneeseg-phantom-v1"
_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _uid(case: PhantomCase, *parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[_UID_NAMESPACE, str(case.seed), case.case_id, *parts]))


def write_dicom_series(case: PhantomCase, folder: PathLike) -> list[Path]:
    """Write ``case`` as an MR Image Storage series, one file per slice (``IM0001.dcm`` ...).

    UIDs derive from (seed, case, slice) with :py:func:`pydicom.uid.generate_uid`, so reruns
    write identical files. Geometry: ImageOrientationPatient ``[0, 1, 0, 0, 0, -1]``
    (sagittal: rows run posterior, columns inferior), slices stepping towards the patient's
    right by SpacingBetweenSlices = SliceThickness.

    Returns:
        The written paths in slice order.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    folder = Path(folder)
    nz, ny, nx = case.image.shape
    dx, dy, dz = case.spacing
    p = case.params
    study, series, frame = _uid(case, "study"), _uid(case, "series"), _uid(case, "frame-of-reference")
    date = f"2024{1 + case.index % 12:02d}{1 + case.index % 28:02d}"
    lo, hi = np.percentile(case.image, [0.5, 99.5])
    contrast = p["contrast"]
    paths = []
    for k in range(nz):
        sop = _uid(case, "instance", str(k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "KNEESEG_PHANTOM"
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "PRIMARY", "M", "ND"]
        ds.SOPClassUID = _MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "MR"
        ds.Manufacturer = "kneeseg"
        ds.ManufacturerModelName = "synthetic knee phantom"
        ds.SoftwareVersions = __version__
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "KNEE PHANTOM"
        ds.SeriesDescription = f"SAG {contrast.upper()} PHANTOM"
        ds.PatientName = f"PHANTOM^{case.seed}^{case.index:03d}"
        ds.PatientID = f"PHANTOM-{case.seed}-{case.index:03d}"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "KNEE"
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = "FS" if contrast == "pd_fs" else ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = decimal_string(dz)
        ds.RepetitionTime = decimal_string(p["sequence"]["tr"])
        ds.EchoTime = decimal_string(p["sequence"]["te"])
        ds.EchoTrainLength = 8
        ds.MagneticFieldStrength = "3"
        ds.SpacingBetweenSlices = decimal_string(dz)
        ds.PatientPosition = "FFS"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ipp = case.slice_position(k)
        ds.ImagePositionPatient = [decimal_string(x) for x in ipp]
        ds.ImageOrientationPatient = [decimal_string(x) for x in (*ROW_DIR, *COL_DIR)]
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.Laterality = "R"
        ds.SliceLocation = decimal_string(float(np.dot(ipp, SLICE_DIR)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        ds.PixelSpacing = [decimal_string(dy), decimal_string(dx)]  # row spacing (between rows), column spacing
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = decimal_string(round((lo + hi) / 2))
        ds.WindowWidth = decimal_string(round(max(hi - lo, 1)))
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.PixelData = np.ascontiguousarray(case.image[k]).astype("<u2").tobytes()
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        path = folder / f"IM{k + 1:04d}.dcm"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
