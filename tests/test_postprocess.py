"""The post-processing exists once (kneeseg.transforms.postprocess): the bundle's ``post_transforms``
and the fast path of ``kneeseg infer`` call the same functions, and they compute what MONAI's
``AsDiscreted(argmax=True)`` and ``KeepLargestConnectedComponentd`` compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, KeepLargestConnectedComponentd

from kneeseg.inference import segmenter
from kneeseg.transforms import post_transforms, postprocess
from kneeseg.transforms.postprocess import KeepLargestComponentsd, ProbabilitiesToLabelsd, probabilities_to_labels


def _blobby_probs(shape, classes, seed):
    """Smooth random probabilities: class regions with several components each."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    logits = ndimage.gaussian_filter(rng.normal(size=(classes, *shape)), sigma=[0] + [2] * len(shape))
    return torch.softmax(torch.as_tensor(logits * 8, dtype=torch.float32), dim=0)


@pytest.mark.parametrize("shape", [(40, 36), (30, 28, 10)])
def test_labels_and_clean_up_equal_monai(shape):
    probs = _blobby_probs(shape, 4, seed=len(shape))
    affine = torch.diag(torch.tensor([0.5, 0.6, 3.0, 1.0], dtype=torch.float64))
    data = {"pred": MetaTensor(probs, affine=affine)}
    ours = KeepLargestComponentsd("pred")(ProbabilitiesToLabelsd("pred")(data))["pred"]
    monai = KeepLargestConnectedComponentd("pred", is_onehot=False, independent=True)(
        AsDiscreted("pred", argmax=True)(data)
    )["pred"]
    assert ours.shape == (1, *shape) and ours.dtype == torch.float32
    assert torch.equal(ours.as_tensor(), monai.as_tensor())
    assert isinstance(ours, MetaTensor) and torch.equal(ours.affine, affine)  # geometry kept for SaveImaged
    # the clean-up removed something: the example has several components per class
    raw = ProbabilitiesToLabelsd("pred")(data)["pred"]
    assert not torch.equal(raw.as_tensor(), ours.as_tensor())


def test_two_classes_are_decided_by_the_foreground_channel_alone():
    """What lets the fast path resize one channel back: ``p1 > 0.5`` is the argmax of ``(1 - p1, p1)``."""
    probs = _blobby_probs((50, 40), 2, seed=7)
    both, conf_both = probabilities_to_labels(probs[None])
    fg, conf_fg = probabilities_to_labels(probs[None, 1:2])
    assert torch.equal(both, fg) and torch.equal(conf_both, conf_fg)
    argmax = torch.argmax(probs, dim=0)
    assert float((both[0] == argmax).float().mean()) == 1.0
    assert float(conf_both.min()) >= 0.5


def test_many_classes_take_the_first_maximum_like_torch_argmax():
    probs = torch.tensor([[0.2, 0.4, 0.4], [0.5, 0.25, 0.25], [0.3, 0.3, 0.4]]).T[None, :, :, None]  # (1, 3, 3, 1)
    labels, best = probabilities_to_labels(probs)
    assert labels.dtype == torch.uint8 and labels[0, :, 0].tolist() == torch.argmax(probs, dim=1)[0, :, 0].tolist()
    assert labels[0, :, 0].tolist() == [1, 0, 2] and torch.allclose(best[0, :, 0], torch.tensor([0.4, 0.5, 0.4]))


def test_the_fast_path_and_the_bundle_chain_call_one_implementation():
    assert segmenter.probabilities_to_labels is postprocess.probabilities_to_labels
    assert segmenter.keep_largest_components is postprocess.keep_largest_components
    chain = post_transforms(None, largest_component=True)
    kinds = [type(t) for t in chain.transforms]
    assert ProbabilitiesToLabelsd in kinds and KeepLargestComponentsd in kinds


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"expected probabilities \(B, K, \.\.\.\)"):
        probabilities_to_labels(torch.zeros(5))
    with pytest.raises(ValueError, match=r"pred: expected class ids \(1, \*spatial\)"):
        KeepLargestComponentsd("pred")({"pred": torch.zeros(2, 4, 4)})
