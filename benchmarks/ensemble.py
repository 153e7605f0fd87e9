"""Time and memory of fold ensembles: ``kneeseg infer`` with 1, 2, ... members, one process each.

Each run segments ``--copies`` copies (fresh UIDs) of the shared knee DESS series with the same
checkpoint repeated N times (the cost does not depend on the weights), after a warm-up series
that also exports and caches the members' ONNX models; it prints seconds per series and the
process's peak resident memory.

    python benchmarks/ensemble.py --ckpt MODEL --preset cpu --members 1 2 5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer import DEFAULT_SERIES, make_copies  # noqa: E402


def one_run(ckpt: str, preset: str, members: int, folder: Path, out: Path) -> dict:
    from kneeseg.inference.batch import predict_folder

    ckpts = [ckpt] * members if members > 1 else ckpt
    quiet = lambda line: None  # noqa: E731
    predict_folder(sorted(folder.iterdir())[0], out, ckpt=ckpts, preset=preset, formats=["nifti"], progress=quiet)
    n = len(list(folder.iterdir()))
    t0 = time.perf_counter()
    predict_folder(folder, out, ckpt=ckpts, preset=preset, formats=["nifti"], progress=quiet, overwrite=True)
    return {"members": members, "seconds_per_series": round((time.perf_counter() - t0) / n, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--members", type=int, nargs="+", default=[1, 2, 5])
    p.add_argument("--copies", type=int, default=3)
    p.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(one_run(args.ckpt, args.preset, args.child, args.folder, Path(out))))
        return 0
    with tempfile.TemporaryDirectory(prefix="kneeseg-ens-") as tmp:
        make_copies(args.series, Path(tmp) / "in", args.copies)
        for n in args.members:
            res = subprocess.run([sys.executable, __file__, "--ckpt", args.ckpt, "--preset", args.preset,
                                  "--child", str(n), "--folder", str(Path(tmp) / "in")],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            print(res.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
