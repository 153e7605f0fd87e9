"""Input checks as dictionary transforms; each error names the file (``meta["filename_or_obj"]``).

They change nothing and record nothing, so they are transparent to ``Invertd``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from kneeseg.data.images2d import check_mask_not_empty, check_same_size
from kneeseg.data.nifti import check_finite

__all__ = ["CheckFinited", "CheckImageMaskPaird", "CheckMaskNotEmptyd", "CheckSpatialDimsd", "source_of"]


def source_of(value: Any, key: Hashable | None = None, data: Mapping | None = None) -> str:
    """The file a loaded value came from: ``meta["filename_or_obj"]`` or the meta-dict entry
    ``data[f"{key}_meta_dict"]``; falls back to ``"<key>"``."""
    meta = getattr(value, "meta", None)
    if meta is None and data is not None and key is not None:
        meta = data.get(f"{key}_meta_dict")
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return f"<{key}>"


class CheckFinited(MapTransform):
    """Reject NaN/Inf values: ``ValueError("<path>: image contains 12 NaN values")``."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        for key in self.key_iterator(dict(data)):
            check_finite(data[key], source_of(data[key], key, data))
        return data


class CheckMaskNotEmptyd(MapTransform):
    """Reject (or, with ``allow_empty=True``, warn about) masks without foreground:
    ``ValueError("<path>: mask is empty (no foreground pixel) ...")``."""

    def __init__(self, keys: KeysCollection, allow_empty: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.allow_empty = allow_empty

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        for key in self.key_iterator(dict(data)):
            check_mask_not_empty(data[key], source_of(data[key], key, data), self.allow_empty)
        return data


class CheckImageMaskPaird(MapTransform):
    """Reject an image and mask whose spatial sizes differ, naming both files and sizes:
    ``ValueError("image a/img.png (352x384) and mask a/mask.png (352x380) differ in size")``.

    Args:
        keys: the mask key(s) to compare with ``image_key``.
        image_key: the reference image.
        axes_are_wh: shapes are MONAI 2D ``(W, H)`` (the readers' default); sizes print ``WxH``.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        image_key: str = "image",
        axes_are_wh: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.axes_are_wh = axes_are_wh

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        img = data[self.image_key]
        for key in self.key_iterator(dict(data)):
            check_same_size(
                img.shape[1:],
                data[key].shape[1:],
                source_of(img, self.image_key, data),
                source_of(data[key], key, data),
                self.axes_are_wh,
            )
        return data


class CheckSpatialDimsd(MapTransform):
    """Reject inputs whose number of spatial dimensions is not ``spatial_dims``:
    ``ValueError("<path>: expected a 2D image, got spatial shape (320, 320, 24) ...")``."""

    def __init__(self, keys: KeysCollection, spatial_dims: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        for key in self.key_iterator(dict(data)):
            shape = tuple(int(s) for s in data[key].shape[1:])
            if len(shape) != self.spatial_dims:
                hint = " (use spatial_dims=3 for volumes)" if len(shape) == 3 else ""
                raise ValueError(
                    f"{source_of(data[key], key, data)}: expected a {self.spatial_dims}D image, "
                    f"got spatial shape {shape}{hint}"
                )
        return data
