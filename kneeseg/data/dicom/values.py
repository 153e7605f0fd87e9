"""DICOM value encodings that kneeseg's writers share (the phantom's series, slice series)."""

from __future__ import annotations

__all__ = ["decimal_string"]


def decimal_string(value: float) -> str:
    """A number as a DS (Decimal String) value: at most 6 decimals, trailing zeros dropped,
    ``-0`` as ``0``, and at most the 16 characters DS allows."""
    value = float(value)
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text if len(text) <= 16 else f"{value:.8g}"
