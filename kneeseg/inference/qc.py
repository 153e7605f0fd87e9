"""Quality checks of one predicted volume, declared in the bundle (``inference.json``'s ``qc``).

A slice-wise model answers something for every series; these checks say when the answer is
implausible, so that a batch run flags it (``qc`` column: ``pass`` or ``review: <reasons>``)
instead of silently writing a wrong mask. Per foreground class, the bundle may declare::

    "qc": {"1": {"volume_ml": [0.5, 5.0],          # plausible volume (an ACL: about 1-3 mL)
                 "max_raw_components": 3,          # 3D components before the largest-component cleanup
                 "max_through_plane_mm": 25.0,     # extent across the model's slices (ACL: medio-lateral)
                 "min_confidence": 0.7}}           # mean softmax probability over the mask

Classes are keyed by id (``"1"``) or name. Measurements are returned for every foreground
class, checked or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["QCResult", "measure_class", "quality_check"]

_KNOWN = {"volume_ml", "max_raw_components", "max_through_plane_mm", "min_confidence"}


@dataclass
class QCResult:
    """``verdict`` (``"pass"`` or ``"review: ..."``), the failed checks' ``reasons`` and per-class
    ``measurements`` (``{class id: {"volume_ml", "raw_components", "through_plane_mm", "confidence"}}``)."""

    verdict: str
    reasons: list[str] = field(default_factory=list)
    measurements: dict[int, dict[str, float | None]] = field(default_factory=dict)


def measure_class(
    mask: np.ndarray,
    confidence: np.ndarray | None,
    affine: np.ndarray,
    normal_ras: np.ndarray,
) -> dict[str, float | None]:
    """Volume (mL), extent along ``normal_ras`` (mm, voxel thickness included) and mean confidence
    (``confidence`` is uint8 x 255 or float in [0, 1]) of a boolean 3D ``mask``."""
    aff = np.asarray(affine, dtype=float)
    voxel_ml = abs(float(np.linalg.det(aff[:3, :3]))) / 1000.0
    n = int(mask.sum())
    out: dict[str, float | None] = {"volume_ml": n * voxel_ml, "through_plane_mm": 0.0, "confidence": None}
    if n == 0:
        return out
    idx = np.argwhere(mask)
    unit = np.asarray(normal_ras, dtype=float) / np.linalg.norm(normal_ras)
    step = aff[:3, :3].T @ unit  # mm along the normal per voxel step on each axis
    proj = idx @ step
    thickness = float(np.abs(step).sum())
    out["through_plane_mm"] = float(proj.max() - proj.min()) + thickness
    if confidence is not None:
        values = confidence[mask].astype(np.float64)
        scale = 255.0 if confidence.dtype == np.uint8 else 1.0
        out["confidence"] = float(values.mean() / scale)
    return out


def _checks_for(checks: Mapping[str, Any], cid: int, name: str) -> dict[str, Any]:
    spec = checks.get(str(cid), checks.get(name, {})) or {}
    unknown = set(spec) - _KNOWN
    if unknown:
        raise ValueError(f"qc checks for class {name!r}: unknown check(s) {sorted(unknown)}; known: {sorted(_KNOWN)}")
    return dict(spec)


def quality_check(
    labels: np.ndarray,
    confidence: np.ndarray | None,
    affine: np.ndarray,
    class_names: Mapping[int, str],
    checks: Mapping[str, Any],
    normal_ras: np.ndarray,
    raw_components: Mapping[int, int] | None = None,
) -> QCResult:
    """Measure every foreground class of ``labels`` and apply the declared ``checks``.

    Args:
        labels: 3D class ids in the volume's layout; ``affine`` its voxel -> RAS affine.
        confidence: predicted-class probability per voxel (uint8 x 255 or float), or None.
        class_names: ``{class id: name}``.
        checks: the bundle's ``qc`` mapping (see the module doc).
        normal_ras: the through-plane direction of the model's slices (RAS).
        raw_components: ``{class id: components before cleanup}`` from the segmenter.

    Raises:
        ValueError: an unknown check name.
    """
    reasons: list[str] = []
    measurements: dict[int, dict[str, float | None]] = {}
    for cid, name in sorted(class_names.items()):
        if cid == 0:
            continue
        m = measure_class(labels == cid, confidence, affine, normal_ras)
        m["raw_components"] = None if raw_components is None else int(raw_components.get(cid, 0))
        measurements[cid] = m
        spec = _checks_for(checks, cid, name)
        vol = float(m["volume_ml"] or 0.0)
        if "volume_ml" in spec:
            lo, hi = (float(v) for v in spec["volume_ml"])
            if vol == 0.0:
                reasons.append(f"no {name} found")
            elif not lo <= vol <= hi:
                reasons.append(f"{name} volume {vol:.2f} mL outside {lo:g}-{hi:g} mL")
        if vol == 0.0:
            continue
        if "max_raw_components" in spec and m["raw_components"] is not None:
            if m["raw_components"] > float(spec["max_raw_components"]):
                reasons.append(
                    f"{name}: {int(m['raw_components'])} 3D components before cleanup (max {spec['max_raw_components']})"
                )
        if "max_through_plane_mm" in spec and (m["through_plane_mm"] or 0.0) > float(spec["max_through_plane_mm"]):
            reasons.append(f"{name} spans {m['through_plane_mm']:.1f} mm across slices (max {spec['max_through_plane_mm']:g})")
        if "min_confidence" in spec and m["confidence"] is not None and m["confidence"] < float(spec["min_confidence"]):
            reasons.append(f"{name} mean confidence {m['confidence']:.2f} (min {spec['min_confidence']:g})")
    verdict = "pass" if not reasons else "review: " + "; ".join(reasons)
    return QCResult(verdict=verdict, reasons=reasons, measurements=measurements)
