"""Which discovered DICOM series a knee model should segment: body part, Siemens MOSAIC, diffusion.

The rules read the header facts that :func:`kneeseg.data.dicom.discovery.discover_series` stores on each
:class:`~kneeseg.data.dicom.volume.SeriesVolume` (numpy + pydicom only; no torch). A batch planner
calls :func:`series_skip_reason` once per SeriesInstanceUID with all its volumes (one row per series)
and :func:`body_part_decision` per volume.

Words in SeriesDescription / ProtocolName are matched as whole tokens (split at anything that is not
a letter or digit), so "ADC" matches "ep2d_diff_ADC" but not "ADCx". "DIFFUSE" is *not* taken as a
diffusion name: it describes a finding ("diffuse lesion"), not an acquisition.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kneeseg.data.dicom.volume import SeriesVolume

__all__ = ["body_part_decision", "body_part_of", "diffusion_summary", "is_mosaic", "series_skip_reason"]

KNEE = "KNEE"

#: words meaning the knee: BodyPartExamined defined terms (DICOM PS3.16 Annex L: KNEE, PATELLA,
#: POPLITEALFOSSA) and the word in English, German/Dutch, French, Spanish, Italian, Portuguese,
#: Polish, Swedish.
_KNEE_WORDS = {
    "KNEE", "KNEES", "PATELLA", "POPLITEALFOSSA", "KNIE", "KNIEGELENK", "GENOU", "GENOUX", "RODILLA",
    "GINOCCHIO", "JOELHO", "KOLANO", "KNÄ", "KNAE",
}  # fmt: skip
#: BodyPartExamined defined terms for regions that may hold the knee without naming it.
_GENERIC_PARTS = {"EXTREMITY", "LOWERLIMB", "LOWEREXTREMITY", "LEG", "JOINT"}
#: other body parts recognised in descriptions (canonical name -> words).
_OTHER_PARTS = {
    "BRAIN": {"BRAIN", "CEREBRUM", "GEHIRN", "CERVEAU", "CEREBRO", "CERVELLO"},
    "HEAD": {"HEAD", "KOPF", "SCHAEDEL", "SCHÄDEL", "TETE", "TÊTE", "CABEZA", "CRANE", "CRÂNE"},
    "SKULL": {"SKULL"},
    "SPINE": {"SPINE", "CSPINE", "TSPINE", "LSPINE", "WIRBELSAEULE", "WIRBELSÄULE", "HWS", "BWS", "LWS", "RACHIS"},
    "SHOULDER": {"SHOULDER", "SCHULTER", "EPAULE", "ÉPAULE", "HOMBRO", "SPALLA", "OMBRO"},
    "HIP": {"HIP", "HIPS", "HUEFTE", "HÜFTE", "HANCHE", "CADERA", "ANCA"},
    "ANKLE": {"ANKLE", "SPRUNGGELENK", "OSG", "CHEVILLE", "TOBILLO", "CAVIGLIA"},
    "FOOT": {"FOOT", "FEET", "FUSS", "PIED"},
    "WRIST": {"WRIST", "HANDGELENK", "POIGNET", "MUNECA", "MUÑECA", "POLSO"},
    "HAND": {"HAND", "MANO"},
    "ELBOW": {"ELBOW", "ELLENBOGEN", "COUDE", "CODO", "GOMITO"},
    "CHEST": {"CHEST", "THORAX"},
    "ABDOMEN": {"ABDOMEN", "LIVER", "LEBER"},
    "PELVIS": {"PELVIS", "BECKEN", "BASSIN"},
    "PROSTATE": {"PROSTATE", "PROSTATA"},
    "BREAST": {"BREAST", "MAMMA", "BRUST"},
    "HEART": {"HEART", "CARDIAC", "HERZ", "COEUR"},
    "NECK": {"NECK", "HALS", "CUELLO"},
}
_WORD_TO_PART = {word: part for part, words in _OTHER_PARTS.items() for word in words}
_LATERALITY = ("LEFT", "RIGHT", "LT", "RT", "L", "R")

#: ImageType tokens of diffusion images and maps (Siemens DIFFUSION\TRACEW, ADC, FA; Philips ADC_...).
_DIFFUSION_IMAGE_TYPES = {"DIFFUSION", "TRACEW", "ADC", "EADC", "FA", "COLFA", "TENSOR"}
#: whole-token diffusion names in SeriesDescription / ProtocolName.
_DIFFUSION_NAMES = {"DWI", "DTI", "DIFF", "DIFFUSION", "TRACEW", "ADC", "EADC", "DWIBS", "IVIM", "MDDW"}
_DIFFUSION_NAME_RE = re.compile(r"^(DWI|DTI)\d+[A-Z]*$")  # DWI1000, DTI30DIR


def _tokens(text: str) -> list[str]:
    """Upper-case words of ``text`` (split at anything but letters and digits, underscores included)."""
    return [t for t in re.split(r"[\W_]+", (text or "").upper()) if t]


def _without_laterality(token: str) -> list[str]:
    """``token`` and its forms without a laterality prefix/suffix (LKNEE, RT_KNEE -> KNEE, KNEER -> KNEE)."""
    forms = [token]
    for side in _LATERALITY:
        if token.startswith(side) and len(token) > len(side) + 2:
            forms.append(token[len(side):])
        if token.endswith(side) and len(token) > len(side) + 2:
            forms.append(token[: -len(side)])
    return forms


def _part_of_text(text: str) -> str:
    """Body part named in free text: "KNEE" if any knee word occurs, else the first other part, else ""."""
    tokens = _tokens(text)
    if any(form in _KNEE_WORDS for t in tokens for form in _without_laterality(t)):
        return KNEE
    for t in tokens:
        if t in _WORD_TO_PART:
            return _WORD_TO_PART[t]
    return ""


def _normalised_body_part(value: str) -> str:
    """BodyPartExamined normalised: "KNEE" for knee synonyms, else the value without blanks/underscores."""
    tokens = _tokens(value)
    if any(form in _KNEE_WORDS for t in tokens for form in _without_laterality(t)):
        return KNEE
    return "".join(tokens)


def body_part_of(volume: SeriesVolume) -> tuple[str, str]:
    """The body part a volume shows, and where that came from.

    BodyPartExamined wins unless it is missing or generic (EXTREMITY, LOWERLIMB, LEG, JOINT); then a
    body part named in SeriesDescription, else ProtocolName, is used; a generic BodyPartExamined is
    the last resort.

    Args:
        volume: a discovered volume.

    Returns:
        ``(body_part, source)``: the normalised body part ("KNEE" for every knee synonym, e.g. LKNEE,
        PATELLA, "Sag PD Knie", "genou"; "BRAIN", "SPINE", ... for others) and "BodyPartExamined",
        "SeriesDescription", "ProtocolName", or ``("", "")`` when nothing names a body part.
    """
    examined = _normalised_body_part(volume.body_part)
    if examined and examined not in _GENERIC_PARTS:
        return examined, "BodyPartExamined"
    for text, source in ((volume.series_description, "SeriesDescription"), (volume.protocol_name, "ProtocolName")):
        part = _part_of_text(text)
        if part:
            return part, source
    return (examined, "BodyPartExamined") if examined else ("", "")


def _source_text(volume: SeriesVolume, source: str) -> str:
    """``source`` as written in messages, with the description quoted: "SeriesDescription 'Sag PD knee'"."""
    texts = {"SeriesDescription": volume.series_description, "ProtocolName": volume.protocol_name}
    return f"{source} {texts[source]!r}" if source in texts else source


def body_part_decision(volume: SeriesVolume, expected: str = KNEE, any_body_part: bool = False) -> tuple[bool, str]:
    """Whether to segment a volume given its body part, and the note or reason to record.

    Args:
        volume: a discovered volume.
        expected: the body part the model segments.
        any_body_part: accept any body part (the note still names it).

    Returns:
        ``(accept, text)``: ``(True, "")`` when BodyPartExamined names ``expected``; ``(True, note)``
        when the body part is assumed or taken from a description, or accepted by ``any_body_part``;
        ``(False, reason)`` for another body part, e.g. "body part BRAIN (BodyPartExamined); the model
        segments KNEE images (pass --any-body-part to segment it anyway)".
    """
    expected = expected.upper()
    part, source = body_part_of(volume)
    examined = f"BodyPartExamined {volume.body_part}" if volume.body_part else "BodyPartExamined missing"
    if not part:
        return True, f"BodyPartExamined missing; assumed {expected.lower()}"
    if part == expected:
        if source == "BodyPartExamined":
            return True, ""
        return True, f"{examined}; {expected.lower()} according to {_source_text(volume, source)}"
    if part in _GENERIC_PARTS:
        return True, f"BodyPartExamined {part} is not specific; assumed {expected.lower()}"
    where = _source_text(volume, source)
    if any_body_part:
        return True, f"body part {part} ({where}), not {expected}: segmented anyway (--any-body-part)"
    return False, (
        f"body part {part} ({where}); the model segments {expected} images "
        "(pass --any-body-part to segment it anyway)"
    )


def is_mosaic(volume: SeriesVolume) -> bool:
    """Whether a volume is made of Siemens MOSAIC images (several slices tiled in one 2D image).

    True when ImageType contains MOSAIC or NumberOfImagesInMosaic (0019,xx0A) is above 1 on a slice.
    """
    return volume.is_mosaic


def _diffusion_evidence(volumes: Sequence[SeriesVolume]) -> str:
    """The ImageType value or description that names diffusion ("" if none), e.g. "ImageType ADC"."""
    for vol in volumes:
        for value in vol.image_type:
            if any(t in _DIFFUSION_IMAGE_TYPES for t in _tokens(value)):
                return f"ImageType {value}"
    for vol in volumes:
        for text, source in ((vol.series_description, "SeriesDescription"), (vol.protocol_name, "ProtocolName")):
            if any(t in _DIFFUSION_NAMES or _DIFFUSION_NAME_RE.match(t) for t in _tokens(text)):
                return f"{source} {text!r}"
    return ""


def diffusion_summary(volumes: Sequence[SeriesVolume]) -> str | None:
    """Describe a diffusion series, or return None when the volumes are not diffusion images.

    A series is diffusion when its slices carry more than one distinct b-value, or a b-value above 0
    in a series of several volumes; or when ImageType holds DIFFUSION/TRACEW/ADC/EADC/FA/COLFA/TENSOR;
    or SeriesDescription/ProtocolName holds the word DWI, DTI, DIFF, DIFFUSION, TRACEW, ADC, EADC,
    DWIBS, IVIM or MDDW (or DWI/DTI followed by digits).

    Args:
        volumes: all volumes of one series (one SeriesInstanceUID).

    Returns:
        e.g. "diffusion-weighted series: 7 volumes, b = 0, 1000 s/mm^2, 6 gradient directions", with
        the ImageType value or description appended when b-values alone do not show it; or None.
    """
    if not volumes:
        return None
    b_values = sorted({b for v in volumes for b in v.b_values})
    by_b_value = len(b_values) > 1 or (len(volumes) > 1 and any(b > 0 for b in b_values))
    evidence = "" if by_b_value else _diffusion_evidence(volumes)
    if not by_b_value and not evidence:
        return None
    directions = {
        tuple(round(c, 4) for c in v.diffusion_direction)
        for v in volumes
        if v.diffusion_direction is not None and any(abs(c) > 1e-6 for c in v.diffusion_direction)
    }
    parts = [f"{len(volumes)} volume{'s' if len(volumes) != 1 else ''}"]
    if b_values:
        parts.append("b = " + ", ".join(f"{b:g}" for b in b_values) + " s/mm^2")
    if len(directions) > 1:
        parts.append(f"{len(directions)} gradient directions")
    if evidence:
        parts.append(evidence)
    return "diffusion-weighted series: " + ", ".join(parts)


def _mosaic_reason(volumes: Sequence[SeriesVolume]) -> str:
    counts = [v.mosaic_images for v in volumes if v.mosaic_images]
    files = len({f for v in volumes for f in v.files})
    if counts and files == 1:
        what = f"Siemens MOSAIC image ({max(counts)} images tiled in one file)"
    elif counts:
        what = f"Siemens MOSAIC images ({files} files, {max(counts)} images tiled in each)"
    else:
        plural = "s" if files > 1 else ""
        what = f"Siemens MOSAIC image{plural} (ImageType MOSAIC, {files} file{plural})"
    return f"{what}: not supported, the tiles are not unpacked"


def series_skip_reason(volumes: Sequence[SeriesVolume]) -> str | None:
    """Why a whole series is not segmented (MOSAIC, diffusion), or None.

    Args:
        volumes: all volumes of one series (one SeriesInstanceUID), so that the caller writes one row.

    Returns:
        "Siemens MOSAIC image (N images tiled in one file): not supported, the tiles are not unpacked"
        (also "Siemens MOSAIC images (F files, N images tiled in each): ..."), or
        ":func:`diffusion_summary`: diffusion-weighted series are not segmented", or None.
    """
    if any(is_mosaic(v) for v in volumes):
        return _mosaic_reason(volumes)
    summary = diffusion_summary(volumes)
    if summary is not None:
        return f"{summary}: diffusion-weighted series are not segmented"
    return None
