"""Table 1 by cross-validation (``kneeseg bench table1 --cv K``): every case predicted once, out of fold.

The cases of the data config's datalist (all of its parts, e.g. knee-ACL's 93: the authors'
train + val) are split into ``K`` patient-grouped, seeded folds -- the ``folds`` recorded in the
manifest by ``kneeseg data manifest --folds K`` when they match, else the same function
(:func:`kneeseg.data.splits.assign_folds`) over the cases at hand. For each method and fold the
bundle's ``training`` workflow trains on the other folds, picks its checkpoint on an inner,
patient-grouped validation part of them (1/8 of their patients), and the ``evaluating`` workflow
predicts the fold itself. Only ``network_name`` differs between methods; the preset (default:
the bundle's ``cpu`` preset) and the data config are the bundle's, and every run trains under the
same convergence rule (:data:`~kneeseg.experiments.protocol.CONVERGENCE_RULE`: early stopping on the
inner-validation Dice under an epoch cap; ``runs.csv`` says why each run stopped). Evaluation is at
each image's own resolution (the bundle's ``metrics_per_case.csv``), with the network grid's Dice
beside it. One training seed per fold by default; ``train_seeds`` adds more for the methods named
in ``seeded_methods`` (same folds, same inner split, another initialisation and batch order), and
the statistics then use each case's mean over its seeds, so that a case stays one replicate. Runs
are resumable per (method, fold, seed): a run whose ``run.json`` exists is not repeated.

Outputs under ``OUT/cv`` (:func:`aggregate_cv`): ``oof_per_case.csv`` (every method, seed, fold and
case), ``folds.json``, ``runs.csv``, ``cv_table.json`` / ``cv_table.md`` (mean +- sd over cases and
over folds; paired differences against the reference per case -- bootstrap CIs, Wilcoxon p, Holm
across methods -- and per fold -- t-based CIs, paired t-test, exact Wilcoxon) and two PNG plots
(per-case paired dots, per-fold boxes). ``docs/scripts/cv_recompute.py`` recomputes the table's
numbers from ``oof_per_case.csv`` alone.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kneeseg.atomic import atomic_write_text
from kneeseg.experiments.runs import best_val, environment, say
from kneeseg.experiments.protocol import (
    ABLATIONS,
    CONVERGENCE_RULE,
    EXTRA_PEERS,
    METHOD_LAYOUT,
    REFERENCE,
    training_parser,
)
from kneeseg.data.splits import assign_folds, assign_groups

__all__ = ["CV_METHODS", "CVConfig", "aggregate_cv", "capped_runs", "case_metrics", "cv_folds", "fold_datalist", "import_runs", "oof_table", "run_cv", "run_fold"]

#: the order CV runs methods in: the reference and the cheap baselines first (complete methods early)
CV_METHODS = ["csam_unet", "res_unet", "unet", "unetpp", "fr_unet", *ABLATIONS, *EXTRA_PEERS]
#: per-case metrics of the out-of-fold table (``loss`` is the paper's loss rate: cross-entropy)
CV_METRICS = ["loss", "mae", "f1", "dice", "hd95"]
#: the inner split of a fold's training cases: fit : checkpoint selection, by patients
INNER_RATIOS = (7.0, 1.0)
#: the columns of ``runs.csv``: each run's result, its best inner-validation epoch and why it stopped
RUN_COLUMNS = ["method", "fold", "seed", "dice", "val_f1", "epoch", "stop_reason", "epochs", "iterations", "max_epochs",
               "n_train", "n_val", "n_test", "train_s", "wall_s"]


@dataclass
class CVConfig:
    """What ``--cv`` runs. Every run gets the preset, then the convergence rule
    (:data:`~kneeseg.experiments.protocol.CONVERGENCE_RULE`, unless ``rule`` is false: the preset's own
    fixed epochs), then ``overrides``."""

    out: Path
    k: int = 5
    methods: list[str] = field(default_factory=lambda: list(CV_METHODS))
    #: the fold seed: the split into folds, each fold's inner split, and the first training seed
    seed: int = 0
    #: training seeds per fold (``None``: the fold seed only); seeds after the first run only for
    #: ``seeded_methods``, after every method's first seed on every fold
    train_seeds: list[int] | None = None
    #: the methods the extra training seeds are for (``None``: all of ``methods``)
    seeded_methods: list[str] | None = None
    preset: str = "cpu"
    data: str = "knee_acl"
    dataset_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    #: train every run under the convergence rule (early stopping under an epoch cap)
    rule: bool = True
    #: a datalist key whose cases stay out of the CV (e.g. ``test_811``, to measure fold ensembles on them)
    exclude: str | None = None
    #: wall-clock budget in hours: no new (method, fold) run starts that would, at the mean time of
    #: the runs trained so far, end past it; the table is written from what finished (``None``: no limit)
    budget_h: float | None = None
    #: a table folder written by an earlier CV (``runs.csv``, ``oof_per_case.csv``, ``folds.json``,
    #: ``cv_table.json``; e.g. the shipped ``docs/results/cv``) whose runs count as finished here
    #: (:func:`import_runs`), so that a table grows on another machine without retraining them
    reuse: Path | None = None
    #: train nothing: write the tables from the runs finished (or imported) so far
    report_only: bool = False

    def seeds_of(self, method: str) -> list[int]:
        """The training seeds ``method`` runs with on every fold, the fold seed's run first."""
        seeds = list(dict.fromkeys([self.seed, *(self.train_seeds or [])]))
        return seeds if self.seeded_methods is None or method in self.seeded_methods else seeds[:1]

    @property
    def root(self) -> Path:
        return self.out / "cv" if not self.exclude else self.out / f"cv_without_{self.exclude}"


