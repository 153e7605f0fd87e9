"""Patients and split parts: which patient each image belongs to, and which part each patient goes to.

:func:`patient_ids` groups images by patient (a regular expression on the path, a DICOM attribute
or a callable). :func:`assign_groups` splits the patients: a seeded random permutation of patients;
each patient's images stay together in one part, and parts are filled towards their share of
images (exact largest-remainder counts, :func:`split_counts`, when each patient has one image).
Every part with a non-zero ratio gets at least one patient when there are enough patients.
Other patient-grouped partitions of a dataset (e.g. cross-validation folds) belong here too;
:mod:`kneeseg.data.manifest` writes them into the datalist.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.files import PathLike

__all__ = [
    "DEFAULT_RATIOS",
    "ManifestError",
    "PatientKey",
    "assign_folds",
    "assign_groups",
    "natural_key",
    "patient_ids",
    "split_counts",
    "validate_ratios",
]

DEFAULT_RATIOS: tuple[float, float, float] = (8.0, 1.0, 1.0)
"""The paper's train / validation / test ratios."""

PatientKey = str | Callable[[Path], str] | None


class ManifestError(ValueError):
    """A manifest cannot be built from the given root, globs, ratios or id lists."""


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers numerically (``case2`` before ``case10``)."""
    return tuple((0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", text) if tok)


# ----------------------------------------------------------------------------- ratios, splits


def validate_ratios(ratios: Sequence[float], n_parts: int | None = None) -> tuple[float, ...]:
    """Check split ratios and return them as floats.

    Args:
        ratios: one non-negative number per part (e.g. ``(8, 1, 1)``); the first (training)
            must be positive. They need not sum to 1.
        n_parts: if given, the required number of ratios.

    Raises:
        ManifestError: wrong count, negative, non-finite, or a zero training ratio.
    """
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise ManifestError(f"ratios must be numbers, got {ratios!r}") from None
    if n_parts is not None and len(values) != n_parts:
        raise ManifestError(f"expected {n_parts} ratios (one per split part), got {len(values)}: {list(ratios)}")
    if len(values) < 2:
        raise ManifestError(f"need at least 2 ratios (train, validation[, test]), got {list(ratios)}")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ManifestError(f"ratios must be finite and non-negative, got {list(ratios)}")
    if values[0] <= 0:
        raise ManifestError(f"the training ratio (first) must be positive, got {list(ratios)}")
    return values


def split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``ratios`` with the largest-remainder method.

    Every part with a non-zero ratio receives at least one item when ``n`` is at least the
    number of such parts (taken from the largest part). Ties go to the earlier part.

    >>> split_counts(93, (8, 1, 1)), split_counts(3, (8, 1, 1)), split_counts(5, (8, 1, 1))
    ([75, 9, 9], [1, 1, 1], [3, 1, 1])
    """
    values = validate_ratios(ratios)
    if n < 0:
        raise ManifestError(f"cannot split a negative number of items ({n})")
    total = sum(values)
    exact = [n * v / total for v in values]
    counts = [int(math.floor(e)) for e in exact]
    order = sorted(range(len(values)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    _ensure_nonempty(counts, values, n)
    return counts


def _ensure_nonempty(counts: list[int], ratios: Sequence[float], n_groups: int) -> None:
    """Give each non-zero-ratio part one item from the largest part, when there are enough."""
    wanted = [i for i, r in enumerate(ratios) if r > 0]
    if n_groups < len(wanted):
        return
    for i in wanted:
        if counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
            counts[donor] -= 1
            counts[i] += 1


def assign_groups(
    groups: Mapping[str, int] | Sequence[str],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
) -> dict[str, int]:
    """Assign whole groups (patients) to split parts, seeded and deterministic.

    Args:
        groups: group ids, or a mapping group id -> number of items (images) in the group.
        ratios: one ratio per part (see :py:func:`validate_ratios`).
        seed: seed of the random permutation; the result depends only on the set of groups,
            their sizes, the ratios and the seed (not on input order).

    Returns:
        group id -> part index (0 = first part, usually training).

    Groups are visited in a seeded random order (largest first among unequal sizes) and each
    goes to the part furthest below its target share of items; with one item per group the
    part sizes equal :py:func:`split_counts`.
    """
    values = validate_ratios(ratios)
    sizes = dict(groups) if isinstance(groups, Mapping) else {str(g): 1 for g in groups}
    if any(int(s) < 1 for s in sizes.values()):
        raise ManifestError("every group must contain at least one item")
    names = sorted(sizes, key=natural_key)
    rng = np.random.default_rng(check_seed(seed))
    shuffled = [names[i] for i in rng.permutation(len(names))]
    shuffled.sort(key=lambda g: -sizes[g])  # stable: random order within equal sizes
    total = sum(sizes.values())
    exact = [total * v / sum(values) for v in values]
    targets = [int(math.floor(e)) for e in exact]
    for i in sorted(range(len(values)), key=lambda i: (-(exact[i] - targets[i]), i))[: total - sum(targets)]:
        targets[i] += 1
    filled = [0] * len(values)
    members: list[list[str]] = [[] for _ in values]
    for g in shuffled:
        part = max(range(len(values)), key=lambda i: (targets[i] - filled[i], -i))
        filled[part] += sizes[g]
        members[part].append(g)
    # every non-zero part gets a group (the smallest of the part holding the most groups)
    wanted = [i for i, r in enumerate(values) if r > 0]
    if len(names) >= len(wanted):
        for i in wanted:
            if not members[i]:
                donor = max(range(len(values)), key=lambda j: (len(members[j]), -j))
                moved = min(reversed(members[donor]), key=lambda g: sizes[g])
                members[donor].remove(moved)
                members[i].append(moved)
    return {g: part for part, gs in enumerate(members) for g in gs}


def assign_folds(groups: Mapping[str, int] | Sequence[str], k: int, seed: int = 0) -> dict[str, int]:
    """Patient-grouped, seeded ``k``-fold partition: group id -> fold (0 .. k-1).

    :func:`assign_groups` with ``k`` equal ratios: folds differ in size by at most one item when
    each group holds one item, and every fold gets a group when there are at least ``k`` groups.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ManifestError(f"cross-validation needs k >= 2 folds, got {k!r}")
    n = len(groups)
    if n < k:
        raise ManifestError(f"{n} groups cannot make {k} folds")
    return assign_groups(groups, [1.0] * int(k), seed)


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ManifestError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# ----------------------------------------------------------------------------- patients


def patient_ids(root: PathLike, paths: Sequence[str], patient_key: PatientKey) -> list[str]:
    """Patient (group) id of each root-relative path.

    Args:
        root: dataset root.
        paths: root-relative image paths.
        patient_key: a regular expression searched in the path (its first group, or the
            named group ``patient``, or else the whole match is the id); ``"dicom:<Keyword>"``
            to read that DICOM attribute (e.g. ``dicom:PatientID``) from each image file's
            header; a callable ``Path -> str``; or None (each image is its own patient).

    Raises:
        ManifestError: the regex does not compile or does not match a path, or a DICOM header
            cannot be read or lacks the attribute (naming the file).
    """
    root = Path(root)
    if patient_key is None or patient_key == "":
        return list(paths)
    if callable(patient_key):
        return [str(patient_key(root / p)) for p in paths]
    if patient_key.startswith("dicom:"):
        return [_dicom_field(root / p, patient_key[len("dicom:") :]) for p in paths]
    try:
        regex = re.compile(patient_key)
    except re.error as exc:
        raise ManifestError(f"patient key {patient_key!r} is not a valid regular expression: {exc}") from None
    ids = []
    for p in paths:
        m = regex.search(p)
        if not m:
            raise ManifestError(f"patient key {patient_key!r} does not match path {p}")
        if "patient" in regex.groupindex:
            value = m.group("patient")
        elif regex.groups:
            value = m.group(1)
        else:
            value = m.group(0)
        if not value:
            raise ManifestError(f"patient key {patient_key!r} matched an empty id in path {p}")
        ids.append(value)
    return ids


def _dicom_field(path: Path, keyword: str) -> str:
    import pydicom  # local import: only needed for DICOM patient keys
    from pydicom.datadict import tag_for_keyword

    if tag_for_keyword(keyword) is None:
        raise ManifestError(f"patient key 'dicom:{keyword}': {keyword!r} is not a DICOM keyword")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[keyword])
    except Exception as exc:  # pydicom raises several types for unreadable files
        raise ManifestError(f"cannot read DICOM header of {path}: {exc}") from None
    value = ds.get(keyword)
    if value is None or str(value) == "":
        raise ManifestError(f"{path} has no {keyword} (patient key 'dicom:{keyword}')")
    return str(value)
