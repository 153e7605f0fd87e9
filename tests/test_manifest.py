"""Manifests: pairing, seeded patient-grouped splits, error messages, and the committed
knee-ACL manifest regenerated from the shared data with the command in its README."""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from kneeseg.data.manifest import (
    ManifestError,
    build_manifest,
    find_image_mask_pairs,
    write_manifest,
)
from kneeseg.data.splits import assign_groups, split_counts

PROJECT = Path(__file__).resolve().parents[1]
KEYS = ("training", "validation", "test")


def _touch(root: Path, rel: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@pytest.fixture
def msd_root(tmp_path: Path) -> Path:
    """40 images of 12 patients (1-6 images each), nnU-Net style names ``p<id>_<n>``."""
    rng = np.random.default_rng(0)
    for p in range(12):
        for n in range(int(rng.integers(1, 7))):
            _touch(tmp_path, f"imagesTr/p{p:02d}_{n}.nii.gz")
            _touch(tmp_path, f"labelsTr/p{p:02d}_{n}.nii.gz")
    return tmp_path


def _parts(manifest: dict) -> dict:
    return {k: manifest.get(k, []) for k in KEYS}


def test_split_counts_follow_the_ratios():
    assert split_counts(93, (8, 1, 1)) == [75, 9, 9]
    assert split_counts(20, (8, 1, 1)) == [16, 2, 2]
    assert split_counts(10, (7, 2, 1)) == [7, 2, 1]
    assert split_counts(3, (8, 1, 1)) == [1, 1, 1]  # one per part once N >= 3
    assert split_counts(2, (8, 1, 1)) == [2, 0, 0]
    assert split_counts(50, (1, 1, 0)) == [25, 25, 0]


def test_singleton_split_has_exact_counts(tmp_path: Path):
    for i in range(20):
        _touch(tmp_path, f"imgs/{i}.png")
    m = build_manifest(tmp_path, image_glob="imgs/*.png", mask_glob=None, seed=5)
    assert [len(m[k]) for k in KEYS] == [16, 2, 2] == m["split"]["counts"]
    assert m["tensorImageSize"] == "2D" and set(m["training"][0]) == {"image"}
    assert m["numTraining"] == 16


def test_patients_never_span_parts_and_ratios_hold(msd_root: Path):
    m = build_manifest(msd_root, patient_key=r"^imagesTr/(p\d+)_", seed=1)
    owner = {}
    for key, entries in _parts(m).items():
        for e in entries:
            assert re.match(r"imagesTr/p\d+_\d+\.nii\.gz$", e["image"])
            assert e["label"] == e["image"].replace("imagesTr", "labelsTr")
            assert owner.setdefault(e["patient"], key) == key, f"patient {e['patient']} in two parts"
    sizes = Counter(e["patient"] for entries in _parts(m).values() for e in entries)
    total = sum(sizes.values())
    for key, ratio in zip(KEYS, (0.8, 0.1, 0.1)):
        assert len(m[key]) >= 1
        assert abs(len(m[key]) - ratio * total) <= max(sizes.values())
    assert m["split"]["patients"] == [len({e["patient"] for e in m[k]}) for k in KEYS]


def test_same_seed_same_split_different_seed_different(msd_root: Path):
    key = r"^imagesTr/(p\d+)_"
    a, b = (build_manifest(msd_root, patient_key=key, seed=3) for _ in range(2))
    assert _parts(a) == _parts(b)
    others = [_parts(build_manifest(msd_root, patient_key=key, seed=s)) for s in (4, 5, 6)]
    assert any(o != _parts(a) for o in others)
    ids = [str(i) for i in range(50)]
    assert assign_groups(ids, seed=0) == assign_groups(list(reversed(ids)), seed=0)  # order-independent
    assert assign_groups(ids, seed=0) != assign_groups(ids, seed=1)


def test_datalist_loads_with_base_dir(msd_root: Path, tmp_path_factory):
    from monai.data import load_decathlon_datalist

    out = write_manifest(build_manifest(msd_root, patient_key=r"(p\d+)"), tmp_path_factory.mktemp("m") / "d.json")
    raw = json.loads(out.read_text())
    assert all(not Path(e["image"]).is_absolute() for e in raw["training"])
    items = load_decathlon_datalist(out, data_list_key="validation", base_dir=msd_root)
    assert items and all(Path(i["image"]).is_file() and Path(i["label"]).is_file() for i in items)


def test_pairs_by_wildcards(tmp_path: Path):
    for case in ("3", "12", "100"):
        _touch(tmp_path, f"cases/{case}/img.png")
        _touch(tmp_path, f"cases/{case}/mask.png")
    pairs = find_image_mask_pairs(tmp_path, "cases/*/img.png", "cases/*/mask.png")
    assert pairs == [{"image": f"cases/{c}/img.png", "label": f"cases/{c}/mask.png"} for c in ("3", "12", "100")]
    # globs spanning folders pair the same way
    assert find_image_mask_pairs(tmp_path, "**/img.png", "**/mask.png") == [
        {"image": f"cases/{c}/img.png", "label": f"cases/{c}/mask.png"} for c in ("3", "12", "100")
    ]
    with pytest.raises(ManifestError, match="same wildcards"):
        find_image_mask_pairs(tmp_path, "cases/*/img.png", "**/*/mask.png")


def test_dicom_patient_key_groups_by_header(tmp_path: Path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    for p in range(6):
        for s in range(3):
            meta = FileMetaDataset()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
            meta.MediaStorageSOPInstanceUID = generate_uid()
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = meta.MediaStorageSOPClassUID
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.PatientID = f"PAT{p}"
            path = tmp_path / f"series{p}_{s}" / "1.dcm"  # folder names do not reveal the patient
            path.parent.mkdir()
            ds.save_as(path, enforce_file_format=True)
    m = build_manifest(tmp_path, image_glob="*/*.dcm", mask_glob="", patient_key="dicom:PatientID", seed=2)
    owner = {}
    for key, entries in _parts(m).items():
        for e in entries:
            assert owner.setdefault(e["patient"], key) == key
    assert len(owner) == 6 and all(len(m[k]) > 0 for k in KEYS)
    with pytest.raises(ManifestError, match="not a DICOM keyword"):
        build_manifest(tmp_path, image_glob="*/*.dcm", mask_glob="", patient_key="dicom:NoSuchKeyword")


@pytest.mark.parametrize(
    "ratios, message",
    [
        ((-1, 1, 1), "non-negative"),
        ((0, 1, 1), "training ratio"),
        ((8, 1), "expected 3 ratios"),
        ((float("nan"), 1, 1), "finite"),
        (("a", 1, 1), "must be numbers"),
    ],
)
def test_rejects_bad_ratios(msd_root: Path, ratios, message):
    with pytest.raises(ManifestError, match=message):
        build_manifest(msd_root, ratios=ratios)


def test_rejects_bad_roots_and_unmatched_files(tmp_path: Path):
    with pytest.raises(ManifestError, match="does not exist"):
        build_manifest(tmp_path / "missing")
    with pytest.raises(ManifestError, match="contains no files"):
        build_manifest(tmp_path)
    _touch(tmp_path, "imagesTr/a.nii.gz")
    _touch(tmp_path, "imagesTr/b.nii.gz")
    _touch(tmp_path, "labelsTr/a.nii.gz")
    with pytest.raises(ManifestError, match=r"no files under .* match image glob '\*\.png'"):
        build_manifest(tmp_path, image_glob="*.png")
    with pytest.raises(ManifestError, match=r"1 image\(s\) .* have no mask .* imagesTr/b\.nii\.gz"):
        build_manifest(tmp_path)
    with pytest.raises(ManifestError, match="does not match path imagesTr/a.nii.gz"):
        build_manifest(tmp_path, mask_glob=None, patient_key=r"patient(\d+)")
    with pytest.raises(ManifestError, match="seed must be a non-negative integer"):
        build_manifest(tmp_path, mask_glob=None, seed=-1)


# ----------------------------------------------------------------------------- knee-ACL manifest


def _readme_command() -> list:
    text = (PROJECT / "data_manifests" / "README.md").read_text()
    block = re.search(r"```bash\n(kneeseg data manifest \.\./shared/data/knee-acl .*?)```", text, re.S)
    assert block, "data_manifests/README.md must document the knee_acl.json command"
    return shlex.split(block.group(1).replace("\\\n", " "))


@pytest.mark.shared_data
def test_knee_acl_manifest_regenerates_from_shared_data(shared_data: Path, tmp_path: Path):
    from kneeseg.cli import main

    argv = _readme_command()
    assert argv[:3] == ["kneeseg", "data", "manifest"] and argv[3] == "../shared/data/knee-acl"
    out_at = argv.index("--out") + 1
    assert argv[out_at] == "data_manifests/knee_acl.json"
    root = shared_data / "knee-acl"
    argv[3], argv[out_at] = str(root), str(tmp_path / "knee_acl.json")
    assert main(argv[1:]) == 0
    committed = PROJECT / "data_manifests" / "knee_acl.json"
    assert (tmp_path / "knee_acl.json").read_text() == committed.read_text()

    m = json.loads(committed.read_text())
    assert str(root) not in committed.read_text()  # relative paths only
    ids = {key: [e["patient"] for e in m[key]] for key in ("training", "validation", "train_811", "val_811", "test_811")}
    for key, file in (("training", "train.txt"), ("validation", "val.txt")):
        assert sorted(ids[key]) == sorted((root / file).read_text().split())
    assert (len(ids["training"]), len(ids["validation"])) == (77, 16)
    assert [len(ids[k]) for k in ("train_811", "val_811", "test_811")] == [75, 9, 9]
    everyone = ids["train_811"] + ids["val_811"] + ids["test_811"]
    assert len(set(everyone)) == 93 == len(everyone)
    assert m["split"]["seed"] == 0 and m["split"]["keys"] == ["train_811", "val_811", "test_811"]
    for key in ids:
        for e in m[key]:
            assert not Path(e["image"]).is_absolute()
            assert (root / e["image"]).is_file() and (root / e["label"]).is_file()