def _group(entry: Mapping[str, Any]) -> str:
    """The patient of a datalist entry (``patient``, else ``case``, else the image itself)."""
    return str(entry.get("patient") or entry.get("case") or entry["image"])


def data_settings(cfg: CVConfig) -> dict[str, Any]:
    """The data config's datalist file and data root as the bundle resolves them."""
    parser = training_parser(cfg.preset, cfg.data, cfg.overrides, cfg.dataset_dir)
    return {"datalist": Path(parser.get_parsed_content("data_list_file_path")), "dataset_dir": parser.get_parsed_content("dataset_dir")}


def cv_folds(cfg: CVConfig) -> dict[str, Any]:
    """The folds: ``{"k", "seed", "source", "excluded", "folds": [[entry, ...], ...]}``.

    All cases of every datalist part (each image once), less those of ``cfg.exclude``; the
    manifest's recorded ``folds`` when it has them for this ``k`` and seed and nothing is excluded.
    """
    path = data_settings(cfg)["datalist"]
    manifest = json.loads(path.read_text(encoding="utf-8"))
    recorded = manifest.get("folds") if isinstance(manifest.get("folds"), Mapping) else None
    if recorded and not cfg.exclude and int(recorded.get("k", 0)) == cfg.k and int(recorded.get("seed", -1)) == cfg.seed:
        folds = [list(manifest[key]) for key in recorded["keys"]]
        return {"k": cfg.k, "seed": cfg.seed, "source": f"{path} (folds)", "excluded": None, "folds": folds}
    excluded: set[str] = set()
    if cfg.exclude:
        if not isinstance(manifest.get(cfg.exclude), list):
            raise ValueError(f"{path}: no datalist part {cfg.exclude!r} to keep out of the cross-validation")
        excluded = {e["image"] for e in manifest[cfg.exclude]}
    cases: dict[str, dict[str, Any]] = {}
    for key, part in manifest.items():
        if isinstance(part, list) and not key.startswith("fold_"):
            for e in part:
                if isinstance(e, Mapping) and "image" in e and e["image"] not in excluded:
                    cases.setdefault(e["image"], dict(e))
    entries = list(cases.values())
    groups: dict[str, int] = {}
    for e in entries:
        groups[_group(e)] = groups.get(_group(e), 0) + 1
    if len(groups) < cfg.k:
        raise ValueError(f"{path}: {len(groups)} patients cannot make {cfg.k} folds")
    fold_of = assign_folds(groups, cfg.k, cfg.seed)
    folds = [[e for e in entries if fold_of[_group(e)] == f] for f in range(cfg.k)]
    return {"k": cfg.k, "seed": cfg.seed, "source": str(path), "excluded": cfg.exclude, "folds": folds}


