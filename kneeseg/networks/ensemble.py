"""Trained networks and fold ensembles: the members' softmax averaged before the argmax -- the one
rule for every runtime.

:func:`trained_network` is what the bundle's ``inference.json`` and ``evaluate.json`` call for their
``network``: the checkpoint(s) of ``ckpt_path`` by
:func:`kneeseg.networks.checkpoints.checkpoint_paths` (a model folder's ``fold*/model.pt`` as a fold
ensemble when it has them, else its ``model.pt``; a file as it is), the rule ``kneeseg infer``
follows too (:func:`kneeseg.inference.definition.load_networks`). :func:`mean_softmax` is the
ensemble rule (``kneeseg infer`` applies it to its runners' outputs); :class:`SoftmaxEnsemble` is the
same rule as one network.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from kneeseg.files import PathLike
from kneeseg.networks.checkpoints import checkpoint_paths, load_model_weights

__all__ = ["SoftmaxEnsemble", "load_fold_ensemble", "mean_softmax", "trained_network"]


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


def load_fold_ensemble(
    network: nn.Module, checkpoints: Sequence[PathLike], *, network_name: str | None = None, width: int | None = None
) -> SoftmaxEnsemble:
    """Copies of ``network`` with each checkpoint's weights (:func:`load_model_weights`), as one ensemble."""
    return SoftmaxEnsemble([
        load_model_weights(copy.deepcopy(network), path, network_name=network_name, width=width).eval()
        for path in checkpoints
    ])  # fmt: skip


def trained_network(
    network: nn.Module, ckpt: PathLike | Sequence[PathLike], device: torch.device | str | None = None, *,
    network_name: str | None = None, width: int | None = None,
) -> nn.Module:
    """``network`` with the trained weights of ``ckpt`` (a checkpoint file, or a model folder:
    its fold ensemble when it has ``fold*/model.pt``, else its ``model.pt``), on ``device``.

    Several checkpoints make a :class:`SoftmaxEnsemble` of copies of ``network``. ``network_name``
    and ``width`` (what was asked for) make a mismatch say what differs.

    Raises:
        FileNotFoundError: no checkpoint at ``ckpt``. ValueError: one line naming the file, when a
            checkpoint is unreadable or does not fit.
    """
    paths = checkpoint_paths(ckpt)
    if len(paths) == 1:
        net = load_model_weights(network, paths[0], network_name=network_name, width=width)
    else:
        net = load_fold_ensemble(network, paths, network_name=network_name, width=width)
    return net.to(device) if device is not None else net
