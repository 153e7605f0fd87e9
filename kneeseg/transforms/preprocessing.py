"""The paper's preprocessing as MONAI transforms (array and dictionary), over the batched functions.

Jia et al. resize every slice to 512 x 512 *keeping its aspect ratio* (then pad), smooth it and
equalise its histogram. The steps, their parameters and their order are one description,
:func:`kneeseg.transforms.functional.preprocessing_steps` (the bundle's ``preprocessing_options``;
defaults :data:`PREPROCESSING_DEFAULTS`); each step's computation is one batched function of
:mod:`kneeseg.transforms.functional`, which these transforms and the fast path of ``kneeseg infer``
both call. The default order (:data:`~kneeseg.transforms.functional.DEFAULT_STEPS`) is the paper's:

1. :class:`ResizeLongestSided` -- longest in-plane side to ``N`` (images anti-aliased bilinear,
   labels by one-hot linear interpolation, see :data:`LABEL_LINEAR`);
2. :class:`ScalePercentilesd` -- percentile clip (default 0.5-99.5) to [0, 1], over the whole image
   or volume; works on 8/12/16-bit data without assuming a maximum;
3. :class:`SmoothPlanesd` -- Gaussian smoothing in-plane (sigma in pixels of the ``N`` grid);
4. :class:`HistogramEqualized` -- CLAHE (or global) histogram equalisation per plane;
5. MONAI ``SpatialPadd`` -- centre ("symmetric") pad of the in-plane axes to ``N x N`` with 0.

:data:`~kneeseg.transforms.functional.NATIVE_RESOLUTION_STEPS` (``steps: [scale, smooth, equalize,
resize, pad]``) runs the intensity steps at the image's own resolution instead: the definition of
models of bundle versions before 0.4.0.

The resize lives in :mod:`kneeseg.transforms.resize`, the in-plane axes in
:mod:`kneeseg.transforms.planes`; both are re-exported here. The intensity steps record nothing (``Invertd`` passes over them); resize and pad are invertible:
``Compose.inverse`` / ``Invertd`` crops the padding and resizes back to the original size.

Volumes processed slice-wise: pass ``spatial_axes`` (the two in-plane axes of the channel-first
array's spatial dims, e.g. ``(0, 1)`` for a sagittal series read as (i, j, k)); the slice axis is
then neither resized, padded, smoothed nor equalised across.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, SpatialPadd, Transform
from monai.utils import TransformBackends, convert_to_dst_type, ensure_tuple

from kneeseg.transforms import functional as KF
from kneeseg.transforms.clahe import equalise_plane_reference
from kneeseg.transforms.functional import (
    PREPROCESSING_DEFAULTS,
    PreprocessingStep,
    longest_side_size,
    preprocessing_options,
    preprocessing_steps,
)
from kneeseg.transforms.planes import from_planes, in_plane_axes, in_plane_pad_size, to_planes
from kneeseg.transforms.resize import LABEL_LINEAR, ResizeLongestSide, ResizeLongestSided

__all__ = [
    "LABEL_LINEAR",
    "PREPROCESSING_DEFAULTS",
    "HistogramEqualize",
    "HistogramEqualized",
    "PlaneIntensityd",
    "ResizeLongestSide",
    "ResizeLongestSided",
    "ScalePercentiles",
    "ScalePercentilesd",
    "SmoothPlanes",
    "SmoothPlanesd",
    "in_plane_pad_size",
    "longest_side_size",
    "paper_preprocessing",
    "percentile_scaling",
    "preprocessing_options",
]


class PlaneIntensity(Transform):
    """One intensity step of the definition on every plane of a channel-first image or volume.

    ``img`` ``(C, *spatial)``: each channel is cut into planes along the axis outside
    ``spatial_axes`` (a 2D image is one plane), the step runs on all planes of the channel at once
    (:func:`kneeseg.transforms.functional.run_step`; percentiles over the whole channel), and the
    result is put back. Output float32 of the same shape; a MetaTensor keeps its meta and its
    ``applied_operations`` (nothing is recorded: ``Invertd`` passes over the step).

    Args:
        step: a :class:`~kneeseg.transforms.functional.PreprocessingStep` (``scale``, ``smooth``
            or ``equalize``).
        spatial_axes: for volumes, the two in-plane axes of the spatial dims (default ``(0, 1)``).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, step: PreprocessingStep, spatial_axes: Sequence[int] | None = None) -> None:
        if step.name not in ("scale", "smooth", "equalize"):
            raise ValueError(f"PlaneIntensity runs intensity steps (scale, smooth, equalize), not {step.name!r}")
        self.step = step
        self.spatial_axes = None if spatial_axes is None else tuple(ensure_tuple(spatial_axes))

    def __call__(self, img: Any) -> Any:
        """``img``: channel-first ``(C, *spatial)`` with 2 or 3 spatial dims; returns the same shape."""
        data = torch.as_tensor(img.as_tensor() if isinstance(img, MetaTensor) else img).to(torch.float32)
        nsp = data.dim() - 1
        if nsp not in (2, 3):
            raise ValueError(f"expected a channel-first 2D image or 3D volume, got shape {tuple(data.shape)}")
        in_plane = in_plane_axes((0, 1) if self.spatial_axes is None else self.spatial_axes, nsp)
        out = torch.stack([
            from_planes(KF.run_step(self.step, to_planes(data[c : c + 1], in_plane), 0), 1, in_plane, nsp)[0]
            for c in range(data.shape[0])
        ])  # fmt: skip
        if isinstance(img, MetaTensor):  # meta and applied_operations carried over unchanged
            res = MetaTensor(out)
            res.copy_meta_from(img)
            return res
        return convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class ScalePercentiles(PlaneIntensity):
    """Percentile clip to [0, 1] per channel (the ``scale`` step; see :func:`~kneeseg.transforms.functional.scale_percentiles`)."""

    def __init__(self, lower: float = 0.5, upper: float = 99.5, spatial_axes: Sequence[int] | None = None) -> None:
        super().__init__(PreprocessingStep("scale", {"lower": float(lower), "upper": float(upper)}), spatial_axes)


