"""Slice orientation: the one home of kneeseg's geometry rule (numpy only).

A DICOM series or a NIfTI volume knows its geometry (the affine's direction cosines); a 2D
image file (PNG, JPEG) knows none. So:

- every 2D dataset **declares** the anatomical directions of its image axes as a
  :class:`SliceOrientation` -- where the column index points (``right``: left to right on the
  screen) and where the row index points (``down``: top to bottom). The knee-ACL PNGs show each
  sagittal slice with superior to the left and anterior at the top:
  ``SliceOrientation(right="inferior", down="posterior")``;
- a model records the orientation its 2D slices were trained in (the bundle's
  ``slice_orientation``);
- before the network, every slice is brought from its own orientation into the model's
  (:func:`map_volume` from an affine, :func:`map_2d` from a declared orientation) and the
  prediction is brought back with the inverse :class:`AxisMap`. Any of the 8 in-plane
  flips/transposes of a series therefore reaches the network as the same array, and gives the
  same mask in patient space.

Array conventions: a 2D image array (MONAI's reader convention, ``(W, H)``) has axis 0 along
the image columns (``right``) and axis 1 along the rows (``down``). A volume's axes point
along the columns of its affine. kneeseg's DICOM reader stores a series the way dcm2niix does
(:func:`dicom_plane_to_volume`): ``(columns, rows, slices)`` with the row axis reversed.

Directions are given by letters ``L R A P S I`` or the words ``left right anterior posterior
superior inferior``; vectors are in DICOM patient space (LPS) unless ``space="RAS"`` is passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LPS_TO_RAS",
    "STANDARD_DISPLAY",
    "AxisMap",
    "SliceOrientation",
    "datalist_orientation",
    "dicom_plane_to_volume",
    "display_plane",
    "map_2d",
    "map_volume",
    "plane_of",
    "volume_plane_to_dicom",
    "volume_to_dicom_frames",
]

# unit vectors of the anatomical directions in DICOM patient space (LPS: +x left, +y posterior, +z superior)
_LPS: dict[str, tuple[float, float, float]] = {
    "L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0), "I": (0.0, 0.0, -1.0),
}  # fmt: skip
_NAMES = {"L": "left", "R": "right", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}
_LETTERS = {name: letter for letter, name in _NAMES.items()}
#: diag(-1, -1, 1, 1): converts between DICOM LPS and NIfTI/MONAI RAS world coordinates (the
#: one home of this rule; ``LPS_TO_RAS[:3, :3]`` for directions).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SAME_PLANE_COS = float(np.cos(np.deg2rad(45.0)))  # slice normals within 45 degrees: the same plane


def _letter(value: Any, what: str) -> str:
    text = str(value).strip()
    if text.upper() in _LPS:
        return text.upper()
    if text.lower() in _LETTERS:
        return _LETTERS[text.lower()]
    raise ValueError(
        f"{what}: unknown anatomical direction {value!r}; use one of {', '.join(_NAMES.values())} "
        f"(or the letters {' '.join(_LPS)})"
    )


def _nearest_letter(vector: Sequence[float], what: str) -> str:
    v = np.asarray(vector, dtype=float)
    norm = float(np.linalg.norm(v))
    if v.shape != (3,) or norm == 0:
        raise ValueError(f"{what}: expected a non-zero 3-vector, got {list(vector)}")
    best = max(_LPS, key=lambda k: float(np.dot(_LPS[k], v)) / norm)
    return best


def plane_of(normal: Sequence[float]) -> str:
    """Anatomical plane of a slice normal (LPS or RAS: only magnitudes matter): its dominant axis.

    x (left-right) -> ``sagittal``, y (anterior-posterior) -> ``coronal``, z -> ``axial``.
    """
    n = np.abs(np.asarray(normal, dtype=float))
    return ("sagittal", "coronal", "axial")[int(np.argmax(n))]


@dataclass(frozen=True)
class SliceOrientation:
    """Anatomical directions of a 2D slice's axes.

    Args:
        right: where the column index points (left to right on the screen; array axis 0 of a
            MONAI-loaded 2D image), a letter or word (``"inferior"``, ``"I"``).
        down: where the row index points (top to bottom; array axis 1).

    Raises:
        ValueError: unknown direction, or ``right`` and ``down`` on the same body axis.
    """

    right: str
    down: str

    def __post_init__(self) -> None:
        r, d = _letter(self.right, "right"), _letter(self.down, "down")
        if abs(float(np.dot(_LPS[r], _LPS[d]))) > 0:
            raise ValueError(f"right ({_NAMES[r]}) and down ({_NAMES[d]}) must lie on different body axes")
        object.__setattr__(self, "right", r)
        object.__setattr__(self, "down", d)

    @classmethod
    def parse(cls, value: Any) -> SliceOrientation:
        """From a :class:`SliceOrientation`, ``{"right": ..., "down": ...}``, a two-letter code
        ``"IP"`` (right, down) or a DICOM ImageOrientationPatient (6 floats, LPS; snapped to the
        nearest body axes).

        Raises:
            ValueError: a value that names no orientation.
        """
        if isinstance(value, SliceOrientation):
            return value
        if isinstance(value, Mapping):
            missing = {"right", "down"} - set(value)
            if missing:
                raise ValueError(f"slice orientation {dict(value)} lacks {sorted(missing)}: give 'right' and 'down'")
            return cls(str(value["right"]), str(value["down"]))
        if isinstance(value, str):
            code = value.strip()
            if len(code) == 2:
                return cls(code[0], code[1])
            raise ValueError(f"slice orientation {value!r}: expected a two-letter code such as 'IP' (right, down)")
        if isinstance(value, (Sequence, np.ndarray)) and len(value) == 6:
            iop = [float(v) for v in value]
            return cls(_nearest_letter(iop[:3], "row direction"), _nearest_letter(iop[3:], "column direction"))
        raise ValueError(f"cannot read a slice orientation from {value!r}")

    def vectors(self, space: str = "LPS") -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors ``(right, down)`` in patient space ``"LPS"`` or ``"RAS"``."""
        r, d = np.asarray(_LPS[self.right]), np.asarray(_LPS[self.down])
        if space.upper() == "RAS":
            return LPS_TO_RAS[:3, :3] @ r, LPS_TO_RAS[:3, :3] @ d
        return r, d

    @property
    def normal(self) -> np.ndarray:
        """``right x down`` in LPS (the through-plane direction)."""
        r, d = self.vectors()
        return np.cross(r, d)

    @property
    def plane(self) -> str:
        return plane_of(self.normal)

    @property
    def code(self) -> str:
        """Two letters (right, down), e.g. ``"IP"``."""
        return self.right + self.down

    def to_config(self) -> dict[str, str]:
        """``{"right": "inferior", "down": "posterior"}`` (the form used in configs and manifests)."""
        return {"right": _NAMES[self.right], "down": _NAMES[self.down]}

    def __str__(self) -> str:
        return f"{self.plane} slices, {_NAMES[self.right]} to the right, {_NAMES[self.down]} downwards"


