"""The batched CLAHE of the fast path equals the bundle's per-plane scikit-image CLAHE bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from kneeseg.data.dicom.discovery import discover_series
from kneeseg.data.dicom.loading import load_volume
from kneeseg.transforms.clahe import equalize_adapthist_planes
from kneeseg.transforms.preprocessing import HistogramEqualize


def _per_plane(planes: np.ndarray, clip_limit: float = 0.01, rescale: bool = True) -> np.ndarray:
    eq = HistogramEqualize("clahe", clip_limit=clip_limit, rescale=rescale)
    return np.stack([eq.equalise_plane(p) for p in planes])


def test_real_knee_planes_are_bit_identical(shared_data):
    vol = discover_series(shared_data / "dicom" / "knee-dess-sag").volumes[0]
    image, _ = load_volume(vol)
    planes = np.moveaxis(image[:, :, 30:36], 2, 0)
    planes = np.clip(planes / np.percentile(image, 99.5), 0, 1).astype(np.float32)
    for clip_limit in (0.01, 0.03):
        expected = _per_plane(planes, clip_limit)
        got = equalize_adapthist_planes(planes, clip_limit)
        assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert np.array_equal(equalize_adapthist_planes(planes, 0.01, rescale=False), _per_plane(planes, 0.01, False))


@pytest.mark.parametrize("shape", [(4, 37, 53), (3, 64, 64), (3, 100, 7), (2, 320, 320)])
def test_odd_shapes_constant_planes_and_one_level_planes(shape):
    rng = np.random.default_rng(sum(shape))
    planes = rng.random(shape).astype(np.float32) ** 3  # skewed histograms: clipping redistributes
    planes[0] = 0.3  # constant: returned as it is
    planes[1] = 0.5 + rng.random(shape[1:]).astype(np.float32) * 1e-6  # one grey level after quantisation
    with np.errstate(all="ignore"):  # scikit-image itself divides by zero on the one-level plane
        expected = _per_plane(planes)
    assert np.array_equal(equalize_adapthist_planes(planes), expected)
