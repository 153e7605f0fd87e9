"""The inference definition: what a bundle's ``inference.json`` says, and the trained weights.

:func:`bundle_settings` reads every setting the fast path needs from the bundle (the same keys
the bundle's MONAI chain is built from); :func:`load_networks` puts trained weights into the
bundle's network, one copy per checkpoint of a fold ensemble, and identifies them
(:func:`file_digest`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kneeseg.files import PathLike, file_sha256
from kneeseg.networks.checkpoints import checkpoint_paths, class_names_of, load_model_weights
from kneeseg.workflows import default_bundle_dir, workflow_config_files
from kneeseg.data.orientation import SliceOrientation

__all__ = ["bundle_settings", "file_digest", "load_networks"]


def file_digest(path: PathLike, length: int = 16) -> str:
    """Short SHA-256 of a file's bytes (identifies a checkpoint in records and caches)."""
    return file_sha256(path, length)


def bundle_settings(
    bundle: PathLike | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read what inference needs from a bundle's ``inference.json`` (+ preset, + overrides).

    This is the one definition the fast path reads: the same keys the bundle's MONAI chain is
    built from. Returns a dict: ``bundle`` (folder), ``network`` (instantiated, untrained),
    ``network_name``, ``spatial_size``, ``num_classes``, ``class_names`` (``{id: name}`` from the
    ``class_names`` setting, as training and evaluation name them; a model's ``model.json`` sets
    it through ``overrides``), ``slice_orientation``, ``slice_plane`` (its
    plane), ``slice_batch_size``, ``preprocessing`` (all options, defaults filled in),
    ``largest_component``, ``body_part``, ``qc`` (the quality checks), ``ckpt_path`` (a
    checkpoint file or a model folder), ``version`` and ``name``.

    Raises:
        ValueError: a config value that is not valid (e.g. an unknown preprocessing option).
    """
    import json

    from monai.bundle import ConfigParser

    from kneeseg.transforms.preprocessing import preprocessing_options

    root = Path(bundle) if bundle is not None else default_bundle_dir()
    files = workflow_config_files("infer", root, preset)
    parser = ConfigParser()
    parser.read_config(files)
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    parser.read_meta(meta)
    parser["bundle_root"] = str(root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    num_classes = int(parser.get_parsed_content("num_classes"))
    class_names = class_names_of(parser.get_parsed_content("class_names") if "class_names" in parser else None, num_classes)
    orientation = SliceOrientation.parse(parser.get_parsed_content("slice_orientation"))

    def opt(key: str, default: Any) -> Any:
        return parser.get_parsed_content(key) if key in parser else default

    return {
        "bundle": root,
        "network": parser.get_parsed_content("network_def", instantiate=True),
        "network_name": parser.get_parsed_content("network_name"),
        "width": int(parser.get_parsed_content("width")) if "width" in parser else None,
        "spatial_size": int(parser.get_parsed_content("spatial_size")),
        "num_classes": num_classes,
        "class_names": class_names,
        "slice_orientation": orientation,
        "slice_plane": orientation.plane,
        "slice_batch_size": int(parser.get_parsed_content("slice_batch_size")),
        "preprocessing": preprocessing_options(opt("preprocessing_options", None)),
        "largest_component": bool(opt("largest_component", False)),
        "body_part": str(opt("body_part", "") or ""),
        "qc": dict(opt("qc", None) or {}),
        "ckpt_path": str(parser.get_parsed_content("ckpt_path")),
        "version": str(meta.get("version", "")),
        "name": str(meta.get("name", root.name)),
    }


def load_networks(
    settings: dict[str, Any], ckpt: PathLike | Sequence[PathLike] | None = None
) -> list[torch.nn.Module]:
    """The network of ``settings`` (:func:`bundle_settings`) with trained weights, one per checkpoint.

    Args:
        settings: as :func:`bundle_settings` returns them; ``ckpt_path``, ``ckpt_digest`` (the
            checkpoint's :func:`file_digest`; for a fold ensemble a digest of the members'
            digests, in order) and ``ensemble`` (the number of members) are set in it.
        ckpt: checkpoint (a state dict or ``{"model": state_dict}``) or model folder; default the
            bundle's ``ckpt_path`` (``models``: the fold ensemble ``models/fold*/model.pt`` when
            there is one, else ``models/model.pt``, the rule of
            :func:`kneeseg.networks.checkpoints.checkpoint_paths` that ``inference.json`` follows too). A list of checkpoints makes
            a fold ensemble: the first loads into ``settings["network"]``, the others into copies.

    Raises:
        FileNotFoundError: missing checkpoint. ValueError: checkpoint does not fit the network.
    """
    import copy

    if isinstance(ckpt, (list, tuple)) and not ckpt:
        raise ValueError("no checkpoint given")
    # the bundle's rule (kneeseg.networks.trained_network): a folder's fold ensemble wins over its model.pt
    paths = checkpoint_paths(settings["ckpt_path"] if ckpt is None else ckpt)
    nets = []
    for i, path in enumerate(paths):
        net = settings["network"] if i == 0 else copy.deepcopy(settings["network"])
        nets.append(load_model_weights(net, path, network_name=settings["network_name"], width=settings.get("width")))
    digests = [file_digest(p) for p in paths]
    # one member: the checkpoint's digest; an ensemble: a digest of the members' digests (in order)
    digest = digests[0] if len(paths) == 1 else hashlib.sha256("|".join(digests).encode()).hexdigest()[:16]
    settings.update(ckpt_path=str(paths[0]) if len(paths) == 1 else [str(p) for p in paths], ckpt_digest=digest,
                    ensemble=len(paths))  # fmt: skip
    return nets
