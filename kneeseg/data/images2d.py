"""2D image/mask pairs (PNG, JPEG, BMP, TIFF) and labelme polygon annotations.

Two MONAI ``ImageReader`` s make these files loadable by ``LoadImage(d)``:

- :class:`Image2DReader` reads one greyscale slice (``kind="image"``) or one mask
  (``kind="mask"``). RGB/RGBA files whose colour channels agree (R=G=B) become one channel;
  a real colour image is rejected. Masks are binarised (``> 0``) or mapped to class ids.
- :class:`LabelmeReader` rasterises a labelme JSON file (polygons, rectangles, circles) into
  a class-id mask.

Orientation convention (the same as MONAI's ``PILReader`` default, ``reverse_indexing=True``):
arrays returned by the readers have spatial shape ``(W, H)`` -- axis 0 runs along the image
columns (x, left to right), axis 1 along the rows (y, top to bottom). This is the axis order
MONAI's NIfTI/ITK/DICOM readers use for a slice (i = column, j = row), so a PNG slice and the
same slice read from a DICOM series line up, and MONAI's ``PILWriter`` writes it back upright.
Image and mask readers always use the same convention; ``reverse_indexing=False`` gives the
numpy/PIL ``(H, W)`` order for both. For the knee-acl slices (anterior at the top, superior to
the left of the PNG) axis 0 therefore runs superior -> inferior and axis 1 anterior -> posterior.
The plain functions (:func:`read_image2d`,
:func:`read_mask2d`, :func:`labelme_to_mask`) return numpy ``(H, W)`` arrays.

All errors are ``ValueError`` s whose message starts with the offending file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple
from PIL import Image

__all__ = [
    "IMAGE2D_SUFFIXES",
    "Image2DReader",
    "LabelmeReader",
    "check_mask_not_empty",
    "check_same_size",
    "labelme_to_mask",
    "mask_to_classes",
    "pil_to_grey",
    "read_image2d",
    "read_mask2d",
]

IMAGE2D_SUFFIXES: tuple[str, ...] = ("png", "jpg", "jpeg", "bmp", "tif", "tiff")


def _has_suffix(filename: Any, suffixes: Sequence[str]) -> bool:
    names = ensure_tuple(filename)
    return len(names) > 0 and all(
        isinstance(n, (str, Path)) and str(n).lower().rsplit(".", 1)[-1] in suffixes for n in names
    )


def pil_to_grey(img: Image.Image, source: str | Path = "<image>", tolerance: int = 2) -> np.ndarray:
    """Return a PIL image as one greyscale channel, numpy ``(H, W)``, keeping its bit depth.

    Modes ``L``/``I``/``I;16``/``F`` are used as they are; ``LA`` and ``P`` (palette indices) drop
    to their first band; ``RGB``/``RGBA`` must be grey (every pixel's R, G, B differ by at most
    ``tolerance`` grey levels, which absorbs JPEG chroma rounding) and become their channel mean.
    Alpha is ignored.

    Raises:
        ValueError: "<source> is a colour RGB image; expected greyscale ..." when the colour
            channels differ.
    """
    mode = img.mode
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode not in ("RGB", "RGBA", "RGBX"):
            img = img.convert("RGB")
        rgb = np.asarray(img)[..., :3].astype(np.int32)
        diff = int(max(np.abs(rgb[..., 0] - rgb[..., 1]).max(), np.abs(rgb[..., 0] - rgb[..., 2]).max()))
        if diff > tolerance:
            raise ValueError(
                f"{source} is a colour {mode} image; expected greyscale (R=G=B): its colour "
                f"channels differ by up to {diff} grey levels (tolerance {tolerance})"
            )
        if diff == 0:
            return np.asarray(img)[..., 0].copy()
        return rgb.mean(axis=-1).astype(np.float32)
    arr = np.asarray(img)
    if arr.ndim == 3:  # LA, PA: keep the first band
        arr = arr[..., 0]
    return arr.copy()


def mask_to_classes(
    grey: np.ndarray,
    source: str | Path = "<mask>",
    value_map: Mapping[int, int] | None = None,
) -> np.ndarray:
    """Turn mask grey values into class ids (``uint8``, same shape).

    Args:
        grey: mask grey values, any shape.
        source: file named in errors.
        value_map: ``{grey value: class id}``. ``None`` binarises (``grey > 0`` -> 1). Grey value 0
            maps to class 0 unless the map says otherwise.

    Raises:
        ValueError: when the mask holds grey values that ``value_map`` does not list.
    """
    if value_map is None:
        return (grey > 0).astype(np.uint8)
    table = {0: 0, **{int(k): int(v) for k, v in value_map.items()}}
    values = np.unique(grey)
    unknown = [v for v in values.tolist() if v not in table]
    if unknown:
        shown = ", ".join(str(int(v) if float(v).is_integer() else v) for v in unknown[:10])
        more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
        raise ValueError(
            f"{source}: mask has grey values not in value_map: {shown}{more}; "
            f"value_map covers {sorted(table)}"
        )
    out = np.zeros(grey.shape, dtype=np.uint8)
    for value, cls in table.items():
        out[grey == value] = cls
    return out


def check_mask_not_empty(mask: np.ndarray, source: str | Path, allow_empty: bool | None = False) -> None:
    """Raise (or warn, when ``allow_empty``) if ``mask`` has no foreground voxel.

    ``allow_empty=None`` skips the check (for callers that check later in a chain).

    Raises:
        ValueError: "<source>: mask is empty (no foreground pixel)" when not ``allow_empty``.
    """
    if allow_empty is None or bool((mask > 0).any()):
        return
    msg = f"{source}: mask is empty (no foreground pixel)"
    if allow_empty:
        warnings.warn(msg, stacklevel=2)
    else:
        raise ValueError(msg + "; pass allow_empty=True to accept empty masks")


def check_same_size(
    image_shape: Sequence[int],
    mask_shape: Sequence[int],
    image_source: str | Path,
    mask_source: str | Path,
    axes_are_wh: bool = True,
) -> None:
    """Raise when an image and its mask differ in spatial size.

    Args:
        image_shape: spatial shape of the image (no channel).
        mask_shape: spatial shape of the mask (no channel).
        image_source: image file named in the message.
        mask_source: mask file named in the message.
        axes_are_wh: shapes are ``(W, H)`` (MONAI 2D reader order); sizes are printed as ``WxH``.

    Raises:
        ValueError: "image <a> (352x384) and mask <b> (352x380) differ in size".
    """
    ish, msh = tuple(int(s) for s in image_shape), tuple(int(s) for s in mask_shape)
    if ish == msh:
        return
    if not axes_are_wh and len(ish) == 2 and len(msh) == 2:
        ish, msh = ish[::-1], msh[::-1]
    fmt = "x".join
    raise ValueError(
        f"image {image_source} ({fmt(map(str, ish))}) and mask {mask_source} "
        f"({fmt(map(str, msh))}) differ in size"
    )


def read_image2d(path: str | Path, tolerance: int = 2) -> np.ndarray:
    """Read a greyscale 2D image as numpy ``(H, W)`` (dtype of the file: uint8, uint16, ...).

    Raises:
        ValueError: for a colour RGB image (see :func:`pil_to_grey`).
    """
    with Image.open(path) as img:
        return pil_to_grey(img, path, tolerance)


def read_mask2d(
    path: str | Path,
    value_map: Mapping[int, int] | None = None,
    allow_empty: bool = False,
    tolerance: int = 0,
) -> np.ndarray:
    """Read a 2D mask as class ids, numpy ``(H, W)`` ``uint8``.

    Raises:
        ValueError: colour mask, grey values outside ``value_map``, or an empty mask
            (unless ``allow_empty``, which warns instead).
    """
    classes = mask_to_classes(read_image2d(path, tolerance), path, value_map)
    check_mask_not_empty(classes, path, allow_empty)
    return classes


class Image2DReader(ImageReader):
    """MONAI ``ImageReader`` for greyscale 2D images and masks (PNG, JPEG, BMP, TIFF).

    Use it with ``LoadImaged(keys, reader=Image2DReader(...), ensure_channel_first=True)``
    or register it on a loader so files are dispatched by suffix.

    Args:
        kind: ``"image"`` (intensities kept) or ``"mask"`` (class ids, see ``value_map``).
        value_map: masks only; ``{grey value: class id}``, ``None`` binarises ``> 0``.
        allow_empty: masks only; ``False`` raises on a mask with no foreground, ``True`` warns,
            ``None`` skips the check (the chains check with ``CheckMaskNotEmptyd`` instead).
        reverse_indexing: ``True`` (default, MONAI's convention) returns spatial ``(W, H)``;
            ``False`` returns ``(H, W)``. Use the same value for images and masks.
        tolerance: largest R/G/B difference still accepted as grey (default 2 for images,
            0 for masks).

    ``get_data`` returns a channel-less array (``original_channel_dim`` is NaN, so
    ``EnsureChannelFirst`` adds the channel) and meta with ``width``, ``height``, ``mode``,
    ``spatial_shape``.

    Raises:
        ValueError: colour RGB input, unmapped mask values, empty mask (see above).
    """

    def __init__(
        self,
        kind: str = "image",
        value_map: Mapping[int, int] | None = None,
        allow_empty: bool | None = False,
        reverse_indexing: bool = True,
        tolerance: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("image", "mask"):
            raise ValueError(f"kind must be 'image' or 'mask', got {kind!r}")
        self.kind = kind
        self.value_map = dict(value_map) if value_map is not None else None
        self.allow_empty = allow_empty
        self.reverse_indexing = reverse_indexing
        self.tolerance = (2 if kind == "image" else 0) if tolerance is None else int(tolerance)

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        return _has_suffix(filename, IMAGE2D_SUFFIXES)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> Any:
        """Open the file(s); returns ``(path, PIL image)`` pairs (checks happen in ``get_data``)."""
        out = []
        for name in ensure_tuple(data):
            if not self.verify_suffix(name):
                raise ValueError(f"{name}: not a 2D image file (expected one of {IMAGE2D_SUFFIXES})")
            img = Image.open(name)
            img.load()
            out.append((str(name), img))
        return out if len(out) > 1 else out[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Return the grey (or class-id) array, spatial ``(W, H)`` by default, and its meta."""
        items = img if isinstance(img, list) else [img]
        arrays, meta = [], {}
        for source, pil in items:
            arr = pil_to_grey(pil, source, self.tolerance)
            if self.kind == "mask":
                arr = mask_to_classes(arr, source, self.value_map)
                check_mask_not_empty(arr, source, self.allow_empty)
            if self.reverse_indexing:
                arr = arr.T
            arrays.append(np.ascontiguousarray(arr))
            if not meta:
                meta = {
                    "format": pil.format,
                    "mode": pil.mode,
                    "width": pil.width,
                    "height": pil.height,
                    "spatial_shape": np.asarray(arr.shape),
                    "original_channel_dim": float("nan") if len(items) == 1 else 0,
                    "filename_or_obj": source,
                    "has_geometry": False,  # a 2D file has no spacing: distances stay in pixels
                }
        data = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=0)
        return data, meta


