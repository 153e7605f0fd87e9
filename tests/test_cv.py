"""``kneeseg bench table1 --cv K``: patient-grouped folds, every case predicted exactly once out of
fold (quick mode: tiny phantom, 2 folds, 1 epoch, through the bundle), and the statistics."""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from kneeseg.experiments.cv import CVConfig, cv_folds, fold_datalist, import_runs, run_cv
from kneeseg.experiments.stats import holm
from kneeseg.cli import main as cli_main
from kneeseg.data.splits import ManifestError, assign_folds

PROJECT = Path(__file__).resolve().parents[1]


def test_folds_are_patient_grouped_balanced_and_seeded():
    sizes = {f"p{i}": 1 + (i % 3 == 0) for i in range(40)}  # some patients hold two images
    folds = assign_folds(sizes, 5, seed=0)
    assert set(folds) == set(sizes) and set(folds.values()) == set(range(5))
    images = collections.Counter()
    for pid, f in folds.items():
        images[f] += sizes[pid]
    assert max(images.values()) - min(images.values()) <= 2
    assert assign_folds(dict(reversed(list(sizes.items()))), 5, seed=0) == folds  # order does not matter
    assert assign_folds(sizes, 5, seed=1) != folds
    with pytest.raises(ManifestError, match="k >= 2"):
        assign_folds(sizes, 1)
    with pytest.raises(ManifestError, match="3 groups cannot make 5 folds"):
        assign_folds(["a", "b", "c"], 5)


def test_knee_acl_manifest_records_five_folds_of_all_93_cases():
    manifest = json.loads((PROJECT / "data_manifests" / "knee_acl.json").read_text())
    record = manifest["folds"]
    assert record["k"] == 5 and record["keys"] == [f"fold_{f}" for f in range(5)]
    parts = [manifest[k] for k in record["keys"]]
    images = [e["image"] for part in parts for e in part]
    everything = {e["image"] for key in ("training", "validation") for e in manifest[key]}
    assert len(images) == len(set(images)) == len(everything) == 93 and set(images) == everything
    patients = [{e["patient"] for e in part} for part in parts]
    assert all(a.isdisjoint(b) for i, a in enumerate(patients) for b in patients[i + 1 :])
    assert [len(p) for p in parts] == record["counts"] and max(record["counts"]) - min(record["counts"]) <= 1
    # the CV takes exactly these folds (no shared data needed: only the datalist is read)
    folds = cv_folds(CVConfig(out=Path("unused"), k=5, data="knee_acl"))
    assert folds["source"].endswith("(folds)") and [len(f) for f in folds["folds"]] == record["counts"]
    # a part held out of the CV: the folds are made anew over the rest
    rest = cv_folds(CVConfig(out=Path("unused"), k=5, data="knee_acl", exclude="test_811"))
    held = {e["image"] for e in manifest["test_811"]}
    kept = [e["image"] for part in rest["folds"] for e in part]
    assert len(kept) == len(set(kept)) == 93 - len(held) and held.isdisjoint(kept)


def test_fold_datalist_trains_on_other_folds_and_selects_on_unseen_patients():
    folds = [[{"image": f"{f}_{i}.png", "label": f"{f}_{i}_m.png", "patient": f"p{f}_{i // 2}"} for i in range(8)] for f in range(3)]
    for fold in range(3):
        d = fold_datalist(folds, fold, seed=0)
        test = {e["image"] for e in d["cv_test"]}
        train, val = ({e["image"] for e in d[k]} for k in ("cv_train", "cv_val"))
        assert test == {e["image"] for e in folds[fold]}
        assert train | val == {e["image"] for f, part in enumerate(folds) if f != fold for e in part}
        assert not (train & val) and not (test & (train | val)) and val
        assert {e["patient"] for e in d["cv_train"]}.isdisjoint(e["patient"] for e in d["cv_val"])


def test_holm_adjusts_step_down_and_keeps_input_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    out = holm([float("nan"), 0.02, 0.2])
    assert np.isnan(out[0]) and out[1:] == pytest.approx([0.04, 0.2])


