"""The CUDA paths on a real GPU: fp16 AMP with a GradScaler in the bundle's trainer (a skipped
step on overflow, resuming with the scaler's state), DDP over NCCL, and inference on the GPU in
every runtime agreeing with CPU eager.

Skipped without a CUDA device (every CI machine); ``make test-cuda`` runs them where one is.
``docs/architecture.md`` ("What was verified how") records where and when they last ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import (
    BUNDLE,
    CONFIGS,
    TRAIN_CONFIGS,
    cli_args,
    config_list,
    free_port,
    make_tiny_phantom,
    tiny_overrides,
)
from inference_helpers import PHANTOM_MODEL, build_pacs_tree, dice

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory) -> Path:
    return make_tiny_phantom(tmp_path_factory.mktemp("phantom"))


def _workflow(dataset_dir: Path, run_dir: Path, **extra):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=TRAIN_CONFIGS, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
        **tiny_overrides(dataset_dir, run_dir, **extra),
    )  # fmt: skip
    wf.initialize()
    return wf


def test_bundle_trains_in_fp16_with_a_grad_scaler_and_resumes_its_state(
    tiny_phantom, tmp_path
):
    """The bundle's default ``amp: auto`` on CUDA: fp16 forward passes, MONAI's GradScaler, the
    scaler saved in ``last.pt``; a resumed run starts from the saved scale, not a fresh one."""
    wf = _workflow(tiny_phantom, tmp_path, max_epochs=2, resume=False)
    assert wf.parser.get_parsed_content("device").type == "cuda"
    network = wf.parser.get_parsed_content("network")
    seen: list[torch.dtype] = []
    first_conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert seen and set(seen) == {torch.float16}
    assert trainer.amp and trainer.scaler is not None and trainer.scaler.is_enabled()
    history = json.loads((tmp_path / "runs" / "history.json").read_text())
    assert history["epoch"] == [1, 2] and all(np.isfinite(history["loss"]))
    assert next(network.parameters()).is_cuda
    wf.finalize()

    last = tmp_path / "models" / "last.pt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["scaler"]["scale"] > 0
    saved["scaler"]["scale"] = 128.0  # a value a fresh scaler (65536) never has
    torch.save(saved, last)

    resumed = _workflow(tiny_phantom, tmp_path, max_epochs=3, resume=True)
    trainer = resumed.parser.get_parsed_content("train#trainer")
    scales: list[float] = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_STARTED(once=1 + saved["trainer"]["iteration"]),
                              lambda e: scales.append(float(e.scaler.get_scale())))  # fmt: skip
    resumed.run()
    assert trainer.state.epoch == 3
    assert scales == [128.0]
    assert (
        torch.load(last, map_location="cpu", weights_only=True)["scaler"]["scale"]
        <= 128.0
    )
    resumed.finalize()


def test_grad_scaler_skips_the_step_of_an_overflowing_batch():
    """A batch whose gradients overflow leaves the weights as they were and halves the scale;
    the next batch updates them (MONAI's trainer with kneeseg's AMP policy and inferer)."""
    from ignite.engine import Events
    from monai.data import DataLoader
    from monai.engines import SupervisedTrainer

    from kneeseg.execution import AmpPolicy, AutocastInferer
    from kneeseg.networks import build_network

    torch.manual_seed(0)
    device = torch.device("cuda")
    net = build_network("csam_unet", width=4).to(device)
    policy = AmpPolicy.resolve("auto", "cuda")
    assert policy.dtype == torch.float16 and policy.monai_amp
    calls = {"n": 0}

    def loss_fn(pred, label):
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(pred, label[:, 0].long())
        return loss * float("inf") if calls["n"] == 1 else loss

    data = [
        {
            "image": torch.randn(1, 32, 32),
            "label": (torch.rand(1, 32, 32) > 0.5).float(),
        }
        for _ in range(6)
    ]
    trainer = SupervisedTrainer(
        device=device, max_epochs=1, train_data_loader=DataLoader(data, batch_size=2), network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3), loss_function=loss_fn,
        inferer=AutocastInferer(policy=policy, channels_last=True), amp=policy.monai_amp,
    )  # fmt: skip
    snapshots: list[list[torch.Tensor]] = []
    scales: list[float] = []

    def record(engine):
        snapshots.append([p.detach().clone() for p in net.parameters()])
        scales.append(float(engine.scaler.get_scale()))

    trainer.add_event_handler(Events.STARTED, record)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    trainer.run()
    start, after_overflow, after_good = snapshots[0], snapshots[1], snapshots[2]
    assert all(torch.equal(a, b) for a, b in zip(start, after_overflow))  # step skipped
    assert scales[1] == scales[0] / 2
    assert any(
        not torch.equal(a, b) for a, b in zip(after_overflow, after_good)
    )  # a real step
    assert all(torch.isfinite(p).all() for p in net.parameters())



def test_torchrun_nccl_trains_on_every_gpu(tiny_phantom, tmp_path):
    """``multi_gpu_train.json`` under torchrun on this machine's GPUs: the NCCL backend, one GPU a
    rank, identical weights on every rank after training."""
    n = min(2, torch.cuda.device_count())
    finalize = tmp_path / "finalize.json"
    finalize.write_text(json.dumps({"finalize": [
        "$torch.save(@network.module.state_dict(), @output_dir + f'/rank{torch.distributed.get_rank()}.pt')",
        ("$open(@output_dir + f'/backend{torch.distributed.get_rank()}.txt', 'w').write("
         "torch.distributed.get_backend() + ' ' + str(next(@network.parameters()).device))"),
        "$torch.distributed.is_initialized() and torch.distributed.destroy_process_group()",
    ]}))  # fmt: skip
    configs = TRAIN_CONFIGS + [str(CONFIGS / "multi_gpu_train.json"), str(finalize)]
    overrides = tiny_overrides(tiny_phantom, tmp_path, max_epochs=1, resume=False)
    (tmp_path / "runs").mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "monai.bundle", "run", "training",
        "--meta_file", "configs/metadata.json", "--config_file", config_list(configs), *cli_args(overrides),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd,
        cwd=BUNDLE,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in range(n):
        assert (
            tmp_path / "runs" / f"backend{rank}.txt"
        ).read_text() == f"nccl cuda:{rank}"
    w0 = torch.load(tmp_path / "runs" / "rank0.pt", weights_only=True)
    for rank in range(1, n):
        other = torch.load(tmp_path / "runs" / f"rank{rank}.pt", weights_only=True)
        assert all(torch.equal(w0[k], other[k]) for k in w0)
    assert (tmp_path / "models" / "last.pt").is_file()


@pytest.fixture(scope="module")
def phantom_series(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pacs") / "tree"
    build_pacs_tree(root, None)
    return root


@pytest.mark.parametrize("runtime", ["eager", "bf16", "onnx", "auto"])
def test_gpu_inference_agrees_with_cpu_eager(
    runtime, phantom_model, phantom_series, tmp_path
):
    """The phantom model (trained here on the GPU, fp16 AMP) segments the same volume on CUDA in
    each runtime as CPU eager does; ``auto`` on CUDA times eager against bf16 and keeps the faster."""
    from kneeseg.data.dicom.discovery import discover_series
    from kneeseg.data.dicom.loading import load_volume
    from kneeseg.inference.segmenter import load_segmenter

    case = min((phantom_series / "phantom").iterdir())
    image, meta = load_volume(discover_series(case).volumes[0])
    cpu, _ = load_segmenter(
        ckpt=phantom_model, overrides=PHANTOM_MODEL, runtime="eager", device="cpu"
    )
    gpu, _ = load_segmenter(ckpt=phantom_model, overrides=PHANTOM_MODEL, runtime=runtime, device="cuda",
                            onnx_cache=tmp_path)  # fmt: skip
    if runtime == "auto":
        reason = gpu.runner.choice.reason
        assert "measured per batch" in reason, reason
        times = dict(
            part.rsplit(" ", 2)[:2]
            for part in reason.split("measured per batch: ")[1].split(", ")
        )
        assert set(times) == {"eager", "bf16"} and gpu.runner.name == min(
            times, key=lambda k: float(times[k])
        )
        print(f"auto on CUDA: {gpu.runner.choice.describe()}")
    if runtime == "onnx":
        import onnxruntime

        session = gpu.runner._sessions["onnx"]
        print(f"onnxruntime {onnxruntime.__version__} providers available {onnxruntime.get_available_providers()}, "
              f"used {session.get_providers()}")  # fmt: skip
    a, b = cpu(image, meta["affine"]), gpu(image, meta["affine"])
    assert a.sum() > 100
    assert dice(a, b) >= (0.99 if runtime in ("bf16", "auto") else 0.999)


def test_kneeseg_infer_on_cuda_writes_what_cpu_writes(
    phantom_model, phantom_series, tmp_path
):
    """``kneeseg infer --device cuda`` over a folder: the same series segmented, labels matching
    the CPU run's, the manifest naming the CUDA runtime."""
    import nibabel as nib

    from kneeseg.cli import main as cli_main
    from kneeseg.inference.results import read_results_csv

    src = tmp_path / "in"
    shutil.copytree(phantom_series / "phantom", src)
    sets = [arg for k, v in PHANTOM_MODEL.items() for arg in ("--set", f"{k}={v}")]
    for device, runtime in (("cpu", "eager"), ("cuda", "auto")):
        code = cli_main(["infer", str(src), "-o", str(tmp_path / device), "--ckpt", str(phantom_model), "--quiet",
                         "--device", device, "--runtime", runtime, "--formats", "nifti", *sets])  # fmt: skip
        assert code == 0
    cpu_rows = {
        r["source"]: r for r in read_results_csv(tmp_path / "cpu" / "manifest.csv")
    }
    gpu_rows = {
        r["source"]: r for r in read_results_csv(tmp_path / "cuda" / "manifest.csv")
    }
    assert cpu_rows.keys() == gpu_rows.keys() and len(cpu_rows) == len(
        list(src.iterdir())
    )
    for source, row in gpu_rows.items():
        assert row["status"] == "ok" and row["runtime"].split()[0] in (
            "eager",
            "bf16",
        ), row
        a = np.asarray(nib.load(tmp_path / "cpu" / cpu_rows[source]["nifti"]).dataobj)
        b = np.asarray(nib.load(tmp_path / "cuda" / row["nifti"]).dataobj)
        assert a.any() and dice(a, b) >= 0.99, source


def test_preprocessing_on_the_gpu_equals_the_cpu_path(shared_data):
    """With --device cuda the batched preprocessing runs on the GPU: equal to the CPU path within
    the fast path's tolerance (float rounding can move a rare pixel by one CLAHE grey step)."""
    from kneeseg.data import discover_series, load_volume
    from kneeseg.transforms.functional import preprocess_planes

    image, _ = load_volume(discover_series(shared_data / "dicom" / "knee-dess-sag").volumes[0])
    planes = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, 2, 0)))[:, None]
    cpu = preprocess_planes(planes, 256)
    gpu = preprocess_planes(planes.cuda(), 256)
    assert gpu.planes.is_cuda and gpu.resized == cpu.resized and gpu.pad == cpu.pad
    diff = (gpu.planes.cpu() - cpu.planes).abs()
    assert float(diff.max()) < 0.05 and float((diff > 1e-5).float().mean()) < 1e-3
