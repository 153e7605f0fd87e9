"""Rendering one phantom case: image formation from the anatomy's distance fields, and labels.

Every tissue is a signed distance field (mm); tissues are composited with anti-aliased
partial-volume fractions, then a smooth multiplicative bias field, low-frequency tissue texture
and Rician noise are applied; labels are the same distance fields thresholded at the voxel
centres (details in the :mod:`kneeseg.phantom` docstring).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from kneeseg.phantom.anatomy import Knee, place_patella, rotate, sample_params
from kneeseg.phantom.case import (
    COL_DIR,
    ROW_DIR,
    SLICE_DIR,
    DEFAULT_FOV_MM,
    DEFAULT_SHAPE,
    PhantomCase,
)
from kneeseg.data.dicom.values import decimal_string

__all__ = ["render_case"]


# Relative signal of each tissue per contrast (fat = 1 on PD).
_CONTRASTS: dict[str, dict[str, float]] = {
    "pd": dict(fat=1.0, muscle=0.40, tendon=0.07, cartilage=0.58, cortex=0.05, marrow=0.85, tr=3000.0, te=30.0),
    "t1": dict(fat=1.0, muscle=0.33, tendon=0.05, cartilage=0.40, cortex=0.04, marrow=0.92, tr=600.0, te=12.0),
    "pd_fs": dict(fat=0.22, muscle=0.40, tendon=0.06, cartilage=0.65, cortex=0.04, marrow=0.20, tr=3500.0, te=35.0),
}
_STORED_MAX = 4095  # 12 bits stored


def _fraction(sd: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Partial-volume fraction of a voxel inside ``sd < 0``: a ramp as wide as the voxel."""
    return np.clip(0.5 - sd / width, 0.0, 1.0)


