"""The cross-validated Table 1 report: statistics over out-of-fold cases, the Markdown table, the plots.

Input is the out-of-fold table of :func:`kneeseg.experiments.cv.oof_table` (one row per method,
training seed and case; metrics at each image's own resolution, and the network grid's Dice as
``dice_grid``). Where a method has several training seeds, each case's metrics are first averaged
over its seeds (:func:`seed_averaged`): the case, not the (case, seed) pair, is the replicate. Per
method: mean +- sd over cases and over folds (of the fold means) of the paper's metrics (loss
rate as cross-entropy, MAE, F1) and Dice / HD95; against the reference, at two levels
(:mod:`kneeseg.experiments.stats`): per case (paired differences, bootstrap 95 % CI, Wilcoxon
signed-rank p, Holm-corrected across the methods) and per fold (the 5 fold means as the
replicates: mean difference, t-based CI, paired t-test p Holm-corrected, exact Wilcoxon p).
Every number can be recomputed from ``oof_per_case.csv`` alone (``docs/scripts/cv_recompute.py``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.atomic import atomic_write_bytes, atomic_write_text
from kneeseg.experiments.plots import figure_bytes
from kneeseg.experiments.runs import describe_environment
from kneeseg.experiments.stats import fold_level_comparison, holm, mean_sd, paired_comparison

__all__ = ["cv_markdown", "cv_statistics", "seed_averaged", "plot_fold_boxes", "plot_paired_dots", "write_csv"]

#: the table's metrics (per-case column, label), in the paper's order first
TABLE_METRICS = [("loss", "loss rate (CE)"), ("mae", "MAE"), ("f1", "F1"), ("dice", "Dice"), ("hd95", "HD95 (px)")]
#: an extra column when the table has it: the Dice on the network's N x N grid
GRID_METRIC = ("dice_grid", "Dice on the N px grid")
#: the metrics compared pairwise against the reference, with their direction (True: higher is better)
PAIRED_METRICS = {"dice": True, "hd95": False}


def write_csv(path: Path, rows: Any, columns: Sequence[str] | None = None) -> None:
    """A pandas table, or dict rows with ``columns``, as CSV (atomic)."""
    buf = io.StringIO()
    if columns is None:
        rows.to_csv(buf, index=False, lineterminator="\n")
    else:
        w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _values(table: Any, method: str, metric: str) -> dict[str, float]:
    """``{case: value}`` of one method (NaN values, e.g. an undefined HD95, left out)."""
    mine = table[table["method"] == method]
    return {str(c): float(v) for c, v in zip(mine["case"], mine[metric]) if not (isinstance(v, float) and math.isnan(v))}


def seed_averaged(table: Any) -> Any:
    """One row per method and case: the mean of each metric over the case's training seeds (NaN
    values, e.g. an undefined HD95, left out of the mean; NaN only when every seed's is), with the
    number of seeds as ``n_seeds``. A table without a ``seed`` column is one seed per case."""
    if "seed" not in table.columns:
        return table.assign(n_seeds=1)
    metrics = [c for c in table.columns if c not in ("method", "seed", "fold", "case")]
    keys = ["method", "fold", "case"]
    grouped = table.assign(**{c: table[c].astype(float) for c in metrics}).groupby(keys, sort=False)
    means = grouped[metrics].mean()
    return means.assign(n_seeds=grouped["seed"].nunique()).reset_index()


def cv_statistics(table: Any, methods: Sequence[str], reference: str, all_cases: Sequence[str], k: int) -> dict[str, Any]:
    """The table as a dict: per method its cases, folds, seeds, metrics over cases and over folds
    (each case's mean over its seeds); the paired tests."""
    table = seed_averaged(table)
    out: dict[str, Any] = {"reference": reference, "methods": {}, "paired": {}}
    for m in methods:
        mine = table[table["method"] == m]
        cases = set(map(str, mine["case"]))
        entry: dict[str, Any] = {"n_cases": len(cases), "n_folds": int(mine["fold"].nunique()), "folds": sorted(map(int, set(mine["fold"]))),
                                 "missing_cases": sorted(set(all_cases) - cases), "over_cases": {}, "over_folds": {},
                                 "n_seeds": int(mine["n_seeds"].max()) if len(mine) else 0}  # fmt: skip
        for metric, _ in TABLE_METRICS + ([GRID_METRIC] if GRID_METRIC[0] in table.columns else []):
            vals = mine[metric].astype(float)
            entry["over_cases"][metric] = mean_sd(list(vals))
            fold_means = [float(np.nanmean(g[metric].astype(float))) for _, g in mine.groupby("fold") if g[metric].notna().any()]
            entry["over_folds"][metric] = mean_sd(fold_means)
        entry["hd95_undefined"] = int(mine["hd95"].isna().sum())
        out["methods"][m] = entry
    if reference not in methods:
        return out
    out["paired"] = {metric: _against_reference(lambda m: _values(table, m, metric), paired_comparison, "wilcoxon_p",
                                                "holm_p", methods, reference, higher)
                     for metric, higher in PAIRED_METRICS.items()}  # fmt: skip
    out["fold_level"] = {metric: _against_reference(lambda m: _fold_means(table, m, metric), fold_level_comparison,
                                                    "t_p", "holm_t_p", methods, reference, higher)
                         for metric, higher in PAIRED_METRICS.items()}  # fmt: skip
    return out


def _against_reference(
    values_of: Any, compare: Any, p_key: str, adjusted_key: str, methods: Sequence[str], reference: str, higher: bool
) -> list[dict[str, Any]]:
    """Every method but ``reference`` compared with it (``compare(reference's values, method's)``), the
    ``p_key`` p-values Holm-corrected across the methods (``adjusted_key``), and a verdict each: the
    reference is better when a method's difference points the wrong way, significantly."""
    ref = values_of(reference)
    rows = []
    for m in methods:
        if m == reference:
            continue
        p = compare(ref, values_of(m))
        p["method"] = m
        rows.append(p)
    for p, adj in zip(rows, holm([p[p_key] for p in rows])):
        p[adjusted_key] = adj
        worse = p["mean_diff"] < 0 if higher else p["mean_diff"] > 0
        p["verdict"] = ("n/a" if math.isnan(adj) else
                        f"{reference} better" if adj < 0.05 and worse else
                        f"{p['method']} better" if adj < 0.05 else "no significant difference")  # fmt: skip
    return rows


def _fold_means(table: Any, method: str, metric: str) -> dict[int, float]:
    """``{fold: mean over the fold's cases}`` of one method (NaN values left out of each mean)."""
    mine = table[table["method"] == method]
    out = {}
    for fold, g in mine.groupby("fold"):
        vals = g[metric].astype(float)
        if vals.notna().any():
            out[int(fold)] = float(np.nanmean(vals))
    return out


def _fmt(ms: Sequence[float], digits: int = 4) -> str:
    mean, sd = ms
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def cv_markdown(result: Mapping[str, Any]) -> str:
    """The cross-validated table and the paired comparisons (per case and per fold) as Markdown."""
    k, ref = result.get("k"), result["reference"]
    grid = any(GRID_METRIC[0] in e["over_cases"] for e in result["methods"].values())
    metrics = TABLE_METRICS + ([GRID_METRIC] if grid else [])
    head = "| method | cases | " + " | ".join(label for _, label in metrics) + " | Dice over folds |"
    space = result.get("measured", "at each image's own resolution")
    seeds = {m: int(e.get("n_seeds", 1)) for m, e in result["methods"].items()}
    several = any(n > 1 for n in seeds.values())
    seeding = ("one training seed per fold" if not several else
               "training seeds per fold in the seeds column; a case's value is its mean over those seeds")  # fmt: skip
    head = "| method |" + (" seeds |" if several else "") + head[len("| method |"):]
    lines = [f"{k}-fold cross-validation, out-of-fold predictions, mean ± sd over cases "
             f"({result.get('n_cases', '?')} cases; metrics {space}; {seeding}):", "", head,
             "|---|" + ("---:|" if several else "") + "---:|" + "---:|" * len(metrics) + "---:|"]  # fmt: skip
    for m, e in result["methods"].items():
        cells = [_fmt(e["over_cases"][metric], 2 if metric == "hd95" else 4) for metric, _ in metrics]
        over_folds = _fmt(e["over_folds"]["dice"]) if e["n_folds"] > 1 else f"{e['over_folds']['dice'][0]:.4f} (1 fold)"
        lines.append(f"| {m} |" + (f" {seeds[m]} |" if several else "") + f" {e['n_cases']} | " + " | ".join(cells) + f" | {over_folds} |")
    partial = {m: e for m, e in result["methods"].items() if e["missing_cases"]}
    if partial:
        done = "; ".join(f"{m} {', '.join(map(str, e.get('folds', [])))}" for m, e in result["methods"].items())
        lines += ["", f"**Partial table**: not every fold has run yet (folds finished: {done}). The means cover the "
                      "cases predicted so far; each paired comparison uses the cases both methods have."]  # fmt: skip
    capped = result.get("capped_runs") or []
    if capped:
        lines += ["", "**Runs stopped by the epoch cap, not by the convergence rule** (not converged): "
                  + ", ".join(capped) + "."]  # fmt: skip
    undefined = [f"{m} {e['hd95_undefined']}" for m, e in result["methods"].items() if e["hd95_undefined"]]
    if undefined:
        lines += ["", "HD95 is undefined where exactly one of prediction and truth is empty; cases left out of its mean: "
                  + ", ".join(undefined) + "."]  # fmt: skip
    for metric, rows in (result.get("paired") or {}).items():
        if not rows:
            continue
        lines += ["", f"Per-case {metric} difference, method minus {ref} (paired over out-of-fold cases, each case one "
                      f"replicate; bootstrap 95 % CI, Wilcoxon signed-rank p, Holm-corrected over {len(rows)} methods):", "",
                  "| method | cases | mean difference | 95 % CI | Wilcoxon p | Holm p | verdict |",
                  "|---|---:|---:|---|---:|---:|---|"]  # fmt: skip
        for p in rows:
            lines.append(f"| {p['method']} | {p['n']} | {p['mean_diff']:+.4f} | [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}] | "
                         f"{p['wilcoxon_p']:.3g} | {p['holm_p']:.3g} | {p['verdict']} |")  # fmt: skip
    for metric, rows in (result.get("fold_level") or {}).items():
        if not rows or all(p["n"] < 2 for p in rows):
            continue
        lines += ["", f"Per-fold {metric} difference, method minus {ref} (each fold's mean one replicate; t-based 95 % CI, "
                      f"paired t-test p Holm-corrected over {len(rows)} methods, exact Wilcoxon p, which cannot fall below "
                      "0.0625 with 5 folds):", "",
                  "| method | folds | per fold | mean difference | 95 % CI | t-test p | Holm p | Wilcoxon p | verdict |",
                  "|---|---:|---|---:|---|---:|---:|---:|---|"]  # fmt: skip
        for p in rows:
            per = " / ".join(f"{v:+.3f}" for v in p["per_fold"])
            lines.append(f"| {p['method']} | {p['n']} | {per} | {p['mean_diff']:+.4f} | [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}] | "
                         f"{p['t_p']:.3g} | {p['holm_t_p']:.3g} | {p['wilcoxon_p']:.3g} | {p['verdict']} |")  # fmt: skip
    env = result.get("environment")
    imported = result.get("imported_runs") or []
    if env:
        here = describe_environment(env)
        total = f"training took {result.get('train_s_total', 0) / 3600:.2f} h in all"
        if not imported:
            lines += ["", f"Measured on {here}; {total}."]
        else:
            where: dict[str, list[str]] = {}
            for r in imported:
                e = r.get("environment") or {}
                what = f"{r['from']} (trained on {e.get('cpu', 'an unrecorded machine')}, torch {e.get('torch', '?')}, {e.get('precision', '?')})"
                where.setdefault(what, []).append(r["run"])
            lines += ["", f"{len(imported)} run(s) were trained earlier and taken from the table in "
                      + "; ".join(f"{src}: {', '.join(runs)}" for src, runs in where.items())
                      + (f". The other runs were trained on {here}" if len(imported) < result.get("n_runs", len(imported) + 1) else "")
                      + f". Together, {total}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_paired_dots(table: Any, methods: Sequence[str], reference: str, path: Path) -> None:
    """Per-case out-of-fold Dice (mean over seeds): one panel per method, each case a line from the reference to the method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = seed_averaged(table)
    others = [m for m in methods if m != reference] or list(methods)
    ref = _values(table, reference, "dice")
    fig, axes = plt.subplots(1, len(others), figsize=(2.6 * len(others) + 0.6, 3.6), squeeze=False, sharey=True)
    for ax, m in zip(axes[0], others):
        mine = _values(table, m, "dice")
        cases = sorted(set(ref) & set(mine))
        for c in cases:
            d = mine[c] - ref[c]
            ax.plot([0, 1], [ref[c], mine[c]], color="tab:green" if d > 0 else "tab:red" if d < 0 else "0.6", alpha=0.35, lw=0.8)
        ax.scatter(np.zeros(len(cases)), [ref[c] for c in cases], s=6, color="k")
        ax.scatter(np.ones(len(cases)), [mine[c] for c in cases], s=6, color="k")
        ax.set_xticks([0, 1], [reference, m], fontsize=8)
        ax.set_xlim(-0.3, 1.3)
        ax.set_title(f"{m}: {len(cases)} cases", fontsize=9)
    axes[0][0].set_ylabel("out-of-fold Dice per case")
    fig.tight_layout()
    atomic_write_bytes(path, figure_bytes(fig))


def plot_fold_boxes(table: Any, methods: Sequence[str], k: int, path: Path) -> None:
    """Per-case out-of-fold Dice (mean over seeds) as one box per fold, grouped by method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = seed_averaged(table)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * k * max(1, len(methods)), 3.8))
    colours = plt.get_cmap("tab10")
    positions, data, labels = [], [], []
    for i, m in enumerate(methods):
        mine = table[table["method"] == m]
        for f in range(k):
            vals = mine[mine["fold"] == f]["dice"].astype(float).dropna().to_numpy()
            positions.append(i * (k + 1) + f)
            data.append(vals if len(vals) else np.array([np.nan]))
        labels.append((i * (k + 1) + (k - 1) / 2, m))
    parts = ax.boxplot(data, positions=positions, widths=0.7, patch_artist=True, showfliers=True)
    for j, box in enumerate(parts["boxes"]):
        box.set_facecolor(colours(j % k))
        box.set_alpha(0.6)
    ax.set_xticks([p for p, _ in labels], [m for _, m in labels], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("out-of-fold Dice per case")
    ax.set_title(f"Dice per fold (boxes: folds 0-{k - 1})", fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, figure_bytes(fig))
