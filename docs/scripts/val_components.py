"""Dice and HD95 of trained models on the bundle's evaluation split, raw and after the largest component.

``kneeseg evaluate`` reports the network's raw argmax (the paper's metrics). ``kneeseg infer``
keeps the largest connected component of each class. This script runs the evaluation chain of
the bundle (same data, same preprocessing, same inferer) for each model folder and reports, per
model and over all of them, the per-image mean Dice and HD95 (network-grid pixels) of both the
raw argmax and the largest 2D component per class (full connectivity), so that a change of the
HD95 can be traced to stray islands or to the boundary of the structure itself::

    python docs/scripts/val_components.py --preset cpu --data knee_acl MODELS_DIR [MODELS_DIR ...]

Writes one JSON object per model folder to stdout (and to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from kneeseg.workflows import default_bundle_dir, workflow_config_files

FULL_2D = np.ones((3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D boolean mask (the mask itself when empty)."""
    labels, n = ndimage.label(mask, structure=FULL_2D)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


def dice_hd95(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Dice and the 95th-percentile symmetric Hausdorff distance (pixels) of two 2D masks.

    Dice is 1 for two empty masks; HD95 is NaN when either mask is empty."""
    from monai.metrics import compute_hausdorff_distance

    inter, total = float(np.logical_and(pred, ref).sum()), float(pred.sum() + ref.sum())
    dice = 1.0 if total == 0 else 2 * inter / total
    if not pred.any() or not ref.any():
        return dice, math.nan
    p = torch.from_numpy(pred[None, None].astype(np.float32))
    r = torch.from_numpy(ref[None, None].astype(np.float32))
    return dice, float(compute_hausdorff_distance(p, r, percentile=95).item())


def evaluate(models: Path, preset: str | None, data: str | None, classes: list[int]) -> dict:
    from monai.bundle import ConfigWorkflow
    from monai.engines import Evaluator
    from monai.handlers import from_engine

    root = default_bundle_dir()
    with tempfile.TemporaryDirectory() as tmp:
        wf = ConfigWorkflow(
            config_file=workflow_config_files("evaluate", root, preset, data), workflow_type="eval",
            meta_file=str(root / "configs" / "metadata.json"), bundle_root=str(root),
            ckpt_dir=str(models), output_dir=tmp,
        )  # fmt: skip
        wf.initialize()
        evaluator: Evaluator = wf.parser.get_parsed_content("validate#evaluator")
        rows: list[dict] = []

        def collect(engine: Evaluator) -> None:
            preds, labels = from_engine(["pred", "label"])(engine.state.output)
            for pred, label in zip(preds, labels):
                cls = torch.as_tensor(pred).argmax(0).cpu().numpy()
                ref = torch.as_tensor(label)[0].cpu().numpy().round().astype(int)
                for c in classes:
                    raw_mask, ref_mask = cls == c, ref == c
                    raw = dice_hd95(raw_mask, ref_mask)
                    lcc = dice_hd95(largest_component(raw_mask), ref_mask)
                    islands = int(ndimage.label(raw_mask, structure=FULL_2D)[1])
                    rows.append({"class": c, "dice": raw[0], "hd95": raw[1], "dice_lcc": lcc[0], "hd95_lcc": lcc[1],
                                 "components": islands})  # fmt: skip

        from ignite.engine import Events

        evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect)
        evaluator.run()

    def mean(key: str) -> float:
        vals = [r[key] for r in rows if not math.isnan(r[key])]
        return float(np.mean(vals)) if vals else math.nan

    return {
        "models": str(models), "cases": len(rows),
        "dice": mean("dice"), "hd95": mean("hd95"), "dice_lcc": mean("dice_lcc"), "hd95_lcc": mean("hd95_lcc"),
        "hd95_cases": sum(not math.isnan(r["hd95"]) for r in rows),
        "images_with_islands": sum(r["components"] > 1 for r in rows),
        "mean_components": float(np.mean([r["components"] for r in rows])) if rows else math.nan,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="folders holding model.pt")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", default="knee_acl")
    ap.add_argument("--classes", type=int, nargs="+", default=[1], help="class ids to score (default: 1)")
    ap.add_argument("--out", type=Path, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    results = []
    for m in args.models:
        res = evaluate(m, args.preset, args.data, args.classes)
        print(json.dumps(res), flush=True)
        results.append(res)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
