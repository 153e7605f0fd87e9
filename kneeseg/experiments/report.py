"""The Table 1 report: the finished runs' outputs read back, and the tables written from them.

Reads each run's ``eval/metrics_per_case.csv`` and ``eval/metrics_summary.json`` (one
per-case table over methods and seeds, :func:`case_table`), writes ``runs.csv``,
``per_case.csv`` and ``paired.csv``, and lays out ``table1.md`` (:func:`markdown`) with the
paper's own table beside it (:func:`load_paper_table`).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kneeseg.atomic import atomic_write_text
from kneeseg.experiments.protocol import REFERENCE, run_dirs
from kneeseg.experiments.runs import describe_environment

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "METRICS",
    "PER_CASE_COLUMNS",
    "best_per_metric",
    "case_table",
    "hd95_undefined",
    "load_paper_table",
    "markdown",
    "per_case",
    "short_case",
    "write_paired_csv",
    "write_per_case",
    "write_runs_csv",
]

#: the test metrics of a run (its row in ``runs.csv``) and of the table, in the table's order
METRICS = ["loss_rate", "mae", "f1", "dice", "hd95"]
#: the columns of ``per_case.csv`` after ``method``, ``seed`` and ``case``
PER_CASE_COLUMNS = ["loss", "mae", "f1", "dice", "iou", "precision", "recall", "hd95"]
#: the columns of ``runs.csv``
RUN_COLUMNS = ["method", "seed", *METRICS, "val_f1", "epoch", "train_s", "wall_s", "num_cases"]


def case_table(out: Path, methods: Sequence[str], seeds: Sequence[int]) -> pd.DataFrame:
    """Every test case of the methods' finished runs (their ``metrics_per_case.csv``) in one table.

    Columns ``method``, ``seed``, then the files' columns as text (``""`` where a file lacks
    one); rows by method, then seed, then file order.
    """
    import pandas as pd

    frames = []
    for method in methods:
        for seed in seeds:
            path = run_dirs(out, method, seed)["eval"] / "metrics_per_case.csv"
            if path.is_file():
                try:
                    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
                except pd.errors.EmptyDataError:  # an evaluation of no cases
                    continue
                frames.append(frame.assign(method=method, seed=seed))
    if not frames:
        return pd.DataFrame(columns=["method", "seed", "case_id"])
    table = pd.concat(frames, ignore_index=True).fillna("")
    return table[["method", "seed", *(c for c in table.columns if c not in ("method", "seed"))]]


def per_case(out: Path, method: str, seeds: Sequence[int], column: str = "dice") -> dict[str, float]:
    """Per-case ``column`` averaged over seeds (cases in first-seen order)."""
    table = case_table(out, [method], seeds)
    if column not in table.columns:
        return {}
    rows = table[table[column] != ""]
    # np.mean per case, as published: pandas' own groupby mean sums with compensation and can
    # differ from it in the last bit
    means = rows[column].astype(float).groupby(rows["case_id"], sort=False).agg(lambda v: np.mean(v.to_numpy()))
    return {str(k): float(v) for k, v in means.items()}


def hd95_undefined(out: Path, method: str, seeds: Sequence[int]) -> tuple:
    """``(test images without an HD95, test images)`` over the seeds' runs.

    HD95 is undefined where exactly one of prediction and truth is empty (e.g. the network
    predicts nothing on an image with a ligament); the evaluator leaves such images out of the
    HD95 mean, which would flatter a method that misses whole structures. The evaluator's
    summary counts them (``hd95_skipped`` of ``num_cases``).
    """
    missing = total = 0
    for seed in seeds:
        path = run_dirs(out, method, seed)["eval"] / "metrics_summary.json"
        if path.is_file():
            summary = json.loads(path.read_text())
            missing += int(summary.get("hd95_skipped") or 0)
            total += int(summary.get("num_cases") or 0)
    return missing, total


def short_case(case_id: str) -> str:
    """A case's name without the data root: ``.../cases/14/mask.png`` -> ``14``."""
    p = Path(case_id)
    return p.parent.name if p.stem in ("mask", "label", "seg") else p.name.split(".")[0]


def write_per_case(out: Path, methods: Sequence[str], seeds: Sequence[int]) -> None:
    """``per_case.csv``: every method, seed and test case in one file (case names without paths)."""
    table = case_table(out, methods, seeds)
    table = table.assign(case=table["case_id"].map(short_case))
    buf = io.StringIO()
    table.reindex(columns=["method", "seed", "case", *PER_CASE_COLUMNS], fill_value="").to_csv(buf, index=False, lineterminator="\n")
    atomic_write_text(out / "per_case.csv", buf.getvalue())


