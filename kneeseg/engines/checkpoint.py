"""A resumable 'last' checkpoint, written atomically after every epoch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch

from kneeseg.io import atomic_path

__all__ = ["LastCheckpointSaver", "ResumeFromCheckpoint", "save_checkpoint"]


def save_checkpoint(objects: Mapping[str, Any], path: Union[str, Path]) -> Path:
    """Save ``{name: obj.state_dict()}`` to ``path`` through a temporary file and ``os.replace``.

    A crash at any moment leaves either the previous checkpoint or the new one, never a
    truncated file. Objects without ``state_dict`` are stored as they are.
    """
    out = Path(path)
    state: Dict[str, Any] = {}
    for name, obj in objects.items():
        if obj is None:
            continue
        module = getattr(obj, "module", None)  # unwrap DistributedDataParallel
        target = module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj
        state[name] = target.state_dict() if hasattr(target, "state_dict") else target
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    return out


class LastCheckpointSaver:
    """Ignite handler: after every ``interval`` epochs, save everything needed to resume.

    Writes ``<save_dir>/<filename>`` (default ``last.pt``) holding the state dicts of
    ``save_dict`` (typically network, optimizer and lr scheduler) plus the trainer it is
    attached to, as ``"trainer"`` (its state holds the epoch and iteration counters). Resume with MONAI's ``CheckpointLoader``
    on the same ``load_dict``: the trainer then continues at the next epoch with the saved
    optimizer state. Only rank 0 writes under ``torch.distributed``.

    Args:
        save_dir: output folder.
        save_dict: ``{name: object with state_dict()}``.
        filename: checkpoint file name.
        interval: save every ``interval`` epochs (and always at the end of the run).
    """

    def __init__(
        self, save_dir: Union[str, Path], save_dict: Mapping[str, Any], filename: str = "last.pt", interval: int = 1
    ) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.interval = max(1, int(interval))

    def attach(self, engine: Any) -> None:
        """Register with an ignite engine; the engine itself is saved as ``"trainer"`` unless given."""
        from ignite.engine import Events

        self.save_dict.setdefault("trainer", engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self._save)
        engine.add_event_handler(Events.COMPLETED, self._save)

    def _save(self, engine: Any) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        save_checkpoint(self.save_dict, self.path)


class ResumeFromCheckpoint:
    """Ignite handler: resume a trainer from ``load_path`` when that file exists.

    It is MONAI's :py:class:`~monai.handlers.CheckpointLoader` (which loads with
    ``weights_only=True``) with the trainer it is attached to added to ``load_dict`` as
    ``"trainer"``: a bundle config cannot name the trainer inside the trainer's own handler
    list without a circular reference. When the file is absent, training starts fresh.

    Args:
        load_path: checkpoint written by :py:class:`LastCheckpointSaver`.
        load_dict: ``{name: object}`` to restore besides the trainer (network, optimizer, scheduler).
        enabled: ``False`` disables resuming (always start fresh).
        map_location: passed to ``torch.load``.
    """

    def __init__(
        self, load_path: Union[str, Path], load_dict: Mapping[str, Any], enabled: bool = True, map_location: Any = None
    ) -> None:
        self.load_path = Path(load_path)
        self.load_dict = dict(load_dict)
        self.enabled = enabled
        self.map_location = map_location

    def attach(self, engine: Any) -> None:
        """Register with an ignite engine (the trainer to resume)."""
        import logging

        from monai.handlers import CheckpointLoader

        logger = logging.getLogger(__name__)
        if not self.enabled or not self.load_path.is_file():
            logger.info("no checkpoint to resume from at %s: starting fresh", self.load_path)
            return
        logger.info("resuming from %s", self.load_path)
        loader = CheckpointLoader(
            load_path=str(self.load_path), load_dict={**self.load_dict, "trainer": engine}, map_location=self.map_location
        )
        loader.attach(engine)
