"""Fold ensembles: the members' softmax averaged before the argmax -- the one rule for every runtime.

:func:`mean_softmax` is the rule (``kneeseg infer`` applies it to its runners' outputs);
:class:`SoftmaxEnsemble` is the same rule as one network, for the bundle's ``inference.json``,
which takes ``models/fold*/model.pt`` (:func:`fold_checkpoints`) as an ensemble when present.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from kneeseg.files import PathLike

__all__ = ["SoftmaxEnsemble", "fold_checkpoints", "load_fold_ensemble", "load_weights", "mean_softmax"]


def mean_softmax(logits: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean over members of ``softmax(logits, dim=1)`` (summed in member order, then divided)."""
    total: torch.Tensor | None = None
    n = 0
    for member in logits:
        probs = torch.softmax(member, dim=1)
        total = probs if total is None else total.add_(probs)
        n += 1
    if total is None:
        raise ValueError("an ensemble needs at least one member")
    return total.div_(n) if n > 1 else total


class SoftmaxEnsemble(nn.Module):
    """A fold ensemble as one network: returns ``log(mean_softmax(members))``.

    Anything that applies a softmax (or an argmax) to a network's output then sees the averaged
    probabilities (``softmax(log p) = p`` for probabilities ``p``), so bundle post-processing,
    sliding-window inferers and every runtime (eager, bf16 autocast, an ONNX export of the whole
    module) work unchanged.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = mean_softmax(m(x).float() for m in self.members)
        return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))


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
            (:func:`kneeseg.networks.contract.describe_mismatch`, given the ``network_name`` and
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
        from kneeseg.networks.contract import describe_mismatch

        differs = describe_mismatch(state, network, network_name, width)
        detail = differs or " ".join(str(exc).split())[:200]
        raise ValueError(f"{path}: checkpoint does not match {what}: {detail}{hint}") from None
    return network


def load_fold_ensemble(network: nn.Module, checkpoints: Sequence[PathLike]) -> SoftmaxEnsemble:
    """Copies of ``network`` with each checkpoint's weights (:func:`load_weights`), as one ensemble."""
    return SoftmaxEnsemble([load_weights(copy.deepcopy(network), path).eval() for path in checkpoints])
