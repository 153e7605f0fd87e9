"""What a knee-acl model predicts on whole real knee series, checked against weak labels.

Runs ``kneeseg infer`` (:func:`kneeseg.inference.predict_folder`, every echo) over the shared
knee series listed in ``data_manifests/knee_weak_labels.json`` (the DESS series and the 8
echoes of the multi-echo series) and reports per volume: the QC verdict, the ACL volume (mL),
the number of 3D components before and after the largest-component cleanup, the slices that
hold the mask and whether they lie inside the range labelled as possibly containing the ACL.
Preview PNGs are copied to ``--previews`` when given.

    python benchmarks/knee_series_check.py --ckpt models/model.pt --preset cpu --previews docs/figures/real_series

With ``--exclude`` a volume can be named whose slices were *not* used as negatives in
training (a held-out check); the report marks it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--runtime", default="eager")
    p.add_argument("--weak", type=Path, default=PROJECT / "data_manifests" / "knee_weak_labels.json")
    p.add_argument("--data-root", type=Path, default=SHARED)
    p.add_argument("--out", type=Path, default=None, help="kneeseg infer output (default: a temp folder)")
    p.add_argument("--previews", type=Path, default=None, help="copy the preview PNGs here")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--label", default="", help="a name for this model in the report")
    args = p.parse_args(argv)

    import nibabel as nib

    from kneeseg.inference.batch import predict_folder
    from kneeseg.inference.results import read_results_csv

    weak = json.loads(args.weak.read_text())
    ranges: dict[tuple, list[int]] = {}
    tree = Path(tempfile.mkdtemp(prefix="kneeseg-real-"))
    for v in weak["volumes"]:
        ranges[(Path(v["image"]).name, v.get("echo") or 0)] = list(v["possible"]["acl"])
        link = tree / Path(v["image"]).name
        if not link.exists():  # file links (discovery does not follow folder links); no data is copied
            link.mkdir()
            for f in sorted((args.data_root / v["image"]).iterdir()):
                os.symlink(f.resolve(), link / f.name)
    out = args.out or tree.parent / (tree.name + "-out")
    res = predict_folder(tree, out, ckpt=args.ckpt, preset=args.preset, runtime=args.runtime, echo="all",
                         formats=["nifti", "png"], progress=lambda line: print(line, flush=True))  # fmt: skip
    report = []
    print()
    print("| series | echo | qc | ACL mL | components raw | ACL slices | labelled possible | inside |")
    print("|---|---:|---|---:|---:|---|---|---|")
    for row in read_results_csv(res.manifest):
        if row["status"] != "ok":
            print(f"| {row['source']} | | {row['status']}: {row['reason']} | | | | | |")
            continue
        name = Path(row["source"]).parts[0]
        echo = int(row["echo_index"] or 0)
        labels = np.asarray(nib.load(str(out / row["nifti"])).dataobj)
        ks = np.flatnonzero(labels.reshape(-1, labels.shape[-1]).any(axis=0))
        lo, hi = ranges.get((name, echo), [None, None])
        inside = bool(len(ks) == 0 or (lo is not None and ks.min() >= lo and ks.max() <= hi))
        slices = f"{ks.min()}-{ks.max()}" if len(ks) else "none"
        entry = {
            "series": name, "echo": echo, "qc": row["qc"], "volume_ml": float(row.get("volume_ml_ligament") or 0),
            "raw_components": row.get("components_ligament"), "slices": slices, "possible": [lo, hi],
            "inside_possible": inside, "extent_mm": row.get("extent_mm_ligament"),
            "confidence": row.get("confidence_ligament"), "preview": row["preview"],
        }  # fmt: skip
        report.append(entry)
        print(f"| {name} | {echo} | {row['qc']} | {entry['volume_ml']:.2f} | {entry['raw_components']} | {slices} | "
              f"{lo}-{hi} | {'yes' if inside else 'NO'} |")  # fmt: skip
        if args.previews:
            dst = args.previews / f"{args.label + '_' if args.label else ''}{name}_e{echo}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / row["preview"], dst)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"label": args.label, "ckpt": str(args.ckpt), "rows": report,
                                         "command": "python benchmarks/knee_series_check.py " + " ".join(argv or sys.argv[1:])},
                                        indent=2) + "\n")  # fmt: skip
    shutil.rmtree(tree, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
