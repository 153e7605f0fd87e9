"""A trained model's files: its checkpoints (a file, a model folder, a fold ensemble's folders),
loading their weights with one-line errors, and its contract (network, width, input size, classes, orientation,
preprocessing) recorded beside its weights, read back at inference, and what differs when a
checkpoint does not fit.

Training writes the contract into ``model.json`` beside ``model.pt``
(:class:`kneeseg.handlers.BestCheckpointSaver`, from ``train.json``'s ``model_contract``);
:func:`read_contract` finds it for a checkpoint file or a model folder, and
:func:`contract_overrides` turns it into the bundle overrides that rebuild exactly that model, so
``kneeseg infer --ckpt models/`` needs no ``--preset``. For a bare state dict without a record,
:func:`describe_mismatch` says what differs between the weights and the network asked for
(``width 8 in the model, 16 asked``; ``network unet, bundle csam_unet``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kneeseg.files import PathLike
from kneeseg.networks.registry import build_network, list_networks

__all__ = [
    "CONTRACT_KEYS",
    "WEIGHT_KEYS",
    "checkpoint_paths",
    "class_names_of",
    "contract_overrides",
    "describe_mismatch",
    "fold_checkpoints",
    "load_model_weights",
    "load_weights",
    "read_contract",
]

#: the bundle config keys a model's contract records (``train.json``'s ``model_contract``)
CONTRACT_KEYS = ("network_name", "width", "spatial_size", "num_classes", "class_names", "slice_orientation",
                 "preprocessing_options")  # fmt: skip


def class_names_of(names: Sequence[str] | Mapping[Any, str] | None, num_classes: int) -> dict[int, str]:
    """``{class id: name}`` for ``0..num_classes-1`` from the ``class_names`` setting (a list, or a
    mapping as ``metadata.json``'s ``channel_def``); without names, ``background`` and ``class_<id>``.

    Raises:
        ValueError: as many names as classes are needed.
    """
    if names is None:
        return {c: "background" if c == 0 else f"class_{c}" for c in range(num_classes)}
    items = {int(k): str(v) for k, v in names.items()} if isinstance(names, Mapping) else dict(enumerate(map(str, names)))
    if sorted(items) != list(range(num_classes)):
        raise ValueError(f"class_names {list(items.values())} name {len(items)} class(es); num_classes is {num_classes}")
    return dict(sorted(items.items()))


def fold_checkpoints(ckpt_dir: PathLike) -> list[str]:
    """``ckpt_dir/fold*/model.pt`` in fold order (``fold2`` before ``fold10``); empty without folds."""
    found = [p for p in Path(ckpt_dir).glob("fold*/model.pt") if re.fullmatch(r"fold\d+", p.parent.name)]
    return [str(p) for p in sorted(found, key=lambda p: int(p.parent.name[4:]))]


def load_weights(
    network: nn.Module, path: PathLike, *, what: str = "the network", hint: str = "", network_name: str | None = None,
    width: int | None = None,
) -> nn.Module:
    """Load a checkpoint -- a state dict, or ``{"model": state_dict, ...}`` as the bundle saves it --
    into ``network`` (CPU tensors, ``weights_only``).

    Raises:
        ValueError: one line naming the file: unreadable (truncated, corrupt, not a PyTorch file),
            not a model checkpoint, or not fitting ``what`` -- then with what differs
            (:func:`describe_mismatch`, given the ``network_name`` and
            ``width`` asked for) and ``hint``.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated or corrupt file, a pickle that is not plain tensors
        text = str(exc)
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        if any(s in text for s in ("Weights only load failed", "weights_only", "Unsupported global", "WeightsUnpickler")):
            reason = "it holds objects other than tensors (not a state dict saved by kneeseg or MONAI)"
        else:
            reason = f"cannot be read as a PyTorch checkpoint ({first[:160]})"
        raise ValueError(f"{path}: {reason}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        state = obj["model"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        raise ValueError(f"{path}: not a model checkpoint (expected a state dict or {{'model': state_dict}})")
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        differs = describe_mismatch(state, network, network_name, width)
        detail = differs or " ".join(str(exc).split())[:200]
        raise ValueError(f"{path}: checkpoint does not match {what}: {detail}{hint}") from None
    return network


def load_model_weights(
    network: nn.Module, path: PathLike, *, network_name: str | None = None, width: int | None = None
) -> nn.Module:
    """:func:`load_weights` for a model's checkpoint: a mismatch names the network asked for, and for
    a checkpoint without a ``model.json`` beside it, says which settings to pass."""
    path = Path(path)
    hint = "" if read_contract(path) is not None else (
        f" (no model.json beside {path.name} says how it was trained: pass its settings, e.g. --set width=8)")
    what = f"the bundle network {network_name!r} (width {width})" if network_name else "the network"
    return load_weights(network, path, what=what, hint=hint, network_name=network_name, width=width)


def checkpoint_paths(ckpt: PathLike | Sequence[PathLike]) -> list[Path]:
    """The checkpoint file(s) of ``ckpt``: a file; a model folder (its ``fold*/model.pt`` as a fold
    ensemble when it has them, else its ``model.pt``); or a list of files.

    Raises:
        FileNotFoundError: a path that does not exist, or a folder without a model.
    """
    items = [ckpt] if isinstance(ckpt, (str, Path)) else list(ckpt)
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            folds = fold_checkpoints(path)
            if folds:
                out += [Path(p) for p in folds]
            elif (path / "model.pt").is_file():
                out.append(path / "model.pt")
            else:
                raise FileNotFoundError(f"{path}: no model.pt (and no fold*/model.pt) in this folder; train the bundle first")
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"checkpoint not found: {path} (train the bundle first, or pass --ckpt)")
    if not out:
        raise FileNotFoundError("no checkpoint given")
    return out


def read_contract(ckpt: PathLike) -> dict[str, Any] | None:
    """The contract recorded for checkpoint ``ckpt`` (``model.json`` beside it: its ``"model"``
    entry), or ``None`` when there is none (a bare state dict from elsewhere)."""
    record = Path(ckpt).with_suffix(".json")
    if not record.is_file():
        return None
    try:
        info = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{record}: unreadable model record ({exc})") from exc
    contract = info.get("model") if isinstance(info, Mapping) else None
    return dict(contract) if isinstance(contract, Mapping) else None


#: contract keys the weights' shapes follow: an override cannot change them
WEIGHT_KEYS = ("network_name", "width", "num_classes")


def contract_overrides(contract: Mapping[str, Any] | None, explicit: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Bundle overrides that rebuild the recorded model, with ``explicit`` overrides on top.

    An explicit override of a key the weights follow (:data:`WEIGHT_KEYS`: network, width, number of
    classes) that contradicts the record is an error, since the weights cannot follow it. The other
    recorded keys (input size, slice orientation, preprocessing, class names) may be overridden --
    a fully convolutional network runs on another grid -- with a warning that the model was not
    trained so.

    Raises:
        ValueError: naming the key, the model's value and the one asked for.
    """
    out = {k: v for k, v in (contract or {}).items() if k in CONTRACT_KEYS}
    for key, value in (explicit or {}).items():
        if key in out and _norm(out[key]) != _norm(value):
            if key in WEIGHT_KEYS:
                raise ValueError(f"the model was trained with {key} {out[key]!r}; {key}={value!r} contradicts it "
                                 "(drop the override, or use a model trained with it)")  # fmt: skip
            logging.getLogger(__name__).warning(
                "the model was trained with %s %r; running with %s=%r as asked", key, out[key], key, value)
        out[key] = value
    return out


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _state_of(path: PathLike) -> Mapping[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        return obj["model"]
    return obj


def _first_conv(state: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    return next((v for v in state.values() if isinstance(v, torch.Tensor) and v.dim() >= 4 and v.shape[1] == 1), None)


def describe_mismatch(state: Mapping[str, torch.Tensor], network: torch.nn.Module, network_name: str | None = None,
                      width: int | None = None) -> str:  # fmt: skip
    """What differs between a state dict and the network it was loaded into, in a few words.

    Checks, in order: the network family (the registered network whose parameter names the state
    has), the width (the first convolution's output channels), the classes (the last layer's
    outputs). Returns ``""`` when none of them explains it.
    """
    parts = []
    keys = set(state)
    own = set(network.state_dict())
    first = _first_conv(state)
    model_width = int(first.shape[0]) if first is not None else None
    if keys != own and network_name:
        for name in list_networks():
            try:
                probe = build_network(name, spatial_dims=2, in_channels=1, out_channels=2, width=model_width or 8)
            except Exception:  # a builder that does not take these arguments
                continue
            if set(probe.state_dict()) == keys:
                if name != network_name:
                    parts.append(f"network {name} in the model, {network_name} asked")
                break
    own_first = _first_conv(network.state_dict())
    if model_width is not None and own_first is not None and int(own_first.shape[0]) != model_width:
        parts.append(f"width {model_width} in the model, {width or int(own_first.shape[0])} asked")
    heads = [v for v in state.values() if isinstance(v, torch.Tensor) and v.dim() == 1]
    own_heads = [v for v in network.state_dict().values() if isinstance(v, torch.Tensor) and v.dim() == 1]
    if heads and own_heads and heads[-1].shape != own_heads[-1].shape and not parts:
        parts.append(f"{heads[-1].shape[0]} output classes in the model, {own_heads[-1].shape[0]} asked")
    return "; ".join(parts)
