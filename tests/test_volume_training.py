"""Training the 2D bundle network on 3D volumes (as MONAI Label passes them) with one train.json."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_helpers import CONFIGS, TINY, tiny_overrides
from kneeseg.phantom import generate_phantom
from kneeseg.transforms import SampleSlicesd, eval_transforms, train_transforms


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Phantom NIfTI volumes with class-id labels (ligament = 1), like MONAI Label's labels/final."""
    root = tmp_path_factory.mktemp("volumes")
    generate_phantom(root / "ph", cases=4, seed=3, shape=(64, 64, 10), png=True, png_negatives=1)
    ds = json.loads((root / "ph" / "dataset.json").read_text())
    items = []
    for e in [e for k in ("training", "validation", "test") for e in ds.get(k, [])]:
        src = nib.load(root / "ph" / e["label"])
        lab = (np.asarray(src.dataobj) == 4).astype(np.uint8)
        out = root / "labels" / Path(e["label"]).name
        out.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(lab, src.affine), out)
        items.append({"image": str(root / "ph" / e["image"]), "label": str(out), "png": e})
    return root, items


def test_sample_slices_picks_foreground_and_background():
    vol = torch.zeros(1, 8, 6, 10)
    lab = torch.zeros(1, 8, 6, 10)
    lab[0, 2:4, 1:3, 3:6] = 1  # foreground in slices 3, 4, 5
    t = SampleSlicesd(["image", "label"], num_slices=4, pos_fraction=0.5)
    t.set_random_state(0)
    out = t({"image": vol, "label": lab})
    assert len(out) == 4 and all(o["image"].shape == (1, 8, 6) for o in out)
    fg = [bool(o["label"].sum() > 0) for o in out]
    assert sum(fg) == 2
    # slices are cut as they are (orientation is OrientSlicesd's job, before slicing)
    pos = next(o for o in out if o["label"].sum() > 0)
    assert pos["label"][0, 2:4, 1:3].all() and pos["label"].sum() == 4
    assert [o["image"].meta["source_slice"] for o in SampleSlicesd(["image"], num_slices=-1)({"image": vol})] == list(range(10))
    (two,) = SampleSlicesd(["image"], num_slices=3)({"image": torch.zeros(1, 5, 5)})
    assert two["image"].shape == (1, 5, 5)
    with pytest.raises(ValueError, match="num_slices"):
        SampleSlicesd(["image"], num_slices=0)


def test_weak_labels_give_background_slices_outside_the_possible_range():
    """An unlabelled volume with a possible range: only slices outside it are sampled, all background."""
    from monai.data import MetaTensor

    from kneeseg.transforms import UNKNOWN_LABEL, WeakSliceLabeld

    vol = MetaTensor(torch.rand(1, 8, 6, 10), meta={"filename_or_obj": "/data/knee"})
    d = WeakSliceLabeld()({"image": vol, "possible_slices": [3, 6]})
    assert d["label"].shape == vol.shape
    assert (d["label"][..., 3:7] == UNKNOWN_LABEL).all() and d["label"][..., :3].sum() == 0
    samples = SampleSlicesd(["image", "label"], num_slices=-1)(d)
    assert [s["image"].meta["source_slice"] for s in samples] == [0, 1, 2, 7, 8, 9]
    assert all(float(s["label"].sum()) == 0 for s in samples)
    t = SampleSlicesd(["image", "label"], num_slices=4)
    t.set_random_state(1)
    assert all(s["image"].meta["source_slice"] not in (3, 4, 5, 6) for s in t(d))
    # hard negatives: slices next to the possible range are drawn far more often than distant ones
    near = SampleSlicesd(["image", "label"], num_slices=1, negatives="near")
    near.set_random_state(0)
    counts = np.bincount([near(d)[0]["image"].meta["source_slice"] for _ in range(400)], minlength=10)
    assert counts[3:7].sum() == 0 and counts[2] > 1.8 * counts[0] and counts[7] > 1.8 * counts[9]
    with pytest.raises(ValueError, match="negatives must be"):
        SampleSlicesd(["image"], negatives="hard")
    labelled = {"image": vol, "label": torch.ones(1, 8, 6, 10)}
    assert WeakSliceLabeld()(labelled)["label"] is labelled["label"]  # labelled items pass
    with pytest.raises(ValueError, match="/data/knee: item has no 'label' and no 'possible_slices'"):
        WeakSliceLabeld()({"image": vol})
    with pytest.raises(ValueError, match=r"possible_slices \[8, 12\] outside the volume's 10 slices"):
        WeakSliceLabeld()({"image": vol, "possible_slices": [8, 12]})


def test_weak_volumes_and_2d_images_train_in_one_batch(volumes):
    """A knee-acl-like mix: labelled 2D images and weak-labelled volumes in one DataLoader."""
    from monai.data import CacheDataset, DataLoader

    _, items = volumes
    root = Path(items[0]["image"]).parents[1]
    ds2 = json.loads((root / "dataset_2d.json").read_text())
    png = ds2["training"][0]
    data = [
        {"image": str(root / png["image"]), "label": str(root / png["label"])},
        {"image": items[0]["image"], "possible_slices": [3, 6]},  # no label: weak
    ]
    chain = train_transforms(["image", "label"], 64, value_map={1: 0, 2: 0, 3: 0, 4: 1}, slices_per_volume=2,
                             slice_orientation={"right": "inferior", "down": "posterior"},
                             image_orientation=ds2["image_orientation"], weak_labels=True, seed=0)  # fmt: skip
    loader = DataLoader(CacheDataset(data, chain, progress=False), batch_size=2, shuffle=False, num_workers=0)
    (batch,) = list(loader)
    assert batch["image"].shape == (3, 1, 64, 64) and batch["label"].shape == (3, 1, 64, 64)
    assert float(batch["label"][1:].max()) == 0.0  # the volume's slices come from outside its possible range
    assert set(batch) == {"image", "label"}


