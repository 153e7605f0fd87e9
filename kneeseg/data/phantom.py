"""The synthetic knee phantom: kneeseg's embedded default dataset.

Each case is a sagittal 3D knee MR volume with femur (distal condyles, intercondylar notch,
metaphysis and shaft), tibia (sloped plateau, tuberosity, shaft), patella (oval, anterior to
the femur) and the patellar ligament (the paper's target: a thin band from the patella's lower
pole to the tibial tuberosity, elliptic in cross-section so it tapers and vanishes at its
medial and lateral edges), in fat, muscle, cartilage and tendon background with a dark
cortical rim around bright marrow. Case parameters (size, flexion, slope, ligament length
and thickness, position, contrast: PD, T1 or fat-suppressed PD) vary per case.

Image formation: every tissue is a signed distance field (mm); tissues are composited with
anti-aliased partial-volume fractions (a ramp as wide as the voxel's extent along the
surface normal, so thick slices blur through-plane edges), then a smooth multiplicative bias
field, low-frequency tissue texture and Rician noise (magnitude of complex Gaussian noise)
are applied. Labels are the same distance fields thresholded at the voxel centres.

Label ids (:py:data:`PHANTOM_LABELS`): 0 background, 1 femur, 2 tibia, 3 patella,
4 patellar ligament.

Layout written by :py:func:`generate_phantom` (paths in the datalists are relative to
``out_dir``)::

    out_dir/
      dataset.json                 MSD datalist: training / validation / test (image, label, dicom)
      dataset_2d.json              2D datalist of the PNG slices, same case split
      imagesTr/<case>.nii.gz       uint16 image, (columns, rows, slices), RAS affine
      labelsTr/<case>.nii.gz       uint8 labels, same grid
      dicom/<case>/IM0001.dcm ...  MR Image Storage series, one file per slice
      png/<case>_<slice>_img.png   8-bit slice (rows x columns) and
      png/<case>_<slice>_mask.png  its class-id mask, for every ligament slice plus a few without

Arrays in memory are ``(slices, rows, columns)`` (DICOM pixel order per slice); NIfTI files
use dcm2niix's layout, ``(columns, rows, slices)`` with the row axis reversed (so the second
voxel axis points superior), and the affine derived from the DICOM geometry (LPS -> RAS flips
the first two world axes): the NIfTI files equal ``dcm2niix``'s conversion of the DICOM series
in values and affine. Everything is deterministic in ``(seed, case)``.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from kneeseg.atomic import atomic_write_bytes
from kneeseg.data.manifest import DEFAULT_RATIOS, assign_groups, write_manifest
from kneeseg.data.nifti import write_nifti
from kneeseg.data.orientation import SliceOrientation, dicom_plane_to_volume
from kneeseg.files import PathLike

__all__ = [
    "DEFAULT_FOV_MM",
    "PNG_ORIENTATION",
    "DEFAULT_SHAPE",
    "PHANTOM_LABELS",
    "PhantomCase",
    "generate_phantom",
    "render_case",
    "write_dicom_series",
    "write_case_nifti",
    "write_png_slices",
]

PHANTOM_LABELS: Dict[int, str] = {0: "background", 1: "femur", 2: "tibia", 3: "patella", 4: "patellar_ligament"}
"""Class id -> name of the phantom's label maps."""
DEFAULT_SHAPE: Tuple[int, int, int] = (256, 256, 40)
"""Default case size as (columns, rows, slices) = (anterior-posterior, superior-inferior, left-right)."""
DEFAULT_FOV_MM: Tuple[float, float, float] = (150.0, 150.0, 120.0)
"""Default field of view in mm along (columns, rows, slices); spacing = fov / shape."""

_UID_NAMESPACE = "kneeseg-phantom-v1"
_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
# DICOM direction cosines of a sagittal acquisition (LPS): rows run posterior, columns inferior.
_ROW_DIR = np.array([0.0, 1.0, 0.0])
_COL_DIR = np.array([0.0, 0.0, -1.0])
_SLICE_DIR = np.cross(_ROW_DIR, _COL_DIR)  # (-1, 0, 0): towards the patient's right
PNG_ORIENTATION = SliceOrientation.parse([*_ROW_DIR, *_COL_DIR])
"""Orientation of the phantom's PNG slices (declared in ``dataset_2d.json``): the DICOM storage order."""

