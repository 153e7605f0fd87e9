"""``OrientSlicesd``: bring loaded images into the model's slice orientation, invertibly.

The rule itself (which axis goes where) lives in :mod:`kneeseg.data.orientation`; this is its
MONAI transform, used right after loading by every chain (training, evaluation, inference,
MONAI Label), so that 2D files and 3D volumes reach the network in the same orientation.
MONAI's ``Orientationd`` needs an affine and a fixed axcode target; a 2D file has no affine and
the target here depends on each input's plane, hence this transform.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import MapTransform
from monai.transforms.inverse import InvertibleTransform
from monai.utils import TraceKeys

from kneeseg.data.orientation import AxisMap, SliceOrientation, map_2d, map_volume

__all__ = ["OrientSlicesd", "orientation_of_item"]

logger = logging.getLogger(__name__)


def orientation_of_item(data: Mapping[Hashable, Any], key: str, default: Any) -> SliceOrientation | None:
    """The declared orientation of a datalist item: ``data[key]`` if present, else ``default``."""
    value = data.get(key) if isinstance(data, Mapping) else None
    value = default if value is None else value
    return None if value is None else SliceOrientation.parse(value)


class OrientSlicesd(MapTransform, InvertibleTransform):
    """Reorient 2D images and 3D volumes so that slices are in ``slice_orientation``.

    - 3D volumes: from their affine (:func:`kneeseg.data.orientation.map_volume`); axes 0 and 1
      become the model's in-plane axes, axis 2 the slice axis (the affine is updated).
    - 2D images: from their declared orientation -- the item's ``orientation_key`` entry, else
      ``image_orientation`` -- (:func:`kneeseg.data.orientation.map_2d`). Without one the image
      is taken to be in the model's orientation, which is logged once.

    The first key present decides the map; every key gets the same one (image and label stay
    aligned). ``inverse`` (and so ``Invertd``) undoes it, e.g. on a prediction.

    Args:
        keys: image (first) and label keys.
        slice_orientation: the model's slice orientation (anything ``SliceOrientation.parse`` takes).
        image_orientation: declared orientation of 2D inputs without geometry (``None``: the model's).
        slice_axis: volumes: axis to slice along (``None``: the one closest to the model plane's
            normal; an int keeps that axis, e.g. 2 to segment a volume in its acquisition plane).
        orientation_key: item key that may hold a per-item declared 2D orientation.
        allow_missing_keys: as in MONAI.
    """

    def __init__(
        self,
        keys: KeysCollection,
        slice_orientation: Any,
        image_orientation: Any = None,
        slice_axis: int | None = None,
        orientation_key: str = "image_orientation",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.slice_orientation = SliceOrientation.parse(slice_orientation)
        self.image_orientation = None if image_orientation is None else SliceOrientation.parse(image_orientation)
        self.slice_axis = slice_axis
        self.orientation_key = orientation_key
        self._warned = False

    def plan(self, data: Mapping[Hashable, Any], value: Any) -> AxisMap:
        """The :class:`AxisMap` for an item whose first image is ``value`` (channel first)."""
        nsp = value.ndim - 1
        if nsp == 2:
            declared = orientation_of_item(data, self.orientation_key, self.image_orientation)
            if declared is None:
                if not self._warned:
                    logger.info(
                        "2D image without geometry or declared orientation: taken to be in the model's "
                        "orientation (%s)", self.slice_orientation,
                    )  # fmt: skip
                    self._warned = True
                return AxisMap((0, 1), (False, False))
            return map_2d(declared, self.slice_orientation)
        if nsp == 3:
            if not isinstance(value, MetaTensor):
                raise ValueError("a 3D volume needs its affine (a MetaTensor from LoadImaged) to orient its slices")
            space = str(value.meta.get("space", "RAS"))
            return map_volume(value.affine.cpu().numpy(), self.slice_orientation, space=space, slice_axis=self.slice_axis)
        raise ValueError(f"expected a 2D image or a 3D volume (channel first), got shape {tuple(value.shape)}")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        amap: AxisMap | None = None
        for key in self.key_iterator(d):
            value = d[key]
            if amap is None:
                amap = self.plan(d, value)
            d[key] = self._apply(value, amap)
        return d

    def _apply(self, value: Any, amap: AxisMap) -> Any:
        spatial = tuple(int(s) for s in value.shape[1:])
        tensor = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
        out_t = amap.apply(tensor, lead=1).contiguous()
        if not isinstance(value, MetaTensor):
            return out_t
        out = MetaTensor(out_t)
        out.copy_meta_from(value)
        info = {"perm": list(amap.perm), "flip": list(amap.flip)}
        self.push_transform(out, orig_size=spatial, extra_info=info, affine=amap.index_matrix(spatial))
        return out

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            transform = self.get_most_recent_transform(d, key)
            info = transform[TraceKeys.EXTRA_INFO]
            amap = AxisMap(tuple(int(p) for p in info["perm"]), tuple(bool(f) for f in info["flip"]))
            orig = tuple(int(s) for s in transform[TraceKeys.ORIG_SIZE])
            value = d[key]
            tensor = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
            out_t = amap.invert(tensor, lead=1).contiguous()
            if isinstance(value, MetaTensor):
                out = MetaTensor(out_t)
                out.copy_meta_from(value)
                back = to_affine_nd(value.affine.shape[-1] - 1, np.linalg.inv(amap.index_matrix(orig)))
                out.affine = value.affine @ torch.as_tensor(back, dtype=value.affine.dtype)
                d[key] = out
            else:
                d[key] = out_t
            self.pop_transform(d, key)
        return d
