"""Histogram equalisation of stacks of planes in PyTorch, on any device: CLAHE and global.

:func:`clahe_planes` computes scikit-image's ``equalize_adapthist`` (default tiles of 1/8 of each
side) for all planes of a stack together, with the same steps in the same dtypes: ``img_as_uint``,
the quantisation to 2**14 grey levels and the bin lookup, the tile histograms, scikit-image's
``clip_histogram`` (its redistribution loop run for all tiles at once, in integers) and
``map_histogram``, the bilinear blend of the four neighbouring tile mappings (float64 products
accumulated in float32 in scikit-image's order), the truncation to uint16 and the final
rescaling. The test suite checks that on the CPU the result is bit-identical to scikit-image's,
plane by plane; on a GPU the same operations run there (float64 included).

:func:`equalize_hist_planes` is ``equalize_hist`` (a global histogram of ``nbins`` bins over each
plane's range, its normalised cumulative sum interpolated at the bin centres), equal to
scikit-image's up to float rounding.

Planes the batched CLAHE does not cover (constant planes, planes that quantise to one grey level,
planes thinner than 2 pixels) go through scikit-image on the CPU, one at a time.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["clahe_planes", "equalize_adapthist_planes", "equalize_hist_planes", "equalise_plane_reference"]

_GREY_LEVELS = 2**14  # scikit-image's NR_OF_GRAY


def equalise_plane_reference(
    plane: np.ndarray, method: str = "clahe", clip_limit: float = 0.01, nbins: int = 256, rescale: bool = True
) -> np.ndarray:
    """scikit-image on one plane ``(H, W)`` in [0, 1]: the reference definition of the step, float32.

    A constant plane is returned unchanged; with ``rescale`` the result is stretched to [0, 1].
    """
    from skimage import exposure

    plane = np.asarray(plane, dtype=np.float32)
    if float(plane.max()) <= float(plane.min()):
        return plane
    if method == "global":
        out = exposure.equalize_hist(plane, nbins=nbins)
    else:
        out = exposure.equalize_adapthist(plane, clip_limit=clip_limit, nbins=nbins)
    out = np.asarray(out, dtype=np.float32)
    if rescale:
        lo, hi = float(out.min()), float(out.max())
        out = (out - lo) / (hi - lo) if hi > lo else out
    return out


def _bin_indices(planes: torch.Tensor, nbins: int) -> torch.Tensor:
    """Per pixel, the histogram bin scikit-image's CLAHE puts it in: ``img_as_uint``, then
    ``rescale_intensity(out_range=(0, 2**14 - 1))`` with rounding (float64, per plane), then the
    bin lookup. The float64 step is computed once per distinct uint16 value (a 65536-entry table
    per plane) instead of once per pixel; the same formula, so the same bins."""
    u = torch.round(planes * 65535.0).clamp_(0, 65535).to(torch.int64)  # img_as_uint (float32 products)
    flat = u.reshape(u.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values.to(torch.float64)
    hi = flat.max(dim=1, keepdim=True).values.to(torch.float64)
    values = torch.arange(65536, dtype=torch.float64, device=planes.device)[None, :]
    q = (torch.minimum(torch.maximum(values, lo), hi) - lo) / (hi - lo)
    q = torch.round(q * float(_GREY_LEVELS - 1) + 0.0).to(torch.int64)
    table = torch.div(q, 1 + _GREY_LEVELS // nbins, rounding_mode="floor")
    return torch.gather(table, 1, flat).reshape(u.shape)


def _rescale(x: torch.Tensor, clip_constant: bool) -> torch.Tensor:
    """``(x - min) / (max - min)`` per plane in float32, with the float64 difference rounded to
    float32 as numpy does for a Python-float divisor. A constant plane is clipped to [0, 1]
    (``rescale_intensity``) or kept (``clip_constant`` False: the stretch of the step)."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1).values.reshape(-1, 1, 1)
    hi = flat.max(dim=1).values.reshape(-1, 1, 1)
    span = (hi.to(torch.float64) - lo.to(torch.float64)).to(torch.float32)
    ok = hi > lo
    scaled = (x - lo) / torch.where(ok, span, torch.ones_like(span))
    constant = x.clamp(0.0, 1.0) if clip_constant else x
    return torch.where(ok, scaled, constant)


