"""An exponential moving average (EMA) of the network's weights, validated and saved instead of the raw weights."""

from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["WeightAveraging"]


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network


class WeightAveraging:
    """Ignite handler: keep an EMA of a network's parameters *and* buffers (batch-norm statistics).

    With a few hundred small-batch steps (the CPU budget) the weights after any single epoch
    are noisy: validation scores jump by several points from one epoch to the next. The EMA,
    ``avg <- decay * avg + (1 - decay) * w`` after every optimizer step (PyTorch's
    ``AveragedModel`` with ``use_buffers=True``, so the averaged batch-norm statistics belong
    to the averaged weights), smooths that out. Point the evaluator and the best-model
    ``CheckpointSaver`` at :attr:`model`; it is a plain copy of the network, so the saved
    ``model.pt`` loads into the unwrapped network as usual.

    Args:
        network: the trained network (a ``DistributedDataParallel`` wrapper is unwrapped).
        decay: EMA decay per optimizer step; ``0`` disables averaging (:attr:`model` is then
            ``network`` itself). The averaging horizon is about ``1 / (1 - decay)`` steps.

    Raises:
        ValueError: ``decay`` outside ``[0, 1)``.

    See also: ``torch.optim.swa_utils.AveragedModel``.
    """

    def __init__(self, network: nn.Module, decay: float = 0.0) -> None:
        decay = float(decay)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.network = _unwrap(network)
        self.decay = decay
        self.averaged = (
            AveragedModel(self.network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True) if decay > 0 else None
        )

    @property
    def enabled(self) -> bool:
        """Whether an average is kept."""
        return self.averaged is not None

    @property
    def model(self) -> nn.Module:
        """The network to validate and save: the averaged copy, or the network itself when disabled."""
        return self.averaged.module if self.averaged is not None else self.network

    def attach(self, engine: Any) -> None:
        """Update the average after every iteration of ``engine`` (the trainer)."""
        from ignite.engine import Events

        if self.enabled:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    @torch.no_grad()
    def update(self, engine: Any = None) -> None:
        """One EMA step from the network's current weights (the first call copies them)."""
        if self.averaged is not None:
            self.averaged.update_parameters(self.network)

    def state_dict(self) -> Dict[str, Any]:
        """The averaged weights and step count (empty when disabled), for resumable checkpoints."""
        return self.averaged.state_dict() if self.averaged is not None else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (an empty state leaves a disabled or fresh average unchanged)."""
        if self.averaged is not None and state:
            self.averaged.load_state_dict(state)
