"""One inference definition: ``inference.json`` is read by ``kneeseg infer`` and by the bundle alike.

A bundle copy with changed settings (preprocessing options, the model's slice orientation,
the largest-component cleanup) must change what both paths compute, identically: the fast path
keeps no defaults of its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from inference_helpers import dice, run_bundle_inference, smooth_knee_series, untrained_model
from kneeseg.data import discover_series, load_volume
from kneeseg.inference.batch import predict_folder
from kneeseg.inference.definition import bundle_settings
from kneeseg.inference.segmenter import load_segmenter
from kneeseg.workflows import default_bundle_dir

TINY = {"width": 4, "spatial_size": 64}


def _bundle_copy(dst: Path, **changes) -> Path:
    src = default_bundle_dir()
    shutil.copytree(src / "configs", dst / "configs")
    path = dst / "configs" / "inference.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split("#")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(json.dumps(cfg, indent=4))
    return dst


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return untrained_model(tmp_path_factory.mktemp("def_model") / "model.pt", seed=1)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A knee-like sagittal series (smooth blobs, so that masks have several components)."""
    return smooth_knee_series(tmp_path_factory.mktemp("def_series"), seed=5)


def test_bundle_settings_read_every_inference_setting(tmp_path):
    bundle = _bundle_copy(
        tmp_path / "b", **{"preprocessing_options#smooth_sigma": 1.5, "preprocessing_options#equalization": "global",
                           "largest_component": False, "slice_orientation": {"right": "posterior", "down": "inferior"},
                           "ligament_qc#volume_ml": [1.0, 2.0], "body_part": "ANKLE"}
    )  # fmt: skip
    s = bundle_settings(bundle, overrides=TINY)
    assert s["preprocessing"]["smooth_sigma"] == 1.5 and s["preprocessing"]["equalization"] == "global"
    assert s["largest_component"] is False and s["slice_orientation"].code == "PI" and s["slice_plane"] == "sagittal"
    assert s["qc"]["ligament"]["volume_ml"] == [1.0, 2.0] and s["body_part"] == "ANKLE"
    bad = _bundle_copy(tmp_path / "bad", **{"preprocessing_options#sigma": 1.0})
    with pytest.raises(ValueError, match=r"unknown preprocessing option\(s\) \['sigma'\]"):
        bundle_settings(bad, overrides=TINY)


def test_fast_path_preprocessing_is_the_bundle_chain_of_the_same_config(tmp_path, series, model):
    """With changed options the segmenter's network input still equals the bundle's own chain."""
    from monai.bundle import ConfigParser

    bundle = _bundle_copy(
        tmp_path / "b", **{"preprocessing_options#smooth_sigma": 1.5, "preprocessing_options#percentiles": [2.0, 98.0],
                           "slice_orientation": {"right": "anterior", "down": "inferior"}}
    )  # fmt: skip
    seg, settings = load_segmenter(bundle, model, overrides=TINY, runtime="eager")
    folder = next(series.iterdir())
    image, meta = load_volume(discover_series(folder).volumes[0])
    prepared = seg.preprocess(image, meta["affine"])
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser.update(TINY)
    chain = parser.get_parsed_content("preprocessing")
    ref = chain({"image": str(folder)})["image"].as_tensor()[0].permute(2, 0, 1)
    diff = (prepared.slices[:, 0] - ref).abs()
    # equal up to float rounding, which CLAHE's binning can turn into one grey step for a rare pixel
    assert diff.shape == ref.shape and float((diff > 1e-5).float().mean()) < 1e-3 and float(diff.max()) < 0.05
    # and differs from the shipped settings' input (the options took effect)
    shipped, _ = load_segmenter(None, model, overrides=TINY, runtime="eager")
    assert float((shipped.preprocess(image, meta["affine"]).slices - prepared.slices).abs().max()) > 0.05


def _components(mask: np.ndarray) -> int:
    return int(ndimage.label(mask > 0, structure=np.ones((3, 3, 3)))[1])