def clip_histograms(hist: torch.Tensor, clip_limit: int) -> torch.Tensor:
    """scikit-image's ``clip_histogram`` on every row of ``hist`` ``(R, nbins)`` (int64) at once.

    The clip, the uniform redistribution and the loop that hands out the remaining excess one
    count at a time (every ``step``-th bin under the limit, starting at each bin in turn) are the
    same integer operations per row; rows that are done drop out of the loop.
    """
    hist = hist.clone()
    nbins = hist.shape[1]
    clim = int(clip_limit)
    n_excess = (hist - clim).clamp_(min=0).sum(dim=1)
    hist.clamp_(max=clim)
    bin_incr = torch.div(n_excess, nbins, rounding_mode="floor")
    upper = (clim - bin_incr)[:, None]
    low = hist < upper
    n_excess -= low.sum(dim=1) * bin_incr
    hist += low * bin_incr[:, None]
    mid = (hist >= upper) & (hist < clim)
    n_excess += (hist * mid).sum(dim=1) - mid.sum(dim=1) * clim
    hist = torch.where(mid, torch.full_like(hist, clim), hist)

    positions = torch.arange(nbins, device=hist.device)[None, :]
    active = torch.nonzero(n_excess > 0)[:, 0]
    while active.numel():
        h, n = hist[active], n_excess[active]
        before = n.clone()
        going = torch.ones_like(n, dtype=torch.bool)
        for index in range(nbins):
            under = h < clim
            step = torch.clamp(torch.div(under.sum(dim=1), n.clamp(min=1), rounding_mode="floor"), min=1)[:, None]
            offset = positions - index
            hit = (offset >= 0) & (offset % step == 0) & under & going[:, None]
            h += hit
            n -= hit.sum(dim=1)
            going &= n > 0
            if not bool(going.any()):
                break
        hist[active], n_excess[active] = h, n
        active = active[(n > 0) & (n != before)]
    return hist


