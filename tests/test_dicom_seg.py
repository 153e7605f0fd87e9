"""DICOM SEG export (highdicom) and its dciodvfy validation, on real files.

Every written SEG is checked with ``dciodvfy`` (package ``dicom3tools``, installed by CI); when
it is missing these tests fail rather than skip. Masks are decoded back with plain pydicom via
each frame's referenced source instance/frame, independently of highdicom's reader.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

import dicom_helpers as h
from kneeseg.data.dicom.discovery import discover_series
from kneeseg.data.dicom.loading import select_volume
from kneeseg.data.dicom.volume import SeriesVolume

import highdicom as hd  # noqa: E402  (the dicom-seg extra)

from kneeseg.phantom import PHANTOM_LABELS, generate_phantom  # noqa: E402
from kneeseg.inference.dicom_seg import (  # noqa: E402
    dciodvfy_messages,
    segment_descriptions,
    validate_dicom_seg,
    write_dicom_seg,
)
from kneeseg.inference.seg_codes import knee_code_table  # noqa: E402

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
PHANTOM_SHAPE = (64, 64, 8)  # (columns, rows, slices)
SCT_CODES = {  # expected (category, type) code values per phantom class
    "femur": ("91723000", "71341001"),
    "tibia": ("91723000", "12611008"),
    "patella": ("91723000", "64234005"),
    "patellar_ligament": ("91723000", "18033002"),
}


# ---------------------------------------------------------------------------- helpers


def source_uids(volume: SeriesVolume) -> list[str]:
    """SOPInstanceUID of every distinct source file of ``volume`` in slice order."""
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in volume.files]


def functional_group(ds: pydicom.Dataset, item: pydicom.Dataset, name: str) -> pydicom.Dataset:
    """First item of functional group ``name``: per-frame ``item`` first, then the shared groups."""
    for group in (item, ds.SharedFunctionalGroupsSequence[0]):
        if name in group:
            return group[name].value[0]
    raise KeyError(name)


def decode_seg(path: Path, volume: SeriesVolume, class_ids: list[int]) -> np.ndarray:
    """Read a BINARY SEG with pydicom and rebuild the ``(columns, rows, slices)`` class-id map.

    Each SEG frame is placed via its DerivationImageSequence reference (source instance, and
    frame for a multi-frame source); its plane position must equal that source slice's position.
    ``class_ids[n - 1]`` is the class of segment ``n``.
    """
    uid_of = dict(zip(volume.files, source_uids(volume)))
    where = {(uid_of[s.path], s.frame): k for k, s in enumerate(volume.slices)}
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SEG_STORAGE
    masks = np.asarray(ds.pixel_array).reshape(int(ds.NumberOfFrames), volume.rows, volume.columns)
    frames = np.zeros((volume.num_slices, volume.rows, volume.columns), dtype=np.int64)
    for item, mask in zip(ds.PerFrameFunctionalGroupsSequence, masks):
        segment = int(functional_group(ds, item, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        (src,) = functional_group(ds, item, "DerivationImageSequence").SourceImageSequence
        frame = int(src.ReferencedFrameNumber) - 1 if "ReferencedFrameNumber" in src else None
        k = where[(str(src.ReferencedSOPInstanceUID), frame)]
        position = [float(v) for v in functional_group(ds, item, "PlanePositionSequence").ImagePositionPatient]
        np.testing.assert_allclose(position, volume.slices[k].position, atol=1e-3)
        on = mask.astype(bool)
        assert not frames[k][on].any(), "segments of a BINARY label map must not overlap"
        frames[k][on] = class_ids[segment - 1]
    return np.transpose(frames, (2, 1, 0))[:, ::-1, :]  # inverse of volume_to_dicom_frames


def referenced_instances(path: Path) -> tuple[str, list[str]]:
    """(referenced series UID, referenced SOP instance UIDs) of the SEG's ReferencedSeriesSequence."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    (series,) = ds.ReferencedSeriesSequence
    return str(series.SeriesInstanceUID), [str(i.ReferencedSOPInstanceUID) for i in series.ReferencedInstanceSequence]


