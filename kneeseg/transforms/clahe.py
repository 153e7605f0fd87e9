"""CLAHE on a stack of equally sized planes at once, equal to scikit-image's per-plane result.

:class:`~kneeseg.transforms.preprocessing.HistogramEqualize` equalises one plane at a time with
``skimage.exposure.equalize_adapthist`` (the bundle's definition of the ``clahe`` step). On a
80-slice 512 x 512 series that is 80 calls spending most of their time in elementwise numpy on
one plane. :func:`equalize_adapthist_planes` computes the same numbers for all planes together:
the same steps in the same dtypes (uint16 quantisation to 2**14 grey levels, tile histograms,
scikit-image's own ``clip_histogram`` and ``map_histogram``, the bilinear blend of the four
neighbouring tile mappings accumulated in float32 in the same order), with the per-pixel
lookups and blends done by PyTorch on all planes and threads. The test suite checks that the
result is bit-identical to the per-plane scikit-image path.

Planes the batched path does not cover (constant planes, planes that quantise to one grey
level, an explicit ``kernel_size``) go through the per-plane path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["equalize_adapthist_planes"]

_GREY_LEVELS = 2**14  # scikit-image's NR_OF_GRAY


def _bin_indices(planes: torch.Tensor, nbins: int) -> torch.Tensor:
    """Per pixel, the histogram bin scikit-image's CLAHE puts it in: ``img_as_uint``, then
    ``rescale_intensity(out_range=(0, 2**14 - 1))`` with rounding (float64, per plane), then the
    bin lookup. The float64 step is computed once per distinct uint16 value (a 65536-entry table
    per plane) instead of once per pixel; the same formula, so the same bins."""
    u = torch.round(planes * 65535.0).clamp_(0, 65535).to(torch.int64)  # img_as_uint (float32 products)
    flat = u.reshape(u.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values.to(torch.float64)
    hi = flat.max(dim=1, keepdim=True).values.to(torch.float64)
    values = torch.arange(65536, dtype=torch.float64)[None, :]
    q = (torch.minimum(torch.maximum(values, lo), hi) - lo) / (hi - lo)
    q = torch.round(q * float(_GREY_LEVELS - 1) + 0.0).to(torch.int64)
    table = torch.div(q, 1 + _GREY_LEVELS // nbins, rounding_mode="floor")
    return torch.gather(table, 1, flat).reshape(u.shape)


def _rescale_float32(x: np.ndarray, clip_constant: bool) -> np.ndarray:
    """``(x - min) / (max - min)`` per plane in float32, with the float64 difference rounded to
    float32 as numpy does for a Python-float divisor. A constant plane is clipped to [0, 1]
    (``rescale_intensity``) or kept (``clip_constant`` False: HistogramEqualize's stretch)."""
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    span = (hi.astype(np.float64) - lo.astype(np.float64)).astype(np.float32)
    out = x.copy()
    ok = (hi > lo).reshape(-1)
    out[ok] = (x[ok] - lo[ok]) / span[ok]
    if clip_constant:
        out[~ok] = np.clip(x[~ok], 0.0, 1.0)
    return out


def equalize_adapthist_planes(
    planes: np.ndarray,
    clip_limit: float = 0.01,
    nbins: int = 256,
    rescale: bool = True,
    fallback: Callable[[np.ndarray], np.ndarray] | None = None,
    chunk: int = 4,
) -> np.ndarray:
    """CLAHE of each plane of ``planes`` ``(S, H, W)`` (values in [0, 1]), float32 out.

    Equals ``np.stack([HistogramEqualize("clahe", nbins, clip_limit, rescale=rescale)
    .equalise_plane(p) for p in planes])`` bit for bit; ``fallback`` (that per-plane function) is
    used for the planes the batched path does not cover.
    """
    planes = np.asarray(planes, dtype=np.float32)
    if planes.ndim != 3:
        raise ValueError(f"expected planes (S, H, W), got shape {planes.shape}")
    if fallback is None:
        from kneeseg.transforms.preprocessing import HistogramEqualize

        fallback = HistogramEqualize("clahe", nbins=nbins, clip_limit=clip_limit, rescale=rescale).equalise_plane
    out = np.empty_like(planes)
    h, w = planes.shape[1:]
    varying = planes.max(axis=(1, 2)) > planes.min(axis=(1, 2))
    for i in np.flatnonzero(~varying):
        out[i] = fallback(planes[i])
    todo = np.flatnonzero(varying)
    for start in range(0, todo.size, chunk):  # a few planes at a time: the arrays stay in cache
        idx = todo[start : start + chunk]
        bins = _bin_indices(torch.from_numpy(planes[idx]), nbins)
        flat = bins.reshape(len(idx), -1)
        single = (flat.max(dim=1).values == flat.min(dim=1).values).numpy()
        for i in idx[single]:  # quantises to one grey level: the per-plane path
            out[i] = fallback(planes[i])
        if (~single).any():
            keep = torch.from_numpy(np.flatnonzero(~single))
            out[idx[~single]] = _clahe_bins(bins[keep].numpy(), clip_limit, nbins, rescale)
    return out


def _clahe_bins(image: np.ndarray, clip_limit: float, nbins: int, rescale: bool) -> np.ndarray:
    """scikit-image's ``_clahe`` from the bin indices on, plus the final rescaling(s)."""
    from skimage.exposure._adapthist import clip_histogram, map_histogram

    s, h, w = image.shape
    kernel = (max(h // 8, 1), max(w // 8, 1))
    pad_start = [k // 2 for k in kernel]
    pad_end = [(k - n % k) % k + int(np.ceil(k / 2.0)) for k, n in zip(kernel, (h, w))]
    image = np.pad(image, [(0, 0)] + [[a, b] for a, b in zip(pad_start, pad_end)], mode="reflect")
    hp, wp = image.shape[1:]

    # tile histograms, clipped and mapped (scikit-image's own functions)
    ns_hist = [int(n / k) - 1 for n, k in zip((hp, wp), kernel)]
    hist_part = image[:, kernel[0] // 2 : kernel[0] // 2 + ns_hist[0] * kernel[0],
                      kernel[1] // 2 : kernel[1] // 2 + ns_hist[1] * kernel[1]]  # fmt: skip
    # every pixel's histogram row (plane, tile row, tile column) times nbins plus its bin, in the
    # image's own layout (no transposed copy)
    rows = s * ns_hist[0] * ns_hist[1]
    tile = (np.arange(ns_hist[0])[:, None, None, None] * ns_hist[1] + np.arange(ns_hist[1])[None, None, :, None])
    tile = np.broadcast_to(tile, (ns_hist[0], kernel[0], ns_hist[1], kernel[1])).reshape(hist_part.shape[1:])
    plane = (np.arange(s) * (ns_hist[0] * ns_hist[1]))[:, None, None]
    index = (tile[None] + plane) * nbins + hist_part
    hist = np.bincount(index.ravel(), minlength=rows * nbins).reshape(rows, nbins)
    kernel_elements = math.prod(kernel)
    clim = int(np.clip(clip_limit * kernel_elements, 1, None)) if clip_limit > 0.0 else kernel_elements
    hist = np.stack([clip_histogram(row, clip_limit=clim) for row in hist])
    hist = map_histogram(hist, 0, _GREY_LEVELS - 1, kernel_elements)
    map_array = np.pad(hist.reshape(s, ns_hist[0], ns_hist[1], -1), [(0, 0), (1, 1), (1, 1), (0, 0)], mode="edge")

    # each pixel: the four neighbouring tiles' mappings, blended bilinearly (float64 products,
    # accumulated in float32 in scikit-image's order)
    ns_proc = [int(n / k) for n, k in zip((hp, wp), kernel)]
    pix = torch.from_numpy(image).reshape(s, ns_proc[0], kernel[0], ns_proc[1], kernel[1]).permute(0, 1, 3, 2, 4)
    pix = pix.reshape(s, ns_proc[0] * ns_proc[1], -1)
    col = np.tile(np.arange(kernel[1]) / kernel[1], kernel[0])
    row = np.repeat(np.arange(kernel[0]) / kernel[0], kernel[1])
    result = torch.zeros(pix.shape, dtype=torch.float32)
    maps = torch.from_numpy(map_array.astype(np.float64))  # integers < 2**14: exact in float64
    for e0, e1 in np.ndindex(2, 2):
        weight = torch.from_numpy(np.prod([(col if e1 else 1 - col), (row if e0 else 1 - row)], 0))
        edge = maps[:, e0 : e0 + ns_proc[0], e1 : e1 + ns_proc[1]].reshape(s, ns_proc[0] * ns_proc[1], -1)
        result += torch.gather(edge, 2, pix).mul_(weight).to(torch.float32)
    grey = result.to(torch.int32)  # astype(uint16): truncation of non-negative values
    grey = grey.reshape(s, ns_proc[0], ns_proc[1], kernel[0], kernel[1]).permute(0, 1, 3, 2, 4).reshape(s, hp, wp)
    grey = grey[:, pad_start[0] : hp - pad_end[0], pad_start[1] : wp - pad_end[1]].to(torch.float32).numpy()

    eq = _rescale_float32(grey, True)  # equalize_adapthist's final rescale_intensity
    if rescale:  # HistogramEqualize's stretch to [0, 1]
        eq = _rescale_float32(eq, False)
    return eq
