"""Dataset manifests: MSD-style datalists with seeded, patient-grouped splits.

A manifest is the JSON file that :py:func:`monai.data.load_decathlon_datalist` reads::

    {"name": ..., "description": ..., "labels": {"0": "background", ...},
     "split": {"seed": 0, "ratios": [8, 1, 1], ...},
     "training":   [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz", "patient": "a"}, ...],
     "validation": [...],
     "test":       [...]}

Every path is stored **relative to the dataset root**, so a manifest can be committed and
shared without the data: load it with ``load_decathlon_datalist(file, data_list_key="training",
base_dir=ROOT)``. A part that receives no entries is left out (MONAI's loader cannot read an
empty ``test`` list).

Files are found with globs relative to the root (``*`` and ``?`` stay within one folder,
``**`` spans folders). An image and its mask are paired when the parts of their paths matched
by the wildcards are equal: ``cases/*/img.png`` pairs with ``cases/*/mask.png`` by case folder,
``imagesTr/*.nii.gz`` with ``labelsTr/*.nii.gz`` by file name.

Images are grouped by patient and the patients split into parts, seeded, by
:mod:`kneeseg.data.splits` (each patient's images stay together in one part).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.atomic import atomic_write_text
from kneeseg.data.splits import (
    DEFAULT_RATIOS,
    ManifestError,
    PatientKey,
    check_seed,
    assign_folds,
    assign_groups,
    natural_key,
    patient_ids,
    validate_ratios,
)
from kneeseg.files import PathLike
from kneeseg.data.orientation import SliceOrientation

__all__ = [
    "DEFAULT_IMAGE_GLOB",
    "DEFAULT_MASK_GLOB",
    "DEFAULT_SPLIT_KEYS",
    "ManifestError",
    "build_manifest",
    "find_image_mask_pairs",
    "write_manifest",
]

DEFAULT_SPLIT_KEYS: tuple[str, str, str] = ("training", "validation", "test")
"""MSD / MONAI datalist keys for the three parts."""
DEFAULT_IMAGE_GLOB = "imagesTr/*.nii.gz"
DEFAULT_MASK_GLOB = "labelsTr/*.nii.gz"

_TWO_D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


# ----------------------------------------------------------------------------- finding files


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a root-relative glob to a regex with one capture group per wildcard."""
    if not pattern or pattern.startswith("/"):
        raise ManifestError(f"glob must be relative to the dataset root and non-empty, got {pattern!r}")
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:(.*)/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append("(.*)")
            i += 2
        elif c == "*":
            out.append("([^/]*)")
            i += 1
        elif c == "?":
            out.append("([^/])")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise ManifestError(f"unclosed '[' in glob {pattern!r}")
            body = pattern[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append(f"([{body}])")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _walk(root: Path) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        files.extend((rel / f).as_posix() for f in filenames if not f.startswith("."))
    return sorted(files, key=natural_key)


def _match(files: Sequence[str], pattern: str) -> dict[tuple[str, ...], str]:
    regex = _glob_regex(pattern)
    found: dict[tuple[str, ...], str] = {}
    for f in files:
        m = regex.match(f)
        if m:
            key = tuple(g or "" for g in m.groups())
            if key in found:
                raise ManifestError(f"glob {pattern!r} matches both {found[key]} and {f} with the same wildcard parts")
            found[key] = f
    return found


def _check_root(root: PathLike) -> Path:
    path = Path(root)
    if not path.exists():
        raise ManifestError(f"dataset root {path} does not exist")
    if not path.is_dir():
        raise ManifestError(f"dataset root {path} is not a directory")
    return path


def find_image_mask_pairs(
    root: PathLike, image_glob: str = DEFAULT_IMAGE_GLOB, mask_glob: str | None = DEFAULT_MASK_GLOB
) -> list[dict[str, str]]:
    """Find images (and their masks) under ``root``.

    Args:
        root: dataset root folder.
        image_glob: root-relative glob of the image files.
        mask_glob: root-relative glob of the mask files, or None / "" for an image-only list.
            Must have the same wildcards as ``image_glob``: an image and a mask pair up when
            the text matched by the wildcards is equal.

    Returns:
        ``[{"image": rel_path, "label": rel_path}, ...]`` in natural path order, paths relative
        to ``root`` with ``/`` separators.

    Raises:
        ManifestError: missing/empty root, no image matched, an image without mask or a mask
            without image (naming up to three of them).
    """
    root = _check_root(root)
    files = _walk(root)
    if not files:
        raise ManifestError(f"dataset root {root} contains no files")
    masks = _match(files, mask_glob) if mask_glob else {}
    mask_files = set(masks.values())
    images = {k: f for k, f in _match(files, image_glob).items() if f not in mask_files}
    if not images:
        raise ManifestError(f"no files under {root} match image glob {image_glob!r}")
    if not mask_glob:
        return [{"image": images[k]} for k in sorted(images, key=lambda k: natural_key(images[k]))]
    if masks and len(next(iter(masks))) != len(next(iter(images))):
        raise ManifestError(
            f"image glob {image_glob!r} and mask glob {mask_glob!r} must use the same wildcards to pair files"
        )
    lonely = sorted((images[k] for k in images if k not in masks), key=natural_key)
    if lonely:
        raise ManifestError(
            f"{len(lonely)} image(s) under {root} have no mask matching {mask_glob!r}, e.g. {', '.join(lonely[:3])}"
        )
    orphans = sorted((masks[k] for k in masks if k not in images), key=natural_key)
    if orphans:
        raise ManifestError(
            f"{len(orphans)} mask(s) under {root} have no image matching {image_glob!r}, e.g. {', '.join(orphans[:3])}"
        )
    keys = sorted(images, key=lambda k: natural_key(images[k]))
    return [{"image": images[k], "label": masks[k]} for k in keys]


def _read_id_list(root: Path, path: PathLike) -> list[str]:
    file = Path(path)
    file = file if file.is_absolute() else root / file
    if not file.is_file():
        raise ManifestError(f"id list {file} does not exist")
    ids = []
    for line in file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line)
    if not ids:
        raise ManifestError(f"id list {file} is empty")
    return ids