def referenced_frames(path: Path) -> set[tuple[str, int | None]]:
    """Every (source SOP instance UID, 0-based source frame or None) a SEG frame derives from."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = set()
    for item in ds.PerFrameFunctionalGroupsSequence:
        for src in functional_group(ds, item, "DerivationImageSequence").SourceImageSequence:
            frame = int(src.ReferencedFrameNumber) - 1 if "ReferencedFrameNumber" in src else None
            out.add((str(src.ReferencedSOPInstanceUID), frame))
    return out


def ellipsoid_labels(shape: tuple[int, int, int], classes: int = 2) -> np.ndarray:
    """An ellipsoid split into ``classes`` slabs along axis 0 (classes 1..n), off-centre on purpose."""
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = (0.45 * shape[0], 0.55 * shape[1], 0.5 * (shape[2] - 1))
    r = (0.3 * shape[0], 0.25 * shape[1], max(0.35 * shape[2], 1.0))
    inside = ((i - c[0]) / r[0]) ** 2 + ((j - c[1]) / r[1]) ** 2 + ((k - c[2]) / r[2]) ** 2 <= 1.0
    slab = 1 + (np.broadcast_to(i, shape) * classes // shape[0])
    return np.where(inside, slab, 0).astype(np.uint8)


def assert_valid(path: Path) -> None:
    errors = validate_dicom_seg(path)
    assert errors == [], "\n".join(errors)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[SeriesVolume, np.ndarray]:
    """One small phantom case: its DICOM series volume and its true (columns, rows, slices) labels."""
    import nibabel as nib

    out = tmp_path_factory.mktemp("phantom")
    generate_phantom(out, cases=1, seed=0, shape=PHANTOM_SHAPE, png=False)
    (volume,) = discover_series(out / "dicom" / "case_000").volumes
    labels = np.asarray(nib.load(str(out / "labelsTr" / "case_000.nii.gz")).dataobj)
    assert labels.shape == volume.shape == PHANTOM_SHAPE
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    return volume, labels


# ---------------------------------------------------------------------------- phantom series


def test_dciodvfy_is_installed():
    assert shutil.which("dciodvfy"), "dciodvfy missing: install the 'dicom3tools' package (CI does)"


def test_phantom_seg_round_trip(phantom, tmp_path: Path):
    volume, labels = phantom
    out = write_dicom_seg(
        volume,
        labels,
        tmp_path / "seg" / "case_000_seg.dcm",
        class_names=PHANTOM_LABELS,
        algorithm_version="9.8.7",
        content_creator="Doe^Jane",
    )
    assert out == tmp_path / "seg" / "case_000_seg.dcm" and out.is_file()
    assert_valid(out)
    assert os.listdir(out.parent) == [out.name]  # no temporary file left beside it

    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "BINARY"
    assert seg.number_of_segments == 4
    assert seg.StudyInstanceUID == volume.study_uid
    assert seg.SeriesInstanceUID != volume.series_uid
    assert (seg.Manufacturer, seg.ManufacturerModelName) == ("kneeseg", "kneeseg csam_unet")
    assert seg.SoftwareVersions == "9.8.7"
    assert seg.DeviceSerialNumber and int(seg.InstanceNumber) == 1
    assert seg.SeriesDescription == "kneeseg segmentation"
    assert int(seg.SeriesNumber) == 1000 + (volume.series_number or 0)
    assert str(seg.ContentCreatorName) == "Doe^Jane"
    assert seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    for number, name in enumerate(["femur", "tibia", "patella", "patellar_ligament"], start=1):
        desc = seg.get_segment_description(number)
        assert desc.segment_label == name
        category, prop_type = SCT_CODES[name]
        assert (desc.segmented_property_category.value, desc.segmented_property_category.scheme_designator) == (
            category,
            "SCT",
        )
        assert (desc.segmented_property_type.value, desc.segmented_property_type.scheme_designator) == (
            prop_type,
            "SCT",
        )
        assert desc.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algo = desc.algorithm_identification[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("kneeseg csam_unet", "9.8.7")
        assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # DCM Artificial Intelligence

    series_uid, refs = referenced_instances(out)
    assert series_uid == volume.series_uid
    assert sorted(refs) == sorted(source_uids(volume))
    np.testing.assert_array_equal(decode_seg(out, volume, [1, 2, 3, 4]), labels)


def test_empty_and_non_consecutive_classes(phantom, tmp_path: Path):
    """Class ids need not be 1..n; a class absent from the volume still gets its (empty) segment."""
    volume, labels = phantom
    relabelled = labels.astype(np.int32)
    relabelled[labels == 2] = 0
    relabelled[labels == 4] = 9
    class_names = {0: "background", 1: "femur", 3: "patella", 9: "ligament", 12: "acl", 15: "synovium"}
    out = write_dicom_seg(volume, relabelled, tmp_path / "seg.dcm", class_names=class_names)
    assert_valid(out)
    seg = hd.seg.segread(out)
    assert seg.number_of_segments == 5
    got = {
        seg.get_segment_description(n).segment_label: (
            seg.get_segment_description(n).segmented_property_category.value,
            seg.get_segment_description(n).segmented_property_type.value,
        )
        for n in range(1, 6)
    }
    assert got == {
        "femur": ("91723000", "71341001"),
        "patella": ("91723000", "64234005"),
        "ligament": ("85756007", "52082005"),  # Tissue / Ligament
        "acl": ("91723000", "895007"),  # Anatomical structure / ACL of knee joint
        "synovium": ("85756007", "85756007"),  # unknown name: Tissue / Tissue
    }
    segments = {
        int(functional_group(seg, f, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert segments == {1, 2, 3}  # empty segments have no frames
    np.testing.assert_array_equal(decode_seg(out, volume, [1, 3, 9, 12, 15]), relabelled)


def test_all_empty_label_map_is_valid(phantom, tmp_path: Path):
    volume, _ = phantom
    out = write_dicom_seg(volume, np.zeros(volume.shape, np.uint8), tmp_path / "empty.dcm", class_names=PHANTOM_LABELS)
    assert_valid(out)
    np.testing.assert_array_equal(decode_seg(out, volume, [1, 2, 3, 4]), 0)


def test_code_table_matches_dicom_code_dictionary():
    """Every built-in code is pydicom's (DICOM PS3.16) code, from the context group it claims."""
    from pydicom.sr.codedict import Collection, codes

    table = knee_code_table()
    keywords = {
        "femur": "Femur", "tibia": "Tibia", "patella": "Patella", "fibula": "Fibula",
        "patellar ligament": "PatellarTendon", "patellar tendon": "PatellarTendon",
        "ligament": "Ligament", "tendon": "Tendon", "cartilage": "Cartilage", "meniscus": "Meniscus",
        "bone": "BoneTissue", "muscle": "MuscleTissue", "fat": "AdiposeTissue",
    }  # fmt: skip
    assert set(table) == set(keywords) | {"anterior cruciate ligament", "acl"}
    for name, keyword in keywords.items():
        assert table[name][1] == getattr(codes.SCT, keyword), name
    cid7150, cid7166 = Collection("CID7150"), Collection("CID7166")
    for name, (category, prop_type) in table.items():
        assert category in (cid7150.AnatomicalStructure, cid7150.Tissue), name
        if category == cid7150.Tissue:  # tissue types come from CID 7166
            assert prop_type in [getattr(cid7166, k) for k in cid7166.dir()], name
    assert table["acl"][1].value == "895007" and table["acl"][1].scheme_designator == "SCT"