#: How each plane is shown by convention (and stored by most scanners): sagittal with anterior
#: on the left and superior up (ImageOrientationPatient [0,1,0, 0,0,-1]); coronal and axial in
#: the radiological convention (the patient's left on the screen's right).
STANDARD_DISPLAY: dict[str, SliceOrientation] = {
    "sagittal": SliceOrientation("P", "I"),
    "coronal": SliceOrientation("L", "I"),
    "axial": SliceOrientation("L", "P"),
}


@dataclass(frozen=True)
class AxisMap:
    """A signed axis permutation: ``out = flip(transpose(in, perm), axes where flip)``.

    Output axis ``i`` is input axis ``perm[i]``, reversed when ``flip[i]``. Works on numpy
    arrays and torch tensors; ``lead`` leading axes (channels, batch) are left alone.
    """

    perm: tuple[int, ...]
    flip: tuple[bool, ...]

    @property
    def is_identity(self) -> bool:
        return self.perm == tuple(range(len(self.perm))) and not any(self.flip)

    def inverse(self) -> AxisMap:
        """The map that undoes this one."""
        n = len(self.perm)
        inv_perm = [0] * n
        inv_flip = [False] * n
        for i, p in enumerate(self.perm):
            inv_perm[p] = i
            inv_flip[p] = self.flip[i]
        return AxisMap(tuple(inv_perm), tuple(inv_flip))

    def apply(self, array: Any, lead: int = 0) -> Any:
        """Reorient the last ``len(perm)`` axes of ``array`` (numpy array or torch tensor)."""
        if self.is_identity:
            return array
        order = list(range(lead)) + [lead + p for p in self.perm]
        axes = [lead + i for i, f in enumerate(self.flip) if f]
        if hasattr(array, "permute"):  # torch tensor
            out = array.permute(*order)
            return out.flip(axes) if axes else out
        out = np.transpose(array, order)
        return np.flip(out, axis=axes) if axes else out

    def invert(self, array: Any, lead: int = 0) -> Any:
        """Undo :meth:`apply` on an array in the output layout."""
        return self.inverse().apply(array, lead)

    def out_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape after :meth:`apply`."""
        return tuple(int(shape[p]) for p in self.perm)

    def index_matrix(self, in_shape: Sequence[int]) -> np.ndarray:
        """``(n+1, n+1)`` matrix mapping output voxel indices to input voxel indices.

        A volume's affine after :meth:`apply` is ``affine @ index_matrix(in_shape)``.
        """
        n = len(self.perm)
        m = np.zeros((n + 1, n + 1))
        m[n, n] = 1.0
        for i, p in enumerate(self.perm):
            if self.flip[i]:
                m[p, i] = -1.0
                m[p, n] = float(in_shape[p]) - 1.0
            else:
                m[p, i] = 1.0
        return m

    def describe(self) -> str:
        if self.is_identity:
            return "unchanged"
        parts = []
        if self.perm != tuple(range(len(self.perm))):
            parts.append(f"axes {list(self.perm)}")
        flips = [i for i, f in enumerate(self.flip) if f]
        if flips:
            parts.append(f"flip {flips}")
        return ", ".join(parts)


def _assign(dirs: np.ndarray, axes: Sequence[int], targets: Sequence[np.ndarray]) -> tuple[list[int], list[bool]]:
    """Give each target direction the input axis (of ``axes``) most parallel to it, and its sign."""
    a, b = axes
    t0, t1 = targets
    keep = abs(dirs[:, a] @ t0) + abs(dirs[:, b] @ t1)
    swap = abs(dirs[:, b] @ t0) + abs(dirs[:, a] @ t1)
    first, second = (a, b) if keep >= swap else (b, a)
    return [first, second], [bool(dirs[:, first] @ t0 < 0), bool(dirs[:, second] @ t1 < 0)]


def map_2d(source: Any, target: Any) -> AxisMap:
    """Map a 2D image declared in ``source`` orientation to the ``target`` orientation.

    Raises:
        ValueError: the two orientations are not in the same plane (a declared sagittal dataset
            cannot feed an axial model).
    """
    src, tgt = SliceOrientation.parse(source), SliceOrientation.parse(target)
    if src.plane != tgt.plane:
        raise ValueError(
            f"image orientation ({src}) and model orientation ({tgt}) are in different planes; "
            "a 2D image cannot be resliced"
        )
    dirs = np.stack(src.vectors(), axis=1)
    perm, flip = _assign(dirs, (0, 1), tgt.vectors())
    return AxisMap(tuple(perm), tuple(flip))


def _relative(target: SliceOrientation, reference: SliceOrientation) -> np.ndarray:
    """2x2 signed permutation ``R`` with ``target vectors = R @ reference vectors``."""
    t, r = target.vectors(), reference.vectors()
    return np.array([[float(np.dot(t[i], r[j])) for j in range(2)] for i in range(2)])


def map_volume(
    affine: Any,
    target: Any,
    *,
    space: str = "RAS",
    slice_axis: int | None = None,
) -> AxisMap:
    """Map a volume with ``affine`` so that its axes 0, 1 run like the ``target`` slice
    orientation and axis 2 across the slices.

    Args:
        affine: ``(4, 4)`` (or ``(3, 3)``) voxel -> world matrix of the volume.
        target: the model's slice orientation (anything :meth:`SliceOrientation.parse` takes).
        space: world space of ``affine``: ``"RAS"`` (NIfTI/MONAI) or ``"LPS"`` (DICOM).
        slice_axis: the axis to cut slices along. ``None``: the voxel axis closest to the target
            plane's normal (a sagittal model gets sagittal slices from any sagittal volume).
            An explicit axis whose slices are more than 45 degrees off the target plane keeps
            its own plane ("segment in its own plane"): the target is then taken relative to
            the plane's :data:`STANDARD_DISPLAY`, so e.g. a model trained on transposed sagittal
            slices sees axial slices transposed the same way.

    Returns:
        :class:`AxisMap` over the 3 spatial axes; the slice axis keeps its direction.

    Raises:
        ValueError: a singular affine.
    """
    tgt = SliceOrientation.parse(target)
    mat = np.asarray(affine, dtype=float)[:3, :3]
    norms = np.linalg.norm(mat, axis=0)
    if mat.shape != (3, 3) or np.any(norms == 0) or abs(np.linalg.det(mat)) < 1e-12:
        raise ValueError(f"cannot orient slices: the affine is singular or not 3D:\n{np.asarray(affine)}")
    dirs = mat / norms
    if space.upper() == "RAS":
        dirs = LPS_TO_RAS[:3, :3] @ dirs
    elif space.upper() != "LPS":
        raise ValueError(f"space must be 'RAS' or 'LPS', got {space!r}")
    align = np.abs(dirs.T @ tgt.normal)
    s = int(np.argmax(align)) if slice_axis is None else int(slice_axis) % 3
    if align[s] >= _SAME_PLANE_COS:
        targets = tgt.vectors()
    else:  # another plane: the same relation to that plane's standard display
        own = STANDARD_DISPLAY[plane_of(dirs[:, s])]
        rel = _relative(tgt, STANDARD_DISPLAY[tgt.plane])
        ov = own.vectors()
        targets = (rel[0, 0] * ov[0] + rel[0, 1] * ov[1], rel[1, 0] * ov[0] + rel[1, 1] * ov[1])
    in_plane = [k for k in range(3) if k != s]
    perm, flip = _assign(dirs, in_plane, targets)
    return AxisMap((perm[0], perm[1], s), (flip[0], flip[1], False))


# ---------------------------------------------------------------------------- dcm2niix layout


def dicom_plane_to_volume(pixels: np.ndarray) -> np.ndarray:
    """Stored DICOM pixels ``(rows, columns)`` -> kneeseg/dcm2niix volume plane ``(columns, rows)``
    with the row axis reversed (``j = rows - 1 - r``)."""
    return np.asarray(pixels)[::-1, :].T


def volume_plane_to_dicom(plane: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dicom_plane_to_volume`: ``(columns, rows)`` -> stored ``(rows, columns)``."""
    return np.asarray(plane)[:, ::-1].T


