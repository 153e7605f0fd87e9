"""Batch inference over a DICOM folder tree: real discovery, real model, real files, real dciodvfy.

The tree (see ``inference_helpers.build_pacs_tree``) mixes unseen phantom patients, the shared
knee DESS and multi-echo series, a CT file, an axial series, a corrupt series, an undecodable
series, a series with a missing slice and a non-DICOM file.
"""

from __future__ import annotations

import collections
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from inference_helpers import PHANTOM_MODEL, build_pacs_tree, dice

from kneeseg.cli import main as cli_main
from kneeseg.data.dicom.discovery import discover_series
from kneeseg.data.dicom.loading import load_volume
from kneeseg.inference.batch import predict_folder
from kneeseg.inference.dicom_seg import validate_dicom_seg
from kneeseg.inference.planning import plan_work
from kneeseg.inference.results import MANIFEST_COLUMNS, read_results_csv
from kneeseg.inference.segmenter import SliceSegmenter, load_segmenter

OVERRIDES = [f"{k}={v}" for k, v in PHANTOM_MODEL.items()]
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("pacs") / "tree"
    info = build_pacs_tree(root, shared_data)
    info["root"] = root
    return info


@pytest.fixture(scope="module")
def batch_run(pacs, phantom_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "out"
    t0 = time.perf_counter()
    code = cli_main(["infer", str(pacs["root"]), "-o", str(out), "--ckpt", str(phantom_model),  # default runtime: auto
                     "--quiet", *sum((["--set", o] for o in OVERRIDES), [])])  # fmt: skip
    return {"out": out, "code": code, "seconds": time.perf_counter() - t0}


def _rows_by_source(out: Path) -> dict:
    rows = read_results_csv(out / "manifest.csv")
    by: dict = {}
    for r in rows:
        top = r["source"].split("/")[0]
        by.setdefault(top, []).append(r)
    return by


def test_manifest_rows_one_by_one(batch_run, pacs):
    out = batch_run["out"]
    assert batch_run["code"] == 1, "failed series must give exit status 1"
    rows = read_results_csv(out / "manifest.csv")
    header = list(rows[0].keys())
    assert header[: len(MANIFEST_COLUMNS)] == MANIFEST_COLUMNS
    assert header[len(MANIFEST_COLUMNS):] == ["volume_ml_ligament", "components_ligament", "extent_mm_ligament",
                                             "confidence_ligament"]  # fmt: skip
    by = _rows_by_source(out)
    assert sorted(by) == sorted(["phantom", "dess", "mese", "ct", "axial", "corrupt", "undecodable", "missing", "notes"])

    phantom = by["phantom"]
    assert len(phantom) == 4 and all(r["status"] == "ok" for r in phantom)
    assert len({r["patient_id"] for r in phantom}) == 4
    for r in phantom:
        assert r["modality"] == "MR" and r["plane"] == "sagittal" and int(r["slices"]) == 16
        assert float(r["seconds"]) > 0 and float(r["volume_ml_ligament"]) > 0
        assert r["qc"] == "pass" or r["qc"].startswith("review: ")
        assert r["notes"] == ""  # the phantom writes BodyPartExamined KNEE
        for key in ("nifti", "dicom_seg", "preview"):
            assert (out / r[key]).is_file(), r[key]

    (dess,) = by["dess"]
    assert dess["status"] == "ok" and dess["slices"] == "80" and dess["rows"] == "512" and dess["plane"] == "sagittal"
    (mese,) = by["mese"]  # one row per series: echo 0 of 8
    assert mese["status"] == "ok" and mese["echo_index"] == "0" and mese["slices"] == "24"

    (ct,) = by["ct"]
    assert ct["status"] == "skipped" and "modality CT" in ct["reason"]
    (axial,) = by["axial"]
    assert axial["status"] == "skipped" and axial["plane"] == "axial" and "trained on sagittal" in axial["reason"]

    corrupt = {r["status"]: r for r in by["corrupt"]}
    assert len(by["corrupt"]) == 2  # the truncated file, and the series left with a gap
    assert "truncated" in corrupt["failed"]["reason"] or any("truncated" in r["reason"] for r in by["corrupt"])
    assert all(r["status"] == "failed" for r in by["corrupt"])
    assert any("missing slice" in r["reason"] for r in by["corrupt"])
    (undecodable,) = by["undecodable"]
    assert undecodable["status"] == "failed" and "cannot decode pixel data" in undecodable["reason"]
    assert "IM000" in undecodable["reason"]  # names the file
    (missing,) = by["missing"]
    assert missing["status"] == "failed" and "missing slice" in missing["reason"]
    (notes,) = by["notes"]
    assert notes["status"] == "skipped" and notes["reason"] == "not a DICOM image file: README.txt"
    for r in rows:
        if r["status"] != "ok":
            assert r["nifti"] == r["dicom_seg"] == r["preview"] == ""


def test_rows_name_the_runtime_and_split_their_seconds(batch_run):
    """``auto`` resolves once (onnx on a CPU without native bf16); every segmented row names it;
    the record splits ``seconds`` into its stages, which add up."""
    import json

    from kneeseg.execution import cpu_supports_bf16

    out = batch_run["out"]
    ok = [r for r in read_results_csv(out / "manifest.csv") if r["status"] == "ok"]
    runtimes = {r["runtime"] for r in ok}
    assert len(runtimes) == 1 and runtimes <= {"bf16", "onnx"}
    if not cpu_supports_bf16():
        assert runtimes == {"onnx"}
    records = [json.loads(p.read_text()) for p in (out / ".kneeseg" / "records").glob("*.json")]
    done = [r for r in records if r["status"] == "ok"]
    assert len(done) == len(ok)
    for rec in done:
        stages = rec["stage_seconds"]
        assert set(stages) == {"read", "preprocess", "network", "postprocess", "write"}
        assert all(v >= 0 for v in stages.values()) and stages["network"] > 0
        assert abs(sum(stages.values()) - float(rec["seconds"])) < 0.02
        assert "capability" in rec["runtime_reason"]


def test_nifti_geometry_matches_the_series(batch_run, pacs):
    out = batch_run["out"]
    volumes = {v.series_uid: v for v in discover_series(pacs["root"]).volumes if v.echo_index == 0}
    ok = [r for r in read_results_csv(out / "manifest.csv") if r["status"] == "ok"]
    assert len(ok) == 6
    for r in ok:
        vol = volumes[r["series_uid"]]
        img = nib.load(out / r["nifti"])
        assert img.shape == vol.shape
        np.testing.assert_allclose(img.affine, vol.affine, atol=1e-4)
        assert img.get_data_dtype() == np.uint8
        labels = np.asarray(img.dataobj)
        spacing = np.prod(vol.spacing) / 1000.0
        assert float(r["volume_ml_ligament"]) == pytest.approx((labels == 1).sum() * spacing, abs=1e-3)


def test_phantom_masks_reach_dice_085(batch_run, pacs):
    out = batch_run["out"]
    scores = []
    for r in read_results_csv(out / "manifest.csv"):
        if r["source"].startswith("phantom/"):
            case = r["source"].split("/")[1]
            truth = np.asarray(nib.load(pacs["phantom"][case]["label"]).dataobj) == 4
            pred = np.asarray(nib.load(out / r["nifti"]).dataobj)
            scores.append(dice(pred, truth))
    assert len(scores) == 4
    assert float(np.mean(scores)) >= 0.85, scores
    assert min(scores) >= 0.75, scores


def test_dicom_seg_passes_dciodvfy_and_matches_the_nifti(batch_run):
    out = batch_run["out"]
    ok = [r for r in read_results_csv(out / "manifest.csv") if r["status"] == "ok"]
    for r in ok:
        seg_path = out / r["dicom_seg"]
        assert validate_dicom_seg(seg_path) == [], r["source"]
        seg = pydicom.dcmread(seg_path)
        assert seg.Modality == "SEG" and seg.SeriesInstanceUID != r["series_uid"]
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == r["series_uid"]
        (segment,) = seg.SegmentSequence
        assert segment.SegmentLabel == "ligament" and segment.SegmentAlgorithmType == "AUTOMATIC"
        labels = np.asarray(nib.load(out / r["nifti"]).dataobj)
        n_frames = int(getattr(seg, "NumberOfFrames", 0) or 0)
        assert n_frames == int((labels.reshape(-1, labels.shape[-1]) > 0).any(axis=0).sum())


def test_rerun_resumes_and_changes_nothing(batch_run, pacs, phantom_model):
    out = batch_run["out"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix in (".gz", ".dcm", ".png")}
    result = predict_folder(pacs["root"], out, ckpt=phantom_model, overrides=PHANTOM_MODEL, progress=lambda s: None)
    assert result.resumed == 6 and result.exit_code == 1
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix in (".gz", ".dcm", ".png")}
    assert after == before


