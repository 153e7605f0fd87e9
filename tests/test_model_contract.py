"""A trained model describes itself: ``model.json`` records its contract, ``kneeseg infer --ckpt
MODEL_FOLDER`` rebuilds it with no preset, and a checkpoint that does not fit says what differs,
in one ``kneeseg: error:`` line."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle_helpers import CONFIGS, TRAIN_CONFIGS, make_tiny_phantom, tiny_overrides
from inference_helpers import smooth_knee_series
from kneeseg.cli import main
from kneeseg.networks import build_network


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch phantom training at width 4, 48 px (neither is any preset's)."""
    root = tmp_path_factory.mktemp("contract")
    data = make_tiny_phantom(root / "phantom")
    wf = ConfigWorkflow(config_file=TRAIN_CONFIGS, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
                        **tiny_overrides(data, root / "run", max_epochs=1, spatial_size=48, resume=False))  # fmt: skip
    wf.initialize()
    wf.run()
    return root / "run" / "models"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return smooth_knee_series(tmp_path_factory.mktemp("contract_series"), seed=3)


def test_model_json_records_what_the_model_is(trained):
    record = json.loads((trained / "model.json").read_text())
    model = record["model"]
    assert model["network_name"] == "csam_unet" and model["width"] == 4 and model["spatial_size"] == 48
    assert model["num_classes"] == 2 and model["class_names"][1] == "patellar_ligament"
    made = record["trained_with"]  # where it came from
    import kneeseg

    assert made["kneeseg_version"] == kneeseg.__version__ and made["seed"] == 0 and made["max_epochs"] == 1
    assert made["training_items"] > 0 and made["validation_items"] > 0 and made["data_list"].endswith("dataset_2d.json")
    assert model["slice_orientation"] == {"right": "inferior", "down": "posterior"}
    assert model["preprocessing_options"]["steps"] == ["resize", "scale", "smooth", "equalize", "pad"]


