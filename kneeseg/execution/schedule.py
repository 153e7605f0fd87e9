"""The learning-rate schedules a bundle config can name: step, plateau, cosine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kneeseg.execution.choices import LR_SCHEDULES

__all__ = ["LR_SCHEDULES", "lr_scheduler"]



def lr_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str = "step",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    max_epochs: int = 1,
    patience: int = 5,
) -> Any:
    """A ``torch.optim.lr_scheduler`` scheduler for ``schedule`` (one of :data:`LR_SCHEDULES`).

    Step it with :class:`kneeseg.handlers.ScheduleStepper` (per epoch, or per validation for
    ``plateau``, which maximises the validator's key metric and reduces the rate after
    ``patience`` validations without any improvement).

    Raises:
        ValueError: an unknown schedule name or a bad parameter.
    """
    if schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[int(m) for m in milestones], gamma=gamma)
    if schedule == "plateau":
        if int(patience) < 1:
            raise ValueError(f"the plateau schedule's patience must be >= 1 validation, got {patience}")
        # reduce once `patience` validations in a row have not improved (PyTorch counts the bad
        # validations after the best one and reduces when they exceed its patience)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=gamma, patience=int(patience) - 1, threshold=0.0, threshold_mode="abs"
        )
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(max_epochs)))
    raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {schedule!r}")
