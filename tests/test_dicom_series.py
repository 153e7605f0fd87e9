"""DICOM series discovery, ordering, geometry, decoding (pure pydicom + numpy; runs on pydicom 2.4 and 3.x).

Bad input (damaged, empty and non-DICOM files, gaps, mixed geometry) is in test_dicom_problems.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid

import dicom_helpers as h
from dicom_helpers import dicom_order
from kneeseg.data.dicom.discovery import discover_series
from kneeseg.data.dicom.loading import load_series, load_volume
from kneeseg.data.dicom.volume import DicomSeriesError, Problem

try:  # pydicom 3.x
    from pydicom.pixels import apply_modality_lut
except ImportError:  # pydicom 2.4
    from pydicom.pixel_data_handlers.util import apply_modality_lut

DESS_SPACING = (0.3125, 0.3125, 1.5)


# ---------------------------------------------------------------------------- helpers / fixtures


def run_dcm2niix(src: Path, out: Path, *extra: str) -> list[Path]:
    """Run ``dcm2niix [extra] -z n -f out -o <out> <src>``; skip (or fail under CI) if it is missing."""
    exe = shutil.which("dcm2niix")
    if exe is None:
        if os.environ.get("KNEESEG_REQUIRE_SHARED_DATA") == "1":
            pytest.fail("dcm2niix not installed (KNEESEG_REQUIRE_SHARED_DATA=1)")
        pytest.skip("dcm2niix not installed")
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [exe, *extra, "-z", "n", "-f", "out_%e", "-o", str(out), str(src)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted(out.glob("*.nii"))


@pytest.fixture(scope="module")
def dess_dir(shared_data: Path) -> Path:
    return shared_data / "dicom" / "knee-dess-sag"


@pytest.fixture(scope="module")
def mese_dir(shared_data: Path) -> Path:
    return shared_data / "dicom" / "knee-mese-t2"


@pytest.fixture(scope="module")
def dess_loaded(dess_dir: Path):
    result = discover_series(dess_dir)
    array, meta = load_volume(result.volumes[0])
    return result, array, meta


@pytest.fixture(scope="module")
def mese_result(mese_dir: Path):
    return discover_series(mese_dir)


@pytest.fixture()
def synthetic(tmp_path: Path):
    """A 6-slice oblique synthetic series (48 rows x 40 columns) with shuffled file names."""
    return h.synthetic_series(tmp_path / "series")


# ---------------------------------------------------------------------------- real data: DESS


def test_dess_discovery_orders_slices_by_geometry(dess_loaded, dess_dir: Path):
    result, array, meta = dess_loaded
    assert result.problems == [] and result.ignored == []
    assert len(result.volumes) == 1
    vol = result.volumes[0]
    assert vol.num_slices == 80 and len(vol.files) == 80
    assert (vol.rows, vol.columns) == (512, 512)
    assert vol.modality == "MR" and vol.echo_time == pytest.approx(7.48)
    assert vol.series_description == "Sag DESS 3132 30 HiRes thk1p5 ARCx2"
    assert vol.volume_id == f"{vol.series_uid}_e0"
    # slice order follows the position along the normal, not the file names
    proj = vol.positions @ vol.normal
    assert np.all(np.diff(proj) > 1.4)
    assert set(vol.files) == {str(p) for p in dess_dir.iterdir()}
    assert array.shape == (512, 512, 80) and array.dtype == np.float32
    np.testing.assert_allclose(meta["spacing"], DESS_SPACING, atol=1e-4)
    np.testing.assert_allclose(meta["pixdim"][1:4], DESS_SPACING, atol=1e-4)
    assert list(meta["spatial_shape"]) == [512, 512, 80]
    np.testing.assert_allclose(meta["affine"], h_lps_to_ras(meta["affine_lps"]))


def test_dess_order_does_not_depend_on_file_names(dess_loaded, tmp_path: Path):
    """The shared files happen to sort in slice order: link them under shuffled names and rediscover."""
    vol = dess_loaded[0].volumes[0]
    perm = np.random.default_rng(7).permutation(len(vol.files))
    for name_index, k in enumerate(perm):
        (tmp_path / f"x{name_index:03d}.dcm").symlink_to(vol.files[k])
    (relinked,) = discover_series(tmp_path).volumes
    assert relinked.files != sorted(relinked.files)
    assert [os.path.realpath(f) for f in relinked.files] == [os.path.realpath(f) for f in vol.files]
    np.testing.assert_allclose(relinked.affine, vol.affine)


def h_lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps


def test_dess_matches_dcm2niix_layout_and_affine(dess_loaded, dess_dir: Path, tmp_path: Path):
    """dcm2niix -x i (no reorientation): identical array layout, affine within 1e-3, identical voxels."""
    nib = pytest.importorskip("nibabel")
    _, array, meta = dess_loaded
    (nii,) = run_dcm2niix(dess_dir, tmp_path, "-x", "i")
    ref = nib.load(str(nii))
    assert ref.shape == array.shape == (512, 512, 80)
    np.testing.assert_allclose(meta["affine"], ref.affine, atol=1e-3)
    np.testing.assert_array_equal(array, np.asarray(ref.dataobj, dtype=np.float32))


def test_dess_matches_dcm2niix_default_world_positions(dess_loaded, dess_dir: Path, tmp_path: Path):
    """Plain ``dcm2niix -z n`` rotates 3D acquisitions to near-RAS: same voxels at the same world positions."""
    nib = pytest.importorskip("nibabel")
    _, array, meta = dess_loaded
    (nii,) = run_dcm2niix(dess_dir, tmp_path)
    ref = nib.load(str(nii))
    assert ref.shape == (80, 512, 512)  # dcm2niix reoriented the sagittal 3D DESS
    ours = nib.as_closest_canonical(nib.Nifti1Image(array, meta["affine"]))
    theirs = nib.as_closest_canonical(ref)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj, dtype=np.float32))


# ---------------------------------------------------------------------------- real data: multi-echo


def test_mese_splits_echoes_not_slices(mese_result, mese_dir: Path):
    result = mese_result
    assert result.problems == []
    assert len(result.volumes) == 8
    assert len(set(result.series_uids)) == 1
    tes = [v.echo_time for v in result.volumes]
    assert tes == sorted(tes)
    assert tes[0] == pytest.approx(6.312) and tes[-1] == pytest.approx(50.496)
    assert [v.echo_index for v in result.volumes] == list(range(8))
    assert [v.echo_number for v in result.volumes] == list(range(1, 9))
    assert len({v.volume_id for v in result.volumes}) == 8
    assert all(v.num_slices == 24 and v.shape == (256, 256, 24) for v in result.volumes)
    all_files = [f for v in result.volumes for f in v.files]
    assert len(all_files) == len(set(all_files)) == 192
    # every echo sees the same 24 positions, 4 mm apart, on an oblique plane
    for v in result.volumes:
        np.testing.assert_allclose(v.positions, result.volumes[0].positions, atol=1e-4)
        assert v.spacing == pytest.approx((0.625, 0.625, 4.0), abs=1e-4)
    assert not np.allclose(np.abs(result.volumes[0].normal), np.round(np.abs(result.volumes[0].normal)))


def test_mese_pixel_equals_pydicom_decoding(mese_result):
    vol = mese_result.volumes[3]
    array, meta = load_volume(vol)
    assert array.shape == (256, 256, 24) and array.dtype == np.float32
    assert meta["transfer_syntax"] == uid.ExplicitVRBigEndian
    for k in (0, 11, 23):
        ds = pydicom.dcmread(vol.files[k])
        assert float(ds.EchoTime) == pytest.approx(25.248)
        expected = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)
        np.testing.assert_array_equal(dicom_order(array)[k], expected)
        r, c = 100, 37
        assert array[c, 255 - r, k] == expected[r, c]


def test_mese_matches_dcm2niix(mese_result, mese_dir: Path, tmp_path: Path):
    nib = pytest.importorskip("nibabel")
    outputs = run_dcm2niix(mese_dir, tmp_path)
    assert len(outputs) == 8  # dcm2niix also splits the echoes (out_1 .. out_8)
    for echo in (0, 7):
        ref = nib.load(str(tmp_path / f"out_{echo + 1}.nii"))
        array, meta = load_volume(mese_result.volumes[echo])
        np.testing.assert_allclose(meta["affine"], ref.affine, atol=1e-3)
        np.testing.assert_array_equal(array, np.asarray(ref.dataobj, dtype=np.float32))


def test_load_series_folder_requires_echo_for_multi_echo(mese_dir: Path):
    with pytest.raises(DicomSeriesError) as err:
        load_series(mese_dir)
    msg = str(err.value)
    assert "holds 8 echo volumes" in msg and "pass echo=<index>" in msg
    assert "echo=0 (TE 6.312 ms, 24 slices)" in msg and "echo=7 (TE 50.496 ms, 24 slices)" in msg
    array, meta = load_series(mese_dir, echo=7)
    assert array.shape == (256, 256, 24) and meta["echo_time"] == pytest.approx(50.496)
    with pytest.raises(DicomSeriesError, match=r"has no echo=8; available: echo=0 \(TE 6.312 ms"):
        load_series(mese_dir, echo=8)


# ---------------------------------------------------------------------------- synthetic geometry


def test_synthetic_geometry_and_axis_order(synthetic):
    folder, volume, paths = synthetic
    array, meta = load_series(folder)
    assert array.shape == (40, 48, 6)  # (columns, rows, slices)
    np.testing.assert_array_equal(dicom_order(array), volume)
    np.testing.assert_allclose(meta["spacing"], (0.75, 0.5, 2.0), atol=1e-6)
    assert meta["files"] == [str(p) for p in paths]
    # world position of voxel (i=c, j=rows-1-r, k) = IPP_k + c*dc*row_dir + r*dr*col_dir  (LPS)
    for k, r, c in [(0, 0, 0), (2, 5, 7), (5, 47, 39)]:
        ds = pydicom.dcmread(paths[k])
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        lps = np.asarray(ds.ImagePositionPatient, dtype=float) + c * 0.75 * iop[:3] + r * 0.5 * iop[3:]
        ijk = np.array([c, 47 - r, k, 1.0])
        np.testing.assert_allclose((meta["affine_lps"] @ ijk)[:3], lps, atol=1e-6)
        np.testing.assert_allclose((meta["affine"] @ ijk)[:3], lps * [-1, -1, 1], atol=1e-6)
        assert array[c, 47 - r, k] == volume[k, r, c]


def test_rescale_slope_intercept_float32(tmp_path: Path):
    volume = h.synthetic_volume(slices=3)
    paths = h.write_series(tmp_path, volume, slope=2.5, intercept=-100.0)
    array, _ = load_series(tmp_path)
    assert array.dtype == np.float32
    ds = pydicom.dcmread(paths[1])
    np.testing.assert_allclose(dicom_order(array)[1], apply_modality_lut(ds.pixel_array, ds), rtol=0, atol=1e-4)
    assert dicom_order(array)[1][3, 4] == pytest.approx(volume[1, 3, 4] * 2.5 - 100.0)


def test_recursive_discovery_and_metadata(tmp_path: Path):
    h.write_series(tmp_path / "patient" / "a", h.synthetic_volume(slices=3), series_description="A")
    h.write_series(tmp_path / "patient" / "b" / "deeper", h.synthetic_volume(slices=4), series_description="B")
    result = discover_series(tmp_path)
    assert result.problems == []
    assert sorted(v.series_description for v in result.volumes) == ["A", "B"]
    info = {v.series_description: v.describe() for v in result.volumes}
    assert info["B"]["num_slices"] == 4 and info["B"]["patient_id"] == "PHANTOM"
    assert info["B"]["modality"] == "MR" and info["B"]["echo_time"] == 10.0
    assert all("/deeper/" in f for f in info["B"]["files"])


# ---------------------------------------------------------------------------- compressed transfer syntaxes


@pytest.mark.parametrize(
    "transfer_syntax",
    [uid.RLELossless, uid.JPEGLSLossless, uid.JPEG2000Lossless],
    ids=["rle", "jpeg-ls-lossless", "jpeg2000-lossless"],
)
def test_lossless_compressed_series_decode_exactly(synthetic, tmp_path: Path, transfer_syntax: str):
    if not h.can_encode(transfer_syntax):
        pytest.skip(f"no encoder for {uid.UID(transfer_syntax).name} with pydicom {pydicom.__version__}")
    folder, volume, paths = synthetic
    for p in paths:
        h.recompress(p, transfer_syntax)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == transfer_syntax
    array, meta = load_series(folder)
    assert meta["transfer_syntax"] == transfer_syntax
    np.testing.assert_array_equal(dicom_order(array), volume)


def test_jpeg_ls_near_lossless_within_error_bound(synthetic):
    if not h.can_encode(uid.JPEGLSNearLossless):
        pytest.skip("no JPEG-LS near-lossless encoder")
    folder, volume, paths = synthetic
    for p in paths:
        h.recompress(p, uid.JPEGLSNearLossless, jls_error=2)
    array, meta = load_series(folder)
    assert meta["transfer_syntax"] == uid.JPEGLSNearLossless
    err = np.abs(dicom_order(array) - volume.astype(np.float32))
    assert err.max() <= 2 and err.max() > 0


def test_jpeg_lossless_process14_decodes_exactly(synthetic):
    folder, volume, paths = synthetic
    for p in paths:
        ds = pydicom.dcmread(p)
        h.encapsulate_frame(ds, h.jpeg_lossless_sv1_bytes(ds.pixel_array, precision=12), uid.JPEGLosslessSV1)
        h.save_dataset(ds, p)
    array, meta = load_series(folder)
    assert meta["transfer_syntax"] == uid.JPEGLosslessSV1
    np.testing.assert_array_equal(dicom_order(array), volume)


def test_jpeg_baseline_decodes_like_pillow(tmp_path: Path):
    pil = pytest.importorskip("PIL.Image")
    import io

    volume8 = (h.synthetic_volume(slices=3) // 16).astype(np.uint8)
    paths = h.write_series(tmp_path, volume8.astype(np.uint16), bits_stored=8)
    expected = []
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        encoded = h.jpeg_baseline_bytes(volume8[k])
        h.encapsulate_frame(ds, encoded, uid.JPEGBaseline8Bit)
        h.save_dataset(ds, p)
        expected.append(np.asarray(pil.open(io.BytesIO(encoded)), dtype=np.float32))
    array, meta = load_series(tmp_path)
    assert meta["transfer_syntax"] == uid.JPEGBaseline8Bit
    # lossy: equal to Pillow's decoding up to IDCT rounding, close to the original
    assert np.abs(dicom_order(array) - np.stack(expected)).max() <= 1
    assert np.abs(dicom_order(array) - volume8).max() <= 4


# ---------------------------------------------------------------------------- enhanced multi-frame MR


def test_enhanced_mr_matches_single_frame_series(dess_loaded, tmp_path: Path):
    result, full_array, _ = dess_loaded
    vol = result.volumes[0]
    picked = vol.files[30:36]
    single = tmp_path / "single"
    single.mkdir()
    for p in picked:
        shutil.copy(p, single / Path(p).name)
    sources = [pydicom.dcmread(p) for p in picked]
    enhanced = h.make_enhanced_mr(sources, tmp_path / "enhanced" / "mf.dcm", frame_order=[4, 1, 5, 0, 3, 2])
    a_single, m_single = load_series(single)
    a_multi, m_multi = load_series(enhanced)
    assert a_multi.shape == a_single.shape == (512, 512, 6)
    np.testing.assert_array_equal(a_multi, a_single)
    np.testing.assert_array_equal(a_multi, full_array[:, :, 30:36])
    np.testing.assert_allclose(m_multi["affine"], m_single["affine"], atol=1e-6)
    np.testing.assert_allclose(m_multi["spacing"], DESS_SPACING, atol=1e-4)
    (mvol,) = discover_series(enhanced).volumes
    assert mvol.files == [str(enhanced)]
    assert [s.frame for s in mvol.slices] == [3, 1, 5, 4, 0, 2]  # frames sorted back by position


def test_enhanced_mr_multi_echo_per_frame_rescale(tmp_path: Path):
    volume = h.synthetic_volume(slices=3)
    paths = h.write_series(tmp_path / "src", volume)
    sources = [pydicom.dcmread(p) for p in paths] * 2  # 3 positions x 2 echoes
    path = h.make_enhanced_mr(
        sources,
        tmp_path / "mf" / "mf.dcm",
        frame_order=[5, 0, 3, 1, 4, 2],
        echo_times=[20.0, 20.0, 20.0, 5.0, 5.0, 5.0],
        per_frame_rescale=[(2.0, 1.0)] * 3 + [(0.5, -3.0)] * 3,
    )
    result = discover_series(path)
    assert result.problems == []
    assert [(v.echo_index, v.echo_time, v.num_slices) for v in result.volumes] == [(0, 5.0, 3), (1, 20.0, 3)]
    short, _ = load_volume(result.volumes[0])
    long, _ = load_volume(result.volumes[1])
    np.testing.assert_allclose(dicom_order(short), volume * 0.5 - 3.0)
    np.testing.assert_allclose(dicom_order(long), volume * 2.0 + 1.0)


# ---------------------------------------------------------------------------- bad input in a real series


def test_truncated_pixel_data_is_reported_with_path(dess_loaded, tmp_path: Path):
    vol = dess_loaded[0].volumes[0]
    for p in vol.files[10:15]:
        shutil.copy(p, tmp_path / Path(p).name)
    bad = tmp_path / Path(vol.files[12]).name
    data = bad.read_bytes()
    bad.write_bytes(data[:-1000])
    result = discover_series(tmp_path)
    file_problems = [p for p in result.problems if p.volume_id is None]
    assert file_problems == [Problem(str(bad), "truncated pixel data: 523288 of 524288 bytes")]
    (volume,) = result.volumes
    assert volume.num_slices == 4 and not volume.is_valid
    assert any("missing slice(s)" in p.message for p in result.problems if p.volume_id == volume.volume_id)
    with pytest.raises(DicomSeriesError) as err:
        load_series(tmp_path)
    assert str(err.value) == (
        f"{tmp_path}: 1 DICOM file(s) could not be read: {bad}: truncated pixel data: 523288 of 524288 bytes"
    )
    # non-strict: the bad file is skipped, which leaves a hole in the series
    with pytest.raises(DicomSeriesError, match=r"missing slice\(s\): gap of 3\.000 mm \(nominal spacing 1\.500 mm\)"):
        load_series(tmp_path, strict=False)