def test_segment_descriptions_code_overrides():
    from pydicom.sr.codedict import codes

    descs = segment_descriptions(
        {0: "bg", 2: "Patellar-Tendon", 1: "thing"},
        algorithm_name="a",
        algorithm_version="1",
        codes={"thing": (codes.SCT.AnatomicalStructure, ("74135004", "SCT", "Meniscus"))},
    )
    assert [d.segment_number for d in descs] == [1, 2]
    assert [d.segment_label for d in descs] == ["thing", "Patellar-Tendon"]
    assert descs[0].segmented_property_type.value == "74135004"
    assert descs[0].segmented_property_category.value == "91723000"
    assert descs[1].segmented_property_type.value == "18033002"  # name lookup ignores case and '-'/'_'
    with pytest.raises(ValueError, match="no foreground class"):
        segment_descriptions({0: "bg"}, algorithm_name="a", algorithm_version="1")


def test_uid_seed_is_deterministic(phantom, tmp_path: Path):
    volume, labels = phantom

    def uids(path: Path) -> tuple[str, str, str]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        return ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.DimensionOrganizationSequence[0].DimensionOrganizationUID

    a = write_dicom_seg(volume, labels, tmp_path / "a.dcm", class_names=PHANTOM_LABELS, uid_seed="case_000/v1")
    b = write_dicom_seg(volume, labels, tmp_path / "b.dcm", class_names=PHANTOM_LABELS, uid_seed="case_000/v1")
    c = write_dicom_seg(volume, labels, tmp_path / "c.dcm", class_names=PHANTOM_LABELS, uid_seed="case_000/v2")
    d = write_dicom_seg(volume, labels, tmp_path / "d.dcm", class_names=PHANTOM_LABELS, series_number=7)
    assert uids(a) == uids(b)
    assert len(set(uids(a)) | set(uids(c)) | set(uids(d))) == 9
    assert uids(a)[0] != uids(a)[1]
    assert int(pydicom.dcmread(d, stop_before_pixels=True).SeriesNumber) == 7


