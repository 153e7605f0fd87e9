"""The paper's Table 1 under one protocol: every method trained and evaluated through the bundle.

``kneeseg bench table1`` trains each method for each seed with
the bundle's ``training`` workflow (only ``network_name`` and ``seed`` differ between runs:
same preset, data config, split, preprocessing, optimizer recipe, epochs and input size),
keeps the checkpoint with the best validation F1, evaluates it on the test part with the
bundle's ``evaluating`` workflow, and aggregates:

- ``runs.csv``: one row per method and seed (test metrics, training time);
- ``per_case.csv``: every method, seed and test case (the runs' ``eval/metrics_per_case.csv``);
- ``table1.md`` / ``table1.json``: mean +- sd over seeds of loss rate, MAE, F1, Dice, HD95,
  with parameters, GFLOPs and training time;
- ``paired.csv``: each method against ``csam_unet`` on the same test cases (per-case Dice
  averaged over seeds): mean difference, bootstrap 95 % CI, Wilcoxon signed-rank p;
- PNG plots: metric bars with sd error bars, validation-F1 curves per method, and the best and
  worst test cases of ``csam_unet`` (prediction over the truth's contour).

Runs are resumable: a run whose evaluation summary exists is not repeated.

The protocol is data (``table1_protocol.json``, :mod:`kneeseg.experiments.protocol`); the statistics
are :mod:`kneeseg.experiments.stats`, the tables :mod:`kneeseg.experiments.report`, the plots
:mod:`kneeseg.experiments.plots`; this module runs the methods; the command line is :mod:`kneeseg.experiments.command`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kneeseg.atomic import atomic_write_text
from kneeseg.experiments.plots import plot_bars, plot_curves, plot_overlays
from kneeseg.experiments.protocol import (
    ABLATION_VARIANTS,
    ABLATIONS,
    EXTRA_PEERS,
    METHOD_LAYOUT,
    PAPER_METHODS,
    REFERENCE,
    Table1Config,
    effective_protocol,
    run_dirs,
    split_overrides,
)
from kneeseg.experiments.report import (
    METRICS,
    hd95_undefined,
    load_paper_table,
    markdown,
    per_case,
    write_paired_csv,
    write_per_case,
    write_runs_csv,
)
from kneeseg.experiments.runs import best_val, environment, say
from kneeseg.experiments.stats import mean_sd, paired_comparison

__all__ = ["PAPER_METHODS", "ABLATIONS", "EXTRA_PEERS", "Table1Config", "run_table1", "aggregate"]


def run_one(cfg: Table1Config, method: str, seed: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train + evaluate one method/seed through the bundle; returns its row (resumes if done)."""
    from kneeseg.workflows import run_workflow

    dirs = run_dirs(cfg.out, method, seed)
    record = dirs["base"] / "run.json"
    if record.is_file():
        return json.loads(record.read_text())
    common: dict[str, Any] = dict(METHOD_LAYOUT.get(method, {}))
    common.update(cfg.overrides)
    common.update(split_overrides(cfg.data))
    common.update(network_name=method, seed=seed, ckpt_dir=str(dirs["models"]))
    if cfg.dataset_dir:
        common["dataset_dir"] = cfg.dataset_dir
    say(progress, f"[table1] {method} seed {seed}: training")
    t0 = time.perf_counter()
    run_workflow("train", preset=cfg.preset, data=cfg.data, overrides=dict(common, output_dir=str(dirs["train"]), resume=False))
    train_s = time.perf_counter() - t0
    say(progress, f"[table1] {method} seed {seed}: trained in {train_s:.0f} s; evaluating on the test part")
    run_workflow("evaluate", preset=cfg.preset, data=cfg.data, overrides=dict(common, output_dir=str(dirs["eval"])))
    summary = json.loads((dirs["eval"] / "metrics_summary.json").read_text())
    val_f1, best_epoch = best_val(dirs["train"] / "history.json")
    row: dict[str, Any] = {"method": method, "seed": seed, "train_s": round(train_s, 1),
                           "wall_s": round(time.perf_counter() - t0, 1), "val_f1": val_f1, "epoch": best_epoch}  # fmt: skip
    row.update({m: summary["per_image_mean"].get(m) for m in METRICS})
    row["num_cases"] = summary.get("num_cases")
    atomic_write_text(record, json.dumps(row, indent=1))
    say(progress, f"[table1] {method} seed {seed}: test F1 {row['f1']:.4f}, Dice {row['dice']:.4f}")
    return row