def test_series_filter_and_formats(pacs, phantom_model, tmp_path):
    result = predict_folder(
        pacs["root"], tmp_path / "o", ckpt=phantom_model, overrides=PHANTOM_MODEL, runtime="eager",
        formats=["nifti"], series_filter="^DESS$|HiRes", progress=lambda s: None,
    )  # fmt: skip
    ok = [r for r in result.rows if r["status"] == "ok"]
    assert [r["source"] for r in ok] == ["dess"]
    assert ok[0]["dicom_seg"] == ok[0]["preview"] == "" and (tmp_path / "o" / ok[0]["nifti"]).is_file()
    filtered = [r for r in result.rows if "does not match --series-filter" in r.get("reason", "")]
    assert len(filtered) == 7  # 4 phantom, mese, axial ("AX PD") and undecodable


def test_plan_work_all_echoes_and_any_plane(pacs):
    items = plan_work(pacs["root"], echo="all", any_plane=True)
    mese = [it for it in items if it.row["source"].startswith("mese")]
    assert sorted(it.row["echo_index"] for it in mese) == list(range(8))
    axial = [it for it in items if it.row["source"] == "axial"]
    assert axial[0].todo


def _tiny_segmenter(runtime: str, **kw) -> SliceSegmenter:
    from kneeseg.networks import build_network

    torch.manual_seed(0)
    net = build_network("csam_unet", spatial_dims=2, in_channels=1, out_channels=2, width=4)
    return SliceSegmenter(net, 64, runtime=runtime, **kw)


