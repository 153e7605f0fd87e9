"""The paper's Table 1 under one protocol: every method trained and evaluated through the bundle.

``kneeseg bench table1`` (and ``benchmarks/table1.py``) trains each method for each seed with
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
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from kneeseg.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["PAPER_METHODS", "ABLATIONS", "EXTRA_PEERS", "Table1Config", "run_table1", "aggregate"]

#: The paper's Table 1 methods (U-Net, U-Net++, residual U-Net, FR-UNet, the proposed model).
PAPER_METHODS = ["unet", "unetpp", "res_unet", "fr_unet", "csam_unet"]
#: Ablations: attention without residuals; the paper's literal 1x1 encoder.
ABLATIONS = ["att_unet", "paper_literal"]
#: MONAI's attention U-Net as an extra peer.
EXTRA_PEERS = ["monai_attention_unet"]
REFERENCE = "csam_unet"
METRICS = ["loss_rate", "mae", "f1", "dice", "hd95"]

#: The protocol on top of the ``cpu`` preset: the paper's recipe (Adam, step decay x0.1, Dice+CE
#: here, the paper's CE as an ablation) scaled to fit 8 methods x 3 seeds in about 2.5 hours on 2
#: CPU cores without AVX-512 (fp32): 192 px inputs, width 16, batch 4 (twice the optimizer steps
#: of batch 8 for the same compute), 12 epochs with the lr drop after epoch 8, validation every
#: epoch so checkpoint selection sees every epoch. See docs/results.md.
PROTOCOL = {"spatial_size": 192, "batch_size": 4, "max_epochs": 12, "lr_drop_epoch": 8, "val_interval": 1}
#: Memory layout only (identical arithmetic): U-Net++'s many concatenations at full resolution
#: train ~1.6x faster in NCHW than in channels_last on this CPU; every other method is as fast or
#: faster in channels_last (see docs/results.md).
METHOD_LAYOUT = {"unetpp": {"channels_last": False}}
_COSINE = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "optimizer": "@optimizer", "T_max": "@max_epochs", "eta_min": 1e-5}
#: What was tried to make csam_unet as good as it can be (seed 0; the protocol plus the override).
ABLATION_VARIANTS: Dict[str, Dict[str, Any]] = {
    "protocol (Dice+CE, augmentation, 192 px, batch 4, 12 epochs, step lr)": {},
    "CE only (the paper's loss)": {"dice_loss_weight": 0.0},
    "lr 3e-4, 24 epochs, lr drop after 16 (twice the compute)": {"learning_rate": 3e-4, "max_epochs": 24, "lr_drop_epoch": 16},
    "dropout 0.1 in the conv blocks": {"network_def#dropout": 0.1},
    "no augmentation": {"train#preprocessing#augment": False},
    "stronger augmentation (affine p 0.8, +-20 deg, scale +-25 %)": {
        "train#preprocessing#augmentation": {"affine_prob": 0.8, "rotate_deg": 20.0, "scale_range": 0.25}},
    "cosine lr schedule": {"lr_scheduler": _COSINE},
    "input 256 px, 160 px patches, 20 epochs, cosine": {"spatial_size": 256, "patch_size": 160, "max_epochs": 20, "lr_scheduler": _COSINE},
    "24 epochs, lr drop after 16 (twice the compute)": {"max_epochs": 24, "lr_drop_epoch": 16},
    "channel MLP of 1 hidden unit (r = 16 taken literally at width 16)": {"network_def#min_hidden": 1},
}

#: data name -> (train, validation, test) datalist keys used by the protocol
SPLITS = {
    "knee_acl": ("train_811", "val_811", "test_811"),  # the manifest's seeded 8:1:1 split
    "phantom": ("training", "validation", "test"),
}


@dataclass
class Table1Config:
    """What to run. ``overrides`` go to every run (e.g. ``max_epochs``, ``spatial_size``)."""

    out: Path
    methods: List[str] = field(default_factory=lambda: PAPER_METHODS + ABLATIONS + EXTRA_PEERS)
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    preset: str = "cpu"
    data: str = "knee_acl"
    dataset_dir: Optional[str] = None
    overrides: Dict[str, Any] = field(default_factory=dict)
    #: JSON with the paper's own Table 1, shown beside ours for reference:
    #: ``{"source": "...", "methods": {"U-Net": {"loss_rate": .., "mae": .., "f1": ..}, ...}}``
    paper_table: Optional[Path] = None


def _say(progress: Optional[Callable[[str], None]], line: str) -> None:
    (progress or (lambda s: print(s, flush=True)))(line)


def _run_dirs(out: Path, method: str, seed: int) -> Dict[str, Path]:
    base = out / "runs" / method / f"seed{seed}"
    return {"base": base, "models": base / "models", "train": base / "train", "eval": base / "eval"}


def _split_overrides(data: str) -> Dict[str, str]:
    train, val, test = SPLITS.get(data, ("training", "validation", "test"))
    return {"train_list_key": train, "val_list_key": val, "test_list_key": test}


def run_one(cfg: Table1Config, method: str, seed: int, progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Train + evaluate one method/seed through the bundle; returns its row (resumes if done)."""
    from kneeseg.workflows import run_workflow

    dirs = _run_dirs(cfg.out, method, seed)
    record = dirs["base"] / "run.json"
    if record.is_file():
        return json.loads(record.read_text())
    common: Dict[str, Any] = dict(METHOD_LAYOUT.get(method, {}))
    common.update(cfg.overrides)
    common.update(_split_overrides(cfg.data))
    common.update(network_name=method, seed=seed, ckpt_dir=str(dirs["models"]))
    if cfg.dataset_dir:
        common["dataset_dir"] = cfg.dataset_dir
    _say(progress, f"[table1] {method} seed {seed}: training")
    t0 = time.perf_counter()
    run_workflow("train", preset=cfg.preset, data=cfg.data, overrides=dict(common, output_dir=str(dirs["train"]), resume=False))
    train_s = time.perf_counter() - t0
    _say(progress, f"[table1] {method} seed {seed}: trained in {train_s:.0f} s; evaluating on the test part")
    run_workflow("evaluate", preset=cfg.preset, data=cfg.data, overrides=dict(common, output_dir=str(dirs["eval"])))
    summary = json.loads((dirs["eval"] / "metrics_summary.json").read_text())
    best_val, best_epoch = _best_val(dirs["train"] / "history.json")
    row: Dict[str, Any] = {"method": method, "seed": seed, "train_s": round(train_s, 1),
                           "wall_s": round(time.perf_counter() - t0, 1), "val_f1": best_val, "epoch": best_epoch}  # fmt: skip
    row.update({m: summary["per_image_mean"].get(m) for m in METRICS})
    row["num_cases"] = summary.get("num_cases")
    atomic_write_text(record, json.dumps(row, indent=1))
    _say(progress, f"[table1] {method} seed {seed}: test F1 {row['f1']:.4f}, Dice {row['dice']:.4f}")
    return row


