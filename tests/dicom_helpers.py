"""Small DICOM writers for tests: synthetic series, enhanced multi-frame MR, JPEG encapsulation.

Works with pydicom 2.4 and 3.x (no torch/MONAI imports). The writers of series that selection
must tell apart (head, MOSAIC, diffusion) are in :mod:`dicom_selection_helpers`.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from kneeseg.data.orientation import volume_to_dicom_frames

PYDICOM3 = int(pydicom.__version__.split(".")[0]) >= 3
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"

#: an oblique orientation (row, column direction cosines; orthonormal)
OBLIQUE_IOP = (0.0, 0.96592583, -0.25881905, 0.0, 0.25881905, 0.96592583)
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def save_dataset(ds: Dataset, path: str | Path) -> Path:
    """Write ``ds`` as a DICOM Part-10 file with the transfer syntax of its file meta (pydicom 2.4 and 3.x)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = ds.file_meta.TransferSyntaxUID
    if PYDICOM3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian = ts != pydicom.uid.ExplicitVRBigEndian
        ds.is_implicit_VR = ts == pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(path, write_like_original=False)
    return path


def make_slice(
    pixels: np.ndarray,
    position: Sequence[float],
    *,
    orientation: Sequence[float] = OBLIQUE_IOP,
    pixel_spacing: Sequence[float] = (0.5, 0.75),
    series_uid: str,
    study_uid: str,
    instance_number: int = 1,
    echo_time: float | None = 10.0,
    echo_number: int | None = 1,
    acquisition_number: int | None = 1,
    slope: float | None = None,
    intercept: float | None = None,
    slice_thickness: float = 2.0,
    series_description: str = "synthetic",
    bits_stored: int = 12,
) -> Dataset:
    """One single-frame MR image dataset holding ``pixels`` (rows, columns) uint16."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientID = "PHANTOM"
    ds.PatientName = "Phantom^Knee"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = series_description
    ds.SeriesNumber = 3
    ds.InstanceNumber = instance_number
    if acquisition_number is not None:
        ds.AcquisitionNumber = acquisition_number
    if echo_time is not None:
        ds.EchoTime = echo_time
    if echo_number is not None:
        ds.EchoNumbers = echo_number
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid(entropy_srcs=[study_uid])
    ds.ImagePositionPatient = [float(f"{float(v):.10g}") for v in position]  # DS holds at most 16 characters
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = slice_thickness
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def synthetic_volume(rows: int = 48, columns: int = 40, slices: int = 6, seed: int = 0) -> np.ndarray:
    """``(slices, rows, columns)`` uint16 test pattern (< 4096) whose values identify their voxel."""
    rng = np.random.default_rng(seed)
    k, r, c = np.meshgrid(np.arange(slices), np.arange(rows), np.arange(columns), indexing="ij")
    base = (k * 500 + r * 20 + c).astype(np.int64)
    return (base + rng.integers(0, 3, size=base.shape)).clip(0, 4095).astype(np.uint16)


def write_series(
    folder: str | Path,
    volume: np.ndarray,
    *,
    origin: Sequence[float] = (-10.0, 20.0, 30.0),
    slice_step: float = 2.0,
    orientation: Sequence[float] = OBLIQUE_IOP,
    series_uid: str | None = None,
    study_uid: str | None = None,
    prefix: str = "IM",
    order: Sequence[int] | None = None,
    **slice_kwargs,
) -> list[Path]:
    """Write ``volume`` (slices, rows, columns) as one file per slice; returns paths in slice order.

    Slice ``k`` sits at ``origin + k * slice_step * normal``. File names are numbered in the
    (shuffled) ``order`` so that names do not sort in slice order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    ori = np.asarray(orientation, dtype=float)
    normal = np.cross(ori[:3], ori[3:])
    n = volume.shape[0]
    order = list(order) if order is not None else list(np.random.default_rng(1).permutation(n))
    paths: list[Path] = [Path()] * n
    for name_index, k in enumerate(order):
        pos = np.asarray(origin, dtype=float) + k * slice_step * normal
        ds = make_slice(
            volume[k],
            pos,
            orientation=orientation,
            series_uid=series_uid,
            study_uid=study_uid,
            instance_number=n - k,  # deliberately not in slice order either
            **slice_kwargs,
        )
        paths[k] = save_dataset(ds, folder / f"{prefix}{name_index:04d}.dcm")
    return paths

def synthetic_series(folder: str | Path) -> tuple[Path, np.ndarray, list[Path]]:
    """A 6-slice oblique synthetic series (48 rows x 40 columns) with shuffled file names in ``folder``.

    Returns:
        ``(folder, volume, paths)``: the volume ``(slices, rows, columns)`` and the paths in slice order.
    """
    volume = synthetic_volume()
    paths = write_series(folder, volume, series_description="synthetic T2")
    return Path(folder), volume, paths


def dicom_order(array: np.ndarray) -> np.ndarray:
    """(columns, rows, slices) -> (slices, rows, columns) as stored in DICOM."""
    return volume_to_dicom_frames(array)


