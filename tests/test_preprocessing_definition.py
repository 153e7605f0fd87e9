"""One preprocessing definition, one implementation of each step.

The ordered steps (``preprocessing_options.steps``) drive both the MONAI chain and the fast path;
each batched function equals the library computation it replaces (numpy's percentiles, MONAI's
Gaussian, resize and pad, scikit-image's equalisation), and the order is the definition: the
default runs the intensity steps at the network's resolution.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, GaussianSmooth, Resize, SpatialPad

from kneeseg.transforms import functional as KF
from kneeseg.transforms import paper_preprocessing, preprocessing_options, preprocessing_steps
from kneeseg.transforms.clahe import clahe_planes, equalise_plane_reference, equalize_hist_planes

NATIVE = list(KF.NATIVE_RESOLUTION_STEPS)


def test_default_definition_is_the_papers_order_at_the_networks_resolution():
    steps = preprocessing_steps()
    assert [s.name for s in steps] == ["resize", "scale", "smooth", "equalize", "pad"]
    assert steps[1].params == {"lower": 0.5, "upper": 99.5} and steps[2].params == {"sigma": 0.5}
    assert steps[3].params == {"method": "clahe", "clip_limit": 0.01}
    # steps switched off by their options drop out; the order stays
    off = preprocessing_steps({"percentiles": None, "smooth_sigma": 0, "equalization": None, "steps": NATIVE})
    assert [s.name for s in off] == ["resize", "pad"]
    assert [s.name for s in preprocessing_steps({"steps": NATIVE})] == NATIVE


@pytest.mark.parametrize(
    "steps, message",
    [
        (["resize", "scale", "blur", "pad"], r"unknown preprocessing step\(s\) \['blur'\]"),
        (["resize", "scale", "pad", "equalize"], "end with 'pad'"),
        (["scale", "equalize", "pad"], "need 'resize'"),
        (["resize", "equalize", "scale", "pad"], "'scale' must come before 'equalize'"),
        (["resize", "resize", "pad"], "repeat a step"),
        ("resize,pad", "list of step names"),
    ],
)
def test_bad_orders_are_clear_errors(steps, message):
    with pytest.raises(ValueError, match=message):
        preprocessing_options({"steps": steps})


def test_bad_modes_are_clear_errors():
    with pytest.raises(ValueError, match="image_mode must be one of"):
        preprocessing_options({"image_mode": "lanczos"})
    with pytest.raises(ValueError, match="equalization must be"):
        preprocessing_options({"equalization": "adaptive"})


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 65537])
def test_percentiles_are_numpys_on_every_device(n):
    """The CPU uses numpy; other devices compute by rank (kthvalue): run here on CPU tensors."""
    x = torch.from_numpy(np.random.default_rng(n).gamma(2.0, 300.0, size=n).astype(np.float32))
    qs = [0.0, 0.5, 50.0, 99.5, 100.0]
    ref = np.percentile(x.numpy(), qs)
    assert np.allclose(KF.percentiles_by_rank(x, qs), ref, rtol=0, atol=1e-6 * float(x.max()))
    assert KF.percentiles(x, qs) == [float(v) for v in ref]


def test_scale_maps_the_percentile_range_to_unit_and_a_constant_to_zero():
    x = torch.arange(1000, dtype=torch.float32).reshape(10, 1, 10, 10)
    out = KF.scale_percentiles(x, 1.0, 99.0)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0 and out.shape == x.shape
    assert float(KF.scale_percentiles(torch.full((2, 1, 4, 4), 7.0), 1, 99).abs().max()) == 0.0


@pytest.mark.parametrize("sigma", [0.5, 1.3, 3.0])
def test_gaussian_is_monais(sigma):
    x = torch.rand(3, 1, 40, 33)
    ref = torch.stack([GaussianSmooth(sigma=sigma)(p) for p in x])
    assert torch.allclose(KF.gaussian_smooth(x, (sigma, sigma)), ref, atol=1e-6)


@pytest.mark.parametrize("shape, n", [((512, 512), 256), ((352, 384), 256), ((320, 320), 512), ((100, 60), 64)])
def test_resize_is_monais_anti_aliased_resize(shape, n):
    x = torch.rand(2, 1, *shape)
    size = KF.longest_side_size(shape, n)
    ref = torch.stack([Resize(size, mode="bilinear", anti_aliasing=True)(p) for p in x])
    out = KF.resize_planes(x, size)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("size", [(64, 64), (63, 64), (58, 64), (64, 41)])
def test_pad_is_monais_symmetric_pad(size):
    x = torch.rand(1, 1, *size) + 1
    ref = SpatialPad((64, 64), method="symmetric")(x[0])
    assert torch.equal(KF.pad_planes(x, 64)[0], ref)


def test_global_equalisation_is_scikit_images():
    planes = torch.from_numpy(np.random.default_rng(3).random((3, 50, 70)).astype(np.float32) ** 2)
    planes[2] = 0.25  # constant: unchanged
    got = equalize_hist_planes(planes)
    for i in range(3):
        ref = equalise_plane_reference(planes[i].numpy(), "global")
        assert np.allclose(got[i].numpy(), ref, atol=2e-6)


def test_clahe_on_cpu_tensors_equals_the_numpy_reference_in_any_dtype_of_input():
    """The device path (torch only) on CPU tensors: what a GPU runs, bit-identical here."""
    rng = np.random.default_rng(11)
    planes = rng.random((5, 96, 80)).astype(np.float32) ** 3
    ref = np.stack([equalise_plane_reference(p) for p in planes])
    assert np.array_equal(clahe_planes(torch.from_numpy(planes)).numpy(), ref)
    assert np.array_equal(clahe_planes(torch.from_numpy(planes.astype(np.float64))).numpy(), ref)


def _chain_out(steps, image):
    chain = Compose(paper_preprocessing("image", None, spatial_size=64, steps=steps))
    return chain({"image": MetaTensor(torch.from_numpy(image[None]))})["image"][0].numpy()


def test_the_order_is_the_definition():
    """The default order equalises at N (CLAHE tiles of N/8 px); the native order at the image's size."""
    rng = np.random.default_rng(5)
    image = (rng.random((200, 160)) ** 2 * 4000).astype(np.float32)
    new, old = _chain_out(list(KF.DEFAULT_STEPS), image), _chain_out(NATIVE, image)
    assert new.shape == old.shape == (64, 64) and np.abs(new - old).max() > 0.05
    # by hand, the default order: resize first, then the intensity steps on the 64-px grid
    x = torch.from_numpy(image)[None, None]
    x = KF.resize_planes(x, KF.longest_side_size(image.shape, 64))
    x = KF.gaussian_smooth(KF.scale_percentiles(x, 0.5, 99.5), (0.5, 0.5))
    x = KF.pad_planes(torch.from_numpy(np.stack([equalise_plane_reference(p) for p in x[:, 0].numpy()]))[:, None], 64)
    assert np.allclose(new, x[0, 0].numpy(), atol=1e-6)


@pytest.mark.parametrize("steps", [list(KF.DEFAULT_STEPS), NATIVE])
def test_volumes_slice_wise_equal_the_batched_planes(steps):
    """The MONAI chain on a volume (in-plane axes (0, 1)) computes what preprocess_planes computes on its slices."""
    rng = np.random.default_rng(8)
    vol = (rng.random((90, 70, 5)) * 1000).astype(np.float32)
    chain = Compose(paper_preprocessing("image", None, spatial_size=48, spatial_dims=3, spatial_axes=(0, 1), steps=steps))
    out = chain({"image": MetaTensor(torch.from_numpy(vol[None]))})["image"][0].permute(2, 0, 1)
    prepared = KF.preprocess_planes(torch.from_numpy(vol).permute(2, 0, 1)[:, None], 48, {"steps": steps})
    assert prepared.planes.shape == (5, 1, 48, 48) and prepared.resized == (48, 37) and prepared.pad == (0, 5)
    assert torch.allclose(prepared.planes[:, 0], out, atol=1e-6)
    back = chain.inverse({"image": chain({"image": MetaTensor(torch.from_numpy(vol[None]))})["image"]})["image"]
    assert tuple(back.shape) == (1, 90, 70, 5)