def model_cost(method: str, width: Optional[int], size: int) -> Dict[str, float]:
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


def _parser(cfg: Table1Config) -> Any:
    """The bundle's training config as every run sees it (preset + data + overrides)."""
    from monai.bundle import ConfigParser

    from kneeseg.workflows import default_bundle_dir, workflow_config_files

    parser = ConfigParser()
    parser.read_config(workflow_config_files("train", default_bundle_dir(), cfg.preset, cfg.data))
    parser["bundle_root"] = str(default_bundle_dir())
    for k, v in cfg.overrides.items():
        parser[k] = v
    if cfg.dataset_dir:
        parser["dataset_dir"] = cfg.dataset_dir
    return parser


def _protocol(cfg: Table1Config) -> Dict[str, Any]:
    """The effective bundle settings of the protocol (preset + data + overrides)."""
    parser = _parser(cfg)
    keys = ["spatial_size", "width", "max_epochs", "learning_rate", "lr_drop_epoch", "batch_size", "dice_loss_weight", "val_interval"]
    return {k: parser.get(k) for k in keys}


def environment() -> Dict[str, Any]:
    """Where the table was measured: CPU, threads, library versions, precision policy."""
    import platform

    import monai
    import torch

    from kneeseg.engines import resolve_amp

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "monai": monai.__version__, "python": platform.python_version(), "gpu": torch.cuda.is_available(),
            "precision": resolve_amp("auto").describe()}  # fmt: skip


