"""Loading steps of the chains: MONAI ``LoadImaged`` with kneeseg's readers registered.

With ``reader=None`` the loaders dispatch by file suffix (MONAI's auto-selection):
PNG/JPEG/BMP/TIFF -> :class:`kneeseg.data.images2d.Image2DReader` (grey check, masks to class
ids), ``.json`` labels -> :class:`kneeseg.data.images2d.LabelmeReader` (when a ``label_map`` is
given), ``.nii``/``.nii.gz`` -> MONAI ``NibabelReader``, others -> MONAI's defaults. Pass
``reader=`` (an ``ImageReader`` instance, e.g. the DICOM series reader) to use exactly that
reader instead. Every loader adds a channel first: a 2D slice becomes ``(1, W, H)``, a volume
``(1, X, Y, Z)`` (see :mod:`kneeseg.data.images2d` for the orientation convention).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import LoadImaged

from kneeseg.data.dicom.monai_reader import KneeDicomReader
from kneeseg.data.images2d import Image2DReader, LabelmeReader

__all__ = ["load_image", "load_label"]


# MONAI logs "nvImageCodec is not available" at WARNING for every LoadImaged on machines without
# the GPU decoder (all CPU machines); the CPU decoders are the normal path here, so quieten it.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


def _load_imaged(keys: KeysCollection, reader: Any, allow_missing_keys: bool) -> LoadImaged:
    with warnings.catch_warnings():
        # MONAI registers its GPU DICOM decoder by default and warns on every loader when
        # nvImageCodec is absent (always, on CPU machines); the fallback is the normal path.
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
        return LoadImaged(
            keys, reader=reader, dtype=np.float32, ensure_channel_first=True, image_only=True,
            allow_missing_keys=allow_missing_keys,
        )


def load_image(
    keys: KeysCollection = "image",
    reader: ImageReader | str | None = None,
    tolerance: int = 2,
    reverse_indexing: bool = True,
    allow_missing_keys: bool = False,
) -> LoadImaged:
    """``LoadImaged`` for intensity images -> float32 MetaTensor ``(1, *spatial)``.

    Args:
        keys: keys holding file paths (or lists of paths / a DICOM folder for ``reader``).
        reader: ``None`` dispatches by suffix (see module docstring); otherwise used as given.
        tolerance: largest R/G/B difference accepted as grey for RGB files.
        reverse_indexing: 2D files as ``(W, H)`` (``True``, MONAI's convention) or ``(H, W)``.
    """
    load = _load_imaged(keys, reader, allow_missing_keys)
    if reader is None:
        load.register(Image2DReader("image", reverse_indexing=reverse_indexing, tolerance=tolerance))
        # tried first (MONAI tries the last registered reader first): claims folders and DICOM files only
        load.register(KneeDicomReader())
    return load


def load_label(
    keys: KeysCollection = "label",
    reader: ImageReader | str | None = None,
    value_map: Mapping[int, int] | None = None,
    label_map: Mapping[str, int] | None = None,
    reverse_indexing: bool = True,
    allow_missing_keys: bool = False,
) -> LoadImaged:
    """``LoadImaged`` for label maps -> float32 MetaTensor ``(1, *spatial)`` of class ids.

    The empty-mask check is left to :class:`kneeseg.transforms.CheckMaskNotEmptyd` so that it
    covers every format; the 2D readers are registered with ``allow_empty=None``.

    Args:
        keys: keys holding label file paths.
        reader: ``None`` dispatches by suffix; otherwise used as given.
        value_map: 2D masks: ``{grey value: class id}``; ``None`` binarises ``> 0``.
        label_map: labelme ``.json``: ``{label name: class id}`` (enables ``.json`` labels).
        reverse_indexing: must match :func:`load_image`.
    """
    load = _load_imaged(keys, reader, allow_missing_keys)
    if reader is None:
        load.register(
            Image2DReader("mask", value_map=value_map, allow_empty=None, reverse_indexing=reverse_indexing)
        )
        if label_map is not None:
            load.register(LabelmeReader(label_map, allow_empty=None, reverse_indexing=reverse_indexing))
    return load
