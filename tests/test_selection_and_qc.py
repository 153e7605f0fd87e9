"""Knee-only selection and quality checks in batch inference, and the 3D cleanup they rely on.

A folder mixing a knee series with a head series (BodyPartExamined BRAIN, even sagittal), a
Siemens MOSAIC file and a diffusion series must give skip rows with the true reasons and no
masks; every ``ok`` row carries a ``qc`` verdict from the bundle's declared checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import KeepLargestConnectedComponent

from dicom_helpers import SAGITTAL_IOP, save_dataset
from dicom_selection_helpers import make_mosaic, set_attributes, write_diffusion_series, write_head_series
from inference_helpers import write_oriented_series
from kneeseg.inference.batch import predict_folder
from kneeseg.inference.planning import plan_work
from kneeseg.transforms.postprocess import count_components, keep_largest_components
from kneeseg.inference.qc import measure_class, quality_check
from kneeseg.inference.results import read_results_csv


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    knee = (rng.random((40, 48)) * 200).astype(np.uint16)
    write_oriented_series(root / "knee_untagged", knee, "IP", "PI", slices=3)
    tagged = write_oriented_series(root / "knee_tagged", knee, "IP", "AI", slices=3, series_description="SAG PD")
    set_attributes(sorted(tagged.glob("*.dcm")), BodyPartExamined="KNEE")
    write_head_series(root / "head", body_part="BRAIN", orientation=SAGITTAL_IOP, series_description="SAG T1")
    save_dataset(make_mosaic(tiles=9), root / "mosaic" / "MOSAIC0001.dcm")
    diff = write_diffusion_series(root / "dwi", series_description="SAG DWI")
    set_attributes(diff, ImageOrientationPatient=list(SAGITTAL_IOP))
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from kneeseg.networks import build_network

    torch.manual_seed(0)
    net = build_network("csam_unet", spatial_dims=2, in_channels=1, out_channels=2, width=4)
    path = tmp_path_factory.mktemp("tiny") / "model.pt"
    torch.save({"model": net.state_dict()}, path)
    return path


def test_planner_skips_other_body_parts_mosaic_and_diffusion_with_one_row_each(mixed_folder):
    items = plan_work(mixed_folder)
    by_source = {}
    for it in items:
        by_source.setdefault(it.row["source"].split("/")[0], []).append(it)
    assert sorted(by_source) == ["dwi", "head", "knee_tagged", "knee_untagged", "mosaic"]
    assert all(len(v) == 1 for v in by_source.values()), {k: len(v) for k, v in by_source.items()}
    head = by_source["head"][0]
    assert head.status == "skipped"
    assert head.reason.startswith("body part BRAIN (BodyPartExamined); the model segments KNEE images")
    assert "--any-body-part" in head.reason
    mosaic = by_source["mosaic"][0]
    assert mosaic.status == "skipped" and mosaic.reason.startswith("Siemens MOSAIC image (9 images tiled in one file)")
    dwi = by_source["dwi"][0]
    assert dwi.status == "skipped" and "diffusion-weighted series: 4 volumes, b = 0, 1000 s/mm^2" in dwi.reason
    untagged, tagged = by_source["knee_untagged"][0], by_source["knee_tagged"][0]
    assert untagged.todo and untagged.row["notes"] == "BodyPartExamined missing; assumed knee"
    assert tagged.todo and tagged.row["notes"] == ""
    # --any-body-part lets the head series through (sagittal), noting its body part
    head_any = [it for it in plan_work(mixed_folder, any_body_part=True) if it.row["source"].startswith("head")]
    assert head_any[0].todo and "BRAIN" in head_any[0].row["notes"]


def test_echo_beyond_the_series_gives_a_row_not_silence(shared_data, tmp_path):
    import os

    (tmp_path / "mese").mkdir()
    for f in sorted((shared_data / "dicom" / "knee-mese-t2").iterdir()):
        os.symlink(f, tmp_path / "mese" / f.name)
    items = plan_work(tmp_path, echo=11)
    assert len(items) == 1 and items[0].status == "skipped"
    assert items[0].reason == "--echo 11: the series has 8 echoes (0-7)"
    # the echo that is segmented says so, and that the other 7 are not
    (item,) = plan_work(tmp_path, echo=2)
    assert item.todo and item.row["notes"].endswith("; echo 2 of 8 segmented (--echo all segments every echo)")


def test_a_series_beside_an_unreadable_file_says_so_in_its_row(tmp_path):
    """The series' row names the broken file beside it, and the file's row names the series."""
    from dicom_helpers import synthetic_volume, write_series

    paths = write_series(tmp_path / "knee", synthetic_volume(rows=16, columns=16, slices=4, seed=3), orientation=SAGITTAL_IOP)
    broken = tmp_path / "knee" / "IM9999.dcm"
    broken.write_bytes(paths[0].read_bytes()[:700])  # cut inside its header: no pixel data
    items = plan_work(tmp_path, body_part=None)
    (series,) = [it for it in items if it.todo]
    (bad,) = [it for it in items if it.status == "failed"]
    assert series.row["notes"].startswith(
        "segmented from 4 files; 1 unreadable file(s) beside them, the series may lack a slice: IM9999.dcm: "
    ), series.row["notes"]
    assert bad.row["series_uid"] == series.row["series_uid"] != ""


def test_batch_run_writes_skip_rows_without_masks_and_qc_for_ok_rows(mixed_folder, tiny_model, tmp_path):
    out = tmp_path / "out"
    res = predict_folder(mixed_folder, out, ckpt=tiny_model, overrides={"width": 4, "spatial_size": 64},
                         runtime="eager", progress=lambda line: None)  # fmt: skip
    rows = {r["source"].split("/")[0]: r for r in read_results_csv(res.manifest)}
    for name in ("head", "mosaic", "dwi"):
        assert rows[name]["status"] == "skipped" and rows[name]["nifti"] == "" and rows[name]["qc"] == ""
    for name in ("knee_untagged", "knee_tagged"):
        r = rows[name]
        assert r["status"] == "ok", r
        assert r["qc"] == "pass" or r["qc"].startswith("review: "), r["qc"]
        assert (out / r["nifti"]).is_file() and (out / r["preview"]).is_file()
        assert float(r["volume_ml_ligament"]) >= 0.0 and r["components_ligament"].isdigit()  # a count, not 2.0
    written = {p.parent.name for p in out.rglob("seg.nii.gz")}
    assert len(written) == 2  # only the knee series have masks
    manifest = (out / "manifest.csv").read_text().splitlines()
    assert manifest[0].startswith("status,reason,qc,notes,")
    assert len(manifest) == 1 + len(res.rows)


# ---------------------------------------------------------------------------- the checks


def test_quality_check_measures_and_flags():
    affine = np.diag([-0.5, -0.5, 2.0, 1.0])  # RAS; 0.5 mm in-plane, 2 mm slices along z
    labels = np.zeros((40, 40, 20), np.uint8)
    labels[10:20, 10:30, 5:9] = 1  # 10 x 20 x 4 voxels = 800 x 0.5 uL = 0.4 mL; 4 slices x 2 mm = 8 mm
    conf = np.full(labels.shape, 255, np.uint8)
    conf[labels == 1] = 153  # probability 0.6
    m = measure_class(labels == 1, conf, affine, np.array([0.0, 0.0, 1.0]))
    assert m["volume_ml"] == pytest.approx(0.4)
    assert m["through_plane_mm"] == pytest.approx(8.0)
    assert m["confidence"] == pytest.approx(0.6)
    checks = {"ligament": {"volume_ml": [0.5, 5], "max_raw_components": 1, "max_through_plane_mm": 6,
                           "min_confidence": 0.7}}  # fmt: skip
    qc = quality_check(labels, conf, affine, {0: "background", 1: "ligament"}, checks, np.array([0.0, 0.0, 1.0]), {1: 3})
    assert qc.verdict == (
        "review: ligament volume 0.40 mL outside 0.5-5 mL; ligament: 3 3D components before cleanup (max 1); "
        "ligament spans 8.0 mm across slices (max 6); ligament mean confidence 0.60 (min 0.7)"
    )
    ok = quality_check(labels, None, affine, {0: "background", 1: "ligament"}, {"1": {"volume_ml": [0.1, 1]}},
                       np.array([0.0, 0.0, 1.0]))  # fmt: skip
    assert ok.verdict == "pass"
    empty = quality_check(np.zeros_like(labels), None, affine, {0: "bg", 1: "acl"}, {"1": {"volume_ml": [0.5, 5]}},
                          np.array([0.0, 0.0, 1.0]))  # fmt: skip
    assert empty.verdict == "review: no acl found"
    with pytest.raises(ValueError, match="unknown check"):
        quality_check(labels, None, affine, {0: "bg", 1: "acl"}, {"1": {"volume": 1}}, np.array([0.0, 0.0, 1.0]))


def test_largest_component_equals_monai_and_counts_components():
    """The fast path's 3D cleanup computes what the bundle's post_transforms (MONAI) computes."""
    rng = np.random.default_rng(4)
    labels = np.zeros((30, 28, 12), np.uint8)
    labels[2:10, 2:10, 1:5] = 1  # 256 voxels
    labels[20:23, 20:24, 8:10] = 1  # 24 voxels
    labels[15, 3, 3] = 1  # 1 voxel
    labels[12:18, 12:18, 5:8] = 2  # another class, 2 components
    labels[25:27, 1:3, 0:2] = 2
    noise = rng.random(labels.shape) > 0.995
    labels[noise & (labels == 0)] = 1
    kept, counts = keep_largest_components(labels, [1, 2])
    monai = KeepLargestConnectedComponent(applied_labels=[1, 2], is_onehot=False, independent=True)
    expected = monai(torch.as_tensor(labels[None]))[0].numpy()
    assert np.array_equal(kept, expected)
    assert counts[2] == 2 and counts[1] >= 3
    assert count_components(kept, [1, 2]) == {1: 1, 2: 1}
