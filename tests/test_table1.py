"""``kneeseg bench table1 --quick``: the Table-1 pipeline end to end through the bundle (CI smoke test)."""

from __future__ import annotations

import csv
import json

import numpy as np
import torch

import pytest

from kneeseg.experiments.report import load_paper_table, markdown
from kneeseg.experiments.stats import paired_comparison
from kneeseg.experiments.table1 import quick_config, run_ablations
from kneeseg.cli import main as cli_main


def test_quick_table1_runs_through_the_bundle_resumes_and_ablates(tmp_path):
    out = tmp_path / "t1"
    assert cli_main(["bench", "table1", "--quick", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert [(r["method"], r["seed"]) for r in rows] == [("unet", "0"), ("csam_unet", "0")]
    for r in rows:
        assert 0.0 <= float(r["f1"]) <= 1.0 and float(r["loss_rate"]) > 0 and r["epoch"] == "1"
        assert (out / "runs" / r["method"] / "seed0" / "eval" / "metrics_per_case.csv").is_file()
    per_case = list(csv.DictReader(open(out / "per_case.csv")))
    assert len(per_case) == 2 * int(rows[0]["num_cases"]) and {p["method"] for p in per_case} == {"unet", "csam_unet"}
    assert all("/" not in p["case"] and 0.0 <= float(p["dice"]) <= 1.0 for p in per_case)
    table = json.loads((out / "table1.json").read_text())
    assert list(table["methods"]) == ["unet", "csam_unet"]
    assert table["protocol"]["max_epochs"] == 1 and table["protocol"]["spatial_size"] == 64
    assert table["methods"]["csam_unet"]["params_m"] > table["methods"]["unet"]["params_m"]
    (paired,) = table["paired_vs_csam_unet"]
    assert paired["method"] == "unet" and paired["n"] == int(rows[0]["num_cases"]) == 3
    md = (out / "table1.md").read_text()
    assert "| csam_unet |" in md and "Wilcoxon" in md and "Best mean per metric: loss_rate " in md
    assert "Measured on " in md and table["environment"]["torch"] == torch.__version__
    for png in ("table1_bars.png", "table1_val_curves.png", "table1_overlays.png"):
        assert (out / png).stat().st_size > 5000
    # resumable: a second run reuses the finished runs (no retraining: run.json untouched)
    stamp = (out / "runs" / "unet" / "seed0" / "run.json").stat().st_mtime_ns
    assert cli_main(["bench", "table1", "--quick", "--out", str(out)]) == 0
    assert (out / "runs" / "unet" / "seed0" / "run.json").stat().st_mtime_ns == stamp

    # ablations: the protocol variant is the table's own csam_unet run; each other variant trains
    # with its override (different losses from the same seed show the override took effect)
    ref_stamp = (out / "runs" / "csam_unet" / "seed0" / "run.json").stat().st_mtime_ns
    variants = {"protocol": {}, "CE only": {"dice_loss_weight": 0.0}, "no augmentation": {"train#preprocessing#augment": False}}
    rows = run_ablations(quick_config(out), variants=variants)
    assert [r["variant"] for r in rows] == list(variants)
    assert (out / "runs" / "csam_unet" / "seed0" / "run.json").stat().st_mtime_ns == ref_stamp
    losses = []
    for sub in (out, out / "ablations" / "ce_only", out / "ablations" / "no_augmentation"):
        losses.append(json.loads((sub / "runs" / "csam_unet" / "seed0" / "train" / "history.json").read_text())["loss"])
    assert losses[0] != losses[1] and losses[0] != losses[2] and losses[1] != losses[2]
    for r in rows:
        assert 0.0 <= r["val_f1"] <= 1.0 and r["val_epoch"] == 1 and 0.0 <= r["dice"] <= 1.0
    table = list(csv.DictReader(open(out / "ablations.csv")))
    assert [t["variant"] for t in table] == list(variants)
    md = (out / "ablations.md").read_text()
    assert all(f"| {v} |" in md for v in variants)


def test_paired_comparison_statistics():
    a = {f"c{i}": 0.5 for i in range(10)}
    b = {f"c{i}": 0.5 + 0.01 * (i + 1) for i in range(10)}
    p = paired_comparison(a, b)
    assert p["n"] == 10 and np.isclose(p["mean_diff"], 0.055)
    assert p["ci_low"] > 0 and p["ci_high"] < 0.11 and p["wilcoxon_p"] < 0.01
    same = paired_comparison(a, dict(a))
    assert same["mean_diff"] == 0 and same["wilcoxon_p"] == 1.0


def test_bootstrap_ci_is_the_hand_percentile_bootstrap():
    """scipy's resamples with ``np.percentile`` give the earlier hand bootstrap's interval bit for bit."""
    from kneeseg.experiments.stats import bootstrap_ci

    rng = np.random.default_rng(3)
    for n, seed, n_boot in ((2, 0, 10000), (9, 1, 10000), (30, 7, 500)):
        d = rng.normal(0.02, 0.05, n)
        boots = d[np.random.default_rng(seed).integers(0, n, size=(n_boot, n))].mean(axis=1)
        assert bootstrap_ci(d, seed, n_boot) == (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))


def test_per_case_tables_over_seeds(tmp_path):
    """The runs' per-case values as written, cases averaged over seeds with np.mean (pandas' own mean
    of 0.2, 0.7, 0.6 is 0.49999999999999994)."""
    from kneeseg.experiments.report import per_case, write_per_case

    for seed, dice, hd95 in ((0, "0.2", "3.5"), (1, "0.7", ""), (2, "0.6", "4.5")):
        path = tmp_path / "runs" / "unet" / f"seed{seed}" / "eval" / "metrics_per_case.csv"
        path.parent.mkdir(parents=True)
        path.write_text(f'case_id,dice,hd95\n/d/cases/7/mask.png,{dice},{hd95}\n"/d/a,b.png",0.5,nan\n')
    means = per_case(tmp_path, "unet", [0, 1, 2])
    assert list(means) == ["/d/cases/7/mask.png", "/d/a,b.png"]
    assert means["/d/cases/7/mask.png"] == float(np.mean([0.2, 0.7, 0.6])) == 0.5 and means["/d/a,b.png"] == 0.5
    hd = per_case(tmp_path, "unet", [0, 1, 2], "hd95")
    assert hd["/d/cases/7/mask.png"] == 4.0 and np.isnan(hd["/d/a,b.png"])
    assert per_case(tmp_path, "unet", [0, 1, 2], "iou") == {} and per_case(tmp_path, "att_unet", [0]) == {}
    write_per_case(tmp_path, ["unet", "att_unet"], [0, 2])
    assert (tmp_path / "per_case.csv").read_text() == (
        "method,seed,case,loss,mae,f1,dice,iou,precision,recall,hd95\n"
        "unet,0,7,,,,0.2,,,,3.5\n" 'unet,0,"a,b",,,,0.5,,,,nan\n'
        "unet,2,7,,,,0.6,,,,4.5\n" 'unet,2,"a,b",,,,0.5,,,,nan\n'
    )


def test_paper_table_is_shown_beside_and_checked(tmp_path):
    good = tmp_path / "paper.json"
    good.write_text(json.dumps({"source": "test", "methods": {"U-Net": {"loss_rate": 0.5, "mae": 0.25, "f1": 0.125}}}))
    table = {"methods": {}, "paper": load_paper_table(good)}
    md = markdown(table)
    assert "| U-Net | 0.5 | 0.25 | 0.125 |" in md and "source: test" in md
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"methods": {"U-Net": {"loss_rate": 0.5, "f1": "high"}}}))
    with pytest.raises(ValueError, match=r"bad.json: method 'U-Net' lacks numeric mae, f1"):
        load_paper_table(bad)
    with pytest.raises(ValueError, match="missing.json: cannot read"):
        load_paper_table(tmp_path / "missing.json")