def _mean_sd(values: Sequence[float]) -> tuple:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def _case_rows(out: Path, method: str, seeds: Sequence[int]) -> Iterator[tuple]:
    """``(seed, row)`` for every test case of the method's finished runs (``metrics_per_case.csv``)."""
    for seed in seeds:
        path = _run_dirs(out, method, seed)["eval"] / "metrics_per_case.csv"
        if path.is_file():
            with open(path, newline="") as fh:
                for r in csv.DictReader(fh):
                    yield seed, r


def _per_case(out: Path, method: str, seeds: Sequence[int], column: str = "dice") -> Dict[str, float]:
    """Per-case ``column`` averaged over seeds."""
    acc: Dict[str, List[float]] = {}
    for _, r in _case_rows(out, method, seeds):
        if r.get(column) not in (None, ""):
            acc.setdefault(r["case_id"], []).append(float(r[column]))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _hd95_undefined(out: Path, method: str, seeds: Sequence[int]) -> tuple:
    """``(test images without an HD95, test images)`` over the seeds' runs.

    HD95 is undefined where exactly one of prediction and truth is empty (e.g. the network
    predicts nothing on an image with a ligament); the evaluator leaves such images out of the
    HD95 mean, which would flatter a method that misses whole structures. The evaluator's
    summary counts them (``hd95_skipped`` of ``num_cases``).
    """
    missing = total = 0
    for seed in seeds:
        path = _run_dirs(out, method, seed)["eval"] / "metrics_summary.json"
        if path.is_file():
            summary = json.loads(path.read_text())
            missing += int(summary.get("hd95_skipped") or 0)
            total += int(summary.get("num_cases") or 0)
    return missing, total


def _short_case(case_id: str) -> str:
    """A case's name without the data root: ``.../cases/14/mask.png`` -> ``14``."""
    p = Path(case_id)
    return p.parent.name if p.stem in ("mask", "label", "seg") else p.name.split(".")[0]


PER_CASE_COLUMNS = ["loss", "mae", "f1", "dice", "iou", "precision", "recall", "hd95"]