def fold_datalist(folds: Sequence[Sequence[Mapping[str, Any]]], fold: int, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The datalist of one fold: ``cv_test`` = the fold, ``cv_train`` + ``cv_val`` = the other folds,
    split by patients (:data:`INNER_RATIOS`, seeded) so that the checkpoint is chosen on cases that
    are neither trained on nor tested on."""
    rest = [dict(e) for f, part in enumerate(folds) if f != fold for e in part]
    groups: dict[str, int] = {}
    for e in rest:
        groups[_group(e)] = groups.get(_group(e), 0) + 1
    part_of = assign_groups(groups, INNER_RATIOS, seed + fold)
    return {
        "cv_train": [e for e in rest if part_of[_group(e)] == 0],
        "cv_val": [e for e in rest if part_of[_group(e)] == 1],
        "cv_test": [dict(e) for e in folds[fold]],
    }


def run_dir(cfg: CVConfig, method: str, fold: int, train_seed: int | None = None) -> Path:
    """A run's folder: ``runs/<method>/fold<k>`` for the fold seed, ``fold<k>_seed<s>`` for another training seed."""
    name = f"fold{fold}" if train_seed is None or train_seed == cfg.seed else f"fold{fold}_seed{train_seed}"
    return cfg.root / "runs" / method / name


def run_overrides(cfg: CVConfig, method: str, **extra: Any) -> dict[str, Any]:
    """The bundle overrides of one method's runs: its layout, ``cfg.overrides``, the network, the
    seed and the data root, then ``extra``."""
    out: dict[str, Any] = dict(METHOD_LAYOUT.get(method, {}))
    if cfg.rule:
        out.update(CONVERGENCE_RULE)
    out.update(cfg.overrides)
    out.update(network_name=method, seed=cfg.seed)
    if cfg.dataset_dir:
        out["dataset_dir"] = cfg.dataset_dir
    out.update(extra)
    return out


def run_fold(cfg: CVConfig, method: str, fold: int, folds: Sequence[Sequence[Mapping[str, Any]]],
             progress: Callable[[str], None] | None = None, train_seed: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Train on the other folds and predict this one through the bundle (with training seed
    ``train_seed``, default the fold seed); returns the run's record."""
    from kneeseg.handlers.convergence import read_stop_record
    from kneeseg.workflows import run_workflow

    seed = cfg.seed if train_seed is None else int(train_seed)
    base = run_dir(cfg, method, fold, seed)
    record = base / "run.json"
    if record.is_file():
        return {"seed": seed, **json.loads(record.read_text())}  # records before training seeds had the fold seed
    # the inner split is the fold seed's for every training seed: the seeds differ in training only
    datalist = fold_datalist(folds, fold, cfg.seed)
    atomic_write_text(base / "datalist.json", json.dumps(datalist, indent=1))
    common = run_overrides(cfg, method, data_list_file_path=str(base / "datalist.json"), train_list_key="cv_train",
                           val_list_key="cv_val", test_list_key="cv_test", ckpt_dir=str(base / "models"), seed=seed)  # fmt: skip
    sizes = {k: len(v) for k, v in datalist.items()}
    what = f"{method} fold {fold}" + (f" seed {seed}" if seed != cfg.seed else "")
    say(progress, f"[cv] {what}: training on {sizes['cv_train']} cases (checkpoint on {sizes['cv_val']})")
    t0 = time.perf_counter()
    # a run cut short (a session's end, a kill) continues from its last.pt: the random streams are in
    # it, so the result is the uninterrupted run's (tests/test_training_resume.py)
    resume = (base / "models" / "last.pt").is_file()
    if resume:
        say(progress, f"[cv] {what}: continuing from {base / 'models' / 'last.pt'}")
    run_workflow("train", preset=cfg.preset, data=cfg.data, overrides=dict(common, output_dir=str(base / "train"), resume=resume))
    train_s = time.perf_counter() - t0
    say(progress, f"[cv] {what}: trained in {train_s:.0f} s; predicting its {sizes['cv_test']} cases")
    run_workflow("evaluate", preset=cfg.preset, data=cfg.data, overrides=dict(common, output_dir=str(base / "eval")))
    summary = json.loads((base / "eval" / "metrics_summary.json").read_text())
    val_f1, best_epoch = best_val(base / "train" / "history.json")
    stop = read_stop_record(base / "train") or {}
    row: dict[str, Any] = {"method": method, "fold": fold, "seed": seed, "train_s": round(train_s, 1), "wall_s": round(time.perf_counter() - t0, 1),
                           "val_f1": val_f1, "epoch": best_epoch, "n_train": sizes["cv_train"], "n_val": sizes["cv_val"],
                           "n_test": sizes["cv_test"], "dice": summary["per_image_mean"].get("dice"),
                           "stop_reason": stop.get("stop_reason"), "epochs": stop.get("epochs"),
                           "iterations": stop.get("iterations"), "max_epochs": stop.get("max_epochs")}  # fmt: skip
    atomic_write_text(record, json.dumps(row, indent=1))
    say(progress, f"[cv] {what}: Dice {row['dice']:.4f} on its cases")
    return row


def case_metrics(path: Path) -> Any:
    """An evaluate run's ``metrics_per_case.csv`` as a pandas table of ``case`` (the short case
    name, as in the datalist's folds) and :data:`CV_METRICS`, plus ``dice_grid`` (the Dice on the
    network grid, from ``metrics_per_case_grid.csv`` beside it; NaN when the run has none); the one
    reader of those files here."""
    import pandas as pd

    from kneeseg.experiments.report import short_case

    frame = pd.read_csv(path, dtype={"case_id": str})
    frame = frame.assign(case=frame["case_id"].astype(str).map(short_case))[["case", *CV_METRICS]]
    grid = Path(path).with_name("metrics_per_case_grid.csv")
    if grid.is_file():
        g = pd.read_csv(grid, dtype={"case_id": str})
        g = g.assign(case=g["case_id"].astype(str).map(short_case))[["case", "dice"]].rename(columns={"dice": "dice_grid"})
        return frame.merge(g, on="case", how="left")
    return frame.assign(dice_grid=float("nan"))


def oof_table(cfg: CVConfig, methods: Sequence[str]) -> Any:
    """Every finished run's per-case metrics (``method``, ``seed``, ``fold``, ``case``, :data:`CV_METRICS`,
    ``dice_grid``) as a pandas table; raises if a case was predicted twice by one method and seed
    (folds must not overlap)."""
    import pandas as pd

    columns = ["method", "seed", "fold", "case", *CV_METRICS, "dice_grid"]
    frames = []
    for method in methods:
        for seed in cfg.seeds_of(method):
            for fold in range(cfg.k):
                base = run_dir(cfg, method, fold, seed)
                path = base / "eval" / "metrics_per_case.csv"
                if (base / "run.json").is_file() and path.is_file():
                    frames.append(case_metrics(path).assign(method=method, seed=seed, fold=fold))
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True)[columns]
    twice = table[table.duplicated(["method", "seed", "case"], keep=False)]
    if len(twice):
        raise ValueError(f"cases predicted more than once: {sorted(set(zip(twice['method'], twice['case'])))[:5]}")
    return table


def aggregate_cv(cfg: CVConfig, folds: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the out-of-fold tables, statistics and plots; returns the table as a dict."""
    from kneeseg.experiments.cv_report import (
        cv_markdown,
        cv_statistics,
        plot_fold_boxes,
        plot_paired_dots,
        write_csv,
    )

    root = cfg.root
    methods = [m for m in cfg.methods if any(r["method"] == m for r in rows)]
    table = oof_table(cfg, methods)
    all_cases = sorted({c for part in folds["folds"] for c in (_case_name(e) for e in part)})
    write_csv(root / "oof_per_case.csv", table)
    write_csv(root / "runs.csv", rows, RUN_COLUMNS)
    result = cv_statistics(table, methods, REFERENCE, all_cases, cfg.k)
    result["capped_runs"] = capped_runs(rows)
    result["n_runs"] = len(rows)
    result["imported_runs"] = [{"run": f"{r['method']} fold {r['fold']} seed {r['seed']}", "from": r["imported_from"],
                                "environment": r.get("environment")} for r in rows if r.get("imported_from")]  # fmt: skip
    result["rule"] = dict(CONVERGENCE_RULE) if cfg.rule else None
    result["train_seeds"] = {m: cfg.seeds_of(m) for m in methods}
    result.update(k=cfg.k, seed=cfg.seed, preset=cfg.preset, data=cfg.data, overrides=cfg.overrides, excluded=cfg.exclude,
                  folds_source=folds["source"], n_cases=len(all_cases))  # fmt: skip

    result["environment"] = environment()
    result["train_s_total"] = round(sum(float(r.get("train_s") or 0) for r in rows), 1)
    atomic_write_text(root / "cv_table.json", json.dumps(result, indent=1))
    atomic_write_text(root / "cv_table.md", cv_markdown(result))
    if methods:  # nothing finished yet (e.g. a report before any run): the table says so, no plots
        plot_paired_dots(table, methods, REFERENCE, root / "cv_paired_dots.png")
        plot_fold_boxes(table, methods, cfg.k, root / "cv_fold_boxes.png")
    say(progress, cv_markdown(result))
    return result


def capped_runs(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The runs the epoch cap stopped (not the convergence rule): ``"<method> fold <k>"``, with
    ``" seed <s>"`` for a method that has runs with several training seeds."""
    def seed_of(r: Mapping[str, Any]) -> int | None:
        seed = r.get("seed")
        return None if seed is None or (isinstance(seed, float) and math.isnan(seed)) else int(seed)

    seeds: dict[str, set] = {}
    for r in rows:
        seeds.setdefault(r["method"], set()).add(seed_of(r))
    return [f"{r['method']} fold {int(r['fold'])}" + (f" seed {seed_of(r)}" if len(seeds[r["method"]]) > 1 else "")
            for r in rows if r.get("stop_reason") == "max_epochs"]  # fmt: skip


def import_runs(cfg: CVConfig, source: Path, cases: Sequence[Sequence[str]]) -> list[str]:
    """Take the finished runs of the table in ``source`` as this CV's own: for each run of
    ``source/runs.csv`` that ``cfg`` would run (its method, fold and training seed) and has not
    finished here, write its ``run.json`` (the row, with ``imported_from``) and its cases' metrics
    from ``source/oof_per_case.csv`` into its run folder, as its evaluation would have. Refuses a
    table whose folds (``folds.json``'s cases) or settings (``cv_table.json``: the convergence rule,
    preset, data config, overrides, fold seed, excluded part) differ from ``cfg``'s, or whose
    ``oof_per_case.csv`` lacks a run's cases. Returns the runs imported (``"<method> fold <k> seed <s>"``)."""
    import pandas as pd

    from kneeseg.experiments.cv_report import write_csv

    source = Path(source)
    need = [source / n for n in ("runs.csv", "oof_per_case.csv", "folds.json", "cv_table.json")]
    missing = [str(n) for n in need if not n.is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: not a CV table folder, missing {', '.join(missing)}")
    theirs = json.loads((source / "folds.json").read_text())
    if [list(map(str, part)) for part in theirs.get("cases", [])] != [list(map(str, part)) for part in cases]:
        raise ValueError(f"{source / 'folds.json'}: its folds are not this cross-validation's (k {cfg.k}, seed {cfg.seed}); "
                         "runs on other folds cannot be pooled")  # fmt: skip
    table = json.loads((source / "cv_table.json").read_text())
    mine = {"rule": dict(CONVERGENCE_RULE) if cfg.rule else None, "preset": cfg.preset, "data": cfg.data,
            "overrides": dict(cfg.overrides), "seed": cfg.seed, "excluded": cfg.exclude}  # fmt: skip
    differ = [f"{k} {table.get(k)!r} (here {v!r})" for k, v in mine.items() if table.get(k) != v]
    if differ:
        raise ValueError(f"{source / 'cv_table.json'}: its runs were trained with other settings: {'; '.join(differ)}")
    runs = pd.read_csv(source / "runs.csv")
    oof = pd.read_csv(source / "oof_per_case.csv", dtype={"case": str})
    if "seed" not in oof.columns:
        oof = oof.assign(seed=cfg.seed)
    imported = []
    for row in runs.to_dict("records"):
        method, fold = str(row["method"]), int(row["fold"])
        seed = cfg.seed if pd.isna(row.get("seed")) else int(row["seed"])
        if method not in cfg.methods or seed not in cfg.seeds_of(method) or fold >= cfg.k:
            continue
        base = run_dir(cfg, method, fold, seed)
        if (base / "run.json").is_file():
            continue
        part = oof[(oof["method"] == method) & (oof["seed"] == seed) & (oof["fold"] == fold)]
        expected = set(cases[fold])
        if set(part["case"]) != expected:
            raise ValueError(f"{source / 'oof_per_case.csv'}: {method} fold {fold} seed {seed} has "
                             f"{len(part)} of the fold's {len(expected)} cases")  # fmt: skip
        # the metrics files the run's evaluation writes, with the short case names as case ids
        grid = part[["case", "dice_grid"]] if "dice_grid" in part.columns else None
        (base / "eval").mkdir(parents=True, exist_ok=True)
        write_csv(base / "eval" / "metrics_per_case.csv", part[["case", *CV_METRICS]].rename(columns={"case": "case_id"}))
        if grid is not None and grid["dice_grid"].notna().any():
            write_csv(base / "eval" / "metrics_per_case_grid.csv", grid.rename(columns={"case": "case_id", "dice_grid": "dice"}))
        record = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        record.update(method=method, fold=fold, seed=seed, imported_from=str(source), environment=table.get("environment"))
        atomic_write_text(base / "run.json", json.dumps(record, indent=1))
        imported.append(f"{method} fold {fold} seed {seed}")
    return imported


def _case_name(entry: Mapping[str, Any]) -> str:
    from kneeseg.experiments.report import short_case

    return short_case(str(entry.get("label") or entry["image"]))


def run_order(cfg: CVConfig) -> list[tuple[str, int, int]]:
    """``(method, fold, training seed)``: fold by fold, every method on a fold before the next fold,
    so that a table cut short by a budget still compares all methods on the same (complete) folds;
    then each extra training seed the same way, for the methods that have it."""
    seeds = list(dict.fromkeys(s for m in cfg.methods for s in cfg.seeds_of(m)))
    return [(m, f, s) for s in seeds for f in range(cfg.k) for m in cfg.methods if s in cfg.seeds_of(m)]


def run_cv(cfg: CVConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every fold x method (resuming finished runs, within ``cfg.budget_h``), then :func:`aggregate_cv`."""
    folds = cv_folds(cfg)
    root = cfg.root
    root.mkdir(parents=True, exist_ok=True)
    record = {k: v for k, v in folds.items() if k != "folds"}
    record["cases"] = [[_case_name(e) for e in part] for part in folds["folds"]]
    atomic_write_text(root / "folds.json", json.dumps(record, indent=1))
    if cfg.reuse is not None:
        imported = import_runs(cfg, cfg.reuse, record["cases"])
        say(progress, f"[cv] {len(imported)} finished run(s) taken from {cfg.reuse}" + (f": {', '.join(imported)}" if imported else ""))
    order = run_order(cfg)
    total = len(order)
    rows, t0, fresh_done = [], time.perf_counter(), 0
    if cfg.report_only:
        left = sum(not (run_dir(cfg, m, f, s) / "run.json").is_file() for m, f, s in order)
        say(progress, f"[cv] report only: {total - left} of {total} run(s) finished, {left} not trained")
    for i, (method, fold, seed) in enumerate(order, 1):
        elapsed = time.perf_counter() - t0
        fresh = not (run_dir(cfg, method, fold, seed) / "run.json").is_file()
        if fresh and cfg.report_only:
            continue
        per_run = elapsed / fresh_done if fresh_done else None
        left = sum(not (run_dir(cfg, m, f, s) / "run.json").is_file() for m, f, s in order[i - 1 :])
        if fresh and cfg.budget_h is not None and per_run is not None and elapsed + per_run > cfg.budget_h * 3600:
            say(progress, f"[cv] budget of {cfg.budget_h:g} h reached after {elapsed / 60:.1f} min: {left} run(s) left for a rerun")
            break
        what = f"{method} fold {fold}" + (f" seed {seed}" if seed != cfg.seed else "")
        if not fresh:
            say(progress, f"[cv] run {i}/{total}: {what}: finished earlier")
        else:
            eta = f", about {per_run * left / 60:.0f} min left" if per_run else ""
            say(progress, f"[cv] run {i}/{total}: {what} ({elapsed / 60:.1f} min elapsed{eta})")
        rows.append(run_fold(cfg, method, fold, folds["folds"], progress, seed))
        fresh_done += int(fresh)
    return aggregate_cv(cfg, folds, rows, progress)