def model_cost(method: str, width: int | None, size: int) -> dict[str, float]:
    """Parameters (millions) and forward GFLOPs of a registry network at ``1 x 1 x size x size``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from kneeseg.networks import build_network

    torch.manual_seed(0)
    net = build_network(method) if width is None else build_network(method, width=width)
    net.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, 1, size, size))
    return {"params_m": sum(p.numel() for p in net.parameters()) / 1e6, "gflops": counter.get_total_flops() / 1e9}


def aggregate(cfg: Table1Config, rows: Sequence[Mapping[str, Any]], progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write runs.csv, table1.json/md, paired.csv and the plots; returns the table as a dict."""
    out = cfg.out
    methods = [m for m in cfg.methods if any(r["method"] == m for r in rows)]
    write_runs_csv(out, rows)
    write_per_case(out, methods, sorted({int(r["seed"]) for r in rows}))

    protocol = effective_protocol(cfg)
    width, size = protocol.get("width"), int(protocol.get("spatial_size") or 256)
    table: dict[str, Any] = {"protocol": protocol, "preset": cfg.preset, "data": cfg.data, "seeds": list(cfg.seeds),
                             "environment": environment(), "methods": {}}  # fmt: skip
    walls = [float(r["wall_s"]) for r in rows if r.get("wall_s") is not None]
    table["total_run_s"] = round(sum(walls), 1) if len(walls) == len(rows) else None
    if cfg.paper_table is not None:
        table["paper"] = load_paper_table(cfg.paper_table)
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        entry: dict[str, Any] = {k: mean_sd([r.get(k) for r in mine]) for k in [*METRICS, "train_s"]}
        entry["n_seeds"] = len(mine)
        entry["hd95_undefined"], entry["n_images"] = hd95_undefined(out, m, sorted({int(r["seed"]) for r in mine}))
        entry.update(model_cost(m, width, size))
        table["methods"][m] = entry
    paired = []
    ref = per_case(out, REFERENCE, cfg.seeds) if REFERENCE in methods else {}
    for m in methods:
        if m == REFERENCE or not ref:
            continue
        p = paired_comparison(ref, per_case(out, m, cfg.seeds))
        p["method"] = m
        paired.append(p)
    table["paired_vs_" + REFERENCE] = paired
    atomic_write_text(out / "table1.json", json.dumps(table, indent=1))
    write_paired_csv(out, paired)
    atomic_write_text(out / "table1.md", markdown(table))
    plot_bars(table, out / "table1_bars.png")
    plot_curves(out, methods, cfg.seeds, out / "table1_val_curves.png")
    if REFERENCE in methods:
        plot_overlays(cfg, rows, out / "table1_overlays.png")
    say(progress, markdown(table))
    return table


def run_table1(cfg: Table1Config, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every method x seed (resuming finished runs) and aggregate; returns the table."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    rows = []
    total = len(cfg.methods) * len(cfg.seeds)
    t0 = time.perf_counter()
    done_here = 0
    for i, (method, seed) in enumerate([(m, s) for s in cfg.seeds for m in cfg.methods], 1):
        elapsed = time.perf_counter() - t0
        eta = f", about {elapsed / done_here * (total - i + 1) / 60:.0f} min left" if done_here else ""
        say(progress, f"[table1] run {i}/{total}: {method} seed {seed} ({elapsed / 60:.1f} min elapsed{eta})")
        fresh = not (run_dirs(cfg.out, method, seed)["base"] / "run.json").is_file()
        rows.append(run_one(cfg, method, seed, progress))
        done_here += int(fresh)
    return aggregate(cfg, rows, progress)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.split("(")[0].strip().lower()).strip("_")


def run_ablations(cfg: Table1Config, variants: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                  progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train + evaluate ``csam_unet`` once per variant (protocol + the variant's overrides).

    Writes ``ablations.csv`` and ``ablations.md`` under ``cfg.out``; the validation F1 is what a
    choice should be made on (the test Dice is reported beside it, not tuned on).
    """
    variants = ABLATION_VARIANTS if variants is None else variants
    rows: list[dict[str, Any]] = []
    for i, (name, extra) in enumerate(variants.items(), 1):
        say(progress, f"[ablation] {i}/{len(variants)}: {name}")
        # the protocol itself is the table's own run (reused when it exists)
        sub_out = cfg.out if not extra else cfg.out / "ablations" / _slug(name)
        sub = Table1Config(out=sub_out, methods=[REFERENCE], seeds=[seed], preset=cfg.preset,
                           data=cfg.data, dataset_dir=cfg.dataset_dir, overrides=dict(cfg.overrides, **extra))  # fmt: skip
        row = dict(run_one(sub, REFERENCE, seed, progress))
        best, epoch = best_val(run_dirs(sub.out, REFERENCE, seed)["train"] / "history.json")
        row.update(variant=name, overrides=json.dumps(dict(extra)), val_f1=best, val_epoch=epoch)
        rows.append(row)
    keys = ["variant", "overrides", "val_f1", "val_epoch", *METRICS, "train_s"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(cfg.out / "ablations.csv", buf.getvalue())
    lines = [f"| variant ({REFERENCE}, seed {seed}) | best val F1 (epoch) | test Dice | test HD95 | train time (s) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        v = "n/a" if r["val_f1"] is None else f"{r['val_f1']:.4f} ({r['val_epoch']})"
        lines.append(f"| {r['variant']} | {v} | {r['dice']:.4f} | {r['hd95']:.2f} | {r['train_s']:.0f} |")
    atomic_write_text(cfg.out / "ablations.md", "\n".join(lines) + "\n")
    return rows


def quick_config(out: Path) -> Table1Config:
    """The CI smoke test: 2 methods, 1 epoch, 64 px, width 4, one seed, a generated tiny phantom."""
    from kneeseg.phantom import generate_phantom

    data_dir = out / "phantom"
    if not (data_dir / "dataset_2d.json").is_file():
        generate_phantom(data_dir, cases=5, seed=0, shape=(64, 64, 10), png_negatives=1)
    return Table1Config(
        out=out, methods=["unet", "csam_unet"], seeds=[0], preset="cpu", data="phantom", dataset_dir=str(data_dir),
        overrides={"max_epochs": 1, "spatial_size": 64, "width": 4, "batch_size": 4, "val_interval": 1, "num_workers": 0},
    )  # fmt: skip