def test_infer_with_the_model_folder_needs_no_preset(trained, series, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["infer", str(series), "-o", str(out), "--ckpt", str(trained), "--runtime", "eager", "--quiet"]) == 0
    header = (out / "manifest.csv").read_text().splitlines()[0]
    assert "patellar_ligament" in header  # the model's own class names name the columns
    # an override that contradicts the record is refused, before anything is written
    bad = tmp_path / "bad"
    assert main(["infer", str(series), "-o", str(bad), "--ckpt", str(trained), "--set", "width=8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("kneeseg: error: the model was trained with width 4; width=8 contradicts it "
                       "(drop the override, or use a model trained with it)")  # fmt: skip
    assert not bad.exists()


def test_a_five_class_model_names_its_structures_and_checks_only_the_ligament(series, tmp_path):
    """Trained on the phantom's five labels (no value map): the model folder names femur, tibia,
    patella and patellar ligament; the manifest's columns and the SEG's segments follow them, and the
    ligament's quality checks apply to the patellar ligament alone."""
    import pydicom

    from kneeseg.inference.results import read_results_csv

    data = make_tiny_phantom(tmp_path / "phantom")
    wf = ConfigWorkflow(config_file=TRAIN_CONFIGS, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
                        **tiny_overrides(data, tmp_path / "run", max_epochs=1, spatial_size=48, resume=False,
                                         num_classes=5, label_value_map=None))  # fmt: skip
    wf.initialize()
    wf.run()
    models = tmp_path / "run" / "models"
    names = json.loads((models / "model.json").read_text())["model"]["class_names"]
    assert names == ["background", "femur", "tibia", "patella", "patellar_ligament"]
    out = tmp_path / "out"
    assert main(["infer", str(series), "-o", str(out), "--model", str(models), "--runtime", "eager", "--quiet"]) in (0, 1)
    (row,) = read_results_csv(out / "manifest.csv")
    assert row["status"] == "ok", row
    for n in names[1:]:
        assert f"volume_ml_{n}" in row and row[f"components_{n}"].isdigit()
    reasons = row["qc"].removeprefix("review: ").split("; ") if row["qc"] != "pass" else []
    assert all(r.startswith(("patellar_ligament", "no patellar_ligament")) for r in reasons), row["qc"]  # no limits on bones
    seg = pydicom.dcmread(out / row["dicom_seg"])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == names[1:]


@pytest.mark.parametrize("name, width, expected", [
    ("unet", 4, "network unet in the model, csam_unet asked"),
    ("csam_unet", 8, "width 8 in the model, 4 asked"),
])  # fmt: skip
def test_a_bare_checkpoint_that_does_not_fit_names_what_differs(name, width, expected, series, tmp_path, capsys):
    ckpt = tmp_path / "foreign.pt"
    torch.save(build_network(name, spatial_dims=2, in_channels=1, out_channels=2, width=width).state_dict(), ckpt)
    out = tmp_path / "out"
    code = main(["infer", str(series), "-o", str(out), "--ckpt", str(ckpt), "--set", "width=4", "--set", "spatial_size=48"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"kneeseg: error: {ckpt}: checkpoint does not match")
    assert expected in err[0] and "no model.json" in err[0] and not out.exists()


def test_a_corrupt_checkpoint_is_one_line_without_the_unsafe_advice(series, trained, tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes((trained / "model.pt").read_bytes()[:5000])  # truncated
    code = main(["infer", str(series), "-o", str(tmp_path / "out"), "--ckpt", str(ckpt)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"kneeseg: error: {ckpt}: cannot be read as a PyTorch checkpoint")
    assert "weights_only" not in err[0] and not (tmp_path / "out").exists()
    # a pickle of other objects: refused without unpickling them (and without advice to allow it)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": Foreign()}, pickled)
    code = main(["infer", str(series), "-o", str(tmp_path / "out2"), "--ckpt", str(pickled)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == (f"kneeseg: error: {pickled}: it holds objects other than tensors "
                                     "(not a state dict saved by kneeseg or MONAI)")  # fmt: skip
    listed = tmp_path / "listed.pt"
    torch.save({"x": [1, 2]}, listed)
    code = main(["infer", str(series), "-o", str(tmp_path / "out3"), "--ckpt", str(listed)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == f"kneeseg: error: {listed}: not a model checkpoint (expected a state dict or {{'model': state_dict}})"


class Foreign:
    """Not a tensor: ``torch.load(weights_only=True)`` refuses to unpickle it."""


def test_evaluate_and_infer_datalist_rebuild_the_model_from_its_folder(trained, tmp_path, capsys):
    """Like ``kneeseg infer``, the bundle workflows read ``model.json``: no --set width/spatial_size."""
    data = trained.parent.parent / "phantom"
    common = ["--data", "phantom", "--dataset-dir", str(data), "--model", str(trained), "--set", "runtime=eager"]
    out = tmp_path / "pred"
    assert main(["infer-datalist", *common, "--output-dir", str(out)]) == 0
    test_items = json.loads((data / "dataset_2d.json").read_text())["test"]  # the phantom data config's list
    assert len(list(out.glob("*_seg.nii.gz"))) == len(test_items) > 0
    ev = tmp_path / "eval"
    assert main(["evaluate", "--data", "phantom", "--dataset-dir", str(data), "--model", str(trained),
                 "--output-dir", str(ev)]) == 0  # fmt: skip
    header = (ev / "metrics_per_case.csv").read_text().splitlines()[0]
    assert "patellar_ligament" in header  # the model's class names
    # the input grid may differ (a fully convolutional network), with a warning; the width may not
    capsys.readouterr()
    assert main(["infer-datalist", *common, "--output-dir", str(tmp_path / "p64"), "--set", "spatial_size=64"]) == 0
    bad = main(["infer-datalist", *common, "--output-dir", str(tmp_path / "w8"), "--set", "width=8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert bad == 2 and err[-1].startswith("kneeseg: error: the model was trained with width 4; width=8 contradicts it")


def test_a_checkpoint_that_does_not_fit_the_bundle_workflow_is_one_line(tmp_path, capsys):
    """``infer-datalist`` over a bare checkpoint of another width: one line naming the file and what
    differs (not MONAI's chain of config evaluations)."""
    data = make_tiny_phantom(tmp_path / "phantom")
    models = tmp_path / "models"
    models.mkdir()
    torch.save(build_network("csam_unet", spatial_dims=2, in_channels=1, out_channels=2, width=8).state_dict(),
               models / "model.pt")  # fmt: skip
    code = main(["infer-datalist", "--data", "phantom", "--dataset-dir", str(data), "--model", str(models),
                 "--output-dir", str(tmp_path / "out"), "--set", "width=4", "--set", "spatial_size=48"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"kneeseg: error: {models / 'model.pt'}: checkpoint does not match")
    assert "width 8 in the model, 4 asked" in err[-1] and "Traceback" not in "\n".join(err)


def test_class_names_have_one_source():
    """``class_names`` names the classes in training, evaluation and inference alike; the bundle's
    metadata states the same names; a list of the wrong length is refused."""
    from kneeseg.inference.definition import bundle_settings
    from kneeseg.networks.checkpoints import class_names_of

    train = json.loads((CONFIGS / "train.json").read_text())["class_names"]
    infer = json.loads((CONFIGS / "inference.json").read_text())["class_names"]
    meta = json.loads((CONFIGS / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert train == infer == [meta[str(i)] for i in range(len(meta))]
    assert bundle_settings(overrides={"class_names": ["background", "acl"]})["class_names"] == {0: "background", 1: "acl"}
    assert class_names_of(None, 3) == {0: "background", 1: "class_1", 2: "class_2"}
    with pytest.raises(ValueError, match=r"class_names \['background'\] name 1 class\(es\); num_classes is 2"):
        bundle_settings(overrides={"class_names": ["background"]})
