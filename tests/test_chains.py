"""Named chains (train / eval / infer / post) end to end (kneeseg.transforms.chains)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import ImageReader, MetaTensor
from monai.transforms import Compose

from kneeseg.transforms import (
    KneeCompose,
    eval_transforms,
    infer_transforms,
    load_label,
    post_transforms,
    train_transforms,
)

ACL_CASE = "22"  # 784 x 768 (PIL W x H): the largest and non-square, the hardest to invert


def _acl(shared_data: Path, case: str = ACL_CASE) -> dict[str, str]:
    d = shared_data / "knee-acl" / "cases" / case
    return {"image": str(d / "img.png"), "label": str(d / "mask.png")}


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture()
def nifti_pair(tmp_path: Path) -> dict[str, str]:
    """Synthetic 16-bit-range volume (X=60, Y=80, Z=6 slices) with a box label."""
    rng = np.random.default_rng(0)
    vol = (rng.random((60, 80, 6)) * 3000).astype(np.float32)
    lab = np.zeros((60, 80, 6), np.uint8)
    lab[20:40, 30:55, 1:5] = 1
    vol[lab > 0] += 2000
    affine = np.diag([0.3125, 0.3125, 1.5, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "vol.nii.gz")
    nib.save(nib.Nifti1Image(lab, affine), tmp_path / "lab.nii.gz")
    return {"image": str(tmp_path / "vol.nii.gz"), "label": str(tmp_path / "lab.nii.gz")}


@pytest.mark.shared_data
def test_train_and_eval_chains_on_acl_case(shared_data: Path) -> None:
    for chain in (train_transforms(spatial_size=512, seed=0), eval_transforms(spatial_size=512)):
        assert isinstance(chain, Compose)
        out = chain(_acl(shared_data))
        assert out["image"].shape == out["label"].shape == (1, 512, 512)
        assert out["image"].dtype == out["label"].dtype == torch.float32
        assert isinstance(out["image"], MetaTensor)
        assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0}
    ev = eval_transforms(spatial_size=512)(_acl(shared_data))
    assert float(ev["image"].min()) == 0.0 and float(ev["image"].max()) <= 1.0
    assert 0.004 < float(ev["label"].mean()) < 0.03  # thin ACL survives preprocessing


@pytest.mark.shared_data
def test_train_chain_with_seed_is_deterministic(shared_data: Path) -> None:
    aug = {"affine_prob": 1.0, "noise_prob": 1.0, "gamma_prob": 1.0, "bias_field_prob": 1.0}
    runs = [
        train_transforms(spatial_size=128, seed=s, augmentation=aug)(_acl(shared_data)) for s in (7, 7, 8)
    ]
    assert torch.equal(runs[0]["image"], runs[1]["image"]) and torch.equal(runs[0]["label"], runs[1]["label"])
    assert not torch.equal(runs[0]["image"], runs[2]["image"])
    plain = eval_transforms(spatial_size=128)(_acl(shared_data))
    assert not torch.equal(runs[0]["image"], plain["image"])  # augmentation really applied


@pytest.mark.shared_data
def test_infer_and_post_chain_invert_to_original_geometry(shared_data: Path) -> None:
    """A perfect prediction at 512 maps back to the original mask (Dice >= 0.99)."""
    pair = _acl(shared_data)
    original = load_label()({"label": pair["label"]})["label"]  # (1, 784, 768)
    pre = infer_transforms(spatial_size=512)
    data = pre({"image": pair["image"]})
    assert data["image"].shape == (1, 512, 512)
    target = eval_transforms(spatial_size=512)(pair)["label"][0]
    logits = torch.stack([1.0 - target, target]) * 8.0 - 4.0  # (2, 512, 512), "network output"
    data["pred"] = MetaTensor(logits)
    out = post_transforms(pre, largest_component=True)(data)
    assert out["pred"].shape == original.shape == (1, 784, 768)
    assert set(torch.unique(out["pred"]).tolist()) == {0.0, 1.0}
    assert _dice(out["pred"], original) >= 0.99


def test_post_chain_largest_component_and_sigmoid() -> None:
    probs = torch.zeros(1, 32, 32)
    probs[0, 4:14, 4:14] = 5.0  # big blob
    probs[0, 25:27, 25:27] = 5.0  # speck
    probs = probs * 2 - 5  # logits
    keep = post_transforms(None, activation="sigmoid", largest_component=True)({"pred": MetaTensor(probs)})
    assert float(keep["pred"].sum()) == 100.0
    both = post_transforms(None, activation="sigmoid")({"pred": MetaTensor(probs)})
    assert float(both["pred"].sum()) == 104.0


def test_chains_on_synthetic_nifti_volume(nifti_pair: dict[str, str]) -> None:
    tr = train_transforms(spatial_size=64, spatial_dims=3, seed=1)(dict(nifti_pair))
    ev = eval_transforms(spatial_size=64, spatial_dims=3)(dict(nifti_pair))
    for out in (tr, ev):
        assert out["image"].shape == out["label"].shape == (1, 64, 64, 6)  # in-plane only
        assert out["image"].dtype == out["label"].dtype == torch.float32
    assert set(torch.unique(ev["label"]).tolist()) == {0.0, 1.0}
    assert float(ev["label"][..., 0].sum()) == 0.0 and float(ev["label"][..., 2].sum()) > 0  # slices kept apart
    pre = infer_transforms(spatial_size=64, spatial_dims=3)
    data = pre({"image": nifti_pair["image"]})
    lab = ev["label"][0]
    data["pred"] = MetaTensor(torch.stack([1 - lab, lab]) * 8 - 4)
    out = post_transforms(pre)(data)
    assert out["pred"].shape == (1, 60, 80, 6)
    ref = torch.from_numpy(np.asarray(nib.load(nifti_pair["label"]).dataobj)).float()[None]
    assert _dice(out["pred"], ref) > 0.97


def test_2d_chain_rejects_volume_with_clear_message(nifti_pair: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"vol\.nii\.gz: expected a 2D image, got spatial shape \(60, 80, 6\)"):
        infer_transforms(spatial_size=64)({"image": nifti_pair["image"]})


class _FolderReader(ImageReader):
    """Stand-in for a DICOM series reader: reads a folder holding ``pixels.npy``."""

    def verify_suffix(self, filename) -> bool:  # noqa: ANN001
        return True

    def read(self, data, **kwargs):  # noqa: ANN001, ANN003
        return np.load(Path(str(data[0] if isinstance(data, (list, tuple)) else data)) / "pixels.npy")

    def get_data(self, img):  # noqa: ANN001
        return img, {"spatial_shape": np.asarray(img.shape), "original_channel_dim": float("nan")}


def test_reader_argument_plugs_in_other_loaders(tmp_path: Path) -> None:
    series = tmp_path / "series_001"
    series.mkdir()
    np.save(series / "pixels.npy", (np.random.default_rng(0).random((40, 30, 5)) * 1000).astype(np.int16))
    chain = infer_transforms(spatial_size=48, spatial_dims=3, reader=_FolderReader())
    assert isinstance(chain, KneeCompose)
    out = chain({"image": str(series)})
    # (40, 30, 5) -> longest in-plane side 48 -> (48, 36, 5) -> centre pad -> (48, 48, 5)
    assert out["image"].shape == (1, 48, 48, 5) and out["image"].dtype == torch.float32


@pytest.mark.shared_data
def test_train_chain_patches_keep_resolution_and_oversample_foreground(shared_data: Path) -> None:
    """``patch_size``: one P x P patch per image cut from the N x N image, mostly on the ACL."""
    chain = train_transforms(spatial_size=256, seed=0, patch_size=96, patch_pos_fraction=1.0, augment=False)
    full = eval_transforms(spatial_size=256)(_acl(shared_data))
    for _ in range(3):
        out = chain(_acl(shared_data))  # one patch: the dictionary itself
        assert out["image"].shape == out["label"].shape == (1, 96, 96)
        assert float(out["label"].sum()) > 0  # centred on a foreground pixel
        # the patch is a crop of the full-resolution image, not a downscaled image
        img = full["image"][0].numpy()
        patch = out["image"][0].numpy()
        corners = np.lib.stride_tricks.sliding_window_view(img[:161, :161], (8, 8))  # candidate top-left 8x8
        cand = np.argwhere(np.abs(corners - patch[:8, :8]).max(axis=(2, 3)) < 1e-6)
        assert any(np.allclose(img[i : i + 96, j : j + 96], patch) for i, j in cand)
    with pytest.raises(ValueError, match="patch_size must be between 0 and spatial_size"):
        train_transforms(spatial_size=64, patch_size=64)


def test_patches_of_volume_slices_stay_a_flat_list_that_collates(nifti_pair: dict[str, str]) -> None:
    """Volumes cut into slices (a list) then one patch per slice: a flat list of patch dictionaries,
    through the augmentation, that MONAI's DataLoader batches with 2D images (the knee-acl recipe)."""
    from monai.data import DataLoader, Dataset

    chain = train_transforms(spatial_size=64, seed=0, slices_per_volume=3, patch_size=32)
    out = chain(nifti_pair)
    assert isinstance(out, list) and len(out) == 3
    assert all(isinstance(d, dict) and d["image"].shape == d["label"].shape == (1, 32, 32) for d in out)
    batch = next(iter(DataLoader(Dataset([nifti_pair, nifti_pair], chain), batch_size=2)))
    assert batch["image"].shape == (6, 1, 32, 32)
    with pytest.raises(ValueError, match="needs a label key"):
        train_transforms(keys="image", spatial_size=64, patch_size=32)
