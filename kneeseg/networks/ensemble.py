"""Fold ensembles: the members' softmax averaged before the argmax -- the one rule for every runtime.

:func:`mean_softmax` is the rule (``kneeseg infer`` applies it to its runners' outputs);
:class:`SoftmaxEnsemble` is the same rule as one network, for the bundle's ``inference.json``,
which takes ``models/fold*/model.pt`` (:func:`kneeseg.networks.checkpoints.fold_checkpoints`) as an
ensemble when present.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from kneeseg.files import PathLike
from kneeseg.networks.checkpoints import load_weights

__all__ = ["SoftmaxEnsemble", "load_fold_ensemble", "mean_softmax"]


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


def load_fold_ensemble(network: nn.Module, checkpoints: Sequence[PathLike]) -> SoftmaxEnsemble:
    """Copies of ``network`` with each checkpoint's weights (:func:`load_weights`), as one ensemble."""
    return SoftmaxEnsemble([load_weights(copy.deepcopy(network), path).eval() for path in checkpoints])