def _write_per_case(out: Path, methods: Sequence[str], seeds: Sequence[int]) -> None:
    """``per_case.csv``: every method, seed and test case in one file (case names without paths)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "seed", "case", *PER_CASE_COLUMNS])
    for m in methods:
        for seed, r in _case_rows(out, m, seeds):
            w.writerow([m, seed, _short_case(r["case_id"]), *(r.get(k, "") for k in PER_CASE_COLUMNS)])
    atomic_write_text(out / "per_case.csv", buf.getvalue())


def paired_comparison(a: Mapping[str, float], b: Mapping[str, float], seed: int = 0, n_boot: int = 10000) -> Dict[str, Any]:
    """``b - a`` over the cases both have: mean, bootstrap 95 % CI, Wilcoxon signed-rank p."""
    cases = sorted(set(a) & set(b))
    d = np.asarray([b[c] - a[c] for c in cases], dtype=float)
    out: Dict[str, Any] = {"n": len(cases), "mean_diff": float(d.mean()) if len(d) else float("nan")}
    if len(d) >= 2:
        rng = np.random.default_rng(seed)
        boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
        out["ci_low"], out["ci_high"] = (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))
        from scipy.stats import wilcoxon

        out["wilcoxon_p"] = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    else:
        out["ci_low"] = out["ci_high"] = out["wilcoxon_p"] = float("nan")
    return out


def aggregate(cfg: Table1Config, rows: Sequence[Mapping[str, Any]], progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Write runs.csv, table1.json/md, paired.csv and the plots; returns the table as a dict."""
    out = cfg.out
    methods = [m for m in cfg.methods if any(r["method"] == m for r in rows)]
    cols = ["method", "seed", *METRICS, "val_f1", "epoch", "train_s", "wall_s", "num_cases"]
    buf = [",".join(cols)]
    for r in rows:
        buf.append(",".join(str(r.get(k, "")) for k in cols))
    atomic_write_text(out / "runs.csv", "\n".join(buf) + "\n")
    _write_per_case(out, methods, sorted({int(r["seed"]) for r in rows}))

    protocol = _protocol(cfg)
    width, size = protocol.get("width"), int(protocol.get("spatial_size") or 256)
    table: Dict[str, Any] = {"protocol": protocol, "preset": cfg.preset, "data": cfg.data, "seeds": list(cfg.seeds),
                             "environment": environment(), "methods": {}}  # fmt: skip
    walls = [float(r["wall_s"]) for r in rows if r.get("wall_s") is not None]
    table["total_run_s"] = round(sum(walls), 1) if len(walls) == len(rows) else None
    if cfg.paper_table is not None:
        table["paper"] = load_paper_table(cfg.paper_table)
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        entry: Dict[str, Any] = {k: _mean_sd([r.get(k) for r in mine]) for k in [*METRICS, "train_s"]}
        entry["n_seeds"] = len(mine)
        entry["hd95_undefined"], entry["n_images"] = _hd95_undefined(out, m, sorted({int(r["seed"]) for r in mine}))
        entry.update(model_cost(m, width, size))
        table["methods"][m] = entry
    paired = []
    ref = _per_case(out, REFERENCE, cfg.seeds) if REFERENCE in methods else {}
    for m in methods:
        if m == REFERENCE or not ref:
            continue
        p = paired_comparison(ref, _per_case(out, m, cfg.seeds))
        p["method"] = m
        paired.append(p)
    table["paired_vs_" + REFERENCE] = paired
    atomic_write_text(out / "table1.json", json.dumps(table, indent=1))
    lines = ["method,n,mean_dice_diff,ci_low,ci_high,wilcoxon_p"]
    lines += [f"{p['method']},{p['n']},{p['mean_diff']:.4f},{p['ci_low']:.4f},{p['ci_high']:.4f},{p['wilcoxon_p']:.4g}" for p in paired]
    atomic_write_text(out / "paired.csv", "\n".join(lines) + "\n")
    atomic_write_text(out / "table1.md", markdown(table))
    _plot_bars(table, out / "table1_bars.png")
    _plot_curves(out, methods, cfg.seeds, out / "table1_val_curves.png")
    if REFERENCE in methods:
        _plot_overlays(cfg, rows, out / "table1_overlays.png")
    _say(progress, markdown(table))
    return table


def _fmt(ms: tuple, digits: int = 4) -> str:
    mean, sd = ms
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def load_paper_table(path: Path) -> Dict[str, Any]:
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


def best_per_metric(table: Mapping[str, Any]) -> Dict[str, str]:
    """``{metric: best method}`` by the mean over seeds (loss rate, MAE, HD95 lower; F1, Dice higher)."""
    out: Dict[str, str] = {}
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
        lines += ["", f"Measured on {env['cpu']} ({env['cores']} cores, {env['torch_threads']} torch threads, GPU: "
                      f"{'yes' if env['gpu'] else 'no'}), torch {env['torch']}, MONAI {env['monai']}, {env['precision']}"
                      + (f"; all runs took {total / 3600:.2f} h." if total else ".")]  # fmt: skip
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


def _figure_bytes(fig: Any) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _plot_bars(table: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(table["methods"])
    fig, axes = plt.subplots(1, 4, figsize=(4 * 3.2, 3.6))
    for ax, (key, title) in zip(axes, [("f1", "F1"), ("dice", "Dice"), ("mae", "MAE"), ("loss_rate", "loss rate")]):
        means = [table["methods"][m][key][0] for m in methods]
        sds = [table["methods"][m][key][1] for m in methods]
        colours = ["tab:red" if m == REFERENCE else "tab:blue" for m in methods]
        ax.bar(range(len(methods)), means, yerr=sds, color=colours, capsize=3)
        ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"test {title} (mean ± sd over seeds)", fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, _figure_bytes(fig))


