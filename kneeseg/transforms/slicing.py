"""Train a 2D (slice-wise) network on 3D volumes: cut loaded volumes into 2D slice samples.

:class:`SampleSlicesd` sits right after loading in the train/eval chains
(``slices_per_volume`` of :func:`kneeseg.transforms.train_transforms`). A 2D image passes
unchanged; a 3D volume ``(C, X, Y, Z)`` becomes a list of 2D samples ``(C, X, Y)``, so one
bundle config trains on PNG slices (``dataset_2d.json``) and on NIfTI/DICOM volumes (e.g. the
``labels/final`` volumes MONAI Label passes) alike. MONAI's collate flattens the lists, so a
batch of ``B`` volumes holds ``B x slices_per_volume`` slices.

Volumes are brought into the model's slice orientation before slicing
(:class:`~kneeseg.transforms.orientation.OrientSlicesd`, as inference does), so a slice sample
and a 2D training image of the same anatomy look alike.

Weak labels (:class:`WeakSliceLabeld`): an unlabelled volume with a declared slice range that
*may* contain the structure gets an all-background label whose possible slices are marked
:data:`UNKNOWN_LABEL`; :class:`SampleSlicesd` never samples those, so the volume contributes
only slices that certainly hold no structure -- the negatives a 2D dataset of positive slices
lacks.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable
from kneeseg.transforms.checks import source_of

__all__ = ["UNKNOWN_LABEL", "SampleSlicesd", "WeakSliceLabeld"]

#: Label value of voxels whose class is unknown (weak labels); slices holding it are never sampled.
UNKNOWN_LABEL = 255


class SampleSlicesd(Randomizable, MapTransform):
    """Volumes -> lists of 2D slice samples; a 2D image -> a list of itself (so batches mix).

    Args:
        keys: image and label keys (all cut at the same slice indices).
        label_key: the label used to find slices with foreground (``None``: sample uniformly).
        num_slices: slices per volume; ``-1`` keeps every slice, in order (evaluation).
        pos_fraction: share of the sampled slices that hold foreground (when the volume has
            enough of them; the rest are drawn from the slices without foreground).
        slice_axis: the spatial axis across slices (default 2: ``(C, X, Y, Z)``).
        negatives: how slices without foreground are drawn: ``"uniform"``, or ``"near"``: with
            probability ``1 / (1 + d)``, ``d`` the distance (in slices) to the nearest slice
            with foreground or of unknown class -- the hard negatives next to the structure
            (the notch walls beside an ACL) are drawn far more often than far soft tissue.

    Each sample keeps the other keys of the input and gets ``slice_index`` in its image meta
    (``source_slice``) so that errors still name the file and the slice.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str | None = "label",
        num_slices: int = 4,
        pos_fraction: float = 0.75,
        slice_axis: int = 2,
        negatives: str = "uniform",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if negatives not in ("uniform", "near"):
            raise ValueError(f"negatives must be 'uniform' or 'near', got {negatives!r}")
        self.negatives = negatives
        if num_slices == 0 or num_slices < -1:
            raise ValueError(f"num_slices must be positive or -1 (all slices), got {num_slices}")
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}")
        self.label_key = label_key
        self.num_slices = int(num_slices)
        self.pos_fraction = float(pos_fraction)
        self.slice_axis = int(slice_axis)

    def randomize(self, data: Any = None) -> None:  # sampling happens in _choose
        pass

    def _choose(self, depth: int, positive: np.ndarray, unknown: np.ndarray) -> list[int]:
        known = np.flatnonzero(~unknown)
        if self.num_slices == -1 or self.num_slices >= len(known):
            return [int(k) for k in known]
        pos = np.flatnonzero(positive & ~unknown)
        neg = np.flatnonzero(~positive & ~unknown)
        n_pos = min(len(pos), int(round(self.num_slices * self.pos_fraction)))
        n_neg = min(len(neg), self.num_slices - n_pos)
        n_pos = min(len(pos), self.num_slices - n_neg)
        chosen = list(self.R.choice(pos, n_pos, replace=False)) if n_pos else []
        chosen += list(self.R.choice(neg, n_neg, replace=False, p=self._negative_weights(neg, positive | unknown))) if n_neg else []
        return sorted(int(c) for c in chosen)

    def _negative_weights(self, neg: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
        """Sampling probabilities of the negative slices (``None``: uniform)."""
        ref = np.flatnonzero(reference)
        if self.negatives == "uniform" or len(ref) == 0:
            return None
        dist = np.abs(neg[:, None] - ref[None, :]).min(axis=1)
        w = 1.0 / (1.0 + dist)
        return w / w.sum()

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        d = dict(data)
        keys = [k for k in self.key_iterator(d)]
        if not keys:
            return [d]
        first = d[keys[0]]
        spatial = first.ndim - 1
        if spatial == 2:
            return [d]  # a list too: MONAI's collate flattens lists only when the first item is one
        if spatial != 3:
            raise ValueError(f"expected a 2D image or a 3D volume, got shape {tuple(first.shape)}")
        axis = 1 + self.slice_axis
        depth = int(first.shape[axis])
        if self.label_key is not None and self.label_key in d:
            lab = torch.as_tensor(d[self.label_key])
            other = tuple(i for i in range(lab.ndim) if i != axis)
            unknown_vox = lab == UNKNOWN_LABEL
            fg = (lab > 0) & ~unknown_vox
            positive = fg.any(dim=other).cpu().numpy() if other else fg.cpu().numpy()
            unknown = unknown_vox.any(dim=other).cpu().numpy() if other else unknown_vox.cpu().numpy()
        else:
            positive = np.zeros(depth, dtype=bool)
            unknown = np.zeros(depth, dtype=bool)
        chosen = self._choose(depth, positive, unknown)
        volumes = {}
        for key in keys:
            value = d[key]
            tensor = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
            volumes[key] = (tensor, dict(value.meta) if isinstance(value, MetaTensor) else {})
        out = []
        for k in chosen:
            sample = dict(d)
            for key, (tensor, meta) in volumes.items():
                meta2 = {n: v for n, v in meta.items() if n in ("filename_or_obj",)}
                meta2["source_slice"] = k
                meta2["has_geometry"] = False  # a cut slice keeps no world geometry: distances in pixels
                plane = tensor.select(axis, k).contiguous()
                sample[key] = MetaTensor(plane, affine=torch.eye(3, dtype=torch.float64), meta=meta2)
            out.append(sample)
        return out


class WeakSliceLabeld(MapTransform):
    """Give an unlabelled volume a weak label: background everywhere but its possible slices.

    A datalist item without ``label_key`` but with ``range_key`` (``possible_slices``:
    ``[first, last]`` inclusive, or a list of such pairs; 0-based indices along the loaded
    volume's slice axis 2, i.e. kneeseg's DICOM slice order) gets a label of the image's shape
    that is 0 outside the range and :data:`UNKNOWN_LABEL` inside. Items with a label pass
    unchanged. Place it right after loading, before the volume is reoriented.

    Raises:
        ValueError: an item with neither a label nor a slice range, a 2D image with a range, or a
            range outside the volume; the message names the file.
    """

    def __init__(self, label_key: str = "label", image_key: str = "image", range_key: str = "possible_slices") -> None:
        MapTransform.__init__(self, [label_key], allow_missing_keys=True)
        self.label_key, self.image_key, self.range_key = label_key, image_key, range_key

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        d = dict(data)
        if d.get(self.label_key) is not None:
            return d

        image = d[self.image_key]
        where = source_of(image, self.image_key, d)
        ranges = d.get(self.range_key)
        if ranges is None:
            raise ValueError(
                f"{where}: item has no '{self.label_key}' and no '{self.range_key}' (the slice range that "
                "may contain the structure); give one of them"
            )
        if image.ndim != 4:
            raise ValueError(f"{where}: '{self.range_key}' needs a 3D volume, got shape {tuple(image.shape)}")
        depth = int(image.shape[3])
        pairs = [ranges] if len(ranges) == 2 and all(isinstance(v, (int, np.integer)) for v in ranges) else ranges
        label = torch.zeros(image.shape, dtype=torch.float32)
        for pair in pairs:
            first, last = (int(v) for v in pair)
            if not 0 <= first <= last < depth:
                raise ValueError(f"{where}: {self.range_key} {list(pair)} outside the volume's {depth} slices")
            label[..., first : last + 1] = UNKNOWN_LABEL
        if isinstance(image, MetaTensor):
            out = MetaTensor(label, affine=image.affine.clone())
            out.meta.update({k: v for k, v in image.meta.items() if k not in ("affine",)})
            label = out
        d[self.label_key] = label
        return d
