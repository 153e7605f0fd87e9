"""Reading values out of DICOM headers: numbers, the transfer syntax, and the selection facts.

The number readers give None for a missing or non-numeric value. The selection facts are the
header facts that tell a knee MR volume from a brain scan, a Siemens MOSAIC or a diffusion series
(body part, protocol, ImageType, NumberOfImagesInMosaic, b-value and gradient direction, the last
three also from the vendors' private tags: Siemens, GE, Philips); they are read defensively and
never make discovery fail. A new vendor tag or selection fact belongs here;
:mod:`kneeseg.data.dicom.headers` stores the facts per slice and :mod:`kneeseg.data.series_kind`
holds the rules that read them.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pydicom
from pydicom.tag import Tag

# ---------------------------------------------------------------------- numbers, transfer syntax


def float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
        if value is None:
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def int_or_none(value: Any) -> int | None:
    f = float_or_none(value)
    return None if f is None else int(round(f))


def float_list(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def transfer_syntax(ds: Any) -> pydicom.uid.UID:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return pydicom.uid.UID(ts) if ts else pydicom.uid.ImplicitVRLittleEndian


# ---------------------------------------------------------------------- selection facts
# Header facts that tell a knee MR volume from a brain scan, a Siemens MOSAIC or a diffusion series.
# They are read defensively: a missing, malformed or wrongly encoded value gives "" / () / None and
# never makes discovery fail.

_SIEMENS_MR_HEADER = "SIEMENS MR HEADER"  # private creator of Siemens group 0019 (not "SIEMENS CSA HEADER", 0029)
_GE_PARAMETERS = "GEMS_PARM_01"
_PHILIPS_IMAGING = "Philips Imaging DD 001"
#: GE adds 1e9 to the b-value in (0043,1039) for multi-b-value and synthetic DWI (BIAS_FOR_BVALUE, stored in
#: (0043,107F)); DTI has no bias. Removing it as ``b % 1e9`` (not ``% 10000``) keeps b-values >= 10000.
_GE_BVALUE_BIAS = 1_000_000_000
_MAX_B_VALUE = 100_000.0  # larger (or negative) b-values are treated as garbage
_MAX_MOSAIC_IMAGES = 4096  # NumberOfImagesInMosaic above this is a mis-decoded value


def _safe_get(ds: Any, keyword: Any) -> Any:
    """``ds.get(keyword)``, or None when the element is missing or cannot be decoded."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _text(value: Any) -> str:
    """A string attribute, stripped ("" for None or an undecodable value)."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1", errors="replace")
    try:
        return str(value).strip().strip("\x00").strip()
    except Exception:
        return ""


def _image_type(value: Any) -> tuple[str, ...]:
    """ImageType values, upper case (a single string is split at backslashes)."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, bytearray)):
        parts: list[Any] = _text(value).split("\\")
    else:
        try:
            parts = list(value)
        except TypeError:
            parts = [value]
    return tuple(t for t in (_text(p).upper() for p in parts) if t)


def _private_element(ds: Any, group: int, creator: str, offset: int) -> Any:
    """The private element ``(group, xx<offset>)`` of the block reserved by ``creator``, or None.

    The creator is compared case-insensitively after stripping; a missing creator, a missing element
    or an element that cannot be decoded gives None.
    """
    try:
        for block in range(0x10, 0x100):
            tag = Tag(group, block)
            if tag not in ds:
                continue
            if _text(ds[tag].value).upper() == creator.upper():
                data_tag = Tag(group, (block << 8) | offset)
                return ds[data_tag] if data_tag in ds else None
    except Exception:
        return None
    return None


def _numbers(value: Any, binary: str | None = None, little_endian: bool = True) -> list[float] | None:
    """Numbers held by an element value, or None if it holds none that are finite.

    Args:
        value: a number, a string ("1000" or "0\\\\8\\\\0\\\\0"), a multi-value, or raw bytes (VR UN/OB).
        binary: struct code ("H", "f", "d") of the vendor's binary encoding; raw bytes are unpacked with
            it. Without it raw bytes are read as text (IS/DS values).
        little_endian: byte order of raw binary values.
    """
    try:
        if isinstance(value, (bytes, bytearray)):
            raw = bytes(value)
            if binary is None:
                value = raw.decode("ascii").strip("\x00 ").split("\\")
            else:
                size = struct.calcsize(binary)
                if not raw or len(raw) % size:
                    return None
                order = "<" if little_endian else ">"
                value = struct.unpack(f"{order}{len(raw) // size}{binary}", raw)
        elif isinstance(value, str):
            value = value.split("\\")
        elif not isinstance(value, (list, tuple)) and type(value).__name__ != "MultiValue":
            value = [value]
        out = [float(v) for v in value]
    except Exception:
        return None
    return out if out and all(math.isfinite(v) for v in out) else None


def _private_numbers(ds: Any, group: int, creator: str, offset: int, binary: str | None = None) -> list[float] | None:
    """Numbers of a private element (see :func:`_private_element`), decoded defensively."""
    elem = _private_element(ds, group, creator, offset)
    if elem is None:
        return None
    try:
        little = transfer_syntax(ds) != pydicom.uid.ExplicitVRBigEndian
        return _numbers(elem.value, binary, little)
    except Exception:
        return None


def _valid_b(value: float | None) -> float | None:
    return value if value is not None and 0.0 <= value <= _MAX_B_VALUE else None


