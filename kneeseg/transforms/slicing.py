"""Train a 2D (slice-wise) network on 3D volumes: cut loaded volumes into 2D slice samples.

:class:`SampleSlicesd` sits right after loading in the train/eval chains
(``slices_per_volume`` of :func:`kneeseg.transforms.train_transforms`). A 2D image passes
unchanged; a 3D volume ``(C, X, Y, Z)`` becomes a list of 2D samples ``(C, X, Y)``, so one
bundle config trains on PNG slices (``dataset_2d.json``) and on NIfTI/DICOM volumes (e.g. the
``labels/final`` volumes MONAI Label passes) alike. MONAI's collate flattens the lists, so a
batch of ``B`` volumes holds ``B x slices_per_volume`` slices.

The row axis of a volume is flipped first (``flip_rows``): kneeseg's DICOM reader and
dcm2niix-style NIfTI run it bottom-up, 2D image files top-down, and inference
(``inference.json``'s ``flip_rows``) flips the same way.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

__all__ = ["SampleSlicesd"]


class SampleSlicesd(Randomizable, MapTransform):
    """Volumes -> lists of 2D slice samples; 2D images pass through.

    Args:
        keys: image and label keys (all cut at the same slice indices).
        label_key: the label used to find slices with foreground (``None``: sample uniformly).
        num_slices: slices per volume; ``-1`` keeps every slice, in order (evaluation).
        pos_fraction: share of the sampled slices that hold foreground (when the volume has
            enough of them; the rest are drawn from the slices without foreground).
        slice_axis: the spatial axis across slices (default 2: ``(C, X, Y, Z)``).
        flip_rows: flip spatial axis 1 of volumes before slicing (see the module doc).

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
        flip_rows: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if num_slices == 0 or num_slices < -1:
            raise ValueError(f"num_slices must be positive or -1 (all slices), got {num_slices}")
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}")
        self.label_key = label_key
        self.num_slices = int(num_slices)
        self.pos_fraction = float(pos_fraction)
        self.slice_axis = int(slice_axis)
        self.flip_rows = flip_rows

    def randomize(self, data: Any = None) -> None:  # sampling happens in _choose
        pass

    def _choose(self, depth: int, positive: np.ndarray) -> list[int]:
        if self.num_slices == -1 or self.num_slices >= depth:
            return list(range(depth))
        pos = np.flatnonzero(positive)
        neg = np.flatnonzero(~positive)
        n_pos = min(len(pos), int(round(self.num_slices * self.pos_fraction)))
        n_neg = min(len(neg), self.num_slices - n_pos)
        n_pos = min(len(pos), self.num_slices - n_neg)
        chosen = list(self.R.choice(pos, n_pos, replace=False)) if n_pos else []
        chosen += list(self.R.choice(neg, n_neg, replace=False)) if n_neg else []
        return sorted(int(c) for c in chosen)

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        d = dict(data)
        keys = [k for k in self.key_iterator(d)]
        if not keys:
            return d
        first = d[keys[0]]
        spatial = first.ndim - 1
        if spatial == 2:
            return d
        if spatial != 3:
            raise ValueError(f"expected a 2D image or a 3D volume, got shape {tuple(first.shape)}")
        axis = 1 + self.slice_axis
        depth = int(first.shape[axis])
        if self.label_key is not None and self.label_key in d:
            lab = torch.as_tensor(d[self.label_key])
            other = tuple(i for i in range(lab.ndim) if i != axis)
            positive = (lab > 0).any(dim=other).cpu().numpy() if other else (lab > 0).cpu().numpy()
        else:
            positive = np.zeros(depth, dtype=bool)
        chosen = self._choose(depth, positive)
        volumes = {}
        for key in keys:
            value = d[key]
            tensor = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
            if self.flip_rows:
                tensor = torch.flip(tensor, dims=(2,))
            volumes[key] = (tensor, dict(value.meta) if isinstance(value, MetaTensor) else {})
        out = []
        for k in chosen:
            sample = dict(d)
            for key, (tensor, meta) in volumes.items():
                meta2 = {n: v for n, v in meta.items() if n in ("filename_or_obj",)}
                meta2["source_slice"] = k
                plane = tensor.select(axis, k).contiguous()
                sample[key] = MetaTensor(plane, affine=torch.eye(3, dtype=torch.float64), meta=meta2)
            out.append(sample)
        return out