def volume_to_dicom_frames(array: np.ndarray) -> np.ndarray:
    """``(columns, rows, slices)`` volume -> ``(slices, rows, columns)`` stored DICOM frames.

    Frame ``k`` is the stored pixel order of the slice at ``affine_lps @ (0, rows-1, k, 1)``.
    """
    if array.ndim != 3:
        raise ValueError(f"expected a 3D (columns, rows, slices) array, got shape {array.shape}")
    return np.ascontiguousarray(np.transpose(array[:, ::-1, :], (2, 1, 0)))


def display_plane(volume: np.ndarray, k: int | None = None, affine: Any = None, space: str = "RAS") -> np.ndarray:
    """Slice ``k`` of a ``(X, Y[, Z])`` array as a screen image ``(rows, columns)``.

    With an ``affine`` the slice is shown in its plane's :data:`STANDARD_DISPLAY` (a sagittal
    knee with anterior left and superior up, whatever the storage order); without one, in
    stored DICOM order (kneeseg's volume layout, first DICOM row at the top).
    """
    arr = np.asarray(volume)
    if affine is not None and arr.ndim == 3:
        plane = plane_of(np.asarray(affine, dtype=float)[:3, 2])
        amap = map_volume(affine, STANDARD_DISPLAY[plane], space=space, slice_axis=2)
        arr = amap.apply(arr)
        k = int(k or 0)
        return np.ascontiguousarray(arr[:, :, k].T)
    plane2 = arr if arr.ndim == 2 else arr[..., int(k or 0)]
    return np.ascontiguousarray(volume_plane_to_dicom(plane2))


def datalist_orientation(path: Any, key: str = "image_orientation") -> SliceOrientation | None:
    """The orientation a datalist JSON declares for its 2D images (its top-level ``key``), or None.

    Raises:
        ValueError: the file declares something that is not an orientation.
    """
    import json
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return None
    value = json.loads(p.read_text()).get(key)
    if value is None:
        return None
    try:
        return SliceOrientation.parse(value)
    except ValueError as exc:
        raise ValueError(f"{p}: '{key}': {exc}") from exc
