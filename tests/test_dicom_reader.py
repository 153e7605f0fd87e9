"""KneeDicomReader through MONAI's LoadImage / LoadImaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("monai")

import dicom_helpers as h  # noqa: E402
from monai.transforms import LoadImage, LoadImaged, Orientation  # noqa: E402

from kneeseg.data.dicom.volume import DicomSeriesError  # noqa: E402
from kneeseg.data.dicom.monai_reader import KneeDicomReader  # noqa: E402
from kneeseg.data.orientation import volume_to_dicom_frames  # noqa: E402

# what nibabel reports for `dcm2niix -x i -z n` of knee-dess-sag (checked against dcm2niix in test_dicom_series)
DESS_AFFINE_RAS = np.array(
    [
        [0.0, 0.0, 1.5, -13.0848],
        [-0.3125, 0.0, 0.0, 68.3588],
        [0.0, 0.3125, 0.0, -79.8503],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def test_load_image_dess_folder(shared_data: Path):
    folder = shared_data / "dicom" / "knee-dess-sag"
    img, meta = LoadImage(reader=KneeDicomReader(), image_only=False)(folder)
    assert tuple(img.shape) == (512, 512, 80)
    assert img.dtype.is_floating_point
    np.testing.assert_allclose(img.affine.numpy(), DESS_AFFINE_RAS, atol=1e-3)
    np.testing.assert_allclose(np.asarray(meta["original_affine"]), DESS_AFFINE_RAS, atol=1e-3)
    np.testing.assert_allclose(img.pixdim.numpy(), (0.3125, 0.3125, 1.5), atol=1e-4)
    np.testing.assert_allclose(np.asarray(meta["pixdim"])[1:4], (0.3125, 0.3125, 1.5), atol=1e-4)
    assert list(np.asarray(meta["spatial_shape"])) == [512, 512, 80]
    assert meta["space"] == "RAS"
    assert meta["filename_or_obj"] == str(folder)
    assert meta["num_slices"] == 80 and meta["modality"] == "MR"
    # MONAI's own orientation transform agrees with the affine: sagittal 3D -> RAS
    ras = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(img[None])
    assert tuple(ras.shape) == (1, 80, 512, 512)
    np.testing.assert_allclose(np.diag(ras.affine.numpy())[:3], (1.5, 0.3125, 0.3125), atol=1e-4)


def test_load_imaged_picks_an_echo(shared_data: Path):
    folder = shared_data / "dicom" / "knee-mese-t2"
    # the dotted-name form is what a bundle config uses; extra kwargs go to the reader
    loader = LoadImaged(keys="image", reader="kneeseg.data.dicom.monai_reader.KneeDicomReader", echo=2, ensure_channel_first=True)
    out = loader({"image": folder})
    img = out["image"]
    assert tuple(img.shape) == (1, 256, 256, 24)
    assert img.meta["echo_index"] == 2 and img.meta["echo_time"] == pytest.approx(18.936)
    np.testing.assert_allclose(img.pixdim.numpy(), (0.625, 0.625, 4.0), atol=1e-4)


def test_multi_echo_without_echo_is_a_clear_error(shared_data: Path):
    """LoadImage falls back to other readers when read() raises; the error must still be ours."""
    folder = shared_data / "dicom" / "knee-mese-t2"
    with pytest.raises(DicomSeriesError) as err:
        LoadImage(reader=KneeDicomReader())(folder)
    msg = str(err.value)
    assert "holds 8 echo volumes" in msg
    assert "echo=0 (TE 6.312 ms, 24 slices)" in msg and "echo=7 (TE 50.496 ms, 24 slices)" in msg


def test_two_series_folder_is_named_through_load_image(tmp_path: Path):
    a = h.write_series(tmp_path, h.synthetic_volume(slices=3), prefix="A", series_description="Sag PD")
    h.write_series(tmp_path, h.synthetic_volume(slices=4), prefix="B", series_description="Cor T1")
    uid_a = str(pydicom.dcmread(a[0]).SeriesInstanceUID)
    with pytest.raises(DicomSeriesError, match=r"holds 2 DICOM series: ") as err:
        LoadImage(reader=KneeDicomReader())(tmp_path)
    assert f"{uid_a} ('Sag PD', 3 files)" in str(err.value) and "('Cor T1', 4 files)" in str(err.value)
    img = LoadImage(reader=KneeDicomReader(series_uid=uid_a))(tmp_path)
    assert tuple(img.shape) == (40, 48, 3) and img.meta["series_description"] == "Sag PD"


def test_synthetic_series_lps_option_and_file_list(tmp_path: Path):
    volume = h.synthetic_volume()
    paths = h.write_series(tmp_path, volume)
    ras = LoadImage(reader=KneeDicomReader())(tmp_path)
    lps = LoadImage(reader=KneeDicomReader(affine_lps_to_ras=False))(tmp_path)
    assert lps.meta["space"] == "LPS"
    np.testing.assert_allclose(lps.affine.numpy(), np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras.affine.numpy())
    np.testing.assert_allclose(lps.affine.numpy(), np.asarray(ras.meta["affine_lps"]))
    np.testing.assert_array_equal(volume_to_dicom_frames(ras.numpy()), volume)
    # the files of one series, given as a list, make one volume
    from_files = LoadImage(reader=KneeDicomReader())([str(p) for p in paths[::-1]])
    np.testing.assert_array_equal(from_files.numpy(), ras.numpy())
    np.testing.assert_allclose(from_files.affine.numpy(), ras.affine.numpy())


def test_two_folders_stack_as_channels(tmp_path: Path):
    kw = dict(origin=(1.0, 2.0, 3.0))
    h.write_series(tmp_path / "t1", h.synthetic_volume(seed=1), **kw)
    h.write_series(tmp_path / "t2", h.synthetic_volume(seed=2), **kw)
    img = LoadImage(reader=KneeDicomReader())([tmp_path / "t1", tmp_path / "t2"])
    assert tuple(img.shape) == (2, 40, 48, 6)


def test_gap_error_surfaces_through_load_image(tmp_path: Path):
    paths = h.write_series(tmp_path, h.synthetic_volume(), series_description="gappy")
    paths[2].unlink()
    with pytest.raises(DicomSeriesError, match=r"'gappy'.*missing slice\(s\): gap of 4\.000 mm"):
        LoadImage(reader=KneeDicomReader())(tmp_path)


def test_verify_suffix(tmp_path: Path):
    paths = h.write_series(tmp_path / "s", h.synthetic_volume(slices=2))
    (tmp_path / "img.nii").write_bytes(b"\x00" * 400)
    reader = KneeDicomReader()
    assert reader.verify_suffix(tmp_path / "s")
    assert reader.verify_suffix([str(p) for p in paths])
    assert not reader.verify_suffix(tmp_path / "img.nii")
