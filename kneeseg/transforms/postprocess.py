"""From class probabilities to a clean label map: the one implementation of the post-processing.

Batched functions and the component clean-up, called by both consumers:

- :func:`resize_probabilities`: probabilities back from the network's grid to the image's size, with
  the resize step's ``image_mode`` -- what the bundle's ``Invertd`` does with the recorded resize
  (MONAI ``Resize`` to the original size, no anti-aliasing);
- :func:`probabilities_to_labels`: class ids and confidence from probabilities ``(B, K, ...)``
  (argmax over ``K >= 3`` channels, first maximum winning; one channel -- a sigmoid output, or a
  two-class softmax's foreground channel -- above a threshold);
- :func:`keep_largest_components` (or :func:`count_components` without the clean-up): the largest
  connected component of each class (full connectivity in 2D or 3D), counting the components on
  the way.

The MONAI transforms :class:`ProbabilitiesToLabelsd` and :class:`KeepLargestComponentsd` apply them
to one decollated prediction in the bundle's :func:`kneeseg.transforms.post_transforms` (the
bundle, ``infer-datalist``, MONAI Label); the fast path of ``kneeseg infer``
(:class:`kneeseg.inference.segmenter.SliceSegmenter`) calls the functions on batches of slices and on
the whole volume's labels. A two-class softmax is decided by its foreground channel alone
(``p1 > 0.5``, the argmax when the channels sum to one), so the fast path resizes that one channel
back to full size and both consumers give the same labels from the same probabilities.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, SaveImaged
from monai.utils import ImageMetaKey, MetaKeys, convert_to_dst_type

from kneeseg.atomic import atomic_path

__all__ = [
    "KeepLargestComponentsd",
    "ProbabilitiesToLabelsd",
    "SaveLabelsd",
    "count_components",
    "keep_largest_components",
    "probabilities_to_labels",
    "resize_probabilities",
]

#: interpolation modes that take ``align_corners`` (MONAI's ``Resize`` leaves it at PyTorch's default)
_CORNER_MODES = ("linear", "bilinear", "bicubic", "trilinear")


def resize_probabilities(probs: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Probabilities ``(B, K, h, w)`` resized to ``(B, K, *size)`` with ``mode`` (the preprocessing's
    ``image_mode``), as the bundle's inverse of the resize computes them; ``probs`` itself when the
    size is already right."""
    if tuple(probs.shape[2:]) == tuple(int(s) for s in size):
        return probs
    corners = False if mode in _CORNER_MODES else None
    return torch.nn.functional.interpolate(probs, size=tuple(int(s) for s in size), mode=mode, align_corners=corners)


