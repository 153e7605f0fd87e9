"""The gain of a fold ensemble over its single fold models, on cases none of them trained on.

After ``kneeseg bench table1 --cv K --cv-exclude KEY``, the K fold models of a method were trained
and selected without the cases of the datalist part ``KEY``: those cases test them all. Each fold
model and the ensemble of all K (laid out as the bundle takes it, ``models/fold*/model.pt``: mean
softmax, then argmax) are run through the bundle's evaluate workflow on them. Per case, the
ensemble's metrics are paired with the mean of the single models' (what a user who picks one fold
model gets on average) and with each single model; the evaluate wall times give the cost.
Resumable: an evaluation whose per-case table exists is not redone.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.atomic import atomic_path, atomic_write_text
from kneeseg.experiments.cv import (
    CV_METRICS,
    CVConfig,
    data_settings,
    case_metrics,
    run_dir,
    run_overrides,
)
from kneeseg.experiments.protocol import REFERENCE
from kneeseg.experiments.runs import environment, say
from kneeseg.experiments.stats import mean_sd, paired_comparison

__all__ = ["ensemble_gain", "ensemble_markdown"]

#: metrics where lower is better (the rest: higher is better)
LOWER_IS_BETTER = {"loss", "mae", "hd95"}


def _per_case(path: Path) -> dict[str, dict[str, float]]:
    """``{metric: {case: value}}`` of an evaluate run's ``metrics_per_case.csv`` (NaNs left out)."""
    frame = case_metrics(path)
    return {
        metric: {c: float(v) for c, v in zip(frame["case"], frame[metric]) if not math.isnan(float(v))}
        for metric in CV_METRICS
    }


def _evaluate(cfg: CVConfig, method: str, ckpt_dir: Path, out_dir: Path, progress: Callable[[str], None] | None) -> float | None:
    """One evaluate run on the held-out part (skipped when its table exists); its wall seconds."""
    from kneeseg.workflows import run_workflow

    if (out_dir / "metrics_per_case.csv").is_file():
        return None
    overrides = run_overrides(cfg, method, data_list_file_path=str(data_settings(cfg)["datalist"]), test_list_key=cfg.exclude,
                              ckpt_dir=str(ckpt_dir), output_dir=str(out_dir))  # fmt: skip
    say(progress, f"[ensemble] {method}: evaluating {out_dir.name} on the {cfg.exclude} cases")
    t0 = time.perf_counter()
    run_workflow("evaluate", preset=cfg.preset, data=cfg.data, overrides=overrides)
    return round(time.perf_counter() - t0, 2)


def _members(cfg: CVConfig, method: str, root: Path) -> Path:
    """``root/models/fold<k>/model.pt``: copies of the fold models' selected checkpoints."""
    models = root / "models"
    for fold in range(cfg.k):
        target = models / f"fold{fold}" / "model.pt"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(run_dir(cfg, method, fold) / "models" / "model.pt", tmp)
    return models


def ensemble_gain(cfg: CVConfig, method: str = REFERENCE, progress: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Evaluate the K fold models of ``method`` and their ensemble on the excluded cases; write
    ``<cv root>/ensemble/<method>/ensemble_gain.json`` and ``.md``. ``None`` (nothing written)
    when no part is excluded or a fold has not finished."""
    if not cfg.exclude:
        return None
    missing = [f for f in range(cfg.k) if not (run_dir(cfg, method, f) / "run.json").is_file()]
    if missing:
        say(progress, f"[ensemble] {method}: folds {missing} not finished; no ensemble measurement yet")
        return None
    root = cfg.root / "ensemble" / method
    timing_path = root / "timing.json"
    timing: dict[str, float] = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    names = [f"fold{f}" for f in range(cfg.k)]
    for fold, name in enumerate(names):
        seconds = _evaluate(cfg, method, run_dir(cfg, method, fold) / "models", root / name, progress)
        if seconds is not None:
            timing[name] = seconds
            atomic_write_text(timing_path, json.dumps(timing, indent=1))
    seconds = _evaluate(cfg, method, _members(cfg, method, root), root / "ensemble", progress)
    if seconds is not None:
        timing["ensemble"] = seconds
        atomic_write_text(timing_path, json.dumps(timing, indent=1))

    singles = {name: _per_case(root / name / "metrics_per_case.csv") for name in names}
    ensemble = _per_case(root / "ensemble" / "metrics_per_case.csv")
    result: dict[str, Any] = {"method": method, "k": cfg.k, "held_out": cfg.exclude, "n_cases": len(ensemble["dice"]) if ensemble["dice"] else 0,
                              "metrics": {}, "timing_s": timing}  # fmt: skip
    for metric in CV_METRICS:
        mean_single = {}
        for case in ensemble[metric]:
            values = [singles[n][metric][case] for n in names if case in singles[n][metric]]
            if values:
                mean_single[case] = float(np.mean(values))
        vs_mean = paired_comparison(mean_single, ensemble[metric])
        per_fold = {n: paired_comparison(singles[n][metric], ensemble[metric])["mean_diff"] for n in names}
        better = (lambda d: d < 0) if metric in LOWER_IS_BETTER else (lambda d: d > 0)
        result["metrics"][metric] = {
            "ensemble": mean_sd(list(ensemble[metric].values())),
            "single": {n: mean_sd(list(singles[n][metric].values())) for n in names},
            "mean_of_singles": mean_sd(list(mean_single.values())),
            "gain_vs_mean_single": vs_mean,
            "gain_vs_each_single": per_fold,
            "folds_beaten": sum(bool(better(d)) for d in per_fold.values() if not math.isnan(d)),
        }
    single_s = [timing[n] for n in names if n in timing]
    if single_s and "ensemble" in timing:
        result["time_ratio"] = round(timing["ensemble"] / float(np.mean(single_s)), 2)

    result["environment"] = environment()
    atomic_write_text(root / "ensemble_gain.json", json.dumps(result, indent=1))
    atomic_write_text(root / "ensemble_gain.md", ensemble_markdown(result))
    say(progress, ensemble_markdown(result))
    return result


def ensemble_markdown(result: Mapping[str, Any]) -> str:
    """The measurement as a Markdown table: ensemble vs the single fold models, per metric."""
    k = result["k"]
    lines = [(f"Fold ensemble ({k} x {result['method']}) vs its single fold models on the {result['n_cases']} "
              f"`{result['held_out']}` cases (outside every fold's training and selection data):"), "",
             "| metric | ensemble | single models (mean of per-case means) | gain vs mean single [95 % CI] | Wilcoxon p | folds beaten |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for metric, m in result["metrics"].items():
        g = m["gain_vs_mean_single"]
        ens, single = m["ensemble"], m["mean_of_singles"]
        lines.append(f"| {metric} | {ens[0]:.4f} ± {ens[1]:.4f} | {single[0]:.4f} ± {single[1]:.4f} | "
                     f"{g['mean_diff']:+.4f} [{g['ci_low']:+.4f}, {g['ci_high']:+.4f}] | {g['wilcoxon_p']:.3g} | "
                     f"{m['folds_beaten']}/{k} |")  # fmt: skip
    if "time_ratio" in result:
        lines += ["", (f"Evaluate wall time, ensemble / mean single model: x{result['time_ratio']} "
                       f"({json.dumps(result['timing_s'])} s).")]  # fmt: skip
    return "\n".join(lines) + "\n"
