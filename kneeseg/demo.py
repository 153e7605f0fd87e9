"""``make demo``: the whole pipeline on the synthetic knee phantom, on a CPU, in minutes.

Steps (each through the same library/bundle entry points a user would call):

1. generate the phantom (``kneeseg data phantom``);
2. train the ``cpu`` preset through the bundle (``python -m monai.bundle run training``);
3. evaluate the best checkpoint on the phantom's test split (per-case CSV, summary JSON,
   the paper's Table 1 layout on the console);
4. run the bundle's inference config on the test cases' DICOM series (slice by slice,
   back to the series geometry, NIfTI out) and save an overlay PNG.

    python -m kneeseg.demo --out out/demo
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main", "run_demo"]


def _step(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def run_demo(out: Path, cases: int = 12, seed: int = 0, epochs: int | None = None, fresh: bool = False) -> dict:
    """Run the demo into ``out``; returns the evaluation summary and timings."""
    # inside: `python -m kneeseg.demo --help` answers without torch and MONAI
    import nibabel as nib
    import numpy as np

    from kneeseg.phantom import generate_phantom
    from kneeseg.inference import save_overlay_png
    from kneeseg.workflows import run_workflow

    out = Path(out).resolve()
    t0 = time.perf_counter()
    timings = {}
    phantom = out / "phantom"
    models, runs, evals, seg = out / "models", out / "runs", out / "eval", out / "inference"
    if fresh:
        import shutil

        for d in (models, runs, evals, seg):
            shutil.rmtree(d, ignore_errors=True)

    _step(f"1/4 phantom: {cases} cases -> {phantom}")
    datalist_2d = phantom / "dataset_2d.json"
    if not datalist_2d.is_file() or "image_orientation" not in json.loads(datalist_2d.read_text()):
        generate_phantom(phantom, cases=cases, seed=seed, progress=lambda line: print("   ", line, flush=True))
    else:
        print("    already there (delete it to regenerate)")
    timings["phantom_s"] = time.perf_counter() - t0

    common = {"dataset_dir": str(phantom), "ckpt_dir": str(models)}
    _step("2/4 training the cpu preset through the bundle (monai.bundle run training)")
    t = time.perf_counter()
    overrides = dict(common, output_dir=str(runs))
    if epochs is not None:
        overrides["max_epochs"] = epochs
    run_workflow("train", preset="cpu", data="phantom", overrides=overrides)
    timings["train_s"] = time.perf_counter() - t

    _step("3/4 evaluating the best checkpoint on the phantom's test split")
    t = time.perf_counter()
    run_workflow("evaluate", preset="cpu", data="phantom", overrides=dict(common, output_dir=str(evals)))
    timings["evaluate_s"] = time.perf_counter() - t
    summary_path = evals / "metrics_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}

    _step("4/4 inference on the test cases' DICOM series (slice-wise, original geometry, NIfTI)")
    t = time.perf_counter()
    run_workflow(
        "infer",
        overrides=dict(common, output_dir=str(seg), input_field="dicom", infer_list_key="test"),
    )
    timings["infer_s"] = time.perf_counter() - t
    datalist = json.loads((phantom / "dataset.json").read_text())["test"]
    first = datalist[0]
    case_dir = Path(first["dicom"]).name
    pred = np.asarray(nib.load(seg / f"{case_dir}_seg.nii.gz").dataobj)
    image_nii = nib.load(phantom / first["image"])
    image = np.asarray(image_nii.dataobj)
    truth = np.asarray(nib.load(phantom / first["label"]).dataobj) == 4
    dice = 2 * np.logical_and(pred > 0, truth).sum() / max((pred > 0).sum() + truth.sum(), 1)
    overlay = save_overlay_png(
        image, pred, out / "overlay.png", title=f"{case_dir}: predicted ligament (fill) vs truth (contour), Dice {dice:.3f}",
        class_names={1: "patellar ligament (predicted)"}, reference=truth, affine=image_nii.affine,
    )  # fmt: skip
    timings["total_s"] = time.perf_counter() - t0
    print(f"\n    DICOM-series inference Dice on {case_dir}: {dice:.3f}")
    print(f"    training curves: {runs / 'training_curves.png'}")
    print(f"    overlay:         {overlay}")
    print(f"    evaluation:      {evals}")
    print("    timings: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return {"summary": summary, "timings": timings, "dicom_dice": float(dice)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kneeseg.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    parser.add_argument("--cases", type=int, default=12, help="phantom cases (default: 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the cpu preset's epochs")
    parser.add_argument("--fresh", action="store_true", help="discard earlier checkpoints and outputs (keeps the phantom)")
    args = parser.parse_args(argv)
    run_demo(Path(args.out), cases=args.cases, seed=args.seed, epochs=args.epochs, fresh=args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