def test_label_shape_and_values_are_checked(phantom, tmp_path: Path):
    volume, labels = phantom
    with pytest.raises(ValueError) as err:
        write_dicom_seg(volume, labels[:, :, :-1], tmp_path / "x.dcm", class_names=PHANTOM_LABELS)
    msg = str(err.value)
    assert "(64, 64, 7)" in msg and "(64, 64, 8)" in msg and volume.series_uid in msg
    with pytest.raises(ValueError, match=r"class id\(s\) \[4\]"):
        write_dicom_seg(volume, labels, tmp_path / "x.dcm", class_names={1: "femur", 2: "tibia", 3: "patella"})
    with pytest.raises(ValueError, match="non-integer"):
        write_dicom_seg(volume, labels + 0.5, tmp_path / "x.dcm", class_names=PHANTOM_LABELS)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------- atomic writes


def test_failed_writes_leave_no_temporary_file(phantom, tmp_path: Path, monkeypatch):
    import kneeseg.inference.dicom_seg as dicom_seg

    volume, labels = phantom
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(OSError):  # the parent folder cannot be created
        write_dicom_seg(volume, labels, blocker / "seg.dcm", class_names=PHANTOM_LABELS)
    target_dir = tmp_path / "is_a_dir.dcm"
    target_dir.mkdir()
    with pytest.raises(OSError):  # the temporary file is complete but cannot replace a folder
        write_dicom_seg(volume, labels, target_dir, class_names=PHANTOM_LABELS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is_a_dir.dcm", "not_a_dir"]
    assert not any(target_dir.iterdir())

    good = write_dicom_seg(volume, labels, tmp_path / "seg.dcm", class_names=PHANTOM_LABELS)
    before = good.read_bytes()

    def crash(ds, path):  # injected failure half-way through writing
        Path(path).write_bytes(b"DICM partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(dicom_seg, "_write_dataset", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_dicom_seg(volume, labels, good, class_names=PHANTOM_LABELS)
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is_a_dir.dcm", "not_a_dir", "seg.dcm"]


# ---------------------------------------------------------------------------- validator


def test_validator_reports_errors(phantom, tmp_path: Path):
    volume, labels = phantom
    path = write_dicom_seg(volume, labels, tmp_path / "seg.dcm", class_names=PHANTOM_LABELS)
    assert all(not line.startswith("Error") for line in dciodvfy_messages(path))
    ds = pydicom.dcmread(path)
    del ds.SegmentSequence
    ds.save_as(tmp_path / "broken.dcm")
    errors = validate_dicom_seg(tmp_path / "broken.dcm")
    assert errors and all(line.startswith("Error") for line in errors)
    assert any("SegmentSequence" in line for line in errors)
    (tmp_path / "junk.dcm").write_bytes(b"not DICOM at all")
    assert validate_dicom_seg(tmp_path / "junk.dcm")
    mr_errors = validate_dicom_seg(volume.files[0])  # a valid MR image is still not a SEG
    assert any("not Segmentation Storage" in line for line in mr_errors)


def test_validator_needs_dciodvfy(tmp_path: Path, monkeypatch):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dicom3tools"):
        validate_dicom_seg(path)


# ---------------------------------------------------------------------------- other sources


def test_enhanced_multiframe_source(tmp_path: Path):
    frames = h.synthetic_volume(rows=32, columns=24, slices=5)
    sources = [pydicom.dcmread(p) for p in h.write_series(tmp_path / "single", frames)]
    enhanced = h.make_enhanced_mr(sources, tmp_path / "mf" / "mf.dcm", frame_order=[3, 0, 4, 1, 2])
    (volume,) = discover_series(enhanced).volumes
    assert [s.frame for s in volume.slices] == [1, 3, 4, 0, 2]
    labels = ellipsoid_labels(volume.shape, classes=2)
    out = write_dicom_seg(volume, labels, tmp_path / "seg.dcm", class_names={1: "femur", 2: "tibia"})
    assert_valid(out)
    (uid,) = source_uids(volume)
    assert referenced_instances(out) == (volume.series_uid, [uid])
    used = {s.frame for s, plane in zip(volume.slices, np.moveaxis(labels, 2, 0)) if plane.any()}
    assert referenced_frames(out) == {(uid, f) for f in used}
    np.testing.assert_array_equal(decode_seg(out, volume, [1, 2]), labels)


def test_one_echo_of_enhanced_multi_echo_file(tmp_path: Path):
    frames = h.synthetic_volume(rows=32, columns=24, slices=3)
    paths = h.write_series(tmp_path / "src", frames)
    sources = [pydicom.dcmread(p) for p in paths] * 2
    path = h.make_enhanced_mr(
        sources, tmp_path / "mf.dcm", frame_order=[5, 0, 3, 1, 4, 2], echo_times=[20.0] * 3 + [5.0] * 3
    )
    volumes = discover_series(path).volumes
    assert [v.echo_time for v in volumes] == [5.0, 20.0]
    volume = volumes[1]
    labels = ellipsoid_labels(volume.shape, classes=1)
    out = write_dicom_seg(volume, labels, tmp_path / "seg.dcm", class_names={1: "patella"})
    assert_valid(out)
    (uid,) = source_uids(volume)
    assert referenced_instances(out) == (volume.series_uid, [uid])
    # only this echo's frames, although the other echo's frames share their positions
    assert referenced_frames(out) == {(uid, s.frame) for s in volume.slices}
    np.testing.assert_array_equal(decode_seg(out, volume, [1]), labels)


def test_one_echo_of_multi_echo_series(tmp_path: Path):
    frames = h.synthetic_volume(rows=32, columns=24, slices=4)
    series, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for echo, te in ((1, 8.0), (2, 30.0)):
        h.write_series(
            tmp_path / "me", frames, series_uid=series, study_uid=study, prefix=f"E{echo}_",
            echo_time=te, echo_number=echo,
        )  # fmt: skip
    result = discover_series(tmp_path / "me")
    assert len(result.volumes) == 2
    volume = select_volume(result, echo=1)
    assert volume.echo_time == 30.0 and all(Path(p).name.startswith("E2_") for p in volume.files)
    labels = ellipsoid_labels(volume.shape, classes=2)
    out = write_dicom_seg(volume, labels, tmp_path / "seg.dcm", class_names={1: "femur", 2: "tibia"})
    assert_valid(out)
    series_uid, refs = referenced_instances(out)
    assert series_uid == series and sorted(refs) == sorted(source_uids(volume))  # only this echo
    np.testing.assert_array_equal(decode_seg(out, volume, [1, 2]), labels)


def test_slice_orientations_within_the_readers_tolerance_make_one_seg(tmp_path: Path):
    """One slice's ImageOrientationPatient 2e-5 off: the reader takes it as one series (tolerance
    1e-4), and the SEG is written for that series' one orientation instead of highdicom's refusal."""
    frames = h.synthetic_volume(rows=32, columns=24, slices=4)
    paths = h.write_series(tmp_path / "s", frames)
    ds = pydicom.dcmread(paths[2])
    iop = [float(v) for v in ds.ImageOrientationPatient]
    ds.ImageOrientationPatient = [iop[0] + 2e-5, *iop[1:]]
    ds.save_as(paths[2])
    volume = select_volume(discover_series(tmp_path / "s"))
    assert not volume.issues and volume.num_slices == 4
    labels = ellipsoid_labels(volume.shape, classes=1)
    out = write_dicom_seg(volume, labels, tmp_path / "seg.dcm", class_names={1: "femur"})
    assert_valid(out)
    np.testing.assert_array_equal(decode_seg(out, volume, [1]), labels)
    assert [float(v) for v in pydicom.dcmread(paths[2]).ImageOrientationPatient][0] == iop[0] + 2e-5  # file untouched


# ---------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_real_multi_echo_series_one_echo(shared_data: Path, tmp_path: Path):
    result = discover_series(shared_data / "dicom" / "knee-mese-t2")
    volume = select_volume(result, echo=3)
    assert volume.shape == (256, 256, 24)
    labels = ellipsoid_labels(volume.shape, classes=2)
    out = write_dicom_seg(volume, labels, tmp_path / "mese.dcm", class_names={1: "femur", 2: "acl"}, uid_seed="mese")
    assert_valid(out)  # the source's placeholder dates (00010101) are not copied
    series_uid, refs = referenced_instances(out)
    assert series_uid == volume.series_uid and sorted(refs) == sorted(source_uids(volume))
    assert len(refs) == 24
    np.testing.assert_array_equal(decode_seg(out, volume, [1, 2]), labels)


@pytest.mark.shared_data
def test_real_dess_series(shared_data: Path, tmp_path: Path):
    (volume,) = discover_series(shared_data / "dicom" / "knee-dess-sag").volumes
    assert volume.shape == (512, 512, 80)
    labels = ellipsoid_labels(volume.shape, classes=3)
    out = write_dicom_seg(volume, labels, tmp_path / "dess_seg.dcm", class_names={1: "femur", 2: "tibia", 3: "patella"})
    assert_valid(out)  # the source has no PatientID element: the SEG gets an empty one
    series_uid, refs = referenced_instances(out)
    assert series_uid == volume.series_uid and sorted(refs) == sorted(source_uids(volume))
    np.testing.assert_array_equal(decode_seg(out, volume, [1, 2, 3]), labels)