# ---------------------------------------------------------------- labelme


def _shape_points(shape: Mapping[str, Any], source: str | Path, index: int) -> np.ndarray:
    pts = np.asarray(shape.get("points", []), dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"{source}: shape {index} ({shape.get('label')!r}) has no valid points")
    return pts


def labelme_to_mask(
    json_path: str | Path,
    label_map: Mapping[str, int],
    image_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Rasterise a labelme JSON annotation into a class-id mask, numpy ``(H, W)`` ``uint8``.

    Shapes are painted in file order (later shapes win where they overlap). Supported
    ``shape_type`` s: ``polygon`` (default when absent), ``rectangle`` (two corners), ``circle``
    (centre and a point on the circle). Coordinates are labelme's ``(x, y)`` pixel positions.

    Args:
        json_path: labelme ``.json`` file.
        label_map: ``{label name: class id}``; class ids must be 0..255.
        image_shape: ``(H, W)``; defaults to the JSON's ``imageHeight``/``imageWidth``.

    Raises:
        ValueError: unknown label (names the file, the label and the known labels), unsupported
            shape type, missing image size, malformed JSON.
    """
    from skimage.draw import disk, polygon, rectangle

    json_path = Path(json_path)
    try:
        doc = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_path}: not valid JSON ({e})") from e
    if image_shape is None:
        h, w = doc.get("imageHeight"), doc.get("imageWidth")
        if not h or not w:
            raise ValueError(f"{json_path}: imageHeight/imageWidth missing; pass image_shape=(H, W)")
        image_shape = (int(h), int(w))
    shape_hw = (int(image_shape[0]), int(image_shape[1]))
    known = {str(k): int(v) for k, v in label_map.items()}
    mask = np.zeros(shape_hw, dtype=np.uint8)
    for i, shape in enumerate(doc.get("shapes", [])):
        label = shape.get("label")
        if label not in known:
            raise ValueError(
                f"{json_path}: unknown label {label!r} (shape {i}); known labels: {sorted(known)}"
            )
        kind = shape.get("shape_type") or "polygon"
        pts = _shape_points(shape, json_path, i)
        if kind == "polygon":
            rr, cc = polygon(pts[:, 1], pts[:, 0], shape=shape_hw)
        elif kind == "rectangle":
            (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
            rr, cc = rectangle(
                (int(round(y0)), int(round(x0))), end=(int(round(y1)), int(round(x1))), shape=shape_hw
            )
        elif kind == "circle":
            if len(pts) < 2:
                raise ValueError(f"{json_path}: circle shape {i} needs a centre and a rim point")
            radius = float(np.hypot(*(pts[1] - pts[0])))
            rr, cc = disk((pts[0, 1], pts[0, 0]), radius, shape=shape_hw)
        else:
            raise ValueError(
                f"{json_path}: shape {i} ({label!r}) has unsupported shape_type {kind!r}; "
                "supported: polygon, rectangle, circle"
            )
        mask[rr, cc] = known[label]
    return mask


class LabelmeReader(ImageReader):
    """MONAI ``ImageReader`` that rasterises labelme ``.json`` annotations into masks.

    ``LoadImaged("label", reader=LabelmeReader({"acl": 1}), ensure_channel_first=True)`` gives a
    ``(1, W, H)`` class-id MetaTensor in the same orientation as :class:`Image2DReader`.

    Args:
        label_map: ``{label name: class id}``.
        allow_empty: ``False`` raises on an annotation with no foreground, ``True`` warns,
            ``None`` skips the check.
        reverse_indexing: as in :class:`Image2DReader` (default ``True`` -> ``(W, H)``).

    Raises:
        ValueError: see :func:`labelme_to_mask` and :func:`check_mask_not_empty`.
    """

    def __init__(
        self, label_map: Mapping[str, int], allow_empty: bool | None = False, reverse_indexing: bool = True
    ) -> None:
        super().__init__()
        self.label_map = dict(label_map)
        self.allow_empty = allow_empty
        self.reverse_indexing = reverse_indexing

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        return _has_suffix(filename, ("json",))

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> Any:
        names = ensure_tuple(data)
        for name in names:
            if not self.verify_suffix(name):
                raise ValueError(f"{name}: not a labelme .json file")
        return [str(n) for n in names] if len(names) > 1 else str(names[0])

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        names = img if isinstance(img, list) else [img]
        arrays = []
        for name in names:
            mask = labelme_to_mask(name, self.label_map)
            check_mask_not_empty(mask, name, self.allow_empty)
            arrays.append(np.ascontiguousarray(mask.T if self.reverse_indexing else mask))
        h, w = arrays[0].shape[::-1] if self.reverse_indexing else arrays[0].shape
        meta = {
            "format": "labelme",
            "width": int(w),
            "height": int(h),
            "spatial_shape": np.asarray(arrays[0].shape),
            "original_channel_dim": float("nan") if len(arrays) == 1 else 0,
            "filename_or_obj": names[0],
            "has_geometry": False,
        }
        data = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=0)
        return data, meta
