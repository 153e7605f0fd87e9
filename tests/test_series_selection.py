"""Selecting knee MR series: body part, Siemens MOSAIC and diffusion detection on real DICOM files.

Files are written with pydicom to ``tmp_path`` and go through :func:`kneeseg.data.discover_series`;
the shared knee series must pass every rule. Pure pydicom + numpy (no torch).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import dicom_selection_helpers as h
from kneeseg.data import (
    DicomSeriesError,
    body_part_decision,
    body_part_of,
    diffusion_summary,
    discover_series,
    is_mosaic,
    load_volume,
    select_volume,
    series_skip_reason,
)

# some files carry deliberately invalid values (lower-case CS, text in IS): pydicom warns on reading them
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

KNEE_OK = (True, "")
ASSUMED_KNEE = (True, "BodyPartExamined missing; assumed knee")
DWI_REASON = (
    "diffusion-weighted series: 4 volumes, b = 0, 1000 s/mm^2, 3 gradient directions: "
    "diffusion-weighted series are not segmented"
)


def write_small_series(folder: Path, **attributes) -> Path:
    """Two-slice sagittal MR series with extra attributes (e.g. BodyPartExamined) set on every file."""
    description = attributes.pop("SeriesDescription", "synthetic")
    paths = h.write_series(
        folder, h.synthetic_volume(rows=8, columns=8, slices=2), orientation=h.SAGITTAL_IOP,
        series_description=description,
    )  # fmt: skip
    if attributes:
        h.set_attributes(paths, **attributes)
    return folder


def only_volume(folder: Path):
    result = discover_series(folder)
    assert result.problems == []
    assert len(result.volumes) == 1
    return result.volumes[0]


# ---------------------------------------------------------------------------- body part


def test_brain_series_is_rejected_with_reason(tmp_path: Path) -> None:
    h.write_head_series(tmp_path, body_part=" brain ")
    vol = only_volume(tmp_path)
    assert vol.body_part == "BRAIN"
    assert body_part_of(vol) == ("BRAIN", "BodyPartExamined")
    assert body_part_decision(vol) == (
        False,
        "body part BRAIN (BodyPartExamined); the model segments KNEE images "
        "(pass --any-body-part to segment it anyway)",
    )
    assert body_part_decision(vol, any_body_part=True) == (
        True,
        "body part BRAIN (BodyPartExamined), not KNEE: segmented anyway (--any-body-part)",
    )
    assert series_skip_reason([vol]) is None  # body part is decided separately (it has an override)
    assert vol.describe()["body_part"] == "BRAIN"


def test_brain_named_only_in_description_is_rejected(tmp_path: Path) -> None:
    h.write_head_series(tmp_path, body_part=None, series_description="T2 FLAIR brain", orientation=h.SAGITTAL_IOP)
    vol = only_volume(tmp_path)
    assert vol.body_part == ""
    assert body_part_decision(vol) == (
        False,
        "body part BRAIN (SeriesDescription 'T2 FLAIR brain'); the model segments KNEE images "
        "(pass --any-body-part to segment it anyway)",
    )


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ({"BodyPartExamined": "KNEE"}, ("KNEE", "BodyPartExamined")),
        ({"BodyPartExamined": "lknee"}, ("KNEE", "BodyPartExamined")),
        ({"BodyPartExamined": "PATELLA"}, ("KNEE", "BodyPartExamined")),
        ({"SeriesDescription": "SAG PD KNEE"}, ("KNEE", "SeriesDescription")),
        ({"SeriesDescription": "Knie sag PD fs"}, ("KNEE", "SeriesDescription")),
        ({"SeriesDescription": "genou T1 coronal"}, ("KNEE", "SeriesDescription")),
        ({"SeriesDescription": "RODILLA DP SAG"}, ("KNEE", "SeriesDescription")),
        ({"SeriesDescription": "ginocchio_dx"}, ("KNEE", "SeriesDescription")),
        ({"SeriesDescription": "pd_tse_fs_sag_RT_KNEE"}, ("KNEE", "SeriesDescription")),
        ({"ProtocolName": "L-KNEE routine"}, ("KNEE", "ProtocolName")),
        ({"SeriesDescription": "femoral head T1"}, ("HEAD", "SeriesDescription")),
        ({"SeriesDescription": "sag PD shoulder"}, ("SHOULDER", "SeriesDescription")),
        ({"SeriesDescription": "COR STIR HIP"}, ("HIP", "SeriesDescription")),
        ({"SeriesDescription": "sag T2 ankle"}, ("ANKLE", "SeriesDescription")),
        ({"SeriesDescription": "T2 C-SPINE sag"}, ("SPINE", "SeriesDescription")),
        ({"BodyPartExamined": "LSPINE"}, ("LSPINE", "BodyPartExamined")),
        ({"BodyPartExamined": "HEAD"}, ("HEAD", "BodyPartExamined")),
        ({"BodyPartExamined": "EXTREMITY", "SeriesDescription": "SAG PD KNEE"}, ("KNEE", "SeriesDescription")),
        ({"BodyPartExamined": "EXTREMITY"}, ("EXTREMITY", "BodyPartExamined")),
        ({"SeriesDescription": "Sag DESS 3132 30 HiRes"}, ("", "")),
    ],
)
def test_body_part_of(tmp_path: Path, attributes: dict, expected: tuple[str, str]) -> None:
    vol = only_volume(write_small_series(tmp_path, **attributes))
    assert body_part_of(vol) == expected


def test_body_part_notes(tmp_path: Path) -> None:
    cases = {
        "knee": ({"BodyPartExamined": "KNEE"}, KNEE_OK),
        "missing": ({}, ASSUMED_KNEE),
        "generic": (
            {"BodyPartExamined": "LOWERLIMB"},
            (True, "BodyPartExamined LOWERLIMB is not specific; assumed knee"),
        ),
        "desc": (
            {"BodyPartExamined": "EXTREMITY", "SeriesDescription": "SAG PD KNEE"},
            (True, "BodyPartExamined EXTREMITY; knee according to SeriesDescription 'SAG PD KNEE'"),
        ),
        "desc_only": (
            {"SeriesDescription": "Knie PD"},
            (True, "BodyPartExamined missing; knee according to SeriesDescription 'Knie PD'"),
        ),
    }
    for name, (attributes, expected) in cases.items():
        vol = only_volume(write_small_series(tmp_path / name, **attributes))
        assert body_part_decision(vol) == expected, name
        assert body_part_decision(vol, any_body_part=True) == expected, name


def test_body_part_decision_for_another_expected_part(tmp_path: Path) -> None:
    vol = only_volume(write_small_series(tmp_path, BodyPartExamined="KNEE"))
    accept, reason = body_part_decision(vol, expected="hip")
    assert not accept
    assert reason == (
        "body part KNEE (BodyPartExamined); the model segments HIP images (pass --any-body-part to segment it anyway)"
    )


# ---------------------------------------------------------------------------- Siemens MOSAIC


def test_mosaic_file_is_detected(tmp_path: Path) -> None:
    h.save_dataset(h.make_mosaic(tiles=9), tmp_path / "MOSAIC.IMA")
    vol = only_volume(tmp_path)
    assert vol.image_type == ("ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC")
    assert vol.mosaic_images == 9
    assert (vol.rows, vol.columns, vol.num_slices) == (24, 24, 1)  # the tiled matrix, read as one slice
    assert is_mosaic(vol)
    assert series_skip_reason([vol]) == (
        "Siemens MOSAIC image (9 images tiled in one file): not supported, the tiles are not unpacked"
    )
    assert vol.describe()["image_type"] == "ORIGINAL\\PRIMARY\\M\\ND\\MOSAIC"
    assert vol.describe()["mosaic_images"] == 9
    # the library's readers refuse it rather than return one tiled slice with a wrong geometry
    from kneeseg.data.dicom.loading import load_series
    from kneeseg.data.dicom.monai_reader import KneeDicomReader

    message = (f"a Siemens MOSAIC (9 images tiled in each 24 x 24 file, {tmp_path / 'MOSAIC.IMA'}): not supported, "
               "the tiles are not unpacked; convert the series first (e.g. dcm2niix) or export it as single slices")
    for read in (lambda: load_volume(vol), lambda: load_series(tmp_path),
                 lambda: KneeDicomReader().get_data(KneeDicomReader().read(str(tmp_path)))):
        with pytest.raises(DicomSeriesError, match=re.escape(message)):
            read()


def test_mosaic_time_series_gives_one_reason(tmp_path: Path) -> None:
    uid, study = generate_uid(), generate_uid()
    for t in range(3):
        ds = h.make_mosaic(tiles=4, series_uid=uid, study_uid=study, instance_number=t + 1, acquisition_number=t + 1)
        h.save_dataset(ds, tmp_path / f"fmri{t}.dcm")
    result = discover_series(tmp_path)
    assert len(result.volumes) == 3 and result.problems == []  # split by AcquisitionNumber, as before
    assert series_skip_reason(result.volumes) == (
        "Siemens MOSAIC images (3 files, 4 images tiled in each): not supported, the tiles are not unpacked"
    )


def test_mosaic_by_count_or_image_type_alone(tmp_path: Path) -> None:
    no_token = h.make_mosaic(tiles=16, image_type=("ORIGINAL", "PRIMARY", "M", "ND"))
    h.save_dataset(no_token, tmp_path / "count" / "a.dcm")
    assert is_mosaic(only_volume(tmp_path / "count"))
    ds = h.make_mosaic(tiles=4)
    del ds[0x0019100A]
    h.save_dataset(ds, tmp_path / "token" / "a.dcm")
    vol = only_volume(tmp_path / "token")
    assert vol.mosaic_images is None and is_mosaic(vol)
    assert series_skip_reason([vol]) == (
        "Siemens MOSAIC image (ImageType MOSAIC, 1 file): not supported, the tiles are not unpacked"
    )


# ---------------------------------------------------------------------------- diffusion


@pytest.mark.parametrize("vendor", ["standard", "siemens", "ge", "philips"])
def test_diffusion_series_splits_into_valid_volumes(tmp_path: Path, vendor: str) -> None:
    h.write_diffusion_series(tmp_path, vendor=vendor)
    result = discover_series(tmp_path)
    assert result.problems == []
    vols = result.volumes
    uid = vols[0].series_uid
    assert [v.volume_id for v in vols] == [f"{uid}_e0_d{i}" for i in range(4)]
    assert [v.diffusion_index for v in vols] == [0, 1, 2, 3]
    assert [v.b_value for v in vols] == [0.0, 1000.0, 1000.0, 1000.0]
    assert [v.diffusion_direction for v in vols[1:]] == [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    for v in vols:
        assert v.is_valid and v.num_slices == 3
        np.testing.assert_allclose(v.positions[:, 2], [20.0, 24.0, 28.0])
    assert diffusion_summary(vols) == "diffusion-weighted series: 4 volumes, b = 0, 1000 s/mm^2, 3 gradient directions"
    assert series_skip_reason(vols) == DWI_REASON
    array, _ = load_volume(vols[2])  # geometrically valid: loads; pixel value = 100 + 10 * volume + slice
    np.testing.assert_array_equal(array[0, 0, :], [120, 121, 122])


def test_diffusion_volume_choice_message(tmp_path: Path) -> None:
    h.write_diffusion_series(tmp_path)
    expected = r"holds 4 diffusion volumes \(echo=0 \(TE 80 ms, 3 slices, b = 0 s/mm\^2, volume_id "
    with pytest.raises(DicomSeriesError, match=expected):
        select_volume(discover_series(tmp_path))


def test_enhanced_mr_diffusion_frames(tmp_path: Path) -> None:
    h.write_enhanced_diffusion(tmp_path / "dti.dcm")
    result = discover_series(tmp_path)
    assert result.problems == []
    assert [(v.b_value, v.diffusion_direction, v.num_slices) for v in result.volumes] == [
        (0.0, None, 3), (1000.0, (1.0, 0.0, 0.0), 3), (1000.0, (0.0, 1.0, 0.0), 3), (1000.0, (0.0, 0.0, 1.0), 3),
    ]  # fmt: skip
    assert series_skip_reason(result.volumes) == DWI_REASON


def test_ge_b_value_bias_is_removed(tmp_path: Path) -> None:
    h.write_diffusion_series(tmp_path, vendor="ge", scheme=[(0.0, None), (12000.0, (0.0, 0.0, 1.0))], slices=2)
    vols = discover_series(tmp_path).volumes
    raw = pydicom.dcmread(vols[1].files[0])[0x00431039].value
    assert int(raw[0]) == 1_000_012_000  # stored with the 1e9 bias; b >= 10000 survives (not "% 10000")
    assert [v.b_value for v in vols] == [0.0, 12000.0]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"image_type": ("DERIVED", "PRIMARY", "DIFFUSION", "ADC", "ND", "NORM")}, "ImageType DIFFUSION"),
        ({"image_type": ("DERIVED", "PRIMARY", "ADC_UNSPECIFIED")}, "ImageType ADC_UNSPECIFIED"),
        ({"series_description": "ep2d_diff_3scan_trace_p2"}, "SeriesDescription 'ep2d_diff_3scan_trace_p2'"),
        ({"series_description": "Ax DWI b800"}, "SeriesDescription 'Ax DWI b800'"),
        ({"series_description": "DTI30dir"}, "SeriesDescription 'DTI30dir'"),
        ({"series_description": "dwi_ADC"}, "SeriesDescription 'dwi_ADC'"),
        ({"series_description": "diffuse marrow edema"}, None),  # DIFFUSE is a finding, not an acquisition
        ({"series_description": "SAG PD FS ADCx"}, None),  # ADC only as a whole word
        ({"series_description": "T1 FA 20"}, None),  # FA in a name is the flip angle
    ],
)
def test_diffusion_named_by_image_type_or_description(tmp_path: Path, kwargs: dict, expected: str | None) -> None:
    h.write_diffusion_series(tmp_path, scheme=[(1000.0, None)], vendor="siemens", **kwargs)
    vols = discover_series(tmp_path).volumes
    assert len(vols) == 1 and vols[0].b_value == 1000.0
    summary = diffusion_summary(vols)  # one volume at b = 1000: b-values alone do not decide
    if expected is None:
        assert summary is None and series_skip_reason(vols) is None
    else:
        assert summary == f"diffusion-weighted series: 1 volume, b = 1000 s/mm^2, {expected}"


def test_constant_zero_b_value_is_not_diffusion(tmp_path: Path) -> None:
    """GE writes (0043,1039) = 0 for non-diffusion scans (e.g. the shared DESS knee): not diffusion."""
    h.write_diffusion_series(tmp_path, scheme=[(0.0, None)], vendor="ge", series_description="Sag PD")
    vols = discover_series(tmp_path).volumes
    assert [v.b_value for v in vols] == [0.0]
    assert diffusion_summary(vols) is None


# ---------------------------------------------------------------------------- defensive private tags


def _bad_private(ds: pydicom.Dataset, case: str) -> None:
    if case == "mosaic_as_text":
        h.add_private(ds, 0x0019, h.SIEMENS_MR_HEADER, 0x0A, "LO", "lots")
    elif case == "mosaic_without_creator":
        ds.add_new(0x0019100A, "US", 12)
    elif case == "mosaic_other_creator":  # GE uses group 0019 for other things
        h.add_private(ds, 0x0019, "GEMS_ACQU_01", 0x0A, "US", 12)
    elif case == "mosaic_implausible":
        h.add_private(ds, 0x0019, h.SIEMENS_MR_HEADER, 0x0A, "US", 60000)
    elif case == "siemens_b_as_bytes":
        h.add_private(ds, 0x0019, h.SIEMENS_MR_HEADER, 0x0C, "UN", b"\xff\xfe")
        h.add_private(ds, 0x0019, h.SIEMENS_MR_HEADER, 0x0E, "FD", [1.0, 0.0])  # 2 of 3 values
    elif case == "ge_b_not_a_number":
        h.add_private(ds, 0x0043, "GEMS_PARM_01", 0x39, "LO", "abc\\8")
    elif case == "ge_b_negative":
        h.add_private(ds, 0x0043, "GEMS_PARM_01", 0x39, "IS", [-5, 8, 0, 0])
    elif case == "philips_b_wrong_length":
        h.add_private(ds, 0x2001, "Philips Imaging DD 001", 0x03, "UN", b"\x00\x00\x80")
    elif case == "creator_as_bytes":
        ds.add_new(0x00190010, "UN", b"\xc3\x28garbage")
        ds.add_new(0x0019100A, "UN", b"\x01")


BAD_CASES = [
    "mosaic_as_text", "mosaic_without_creator", "mosaic_other_creator", "mosaic_implausible", "siemens_b_as_bytes",
    "ge_b_not_a_number", "ge_b_negative", "philips_b_wrong_length", "creator_as_bytes",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_private_values_do_not_break_discovery(tmp_path: Path, case: str) -> None:
    paths = h.write_series(tmp_path, h.synthetic_volume(rows=8, columns=8, slices=3), orientation=h.SAGITTAL_IOP)
    for path in paths:
        ds = pydicom.dcmread(path)
        _bad_private(ds, case)
        h.save_dataset(ds, path)
    vol = only_volume(tmp_path)
    assert vol.num_slices == 3 and vol.is_valid
    assert (vol.mosaic_images, vol.b_value, vol.b_values, vol.diffusion_direction) == (None, None, (), None)
    assert not is_mosaic(vol)
    assert series_skip_reason([vol]) is None


def test_bad_private_values_in_implicit_vr_file(tmp_path: Path) -> None:
    """Implicit VR: private values arrive without a VR; a text b-value where a number is due gives None."""
    paths = h.write_series(tmp_path, h.synthetic_volume(rows=8, columns=8, slices=2), orientation=h.SAGITTAL_IOP)
    for path in paths:
        ds = pydicom.dcmread(path)
        h.add_private(ds, 0x0019, h.SIEMENS_MR_HEADER, 0x0C, "LO", "b1000")
        h.add_private(ds, 0x0019, h.SIEMENS_MR_HEADER, 0x0A, "US", 1)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        h.save_dataset(ds, path)
    vol = only_volume(tmp_path)
    assert (vol.mosaic_images, vol.b_value) == (1, None)
    assert not is_mosaic(vol)


# ---------------------------------------------------------------------------- shared knee series


@pytest.mark.parametrize("name", ["knee-dess-sag", "knee-mese-t2"])
def test_shared_knee_series_are_selected(shared_data: Path, name: str) -> None:
    result = discover_series(shared_data / "dicom" / name)
    vols = result.volumes
    assert len({v.series_uid for v in vols}) == 1
    for vol in vols:
        # neither series has BodyPartExamined; DESS: "Sag DESS 3132 30 HiRes thk1p5 ARCx2", no ProtocolName;
        # MESE: no SeriesDescription, ProtocolName "ANONYMIZED"; both GE, ImageType ORIGINAL\PRIMARY\OTHER
        assert vol.body_part == ""
        assert vol.image_type == ("ORIGINAL", "PRIMARY", "OTHER")
        assert body_part_of(vol) == ("", "")
        assert body_part_decision(vol) == ASSUMED_KNEE
        assert not is_mosaic(vol) and vol.mosaic_images is None
        assert vol.diffusion_index is None and vol.diffusion_direction is None
    assert diffusion_summary(vols) is None
    assert series_skip_reason(vols) is None
    if name == "knee-dess-sag":
        assert len(vols) == 1
        assert vols[0].series_description == "Sag DESS 3132 30 HiRes thk1p5 ARCx2"
        assert vols[0].protocol_name == ""
        assert vols[0].b_value == 0.0  # GE (0043,1039) = 0\1073807360\0\0: b = 0, not diffusion
    else:
        assert len(vols) == 8
        assert {v.series_description for v in vols} == {""}
        assert {v.protocol_name for v in vols} == {"ANONYMIZED"}
        assert {v.b_value for v in vols} == {None}  # anonymised: no private tags left