def test_fast_path_equals_the_monai_pipeline(pacs):
    """The segmenter's preprocessing and inversion compute what the bundle's MONAI chain computes."""
    from monai.inferers import SliceInferer

    from kneeseg.transforms import infer_transforms, post_transforms

    case = sorted((pacs["root"] / "phantom").iterdir())[0]
    seg = _tiny_segmenter("eager", slice_orientation={"right": "inferior", "down": "posterior"})
    image, meta = load_volume(discover_series(case).volumes[0])
    prepared = seg.preprocess(image, meta["affine"])
    chain = infer_transforms("image", 64, spatial_dims=3, slice_orientation=seg.slice_orientation)
    data = chain({"image": str(case)})
    ref = data["image"].as_tensor()[0].permute(2, 0, 1)
    # equal up to float rounding: CLAHE bins its input, so a last-bit difference in the blur
    # (vectorised kernels differ between CPUs) can move a rare pixel by one histogram step
    diff = (prepared.slices[:, 0] - ref).abs()
    assert diff.shape == ref.shape and float(diff.max()) < 0.05
    assert float((diff > 1e-5).float().mean()) < 1e-3
    with torch.inference_mode():
        data["pred"] = SliceInferer(roi_size=[64, 64], spatial_dim=2, sw_batch_size=4, progress=False)(
            data["image"][None], seg.network
        )[0]
    expected = post_transforms(chain)(data)["pred"][0].numpy().astype(np.uint8)
    labels = seg.predict(prepared)
    assert labels.shape == image.shape
    assert (labels != expected).mean() < 1e-4