# Relative signal of each tissue per contrast (fat = 1 on PD).
_CONTRASTS: Dict[str, Dict[str, float]] = {
    "pd": dict(fat=1.0, muscle=0.40, tendon=0.07, cartilage=0.58, cortex=0.05, marrow=0.85, tr=3000.0, te=30.0),
    "t1": dict(fat=1.0, muscle=0.33, tendon=0.05, cartilage=0.40, cortex=0.04, marrow=0.92, tr=600.0, te=12.0),
    "pd_fs": dict(fat=0.22, muscle=0.40, tendon=0.06, cartilage=0.65, cortex=0.04, marrow=0.20, tr=3500.0, te=35.0),
}
_CONTRAST_P = {"pd": 0.5, "t1": 0.25, "pd_fs": 0.25}
_STORED_MAX = 4095  # 12 bits stored


@dataclass
class PhantomCase:
    """One rendered phantom case, in DICOM pixel order.

    Attributes:
        case_id: e.g. ``"case_000"``.
        seed, index: the generator seed and case number it was rendered from.
        image: ``(slices, rows, columns)`` uint16 stored values (real value = stored; slope 1).
        label: ``(slices, rows, columns)`` uint8 class ids (:py:data:`PHANTOM_LABELS`).
        spacing: ``(column_spacing, row_spacing, slice_spacing)`` in mm, i.e. along
            (columns, rows, slices).
        origin_lps: LPS position (mm) of the centre of the first pixel of the first slice.
        params: the sampled anatomy and acquisition parameters.
    """

    case_id: str
    seed: int
    index: int
    image: np.ndarray
    label: np.ndarray
    spacing: Tuple[float, float, float]
    origin_lps: np.ndarray
    params: Dict[str, Any] = field(default_factory=dict)

    def slice_position(self, k: int) -> np.ndarray:
        """ImagePositionPatient (LPS, mm) of slice ``k``."""
        return self.origin_lps + k * self.spacing[2] * _SLICE_DIR

    def to_nifti_layout(self, volume: np.ndarray) -> np.ndarray:
        """``(slices, rows, columns)`` -> ``(columns, rows, slices)`` with the row axis reversed,
        exactly as dcm2niix stores a DICOM series (first NIfTI row = last DICOM row)."""
        return np.ascontiguousarray(np.stack([dicom_plane_to_volume(p) for p in volume], axis=-1))

    def affine_ras(self) -> np.ndarray:
        """4x4 voxel -> RAS affine of :py:meth:`to_nifti_layout` arrays (matches dcm2niix)."""
        dx, dy, dz = self.spacing
        ny = self.image.shape[1]
        lps = np.eye(4)
        lps[:3, 0] = _ROW_DIR * dx
        lps[:3, 1] = -_COL_DIR * dy  # reversed rows
        lps[:3, 2] = _SLICE_DIR * dz
        lps[:3, 3] = self.origin_lps + (ny - 1) * dy * _COL_DIR
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


# ----------------------------------------------------------------------------- signed distances
# Approximate signed distance functions (mm, negative inside); arguments broadcast.