def _ramp_width(sd: np.ndarray) -> np.ndarray:
    """Extent of a voxel along the surface normal, in units of ``sd`` (L1 norm of the
    per-voxel-step gradient): the box-filter footprint of a planar edge."""
    grads = np.gradient(sd)
    width = np.abs(grads[0])
    for g in grads[1:]:
        width += np.abs(g)
    return np.maximum(width, 1e-3)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-variance low-frequency random field on ``shape`` (slices, rows, cols).

    A coarse ``(slices, cells, cells)`` Gaussian grid is interpolated in-plane with Gaussian
    weights as two small matrix products (much faster than ``scipy.ndimage.zoom`` here).
    """
    nz, ny, nx = shape
    coarse = rng.standard_normal((nz, cells, cells)).astype(np.float32)
    coarse = ndimage.gaussian_filter1d(coarse, 0.7, axis=0, mode="wrap")

    def weights(n: int) -> np.ndarray:
        x = (np.arange(n, dtype=np.float32) + 0.5) * (cells / n)
        wts = np.exp(-0.5 * ((x[:, None] - (np.arange(cells, dtype=np.float32) + 0.5)[None, :]) / 0.8) ** 2)
        wts[wts < 1e-6] = 0.0  # no denormals: they make the matrix products 100x slower
        return (wts / wts.sum(axis=1, keepdims=True)).astype(np.float32)

    field = weights(ny) @ coarse @ weights(nx).T
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def check_shape(shape: Sequence[int], fov_mm: Sequence[float]) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if len(shape) != 3 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be 3 positive integers (columns, rows, slices), got {tuple(shape)}")
    if shape[0] < 16 or shape[1] < 16 or shape[2] < 3:
        raise ValueError(f"shape {tuple(shape)} is too small: need at least 16 x 16 pixels and 3 slices")
    if len(fov_mm) != 3 or any(not np.isfinite(f) or f <= 0 for f in fov_mm):
        raise ValueError(f"fov_mm must be 3 positive numbers (mm), got {tuple(fov_mm)}")
    return (int(shape[0]), int(shape[1]), int(shape[2])), (float(fov_mm[0]), float(fov_mm[1]), float(fov_mm[2]))


def render_case(
    seed: int,
    index: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    fov_mm: Sequence[float] = DEFAULT_FOV_MM,
) -> PhantomCase:
    """Render one phantom case in memory.

    Args:
        seed: dataset seed (non-negative); with ``index`` it fixes every random choice.
        index: case number (non-negative); case ``i`` is the same whatever the case count.
        shape: ``(columns, rows, slices)``; default 256 x 256 x 40.
        fov_mm: field of view in mm along the same axes; default 150 x 150 x 120.

    Returns:
        A :py:class:`PhantomCase` with ``image`` and ``label`` shaped ``(slices, rows, columns)``.
    """
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if int(index) != index or index < 0:
        raise ValueError(f"case index must be a non-negative integer, got {index!r}")
    (nx, ny, nz), (fx, fy, fz) = check_shape(shape, fov_mm)
    # spacing and origin rounded to what the DICOM DS strings hold, so NIfTI and DICOM agree exactly
    dx, dy, dz = (float(decimal_string(f / n)) for f, n in ((fx, nx), (fy, ny), (fz, nz)))
    rng = np.random.default_rng([int(seed), int(index), 0x6B6E])
    p = sample_params(rng)
    knee = Knee(p)
    place_patella(knee)

    f32 = np.float32
    u_img = ((np.arange(nx, dtype=f32) - (nx - 1) / 2) * f32(dx)).reshape(1, 1, nx)
    v_img = ((np.arange(ny, dtype=f32) - (ny - 1) / 2) * f32(dy)).reshape(1, ny, 1)
    w = ((np.arange(nz, dtype=f32) - (nz - 1) / 2) * f32(dz)).reshape(nz, 1, 1) - f32(p["knee_w"])
    ou, ov = p["knee_offset"]
    u, v = rotate(u_img - f32(ou), v_img - f32(ov), -p["rotation"])
    u, v = u.astype(f32), v.astype(f32)

    sd = {
        "leg": knee.leg(u, v, w),
        "anterior_fat": knee.anterior_fat(u, v, w),
        "quad": knee.quad_tendon(u, v, w),
        "ligament": knee.ligament(u, v, w),
        "femur": knee.femur(u, v, w),
        "tibia": knee.tibia(u, v, w),
        "patella": knee.patella(u, v, w),
    }
    sd = {k: np.broadcast_to(x, (nz, ny, nx)).astype(f32) for k, x in sd.items()}
    width = {k: _ramp_width(x) for k, x in sd.items()}

    c = _CONTRASTS[p["contrast"]]
    val = {k: c[k] * p["tissue_jitter"][k] for k in p["tissue_jitter"]}
    tex = _smooth_field(rng, (nz, ny, nx), max(4, nx // 10))
    tex_marrow = _smooth_field(rng, (nz, ny, nx), max(4, nx // 6))

    img = np.zeros((nz, ny, nx), f32)

    def paint(frac, value):
        img[...] += (value - img) * frac

    paint(_fraction(sd["leg"], width["leg"]), val["fat"])
    muscle = np.maximum(sd["leg"] + p["fat_sub"], -sd["anterior_fat"])
    paint(_fraction(muscle, _ramp_width(muscle)), val["muscle"])
    paint(_fraction(sd["quad"], width["quad"]), val["tendon"])
    rim = 1.6
    cart = p["cartilage"]
    fem_zone = (v > -0.35 * p["condyle_r"]) | ((u < -0.5 * p["condyle_r"]) & (v > -1.2 * p["condyle_r"]))
    fem_zone = fem_zone & (knee.notch(u, v, w, thigh_frame=False) > cart)  # no cartilage on the notch roof
    paint(_fraction(sd["femur"] - cart, width["femur"]) * fem_zone, val["cartilage"])
    paint(_fraction(sd["tibia"] - cart, width["tibia"]) * knee.tibial_cartilage_zone(u, v), val["cartilage"])
    paint(_fraction(sd["patella"] - cart, width["patella"]) * knee.patellar_posterior(u, v), val["cartilage"])
    paint(_fraction(sd["ligament"], width["ligament"]), val["tendon"])
    marrow = val["marrow"] * (1.0 + 0.08 * tex_marrow)
    for bone in ("femur", "tibia", "patella"):
        paint(_fraction(sd[bone], width[bone]), val["cortex"])
        paint(_fraction(sd[bone] + rim, width[bone]), marrow)

    # texture, smooth multiplicative bias field, Rician noise
    img *= 1.0 + 0.04 * tex
    zz = np.linspace(-1, 1, nz, dtype=f32).reshape(nz, 1, 1)
    yy = np.linspace(-1, 1, ny, dtype=f32).reshape(1, ny, 1)
    xx = np.linspace(-1, 1, nx, dtype=f32).reshape(1, 1, nx)
    b = p["bias"]
    log_bias = (
        b[0] * xx + b[1] * yy + b[2] * zz + b[3] * (xx * xx - 0.33) + b[4] * (yy * yy - 0.33)
        + b[5] * (zz * zz - 0.33) + b[6] * xx * yy + b[7] * yy * zz + b[8] * xx * zz
    )
    img *= np.exp(log_bias).astype(f32)
    sigma = f32(p["noise"])
    real = img + sigma * rng.standard_normal(img.shape, dtype=f32)
    imag = sigma * rng.standard_normal(img.shape, dtype=f32)
    img = np.sqrt(real * real + imag * imag)
    scale = 1000.0 * p["gain"]
    image = np.clip(np.rint(img * f32(scale)), 0, _STORED_MAX).astype(np.uint16)

    label = np.zeros((nz, ny, nx), np.uint8)
    label[sd["ligament"] < 0] = 4
    label[sd["femur"] < 0] = 1
    label[sd["tibia"] < 0] = 2
    label[sd["patella"] < 0] = 3

    centre = np.asarray(p["centre_lps"], float)
    origin = centre - ((nx - 1) / 2) * dx * ROW_DIR - ((ny - 1) / 2) * dy * COL_DIR - ((nz - 1) / 2) * dz * SLICE_DIR
    origin = np.array([float(decimal_string(x)) for x in origin])
    p["sequence"] = {"tr": c["tr"], "te": c["te"]}
    return PhantomCase(
        case_id=f"case_{index:03d}",
        seed=int(seed),
        index=int(index),
        image=image,
        label=label,
        spacing=(dx, dy, dz),
        origin_lps=origin,
        params=p,
    )
