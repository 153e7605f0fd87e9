"""2D image/mask readers and labelme rasterisation (kneeseg.data.images2d)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from monai.transforms import LoadImaged
from PIL import Image

from kneeseg.data.images2d import (
    Image2DReader,
    LabelmeReader,
    labelme_to_mask,
    read_image2d,
    read_mask2d,
)
from kneeseg.transforms import eval_transforms, load_image, load_label, train_transforms


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> str:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return str(path)


def _grey_rgba(h: int, w: int, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    return np.stack([g, g, g, np.full_like(g, 255)], axis=-1)


def _mask_rgba(h: int, w: int, box: tuple[int, int, int, int] | None) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    if box:
        r0, r1, c0, c1 = box
        m[r0:r1, c0:c1] = 255
    return np.stack([m, m, m, np.full_like(m, 255)], axis=-1)


# ---------------------------------------------------------------- real data, orientation


@pytest.mark.shared_data
def test_acl_case_loads_as_one_channel_in_monai_orientation(shared_data: Path) -> None:
    case = shared_data / "knee-acl" / "cases" / "22"  # 784 x 768, not square
    d = LoadImaged("image", reader=Image2DReader("image"), ensure_channel_first=True)({"image": case / "img.png"})
    m = LoadImaged("label", reader=Image2DReader("mask"), ensure_channel_first=True)({"label": case / "mask.png"})
    with Image.open(case / "img.png") as im:
        assert im.mode == "RGBA"
        w, h = im.size
        grey = np.asarray(im.convert("L"))
    with Image.open(case / "mask.png") as mm:
        ref_mask = np.asarray(mm.convert("L")) > 0
    # MONAI convention: spatial (W, H); image and mask agree
    assert d["image"].shape == (1, w, h) and m["label"].shape == (1, w, h)
    np.testing.assert_array_equal(d["image"][0].numpy(), grey.T)
    np.testing.assert_array_equal(m["label"][0].numpy() > 0, ref_mask.T)
    assert set(np.unique(m["label"].numpy())) == {0.0, 1.0}
    # (H, W) option flips both consistently
    mh = LoadImaged("label", reader=Image2DReader("mask", reverse_indexing=False))({"label": case / "mask.png"})
    np.testing.assert_array_equal(mh["label"].numpy() > 0, ref_mask)


# ---------------------------------------------------------------- grey / colour


def test_colour_rgb_image_rejected_with_file_name(tmp_path: Path) -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = _png(tmp_path / "colour.png", rgb)
    with pytest.raises(ValueError, match=r"colour\.png is a colour RGB image; expected greyscale"):
        read_image2d(path)
    with pytest.raises(ValueError, match=r"colour\.png is a colour RGB image; expected greyscale"):
        load_image()({"image": path})


def test_grey_rgb_within_tolerance_and_16bit(tmp_path: Path) -> None:
    g = np.random.default_rng(1).integers(0, 250, (12, 9), dtype=np.uint8)
    rgb = np.stack([g, g + 1, g], axis=-1)  # JPEG-like rounding, 1 level
    out = read_image2d(_png(tmp_path / "jpeglike.png", rgb))
    assert out.shape == (12, 9) and np.abs(out - g).max() <= 1
    g16 = np.random.default_rng(2).integers(0, 4096, (10, 14), dtype=np.uint16)  # 12-bit data in 16-bit PNG
    p16 = tmp_path / "img16.png"
    Image.fromarray(g16).save(p16)
    loaded = load_image()({"image": str(p16)})["image"]
    assert loaded.shape == (1, 14, 10)
    np.testing.assert_array_equal(loaded[0].numpy(), g16.T.astype(np.float32))


# ---------------------------------------------------------------- masks


def test_mask_value_map_and_unknown_values(tmp_path: Path) -> None:
    m = np.zeros((8, 8), np.uint8)
    m[1:3] = 128
    m[5:7] = 255
    path = _png(tmp_path / "multi.png", m)
    np.testing.assert_array_equal(np.unique(read_mask2d(path)), [0, 1])  # binarised by default
    classes = read_mask2d(path, value_map={128: 1, 255: 2})
    assert (classes[1:3] == 1).all() and (classes[5:7] == 2).all() and classes[0].sum() == 0
    with pytest.raises(ValueError, match=r"multi\.png: mask has grey values not in value_map: 255"):
        read_mask2d(path, value_map={128: 1})


def test_empty_mask_error_or_warning(tmp_path: Path) -> None:
    img = _png(tmp_path / "img.png", _grey_rgba(32, 40))
    empty = _png(tmp_path / "empty_mask.png", _mask_rgba(32, 40, None))
    with pytest.raises(ValueError, match=r"empty_mask\.png: mask is empty"):
        read_mask2d(empty)
    with pytest.raises(ValueError, match=r"empty_mask\.png: mask is empty"):
        train_transforms(spatial_size=32, seed=0)({"image": img, "label": empty})
    with pytest.warns(UserWarning, match=r"empty_mask\.png: mask is empty"):
        out = train_transforms(spatial_size=32, allow_empty=True, augment=False)({"image": img, "label": empty})
    assert out["label"].shape == (1, 32, 32) and float(out["label"].sum()) == 0.0
    with pytest.warns(UserWarning, match=r"empty_mask\.png: mask is empty"):
        LoadImaged("label", reader=Image2DReader("mask", allow_empty=True))({"label": empty})


def test_image_mask_size_mismatch_names_both_files_and_sizes(tmp_path: Path) -> None:
    img = _png(tmp_path / "img.png", _grey_rgba(384, 352))  # PIL size 352x384
    mask = _png(tmp_path / "mask.png", _mask_rgba(380, 352, (10, 50, 10, 50)))  # 352x380
    with pytest.raises(ValueError) as err:
        eval_transforms(spatial_size=64)({"image": img, "label": mask})
    msg = str(err.value)
    assert f"image {img} (352x384)" in msg and f"mask {mask} (352x380)" in msg and "differ in size" in msg


def test_loaders_dispatch_by_suffix_and_keep_channel_first(tmp_path: Path) -> None:
    img = _png(tmp_path / "a.png", _grey_rgba(20, 30))
    mask = _png(tmp_path / "a_mask.png", _mask_rgba(20, 30, (2, 8, 3, 9)))
    d = load_label()(load_image()({"image": img, "label": mask}))
    assert d["image"].shape == (1, 30, 20) and d["label"].shape == (1, 30, 20)
    assert d["image"].meta["filename_or_obj"] == img


# ---------------------------------------------------------------- labelme


def _labelme(path: Path, shapes: list[dict], h: int = 40, w: int = 60) -> Path:
    path.write_text(json.dumps({"version": "5.2.1", "shapes": shapes, "imagePath": "x.png",
                                "imageData": None, "imageHeight": h, "imageWidth": w}))
    return path


def test_labelme_polygon_rectangle_circle(tmp_path: Path) -> None:
    shapes = [
        {"label": "acl", "points": [[10, 5], [30, 5], [30, 15], [10, 15]], "shape_type": "polygon"},
        {"label": "bone", "points": [[40, 20], [49, 29]], "shape_type": "rectangle"},
        {"label": "acl", "points": [[15, 30], [19, 30]], "shape_type": "circle"},
    ]
    path = _labelme(tmp_path / "ann.json", shapes)
    m = labelme_to_mask(path, {"acl": 1, "bone": 2})
    assert m.shape == (40, 60) and m.dtype == np.uint8
    assert m[10, 20] == 1 and m[2, 20] == 0  # inside / outside the polygon (x=20, y=10)
    assert (m[20:30, 40:50] == 2).all() and m[19, 45] == 0 and m[25, 51] == 0
    assert m[30, 15] == 1 and m[30, 22] == 0  # circle centre (x=15, y=30), radius 4
    assert abs(int((m[24:37, 8:23] == 1).sum()) - np.pi * 16) < 12
    # as a MONAI reader: same mask in the (W, H) convention, channel first
    d = LoadImaged("label", reader=LabelmeReader({"acl": 1, "bone": 2}), ensure_channel_first=True)({"label": path})
    assert d["label"].shape == (1, 60, 40)
    np.testing.assert_array_equal(d["label"][0].numpy(), m.T)


def test_labelme_unknown_label_names_file_label_and_known(tmp_path: Path) -> None:
    path = _labelme(tmp_path / "bad.json", [{"label": "meniscus", "points": [[1, 1], [5, 1], [5, 5]]}])
    with pytest.raises(ValueError) as err:
        labelme_to_mask(path, {"acl": 1, "bone": 2})
    msg = str(err.value)
    assert str(path) in msg and "'meniscus'" in msg and "known labels: ['acl', 'bone']" in msg


def test_labelme_labels_through_train_chain(tmp_path: Path) -> None:
    img = _png(tmp_path / "x.png", _grey_rgba(40, 60))
    ann = _labelme(tmp_path / "x.json", [{"label": "acl", "points": [[10, 5], [30, 5], [30, 15], [10, 15]]}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        out = train_transforms(spatial_size=64, label_map={"acl": 1}, augment=False)({"image": img, "label": str(ann)})
    assert out["image"].shape == out["label"].shape == (1, 64, 64)
    assert set(np.unique(out["label"].numpy())) == {0.0, 1.0}