def _ellipsoid(u, v, w, a, b, c):
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    k1 = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2 + (w / c**2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _ellipse(u, w, a, c):
    k0 = np.sqrt((u / a) ** 2 + (w / c) ** 2)
    k1 = np.sqrt((u / a**2) ** 2 + (w / c**2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _round_box(u, v, w, hu, hv, hw, r):
    qu, qv, qw = np.abs(u) - (hu - r), np.abs(v) - (hv - r), np.abs(w) - (hw - r)
    outside = np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2 + np.maximum(qw, 0) ** 2)
    inside = np.minimum(np.maximum(np.maximum(qu, qv), qw), 0)
    return outside + inside - r


def _smin(a, b, k):
    """Smooth union with blend radius ``k`` (mm)."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def _rot(u, v, deg):
    """Rotate in-plane coordinates by ``deg`` (positive turns +v towards +u)."""
    t = np.deg2rad(deg)
    c, s = float(np.cos(t)), float(np.sin(t))  # Python floats keep float32 arrays float32
    return c * u + s * v, -s * u + c * v


def _band(u, v, w, a, b, half_thickness, half_width, w0, bow=0.0, end_gain=0.0):
    """A band from in-plane point ``a`` to ``b``: elliptic cross-section of half thickness
    ``half_thickness`` (in-plane) and half width ``half_width`` (through-plane, centred at ``w0``)."""
    a0, a1, b0, b1 = (float(x) for x in (*a, *b))
    length = float(np.hypot(b0 - a0, b1 - a1))
    tu, tv = (b0 - a0) / length, (b1 - a1) / length
    pu, pv = u - a0, v - a1
    along = pu * tu + pv * tv
    t = np.clip(along / length, 0.0, 1.0)
    overshoot = along - t * length
    perp = pu * (-tv) + pv * tu - bow * 4.0 * t * (1.0 - t)
    dist = np.sqrt(perp**2 + overshoot**2)
    profile = np.sqrt(np.clip(1.0 - ((w - w0) / half_width) ** 2, 0.0, 1.0))
    thick = half_thickness * (1.0 + end_gain * (2.0 * t - 1.0) ** 2)
    return np.maximum(dist - thick * profile, np.abs(w - w0) - half_width)


# ----------------------------------------------------------------------------- anatomy


class _Knee:
    """Knee anatomy in the knee frame: origin at the femoral condyles' centre, ``u`` towards
    posterior, ``v`` towards inferior, ``w`` through-plane (mm)."""

    def __init__(self, p: Dict[str, Any]):
        self.p = p

    # femur: thigh frame = knee frame tilted by femur_tilt
    def femur(self, u, v, w):
        p = self.p
        u, v = _rot(u, v, p["femur_tilt"])
        rc = p["condyle_r"]
        cond = _ellipsoid(u, v, w, rc * p["condyle_ap"], rc, p["femur_hw"])
        meta = _ellipsoid(u + 0.15 * rc, v + 0.9 * rc, w, 0.9 * rc, 1.25 * rc, 0.85 * p["femur_hw"])
        shaft = np.maximum(_ellipse(u + 0.2 * rc, w, p["femur_shaft_r"], 1.25 * p["femur_shaft_r"]), v + 0.9 * rc)
        bone = _smin(_smin(cond, meta, 6.0), shaft, 12.0)
        return np.maximum(bone, -self.notch(u, v, w))

    def notch(self, u, v, w, thigh_frame: bool = True):
        """Intercondylar notch (sd): central slices lose the bone behind the oblique notch
        roof (Blumensaat line, from anterior-inferior to posterior-superior)."""
        p = self.p
        if not thigh_frame:  # knee-frame coordinates: apply the femur's tilt first
            u, v = _rot(u, v, p["femur_tilt"])
        rc = p["condyle_r"]
        nu, nv = float(np.cos(np.deg2rad(p["notch_angle"]))), float(np.sin(np.deg2rad(p["notch_angle"])))
        roof = (u + 0.35 * rc) * nu + (v - 0.55 * rc) * nv
        return np.maximum(-roof, np.abs(w) - p["notch_hw"])

    def _tibia_frame(self, u, v):
        return _rot(u, v, -self.p["flexion"])

    def tibia(self, u, v, w):
        p = self.p
        u, v = self._tibia_frame(u, v)
        top = p["plateau_v"]
        bu, bv = _rot(u - p["tibia_u"], v - (top + 17.0), p["slope"])
        epi = _round_box(bu, bv, w, p["tibia_hu"], 17.0, p["tibia_hw"], 7.0)
        shaft = np.maximum(
            _ellipse(u - p["tibia_u"] - 0.1 * p["tibia_hu"], w, p["tibia_shaft_r"], 1.25 * p["tibia_shaft_r"]),
            top + 17.0 - v,
        )
        bone = _smin(epi, shaft, 14.0)
        tu, tv = p["tuberosity"]
        tub = _ellipsoid(u - tu, v - tv, w, 7.0, 12.0, 13.0)
        return _smin(bone, tub, 5.0)

    def tibial_cartilage_zone(self, u, v):
        u, v = self._tibia_frame(u, v)
        return v < self.p["plateau_v"] + 6.0

    def patella(self, u, v, w):
        p = self.p
        cu, cv = p["patella_c"]
        lu, lv = _rot(u - cu, v - cv, -p["patella_angle"])
        return _ellipsoid(lu, lv, w, p["patella_au"], p["patella_av"], p["patella_aw"])

    def patellar_posterior(self, u, v):
        cu, cv = self.p["patella_c"]
        lu, _ = _rot(u - cu, v - cv, -self.p["patella_angle"])
        return lu > 0.25 * self.p["patella_au"]

    def ligament(self, u, v, w):
        p = self.p
        return _band(
            u, v, w, p["lig_a"], p["lig_b"], p["lig_half_thick"], p["lig_half_width"], p["lig_w0"],
            bow=p["lig_bow"], end_gain=0.3,
        )

    def quad_tendon(self, u, v, w):
        p = self.p
        return _band(u, v, w, p["quad_a"], p["quad_b"], p["quad_half_thick"], p["quad_half_width"], p["lig_w0"])

    def leg(self, u, v, w):
        """Skin surface: elliptic cylinders of thigh and calf, blended across the joint."""
        p = self.p
        tu, _ = _rot(u, v, p["femur_tilt"])
        cu, _ = self._tibia_frame(u, v)
        thigh = _ellipse(tu - p["leg_u"], w - p["leg_w"], p["leg_ru"], p["leg_rw"])
        calf = _ellipse(cu - p["leg_u"], w - p["leg_w"], p["leg_ru"], p["leg_rw"])
        s = np.clip(0.5 + v / 40.0, 0.0, 1.0)
        return (1.0 - s) * thigh + s * calf

    def anterior_fat(self, u, v, w):
        """Hoffa's fat pad and pre-patellar fat: a rounded box in front of the joint."""
        p = self.p
        u0, u1 = -120.0, -0.45 * p["condyle_r"]
        v0, v1 = p["patella_c"][1] - p["patella_av"] - 5.0, p["lig_b"][1] + 12.0
        return _round_box(u - (u0 + u1) / 2, v - (v0 + v1) / 2, w - p["leg_w"], (u1 - u0) / 2, (v1 - v0) / 2, 40.0, 18.0)


def _sample_params(rng: np.random.Generator) -> Dict[str, Any]:
    """Draw one case's anatomy and acquisition (mm, degrees)."""
    U = rng.uniform
    p: Dict[str, Any] = {}
    p["contrast"] = str(rng.choice(list(_CONTRAST_P), p=list(_CONTRAST_P.values())))
    p["knee_offset"] = (float(U(0.0, 12.0)), float(U(-14.0, -4.0)))  # condyle centre in the image (u, v)
    p["knee_w"] = float(U(-6.0, 6.0))
    p["rotation"] = float(U(-5.0, 5.0))
    p["flexion"] = float(U(0.0, 22.0))
    p["femur_tilt"] = float(U(-4.0, 4.0))
    rc = p["condyle_r"] = float(U(20.0, 25.0))
    p["condyle_ap"] = float(U(1.0, 1.12))
    p["femur_hw"] = float(U(36.0, 42.0))
    p["femur_shaft_r"] = float(U(12.5, 15.5))
    p["notch_hw"] = float(U(8.0, 11.0))
    p["notch_angle"] = float(U(35.0, 45.0))  # angle of the notch roof's normal below the +u axis
    p["joint_gap"] = float(U(4.0, 6.0))
    p["plateau_v"] = rc + p["joint_gap"]
    p["slope"] = float(U(3.0, 9.0))
    p["tibia_hu"] = float(U(26.0, 31.0))
    p["tibia_u"] = 0.1 * rc
    p["tibia_hw"] = float(U(36.0, 41.0))
    p["tibia_shaft_r"] = float(U(12.0, 15.0))
    out = float(U(6.0, 10.0))  # how far the tuberosity stands proud of the epiphysis
    tub_u = p["tibia_u"] - p["tibia_hu"] - out + 7.0
    tub_v = p["plateau_v"] + float(U(22.0, 30.0))
    p["tuberosity"] = (tub_u, tub_v)
    p["patella_au"] = float(U(8.5, 11.0))
    p["patella_av"] = float(U(17.0, 22.0))
    p["patella_aw"] = float(U(18.0, 23.0))
    p["lig_length"] = float(U(0.85, 1.25)) * 2.0 * p["patella_av"]  # Insall-Salvati ratio
    p["lig_angle"] = float(U(-6.0, 6.0))
    p["patella_tilt"] = float(U(-8.0, 4.0))
    p["lig_half_thick"] = float(U(1.8, 3.2))
    p["lig_half_width"] = float(U(11.0, 15.0))
    p["lig_w0"] = float(U(-4.0, 4.0))
    p["lig_bow"] = float(U(-2.0, 2.0))
    p["quad_half_thick"] = float(U(2.5, 3.8))
    p["quad_half_width"] = float(U(16.0, 21.0))
    p["cartilage"] = float(U(2.0, 3.0))
    p["clearance"] = float(U(3.5, 5.5))
    p["fat_sub"] = float(U(5.0, 11.0))
    p["fat_ant"] = float(U(6.0, 12.0))
    p["leg_posterior"] = float(U(32.0, 45.0))
    p["leg_rw"] = float(U(50.0, 58.0))
    p["tissue_jitter"] = {k: float(U(0.9, 1.1)) for k in ("fat", "muscle", "tendon", "cartilage", "cortex", "marrow")}
    p["gain"] = float(U(0.8, 1.5))
    p["noise"] = float(U(0.015, 0.04))
    p["bias"] = [float(c) for c in rng.normal(0.0, 0.12, size=9)]
    p["centre_lps"] = (float(U(-100.0, -80.0)), float(U(-10.0, 10.0)), float(U(-10.0, 10.0)))
    return p


def _place_patella(knee: _Knee) -> None:
    """Hang the patella on the ligament from the tuberosity, clear of the femur."""
    p = knee.p
    th = p["flexion"]
    tu, tv = p["tuberosity"]
    ins = np.array(_rot(tu - 7.0, tv + 4.0, th))  # anterior surface of the tuberosity, knee frame
    up = np.array(_rot(-np.sin(np.deg2rad(p["lig_angle"])), -np.cos(np.deg2rad(p["lig_angle"])), th))
    low = ins + p["lig_length"] * up
    axis = np.array(_rot(up[0], up[1], p["patella_tilt"]))
    p["patella_angle"] = float(np.rad2deg(np.arctan2(-axis[0], -axis[1])))
    centre = low + p["patella_av"] * axis
    # push anteriorly until the posterior surface clears the femur by `clearance`
    ang = np.linspace(-0.9, 0.9, 9) * np.pi / 2
    for _ in range(4):
        p["patella_c"] = (float(centre[0]), float(centre[1]))
        lu, lv = p["patella_au"] * np.cos(ang), p["patella_av"] * np.sin(ang)
        su, sv = _rot(lu, lv, p["patella_angle"])
        gap = float(np.min(knee.femur(su + centre[0], sv + centre[1], np.zeros_like(su))))
        if gap >= p["clearance"] - 0.05:
            break
        centre = centre + np.array([-(p["clearance"] - gap + 0.2), 0.0])
    low = centre - p["patella_av"] * axis
    p["patella_c"] = (float(centre[0]), float(centre[1]))
    p["lig_a"] = tuple(float(x) for x in low + 3.0 * axis)  # start inside the lower pole
    p["lig_b"] = tuple(float(x) for x in ins + 3.0 * np.array(_rot(1.0, 0.0, th)))  # end inside the tuberosity
    quad_dir = np.array(_rot(axis[0], axis[1], -8.0))
    qa = centre + (p["patella_av"] - 4.0) * axis
    p["quad_a"] = tuple(float(x) for x in qa)
    p["quad_b"] = tuple(float(x) for x in qa + 120.0 * quad_dir)
    front = centre[0] - p["patella_au"]
    p["leg_front"] = float(front - p["fat_ant"])
    back = p["condyle_r"] * p["condyle_ap"] + p["leg_posterior"]
    p["leg_u"] = (p["leg_front"] + back) / 2
    p["leg_ru"] = (back - p["leg_front"]) / 2
    p["leg_w"] = 0.0


# ----------------------------------------------------------------------------- rendering


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


def _smooth_field(rng: np.random.Generator, shape: Tuple[int, int, int], cells: int) -> np.ndarray:
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


def _check_shape(shape: Sequence[int], fov_mm: Sequence[float]) -> Tuple[Tuple[int, int, int], Tuple[float, float, float]]:
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
    (nx, ny, nz), (fx, fy, fz) = _check_shape(shape, fov_mm)
    # spacing and origin rounded to what the DICOM DS strings hold, so NIfTI and DICOM agree exactly
    dx, dy, dz = (float(_ds(f / n)) for f, n in ((fx, nx), (fy, ny), (fz, nz)))
    rng = np.random.default_rng([int(seed), int(index), 0x6B6E])
    p = _sample_params(rng)
    knee = _Knee(p)
    _place_patella(knee)

    f32 = np.float32
    u_img = ((np.arange(nx, dtype=f32) - (nx - 1) / 2) * f32(dx)).reshape(1, 1, nx)
    v_img = ((np.arange(ny, dtype=f32) - (ny - 1) / 2) * f32(dy)).reshape(1, ny, 1)
    w = ((np.arange(nz, dtype=f32) - (nz - 1) / 2) * f32(dz)).reshape(nz, 1, 1) - f32(p["knee_w"])
    ou, ov = p["knee_offset"]
    u, v = _rot(u_img - f32(ou), v_img - f32(ov), -p["rotation"])
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
    origin = centre - ((nx - 1) / 2) * dx * _ROW_DIR - ((ny - 1) / 2) * dy * _COL_DIR - ((nz - 1) / 2) * dz * _SLICE_DIR
    origin = np.array([float(_ds(x)) for x in origin])
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


# ----------------------------------------------------------------------------- writers


def _uid(case: PhantomCase, *parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[_UID_NAMESPACE, str(case.seed), case.case_id, *parts]))


def _ds(value: float) -> str:
    """Format a number for a DS element (at most 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text if len(text) <= 16 else f"{value:.8g}"


def write_dicom_series(case: PhantomCase, folder: PathLike) -> List[Path]:
    """Write ``case`` as an MR Image Storage series, one file per slice (``IM0001.dcm`` ...).

    UIDs derive from (seed, case, slice) with :py:func:`pydicom.uid.generate_uid`, so reruns
    write identical files. Geometry: ImageOrientationPatient ``[0, 1, 0, 0, 0, -1]``
    (sagittal: rows run posterior, columns inferior), slices stepping towards the patient's
    right by SpacingBetweenSlices = SliceThickness.

    Returns:
        The written paths in slice order.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    from kneeseg import __version__

    folder = Path(folder)
    nz, ny, nx = case.image.shape
    dx, dy, dz = case.spacing
    p = case.params
    study, series, frame = _uid(case, "study"), _uid(case, "series"), _uid(case, "frame-of-reference")
    date = f"2024{1 + case.index % 12:02d}{1 + case.index % 28:02d}"
    lo, hi = np.percentile(case.image, [0.5, 99.5])
    contrast = p["contrast"]
    paths = []
    for k in range(nz):
        sop = _uid(case, "instance", str(k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "KNEESEG_PHANTOM"
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "PRIMARY", "M", "ND"]
        ds.SOPClassUID = _MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "MR"
        ds.Manufacturer = "kneeseg"
        ds.ManufacturerModelName = "synthetic knee phantom"
        ds.SoftwareVersions = __version__
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "KNEE PHANTOM"
        ds.SeriesDescription = f"SAG {contrast.upper()} PHANTOM"
        ds.PatientName = f"PHANTOM^{case.seed}^{case.index:03d}"
        ds.PatientID = f"PHANTOM-{case.seed}-{case.index:03d}"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "KNEE"
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = "FS" if contrast == "pd_fs" else ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = _ds(dz)
        ds.RepetitionTime = _ds(p["sequence"]["tr"])
        ds.EchoTime = _ds(p["sequence"]["te"])
        ds.EchoTrainLength = 8
        ds.MagneticFieldStrength = "3"
        ds.SpacingBetweenSlices = _ds(dz)
        ds.PatientPosition = "FFS"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ipp = case.slice_position(k)
        ds.ImagePositionPatient = [_ds(x) for x in ipp]
        ds.ImageOrientationPatient = [_ds(x) for x in (*_ROW_DIR, *_COL_DIR)]
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.Laterality = "R"
        ds.SliceLocation = _ds(float(np.dot(ipp, _SLICE_DIR)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        ds.PixelSpacing = [_ds(dy), _ds(dx)]  # row spacing (between rows), column spacing
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = _ds(round((lo + hi) / 2))
        ds.WindowWidth = _ds(round(max(hi - lo, 1)))
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.PixelData = np.ascontiguousarray(case.image[k]).astype("<u2").tobytes()
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        path = folder / f"IM{k + 1:04d}.dcm"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def write_case_nifti(case: PhantomCase, image_path: PathLike, label_path: PathLike) -> None:
    """Write image (uint16) and label (uint8) NIfTI files in dcm2niix's layout
    (:py:meth:`PhantomCase.to_nifti_layout`: ``(columns, rows, slices)``, rows reversed) with the
    RAS affine of :py:meth:`PhantomCase.affine_ras` as qform and sform (scanner code)."""
    affine = case.affine_ras()
    for data, path in ((case.image, image_path), (case.label, label_path)):
        write_nifti(path, case.to_nifti_layout(data), affine, description="kneeseg phantom", compresslevel=1)


def write_png_slices(
    case: PhantomCase, folder: PathLike, negatives: int = 3
) -> List[Tuple[int, Path, Path]]:
    """Write 8-bit PNG slice pairs: every slice with ligament plus ``negatives`` without.

    Images are windowed to the case's 0.5-99.5 percentile; masks hold class ids (0-4).
    Files: ``<case>_<slice:03d>_img.png`` and ``_mask.png`` (rows x columns).

    Returns:
        ``(slice, image_path, mask_path)`` in slice order.
    """
    from PIL import Image

    folder = Path(folder)
    lig = np.flatnonzero((case.label == 4).any(axis=(1, 2)))
    others = np.setdiff1d(np.arange(case.image.shape[0]), lig)
    rng = np.random.default_rng([case.seed, case.index, 0x504E47])
    extra = rng.choice(others, size=min(negatives, others.size), replace=False) if others.size else []
    lo, hi = (float(x) for x in np.percentile(case.image, [0.5, 99.5]))
    out = []
    for k in sorted(set(lig.tolist()) | {int(x) for x in extra}):
        img8 = np.clip((case.image[k].astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255)
        pairs = []
        for arr, tag in ((np.rint(img8).astype(np.uint8), "img"), (case.label[k], "mask")):
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(arr), mode="L").save(buf, format="PNG")
            path = folder / f"{case.case_id}_{k:03d}_{tag}.png"
            atomic_write_bytes(path, buf.getvalue())
            pairs.append(path)
        out.append((k, pairs[0], pairs[1]))
    return out


# ----------------------------------------------------------------------------- dataset


def generate_phantom(
    out_dir: PathLike,
    cases: int = 10,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    fov_mm: Sequence[float] = DEFAULT_FOV_MM,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    png: bool = True,
    png_negatives: int = 3,
    progress: Optional[Callable[[str], None]] = None,
) -> Path:
    """Generate the phantom dataset in ``out_dir`` (layout in the module docstring).

    Args:
        out_dir: output folder (created; existing files of the same names are replaced).
        cases: number of cases (>= 1).
        seed: dataset seed (>= 0); the same seed gives the same pixel data and UIDs.
        shape: ``(columns, rows, slices)`` per case; default ``(256, 256, 40)``.
        fov_mm: field of view (mm) along the same axes; default ``(150, 150, 120)``.
        ratios: train / validation / test ratios of the case split (default 8:1:1; with at
            least 3 cases every part gets one).
        png: also write the 2D PNG slices and ``dataset_2d.json``.
        png_negatives: PNG slices without ligament per case.
        progress: called with one line per case (e.g. ``print``), or None.

    Returns:
        Path of ``dataset.json``; load it with ``monai.data.load_decathlon_datalist``.
    """
    if isinstance(cases, bool) or int(cases) != cases or cases < 1:
        raise ValueError(f"cases must be a positive integer, got {cases!r}")
    shape_t, fov_t = _check_shape(shape, fov_mm)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    case_ids = [f"case_{i:03d}" for i in range(int(cases))]
    parts = assign_groups(case_ids, ratios, seed)
    keys = ("training", "validation", "test")
    volumes: Dict[str, List[Dict[str, Any]]] = {k: [] for k in keys}
    slices: Dict[str, List[Dict[str, Any]]] = {k: [] for k in keys}
    for i, cid in enumerate(case_ids):
        t0 = time.perf_counter()
        case = render_case(seed, i, shape_t, fov_t)
        write_dicom_series(case, out / "dicom" / cid)
        write_case_nifti(case, out / "imagesTr" / f"{cid}.nii.gz", out / "labelsTr" / f"{cid}.nii.gz")
        part = keys[parts[cid]]
        volumes[part].append(
            {
                "image": f"imagesTr/{cid}.nii.gz",
                "label": f"labelsTr/{cid}.nii.gz",
                "dicom": f"dicom/{cid}",
                "case": cid,
                "contrast": case.params["contrast"],
            }
        )
        n_png = 0
        if png:
            for k, ip, mp in write_png_slices(case, out / "png", png_negatives):
                slices[part].append(
                    {
                        "image": f"png/{ip.name}",
                        "label": f"png/{mp.name}",
                        "case": cid,
                        "slice": k,
                        "ligament": bool((case.label[k] == 4).any()),
                    }
                )
                n_png += 1
        if progress is not None:
            n_lig = int((case.label == 4).any(axis=(1, 2)).sum())
            progress(
                f"[{i + 1}/{cases}] {cid} ({part}, {case.params['contrast']}): {shape_t[2]} slices, "
                f"ligament in {n_lig}, {n_png} png pairs, {time.perf_counter() - t0:.1f} s"
            )

    common = {
        "reference": "synthetic knee phantom generated by kneeseg.data.phantom",
        "licence": "CC0-1.0 (generated data)",
        "release": _version(),
        "modality": {"0": "MR"},
        "labels": {str(k): v for k, v in PHANTOM_LABELS.items()},
        "split": {"unit": "case", "seed": int(seed), "ratios": [float(r) for r in ratios], "keys": list(keys)},
        "generator": {"seed": int(seed), "cases": int(cases), "shape": list(shape_t), "fov_mm": list(fov_t)},
    }
    datalist: Dict[str, Any] = {
        "name": "kneeseg-phantom",
        "description": "Synthetic sagittal knee MR volumes (NIfTI + DICOM series); paths relative to this file's folder",
        "tensorImageSize": "3D",
        **common,
        "numTraining": len(volumes["training"]),
        "numTest": len(volumes["test"]),
    }
    datalist.update({k: v for k, v in volumes.items() if v})
    path = write_manifest(datalist, out / "dataset.json")
    if png:
        datalist_2d: Dict[str, Any] = {
            "name": "kneeseg-phantom-2d",
            "description": "PNG slices of the phantom (every ligament slice plus a few without), same case split",
            "tensorImageSize": "2D",
            **common,
            # the PNGs keep the DICOM storage order: anterior left, superior up
            "image_orientation": PNG_ORIENTATION.to_config(),
            "numTraining": len(slices["training"]),
            "numTest": len(slices["test"]),
        }
        datalist_2d.update({k: v for k, v in slices.items() if v})
        write_manifest(datalist_2d, out / "dataset_2d.json")
    return path


def _version() -> str:
    from kneeseg import __version__

    return __version__