def write_runs_csv(out: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``runs.csv``: one row per method and seed (test metrics, best validation F1, times)."""
    buf = [",".join(RUN_COLUMNS)]
    for r in rows:
        buf.append(",".join(str(r.get(k, "")) for k in RUN_COLUMNS))
    atomic_write_text(out / "runs.csv", "\n".join(buf) + "\n")


def write_paired_csv(out: Path, paired: Sequence[Mapping[str, Any]]) -> None:
    """``paired.csv``: the paired comparisons against the reference (see :func:`kneeseg.experiments.stats.paired_comparison`)."""
    lines = ["method,n,mean_dice_diff,ci_low,ci_high,wilcoxon_p"]
    lines += [f"{p['method']},{p['n']},{p['mean_diff']:.4f},{p['ci_low']:.4f},{p['ci_high']:.4f},{p['wilcoxon_p']:.4g}" for p in paired]
    atomic_write_text(out / "paired.csv", "\n".join(lines) + "\n")


def _fmt(ms: tuple, digits: int = 4) -> str:
    mean, sd = ms
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def load_paper_table(path: Path) -> dict[str, Any]:
    """Read and check a paper-table JSON (see :attr:`Table1Config.paper_table`)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the paper's table: {e}") from e
    methods = data.get("methods") if isinstance(data, dict) else None
    if not isinstance(methods, dict) or not methods:
        raise ValueError(f"{path}: expected {{'source': ..., 'methods': {{name: {{'loss_rate', 'mae', 'f1'}}}}}}")
    for name, vals in methods.items():
        bad = [k for k in ("loss_rate", "mae", "f1") if not isinstance((vals or {}).get(k), (int, float))]
        if bad:
            raise ValueError(f"{path}: method {name!r} lacks numeric {', '.join(bad)}")
    return {"source": str(data.get("source", path)), "methods": methods}


#: metric -> True when higher is better
_HIGHER_IS_BETTER = {"loss_rate": False, "mae": False, "f1": True, "dice": True, "hd95": False}


def best_per_metric(table: Mapping[str, Any]) -> dict[str, str]:
    """``{metric: best method}`` by the mean over seeds (loss rate, MAE, HD95 lower; F1, Dice higher)."""
    out: dict[str, str] = {}
    for metric, higher in _HIGHER_IS_BETTER.items():
        # a method whose HD95 skips images (it missed a structure there) cannot be the best on HD95
        scored = [(e[metric][0], m) for m, e in table["methods"].items()
                  if not math.isnan(e[metric][0]) and not (metric == "hd95" and e.get("hd95_undefined"))]  # fmt: skip
        if scored:
            out[metric] = (max if higher else min)(scored)[1]
    return out


def markdown(table: Mapping[str, Any]) -> str:
    """The results table (mean ± sd over seeds) and the paired comparison, as Markdown."""
    head = "| method | loss rate | MAE | F1 | Dice | HD95 | params (M) | GFLOPs | train time (s) | seeds |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m, e in table["methods"].items():
        lines.append(
            f"| {m} | {_fmt(e['loss_rate'])} | {_fmt(e['mae'])} | {_fmt(e['f1'])} | {_fmt(e['dice'])} | "
            f"{_fmt(e['hd95'], 2)} | {e['params_m']:.3g} | {e['gflops']:.3g} | {_fmt(e['train_s'], 0)} | {e['n_seeds']} |"
        )
    skipped = [f"{m} {e['hd95_undefined']} of {e['n_images']}" for m, e in table["methods"].items() if e.get("hd95_undefined")]
    if skipped:
        lines += ["", "HD95 is undefined on a test image where exactly one of prediction and truth is empty; such images "
                      "are left out of the HD95 mean (over all seeds): " + ", ".join(skipped) + "."]  # fmt: skip
    best = best_per_metric(table)
    if best:
        lines += ["", "Best mean per metric: " + "; ".join(f"{k} {v}" for k, v in best.items()) + "."]
    env = table.get("environment")
    if env:
        total = table.get("total_run_s")
        lines += ["", f"Measured on {describe_environment(env)}" + (f"; all runs took {total / 3600:.2f} h." if total else ".")]
    paired = table.get("paired_vs_" + REFERENCE) or []
    if paired:
        lines += ["", f"Per-case Dice difference against {REFERENCE} (method minus {REFERENCE}; cases averaged over seeds):", "",
                  "| method | cases | mean difference | bootstrap 95 % CI | Wilcoxon p |", "|---|---:|---:|---|---:|"]  # fmt: skip
        for p in paired:
            lines.append(f"| {p['method']} | {p['n']} | {p['mean_diff']:+.4f} | [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}] | {p['wilcoxon_p']:.3g} |")
    paper = table.get("paper")
    if paper:
        lines += ["", f"The paper's own Table 1 (its data, not comparable number for number; source: {paper['source']}):", "",
                  "| method (paper) | loss rate | MAE | F1 |", "|---|---:|---:|---:|"]  # fmt: skip
        for m, v in paper["methods"].items():
            lines.append(f"| {m} | {v['loss_rate']:.4g} | {v['mae']:.4g} | {v['f1']:.4g} |")
    return "\n".join(lines) + "\n"