def probabilities_to_labels(probs: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 class ids ``(B, ...)`` and the winning probability ``(B, ...)`` of ``probs`` ``(B, K, ...)``.

    - ``K == 1``: the probability of the foreground (a sigmoid output, or channel 1 of a two-class
      softmax): class 1 where it is above ``threshold``; the confidence is ``max(p, 1 - p)``.
    - ``K == 2``: channel 1 decides as above (``p1 > threshold``; with ``threshold`` 0.5 the argmax
      of channels that sum to one).
    - ``K >= 3``: the argmax over the channels, the first maximum winning ties (as ``torch.argmax``),
      as a running maximum: on the CPU two orders of magnitude faster than ``torch.argmax(dim=1)``,
      which reduces over a strided axis; the confidence is the maximum.
    """
    if probs.ndim < 2 or probs.shape[1] < 1:
        raise ValueError(f"expected probabilities (B, K, ...), got shape {tuple(probs.shape)}")
    if probs.shape[1] <= 2:
        fg = probs[:, -1]
        return (fg > threshold).to(torch.uint8), torch.maximum(fg, 1.0 - fg)
    best = probs[:, 0]
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=probs.device)
    for c in range(1, probs.shape[1]):
        channel = probs[:, c]
        labels[channel > best] = c
        best = torch.maximum(best, channel)
    return labels, best


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every ``True`` of ``mask``, or ``None`` when there is none."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _label_class(labels: np.ndarray, c: int) -> tuple[tuple[slice, ...] | None, np.ndarray, int]:
    """Connected components of class ``c`` (full connectivity, as MONAI's
    ``KeepLargestConnectedComponent``), computed inside its bounding box only (the same components,
    a fraction of the work on a small structure in a large volume)."""
    from scipy import ndimage  # scipy.ndimage takes ~0.2 s to import: only when a clean-up runs

    mask = labels == c
    box = _bounding_box(mask)
    if box is None:
        return None, np.zeros((0,), dtype=np.int32), 0
    comp, n = ndimage.label(mask[box], structure=np.ones((3,) * mask.ndim, dtype=bool))
    return box, comp, int(n)


def count_components(labels: np.ndarray, classes: Sequence[int]) -> dict[int, int]:
    """``{class: number of connected components}`` (full connectivity, 2D or 3D)."""
    return {int(c): _label_class(labels, int(c))[2] for c in classes}


def keep_largest_components(labels: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, dict[int, int]]:
    """The largest connected component of each of ``classes`` in ``labels`` (2D or 3D, full
    connectivity, each class on its own), and the number of components before the clean-up.

    Voxels of dropped components become background. Equal to MONAI
    ``KeepLargestConnectedComponent(applied_labels=classes, is_onehot=False, independent=True)``
    (tested).
    """
    out = labels.copy()
    counts: dict[int, int] = {}
    for c in classes:
        box, comp, n = _label_class(labels, int(c))
        counts[int(c)] = n
        if n > 1:
            sizes = np.bincount(comp.reshape(-1))
            sizes[0] = 0
            region = out[box]
            region[(comp != int(np.argmax(sizes))) & (comp > 0)] = 0
    return out, counts


class ProbabilitiesToLabelsd(MapTransform):
    """Probabilities ``(K, *spatial)`` -> float32 class ids ``(1, *spatial)`` by
    :func:`probabilities_to_labels` (the meta data of the input kept)."""

    def __init__(self, keys: KeysCollection, threshold: float = 0.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            probs = torch.as_tensor(d[key])
            labels, _ = probabilities_to_labels(probs[None], self.threshold)
            d[key] = convert_to_dst_type(labels.to(torch.float32), d[key], dtype=torch.float32)[0]
        return d


class KeepLargestComponentsd(MapTransform):
    """Class ids ``(1, *spatial)`` -> the largest connected component of each class by
    :func:`keep_largest_components`; ``applied_labels`` default: every foreground class present."""

    def __init__(
        self, keys: KeysCollection, applied_labels: Sequence[int] | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.applied_labels = None if applied_labels is None else [int(c) for c in applied_labels]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if value.shape[0] != 1:
                raise ValueError(f"{key}: expected class ids (1, *spatial), got shape {tuple(value.shape)}")
            labels = np.asarray(torch.as_tensor(value).detach().cpu()[0]).astype(np.int32)
            classes = self.applied_labels
            if classes is None:
                classes = [int(c) for c in np.unique(labels) if c > 0]
            kept, _ = keep_largest_components(labels, classes)
            d[key] = convert_to_dst_type(kept[None].astype(np.float32), value, dtype=torch.float32)[0]
        return d


class SaveLabelsd(SaveImaged):
    """MONAI ``SaveImaged`` that writes atomically and keeps the slice axis of a one-slice volume.

    Every file is written under a temporary name beside its target and renamed into place
    (:func:`kneeseg.atomic.atomic_path`), so a run killed while writing leaves no half-written mask
    -- and a rerun that skips finished images (:class:`kneeseg.execution.ResumableDataset`) can
    trust every mask it finds. :meth:`output_path` is the file an image's mask goes to.

    ``SaveImaged`` squeezes every trailing singleton axis: a 2D image ``(1, W, H)`` is written as
    ``(W, H)``, as it should be, but a one-slice series ``(1, X, Y, 1)`` too, and its 3D affine then
    no longer fits (for a sagittal or coronal slice MONAI's 2D affine is singular and the write
    fails). Such a volume is written with its slice axis, as ``(X, Y, 1, 1)``, and its own affine;
    everything else exactly as ``SaveImaged`` writes it. (MONAI Label drops it from the bundle's
    post-processing as it drops ``SaveImaged``.)
    """

    def output_path(self, meta_data: Mapping[str, Any] | None = None, image: str | None = None) -> str:
        """The file a prediction with ``meta_data`` (or of the image file ``image``) is saved to."""
        meta = dict(meta_data or {})
        if image is not None:
            meta[ImageMetaKey.FILENAME_OR_OBJ] = str(image)
        return str(self.saver.folder_layout.filename(**self.saver.fname_formatter(meta, self.saver)))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, meta_key, meta_key_postfix in self.key_iterator(d, self.meta_keys, self.meta_key_postfix):
            if meta_key is None and meta_key_postfix is not None:
                meta_key = f"{key}_{meta_key_postfix}"
            img = d[key]
            meta = img.meta if isinstance(img, MetaTensor) else d.get(meta_key) if meta_key is not None else None
            one_slice_volume = img.ndim == 4 and img.shape[-1] == 1
            self.saver.set_options(data_kwargs={"squeeze_end_dims": not one_slice_volume})
            final = self.output_path(meta)
            ext = self.saver.output_ext
            with atomic_path(final, keep_name=True) as tmp:
                # the saver appends its extension to an explicit file name
                self.saver(img=img, meta_data=meta, filename=str(tmp)[: -len(ext)] if ext else str(tmp))
            if self.saver.savepath_in_metadict and meta is not None:
                meta[MetaKeys.SAVED_TO] = final
        return d
