"""The MONAI bundle through MONAI's real entry points: ConfigWorkflow, verify_*, exports, torchrun."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle_helpers import (
    BUNDLE, CONFIGS, TRAIN_CONFIGS, cli_args, config_list, free_port, make_tiny_phantom, run_bundle, tiny_overrides,
)  # fmt: skip
from kneeseg.files import file_sha256


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory) -> Path:
    return make_tiny_phantom(tmp_path_factory.mktemp("phantom"))


def _train(dataset_dir: Path, run_dir: Path, **extra) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=TRAIN_CONFIGS, meta_file=str(CONFIGS / "metadata.json"), logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train", **tiny_overrides(dataset_dir, run_dir, **extra),
    )  # fmt: skip
    wf.initialize()
    assert wf.check_properties() in (None, [])
    wf.run()
    wf.finalize()
    return wf


@pytest.fixture(scope="module")
def trained(tiny_phantom, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    wf = _train(tiny_phantom, run_dir, max_epochs=1)
    return run_dir, wf


def test_train_workflow_writes_checkpoints_and_curves(trained):
    run_dir, wf = trained
    assert (run_dir / "models" / "last.pt").is_file()
    assert (run_dir / "models" / "model.pt").is_file()  # best by validation F1
    assert (run_dir / "runs" / "training_curves.png").stat().st_size > 1000
    history = json.loads((run_dir / "runs" / "history.json").read_text())
    assert history["epoch"] == [1] and np.isfinite(history["loss"][0])
    assert "val_f1" in history["val"]
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 1


def test_checkpoints_are_reproducible_bytes(trained, tmp_path):
    """Saved into an open file, a checkpoint's archive folder is torch's fixed ``archive/``, not
    the random temporary file name: the same state gives the same bytes wherever it is written."""
    import zipfile

    from kneeseg.handlers.checkpoint import write_torch

    run_dir, _ = trained
    for name in ("model.pt", "last.pt"):
        assert {n.split("/")[0] for n in zipfile.ZipFile(run_dir / "models" / name).namelist()} == {"archive"}
    state = torch.load(run_dir / "models" / "model.pt", weights_only=True)
    a, b = write_torch(state, tmp_path / "a" / "model.pt"), write_torch(state, tmp_path / "b.pt")
    assert a.read_bytes() == b.read_bytes()
    record = json.loads((run_dir / "models" / "model.json").read_text())
    assert record["sha256"] == file_sha256(run_dir / "models" / "model.pt")


def test_training_resumes_at_the_next_epoch_with_optimizer_state(tiny_phantom, trained, tmp_path):
    run_dir, first = trained
    import shutil

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed_dir)
    iters_per_epoch = first.parser.get_parsed_content("train#trainer").state.epoch_length
    wf = _train(tiny_phantom, resumed_dir, max_epochs=2, resume=True)
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2
    assert trainer.state.iteration == 2 * iters_per_epoch  # one new epoch on top of the restored one
    optimizer = wf.parser.get_parsed_content("optimizer")
    steps = {int(s["step"]) for s in optimizer.state.values()}
    assert steps == {2 * iters_per_epoch}  # Adam's state was restored, not restarted
    history = json.loads((resumed_dir / "runs" / "history.json").read_text())
    assert history["epoch"] == [1, 2]


def test_data_loaders_follow_the_device_and_train_with_worker_processes(tiny_phantom, tmp_path):
    """No workers on a CPU; on CUDA workers, pinned memory, prefetch (the same settings run here with
    2 worker processes and without pinning, which needs a GPU)."""
    from kneeseg.execution import loader_workers

    assert loader_workers("cpu") == 0
    assert loader_workers("cuda:0") == max(0, min(4, len(os.sched_getaffinity(0)) - 1))
    default = tiny_overrides(tiny_phantom, tmp_path / "a")
    del default["num_workers"]  # the bundle's own choice
    wf = ConfigWorkflow(config_file=TRAIN_CONFIGS, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train", **default)
    wf.initialize()
    loader = wf.parser.get_parsed_content("train#dataloader")
    if not torch.cuda.is_available():
        assert loader.num_workers == 0 and not loader.pin_memory
    # MONAI Label overrides the device with a plain string ("cpu", "cuda:0")
    wf = ConfigWorkflow(
        config_file=TRAIN_CONFIGS, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train", **{**default, "device": "cpu"}
    )  # fmt: skip
    wf.initialize()
    loader = wf.parser.get_parsed_content("train#dataloader")
    assert loader.num_workers == 0 and not loader.pin_memory
    wf = _train(tiny_phantom, tmp_path / "b", max_epochs=1, num_workers=2, resume=False)
    loader = wf.parser.get_parsed_content("train#dataloader")
    assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 4
    assert wf.parser.get_parsed_content("train#trainer").state.iteration > 0


@pytest.mark.parametrize("amp,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_bundle_amp_setting_controls_forward_precision(tiny_phantom, tmp_path, amp, expected):
    wf = ConfigWorkflow(
        config_file=TRAIN_CONFIGS, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
        **tiny_overrides(tiny_phantom, tmp_path, max_epochs=1, amp=amp, resume=False, device="$torch.device('cpu')"),
    )  # fmt: skip  (on CPU also where a GPU is: fp16 on CUDA is tests/test_cuda.py's)
    wf.initialize()
    network = wf.parser.get_parsed_content("network")
    seen = []
    first_conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    wf.run()
    assert seen and set(seen) == {expected}


def test_inference_workflow_segments_volumes_in_their_geometry(tiny_phantom, trained, tmp_path):
    run_dir, _ = trained
    out_dir = tmp_path / "seg"
    for field in ("image", "dicom"):
        wf = ConfigWorkflow(
            config_file=str(CONFIGS / "inference.json"), meta_file=str(CONFIGS / "metadata.json"), workflow_type="infer",
            bundle_root=str(BUNDLE), dataset_dir=str(tiny_phantom), ckpt_dir=str(run_dir / "models"),
            output_dir=str(out_dir / field), input_field=field, infer_list_key="training", spatial_size=64, width=4,
        )  # fmt: skip
        wf.initialize()
        assert wf.check_properties() in (None, [])
        wf.run()
        wf.finalize()
    datalist = json.loads((tiny_phantom / "dataset.json").read_text())["training"]
    for item in datalist:
        case = Path(item["image"]).name.replace(".nii.gz", "")
        src = nib.load(tiny_phantom / item["image"])
        for field, name in (("image", f"{case}_seg.nii.gz"), ("dicom", f"{Path(item['dicom']).name}_seg.nii.gz")):
            seg = nib.load(out_dir / field / name)
            assert seg.shape == src.shape
            np.testing.assert_allclose(seg.affine, src.affine, atol=1e-3)
            assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}


def test_verify_metadata_offline():
    proc = run_bundle(
        ["verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", "configs/metadata_schema.json"]
    )
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


def test_verify_net_in_out():
    proc = run_bundle(
        ["verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
         "--config_file", "configs/inference.json", "--width", "4"]
    )  # fmt: skip
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


def _eager_from_checkpoint(ckpt: Path) -> torch.nn.Module:
    from kneeseg.networks import build_network

    net = build_network("csam_unet", width=4)
    net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    return net.eval()


def test_ckpt_export_torchscript_matches_eager(trained, tmp_path):
    run_dir, _ = trained
    ts = tmp_path / "model.ts"
    run_bundle(
        ["ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(run_dir / "models" / "model.pt"),
         "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--width", "4"]
    )  # fmt: skip
    scripted = torch.jit.load(str(ts))
    eager = _eager_from_checkpoint(run_dir / "models" / "model.pt")
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), atol=1e-4, rtol=0)


def test_onnx_export_matches_eager(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    run_dir, _ = trained
    onnx_path = tmp_path / "model.onnx"
    run_bundle(
        ["onnx_export", "network_def", "--filepath", str(onnx_path), "--ckpt_file", str(run_dir / "models" / "model.pt"),
         "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--width", "4",
         "--input_shape", "[1, 1, 64, 64]", "--use_trace", "True", "--converter_kwargs", "{'dynamo': False}"]
    )  # fmt: skip
    eager = _eager_from_checkpoint(run_dir / "models" / "model.pt")
    x = torch.rand(1, 1, 64, 64)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, eager(x).numpy(), atol=1e-4, rtol=0)



def test_torchrun_two_processes_gloo_identical_weights(tiny_phantom, tmp_path):
    save_weights = tmp_path / "save_weights.json"
    save_weights.write_text(
        json.dumps(
            {
                "finalize": [
                    "$torch.save(@network.module.state_dict(), @output_dir + f'/rank{torch.distributed.get_rank()}.pt')",
                    "$torch.distributed.is_initialized() and torch.distributed.destroy_process_group()",
                ]
            }
        )
    )
    configs = TRAIN_CONFIGS + [str(CONFIGS / "multi_gpu_train.json"), str(save_weights)]
    overrides = tiny_overrides(tiny_phantom, tmp_path, max_epochs=1, resume=False)
    (tmp_path / "runs").mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "monai.bundle", "run", "training",
        "--meta_file", "configs/metadata.json", "--config_file", config_list(configs), *cli_args(overrides),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "runs" / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "runs" / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert (tmp_path / "models" / "last.pt").is_file()  # written by rank 0 only


def test_cli_train_then_evaluate_writes_reports(tiny_phantom, tmp_path, capsys):
    from kneeseg.cli import main

    common = ["--preset", "cpu", "--data", "phantom", "--dataset-dir", str(tiny_phantom), "--ckpt-dir", str(tmp_path / "models")]
    tiny = [f"--set={k}={v}" for k, v in {"spatial_size": 64, "width": 4, "batch_size": 4, "val_interval": 1}.items()]
    assert main(["train", *common, "--output-dir", str(tmp_path / "runs"), "--set=max_epochs=1", *tiny]) == 0
    assert (tmp_path / "models" / "model.pt").is_file()
    # evaluated on a 48 px grid (a fully convolutional network), so that the grid differs from the 64 px images
    assert main(["evaluate", *common, "--output-dir", str(tmp_path / "eval"), *tiny, "--set=spatial_size=48"]) == 0
    summary = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    rows = (tmp_path / "eval" / "metrics_per_case.csv").read_text().splitlines()
    test_items = json.loads((tiny_phantom / "dataset_2d.json").read_text())["test"]
    assert len(rows) == 1 + len(test_items)  # header + one row per test image
    assert "per_image_mean" in summary
    out = capsys.readouterr().out
    assert "Loss rate" in out and "MAE" in out and "F1" in out  # the Table-1 layout on the console
    # the main report counts each image's own pixels (prediction inverted, the mask reloaded from its
    # file); the grid report counts the network's 48 x 48 grid
    import csv

    from PIL import Image

    native = list(csv.DictReader((tmp_path / "eval" / "metrics_per_case.csv").open()))
    grid = list(csv.DictReader((tmp_path / "eval" / "metrics_per_case_grid.csv").open()))
    assert len(native) == len(grid) == len(test_items)
    cls = next(k for k in native[0] if k.startswith("tp_"))[3:]  # the foreground class's column suffix
    for n, g in zip(native, grid):
        w, h = Image.open(n["case_id"]).size
        assert sum(int(float(n[f"{c}_{cls}"])) for c in ("tp", "fp", "fn", "tn")) == w * h == 64 * 64
        assert sum(int(float(g[f"{c}_{cls}"])) for c in ("tp", "fp", "fn", "tn")) == 48 * 48
        assert n["hd95_unit"] == "pixel"
    assert summary["measured"] == "at each image's own resolution"
    grid_summary = json.loads((tmp_path / "eval" / "metrics_summary_grid.json").read_text())
    assert grid_summary["measured"].startswith("on the network grid (48 px")
    assert main(["train", "--preset", "no-such-preset"]) == 2


def test_infer_datalist_records_bad_images_carries_on_and_resumes(tiny_phantom, trained, tmp_path, capsys):
    """A batch over a datalist with bad images (NaNs, a missing file, a corrupt file) predicts the
    good ones, names each bad file and its problem in one line (stderr and OUT/failures.csv) and
    exits 1; a rerun skips the finished masks and retries the failures; --overwrite redoes all."""
    from kneeseg.cli import main

    run_dir, _ = trained
    entries = json.loads((tiny_phantom / "dataset.json").read_text())["training"]
    good = [tiny_phantom / entries[0]["image"], tiny_phantom / entries[1]["image"]]
    src = nib.load(good[0])
    data = np.asarray(src.dataobj, dtype=np.float32).copy()
    data[:3, :4, 0] = np.nan
    nan_case = tmp_path / "nan_case.nii.gz"
    nib.save(nib.Nifti1Image(data, src.affine), nan_case)
    corrupt = tmp_path / "corrupt_case.nii.gz"
    corrupt.write_bytes(good[0].read_bytes()[:300])  # a cut-off download
    missing = tmp_path / "missing_case.nii.gz"
    images = [good[0], nan_case, missing, corrupt, good[1]]
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"test": [{"image": str(p)} for p in images]}))
    out = tmp_path / "out"
    command = ["infer-datalist", "--model", str(run_dir / "models"), "--output-dir", str(out), "--dataset-dir", "/",
               f"--set=data_list_file_path={datalist}", "--set=spatial_size=64", "--set=width=4"]  # fmt: skip
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"kneeseg: skipped {nan_case}: image contains 12 NaN values" in err.splitlines()
    for bad in (missing, corrupt):
        assert any(line.startswith("kneeseg: skipped ") and str(bad) in line for line in err.splitlines()), err[-3000:]
    assert "3 image(s) could not be predicted" in err
    with open(out / "failures.csv", newline="") as fh:
        failures = {row["image"]: row["error"] for row in csv.DictReader(fh)}
    assert set(failures) == {str(nan_case), str(missing), str(corrupt)}
    assert "NaN" in failures[str(nan_case)]
    masks = sorted(out.glob("*_seg.nii.gz"))
    assert [m.name for m in masks] == sorted(p.name.replace(".nii.gz", "_seg.nii.gz") for p in good)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary files left
    for mask, image in zip(sorted(masks), sorted(good)):
        assert nib.load(mask).shape[:2] == nib.load(image).shape[:2]
    stamps = {m: m.stat().st_mtime_ns for m in masks}
    labels = {m: np.asarray(nib.load(m).dataobj) for m in masks}
    # a rerun: the finished masks stay, the failures are tried again
    assert main(command) == 1
    assert {m: m.stat().st_mtime_ns for m in masks} == stamps
    assert "3 image(s) could not be predicted" in capsys.readouterr().err
    # the bad images repaired (removed from the list): nothing left to do, no failures file
    datalist.write_text(json.dumps({"test": [{"image": str(p)} for p in good]}))
    assert main(command) == 0
    assert not (out / "failures.csv").exists() and {m: m.stat().st_mtime_ns for m in masks} == stamps
    assert main([*command, "--overwrite"]) == 0
    assert all(m.stat().st_mtime_ns != stamps[m] for m in masks)
    assert all(np.array_equal(np.asarray(nib.load(m).dataobj), labels[m]) for m in masks)


@pytest.mark.parametrize("data", ["phantom", "knee_acl"])
def test_2d_data_configs_cache_the_whole_preprocessing(data):
    """CacheDataset caches everything up to the first random transform: the whole preprocessing.

    The phantom's 2D datalist needs no slice sampling. knee-acl mixes its 2D images with
    weak-labelled volumes (negatives): those are preprocessed whole before the random slice
    choice, so the cache still holds the preprocessed images and volumes."""
    from monai.bundle import ConfigParser
    from monai.transforms import RandomizableTrait, Transform

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "presets" / "cpu.json"), str(CONFIGS / "data" / f"{data}.json")])
    parser["bundle_root"] = str(BUNDLE)
    train_first = "OnePatchd" if data == "phantom" else "SampleSlicesd"  # the cpu recipe's patches
    for part, first_uncached in (("train", train_first), ("validate", None)):
        chain = parser.get_parsed_content(f"{part}#preprocessing")
        names = [type(t).__name__ for t in chain.transforms]
        idx = chain.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
        assert (None if idx is None else names[idx]) == first_uncached
        cached = chain.transforms[: len(names) if idx is None else idx]
        inner = [type(t).__name__ for t in cached]
        for t in cached:
            if type(t).__name__ == "DimensionDispatchd":
                inner += [type(x).__name__ for c in t.chains.values() for x in c.transforms]
        assert "HistogramEqualized" in inner and "OrientSlicesd" in inner
        assert ("SampleSlicesd" in names) == (part == "train" and data == "knee_acl")
    # the default (no data config) still samples slices from volumes, as MONAI Label trains
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    assert "SampleSlicesd" in [type(t).__name__ for t in parser.get_parsed_content("train#preprocessing").transforms]