def test_volume_slices_equal_the_2d_slice_files(volumes):
    """A slice cut from the NIfTI volume lines up with the phantom's own PNG of that slice."""
    _, items = volumes
    item = items[0]
    acl = {"right": "inferior", "down": "posterior"}
    vol = eval_transforms(["image", "label"], 64, slices_per_volume=-1, slice_orientation=acl)(
        {"image": item["image"], "label": item["label"]}
    )
    root = Path(item["image"]).parents[1]
    ds2 = json.loads((root / "dataset_2d.json").read_text())
    case = Path(item["image"]).name.split(".")[0]
    png = next(e for k in ("training", "validation", "test") for e in ds2.get(k, []) if e["case"] == case and e["ligament"])
    two = eval_transforms(["image", "label"], 64, value_map={1: 0, 2: 0, 3: 0, 4: 1}, slice_orientation=acl,
                          image_orientation=ds2["image_orientation"])(
        {"image": str(root / png["image"]), "label": str(root / png["label"])}
    )  # fmt: skip
    k = int(png["slice"])
    assert torch.equal(vol[k]["label"].as_tensor(), two["label"].as_tensor())
    corr = np.corrcoef(vol[k]["image"].numpy().ravel(), two["image"].numpy().ravel())[0, 1]
    assert corr > 0.99


def test_train_json_trains_on_volumes_and_always_saves_the_best_model(volumes, tmp_path):
    """What MONAI Label does: train.json alone, train#dataset#data = volumes, max_epochs below val_interval."""
    from monai.bundle import ConfigWorkflow

    _, items = volumes
    data = [{"image": i["image"], "label": i["label"]} for i in items]
    overrides = tiny_overrides(Path("/nonexistent"), tmp_path, val_interval=5)
    overrides.update({"train#dataset#data": data[:3], "validate#dataset#data": data[3:], "train#trainer#max_epochs": 1})
    wf = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"), workflow_type="train", **overrides,
    )  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1
    # 3 volumes x 4 slices per epoch, batch of 4 volumes -> one iteration of 12 slices
    assert trainer.state.iteration == 1
    assert (tmp_path / "models" / "model.pt").is_file(), "final validation must save the best model"
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert "val_f1" in evaluator.state.metrics


def test_train_json_defaults_match_inference_json():
    train = json.loads((CONFIGS / "train.json").read_text())
    infer = json.loads((CONFIGS / "inference.json").read_text())
    for key in ("spatial_size", "width", "network_name", "num_classes", "slice_orientation", "preprocessing_options"):
        assert train[key] == infer[key], key
    assert train["resume"] is False
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["slice_orientation"] == infer["slice_orientation"] == meta["network_data_format"]["inputs"]["image"]["slice_orientation"]
    assert meta["body_part"] == infer["body_part"]
    assert TINY["width"] != train["width"]  # the tests' tiny network is an override, not the default


def test_auto_inference_chain_serves_2d_images_and_volumes(volumes):
    """One inference chain (spatial_dims="auto") for PNG slices and NIfTI volumes, inverted back."""
    from kneeseg.execution import SliceOrSimpleInferer
    from kneeseg.networks import build_network
    from kneeseg.transforms import infer_transforms, post_transforms

    _, items = volumes
    torch.manual_seed(0)
    net = build_network("csam_unet", width=4).eval()
    inferer = SliceOrSimpleInferer(roi_size=[64, 64], sw_batch_size=4)
    acl = {"right": "inferior", "down": "posterior"}
    auto = infer_transforms("image", 64, spatial_dims="auto", slice_orientation=acl)
    post = post_transforms(auto)
    root = Path(items[0]["image"]).parents[1]
    png = json.loads((root / "dataset_2d.json").read_text())["training"][0]["image"]
    for path, dims in ((items[0]["image"], 3), (str(root / png), 2)):
        data = auto({"image": path})
        ref_chain = infer_transforms("image", 64, spatial_dims=dims, slice_orientation=acl)
        ref = ref_chain({"image": path})
        torch.testing.assert_close(data["image"].as_tensor(), ref["image"].as_tensor())
        with torch.inference_mode():
            data["pred"] = inferer(data["image"][None], net)[0]
            ref["pred"] = inferer(ref["image"][None], net)[0]
        out = post(data)["pred"]
        expected = post_transforms(ref_chain)(ref)["pred"]
        original = ref_chain.transforms[0]({"image": path})["image"]
        assert out.shape[1:] == original.shape[1:]
        assert torch.equal(out.as_tensor(), expected.as_tensor())
    with pytest.raises(ValueError, match="2D image or a 3D volume"):
        auto.transforms[1]({"image": torch.zeros(1, 4, 4, 4, 4)})