def _plot_curves(out: Path, methods: Sequence[str], seeds: Sequence[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for m in methods:
        curves = []
        for s in seeds:
            hist = _run_dirs(out, m, s)["train"] / "history.json"
            if hist.is_file():
                h = json.loads(hist.read_text())
                if h.get("val", {}).get("val_f1"):
                    curves.append((h["val_epoch"], h["val"]["val_f1"]))
        if curves:
            n = min(len(c[1]) for c in curves)
            ax.plot(curves[0][0][:n], np.mean([c[1][:n] for c in curves], axis=0), marker="o", ms=3,
                    lw=2.2 if m == REFERENCE else 1.2, label=m)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation F1 (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write_bytes(path, _figure_bytes(fig))


def _test_items(cfg: Table1Config) -> tuple:
    """``({label path: image path}, value_map, declared image orientation)`` of the protocol's test part (2D datalists)."""
    from monai.data import load_decathlon_datalist

    parser = _parser(cfg)
    dataset_dir = parser.get_parsed_content("dataset_dir")
    items = load_decathlon_datalist(
        parser.get_parsed_content("data_list_file_path"), data_list_key=_split_overrides(cfg.data)["test_list_key"],
        base_dir=dataset_dir,
    )  # fmt: skip
    vmap = parser.get_parsed_content("label_value_map")
    value_map = {int(k): int(v) for k, v in vmap.items()} if vmap else None
    declared = parser.get_parsed_content("image_orientation")
    return {str(i["label"]): str(i["image"]) for i in items}, value_map, declared


def _plot_overlays(cfg: Table1Config, rows: Sequence[Mapping[str, Any]], path: Path, count: int = 3) -> None:
    """Best and worst test cases of the reference method's best seed: prediction (fill) vs truth (contour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kneeseg.data.images2d import read_image2d, read_mask2d
    from kneeseg.data.orientation import AxisMap, map_2d
    from kneeseg.inference.segmenter import load_segmenter

    ref_rows = [r for r in rows if r["method"] == REFERENCE and r.get("dice") is not None]
    if not ref_rows:
        return
    best = max(ref_rows, key=lambda r: float(r["dice"]))
    dirs = _run_dirs(cfg.out, REFERENCE, int(best["seed"]))
    per_case = _per_case(cfg.out, REFERENCE, [int(best["seed"])])
    images, value_map, declared = _test_items(cfg)
    ranked = sorted((c for c in per_case if c in images), key=lambda c: per_case[c])
    if not ranked:
        return
    chosen = ranked[-count:][::-1] + [c for c in ranked[:count] if c not in ranked[-count:]]
    seg, _ = load_segmenter(ckpt=dirs["models"] / "model.pt", preset=cfg.preset, runtime="eager",
                            overrides=dict(cfg.overrides, network_name=REFERENCE))  # fmt: skip
    # the 2D files' declared orientation -> the model's, and back (kneeseg.data.orientation)
    amap = map_2d(declared, seg.slice_orientation) if declared is not None else AxisMap((0, 1), (False, False))
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.6 * len(chosen), 3.0), squeeze=False)
    for ax, case in zip(axes[0], chosen):
        image = read_image2d(images[case])  # (H, W)
        truth = read_mask2d(case, value_map=value_map, allow_empty=True)
        oriented = amap.apply(image.T.astype(np.float32))  # (W, H) as MONAI loads it
        pred = amap.invert(seg(np.ascontiguousarray(oriented)[:, :, None])[:, :, 0]).T
        ax.imshow(image, cmap="gray")
        ax.imshow(np.ma.masked_where(pred == 0, pred), cmap="autumn", alpha=0.5, interpolation="nearest")
        if truth.any():
            ax.contour(truth > 0, levels=[0.5], colors=["cyan"], linewidths=0.8)
        rank = "best" if case in ranked[-count:] else "worst"
        ax.set_title(f"{rank}: case {_short_case(case)}, Dice {per_case[case]:.3f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{REFERENCE} seed {best['seed']}: prediction (fill) vs truth (cyan contour)", fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, _figure_bytes(fig))
    seg.close()


def run_table1(cfg: Table1Config, progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Run every method x seed (resuming finished runs) and aggregate; returns the table."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    rows = []
    total = len(cfg.methods) * len(cfg.seeds)
    t0 = time.perf_counter()
    done_here = 0
    for i, (method, seed) in enumerate([(m, s) for s in cfg.seeds for m in cfg.methods], 1):
        elapsed = time.perf_counter() - t0
        eta = f", about {elapsed / done_here * (total - i + 1) / 60:.0f} min left" if done_here else ""
        _say(progress, f"[table1] run {i}/{total}: {method} seed {seed} ({elapsed / 60:.1f} min elapsed{eta})")
        fresh = not (_run_dirs(cfg.out, method, seed)["base"] / "run.json").is_file()
        rows.append(run_one(cfg, method, seed, progress))
        done_here += int(fresh)
    return aggregate(cfg, rows, progress)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.split("(")[0].strip().lower()).strip("_")


def _best_val(hist_path: Path) -> tuple:
    """(best validation F1, its epoch) from a training run's history.json."""
    if not hist_path.is_file():
        return (None, None)
    h = json.loads(hist_path.read_text())
    vals = h.get("val", {}).get("val_f1") or []
    if not vals:
        return (None, None)
    i = int(np.argmax(vals))
    return (float(vals[i]), int(h["val_epoch"][i]))


def run_ablations(cfg: Table1Config, variants: Optional[Mapping[str, Mapping[str, Any]]] = None, seed: int = 0,
                  progress: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Train + evaluate ``csam_unet`` once per variant (protocol + the variant's overrides).

    Writes ``ablations.csv`` and ``ablations.md`` under ``cfg.out``; the validation F1 is what a
    choice should be made on (the test Dice is reported beside it, not tuned on).
    """
    variants = ABLATION_VARIANTS if variants is None else variants
    rows: List[Dict[str, Any]] = []
    for i, (name, extra) in enumerate(variants.items(), 1):
        _say(progress, f"[ablation] {i}/{len(variants)}: {name}")
        # the protocol itself is the table's own run (reused when it exists)
        sub_out = cfg.out if not extra else cfg.out / "ablations" / _slug(name)
        sub = Table1Config(out=sub_out, methods=[REFERENCE], seeds=[seed], preset=cfg.preset,
                           data=cfg.data, dataset_dir=cfg.dataset_dir, overrides=dict(cfg.overrides, **extra))  # fmt: skip
        row = dict(run_one(sub, REFERENCE, seed, progress))
        best, epoch = _best_val(_run_dirs(sub.out, REFERENCE, seed)["train"] / "history.json")
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
    from kneeseg.data.phantom import generate_phantom

    data_dir = out / "phantom"
    if not (data_dir / "dataset_2d.json").is_file():
        generate_phantom(data_dir, cases=5, seed=0, shape=(64, 64, 10), png_negatives=1)
    return Table1Config(
        out=out, methods=["unet", "csam_unet"], seeds=[0], preset="cpu", data="phantom", dataset_dir=str(data_dir),
        overrides={"max_epochs": 1, "spatial_size": 64, "width": 4, "batch_size": 4, "val_interval": 1, "num_workers": 0},
    )  # fmt: skip


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="kneeseg bench table1", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/table1"))
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--data", default="knee_acl")
    p.add_argument("--dataset-dir", default=None)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="bundle override for every run")
    p.add_argument("--quick", action="store_true", help="CI smoke test: 2 methods, 1 epoch, tiny phantom")
    p.add_argument("--paper-table", type=Path, default=None, help="JSON with the paper's Table 1, shown beside ours")
    p.add_argument("--ablations", action="store_true",
                   help=f"instead of the table: {REFERENCE} once per variant in ABLATION_VARIANTS (loss, augmentation, size, schedule)")
    args = p.parse_args(argv)
    from kneeseg.workflows import parse_overrides

    if args.quick:
        cfg = quick_config(args.out)
    else:
        overrides = dict(PROTOCOL, **parse_overrides(args.set or []))
        cfg = Table1Config(out=args.out, seeds=args.seeds, preset=args.preset, data=args.data,
                           dataset_dir=args.dataset_dir, overrides=overrides)  # fmt: skip
        if args.methods:
            cfg.methods = list(args.methods)
    cfg.paper_table = args.paper_table
    if args.ablations:
        run_ablations(cfg, seed=cfg.seeds[0])
        print(f"wrote {cfg.out / 'ablations.md'}, {cfg.out / 'ablations.csv'}")
        return 0
    run_table1(cfg)
    print(f"wrote {cfg.out / 'table1.md'}, {cfg.out / 'runs.csv'}, {cfg.out / 'paired.csv'}, PNG plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
