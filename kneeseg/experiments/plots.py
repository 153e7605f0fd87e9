"""The Table 1 plots (PNG): metric bars, validation-F1 curves, and the reference method's best and worst test cases."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.atomic import atomic_write_bytes
from kneeseg.experiments.protocol import (
    REFERENCE,
    Table1Config,
    bundle_parser,
    run_dirs,
    split_overrides,
)
from kneeseg.experiments.report import per_case, short_case

__all__ = ["plot_bars", "plot_curves", "plot_overlays"]


def figure_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (110 dpi); closes it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def plot_bars(table: Mapping[str, Any], path: Path) -> None:
    """Test F1, Dice, MAE and loss rate per method: mean bars with sd error bars over seeds."""
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
    atomic_write_bytes(path, figure_bytes(fig))


def plot_curves(out: Path, methods: Sequence[str], seeds: Sequence[int], path: Path) -> None:
    """Validation F1 per epoch of each method, averaged over the seeds' training histories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for m in methods:
        curves = []
        for s in seeds:
            hist = run_dirs(out, m, s)["train"] / "history.json"
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
    atomic_write_bytes(path, figure_bytes(fig))


def _test_items(cfg: Table1Config) -> tuple:
    """``({label path: image path}, value_map, declared image orientation)`` of the protocol's test part (2D datalists)."""
    from monai.data import load_decathlon_datalist

    parser = bundle_parser(cfg)
    dataset_dir = parser.get_parsed_content("dataset_dir")
    items = load_decathlon_datalist(
        parser.get_parsed_content("data_list_file_path"), data_list_key=split_overrides(cfg.data)["test_list_key"],
        base_dir=dataset_dir,
    )  # fmt: skip
    vmap = parser.get_parsed_content("label_value_map")
    value_map = {int(k): int(v) for k, v in vmap.items()} if vmap else None
    declared = parser.get_parsed_content("image_orientation")
    return {str(i["label"]): str(i["image"]) for i in items}, value_map, declared


def plot_overlays(cfg: Table1Config, rows: Sequence[Mapping[str, Any]], path: Path, count: int = 3) -> None:
    """Best and worst test cases of the reference method's best seed: prediction (fill) vs truth (contour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kneeseg.data.images2d import read_image2d, read_mask2d
    from kneeseg.data.orientation import AxisMap, map_2d
    from kneeseg.inference.preview import draw_overlay
    from kneeseg.inference.segmenter import load_segmenter

    ref_rows = [r for r in rows if r["method"] == REFERENCE and r.get("dice") is not None]
    if not ref_rows:
        return
    best = max(ref_rows, key=lambda r: float(r["dice"]))
    dirs = run_dirs(cfg.out, REFERENCE, int(best["seed"]))
    case_dice = per_case(cfg.out, REFERENCE, [int(best["seed"])])
    images, value_map, declared = _test_items(cfg)
    ranked = sorted((c for c in case_dice if c in images), key=lambda c: case_dice[c])
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
        draw_overlay(ax, image, pred, truth, label_cmap="autumn", alpha=0.5, reference_colour="cyan")
        rank = "best" if case in ranked[-count:] else "worst"
        ax.set_title(f"{rank}: case {short_case(case)}, Dice {case_dice[case]:.3f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{REFERENCE} seed {best['seed']}: prediction (fill) vs truth (cyan contour)", fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, figure_bytes(fig))