def test_quick_cv_predicts_every_case_exactly_once_and_resumes(tmp_path):
    out = tmp_path / "t1"
    root = out / "cv"
    # a budget too small for a second run: the first run (unet, fold 0 -- runs go fold by fold) and a
    # table of what finished
    assert cli_main(["bench", "table1", "--quick", "--cv", "2", "--out", str(out), "--cv-budget", "1e-6"]) == 0
    assert [p.relative_to(root).as_posix() for p in root.glob("runs/*/fold*/run.json")] == ["runs/unet/fold0/run.json"]
    partial = json.loads((root / "cv_table.json").read_text())
    fold1 = json.loads((root / "folds.json").read_text())["cases"][1]
    assert list(partial["methods"]) == ["unet"] and partial["methods"]["unet"]["missing_cases"] == sorted(fold1)
    assert "**Partial table**" in (root / "cv_table.md").read_text() and "(1 fold)" in (root / "cv_table.md").read_text()
    first = (root / "runs" / "unet" / "fold0" / "run.json").stat().st_mtime_ns
    assert cli_main(["bench", "table1", "--quick", "--cv", "2", "--out", str(out)]) == 0  # the rest
    assert (root / "runs" / "unet" / "fold0" / "run.json").stat().st_mtime_ns == first
    dataset = json.loads((out / "phantom" / "dataset_2d.json").read_text())
    every = {Path(e["label"]).stem for key in ("training", "validation", "test") for e in dataset[key]}
    with open(root / "oof_per_case.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for method in ("unet", "csam_unet"):
        counts = collections.Counter(r["case"] for r in rows if r["method"] == method)
        assert set(counts) == every and set(counts.values()) == {1}, method
        # each case was predicted by the fold that held it out
        folds = json.loads((root / "folds.json").read_text())["cases"]
        fold_of = {c: f for f, cases in enumerate(folds) for c in cases}
        assert all(int(r["fold"]) == fold_of[r["case"]] for r in rows if r["method"] == method)
    for fold in range(2):
        datalist = json.loads((root / "runs" / "csam_unet" / f"fold{fold}" / "datalist.json").read_text())
        cases = {k: {e["case"] for e in v} for k, v in datalist.items()}
        assert not (cases["cv_test"] & (cases["cv_train"] | cases["cv_val"])) and cases["cv_val"]
    table = json.loads((root / "cv_table.json").read_text())
    assert table["k"] == 2 and table["methods"]["unet"]["n_cases"] == len(every) == table["n_cases"]
    assert table["methods"]["csam_unet"]["missing_cases"] == []
    paired = table["paired"]["dice"]
    assert [p["method"] for p in paired] == ["unet"] and paired[0]["n"] == len(every) and "holm_p" in paired[0]
    assert "loss rate (CE)" in (root / "cv_table.md").read_text() and "Partial" not in (root / "cv_table.md").read_text()
    for png in ("cv_paired_dots.png", "cv_fold_boxes.png"):
        assert (root / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # why each run stopped (quick mode: 1 epoch, so every run hit its cap -- and the table says so)
    with open(root / "runs.csv", newline="") as fh:
        runs = list(csv.DictReader(fh))
    assert {r["stop_reason"] for r in runs} == {"max_epochs"} and {r["epochs"] for r in runs} == {"1"}
    assert "stopped by the epoch cap" in (root / "cv_table.md").read_text() and len(table["capped_runs"]) == 4
    # metrics at native resolution with the grid's Dice beside them, and the fold level
    assert {"dice", "dice_grid"} <= set(rows[0]) and table["fold_level"]["dice"][0]["n"] == 2
    # every number of the table from oof_per_case.csv alone
    import importlib.util

    spec = importlib.util.spec_from_file_location("cv_recompute", PROJECT / "docs" / "scripts" / "cv_recompute.py")
    recompute = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recompute)
    again = json.loads(json.dumps(recompute.recompute(root / "oof_per_case.csv", runs_csv=root / "runs.csv")))
    for key in ("methods", "paired", "fold_level", "capped_runs"):
        assert again[key] == table[key], key
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("runs/*/fold*/run.json")}
    assert len(stamps) == 4
    # `bench cv --folds 2` is `bench table1 --cv 2`: it resumes the same runs, nothing retrained
    assert cli_main(["bench", "cv", "--quick", "--folds", "2", "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in root.glob("runs/*/fold*/run.json")} == stamps
    # a run cut short after its last.pt (a session's end) continues from it instead of starting over
    cut = root / "runs" / "unet" / "fold1"
    before = json.loads((cut / "run.json").read_text())
    model = (cut / "models" / "model.pt").read_bytes()
    (cut / "run.json").unlink()
    lines: list[str] = []
    from kneeseg.experiments.cv import run_fold

    from kneeseg.experiments.table1 import quick_config

    quick = quick_config(out)  # what `--quick --cv 2` runs
    cfg = CVConfig(out=out, k=2, methods=quick.methods, seed=0, preset=quick.preset, data=quick.data,
                   dataset_dir=quick.dataset_dir, overrides=quick.overrides)  # fmt: skip
    assert cfg.root == root
    again_row = run_fold(cfg, "unet", 1, cv_folds(cfg)["folds"], lines.append)
    assert any("continuing from" in line and "last.pt" in line for line in lines), lines
    assert (cut / "models" / "model.pt").read_bytes() == model and again_row["dice"] == before["dice"]

    # a second training seed for one method: the same folds and inner split, another training run;
    # each case then counts once, as its mean over the seeds, and nothing earlier is retrained
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("runs/*/fold*/run.json")}
    assert cli_main(["bench", "cv", "--quick", "--folds", "2", "--out", str(out), "--train-seeds", "0", "1",
                     "--seeded-methods", "csam_unet"]) == 0  # fmt: skip
    assert sorted(p.relative_to(root).as_posix() for p in root.glob("runs/*/fold*_seed*/run.json")) == [
        "runs/csam_unet/fold0_seed1/run.json", "runs/csam_unet/fold1_seed1/run.json"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    for fold in range(2):
        seed0, seed1 = root / "runs" / "csam_unet" / f"fold{fold}", root / "runs" / "csam_unet" / f"fold{fold}_seed1"
        assert (seed1 / "datalist.json").read_text() == (seed0 / "datalist.json").read_text()
        assert (seed1 / "models" / "model.pt").read_bytes() != (seed0 / "models" / "model.pt").read_bytes()
        assert json.loads((seed1 / "run.json").read_text())["seed"] == 1
    with open(root / "oof_per_case.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_seed = collections.Counter((r["method"], r["seed"]) for r in rows)
    assert by_seed == {("csam_unet", "0"): len(every), ("csam_unet", "1"): len(every), ("unet", "0"): len(every)}
    seeded = json.loads((root / "cv_table.json").read_text())
    ref = seeded["methods"]["csam_unet"]
    assert ref["n_seeds"] == 2 and ref["n_cases"] == len(every) and seeded["methods"]["unet"]["n_seeds"] == 1
    per_case = collections.defaultdict(list)
    for r in rows:
        if r["method"] == "csam_unet":
            per_case[r["case"]].append(float(r["dice"]))
    means = [sum(v) / len(v) for v in per_case.values()]
    assert abs(ref["over_cases"]["dice"][0] - sum(means) / len(means)) < 1e-9
    assert seeded["paired"]["dice"][0]["n"] == len(every) and seeded["fold_level"]["dice"][0]["n"] == 2
    assert "| method | seeds | cases |" in (root / "cv_table.md").read_text()
    again = json.loads(json.dumps(recompute.recompute(root / "oof_per_case.csv", runs_csv=root / "runs.csv")))
    for key in ("methods", "paired", "fold_level", "capped_runs"):
        assert again[key] == seeded[key], key
    assert "csam_unet fold 0 seed 1" in seeded["capped_runs"] and "unet fold 0" in seeded["capped_runs"]

    # the shipped table's runs taken on "another machine" (a new out folder): the same table, nothing trained
    other = tmp_path / "elsewhere"
    assert cli_main(["bench", "cv", "--quick", "--folds", "2", "--out", str(other), "--train-seeds", "0", "1",
                     "--seeded-methods", "csam_unet", "--reuse", str(root), "--report-only"]) == 0  # fmt: skip
    reused = json.loads((other / "cv" / "cv_table.json").read_text())
    for key in ("methods", "paired", "fold_level", "capped_runs"):
        assert reused[key] == seeded[key], key
    assert not list((other / "cv").glob("runs/*/*/models")) and len(reused["imported_runs"]) == 6
    assert (other / "cv" / "oof_per_case.csv").read_text() == (root / "oof_per_case.csv").read_text()
    assert "taken from the table in" in (other / "cv" / "cv_table.md").read_text()
    # runs on other folds, or trained with other settings, are refused, naming the file
    folds = json.loads((root / "folds.json").read_text())["cases"]
    with pytest.raises(ValueError, match="folds.json: its folds are not"):
        import_runs(dataclasses.replace(cfg, out=tmp_path / "swapped"), root, [folds[1][:1] + folds[0][1:], folds[0][:1] + folds[1][1:]])
    with pytest.raises(ValueError, match="cv_table.json: its runs were trained with other settings: overrides"):
        import_runs(dataclasses.replace(cfg, out=tmp_path / "lr", overrides={**cfg.overrides, "learning_rate": 0.5}),
                    root, folds)  # fmt: skip
    # a report with nothing to train reports what it has and trains nothing
    lines = []
    assert run_cv(dataclasses.replace(cfg, out=tmp_path / "empty", report_only=True), lines.append)["methods"] == {}
    assert any("0 of 4 run(s) finished" in line for line in lines), lines


def test_quick_cv_without_a_part_measures_the_fold_ensemble_on_it(tmp_path):
    """``--cv-exclude test``: the fold models never see the test cases; each of them and their
    ensemble (the bundle's ``models/fold*/model.pt``) are evaluated on them, paired per case."""
    out = tmp_path / "t1"
    assert cli_main(["bench", "table1", "--quick", "--cv", "2", "--cv-exclude", "test", "--methods", "csam_unet", "--out", str(out)]) == 0
    dataset = json.loads((out / "phantom" / "dataset_2d.json").read_text())
    held_out = {Path(e["label"]).stem for e in dataset["test"]}
    root = out / "cv_without_test"
    folds = json.loads((root / "folds.json").read_text())["cases"]
    assert held_out and held_out.isdisjoint(c for part in folds for c in part)
    gain_dir = root / "ensemble" / "csam_unet"
    assert sorted(p.parent.name for p in gain_dir.glob("models/fold*/model.pt")) == ["fold0", "fold1"]
    result = json.loads((gain_dir / "ensemble_gain.json").read_text())
    assert result["held_out"] == "test" and result["n_cases"] == len(held_out) and set(result["timing_s"]) == {"fold0", "fold1", "ensemble"}
    for name in ("fold0", "fold1", "ensemble"):
        with open(gain_dir / name / "metrics_per_case.csv", newline="") as fh:
            assert {Path(r["case_id"]).stem for r in csv.DictReader(fh)} == held_out
    assert result["metrics"]["dice"]["gain_vs_mean_single"]["n"] == len(held_out)
    # the ensemble averages the members' softmax: by Jensen, its cross-entropy (the loss rate) is at
    # most the members' mean on every case (tests/test_ensemble.py checks it with members that differ)
    losses = {}
    for name in ("fold0", "fold1", "ensemble"):
        with open(gain_dir / name / "metrics_per_case.csv", newline="") as fh:
            losses[name] = {r["case_id"]: float(r["loss"]) for r in csv.DictReader(fh)}
    gaps = [np.mean([losses["fold0"][c], losses["fold1"][c]]) - losses["ensemble"][c] for c in losses["ensemble"]]
    assert min(gaps) >= -1e-6, gaps
    assert "Fold ensemble (2 x csam_unet)" in (gain_dir / "ensemble_gain.md").read_text()
    stamp = (gain_dir / "ensemble" / "metrics_per_case.csv").stat().st_mtime_ns
    assert cli_main(["bench", "table1", "--quick", "--cv", "2", "--cv-exclude", "test", "--methods", "csam_unet", "--out", str(out)]) == 0
    assert (gain_dir / "ensemble" / "metrics_per_case.csv").stat().st_mtime_ns == stamp  # resumed, not redone