def test_hd95_skipping_a_missed_image_is_counted_and_cannot_win(tmp_path):
    from kneeseg.experiments.report import best_per_metric
    from kneeseg.experiments.report import hd95_undefined as _hd95_undefined

    for method, hd in (("unet", ["4.0", "6.0"]), ("att_unet", ["1.0", "nan"])):
        path = tmp_path / "runs" / method / "seed0" / "eval" / "metrics_summary.json"
        path.parent.mkdir(parents=True)
        skipped = sum(h == "nan" for h in hd)
        path.write_text(json.dumps({"num_cases": len(hd), "hd95_evaluated": len(hd) - skipped, "hd95_skipped": skipped}))
    assert _hd95_undefined(tmp_path, "att_unet", [0, 1]) == (1, 2)
    assert _hd95_undefined(tmp_path, "unet", [0]) == (0, 2)

    def entry(dice, hd95, missing):
        e = {k: (v, 0.0) for k, v in dict(loss_rate=0.3, mae=0.01, f1=dice, dice=dice, hd95=hd95, train_s=1.0).items()}
        return dict(e, n_seeds=1, params_m=1.0, gflops=1.0, hd95_undefined=missing, n_images=2)

    table = {"methods": {"unet": entry(0.7, 5.0, 0), "att_unet": entry(0.4, 1.0, 1)}}
    assert best_per_metric(table)["hd95"] == "unet"
    md = markdown(table)
    assert "left out of the HD95 mean (over all seeds): att_unet 1 of 2." in md and "hd95 unet" in md


def test_environment_line_names_the_machine_and_counts_threads_in_words():
    from kneeseg.experiments.runs import describe_environment, environment

    env = environment()
    line = describe_environment(env)
    assert line.startswith(env["cpu"]) and f"torch {torch.__version__}" in line and env["precision"] in line
    one = describe_environment({**env, "torch_threads": 1, "cores": 2, "gpu": False})
    assert "(2 cores, 1 torch thread, GPU: no)" in one
    assert "(2 cores, 4 torch threads, GPU: yes)" in describe_environment({**env, "torch_threads": 4, "cores": 2, "gpu": True})