def can_encode(transfer_syntax: str) -> bool:
    """Whether :func:`recompress` can produce ``transfer_syntax`` with the installed packages."""
    if transfer_syntax == pydicom.uid.RLELossless:
        return True
    if PYDICOM3:
        from pydicom.pixels import get_encoder

        try:
            return get_encoder(transfer_syntax).is_available
        except Exception:
            return False
    module = {
        pydicom.uid.JPEGLSLossless: "jpeg_ls",
        pydicom.uid.JPEGLSNearLossless: "jpeg_ls",
        pydicom.uid.JPEG2000Lossless: "openjpeg",
    }.get(transfer_syntax)
    if module is None:
        return False
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def recompress(path: str | Path, transfer_syntax: str, jls_error: int = 0) -> Path:
    """Re-encode a file in place: ``Dataset.compress`` (pydicom 3.x, or RLE on 2.4), else the codec library."""
    ds = pydicom.dcmread(path)
    if PYDICOM3 or transfer_syntax == pydicom.uid.RLELossless:
        kwargs = {"jls_error": jls_error} if jls_error else {}
        ds.compress(transfer_syntax, **kwargs)
    else:  # pydicom 2.4 has no JPEG-LS / JPEG 2000 encoders: call pyjpegls / pylibjpeg-openjpeg directly
        arr = ds.pixel_array
        if transfer_syntax in (pydicom.uid.JPEGLSLossless, pydicom.uid.JPEGLSNearLossless):
            import jpeg_ls

            frame = bytes(jpeg_ls.encode_array(arr, lossy_error=jls_error))
        elif transfer_syntax == pydicom.uid.JPEG2000Lossless:
            import openjpeg

            frame = openjpeg.encode(arr, bits_stored=int(ds.BitsStored), use_mct=False)
        else:
            raise NotImplementedError(f"no encoder for {transfer_syntax}")
        encapsulate_frame(ds, frame, transfer_syntax)
    return save_dataset(ds, path)


def make_enhanced_mr(
    sources: Sequence[Dataset],
    path: str | Path,
    *,
    frame_order: Sequence[int] | None = None,
    echo_times: Sequence[float] | None = None,
    per_frame_rescale: Sequence[tuple[float, float]] | None = None,
) -> Path:
    """Build one Enhanced MR Image Storage file from single-frame datasets of equal geometry.

    Pixel measures and orientation go into the shared functional groups; position, frame content
    (and echo time, rescale if given) into the per-frame groups. ``frame_order`` permutes the
    frames so that the reader has to sort them by position.
    """
    first = sources[0]
    order = list(frame_order) if frame_order is not None else list(range(len(sources)))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for keyword in ("Modality", "PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID",
                    "SeriesDescription", "SeriesNumber", "FrameOfReferenceUID"):
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(order)
    for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(ds, keyword, first.data_element(keyword).value)

    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = list(first.PixelSpacing)
    measures.SliceThickness = first.get("SliceThickness", 1.0)
    shared.PixelMeasuresSequence = DicomSequence([measures])
    plane = Dataset()
    plane.ImageOrientationPatient = list(first.ImageOrientationPatient)
    shared.PlaneOrientationSequence = DicomSequence([plane])
    if per_frame_rescale is None:
        pvt = Dataset()
        pvt.RescaleSlope = first.get("RescaleSlope", 1)
        pvt.RescaleIntercept = first.get("RescaleIntercept", 0)
        pvt.RescaleType = "US"
        shared.PixelValueTransformationSequence = DicomSequence([pvt])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    frames = []
    chunks = []
    for f, src_index in enumerate(order):
        src = sources[src_index]
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = list(src.ImagePositionPatient)
        item.PlanePositionSequence = DicomSequence([pos])
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = src_index + 1
        item.FrameContentSequence = DicomSequence([content])
        if echo_times is not None:
            echo = Dataset()
            echo.EffectiveEchoTime = echo_times[src_index]
            item.MREchoSequence = DicomSequence([echo])
        if per_frame_rescale is not None:
            pvt = Dataset()
            pvt.RescaleSlope, pvt.RescaleIntercept = per_frame_rescale[src_index]
            pvt.RescaleType = "US"
            item.PixelValueTransformationSequence = DicomSequence([pvt])
        frames.append(item)
        arr = src.pixel_array
        chunks.append(np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"))).tobytes())
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = b"".join(chunks)
    return save_dataset(ds, path)


def encapsulate_frame(ds: Dataset, frame_bytes: bytes, transfer_syntax: str) -> None:
    """Replace the pixel data of a single-frame dataset by one encapsulated, compressed frame."""
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([frame_bytes])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = transfer_syntax


def jpeg_baseline_bytes(pixels8: np.ndarray, quality: int = 95) -> bytes:
    """Encode an 8-bit greyscale image as baseline JPEG with Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels8, mode="L").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_lossless_sv1_bytes(pixels: np.ndarray, precision: int) -> bytes:
    """Encode a greyscale image as lossless JPEG (ITU T.81 process 14, predictor 1, one Huffman table).

    Written here because no installed library encodes lossless JPEG; used only to test decoding.
    Every difference category 0..16 gets a 5-bit code (17 codes, none all-ones).
    """
    rows, cols = pixels.shape
    x = pixels.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]  # first row: left neighbour
    pred[1:, 0] = x[:-1, 0]  # first column: neighbour above
    pred[1:, 1:] = x[1:, :-1]  # predictor 1: left neighbour
    diff = (x - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff)

    bits: list[str] = []
    for d in diff.ravel().tolist():
        if d == -32768:
            d = 32768
        ssss = 0 if d == 0 else int(abs(d)).bit_length()
        bits.append(format(ssss, "05b"))
        if 0 < ssss < 16:
            extra = d if d > 0 else d - 1
            bits.append(format(extra & ((1 << ssss) - 1), f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    raw = int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""
    entropy = raw.replace(b"\xff", b"\xff\x00")

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5
    dht = bytes([0x00]) + bytes(counts) + bytes(range(17))
    sof3 = struct.pack(">BHHB", precision, rows, cols, 1) + bytes([1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # Ns=1, Cs=1, Td/Ta=0, Ss=predictor 1, Se=0, Ah/Al=0
    return (
        b"\xff\xd8"
        + segment(0xFFC3, sof3)
        + segment(0xFFC4, dht)
        + segment(0xFFDA, sos)
        + entropy
        + b"\xff\xd9"
    )
