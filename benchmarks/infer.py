"""Seconds per DICOM series: kneeseg's batch inference vs a plain MONAI pipeline, same process.

Both go from a DICOM series folder to a NIfTI label map on disk with the same network and the
same preprocessing:

- **plain MONAI**: ``LoadImaged`` (kneeseg's DICOM reader) -> the bundle's MONAI transform chain
  -> ``SliceInferer`` (batch of 8 slices, eager fp32) -> ``Invertd``/argmax -> ``SaveImage``,
  one series after the other (what ``inference.json`` does);
- **kneeseg** (:func:`kneeseg.inference.predict_folder`, NIfTI output only) for each runtime:
  ``auto`` (the default, resolved on this machine), ``eager`` (fp32), ``bf16`` (autocast +
  channels_last), ``onnx`` (ONNX Runtime), with the next series read and preprocessed while the
  current one is inferred.

The input is ``--copies`` copies of one series (default the shared knee DESS series, 80 slices
of 512 x 512) with fresh UIDs, so the pipelines see a realistic folder of several series. The
report gives seconds per series (wall time / copies), the speed-up over the plain pipeline,
each runtime's Dice agreement with kneeseg eager and with the plain pipeline, and the resident
memory after each of ``--memory-series`` consecutive series (default runtime) to show it stays
flat; per runtime, the time split per series (read, preprocess, network, postprocess, write: the
records' ``stage_seconds``); the network's FLOPs per series and its achieved GFLOP/s against
this machine's convolution limits (fp32 and bf16, measured here on a large 3 x 3 convolution).

Unless the CPU already lacks native bf16 (or ``--no-avx2``), the plain pipeline and ``auto`` are
run again in a child process under ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, which makes
PyTorch and its oneDNN convolutions behave as on a CPU without AVX-512/native bf16 (ONNX Runtime's
own kernels still use what the CPU has); that run's own ratio is reported as ``avx2_emulated``.

    python benchmarks/infer.py --ckpt /tmp/acl1/models/model.pt --preset cpu
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import avx2_env, conv_limit_gflops, rss_mb  # noqa: E402
DEFAULT_SERIES = PROJECT.parent / "shared" / "data" / "dicom" / "knee-dess-sag"


def make_copies(series: Path, dest: Path, copies: int) -> list[Path]:
    """``copies`` copies of a series, each with new Study/Series/SOP Instance UIDs."""
    files = sorted(p for p in series.rglob("*") if p.is_file())
    datasets = [pydicom.dcmread(p) for p in files]
    out = []
    for c in range(copies):
        folder = dest / f"copy_{c:02d}"
        folder.mkdir(parents=True)
        study, ser = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        for i, ds in enumerate(datasets):
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, ser
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
            ds.SeriesNumber = 100 + c
            ds.save_as(folder / f"IM{i:04d}.dcm")
        out.append(folder)
    return out


def plain_monai(folders: list[Path], network: torch.nn.Module, settings: dict, out: Path) -> list[np.ndarray]:
    """The plain MONAI pipeline (the bundle's chain, from the same settings), one series after the
    other; returns the label maps."""
    from monai.inferers import SliceInferer
    from monai.transforms import SaveImage

    from kneeseg.transforms import infer_transforms, post_transforms

    spatial_size = settings["spatial_size"]
    chain = infer_transforms("image", spatial_size, spatial_dims=3, preprocessing=settings["preprocessing"],
                             slice_orientation=settings["slice_orientation"])  # fmt: skip
    post = post_transforms(chain, largest_component=settings["largest_component"])
    inferer = SliceInferer(roi_size=[spatial_size, spatial_size], spatial_dim=2, sw_batch_size=8, progress=False)
    saver = SaveImage(output_dir=str(out), output_postfix="seg", output_dtype=np.uint8, resample=False,
                      separate_folder=False, print_log=False)  # fmt: skip
    network = network.eval().to(memory_format=torch.contiguous_format)
    labels = []
    for folder in folders:
        t0 = time.perf_counter()
        data = chain({"image": str(folder)})
        t1 = time.perf_counter()
        with torch.inference_mode():
            data["pred"] = inferer(data["image"][None], network)[0]
        t2 = time.perf_counter()
        data = post(data)
        t3 = time.perf_counter()
        saver(data["pred"].to(torch.uint8), meta_data=data["pred"].meta)
        labels.append(data["pred"][0].numpy().astype(np.uint8))
        for stage, sec in (("read + preprocess", t1 - t0), ("network", t2 - t1), ("postprocess", t3 - t2),
                           ("write", time.perf_counter() - t3)):  # fmt: skip
            PLAIN_STAGES[stage] = PLAIN_STAGES.get(stage, 0.0) + sec / len(folders)
    return labels


#: seconds per series of each stage of the last :func:`plain_monai` call
PLAIN_STAGES: dict[str, float] = {}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def network_gflops(network: torch.nn.Module, size: int) -> float:
    """Forward GFLOPs of one ``1 x 1 x size x size`` slice (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network.eval()(torch.zeros(1, 1, size, size))
    return counter.get_total_flops() / 1e9


def stage_split(out: Path) -> dict[str, float]:
    """Mean seconds per series of each stage, from the records' ``stage_seconds``."""
    totals: dict[str, float] = {}
    records = [json.loads(p.read_text()) for p in (out / ".kneeseg" / "records").glob("*.json")]
    records = [r for r in records if r.get("status") == "ok" and r.get("stage_seconds")]
    for r in records:
        for k, v in r["stage_seconds"].items():
            totals[k] = totals.get(k, 0.0) + float(v)
    return {k: round(v / max(1, len(records)), 3) for k, v in totals.items()}


def avx2_child(args: argparse.Namespace) -> dict:
    """The plain pipeline and ``auto`` again in a child process under ``machine.AVX2_ENV``
    (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``)."""
    with tempfile.TemporaryDirectory(prefix="kneeseg-bench-avx2-") as tmp:
        report = Path(tmp) / "avx2.json"
        cmd = [sys.executable, __file__, "--ckpt", str(args.ckpt), "--preset", args.preset, "--series", str(args.series),
               "--copies", str(args.copies), "--runtimes", "auto", "--memory-series", "0", "--no-avx2",
               "--no-limits", "--json", str(report)]  # fmt: skip
        subprocess.run(cmd, env=avx2_env(), check=True)
        child = json.loads(report.read_text())
    return {"env": "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2", "cpu_capability": child["cpu_capability"],
            "results": child["results"], "stage_seconds": {k: v.get("stage_seconds_per_series") for k, v in child["results"].items()}}


def component_timings(folder: Path, network: torch.nn.Module, settings: dict) -> dict[str, float]:
    """Seconds for one series of two choices the fast path makes, each against its alternative:
    ONNX Runtime with 2 intra-op threads on one batch at a time vs 1 thread on 2 batches at once
    (80 slices, batches of 8), and scikit-image's CLAHE plane by plane vs the batched CLAHE."""
    from concurrent.futures import ThreadPoolExecutor

    from kneeseg.data.dicom.discovery import discover_series
    from kneeseg.data.dicom.loading import load_volume
    from kneeseg.execution.runtimes import export_onnx, onnx_session
    from kneeseg.transforms.clahe import equalize_adapthist_planes
    from kneeseg.transforms.preprocessing import HistogramEqualize

    out: dict[str, float] = {}
    size = settings["spatial_size"]
    model = export_onnx(network, size)
    batches = [np.random.default_rng(i).random((8, 1, size, size), dtype=np.float32) for i in range(10)]
    two, one = onnx_session(model, "cpu", 2), onnx_session(model, "cpu", 1)
    for sess in (two, one):
        sess.run(None, {"image": batches[0]})
    t0 = time.perf_counter()
    for b in batches:
        two.run(None, {"image": b})
    out["onnx_2_threads_one_batch_at_a_time"] = time.perf_counter() - t0
    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda b: one.run(None, {"image": b}), batches))
        out["onnx_1_thread_2_batches_at_once"] = time.perf_counter() - t0
    image, _ = load_volume(discover_series(folder).volumes[0])
    planes = np.clip(np.moveaxis(image, 2, 0) / np.percentile(image, 99.5), 0, 1).astype(np.float32)
    opts = settings["preprocessing"]
    eq = HistogramEqualize("clahe", clip_limit=opts["clip_limit"])
    t0 = time.perf_counter()
    ref = np.stack([eq.equalise_plane(p) for p in planes])
    out["clahe_per_plane_scikit_image"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = equalize_adapthist_planes(planes, opts["clip_limit"])
    out["clahe_batched"] = time.perf_counter() - t0
    out["clahe_batched_bit_identical"] = bool(np.array_equal(ref, got))
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}


