"""The synthetic knee phantom: files, DICOM headers and geometry (checked with pydicom,
nibabel and dcm2niix), label round trips, PNG slices, datalists and determinism."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from kneeseg.phantom import PHANTOM_LABELS, generate_phantom, render_case

SHAPE = (96, 96, 20)  # columns, rows, slices: small and fast, same anatomy as the default
CASES = 3
SEED = 7


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    generate_phantom(out, cases=CASES, seed=SEED, shape=SHAPE)
    return out


def _datalist(root: Path, name: str = "dataset.json") -> dict:
    return json.loads((root / name).read_text())


def _series(folder: Path) -> list:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def test_layout_and_volume_datalist(phantom: Path):
    from monai.data import load_decathlon_datalist

    meta = _datalist(phantom)
    assert meta["labels"] == {"0": "background", "1": "femur", "2": "tibia", "3": "patella", "4": "patellar_ligament"}
    assert {str(k): v for k, v in PHANTOM_LABELS.items()} == meta["labels"]
    seen = []
    for key in ("training", "validation", "test"):
        items = load_decathlon_datalist(phantom / "dataset.json", data_list_key=key)
        assert len(items) >= 1, key  # N >= 3: one case per part at least
        for raw, item in zip(meta[key], items):
            for field in ("image", "label", "dicom"):
                assert not Path(raw[field]).is_absolute()
                assert Path(item[field]).exists(), item[field]
            assert len(list(Path(item["dicom"]).glob("*.dcm"))) == SHAPE[2]
            seen.append(raw["case"])
    assert sorted(seen) == [f"case_{i:03d}" for i in range(CASES)]


def test_2d_datalist_uses_the_same_case_split(phantom: Path):
    from monai.data import load_decathlon_datalist

    vol, flat = _datalist(phantom), _datalist(phantom, "dataset_2d.json")
    assert flat["tensorImageSize"] == "2D" and flat["labels"] == vol["labels"]
    for key in ("training", "validation", "test"):
        cases = {e["case"] for e in vol[key]}
        assert {e["case"] for e in flat[key]} == cases
        for item in load_decathlon_datalist(phantom / "dataset_2d.json", data_list_key=key):
            assert Path(item["image"]).is_file() and Path(item["label"]).is_file()


def test_dicom_headers_describe_a_sagittal_mr_series(phantom: Path):
    case = render_case(SEED, 0, SHAPE)
    series = _series(phantom / "dicom" / "case_000")
    assert len(series) == SHAPE[2]
    dx, dy, dz = case.spacing
    normal = np.cross([0, 1, 0], [0, 0, -1])
    positions = []
    for k, ds in enumerate(series):
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID):
            assert pydicom.uid.UID(uid).is_valid
        assert ds.Modality == "MR" and ds.PatientID == f"PHANTOM-{SEED}-000"
        assert ds.InstanceNumber == k + 1
        assert (ds.Rows, ds.Columns) == (SHAPE[1], SHAPE[0])
        assert (ds.BitsAllocated, ds.PixelRepresentation, ds.SamplesPerPixel) == (16, 0, 1)
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0
        assert float(ds.WindowWidth) > 0 and "WindowCenter" in ds
        assert [float(x) for x in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
        assert [float(x) for x in ds.PixelSpacing] == pytest.approx([dy, dx])
        assert float(ds.SliceThickness) == pytest.approx(dz) == float(ds.SpacingBetweenSlices)
        np.testing.assert_array_equal(ds.pixel_array, case.image[k])
        positions.append([float(x) for x in ds.ImagePositionPatient])
    # one study / series / frame of reference; distinct instances
    for attr in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({getattr(ds, attr) for ds in series}) == 1
    assert len({ds.SOPInstanceUID for ds in series}) == len(series)
    steps = np.diff(np.asarray(positions), axis=0)
    np.testing.assert_allclose(steps, np.tile(normal * dz, (len(series) - 1, 1)), atol=1e-5)
    other = _series(phantom / "dicom" / "case_001")[0]
    assert other.StudyInstanceUID != series[0].StudyInstanceUID


def test_dcm2niix_converts_without_warnings_and_matches_our_nifti(phantom: Path, tmp_path: Path):
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix is not installed")
    proc = subprocess.run(
        ["dcm2niix", "-b", "n", "-z", "n", "-f", "conv", "-o", str(tmp_path), str(phantom / "dicom" / "case_001")],
        capture_output=True, text=True, timeout=60,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    # The only tolerated warning: our Manufacturer ("kneeseg") is no scanner vendor dcm2niix knows.
    problems = [
        line for line in log.splitlines()
        if re.search(r"warning|error", line, re.I) and "Unable to determine manufacturer" not in line
    ]
    assert problems == [], log
    assert f"Found {SHAPE[2]} DICOM file" in log
    assert f"({SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}x1)" in log
    ref = nib.load(tmp_path / "conv.nii")
    ours = nib.load(phantom / "imagesTr" / "case_001.nii.gz")
    assert ref.shape == ours.shape == SHAPE  # (columns, rows, slices)
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(ref.dataobj))
    assert nib.aff2axcodes(ours.affine) == ("P", "S", "R")


def test_labels_survive_the_nifti_round_trip(phantom: Path):
    for i in range(CASES):
        case = render_case(SEED, i, SHAPE)
        img = nib.load(phantom / "labelsTr" / f"case_{i:03d}.nii.gz")
        lab = np.asarray(img.dataobj)
        assert np.issubdtype(lab.dtype, np.integer)
        assert np.array_equal(lab, case.to_nifti_layout(case.label))
        assert set(np.unique(lab)) == {0, 1, 2, 3, 4}
        image = nib.load(phantom / "imagesTr" / f"case_{i:03d}.nii.gz")
        np.testing.assert_allclose(image.affine, img.affine)
        assert image.get_data_dtype() == np.uint16


def test_ligament_is_a_central_band_that_tapers():
    case = render_case(SEED, 1, SHAPE)
    area = (case.label == 4).sum(axis=(1, 2))
    slices = np.flatnonzero(area)
    assert slices.size >= 3
    assert np.array_equal(slices, np.arange(slices[0], slices[-1] + 1))  # one contiguous run
    assert slices[0] >= 3 and slices[-1] <= SHAPE[2] - 4  # not in the outer slices
    assert area[slices].max() > area[slices[0]] and area[slices].max() > area[slices[-1]]
    # thin: a fraction of the patella, the smallest bone
    assert area.sum() < 0.5 * (case.label == 3).sum()


def test_image_is_mr_like():
    case = render_case(SEED, 2, SHAPE)
    img = case.image.astype(float)
    corner = img[:, :4, :4]  # air: Rician noise floor, positive mean, never all zero
    assert corner.mean() > 0 and corner.std() > 0
    bone = case.label == 1
    assert img[bone].mean() > 5 * corner.mean()
    assert case.image.max() <= 4095  # 12 bits stored


def test_png_slices(phantom: Path):
    case = render_case(SEED, 0, SHAPE)
    lig = set(np.flatnonzero((case.label == 4).any(axis=(1, 2))).tolist())
    written = sorted(int(p.name.split("_")[2]) for p in (phantom / "png").glob("case_000_*_img.png"))
    assert lig <= set(written) and len(set(written) - lig) == 3
    for k in written:
        img = Image.open(phantom / "png" / f"case_000_{k:03d}_img.png")
        mask = Image.open(phantom / "png" / f"case_000_{k:03d}_mask.png")
        assert img.mode == mask.mode == "L" and img.size == (SHAPE[0], SHAPE[1])
        np.testing.assert_array_equal(np.asarray(mask), case.label[k])


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path):
    shape = (48, 48, 6)
    a, b, c = (generate_phantom(tmp_path / name, cases=1, seed=s, shape=shape, png=False).parent
               for name, s in (("a", 3), ("b", 3), ("c", 4)))
    for name in ("IM0001.dcm", "IM0004.dcm"):
        da, db, dc = (pydicom.dcmread(root / "dicom" / "case_000" / name) for root in (a, b, c))
        assert da.PixelData == db.PixelData and da.SOPInstanceUID == db.SOPInstanceUID
        assert da.PixelData != dc.PixelData and da.SOPInstanceUID != dc.SOPInstanceUID
        assert (a / "dicom" / "case_000" / name).read_bytes() == (b / "dicom" / "case_000" / name).read_bytes()
    for sub in ("imagesTr", "labelsTr"):
        va, vb, vc = (np.asarray(nib.load(root / sub / "case_000.nii.gz").dataobj) for root in (a, b, c))
        assert np.array_equal(va, vb) and not np.array_equal(va, vc)


def test_bad_arguments_raise_clear_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="cases must be a positive integer"):
        generate_phantom(tmp_path, cases=0)
    with pytest.raises(ValueError, match="too small"):
        render_case(0, 0, shape=(8, 8, 2))
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        render_case(-1, 0, shape=SHAPE)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        generate_phantom(tmp_path / "file", cases=1, shape=(32, 32, 4))