@pytest.mark.parametrize("runtime", ["bf16", "onnx"])
def test_runtimes_agree_with_eager(runtime, phantom_model, pacs, tmp_path):
    case = sorted((pacs["root"] / "phantom").iterdir())[0]
    image, meta = load_volume(discover_series(case).volumes[0])
    affine = meta["affine"]
    eager, _ = load_segmenter(ckpt=phantom_model, overrides=PHANTOM_MODEL, runtime="eager")
    other, _ = load_segmenter(ckpt=phantom_model, overrides=PHANTOM_MODEL, runtime=runtime, onnx_cache=tmp_path)
    a, b = eager(image, affine), other(image, affine)
    assert a.any() and dice(a, b) >= 0.99
    if runtime == "onnx":
        assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_bad_inputs_are_clear_errors(tmp_path, phantom_model):
    seg = _tiny_segmenter("eager")
    with pytest.raises(ValueError, match="NaN/Inf"):
        seg.preprocess(np.full((8, 8, 2), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="runtime must be one of"):
        _tiny_segmenter("tensorrt")
    with pytest.raises(FileNotFoundError, match="input not found"):
        predict_folder(tmp_path / "nope", tmp_path / "o", ckpt=phantom_model, overrides=PHANTOM_MODEL)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        predict_folder(tmp_path, tmp_path / "o", ckpt=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="does not match the bundle network"):
        predict_folder(tmp_path, tmp_path / "o", ckpt=phantom_model)  # trained at width 8, bundle default 16
    assert cli_main(["infer", str(tmp_path), "-o", str(tmp_path / "o"), "--formats", "jpeg"]) == 2


# ----------------------------------------------------------------------------- kill and resume


def _infer_cmd(root: Path, out: Path, ckpt: Path) -> list:
    return [sys.executable, "-m", "kneeseg.cli", "infer", str(root), "-o", str(out), "--ckpt", str(ckpt),
            "--runtime", "eager", *sum((["--set", o] for o in OVERRIDES), [])]  # fmt: skip


def test_rows_decided_at_discovery_are_listed_on_the_console(tmp_path, phantom_model):
    """Not only a count: each file or series skipped or failed at discovery gets its console line."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "README.txt").write_text("export notes\n")
    (root / "sub" / "IM0001.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")  # a header cut short
    proc = subprocess.run(_infer_cmd(root, tmp_path / "out", phantom_model), capture_output=True, text=True)
    rows = read_results_csv(tmp_path / "out" / "manifest.csv")
    assert len(rows) == 2 and all(r["status"] in ("skipped", "failed") for r in rows), rows
    assert proc.returncode == (1 if any(r["status"] == "failed" for r in rows) else 0), proc.stderr[-2000:]
    assert "2 skipped/failed at discovery" in proc.stderr
    for r in rows:
        assert f"  {r['status']}: {r['source']}: {r['reason']}" in proc.stderr, (r, proc.stderr[-2000:])


def test_killed_run_resumes_to_the_same_result(tmp_path, phantom_model):
    from inference_helpers import PHANTOM_SHAPE, output_snapshot

    from kneeseg.phantom import generate_phantom

    generate_phantom(tmp_path / "src", cases=5, seed=21, shape=PHANTOM_SHAPE, png=False)
    root = tmp_path / "src" / "dicom"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    reference = subprocess.run(_infer_cmd(root, tmp_path / "ref", phantom_model), capture_output=True, text=True, env=env)
    assert reference.returncode == 0, reference.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_infer_cmd(root, out, phantom_model), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)  # fmt: skip
    records = out / ".kneeseg" / "records"
    deadline = time.time() + 300
    while time.time() < deadline and len([p for p in records.glob("*.json")]) < 2:
        time.sleep(0.05)
    time.sleep(0.3)  # part way into the next series
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(records.glob("*.json")))
    assert 0 < done_before < 5, f"kill landed outside the run ({done_before} series recorded)"
    assert not (out / "manifest.csv").exists()

    rerun = subprocess.run(_infer_cmd(root, out, phantom_model), capture_output=True, text=True, env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{done_before} series already done" in rerun.stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "temporary files left"
    assert output_snapshot(out) == output_snapshot(tmp_path / "ref")


@pytest.fixture(scope="module")
def five_series(tmp_path_factory, phantom_model):
    """Five phantom series and what an uninterrupted ``kneeseg infer`` writes for them."""
    from kneeseg.phantom import generate_phantom
    from inference_helpers import PHANTOM_SHAPE

    base = tmp_path_factory.mktemp("five")
    generate_phantom(base / "src", cases=5, seed=22, shape=PHANTOM_SHAPE, png=False)
    root = base / "src" / "dicom"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    reference = subprocess.run(_infer_cmd(root, base / "ref", phantom_model), capture_output=True, text=True, env=env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    return root, base / "ref", reference


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_writes_its_manifest_says_so_and_resumes_to_the_same_result(sig, tmp_path, phantom_model,
                                                                                      five_series):
    """Ctrl-C (or SIGTERM) part way: exit 130, one line saying how far it got and how to resume, the
    manifest written from the records (the rest ``interrupted``), nothing half-written; a rerun
    completes to what an uninterrupted run writes."""
    from inference_helpers import output_snapshot

    root, ref, reference = five_series
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # one progress line per series with the count and the time left
    assert re.search(r"\[1/5, (\d+ s|\d+ min \d\d s) left\] ok ", reference.stderr), reference.stderr[-2000:]
    assert "[5/5] ok " in reference.stderr
    out = tmp_path / "stopped"
    proc = subprocess.Popen(_infer_cmd(root, out, phantom_model), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    records = out / ".kneeseg" / "records"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(records.glob("*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    done = len(list(records.glob("*.json")))
    assert proc.returncode == 130, err[-3000:]
    assert 0 < done < 5, f"the signal landed outside the run ({done} series recorded)"
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"kneeseg: interrupted after {done} of 5 series; rerun the same command to resume"), last
    with open(out / "manifest.csv", newline="") as fh:
        statuses = collections.Counter(r["status"] for r in csv.DictReader(fh))
    assert statuses == {"ok": done, "interrupted": 5 - done}
    assert "Traceback" not in err
    rerun = subprocess.run(_infer_cmd(root, out, phantom_model), capture_output=True, text=True, env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{done} series already done" in rerun.stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "temporary files left"
    assert output_snapshot(out) == output_snapshot(ref)


def test_on_a_terminal_batch_inference_draws_a_bar_under_its_lines(tmp_path, phantom_model, five_series):
    """Through a real pseudo-terminal: a tqdm bar over the series (count, rate, time left), the
    per-series lines printed above it."""
    from terminal_helpers import run_in_terminal

    root, _, _ = five_series
    code, screen = run_in_terminal(_infer_cmd(root, tmp_path / "out", phantom_model))
    assert code == 0
    frames = [f.strip() for f in screen.replace("\n", "\r").split("\r") if f.strip()]
    assert any(f.startswith("segmenting: 100%|") and "5/5 [" in f for f in frames), screen[-1500:]
    assert any(f.startswith("[5/5] ok ") for f in frames) and any(f.startswith("[1/5, ") for f in frames)


# ----------------------------------------------------------------------------- torchrun


def test_torchrun_two_processes_share_the_series(tmp_path, phantom_model):
    from inference_helpers import PHANTOM_SHAPE

    from kneeseg.phantom import generate_phantom

    generate_phantom(tmp_path / "src", cases=5, seed=31, shape=PHANTOM_SHAPE, png=False)
    root = tmp_path / "src" / "dicom"
    (root / "junk.txt").write_text("not dicom")
    out = tmp_path / "out"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port),
           "-m", "kneeseg.cli", *_infer_cmd(root, out, phantom_model)[3:]]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = read_results_csv(out / "manifest.csv")
    assert len(rows) == 6 and sum(r["status"] == "ok" for r in rows) == 5
    assert len({r["series_uid"] for r in rows if r["status"] == "ok"}) == 5
    done = re.findall(r"\[rank (\d)/2\] \[\d/\d[^\]]*\] ok +(\S+) \(series", proc.stderr)  # the series' folder
    assert len(done) == 5, proc.stderr[-3000:]
    assert {rank for rank, _ in done} == {"0", "1"}
    assert len({folder for _, folder in done}) == 5, "a series was segmented twice"
