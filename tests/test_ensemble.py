"""Fold ensembles: several checkpoints, softmax averaged before the argmax, in every runtime."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from inference_helpers import dice, run_bundle_inference, smooth_knee_series, untrained_model
from kneeseg.cli import main as cli_main
from kneeseg.inference.results import read_results_csv
from kneeseg.inference.segmenter import load_segmenter

TINY = {"width": 4, "spatial_size": 64}
TINY_SET = [arg for k, v in TINY.items() for arg in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("folds")
    return [untrained_model(root / f"fold{i}" / "model.pt", seed=i, foreground=0.2 + 0.2 * i) for i in range(2)]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return smooth_knee_series(tmp_path_factory.mktemp("ens_series"), seed=7)


@pytest.mark.parametrize("runtime", ["eager", "onnx"])
def test_ensemble_averages_the_members_softmax(members, runtime, tmp_path):
    single = [load_segmenter(ckpt=m, overrides=TINY, runtime="eager")[0] for m in members]
    ensemble, settings = load_segmenter(ckpt=members, overrides=TINY, runtime=runtime, onnx_cache=tmp_path)
    assert settings["ensemble"] == 2 and len(ensemble.runners) == 2
    assert {r.name for r in ensemble.runners} == {runtime}
    x = torch.rand(3, 1, 64, 64)
    expected = (torch.softmax(single[0].forward(x), 1) + torch.softmax(single[1].forward(x), 1)) / 2
    assert torch.allclose(ensemble.probabilities(x), expected, atol=1e-5)
    if runtime == "onnx":
        assert len(list(tmp_path.glob("*.onnx"))) == 2  # one cached export per member


def test_an_ensemble_of_one_model_twice_is_the_model(members, series):
    from kneeseg.data import discover_series, load_volume

    image, meta = load_volume(discover_series(series).volumes[0])
    one, s1 = load_segmenter(ckpt=members[0], overrides=TINY, runtime="eager")
    two, s2 = load_segmenter(ckpt=[members[0], members[0]], overrides=TINY, runtime="eager")
    a, b = one(image, meta["affine"]), two(image, meta["affine"])
    assert a.any() and np.array_equal(a, b)
    assert s1["ckpt_digest"] != s2["ckpt_digest"]  # a rerun with other members redoes the series


def test_kneeseg_infer_takes_several_checkpoints(members, series, tmp_path):
    out = tmp_path / "out"
    code = cli_main(["infer", str(series), "-o", str(out), "--ckpt", *map(str, members), "--quiet", "--formats",
                     "nifti", *TINY_SET])  # fmt: skip
    assert code == 0
    (row,) = read_results_csv(out / "manifest.csv")
    assert row["status"] == "ok"
    labels = np.asarray(nib.load(out / row["nifti"]).dataobj)
    from kneeseg.data import discover_series, load_volume

    image, meta = load_volume(discover_series(series).volumes[0])
    ensemble, ens_settings = load_segmenter(ckpt=members, overrides=TINY, runtime="eager")
    expected = ensemble(image, meta["affine"])
    singles = [load_segmenter(ckpt=m, overrides=TINY, runtime="eager")[0](image, meta["affine"]) for m in members]
    assert expected.any() and not any(np.array_equal(expected, s) for s in singles)  # the average is its own mask
    assert dice(labels, expected) >= 0.99  # the CLI's default runtime, the same ensemble
    record = json.loads(next((out / ".kneeseg" / "records").glob("*.json")).read_text())
    assert record["model"] == ens_settings["ckpt_digest"]


def test_bundle_and_kneeseg_infer_take_models_fold_star_as_the_ensemble(members, series, tmp_path):
    """``models/fold*/model.pt`` present: ``inference.json`` and ``kneeseg infer`` (no --ckpt) use
    them as one ensemble, in fold order, and give the ensemble's mask."""
    from kneeseg.data import discover_series, load_volume
    from kneeseg.networks import fold_checkpoints
    from kneeseg.workflows import default_bundle_dir

    folds_dir = members[0].parent.parent
    assert fold_checkpoints(folds_dir) == [str(m) for m in members]
    image, meta = load_volume(discover_series(series).volumes[0])
    by_default, settings = load_segmenter(overrides=dict(TINY, ckpt_dir=str(folds_dir)), runtime="eager")
    assert settings["ensemble"] == 2
    explicit = load_segmenter(ckpt=members, overrides=TINY, runtime="eager")[0]
    expected = explicit(image, meta["affine"])
    assert np.array_equal(by_default(image, meta["affine"]), expected)

    path = run_bundle_inference(default_bundle_dir(), series, tmp_path / "bundle_out", "--ckpt_dir", str(folds_dir),
                                "--runtime", "eager")  # fmt: skip
    labels = np.asarray(nib.load(str(path)).dataobj).squeeze()
    singles = [load_segmenter(ckpt=m, overrides=TINY, runtime="eager")[0](image, meta["affine"]) for m in members]
    assert labels.shape == expected.shape and dice(labels, expected) >= 0.99
    assert all(dice(labels, s) < dice(labels, expected) for s in singles)


def test_bundle_evaluate_takes_models_fold_star_as_the_ensemble(tmp_path):
    """``evaluate.json`` with ``models/fold*/model.pt``: the metrics are the ensemble's -- its
    cross-entropy (the loss rate) is below the members' mean on every case (Jensen: the log of a
    mean softmax), while a ``ckpt_dir`` holding one ``model.pt`` evaluates that model alone."""
    import csv

    from kneeseg.phantom import generate_phantom
    from kneeseg.workflows import run_workflow

    folds = tmp_path / "models"
    for fold, shift in enumerate((3.0, -3.0)):  # members that disagree: one says ligament, one background
        path = untrained_model(folds / f"fold{fold}" / "model.pt", seed=fold)
        state = torch.load(path)["model"]
        bias = [k for k, v in state.items() if k.endswith("bias") and v.shape == (2,)][-1]
        state[bias] = torch.tensor([0.0, shift])
        torch.save({"model": state}, path)
    data = tmp_path / "phantom"
    generate_phantom(data, cases=3, seed=0, shape=(64, 64, 6), png_negatives=0)
    losses = {}
    for name, ckpt_dir in [("fold0", folds / "fold0"), ("fold1", folds / "fold1"), ("ensemble", folds)]:
        out = tmp_path / name
        run_workflow("evaluate", preset="cpu", data="phantom", overrides=dict(TINY, dataset_dir=str(data), ckpt_dir=str(ckpt_dir),
                                                                              output_dir=str(out), network_name="csam_unet"))  # fmt: skip
        with open(out / "metrics_per_case.csv", newline="") as fh:
            losses[name] = {r["case_id"]: float(r["loss"]) for r in csv.DictReader(fh)}
    assert losses["ensemble"] and set(losses["ensemble"]) == set(losses["fold0"]) == set(losses["fold1"])
    gaps = [(losses["fold0"][c] + losses["fold1"][c]) / 2 - losses["ensemble"][c] for c in losses["ensemble"]]
    assert min(gaps) > 0.1, (gaps, losses)
