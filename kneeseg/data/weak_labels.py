"""Weak labels: unlabelled volumes with the slice range that may hold a structure.

A 2D dataset of labelled slices (such as knee-acl, where every image shows an ACL) never
shows the network a slice *without* the structure, so slice-wise inference on a whole series
fires on every slice. A weak-label manifest fixes that cheaply: per unlabelled volume, a person
marks the slice range that *may* contain the structure; every other slice is certainly
background and becomes a negative training sample
(:class:`kneeseg.transforms.slicing.WeakSliceLabeld`).

Manifest (``data_manifests/knee_weak_labels.json``)::

    {"name": ..., "slice_index": "...", "range": "inclusive [first, last]",
     "volumes": [{"image": "dicom/knee-dess-sag", "echo": null, "slices": 80,
                  "possible": {"acl": [a, b]}, "notes": "..."}, ...]}

Paths are relative to a data root. Slice indices are 0-based along kneeseg's slice order
(ascending position along the normal ``row_dir x col_dir``, as :func:`discover_series` orders
a series): axis 2 of the loaded volume, before any reorientation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kneeseg.files import PathLike

__all__ = ["load_weak_datalist"]


def _volume_input(root: Path, entry: dict[str, Any], where: str) -> str | list[str]:
    """A folder (single-volume series) or the files of the chosen echo, for ``KneeDicomReader``."""
    from kneeseg.data.dicom.discovery import discover_series

    path = root / str(entry["image"])
    if not path.exists():
        raise FileNotFoundError(f"{where}: {path} not found")
    echo = entry.get("echo")
    if path.is_file() and echo is None:
        return str(path)
    result = discover_series(path)
    volumes = [v for v in result.volumes if echo is None or v.echo_index == int(echo)]
    if len(volumes) != 1:
        found = ", ".join(f"{v.volume_id} (echo {v.echo_index}, {v.num_slices} slices)" for v in result.volumes)
        raise ValueError(f"{where}: {path} echo={echo} selects {len(volumes)} volumes; found: {found or 'none'}")
    vol = volumes[0]
    if entry.get("slices") is not None and int(entry["slices"]) != vol.num_slices:
        raise ValueError(f"{where}: {path} has {vol.num_slices} slices, the manifest says {entry['slices']}")
    if len(result.volumes) == 1:
        return str(path)
    return vol.files


def load_weak_datalist(
    path: PathLike | None,
    root: PathLike | None = None,
    structure: str = "acl",
) -> list[dict[str, Any]]:
    """Training items of a weak-label manifest for one structure.

    Args:
        path: the manifest JSON (``None`` or ``""``: no weak items, returns ``[]``).
        root: folder the manifest's paths are relative to (default: the manifest's ``root_default``
            resolved from the manifest's folder, else the manifest's folder).
        structure: which ``possible`` entry to use (the bundle's foreground class name).

    Returns:
        Items ``{"image": folder or files, "possible_slices": [first, last], "weak": structure,
        "case": "<image> echo <n>"}`` for :func:`kneeseg.transforms.train_transforms` with
        ``weak_labels=True``.

    Raises:
        FileNotFoundError: the manifest or a volume is missing.
        ValueError: a volume without a range for ``structure``, a bad range, or an echo/slice
            count that does not match the data; the message names the manifest entry.
    """
    if not path:
        return []
    manifest_path = Path(path)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"weak-label manifest not found: {manifest_path}")
    doc = json.loads(manifest_path.read_text())
    if root is None:
        default = doc.get("root_default")
        root = (manifest_path.parent / default) if default else manifest_path.parent
    root = Path(root)
    items: list[dict[str, Any]] = []
    for i, entry in enumerate(doc.get("volumes", [])):
        where = f"{manifest_path} volume {i} ({entry.get('image')}, echo {entry.get('echo')})"
        possible = (entry.get("possible") or {}).get(structure)
        if possible is None:
            raise ValueError(f"{where}: no 'possible' slice range for {structure!r}")
        first, last = (int(v) for v in possible)
        if not 0 <= first <= last:
            raise ValueError(f"{where}: bad slice range {possible}")
        echo = entry.get("echo")
        items.append(
            {
                "image": _volume_input(root, entry, where),
                "possible_slices": [first, last],
                "weak": structure,
                "case": f"{entry['image']}" + ("" if echo is None else f" echo {echo}"),
            }
        )
    return items