class SmoothPlanes(PlaneIntensity):
    """In-plane Gaussian smoothing, ``sigma`` in pixels (the ``smooth`` step; MONAI's kernel, zero padding)."""

    def __init__(self, sigma: float = 0.5, spatial_axes: Sequence[int] | None = None) -> None:
        super().__init__(PreprocessingStep("smooth", {"sigma": float(sigma)}), spatial_axes)


class HistogramEqualize(PlaneIntensity):
    """Histogram equalisation of intensities in [0, 1] per plane (the ``equalize`` step).

    Args:
        method: ``"global"`` (``equalize_hist``, the paper's literal choice) or ``"clahe"``
            (``equalize_adapthist``, contrast-limited adaptive; less noise amplification in the
            dark background of MR slices), both as scikit-image computes them
            (:func:`~kneeseg.transforms.functional.equalize_planes`).
        nbins: histogram bins.
        clip_limit: CLAHE clip limit (0..1; higher = more contrast).
        spatial_axes: for 3D volumes processed slice-wise, the two in-plane axes; each slice
            along the remaining axis is equalised on its own.
        rescale: stretch the result to exactly [0, 1] (so the darkest tissue is 0, matching the
            zero padding that follows).

    Input is clipped to [0, 1] first (scale it, e.g. with percentile scaling, before).
    """

    def __init__(
        self,
        method: str = "clahe",
        nbins: int = 256,
        clip_limit: float = 0.01,
        spatial_axes: Sequence[int] | None = None,
        rescale: bool = True,
    ) -> None:
        if method not in ("global", "clahe"):
            raise ValueError(f"method must be 'global' or 'clahe', got {method!r}")
        self.method, self.nbins, self.clip_limit, self.rescale = method, int(nbins), float(clip_limit), bool(rescale)
        super().__init__(PreprocessingStep("equalize", {"method": method, "clip_limit": self.clip_limit}), spatial_axes)

    def __call__(self, img: Any) -> Any:
        if self.nbins == 256 and self.rescale:
            return super().__call__(img)
        step = self.step
        try:  # non-default bins / no stretch: the same function with those arguments
            self.step = PreprocessingStep("equalize", dict(step.params, nbins=self.nbins, rescale=self.rescale))
            return super().__call__(img)
        finally:
            self.step = step

    def equalise_plane(self, plane: np.ndarray) -> np.ndarray:
        """scikit-image on one 2D plane ``(H, W)`` in [0, 1] (the reference the batched step equals)."""
        return equalise_plane_reference(plane, self.method, self.clip_limit, self.nbins, self.rescale)


