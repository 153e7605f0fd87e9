"""DICOM series discovery and loading of bad input: damaged, empty and non-DICOM files, several
series or acquisitions in one folder, gaps, mixed sizes and orientations, duplicate positions
(pure pydicom + numpy; runs on pydicom 2.4 and 3.x)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid

import dicom_helpers as h
from dicom_helpers import dicom_order
from kneeseg.data.dicom.discovery import discover_series
from kneeseg.data.dicom.loading import load_series
from kneeseg.data.dicom.volume import DicomSeriesError, Problem


@pytest.fixture()
def synthetic(tmp_path: Path):
    """A 6-slice oblique synthetic series (48 rows x 40 columns) with shuffled file names."""
    return h.synthetic_series(tmp_path / "series")


def test_truncated_header_is_reported(synthetic):
    folder, _, paths = synthetic
    paths[0].write_bytes(paths[0].read_bytes()[:700])
    result = discover_series(folder)
    assert Problem(str(paths[0]), "truncated or incomplete file: no Pixel Data element") in result.problems


def test_zero_byte_file_is_reported(synthetic):
    folder, volume, _ = synthetic
    empty = folder / "IM9999.dcm"
    empty.write_bytes(b"")
    result = discover_series(folder)
    assert result.problems == [Problem(str(empty), "empty file (0 bytes)")]
    with pytest.raises(DicomSeriesError, match=re.escape(f"{empty}: empty file (0 bytes)")):
        load_series(folder)
    array, _ = load_series(folder, strict=False)  # skipping it leaves an intact series
    np.testing.assert_array_equal(dicom_order(array), volume)


def test_non_dicom_files_are_ignored_not_reported(synthetic):
    folder, volume, _ = synthetic
    (folder / "README.txt").write_text("exported by a PACS\n")
    (folder / "thumb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (folder / "sub").mkdir()
    (folder / "sub" / "DICOMDIR.json").write_text("{}")
    result = discover_series(folder)
    assert result.problems == []
    assert sorted(Path(p).name for p in result.ignored) == ["DICOMDIR.json", "README.txt", "thumb.png"]
    array, _ = load_series(folder)
    np.testing.assert_array_equal(dicom_order(array), volume)


def test_non_dicom_file_named_dcm_is_reported(synthetic):
    folder, _, _ = synthetic
    junk = folder / "notes.dcm"
    junk.write_text("this is not an image\n" * 10)
    result = discover_series(folder)
    assert result.problems == [
        Problem(str(junk), "not a DICOM file (no 'DICM' marker, 210 bytes) although named '.dcm'")
    ]


def test_two_series_in_one_folder_are_named(tmp_path: Path):
    a = h.write_series(tmp_path, h.synthetic_volume(slices=3), prefix="A", series_description="Sag PD")
    b = h.write_series(tmp_path, h.synthetic_volume(slices=4), prefix="B", series_description="Cor T1")
    uid_a = pydicom.dcmread(a[0]).SeriesInstanceUID
    uid_b = pydicom.dcmread(b[0]).SeriesInstanceUID
    with pytest.raises(DicomSeriesError) as err:
        load_series(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path} holds 2 DICOM series: ")
    assert f"{uid_a} ('Sag PD', 3 files)" in msg and f"{uid_b} ('Cor T1', 4 files)" in msg
    assert "pass series_uid=..." in msg
    array, meta = load_series(tmp_path, series_uid=uid_b)
    assert array.shape == (40, 48, 4) and meta["series_description"] == "Cor T1"


def test_missing_slice_gap_names_the_position(tmp_path: Path):
    volume = h.synthetic_volume(slices=6)
    paths = h.write_series(tmp_path, volume, origin=(0.0, 0.0, 0.0), orientation=h.SAGITTAL_IOP, slice_step=2.0)
    paths[3].unlink()
    # sagittal normal (0,1,0)x(0,0,-1) = (-1,0,0): slice k projects to 2k mm
    result = discover_series(tmp_path)
    (vol,) = result.volumes
    (issue,) = vol.issues
    assert issue == (
        f"missing slice(s): gap of 4.000 mm (nominal spacing 2.000 mm) between slice 2 at 4.000 mm "
        f"({paths[2].name}) and slice 3 at 8.000 mm ({paths[4].name}) along the normal; "
        f"about 1 slice(s) missing at 6.000 mm"
    )
    assert result.problems == [Problem(str(tmp_path), f"{vol.label}: {issue}", volume_id=vol.volume_id)]
    with pytest.raises(DicomSeriesError, match=r"synthetic.*missing slice\(s\).*missing at 6\.000 mm"):
        load_series(tmp_path)


def test_mixed_sizes_are_reported(synthetic):
    folder, volume, paths = synthetic
    ds = pydicom.dcmread(paths[2])
    small = h.make_slice(
        volume[2, :24, :20],
        ds.ImagePositionPatient,
        series_uid=ds.SeriesInstanceUID,
        study_uid=ds.StudyInstanceUID,
        series_description="synthetic T2",
    )
    h.save_dataset(small, paths[2])
    with pytest.raises(DicomSeriesError, match=re.escape("mixed image sizes (rows x columns): 48x40 (5 slices), 24x20 (1 slices)")) as err:
        load_series(folder)
    assert "synthetic T2" in str(err.value)


def test_mixed_orientations_are_reported(synthetic):
    folder, _, paths = synthetic
    ds = pydicom.dcmread(paths[4])
    ds.ImageOrientationPatient = list(h.SAGITTAL_IOP)
    h.save_dataset(ds, paths[4])
    with pytest.raises(DicomSeriesError, match=r"mixed orientations \(ImageOrientationPatient\): .*\(5 slices\); \[0, 1, 0, 0, 0, -1\] \(1 slices\)"):
        load_series(folder)


def test_duplicate_positions_are_reported(synthetic):
    folder, _, paths = synthetic
    ds = pydicom.dcmread(paths[1])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    h.save_dataset(ds, folder / "copy.dcm")
    (vol,) = discover_series(folder).volumes
    assert vol.num_slices == 7
    assert any(i.startswith("duplicate slice position") and "copy.dcm" in i and paths[1].name in i for i in vol.issues)
    with pytest.raises(DicomSeriesError, match="duplicate slice position"):
        load_series(folder)


def test_repeated_acquisitions_are_split(tmp_path: Path):
    volume = h.synthetic_volume(slices=3)
    series_uid, study_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    kw = dict(series_uid=series_uid, study_uid=study_uid)
    h.write_series(tmp_path, volume, prefix="A", acquisition_number=1, **kw)
    h.write_series(tmp_path, volume + 1, prefix="B", acquisition_number=2, **kw)
    result = discover_series(tmp_path)
    assert result.problems == []
    assert [v.volume_id for v in result.volumes] == [f"{series_uid}_e0_a1", f"{series_uid}_e0_a2"]
    with pytest.raises(DicomSeriesError, match="holds 2 acquisitions"):
        load_series(tmp_path)
    array, _ = load_series(tmp_path, volume_id=f"{series_uid}_e0_a2")
    np.testing.assert_array_equal(dicom_order(array), volume + 1)


def test_undecodable_compressed_data_names_the_file(synthetic):
    folder, _, paths = synthetic
    ds = pydicom.dcmread(paths[3])
    h.encapsulate_frame(ds, b"\x00\x01\x02\x03" * 8, uid.RLELossless)
    h.save_dataset(ds, paths[3])
    with pytest.raises(DicomSeriesError, match=re.escape(f"{paths[3]}: cannot decode pixel data (RLE Lossless, 1.2.840.10008.1.2.5)")):
        load_series(folder)


def test_a_header_promising_more_than_the_pixel_data_holds_is_refused_before_decoding(synthetic):
    """A 65535 x 65535 header over a few bytes of RLE would allocate GiB in the decoder; a native
    frame cut short would decode garbage or fail deep in numpy. Both are named before any decode."""
    folder, _, paths = synthetic
    for p in paths:
        ds = pydicom.dcmread(p)
        h.encapsulate_frame(ds, b"\x00\x01\x02\x03" * 8, uid.RLELossless)
        ds.Rows = ds.Columns = 65535
        h.save_dataset(ds, p)
    with pytest.raises(DicomSeriesError, match=r": header and pixel data disagree: the header says 65535 x 65535 x 1 "
                       r"sample\(s\) x 1 frame\(s\) x 16 bits = 8589672450 bytes, over 200x the \d+ bytes of RLE Lossless"):
        load_series(folder)


def test_empty_or_missing_input(tmp_path: Path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DicomSeriesError, match="no DICOM image series found"):
        load_series(tmp_path)
    result = discover_series(tmp_path / "nope")
    assert result.problems == [Problem(str(tmp_path / "nope"), "no such file or folder")]