# ----------------------------------------------------------------------------- manifest


def build_manifest(
    root: PathLike,
    *,
    image_glob: str = DEFAULT_IMAGE_GLOB,
    mask_glob: str | None = DEFAULT_MASK_GLOB,
    patient_key: PatientKey = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    split_keys: Sequence[str] = DEFAULT_SPLIT_KEYS,
    id_lists: Mapping[str, PathLike] | None = None,
    name: str | None = None,
    description: str | None = None,
    reference: str | None = None,
    labels: Mapping[int, str] | None = None,
    image_orientation: Any = None,
    hold_out: Mapping[str, int] | None = None,
    folds: int = 0,
) -> dict[str, Any]:
    """Build an MSD-style datalist for the images under ``root``.

    Args:
        root: dataset root; all stored paths are relative to it (load with ``base_dir=root``).
        image_glob, mask_glob: see :py:func:`find_image_mask_pairs`.
        patient_key: groups images by patient, see :py:func:`patient_ids`; None = one image
            per patient.
        ratios: one ratio per entry of ``split_keys`` (default 8:1:1).
        seed: seed of the random split (see :py:func:`assign_groups`).
        split_keys: datalist keys of the random split's parts.
        id_lists: optional predefined splits, datalist key -> file of patient ids (one per
            line, relative to ``root`` unless absolute), e.g. a dataset's official split.
            They are stored in addition to the random split; needs ``patient_key``.
        name, description, reference: MSD metadata strings.
        labels: class id -> name, stored as the MSD ``labels`` dict.
        image_orientation: for 2D images (which carry no geometry), the anatomical directions of
            their columns and rows, e.g. ``{"right": "inferior", "down": "posterior"}`` (see
            :class:`kneeseg.data.orientation.SliceOrientation`); stored as ``image_orientation``.
        hold_out: ``{key: n}``: split part ``key`` (an id list or a split part) once more, seeded,
            into ``<key>_fit`` and ``<key>_holdout`` (``n`` patients), e.g. to pick checkpoints
            on cases that are neither trained on nor tested on.
        folds: ``K >= 2``: also a patient-grouped, seeded ``K``-fold partition of all cases
            (:func:`kneeseg.data.splits.assign_folds`, same seed): parts ``fold_0`` ..
            ``fold_<K-1>`` and a ``folds`` record (``kneeseg bench table1 --cv K`` uses them).

    Returns:
        The manifest dict (metadata, ``split`` record, then the parts; empty parts omitted).

    Raises:
        ManifestError: bad root, globs, ratios, seed, patient key or id lists.
    """
    root = _check_root(root)
    keys = [str(k) for k in split_keys]
    values = validate_ratios(ratios, n_parts=len(keys))
    seed = check_seed(seed)
    if len(set(keys)) != len(keys):
        raise ManifestError(f"split keys must be distinct, got {keys}")
    entries = find_image_mask_pairs(root, image_glob, mask_glob)
    ids = patient_ids(root, [e["image"] for e in entries], patient_key)
    if patient_key:
        for e, pid in zip(entries, ids):
            e["patient"] = pid
    sizes: dict[str, int] = {}
    for pid in ids:
        sizes[pid] = sizes.get(pid, 0) + 1
    parts = assign_groups(sizes, values, seed)

    manifest: dict[str, Any] = {}
    if name:
        manifest["name"] = name
    if description:
        manifest["description"] = description
    if reference:
        manifest["reference"] = reference
    suffix = entries[0]["image"].lower()
    manifest["tensorImageSize"] = "2D" if suffix.endswith(_TWO_D_SUFFIXES) else "3D"
    if labels:
        manifest["labels"] = {str(int(k)): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))}
    if image_orientation is not None:
        try:
            manifest["image_orientation"] = SliceOrientation.parse(image_orientation).to_config()
        except ValueError as exc:
            raise ManifestError(f"image orientation: {exc}") from exc
    fixed: dict[str, list[dict[str, str]]] = {}
    if id_lists:
        if not patient_key:
            raise ManifestError("id lists need a patient key to map image paths to ids")
        clash = set(id_lists) & set(keys)
        if clash:
            raise ManifestError(f"id-list keys {sorted(clash)} clash with split keys {keys}")
        owner: dict[str, str] = {}
        for key, file in id_lists.items():
            wanted = _read_id_list(root, file)
            missing = [i for i in wanted if i not in sizes]
            if missing:
                raise ManifestError(f"id list {file}: {len(missing)} id(s) not found under {root}: {missing[:5]}")
            for i in wanted:
                if i in owner and owner[i] != key:
                    raise ManifestError(f"id {i!r} is in both id lists {owner[i]!r} and {key!r}")
                owner[i] = key
            chosen = set(wanted)
            fixed[key] = [e for e, pid in zip(entries, ids) if pid in chosen]
    random_parts = {k: [e for e, pid in zip(entries, ids) if parts[pid] == i] for i, k in enumerate(keys)}
    counts = [len(random_parts[k]) for k in keys]
    manifest["split"] = {
        "method": "seeded random permutation of patients, filled towards the ratios (kneeseg.data.manifest)",
        "seed": seed,
        "ratios": [int(v) if float(v).is_integer() else v for v in values],
        "keys": keys,
        "counts": counts,
        "patients": [len({pid for pid in ids if parts[pid] == i}) for i in range(len(keys))],
        "grouped_by": patient_key if isinstance(patient_key, str) and patient_key else "image",
        "image_glob": image_glob,
        "mask_glob": mask_glob or None,
    }
    if id_lists:
        manifest["split"]["id_lists"] = {k: Path(v).as_posix() for k, v in id_lists.items()}
    if "training" in fixed or "training" in random_parts:
        manifest["numTraining"] = len(fixed.get("training", random_parts.get("training", [])))
    manifest.update(fixed)
    manifest.update({k: v for k, v in random_parts.items() if v})
    for key, n in (hold_out or {}).items():
        if key not in manifest or not isinstance(manifest[key], list):
            raise ManifestError(f"hold-out: no part {key!r} to split (parts: {[k for k in manifest if isinstance(manifest[k], list)]})")
        part = manifest[key]
        pids = list(dict.fromkeys(e.get("patient", e["image"]) for e in part))
        if not 0 < int(n) < len(pids):
            raise ManifestError(f"hold-out: {key!r} has {len(pids)} patients; cannot hold out {n}")
        rng = np.random.default_rng(seed)
        held = set(pids[i] for i in rng.permutation(len(pids))[: int(n)])
        manifest[f"{key}_fit"] = [e for e in part if e.get("patient", e["image"]) not in held]
        manifest[f"{key}_holdout"] = [e for e in part if e.get("patient", e["image"]) in held]
        manifest["split"].setdefault("hold_out", {})[key] = {
            "keys": [f"{key}_fit", f"{key}_holdout"], "patients": [len(pids) - int(n), int(n)], "seed": seed,
        }  # fmt: skip
    if folds:
        fold_of = assign_folds(sizes, folds, seed)
        keys_f = [f"fold_{f}" for f in range(int(folds))]
        manifest["folds"] = {
            "method": "patient-grouped seeded k-fold partition of all cases (kneeseg.data.splits.assign_folds)",
            "k": int(folds), "seed": seed, "keys": keys_f,
            "counts": [sum(1 for pid in ids if fold_of[pid] == f) for f in range(int(folds))],
            "patients": [sum(1 for pid in sizes if fold_of[pid] == f) for f in range(int(folds))],
        }  # fmt: skip
        for f, key in enumerate(keys_f):
            manifest[key] = [e for e, pid in zip(entries, ids) if fold_of[pid] == f]
    return manifest


def write_manifest(manifest: Mapping[str, Any], out: PathLike) -> Path:
    """Write ``manifest`` as JSON, atomically; return the path.

    Metadata is indented; each datalist entry takes one line, so diffs of a committed
    manifest show moved cases line by line.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, value in manifest.items():
        name = json.dumps(key, ensure_ascii=False)
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join("    " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f"  {name}: [\n{items}\n  ]")
        else:
            body = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            lines.append(f"  {name}: {body}")
    text = "{\n" + ",\n".join(lines) + "\n}\n"
    atomic_write_text(out, text)
    return out