@pytest.mark.parametrize("largest", [False, True])
def test_largest_component_setting_reaches_kneeseg_infer_and_the_bundle(largest, tmp_path, series, model):
    bundle = _bundle_copy(tmp_path / "b", largest_component=largest)
    out = tmp_path / "infer"
    res = predict_folder(series, out, bundle=bundle, ckpt=model, overrides=TINY, runtime="eager",
                         formats=["nifti"], progress=lambda line: None)  # fmt: skip
    (row,) = [r for r in res.rows if r["status"] == "ok"]
    fast = nib.load(str(out / row["nifti"]))
    # eager on both sides: "auto" may pick bf16 on a CPU with native bf16, and an untrained network's
    # probabilities sit near 0.5, where bf16 rounding flips pixels
    path = run_bundle_inference(bundle, series, tmp_path / "bundle_out", "--ckpt_path", str(model), "--runtime", "eager")
    ref = nib.load(str(path))
    a, b = np.asarray(fast.dataobj), np.asarray(ref.dataobj).squeeze()
    assert np.allclose(fast.affine, ref.affine, atol=1e-4) and a.shape == b.shape
    assert dice(a, b) >= 0.99
    if largest:
        assert _components(a) == 1 and _components(b) == 1
    else:
        assert _components(a) > 1 and _components(b) > 1


def test_the_resize_mode_brings_probabilities_back_in_both_paths(tmp_path, series, model, monkeypatch):
    """``preprocessing_options.image_mode`` sets the resize and, through the bundle's Invertd and the
    fast path's ``resize_probabilities``, the way back: both give one mask (and the fast path's own
    bilinear way back would not)."""
    bundle = _bundle_copy(tmp_path / "b", **{"preprocessing_options#image_mode": "nearest", "largest_component": False})
    path = run_bundle_inference(bundle, series, tmp_path / "bundle_out", "--ckpt_path", str(model), "--runtime", "eager")
    ref = np.asarray(nib.load(str(path)).dataobj).squeeze()

    def fast(out):
        res = predict_folder(series, out, bundle=bundle, ckpt=model, overrides=TINY, runtime="eager",
                             formats=["nifti"], progress=lambda line: None)  # fmt: skip
        (row,) = [r for r in res.rows if r["status"] == "ok"]
        return np.asarray(nib.load(str(out / row["nifti"])).dataobj)

    same = fast(tmp_path / "nearest")
    assert same.shape == ref.shape and float((same != ref).mean()) < 1e-3  # measured: 0 voxels differ
    from kneeseg.inference.segmenter import SliceSegmenter

    init = SliceSegmenter.__init__

    def bilinear_back(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.resize_mode = "bilinear"

    monkeypatch.setattr(SliceSegmenter, "__init__", bilinear_back)
    other = fast(tmp_path / "bilinear_back")
    assert float((other != ref).mean()) > 0.01  # measured: 13 % of the voxels


def test_a_one_slice_series_keeps_its_geometry_through_the_bundle(tmp_path, series, model):
    """MONAI's SaveImaged would squeeze the slice axis of a one-slice sagittal series and fail on the
    singular 2D affine left over; the bundle writes it with its own affine, the mask kneeseg infer writes."""
    import shutil

    folder = next(series.iterdir())
    one = tmp_path / "one" / "s"
    one.mkdir(parents=True)
    shutil.copy(sorted(folder.glob("*.dcm"))[len(list(folder.glob("*.dcm"))) // 2], one)
    path = run_bundle_inference(default_bundle_dir(), one.parent, tmp_path / "bundle_out", "--ckpt_path", str(model),
                                "--runtime", "eager")  # fmt: skip
    ref = nib.load(str(path))
    res = predict_folder(one.parent, tmp_path / "fast", ckpt=model, overrides=TINY,
                         runtime="eager", formats=["nifti"], progress=lambda line: None)  # fmt: skip
    (row,) = [r for r in res.rows if r["status"] == "ok"]
    fast = nib.load(str(tmp_path / "fast" / row["nifti"]))
    assert ref.shape[:3] == fast.shape[:3] and ref.shape[2] == 1
    assert np.allclose(ref.affine, fast.affine, atol=1e-4)
    a, b = np.asarray(fast.dataobj).squeeze(), np.asarray(ref.dataobj).squeeze()
    assert a.any() and float((a != b).mean()) < 1e-3  # measured: identical