def _valid_direction(values: list[float] | None) -> tuple[float, float, float] | None:
    return (values[0], values[1], values[2]) if values is not None and len(values) == 3 else None


def _mosaic_images(ds: Any) -> int | None:
    """Siemens NumberOfImagesInMosaic (0019,xx0A, US) or None."""
    values = _private_numbers(ds, 0x0019, _SIEMENS_MR_HEADER, 0x0A, "H")
    if values is None or len(values) != 1 or values[0] != int(values[0]):
        return None
    n = int(values[0])
    return n if 0 < n <= _MAX_MOSAIC_IMAGES else None


def _standard_diffusion(container: Any) -> tuple[float | None, tuple[float, float, float] | None]:
    """DiffusionBValue (0018,9087) and DiffusionGradientOrientation (0018,9089) of a dataset or MR Diffusion item.

    The orientation is read from the item itself or from its DiffusionGradientDirectionSequence.
    """
    if container is None:
        return None, None
    values = _numbers(_safe_get(container, "DiffusionBValue"))
    b = _valid_b(values[0]) if values else None
    direction = _valid_direction(_numbers(_safe_get(container, "DiffusionGradientOrientation")))
    if direction is None:
        seq = _safe_get(container, "DiffusionGradientDirectionSequence")
        try:
            item = seq[0] if seq else None
        except Exception:
            item = None
        if item is not None:
            direction = _valid_direction(_numbers(_safe_get(item, "DiffusionGradientOrientation")))
    return b, direction


def _private_vector(
    ds: Any, group: int, creator: str, offsets: tuple[int, int, int], binary: str | None = None
) -> tuple[float, float, float] | None:
    """A gradient direction stored as three single-valued private elements (GE, Philips), or None."""
    values = [_private_numbers(ds, group, creator, offset, binary) for offset in offsets]
    if any(v is None or len(v) != 1 for v in values):
        return None
    return _valid_direction([v[0] for v in values])  # type: ignore[index]


def _vendor_diffusion(ds: Any) -> tuple[float | None, tuple[float, float, float] | None]:
    """``(b_value, direction)`` from private tags of the vendor whose b-value tag is present.

    Siemens: b (0019,xx0C) IS, direction (0019,xx0E) FD x 3 ('SIEMENS MR HEADER').
    GE: b = first value of (0043,xx39) IS ('GEMS_PARM_01'), less the 1e9 bias when present; direction
    (0019,xxBB/BC/BD) DS ('GEMS_ACQU_01'), read only when b > 0 (other sequences use these "user data"
    slots for other things, e.g. 2.0 in a DESS knee series).
    Philips: b (2001,xx03) FL ('Philips Imaging DD 001'), direction (2005,xxB0/B1/B2) FL
    ('Philips MR Imaging DD 001').
    """
    siemens = _private_numbers(ds, 0x0019, _SIEMENS_MR_HEADER, 0x0C)
    if siemens:
        direction = _valid_direction(_private_numbers(ds, 0x0019, _SIEMENS_MR_HEADER, 0x0E, "d"))
        return _valid_b(siemens[0]), direction
    ge = _private_numbers(ds, 0x0043, _GE_PARAMETERS, 0x39)
    if ge:
        b = _valid_b(ge[0] % _GE_BVALUE_BIAS if ge[0] >= _GE_BVALUE_BIAS else ge[0])
        direction = _private_vector(ds, 0x0019, "GEMS_ACQU_01", (0xBB, 0xBC, 0xBD)) if b else None
        return b, direction
    philips = _private_numbers(ds, 0x2001, _PHILIPS_IMAGING, 0x03, "f")
    if philips:
        direction = _private_vector(ds, 0x2005, "Philips MR Imaging DD 001", (0xB0, 0xB1, 0xB2), "f")
        return _valid_b(philips[0]), direction
    siemens_direction = _valid_direction(_private_numbers(ds, 0x0019, _SIEMENS_MR_HEADER, 0x0E, "d"))
    return None, siemens_direction


def diffusion_facts(ds: Any, frame_item: Any = None) -> tuple[float | None, tuple[float, float, float] | None]:
    """``(b_value, gradient direction)`` of a slice: standard tags first, then vendor private tags.

    For an enhanced MR frame, ``frame_item`` is its MRDiffusionSequence item (per-frame or shared).
    Standard tags are also looked for at the top level and in a top-level MRDiffusionSequence.
    """
    b, direction = _standard_diffusion(frame_item)
    top = _safe_get(ds, "MRDiffusionSequence")
    try:
        top_item = top[0] if top else None
    except Exception:
        top_item = None
    for container in (ds, top_item):
        if b is not None and direction is not None:
            break
        b2, d2 = _standard_diffusion(container)
        b = b if b is not None else b2
        direction = direction if direction is not None else d2
    if b is None or direction is None:
        vendor_b, vendor_direction = _vendor_diffusion(ds)
        b = b if b is not None else vendor_b
        direction = direction if direction is not None else vendor_direction
    return b, direction


def selection_facts(ds: Any) -> dict[str, Any]:
    """File-level facts for :class:`FrameRecord`: body part, protocol, ImageType, mosaic size."""
    return dict(
        body_part=_text(_safe_get(ds, "BodyPartExamined")).upper(),
        protocol_name=_text(_safe_get(ds, "ProtocolName")),
        image_type=_image_type(_safe_get(ds, "ImageType")),
        mosaic_images=_mosaic_images(ds),
    )