def _clahe_bins(image: torch.Tensor, clip_limit: float, nbins: int, rescale: bool) -> torch.Tensor:
    """scikit-image's ``_clahe`` from the bin indices ``(S, H, W)`` on, plus the final rescaling(s)."""
    s, h, w = image.shape
    dev = image.device
    kernel = (max(h // 8, 1), max(w // 8, 1))
    pad_start = [k // 2 for k in kernel]
    pad_end = [(k - n % k) % k + int(np.ceil(k / 2.0)) for k, n in zip(kernel, (h, w))]
    padded = F.pad(image[:, None].to(torch.float32), (pad_start[1], pad_end[1], pad_start[0], pad_end[0]), mode="reflect")
    image = padded[:, 0].to(torch.int64)  # bin indices < nbins: exact through float32
    hp, wp = image.shape[1:]

    # tile histograms, clipped and mapped
    ns_hist = [int(n / k) - 1 for n, k in zip((hp, wp), kernel)]
    hist_part = image[:, kernel[0] // 2 : kernel[0] // 2 + ns_hist[0] * kernel[0],
                      kernel[1] // 2 : kernel[1] // 2 + ns_hist[1] * kernel[1]]  # fmt: skip
    rows = s * ns_hist[0] * ns_hist[1]
    tile = (torch.arange(ns_hist[0], device=dev)[:, None, None, None] * ns_hist[1]
            + torch.arange(ns_hist[1], device=dev)[None, None, :, None])  # fmt: skip
    tile = tile.expand(ns_hist[0], kernel[0], ns_hist[1], kernel[1]).reshape(hist_part.shape[1:])
    plane = (torch.arange(s, device=dev) * (ns_hist[0] * ns_hist[1]))[:, None, None]
    index = (tile[None] + plane) * nbins + hist_part
    hist = torch.bincount(index.reshape(-1), minlength=rows * nbins).reshape(rows, nbins)
    kernel_elements = math.prod(kernel)
    clim = int(np.clip(clip_limit * kernel_elements, 1, None)) if clip_limit > 0.0 else kernel_elements
    hist = clip_histograms(hist, clim)
    mapped = torch.cumsum(hist, dim=1).to(torch.float64) * ((_GREY_LEVELS - 1) / kernel_elements)  # map_histogram
    mapped = mapped.clamp_(max=_GREY_LEVELS - 1).to(torch.int64)
    maps = mapped.reshape(s, ns_hist[0], ns_hist[1], nbins).permute(0, 3, 1, 2).to(torch.float64)
    maps = F.pad(maps, (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)  # edge pad; integers exact

    # each pixel: the four neighbouring tiles' mappings, blended bilinearly (float64 products,
    # accumulated in float32 in scikit-image's order)
    ns_proc = [int(n / k) for n, k in zip((hp, wp), kernel)]
    pix = image.reshape(s, ns_proc[0], kernel[0], ns_proc[1], kernel[1]).permute(0, 1, 3, 2, 4)
    pix = pix.reshape(s, ns_proc[0] * ns_proc[1], -1)
    col = (torch.arange(kernel[1], dtype=torch.float64, device=dev) / kernel[1]).repeat(kernel[0])
    row = (torch.arange(kernel[0], dtype=torch.float64, device=dev) / kernel[0]).repeat_interleave(kernel[1])
    result = torch.zeros(pix.shape, dtype=torch.float32, device=dev)
    for e0, e1 in np.ndindex(2, 2):
        weight = (col if e1 else 1 - col) * (row if e0 else 1 - row)
        edge = maps[:, e0 : e0 + ns_proc[0], e1 : e1 + ns_proc[1]].reshape(s, ns_proc[0] * ns_proc[1], -1)
        result += torch.gather(edge, 2, pix).mul_(weight).to(torch.float32)
    grey = result.to(torch.int32)  # astype(uint16): truncation of non-negative values
    grey = grey.reshape(s, ns_proc[0], ns_proc[1], kernel[0], kernel[1]).permute(0, 1, 3, 2, 4).reshape(s, hp, wp)
    grey = grey[:, pad_start[0] : hp - pad_end[0], pad_start[1] : wp - pad_end[1]].to(torch.float32)

    eq = _rescale(grey, True)  # equalize_adapthist's final rescale_intensity
    if rescale:  # the step's stretch to [0, 1]
        eq = _rescale(eq, False)
    return eq


def _fallback(planes: torch.Tensor, out: torch.Tensor, which: torch.Tensor, **kwargs) -> None:
    for i in torch.nonzero(which)[:, 0].tolist():
        ref = equalise_plane_reference(planes[i].detach().cpu().numpy(), **kwargs)
        out[i] = torch.from_numpy(ref).to(out.device)


def clahe_planes(
    planes: torch.Tensor, clip_limit: float = 0.01, nbins: int = 256, rescale: bool = True, chunk: int = 16
) -> torch.Tensor:
    """CLAHE of each plane of ``planes`` ``(S, H, W)`` (values in [0, 1]), float32 on their device.

    Equals ``equalise_plane_reference(p, "clahe", clip_limit, nbins, rescale)`` plane by plane, bit
    for bit on the CPU. ``chunk`` planes are processed together (bounds the temporary memory).
    """
    if planes.dim() != 3:
        raise ValueError(f"expected planes (S, H, W), got shape {tuple(planes.shape)}")
    planes = planes.to(torch.float32)
    out = torch.empty_like(planes)
    kw = {"method": "clahe", "clip_limit": clip_limit, "nbins": nbins, "rescale": rescale}
    if planes.shape[0] == 0:
        return out
    flat = planes.reshape(planes.shape[0], -1)
    varying = flat.max(dim=1).values > flat.min(dim=1).values
    if min(planes.shape[1:]) < 2:
        _fallback(planes, out, torch.ones_like(varying), **kw)
        return out
    _fallback(planes, out, ~varying, **kw)
    todo = torch.nonzero(varying)[:, 0]
    for start in range(0, todo.numel(), chunk):
        idx = todo[start : start + chunk]
        bins = _bin_indices(planes[idx], nbins)
        bflat = bins.reshape(len(idx), -1)
        single = bflat.max(dim=1).values == bflat.min(dim=1).values
        if bool(single.any()):  # quantises to one grey level: scikit-image
            sub = torch.empty_like(planes[idx])
            _fallback(planes[idx], sub, single, **kw)
            out[idx[single]] = sub[single]
        if bool((~single).any()):
            out[idx[~single]] = _clahe_bins(bins[~single], clip_limit, nbins, rescale)
    return out


def equalize_adapthist_planes(
    planes: np.ndarray, clip_limit: float = 0.01, nbins: int = 256, rescale: bool = True
) -> np.ndarray:
    """:func:`clahe_planes` for a numpy stack ``(S, H, W)``; float32 numpy out."""
    arr = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32))
    return clahe_planes(arr, clip_limit, nbins, rescale).numpy()


def equalize_hist_planes(planes: torch.Tensor, nbins: int = 256, rescale: bool = True) -> torch.Tensor:
    """scikit-image's ``equalize_hist`` of each plane ``(S, H, W)`` (values in [0, 1]), float32.

    Per plane: a histogram of ``nbins`` equal bins over [min, max] (the last bin closed), its
    cumulative sum over the total, linearly interpolated at each value between the bin centres
    (clamped beyond the first and last). A constant plane is returned unchanged.
    """
    if planes.dim() != 3:
        raise ValueError(f"expected planes (S, H, W), got shape {tuple(planes.shape)}")
    x = planes.to(torch.float32)
    s = x.shape[0]
    flat = x.reshape(s, -1).to(torch.float64)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    ok = (hi > lo)[:, 0]
    width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    idx = ((flat - lo) / width * nbins).floor_().clamp_(0, nbins - 1).to(torch.int64)
    offsets = (torch.arange(s, device=x.device) * nbins)[:, None]
    hist = torch.bincount((idx + offsets).reshape(-1), minlength=s * nbins).reshape(s, nbins).to(torch.float64)
    cdf = torch.cumsum(hist, dim=1)
    cdf = cdf / cdf[:, -1:]
    # np.interp at the bin centres: position between centres, clamped at both ends
    pos = ((flat - lo) / width * nbins - 0.5).clamp_(0, nbins - 1)
    left = pos.floor().to(torch.int64).clamp_(max=nbins - 2) if nbins > 1 else torch.zeros_like(idx)
    frac = (pos - left) if nbins > 1 else torch.zeros_like(pos)
    c0 = torch.gather(cdf, 1, left)
    c1 = torch.gather(cdf, 1, (left + 1).clamp_(max=nbins - 1))
    out = (c0 + (c1 - c0) * frac).to(torch.float32).reshape(x.shape)
    if rescale:
        out = _rescale(out, False)
    return torch.where(ok[:, None, None], out, x)