def kneeseg_labels(out: Path, rows: list[dict]) -> list[np.ndarray]:
    import nibabel as nib

    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["source"])
    return [np.asarray(nib.load(out / r["nifti"]).dataobj) for r in ok]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="trained checkpoint (e.g. the cpu preset trained on knee-acl)")
    p.add_argument("--preset", default="cpu", help="bundle preset the checkpoint was trained with (default: cpu)")
    p.add_argument("--series", type=Path, default=DEFAULT_SERIES, help="DICOM series folder (default: knee-dess-sag)")
    p.add_argument("--copies", type=int, default=4, help="series copies timed per pipeline (default: 4)")
    p.add_argument("--runtimes", nargs="+", default=["auto", "eager", "bf16", "onnx"])
    p.add_argument("--memory-series", type=int, default=20, help="consecutive series for the memory check (0: skip)")
    p.add_argument("--no-avx2", action="store_true", help="skip the child run under ATEN_CPU_CAPABILITY=avx2")
    p.add_argument("--no-limits", action="store_true", help="skip measuring the convolution limits")
    p.add_argument("--json", type=Path, default=PROJECT / "docs" / "tables" / "infer_benchmark.json")
    args = p.parse_args(argv)

    from kneeseg.inference.batch import predict_folder
    from kneeseg.inference.segmenter import load_segmenter

    say = lambda line: print(line, flush=True)  # noqa: E731
    tmp = Path(tempfile.mkdtemp(prefix="kneeseg-bench-"))
    try:
        say(f"copying {args.series} x {args.copies} with new UIDs ...")
        folders = make_copies(args.series, tmp / "in", args.copies)
        seg, settings = load_segmenter(ckpt=args.ckpt, preset=args.preset, runtime="eager")
        n_slices = len(list(folders[0].iterdir()))
        results: dict[str, dict] = {}

        say("plain MONAI pipeline (eager fp32) ...")
        plain_monai(folders[:1], seg.network, settings, tmp / "warm")  # warm-up
        PLAIN_STAGES.clear()
        t0 = time.perf_counter()
        plain = plain_monai(folders, seg.network, settings, tmp / "plain")
        plain_s = (time.perf_counter() - t0) / len(folders)
        results["plain MONAI"] = {"seconds_per_series": plain_s,
                                  "stage_seconds_per_series": {k: round(v, 3) for k, v in PLAIN_STAGES.items()}}
        say(f"  per series: {results['plain MONAI']['stage_seconds_per_series']}")
        say(f"  {plain_s:.2f} s per series")
        del seg
        gc.collect()

        labels: dict[str, list[np.ndarray]] = {}
        for runtime in args.runtimes:
            say(f"kneeseg {runtime} ...")
            quiet = lambda line: None  # noqa: E731
            predict_folder(folders[0], tmp / f"warm_{runtime}", ckpt=args.ckpt, preset=args.preset,
                           runtime=runtime, formats=["nifti"], progress=quiet)  # fmt: skip
            t0 = time.perf_counter()
            res = predict_folder(tmp / "in", tmp / f"out_{runtime}", ckpt=args.ckpt, preset=args.preset,
                                 runtime=runtime, formats=["nifti"], progress=quiet)  # fmt: skip
            sec = (time.perf_counter() - t0) / len(folders)
            labels[runtime] = kneeseg_labels(tmp / f"out_{runtime}", res.rows)
            entry = {"seconds_per_series": sec, "speedup_vs_plain": plain_s / sec,
                     "stage_seconds_per_series": stage_split(tmp / f"out_{runtime}")}  # fmt: skip
            rec = next((json.loads(p.read_text()) for p in (tmp / f"out_{runtime}" / ".kneeseg" / "records").glob("*.json")), {})
            entry["resolved"] = rec.get("runtime", runtime)
            entry["reason"] = rec.get("runtime_reason", "")
            name = f"kneeseg {runtime}" + (f" (default; resolved: {entry['resolved']})" if runtime == "auto" else "")
            results[name] = entry
            say(f"  {sec:.2f} s per series, x{plain_s / sec:.2f} vs plain MONAI"
                + (f"; resolved to {entry['resolved']}: {entry['reason']}" if runtime == "auto" else ""))  # fmt: skip
            say(f"  per series: {entry['stage_seconds_per_series']}")
        ref = labels.get("eager")
        names = {runtime: next(k for k in results if k == f"kneeseg {runtime}" or k.startswith(f"kneeseg {runtime} ("))
                 for runtime in labels}  # fmt: skip
        for runtime, labs in labels.items():
            entry = results[names[runtime]]
            entry["dice_vs_plain"] = min(dice(a, b) for a, b in zip(labs, plain))
            if ref is not None:
                entry["dice_vs_eager"] = min(dice(a, b) for a, b in zip(labs, ref))
        if "eager" in labels:
            results["plain MONAI"]["dice_vs_eager"] = results["kneeseg eager"]["dice_vs_plain"]
        gflop_slice = network_gflops(load_segmenter(ckpt=args.ckpt, preset=args.preset, runtime="eager")[0].network,
                                     settings["spatial_size"])  # fmt: skip
        for entry in results.values():
            net_s = entry.get("stage_seconds_per_series", {}).get("network")
            if net_s:
                entry["network_gflop_per_s"] = round(gflop_slice * n_slices / net_s, 1)
        components: dict[str, float] = {}
        if not args.no_limits:
            say("components: ONNX Runtime threading, CLAHE ...")
            components = component_timings(folders[0], load_segmenter(ckpt=args.ckpt, preset=args.preset,
                                                                      runtime="eager")[0].network, settings)  # fmt: skip
            say(f"  {components}")
        limits = {}
        if not args.no_limits:
            say("convolution limits of this machine ...")
            limits = {"fp32": round(conv_limit_gflops(torch.float32), 1), "bf16": round(conv_limit_gflops(torch.bfloat16), 1)}
            say(f"  {limits} GFLOP/s")
        avx2 = None
        if not args.no_avx2 and torch.backends.cpu.get_cpu_capability() != "AVX2":
            say("again under ATEN_CPU_CAPABILITY=avx2 (a CPU without native bf16) ...")
            avx2 = avx2_child(args)
        fg = [int((x > 0).sum()) for x in plain]

        memory: list[float] = []
        if args.memory_series:
            say(f"memory over {args.memory_series} consecutive series (default runtime) ...")
            mem_in = tmp / "mem"
            make_copies(args.series, mem_in, args.memory_series)
            shutil.rmtree(tmp / "in")

            def track(line: str) -> None:
                if line.lstrip().startswith("ok"):
                    memory.append(round(rss_mb(), 1))

            predict_folder(mem_in, tmp / "out_mem", ckpt=args.ckpt, preset=args.preset, progress=track)
        report = {
            "command": "python benchmarks/infer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "series": str(args.series.name),
            "slices": n_slices,
            "copies": len(folders),
            "network": settings["network_name"],
            "spatial_size": settings["spatial_size"],
            "foreground_voxels_plain": fg,
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "network_gflop_per_series": round(gflop_slice * n_slices, 1),
            "conv_limit_gflop_per_s": limits,
            "component_seconds_per_series": components,
            "results": results,
            "rss_mb_after_each_series_default_runtime_all_outputs": memory,
        }
        if avx2 is not None:
            report["avx2_emulated"] = avx2
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        say("")
        say("| pipeline | s / series | vs plain MONAI | Dice vs kneeseg eager | Dice vs plain |")
        say("|---|---:|---:|---:|---:|")
        for name, r in results.items():
            say(f"| {name} | {r['seconds_per_series']:.2f} | x{r.get('speedup_vs_plain', 1.0):.2f} | "
                f"{r.get('dice_vs_eager', float('nan')):.4f} | {r.get('dice_vs_plain', 1.0):.4f} |")  # fmt: skip
        if avx2 is not None:
            for name, r in avx2["results"].items():
                say(f"| {name}, ATEN_CPU_CAPABILITY=avx2 | {r['seconds_per_series']:.2f} | "
                    f"x{r.get('speedup_vs_plain', 1.0):.2f} | | |")  # fmt: skip
        if memory:
            say(f"RSS after each series (MiB): {memory}")
            say(f"first 5 max {max(memory[:5]):.0f} MiB, last 5 max {max(memory[-5:]):.0f} MiB")
        say(f"wrote {args.json}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
