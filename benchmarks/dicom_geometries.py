"""Accuracy of a knee-acl model on the same slices as PNG and as DICOM series in any layout.

Each image of a knee-acl split is written as a sagittal DICOM series
(:func:`kneeseg.data.slice_series.write_slice_series`) in several in-plane layouts -- ``standard``
(ImageOrientationPatient [0,1,0, 0,0,-1]: anterior left, superior up, as scanners store it),
``anterior_right``, ``png_layout`` (the PNGs' own layout) and ``transposed`` by default -- then
segmented with ``kneeseg infer`` (:func:`kneeseg.inference.predict_folder`). Each mask is brought
back to the PNG's layout through its NIfTI affine and scored against the PNG mask. The same model
also segments the PNGs directly with the same inference definition (``png``), so the rows compare
like with like; the bundle's ``evaluate`` workflow gives the PNG evaluation without
post-processing (run it separately: ``kneeseg evaluate --preset cpu --data knee_acl ...``).

    python benchmarks/dicom_geometries.py --ckpt models/model.pt --preset cpu
    python benchmarks/dicom_geometries.py --score-only OUT --tree TREE   # score another tool's output

Prints mean Dice per layout and writes a JSON report (``--json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared" / "data"
LAYOUTS = {"standard": "PI", "anterior_right": "AI", "png_layout": "IP", "transposed": "SA",
           "upside_down": "PS", "rotated_180": "AS", "png_flipped_rows": "IA", "png_flipped_columns": "SP"}  # fmt: skip


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def cases(split: str, root: Path) -> list[dict[str, str]]:
    manifest = json.loads((PROJECT / "data_manifests" / "knee_acl.json").read_text())
    return [{"case": Path(e["image"]).parent.name, "image": str(root / e["image"]), "label": str(root / e["label"])}
            for e in manifest[split]]  # fmt: skip


def write_tree(items: list[dict[str, str]], layouts: list[str], declared: str, tree: Path) -> None:
    from kneeseg.data.images2d import read_image2d
    from kneeseg.data.slice_series import write_slice_series

    for it in items:
        img = read_image2d(it["image"])
        for name in layouts:
            write_slice_series(tree / it["case"] / name, img, declared, LAYOUTS[name], slices=1,
                               patient_id=it["case"], uid_seed=f"{it['case']}|{name}")  # fmt: skip


def score_output(out: Path, tree: Path, items: list[dict[str, str]], declared: str) -> dict[str, list[float]]:
    """Dice per layout of the masks a run wrote under ``out`` (its manifest.csv), in the PNG layout."""
    import nibabel as nib

    from kneeseg.data.images2d import read_mask2d
    from kneeseg.data.orientation import map_volume

    truth = {it["case"]: read_mask2d(it["label"], allow_empty=True) for it in items}
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    scores: dict[str, list[float]] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        parts = Path(row["source"]).parts  # <case>/<layout>[/IM0001.dcm for a one-file series]
        if parts[-1].lower().endswith(".dcm"):
            parts = parts[:-1]
        case, layout = parts[-2], parts[-1]
        img = nib.load(str(out / row["nifti"]))
        labels = np.asarray(img.dataobj)
        plane = map_volume(img.affine, declared).apply(labels)[:, :, 0].T  # (H, W) like the PNG
        scores.setdefault(layout, []).append(dice(plane, truth[case]))
    return scores


def png_scores(items: list[dict[str, str]], ckpt: str, preset: str, runtime: str) -> list[float]:
    """The PNGs themselves through the same inference definition (fast path, 2D)."""
    from kneeseg.data.images2d import read_image2d, read_mask2d
    from kneeseg.inference.segmenter import load_segmenter

    seg, _ = load_segmenter(ckpt=ckpt, preset=preset, runtime=runtime)
    out = []
    for it in items:
        img = read_image2d(it["image"]).astype(np.float32)
        pred = seg(np.ascontiguousarray(img.T)[:, :, None])[:, :, 0].T  # declared == model orientation
        out.append(dice(pred, read_mask2d(it["label"], allow_empty=True)))
    seg.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="model trained on knee-acl (cpu preset by default)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--runtime", default="eager")
    p.add_argument("--split", default="validation", help="knee_acl.json key (default: validation)")
    p.add_argument("--layouts", nargs="+", default=["standard", "anterior_right", "png_layout", "transposed"],
                   choices=sorted(LAYOUTS))  # fmt: skip
    p.add_argument("--data-root", type=Path, default=SHARED / "knee-acl")
    p.add_argument("--tree", type=Path, default=None, help="where to write the DICOM series (default: a temp folder)")
    p.add_argument("--out", type=Path, default=None, help="kneeseg infer output (default: a temp folder)")
    p.add_argument("--score-only", type=Path, default=None, help="only score the manifest/NIfTIs under this folder")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)

    from kneeseg.data.orientation import datalist_orientation

    declared = datalist_orientation(PROJECT / "data_manifests" / "knee_acl.json").code
    items = cases(args.split, args.data_root)
    work = Path(tempfile.mkdtemp(prefix="kneeseg-geometries-"))
    tree = args.tree or work / "tree"
    report: dict[str, object] = {"split": args.split, "cases": len(items), "declared_png_orientation": declared}
    if args.score_only is None:
        if not args.ckpt:
            p.error("--ckpt is required unless --score-only")
        from kneeseg.inference.batch import predict_folder

        if not tree.exists():
            print(f"writing {len(items)} cases x {len(args.layouts)} layouts as DICOM series under {tree} ...", flush=True)
            write_tree(items, args.layouts, declared, tree)
        out = args.out or work / "out"
        t0 = time.perf_counter()
        res = predict_folder(tree, out, ckpt=args.ckpt, preset=args.preset, runtime=args.runtime,
                             formats=["nifti"], progress=lambda line: None)  # fmt: skip
        report["infer_seconds"] = round(time.perf_counter() - t0, 1)
        report["infer_counts"] = res.counts
        png = png_scores(items, args.ckpt, args.preset, args.runtime)
        report["png"] = {"mean_dice": float(np.mean(png)), "per_case": png}
        print(f"png (same inference definition): mean Dice {np.mean(png):.4f}")
    else:
        out = args.score_only
    scores = score_output(out, tree, items, declared)
    for layout, values in sorted(scores.items()):
        report[layout] = {"mean_dice": float(np.mean(values)), "n": len(values), "per_case": values}
        print(f"{layout:20s} ({LAYOUTS.get(layout, '?')}): mean Dice {np.mean(values):.4f} over {len(values)} cases")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report["command"] = "python benchmarks/dicom_geometries.py " + " ".join(argv if argv is not None else sys.argv[1:])
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
