"""Speed of the CUDA paths on a GPU: training steps per precision and inference per runtime.

Training: one optimisation step of a bundle network (default: the ``cpu`` preset's csam_unet,
width 16, 256 x 256 slices, batch 8, DiceCE loss, Adam) under each precision policy:

- ``fp32``;
- ``fp16`` autocast with a ``GradScaler`` (the bundle's ``amp: auto`` on CUDA);
- ``bf16`` autocast (no scaler);

each with ``channels_last`` as the bundle trains, timed with CUDA synchronisation (median of
``--steps`` steps after ``--warmup``). Inference: a batch of ``--slices`` slices (80: one knee
DESS series) through :class:`kneeseg.execution.runtimes.NetworkRunner` in ``eager``, ``bf16`` and
``onnx`` (ONNX Runtime's CUDA provider if it has one, else its CPU provider; the report names
the providers used). Every row is a ratio against fp32 / eager in the same run.

    python benchmarks/cuda_paths.py --json cuda_paths.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(
    name: str,
    width: int,
    size: int,
    batch: int,
    device: torch.device,
    steps: int,
    warmup: int,
) -> list[dict]:
    from monai.losses import DiceCELoss

    from kneeseg.execution import AmpPolicy
    from kneeseg.networks import build_network

    rows = []
    g = torch.Generator().manual_seed(0)
    x = (
        torch.rand(batch, 1, size, size, generator=g)
        .to(device)
        .contiguous(memory_format=torch.channels_last)
    )
    y = (torch.rand(batch, 1, size, size, generator=g) > 0.7).float().to(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    for precision in ("fp32", "fp16", "bf16"):
        torch.manual_seed(0)
        net = (
            build_network(name, width=width)
            .to(device)
            .to(memory_format=torch.channels_last)
            .train()
        )
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        if precision == "fp32":
            policy = AmpPolicy(device.type, None)
        else:
            policy = AmpPolicy(
                device.type, torch.float16 if precision == "fp16" else torch.bfloat16
            )
        scaler = torch.amp.GradScaler(device.type, enabled=policy.grad_scaler)
        times, losses = [], []
        for i in range(warmup + steps):
            _sync(device)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with policy.autocast():
                out = net(x)
            loss = loss_fn(out.float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                losses.append(float(loss))
        step = statistics.median(times)
        rows.append({
            "network": name, "precision": precision, "grad_scaler": policy.grad_scaler, "batch": batch,
            "size": size, "width": width, "ms_per_step": round(step * 1000, 2),
            "slices_per_s": round(batch / step, 1), "last_loss": round(losses[-1], 4),
            "final_scale": float(scaler.get_scale()) if policy.grad_scaler else None,
        })  # fmt: skip
    base = rows[0]["ms_per_step"]
    for r in rows:
        r["speedup_vs_fp32"] = round(base / r["ms_per_step"], 2)
    return rows


def time_inference(
    name: str, width: int, size: int, slices: int, device: torch.device, repeats: int
) -> list[dict]:
    from kneeseg.execution.runtimes import NetworkRunner
    from kneeseg.networks import build_network

    torch.manual_seed(0)
    net = build_network(name, width=width)
    x = torch.rand(
        slices, 1, size, size, generator=torch.Generator().manual_seed(1)
    ).to(device)
    rows, reference = [], None
    for runtime in ("eager", "bf16", "onnx"):
        runner = NetworkRunner(net, size, runtime, device)
        out = runner(x)
        _sync(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = runner(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
        labels = out.argmax(1)
        if reference is None:
            reference = labels
        row = {"network": name, "runtime": runtime, "slices": slices, "size": size,
               "s_per_batch": round(statistics.median(times), 4),
               "label_agreement_vs_eager": round(float((labels == reference).float().mean()), 5)}  # fmt: skip
        if runtime == "onnx":
            row["onnx_providers"] = runner._sessions["onnx"].get_providers()
        rows.append(row)
    base = rows[0]["s_per_batch"]
    for r in rows:
        r["speedup_vs_eager"] = round(base / r["s_per_batch"], 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", default=["csam_unet", "unet"])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--slices", type=int, default=80)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", type=Path, default=Path("cuda_paths.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    report = {"machine": info, "training": [], "inference": []}
    for name in args.networks:
        print(f"[cuda_paths] training steps: {name}", flush=True)
        report["training"] += time_training(
            name, args.width, args.size, args.batch, device, args.steps, args.warmup
        )
        print(f"[cuda_paths] inference: {name}", flush=True)
        report["inference"] += time_inference(
            name, args.width, args.size, args.slices, device, args.repeats
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
