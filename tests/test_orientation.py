"""2D training slices and 3D volumes must meet the network in the same in-plane orientation."""

import json

import numpy as np
import pytest
from monai.transforms import Compose, Flipd

from kneeseg.data import generate_phantom
from kneeseg.transforms.loading import load_image


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom_orient")
    generate_phantom(out, cases=1, seed=3, shape=(48, 40, 10), png_negatives=0)
    return out


def _corr(a, b):
    a, b = np.ravel(a).astype(float), np.ravel(b).astype(float)
    return float(np.corrcoef(a, b)[0, 1])


def test_png_slice_equals_flipped_volume_slice(phantom):
    item = json.loads((phantom / "dataset_2d.json").read_text())["training"][0]
    case = json.loads((phantom / "dataset.json").read_text())["training"][0]
    png = load_image("image")({"image": str(phantom / item["image"])})["image"][0].numpy()
    for source in (case["dicom"], case["image"]):  # DICOM series folder and NIfTI volume
        vol = load_image("image")({"image": str(phantom / source)})["image"]
        flipped = Compose([Flipd("image", spatial_axis=[1])])({"image": vol})["image"][0].numpy()
        k = int(item["slice"])
        assert png.shape == flipped.shape[:2]
        # the PNG is an 8-bit rendering of the same slice: near-perfect correlation only in this orientation
        assert _corr(png, flipped[..., k]) > 0.98
        assert _corr(png, vol[0].numpy()[..., k]) < 0.9
