"""SNOMED CT codes of segmented knee structures, for DICOM Segmentation segment descriptions.

:func:`lookup_codes` gives the ``(SegmentedPropertyCategory, SegmentedPropertyType)`` codes of a
class name: the caller's overrides first, then the built-in :func:`knee_code_table`, then the
generic Tissue code. pydicom's DICOM code dictionary is the source (:func:`knee_code_table`
lists the exceptions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["knee_code_table", "lookup_codes"]


def _normalise(name: str) -> str:
    """Class name -> lookup key: lower case, ``_``/``-`` as spaces, single spaces."""
    return " ".join(re.sub(r"[_\-]+", " ", str(name)).lower().split())


def _sct(keyword: str, value: str, meaning: str) -> Any:
    """SNOMED CT code ``keyword`` from pydicom's DICOM code dictionary, checked against ``value``.

    pydicom 3 resolves every keyword used here; pydicom 2.4 finds some of them ambiguous (several
    codes per keyword), and then the explicit ``(value, meaning)`` is used. The test suite checks
    that the explicit values equal pydicom's.
    """
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    try:
        code = getattr(codes.SCT, keyword)
    except (AttributeError, RuntimeError):  # unknown or ambiguous in this pydicom version
        return Code(value, "SCT", meaning)
    return code if code.value == value else Code(value, "SCT", meaning)


def knee_code_table() -> dict[str, tuple[Any, Any]]:
    """Built-in ``name -> (SegmentedPropertyCategory, SegmentedPropertyType)`` codes (SNOMED CT).

    Keys are normalised names (lower case, spaces). The codes are those of pydicom's DICOM code
    dictionary (``pydicom.sr.codedict.codes.SCT``, i.e. DICOM PS3.16) except the ACL:

    - category ``Anatomical Structure`` (91723000, CID 7150) for named structures:
      femur 71341001, tibia 12611008, patella 64234005, fibula 87342007, patellar ligament
      18033002 (``codes.SCT.PatellarTendon``, a.k.a. "Structure of patellar ligament"),
      anterior cruciate ligament 895007 ("Anterior cruciate ligament of knee joint": not in
      pydicom's dictionary; from the SNOMED CT anatomical structure value set published with HL7
      FHIR R4, Verhoeff check digit verified);
    - category ``Tissue`` (85756007, CID 7150) for the tissue types of CID 7166: ligament
      52082005, tendon 13024002, cartilage 309312004, meniscus 74135004, bone 3138006,
      muscle 91727004, fat 55603005.
    """
    from pydicom.sr.coding import Code

    anatomy = _sct("AnatomicalStructure", "91723000", "Anatomical Structure")
    tissue = _sct("Tissue", "85756007", "Tissue")
    patellar_ligament = _sct("PatellarTendon", "18033002", "Patellar Tendon")
    acl = Code("895007", "SCT", "Anterior cruciate ligament of knee joint")
    table: dict[str, tuple[Any, Any]] = {
        "femur": (anatomy, _sct("Femur", "71341001", "Femur")),
        "tibia": (anatomy, _sct("Tibia", "12611008", "Tibia")),
        "patella": (anatomy, _sct("Patella", "64234005", "Patella")),
        "fibula": (anatomy, _sct("Fibula", "87342007", "Fibula")),
        "patellar ligament": (anatomy, patellar_ligament),
        "patellar tendon": (anatomy, patellar_ligament),
        "anterior cruciate ligament": (anatomy, acl),
        "acl": (anatomy, acl),
        "ligament": (tissue, _sct("Ligament", "52082005", "Ligament")),
        "tendon": (tissue, _sct("Tendon", "13024002", "Tendon")),
        "cartilage": (tissue, _sct("Cartilage", "309312004", "Cartilage")),
        "meniscus": (tissue, _sct("Meniscus", "74135004", "Meniscus")),
        "bone": (tissue, _sct("BoneTissue", "3138006", "Bone")),
        "muscle": (tissue, _sct("MuscleTissue", "91727004", "Muscle")),
        "fat": (tissue, _sct("AdiposeTissue", "55603005", "Fat")),
    }
    return table


def _as_code(value: Any, what: str) -> Any:
    """A pydicom ``Code``/highdicom ``CodedConcept`` or a ``(value, scheme, meaning)`` tuple -> code."""
    from pydicom.sr.coding import Code

    if isinstance(value, Code) or (hasattr(value, "value") and hasattr(value, "scheme_designator")):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 3 and all(isinstance(v, str) for v in value):
        return Code(value[0], value[1], value[2])
    raise TypeError(
        f"{what}: expected a pydicom Code, a highdicom CodedConcept or a (value, scheme, meaning) tuple, "
        f"got {value!r}"
    )


def lookup_codes(name: str, codes: Mapping[str, tuple] | None = None) -> tuple[Any, Any]:
    """``(category, type)`` codes for a class name.

    ``codes`` (caller overrides, keyed by the exact or the normalised class name) wins over
    :func:`knee_code_table`; unknown names get category Tissue / type Tissue (SCT 85756007).
    """
    if codes:
        normalised = {_normalise(k): v for k, v in codes.items()}
        override = codes.get(name, normalised.get(_normalise(name)))
        if override is not None:
            if not isinstance(override, (tuple, list)) or len(override) != 2:
                raise TypeError(f"codes[{name!r}] must be a (category_code, type_code) pair, got {override!r}")
            return (
                _as_code(override[0], f"codes[{name!r}] category"),
                _as_code(override[1], f"codes[{name!r}] type"),
            )
    hit = knee_code_table().get(_normalise(name))
    if hit is not None:
        return hit
    tissue = _sct("Tissue", "85756007", "Tissue")
    return tissue, tissue
