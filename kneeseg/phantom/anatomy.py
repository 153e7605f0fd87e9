"""The phantom's knee anatomy: signed distance fields of bones, ligament, tendon and leg, and the
per-case random parameters (size, flexion, slope, ligament, position, contrast).

Femur (distal condyles, intercondylar notch, metaphysis and shaft), tibia (sloped plateau,
tuberosity, shaft), patella (oval, anterior to the femur) and the patellar ligament (a thin band
from the patella's lower pole to the tibial tuberosity, elliptic in cross-section) are described
in the knee frame; :mod:`kneeseg.phantom.render` turns them into images and labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Probability of each contrast (the keys of kneeseg.phantom.render._CONTRASTS).
_CONTRAST_P = {"pd": 0.5, "t1": 0.25, "pd_fs": 0.25}


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


def rotate(u, v, deg):
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


class Knee:
    """Knee anatomy in the knee frame: origin at the femoral condyles' centre, ``u`` towards
    posterior, ``v`` towards inferior, ``w`` through-plane (mm)."""

    def __init__(self, p: dict[str, Any]):
        self.p = p

    # femur: thigh frame = knee frame tilted by femur_tilt
    def femur(self, u, v, w):
        p = self.p
        u, v = rotate(u, v, p["femur_tilt"])
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
            u, v = rotate(u, v, p["femur_tilt"])
        rc = p["condyle_r"]
        nu, nv = float(np.cos(np.deg2rad(p["notch_angle"]))), float(np.sin(np.deg2rad(p["notch_angle"])))
        roof = (u + 0.35 * rc) * nu + (v - 0.55 * rc) * nv
        return np.maximum(-roof, np.abs(w) - p["notch_hw"])

    def _tibia_frame(self, u, v):
        return rotate(u, v, -self.p["flexion"])

    def tibia(self, u, v, w):
        p = self.p
        u, v = self._tibia_frame(u, v)
        top = p["plateau_v"]
        bu, bv = rotate(u - p["tibia_u"], v - (top + 17.0), p["slope"])
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
        lu, lv = rotate(u - cu, v - cv, -p["patella_angle"])
        return _ellipsoid(lu, lv, w, p["patella_au"], p["patella_av"], p["patella_aw"])

    def patellar_posterior(self, u, v):
        cu, cv = self.p["patella_c"]
        lu, _ = rotate(u - cu, v - cv, -self.p["patella_angle"])
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
        tu, _ = rotate(u, v, p["femur_tilt"])
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


def sample_params(rng: np.random.Generator) -> dict[str, Any]:
    """Draw one case's anatomy and acquisition (mm, degrees)."""
    U = rng.uniform
    p: dict[str, Any] = {}
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


def place_patella(knee: Knee) -> None:
    """Hang the patella on the ligament from the tuberosity, clear of the femur."""
    p = knee.p
    th = p["flexion"]
    tu, tv = p["tuberosity"]
    ins = np.array(rotate(tu - 7.0, tv + 4.0, th))  # anterior surface of the tuberosity, knee frame
    up = np.array(rotate(-np.sin(np.deg2rad(p["lig_angle"])), -np.cos(np.deg2rad(p["lig_angle"])), th))
    low = ins + p["lig_length"] * up
    axis = np.array(rotate(up[0], up[1], p["patella_tilt"]))
    p["patella_angle"] = float(np.rad2deg(np.arctan2(-axis[0], -axis[1])))
    centre = low + p["patella_av"] * axis
    # push anteriorly until the posterior surface clears the femur by `clearance`
    ang = np.linspace(-0.9, 0.9, 9) * np.pi / 2
    for _ in range(4):
        p["patella_c"] = (float(centre[0]), float(centre[1]))
        lu, lv = p["patella_au"] * np.cos(ang), p["patella_av"] * np.sin(ang)
        su, sv = rotate(lu, lv, p["patella_angle"])
        gap = float(np.min(knee.femur(su + centre[0], sv + centre[1], np.zeros_like(su))))
        if gap >= p["clearance"] - 0.05:
            break
        centre = centre + np.array([-(p["clearance"] - gap + 0.2), 0.0])
    low = centre - p["patella_av"] * axis
    p["patella_c"] = (float(centre[0]), float(centre[1]))
    p["lig_a"] = tuple(float(x) for x in low + 3.0 * axis)  # start inside the lower pole
    p["lig_b"] = tuple(float(x) for x in ins + 3.0 * np.array(rotate(1.0, 0.0, th)))  # end inside the tuberosity
    quad_dir = np.array(rotate(axis[0], axis[1], -8.0))
    qa = centre + (p["patella_av"] - 4.0) * axis
    p["quad_a"] = tuple(float(x) for x in qa)
    p["quad_b"] = tuple(float(x) for x in qa + 120.0 * quad_dir)
    front = centre[0] - p["patella_au"]
    p["leg_front"] = float(front - p["fat_ant"])
    back = p["condyle_r"] * p["condyle_ap"] + p["leg_posterior"]
    p["leg_u"] = (p["leg_front"] + back) / 2
    p["leg_ru"] = (back - p["leg_front"]) / 2
    p["leg_w"] = 0.0