class PlaneIntensityd(MapTransform):
    """Dictionary version of :class:`PlaneIntensity` (and base of the named dictionary steps)."""

    backend = PlaneIntensity.backend

    def __init__(self, keys: KeysCollection, transform: PlaneIntensity, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = transform

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class ScalePercentilesd(PlaneIntensityd):
    """Dictionary version of :class:`ScalePercentiles`."""

    def __init__(self, keys: KeysCollection, lower: float = 0.5, upper: float = 99.5,
                 spatial_axes: Sequence[int] | None = None, allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, ScalePercentiles(lower, upper, spatial_axes), allow_missing_keys)


class SmoothPlanesd(PlaneIntensityd):
    """Dictionary version of :class:`SmoothPlanes`."""

    def __init__(self, keys: KeysCollection, sigma: float = 0.5, spatial_axes: Sequence[int] | None = None,
                 allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, SmoothPlanes(sigma, spatial_axes), allow_missing_keys)


class HistogramEqualized(PlaneIntensityd):
    """Dictionary version of :class:`HistogramEqualize` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, HistogramEqualize(**kwargs), allow_missing_keys)
        self.equalizer = self.transform


def percentile_scaling(
    image_keys: KeysCollection, percentiles: Sequence[float] | None, allow_missing_keys: bool = False,
    spatial_axes: Sequence[int] | None = None,
) -> list[Transform]:
    """The ``scale`` step alone: percentile clip to [0, 1] (``[]`` when ``percentiles`` is None)."""
    if percentiles is None:
        return []
    lo, hi = percentiles
    return [ScalePercentilesd(image_keys, lo, hi, spatial_axes=spatial_axes, allow_missing_keys=allow_missing_keys)]


def paper_preprocessing(
    image_keys: KeysCollection = "image",
    label_keys: KeysCollection | None = "label",
    spatial_size: int = 512,
    spatial_dims: int = 2,
    spatial_axes: Sequence[int] | None = None,
    allow_missing_keys: bool = False,
    **options: Any,
) -> list[Transform]:
    """The preprocessing definition as a list of dictionary transforms, one per step, in order.

    Args:
        image_keys: intensity images (every step).
        label_keys: label maps (only resized with ``label_mode`` and padded); ``None`` for none.
        spatial_size: ``N``: longest in-plane side after resizing and padded square size.
        spatial_dims: 2 for slices, 3 for volumes.
        spatial_axes: in-plane axes (default: ``(0, 1)``; for 2D that is all axes).
        allow_missing_keys: passed to every transform (e.g. inference without labels).
        options: the preprocessing options (:data:`PREPROCESSING_DEFAULTS`: ``steps``,
            ``percentiles``, ``smooth_sigma``, ``equalization``, ``clip_limit``, ``image_mode``,
            ``label_mode``); the steps are :func:`~kneeseg.transforms.functional.preprocessing_steps`.

    Output per key: ``(C, N, N)`` for 2D, ``(C, N, N, D)`` for volumes with the slice axis last.

    Raises:
        ValueError: bad ``spatial_dims``/``spatial_axes`` or preprocessing options.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    axes = in_plane_axes((0, 1) if spatial_axes is None else spatial_axes, spatial_dims)
    if len(axes) != 2:
        raise ValueError(f"spatial_axes must name the two in-plane axes, got {spatial_axes}")
    img_keys = list(ensure_tuple(image_keys))
    lab_keys = [] if label_keys is None else list(ensure_tuple(label_keys))
    keys = img_keys + lab_keys
    amk = allow_missing_keys
    plane_axes = axes if spatial_dims == 3 else None
    xforms: list[Transform] = []
    for step in preprocessing_steps(options):
        if step.name == "resize":
            xforms.append(ResizeLongestSided(
                keys, spatial_size, spatial_axes=axes,
                mode=[step.params["mode"]] * len(img_keys) + [step.params["label_mode"]] * len(lab_keys),
                anti_aliasing=[True] * len(img_keys) + [False] * len(lab_keys), allow_missing_keys=amk,
            ))  # fmt: skip
        elif step.name == "pad":
            xforms.append(SpatialPadd(
                keys, spatial_size=in_plane_pad_size(spatial_size, spatial_dims, axes),
                method="symmetric", mode="constant", value=0, allow_missing_keys=amk,
            ))  # fmt: skip
        elif step.name == "scale":
            xforms.append(ScalePercentilesd(img_keys, step.params["lower"], step.params["upper"], plane_axes, amk))
        elif step.name == "smooth":
            xforms.append(SmoothPlanesd(img_keys, step.params["sigma"], plane_axes, amk))
        else:
            xforms.append(HistogramEqualized(img_keys, amk, method=step.params["method"],
                                             clip_limit=step.params["clip_limit"], spatial_axes=plane_axes))  # fmt: skip
    return xforms
