"""The preprocessing steps as batched functions on stacks of planes: their one implementation.

Every step of the bundle's preprocessing is a function here, on ``planes``: a float tensor
``(P, 1, H, W)`` on any device (a 2D image is one plane; a volume processed slice-wise is one plane
per slice). Both consumers call these functions and nothing else:

- the MONAI transforms of :mod:`kneeseg.transforms.preprocessing` (array -> dictionary, the way MONAI
  layers ``functional`` -> ``array`` -> ``dictionary``), which the bundle's chains use for training,
  evaluation, ``infer-datalist`` and MONAI Label;
- the fast path of ``kneeseg infer`` (:meth:`kneeseg.inference.segmenter.SliceSegmenter.preprocess`),
  which runs all slices of a series at once, on the inference device (CUDA included).

What the steps are and in which order is one ordered description, :func:`preprocessing_steps`, read
from the bundle's ``preprocessing_options`` (:data:`PREPROCESSING_DEFAULTS`). The default order is
the paper's: resize (longest side to ``N``, aspect kept), then intensity scaling, smoothing and
histogram equalisation at the network's resolution, then the centre padding to ``N x N``.
:data:`NATIVE_RESOLUTION_STEPS` is the order of models of bundle versions before 0.4.0 (the
intensity steps at the image's own resolution, then the resize), kept so that those models still
get their own input (``preprocessing_options: {"steps": [scale, smooth, equalize, resize, pad]}``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from kneeseg.transforms.clahe import clahe_planes, equalize_hist_planes

__all__ = [
    "DEFAULT_STEPS",
    "IMAGE_MODES",
    "NATIVE_RESOLUTION_STEPS",
    "PREPROCESSING_DEFAULTS",
    "STEP_NAMES",
    "PreprocessingStep",
    "PreparedPlanes",
    "check_steps",
    "equalize_planes",
    "gaussian_kernel",
    "gaussian_smooth",
    "longest_side_size",
    "pad_planes",
    "pad_widths",
    "percentiles",
    "percentiles_by_rank",
    "preprocess_planes",
    "preprocessing_options",
    "preprocessing_steps",
    "resize_planes",
    "run_step",
    "scale_percentiles",
]

#: Every step a preprocessing definition can hold.
STEP_NAMES = ("resize", "scale", "smooth", "equalize", "pad")
#: The bundle's order: the paper's (resize first, then smoothing and equalisation), at ``N``.
DEFAULT_STEPS = ("resize", "scale", "smooth", "equalize", "pad")
#: The order of models trained before the definition changed: intensity steps at native resolution.
NATIVE_RESOLUTION_STEPS = ("scale", "smooth", "equalize", "resize", "pad")

#: The preprocessing options and their defaults: the one definition that the MONAI chains and the
#: batched fast path both read (a bundle's ``preprocessing_options`` overrides entries).
PREPROCESSING_DEFAULTS: dict[str, Any] = {
    "steps": DEFAULT_STEPS,
    "percentiles": (0.5, 99.5),
    "smooth_sigma": 0.5,
    "equalization": "clahe",
    "clip_limit": 0.01,
    "image_mode": "bilinear",
    "label_mode": "label-linear",
}

#: Interpolation modes of the image resize (``torch.nn.functional.interpolate`` 2D modes).
IMAGE_MODES = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")


def check_steps(steps: Sequence[str]) -> tuple[str, ...]:
    """Validate an order of steps and return it as a tuple.

    Rules: names from :data:`STEP_NAMES`, each at most once; ``resize`` and ``pad`` present and
    ``pad`` last (smoothing or equalising the zero padding would change the image's statistics);
    ``scale`` before ``equalize`` (equalisation needs intensities in [0, 1]).

    Raises:
        ValueError: naming the rule that is broken.
    """
    if isinstance(steps, str):
        raise ValueError(f"steps must be a list of step names, got the string {steps!r}")
    out = tuple(str(s) for s in steps)
    unknown = [s for s in out if s not in STEP_NAMES]
    if unknown:
        raise ValueError(f"unknown preprocessing step(s) {unknown}; known: {list(STEP_NAMES)}")
    if len(set(out)) != len(out):
        raise ValueError(f"preprocessing steps repeat a step: {list(out)}")
    if "resize" not in out or "pad" not in out or out[-1] != "pad":
        raise ValueError(f"preprocessing steps need 'resize' and end with 'pad', got {list(out)}")
    if "scale" in out and "equalize" in out and out.index("scale") > out.index("equalize"):
        raise ValueError(f"'scale' must come before 'equalize' (equalisation needs [0, 1]), got {list(out)}")
    return out


def preprocessing_options(options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`PREPROCESSING_DEFAULTS` updated with ``options`` (a bundle's ``preprocessing_options``).

    Raises:
        ValueError: an unknown option name, an invalid ``steps`` order or an unknown mode.
    """
    unknown = set(options or {}) - set(PREPROCESSING_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown preprocessing option(s) {sorted(unknown)}; known: {sorted(PREPROCESSING_DEFAULTS)}")
    out = dict(PREPROCESSING_DEFAULTS)
    out.update(options or {})
    out["steps"] = check_steps(out["steps"])
    if out["image_mode"] not in IMAGE_MODES:
        raise ValueError(f"image_mode must be one of {list(IMAGE_MODES)}, got {out['image_mode']!r}")
    if out["equalization"] not in (None, "global", "clahe"):
        raise ValueError(f"equalization must be 'global', 'clahe' or null, got {out['equalization']!r}")
    return out


@dataclass(frozen=True)
class PreprocessingStep:
    """One step of the definition: its name (:data:`STEP_NAMES`) and its parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


def preprocessing_steps(options: Mapping[str, Any] | None = None) -> list[PreprocessingStep]:
    """The ordered description of the preprocessing: the steps that run, in order, with parameters.

    ``scale`` is left out when ``percentiles`` is null, ``smooth`` when ``smooth_sigma`` is 0 or
    null, ``equalize`` when ``equalization`` is null; ``resize`` and ``pad`` always run.
    """
    opts = preprocessing_options(options)
    params = {
        "resize": {"mode": opts["image_mode"], "label_mode": opts["label_mode"]},
        "scale": {"lower": None, "upper": None},
        "smooth": {"sigma": float(opts["smooth_sigma"] or 0.0)},
        "equalize": {"method": opts["equalization"], "clip_limit": float(opts["clip_limit"])},
        "pad": {},
    }
    if opts["percentiles"] is not None:
        lo, hi = (float(p) for p in opts["percentiles"])
        params["scale"] = {"lower": lo, "upper": hi}
    active = {
        "resize": True,
        "scale": opts["percentiles"] is not None,
        "smooth": bool(opts["smooth_sigma"]),
        "equalize": bool(opts["equalization"]),
        "pad": True,
    }
    return [PreprocessingStep(name, params[name]) for name in opts["steps"] if active[name]]


# ---------------------------------------------------------------------------------------- intensity


def percentiles(x: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """Percentiles ``qs`` (0-100) of all values of ``x``, as ``numpy.percentile`` computes them.

    On the CPU numpy itself (one partition pass for all the order statistics); on other devices
    :func:`percentiles_by_rank`, the same numbers computed there.
    """
    flat = x.reshape(-1)
    if flat.numel() == 0:
        raise ValueError("percentiles of an empty tensor")
    for q in qs:
        if not 0.0 <= float(q) <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
    if flat.device.type == "cpu":
        import numpy as np

        return [float(v) for v in np.percentile(flat.detach().numpy(), [float(q) for q in qs])]
    return percentiles_by_rank(flat, qs)


def percentiles_by_rank(x: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """numpy's default ("linear") percentiles of all values of ``x``, on ``x``'s device.

    The value at fractional rank ``q / 100 * (n - 1)`` between the two neighbouring order
    statistics, found with ``kthvalue`` (linear time, any size) and interpolated in float64 as
    numpy's ``_lerp`` does.
    """
    flat = x.reshape(-1)
    n = flat.numel()
    out = []
    for q in qs:
        rank = float(q) / 100.0 * (n - 1)
        lo_i, t = int(math.floor(rank)), rank - math.floor(rank)
        a = float(torch.kthvalue(flat, lo_i + 1).values) if n > 1 else float(flat[0])
        b = float(torch.kthvalue(flat, min(lo_i + 2, n)).values) if t > 0 else a
        diff = b - a
        out.append(a + diff * t if t < 0.5 else b - diff * (1.0 - t))
    return out


def scale_percentiles(x: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """Clip to the ``lower``/``upper`` percentiles of all of ``x`` and map that range to [0, 1].

    The percentiles are taken over the whole input (one image, or every slice of a volume), as
    MONAI's ``ScaleIntensityRangePercentiles(channel_wise=True)`` does per channel. A constant input
    becomes 0. Returns float32 of ``x``'s shape.
    """
    lo, hi = percentiles(x, (lower, upper))
    x = x.to(torch.float32)
    if hi > lo:
        return ((x - float(lo)) / float(hi - lo)).clamp_(0.0, 1.0)
    return torch.zeros_like(x)


def gaussian_kernel(sigma: float, truncated: float = 4.0) -> list[float]:
    """MONAI's 1D Gaussian kernel (``gaussian_1d``, ``erf`` approximation, ``truncated`` sigmas)."""
    from monai.networks.layers import gaussian_1d

    return [float(v) for v in gaussian_1d(torch.tensor(float(sigma)), truncated=truncated, approx="erf")]


def gaussian_smooth(x: torch.Tensor, sigmas: Sequence[float] | float, truncated: float = 4.0) -> torch.Tensor:
    """MONAI's ``GaussianFilter(2, sigmas)`` on planes ``(P, C, H, W)``, as shifted multiply-adds.

    Same kernel (:func:`gaussian_kernel`) and zero padding, along H then W; a sigma of 0 leaves
    that axis. On many small planes this runs several times faster than grouped convolutions.
    """
    sig = [float(sigmas)] * 2 if isinstance(sigmas, (int, float)) else [float(s) for s in sigmas]
    for axis, sigma in zip((2, 3), sig):
        if sigma <= 0:
            continue
        kernel = gaussian_kernel(sigma, truncated)
        radius = (len(kernel) - 1) // 2
        if radius == 0:
            x = x * kernel[0]
            continue
        n = x.shape[axis]
        padded = F.pad(x, [0, 0, radius, radius] if axis == 2 else [radius, radius, 0, 0])
        out = padded.narrow(axis, 0, n) * kernel[0]
        for i in range(1, len(kernel)):
            out.add_(padded.narrow(axis, i, n), alpha=kernel[i])
        x = out
    return x


def equalize_planes(
    x: torch.Tensor, method: str = "clahe", clip_limit: float = 0.01, nbins: int = 256, rescale: bool = True
) -> torch.Tensor:
    """Histogram equalisation of each plane of ``x`` ``(P, 1, H, W)`` (values clipped to [0, 1]).

    ``clahe``: scikit-image's ``equalize_adapthist`` (default tiles, ``clip_limit``, ``nbins``),
    computed for all planes at once (:func:`kneeseg.transforms.clahe.clahe_planes`; bit-identical to
    scikit-image on the CPU). ``global``: ``equalize_hist`` (:func:`kneeseg.transforms.clahe.equalize_hist_planes`).
    ``rescale`` stretches each result to exactly [0, 1]; a constant plane is returned unchanged.
    """
    planes = x.to(torch.float32).clamp(0.0, 1.0)[:, 0]
    if method == "clahe":
        out = clahe_planes(planes, clip_limit=clip_limit, nbins=nbins, rescale=rescale)
    elif method == "global":
        out = equalize_hist_planes(planes, nbins=nbins, rescale=rescale)
    else:
        raise ValueError(f"method must be 'global' or 'clahe', got {method!r}")
    return out[:, None]


# ---------------------------------------------------------------------------------------- geometry


def longest_side_size(
    spatial_shape: Sequence[int], spatial_size: int, spatial_axes: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Target shape when the longest of ``spatial_axes`` becomes ``spatial_size``.

    Axes outside ``spatial_axes`` keep their size; the others are scaled by the same factor
    ``spatial_size / max(shape[spatial_axes])`` and rounded. E.g. ``(352, 384), 512 ->
    (469, 512)``; ``(384, 352, 20), 512, (0, 1) -> (512, 469, 20)``.
    """
    shape = tuple(int(s) for s in spatial_shape)
    axes = tuple(range(len(shape))) if spatial_axes is None else tuple(int(a) % len(shape) for a in spatial_axes)
    scale = spatial_size / max(shape[a] for a in axes)
    return tuple(max(1, int(round(s * scale))) if i in axes else s for i, s in enumerate(shape))


def anti_aliasing_sigmas(in_size: Sequence[int], out_size: Sequence[int]) -> list[float]:
    """scikit-image's (and MONAI ``Resize``'s) anti-aliasing sigma per axis: ``max(0, (f - 1) / 2)``
    for a downsampling factor ``f``, computed in float32 as MONAI does."""
    factors = torch.div(torch.Tensor([float(s) for s in in_size]), torch.Tensor([float(s) for s in out_size]))
    return torch.maximum(torch.zeros(len(in_size)), (factors - 1) / 2).tolist()


def resize_planes(
    x: torch.Tensor, size: Sequence[int], mode: str = "bilinear", anti_aliasing: bool = True
) -> torch.Tensor:
    """Resize planes ``(P, C, H, W)`` to ``size`` ``(H', W')``: MONAI ``Resize`` per plane.

    When shrinking with ``anti_aliasing``, a Gaussian of :func:`anti_aliasing_sigmas` is applied
    first (as MONAI and scikit-image do); then ``interpolate`` (``align_corners=False`` for the
    linear modes). A plane already of ``size`` is returned as it is.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[2:]) == size:
        return x
    if anti_aliasing and any(o < i for o, i in zip(size, x.shape[2:])):
        sigmas = anti_aliasing_sigmas(x.shape[2:], size)
        if any(s > 0 for s in sigmas):
            x = gaussian_smooth(x, sigmas)
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(x, size=size, mode=mode, align_corners=align)


def pad_widths(size: Sequence[int], spatial_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((before0, after0), (before1, after1))`` that centre ``size`` in ``N x N``: MONAI
    ``SpatialPad(method="symmetric")``'s split (the odd pixel goes after)."""
    out = []
    for s in size:
        total = max(int(spatial_size) - int(s), 0)
        out.append((total // 2, total - total // 2))
    return out[0], out[1]


def pad_planes(x: torch.Tensor, spatial_size: int, value: float = 0.0) -> torch.Tensor:
    """Centre-pad planes ``(P, C, H, W)`` to ``N x N`` with ``value`` (:func:`pad_widths`)."""
    (a0, b0), (a1, b1) = pad_widths(x.shape[2:], spatial_size)
    if a0 == b0 == a1 == b1 == 0:
        return x
    return F.pad(x, (a1, b1, a0, b0), value=value)


# ---------------------------------------------------------------------------------------- the plan


def run_step(step: PreprocessingStep, x: torch.Tensor, spatial_size: int) -> torch.Tensor:
    """Apply one intensity or geometry step to planes ``(P, 1, H, W)`` (images, not labels)."""
    p = step.params
    if step.name == "scale":
        return scale_percentiles(x, p["lower"], p["upper"])
    if step.name == "smooth":
        return gaussian_smooth(x, (p["sigma"], p["sigma"]))
    if step.name == "equalize":
        return equalize_planes(x, p["method"], p["clip_limit"])
    if step.name == "resize":
        return resize_planes(x, longest_side_size(x.shape[2:], spatial_size), p["mode"], anti_aliasing=True)
    if step.name == "pad":
        return pad_planes(x, spatial_size)
    raise ValueError(f"unknown preprocessing step {step.name!r}")


@dataclass
class PreparedPlanes:
    """Planes ready for the network, and the geometry needed to map predictions back.

    ``planes``: float32 ``(P, 1, N, N)``; ``resized``: the in-plane size after the resize;
    ``pad``: ``(before0, before1)`` of the centre padding.
    """

    planes: torch.Tensor
    resized: tuple[int, int]
    pad: tuple[int, int]


def preprocess_planes(
    x: torch.Tensor, spatial_size: int, steps: Sequence[PreprocessingStep] | Mapping[str, Any] | None = None
) -> PreparedPlanes:
    """Run the whole definition on planes ``(P, 1, H, W)`` (one image, or all slices of a volume).

    Args:
        x: planes of one image or volume (intensity scaling takes its percentiles over all of them).
        spatial_size: ``N``.
        steps: :func:`preprocessing_steps` output, or ``preprocessing_options`` to build it from.
    """
    plan = steps if isinstance(steps, (list, tuple)) else preprocessing_steps(steps)
    if x.dim() != 4:
        raise ValueError(f"expected planes (P, C, H, W), got shape {tuple(x.shape)}")
    resized = longest_side_size(x.shape[2:], spatial_size)
    x = x.to(torch.float32)
    for step in plan:
        x = run_step(step, x, spatial_size)
    (a0, _), (a1, _) = pad_widths(resized, spatial_size)
    return PreparedPlanes(planes=x.contiguous(), resized=(int(resized[0]), int(resized[1])), pad=(a0, a1))
