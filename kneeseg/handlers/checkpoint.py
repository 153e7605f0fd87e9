"""Checkpoints that lose nothing: a resumable ``last.pt`` after every epoch, and ``model.pt`` only
when validation improves -- also across a resume, and never silently over an earlier run's model.

Every file is written atomically (:func:`kneeseg.atomic.atomic_path`): a kill during a save leaves
the previous complete file, and the next run removes the temporary file it left.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kneeseg.atomic import atomic_path, atomic_write_text, is_temporary_of
from kneeseg.files import PathLike, file_sha256

__all__ = ["BestCheckpointSaver", "LastCheckpointSaver", "ResumeFromCheckpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)


def is_rank0() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0


def _remove_stale_temporaries(folder: Path, target: str) -> None:
    """Remove the temporary files a killed save of ``target`` left in ``folder``."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if is_temporary_of(path.name, target):
            path.unlink(missing_ok=True)
            logger.info("removed %s, left by an interrupted save", path)


def save_checkpoint(objects: Mapping[str, Any], path: PathLike) -> Path:
    """Save ``{name: obj.state_dict()}`` to ``path`` through a temporary file and ``os.replace``.

    A crash at any moment leaves either the previous checkpoint or the new one, never a
    truncated file. Objects without ``state_dict`` are stored as they are.
    """
    out = Path(path)
    state: dict[str, Any] = {}
    for name, obj in objects.items():
        if obj is None:
            continue
        module = getattr(obj, "module", None)  # unwrap DistributedDataParallel
        target = module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj
        state[name] = target.state_dict() if hasattr(target, "state_dict") else target
    return write_torch(state, out)


def write_torch(obj: Any, path: PathLike) -> Path:
    """``torch.save`` atomically, into an open file rather than a file name: the archive's inner
    folder is then torch's fixed ``archive/``, not the random temporary name, so the same state
    always gives the same bytes (and the same sha256 in ``model.json``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


class LastCheckpointSaver:
    """Ignite handler: after every ``interval`` epochs, save everything needed to resume.

    Writes ``<save_dir>/<filename>`` (default ``last.pt``) holding the state dicts of
    ``save_dict`` (typically network, optimizer and lr scheduler) plus the trainer it is
    attached to, as ``"trainer"`` (its state holds the epoch and iteration counters), and the
    trainer's ``GradScaler`` as ``"scaler"`` when it has one (fp16 AMP on CUDA). Resume with MONAI's ``CheckpointLoader``
    on the same ``load_dict``: the trainer then continues at the next epoch with the saved
    optimizer state. Only rank 0 writes under ``torch.distributed``.

    Args:
        save_dir: output folder.
        save_dict: ``{name: object with state_dict()}``.
        filename: checkpoint file name.
        interval: save every ``interval`` epochs (and always at the end of the run).
    """

    def __init__(
        self, save_dir: PathLike, save_dict: Mapping[str, Any], filename: str = "last.pt", interval: int = 1
    ) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.interval = max(1, int(interval))

    def attach(self, engine: Any) -> None:
        """Register with an ignite engine; the engine itself is saved as ``"trainer"`` unless given."""
        from ignite.engine import Events

        self.save_dict.setdefault("trainer", engine)
        if is_rank0():
            _remove_stale_temporaries(self.path.parent, self.path.name)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self._save)
        engine.add_event_handler(Events.COMPLETED, self._save)

    def _save(self, engine: Any) -> None:
        if is_rank0():
            objects = dict(self.save_dict)
            # MONAI's Trainer.run() makes its GradScaler when the run starts, after the handlers
            # were attached: look for it at save time (fp16 AMP on CUDA; None or disabled otherwise)
            scaler = getattr(engine, "scaler", None)
            if scaler is not None and scaler.is_enabled():
                objects.setdefault("scaler", scaler)
            save_checkpoint(objects, self.path)


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
        optional: names in ``load_dict`` a checkpoint may lack (older checkpoints without the
            random streams, ``"rng"``): the run then resumes with a warning that it is not exact.
    """

    def __init__(
        self, load_path: PathLike, load_dict: Mapping[str, Any], enabled: bool = True, map_location: Any = None,
        optional: Sequence[str] = ("rng",),
    ) -> None:  # fmt: skip
        self.load_path = Path(load_path)
        self.load_dict = dict(load_dict)
        self.enabled = enabled
        self.map_location = map_location
        self.optional = tuple(optional)

    def attach(self, engine: Any) -> None:
        """Register with an ignite engine (the trainer to resume).

        Raises:
            ValueError: the checkpoint cannot be read, or was saved by another network or
                optimizer configuration; the message names the file and what to do.
        """
        from monai.handlers import CheckpointLoader

        if not self.load_path.is_file():
            logger.info("no checkpoint at %s: starting a new run", self.load_path)
            return
        if not self.enabled:
            logger.info("resume is off: starting a new run; %s is replaced after its first epoch", self.load_path)
            return
        logger.info("resuming from %s", self.load_path)
        try:
            saved = torch.load(self.load_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or corrupt file
            raise ValueError(
                f"{self.load_path}: cannot resume, the checkpoint is unreadable ({type(exc).__name__}: {exc}); "
                "delete it to start again, or train with resume=false"
            ) from exc
        load_dict = {**self.load_dict, "trainer": engine}
        absent = [k for k in self.optional if k in load_dict and isinstance(saved, dict) and k not in saved]
        for k in absent:  # e.g. a checkpoint from before the random streams were saved
            logger.warning("%s holds no '%s' state: the run resumes, but not exactly as it would have gone on",
                           self.load_path, k)  # fmt: skip
            del load_dict[k]
        missing = [k for k in load_dict if not isinstance(saved, dict) or k not in saved]
        if missing:
            raise ValueError(f"{self.load_path}: cannot resume, the checkpoint lacks {missing}; train with resume=false")
        for name, obj in self.load_dict.items():
            if isinstance(obj, torch.nn.Module):
                target = obj.module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj
                try:
                    target.load_state_dict(saved[name])
                except RuntimeError as exc:
                    first = str(exc).strip().splitlines()[0]
                    raise ValueError(
                        f"{self.load_path}: cannot resume, its '{name}' was saved by a different network "
                        f"configuration ({first}); resume with the settings it was trained with, or train with "
                        "resume=false"
                    ) from exc
        loader = CheckpointLoader(load_path=str(self.load_path), load_dict=load_dict, map_location=self.map_location)
        loader.attach(engine)
        if isinstance(saved, dict) and saved.get("scaler"):
            from ignite.engine import Events

            engine.add_event_handler(Events.STARTED, self._restore_scaler, saved["scaler"])

    def _restore_scaler(self, engine: Any, state: Mapping[str, Any]) -> None:
        """Give the trainer's GradScaler the saved loss scale. MONAI's ``Trainer.run()`` makes a
        fresh scaler when the run starts, so this runs at ``STARTED``, not at attach time. A run
        without fp16 AMP (no scaler, or a disabled one) ignores the saved state."""
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            scaler.load_state_dict(dict(state))
            logger.info("resumed the GradScaler at loss scale %s", scaler.get_scale())


def _jsonable(value: Any) -> Any:
    """Config values for a JSON record: sequences as lists, anything else by its text."""
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


class BestCheckpointSaver:
    """Ignite handler on the validator: save ``model.pt`` when the key metric improves.

    ``model.pt`` stays what MONAI's ``CheckpointSaver`` writes for one object (the network's
    bare state dict, so ``ckpt_export``, MONAI Label and ``CheckpointLoader`` read it as before);
    beside it ``model.json`` records the metric, its score, the epoch and the SHA-256 of the
    ``model.pt`` it belongs to. Unlike a plain best-metric saver this remembers the best score
    across a resume, so the first validation after ``resume`` does not replace a better model. A
    ``model.pt`` it cannot vouch for -- a fresh run (``resume`` false) finding an earlier run's
    model, or a resume without a matching ``model.json`` -- is kept aside as ``model.<its
    time>.pt`` before the first save: nothing is silently destroyed, and MONAI Label's fine-tuning
    of ``model.pt`` works as before (it loads the old weights first). Only rank 0 writes.

    Args:
        save_dir: checkpoint folder.
        save_dict: ``{name: object with state_dict()}``; one object is saved bare (the network).
        filename: the best-model file (default ``model.pt``).
        key_metric: metric name in the validator's state (default: its key metric).
        resume: whether this run resumes an earlier one (the bundle's ``resume``).
        contract: what the model is (``train.json``'s ``model_contract``: network, width, input size,
            classes, slice orientation, preprocessing), recorded in ``model.json`` as ``"model"`` so
            that inference rebuilds it without being told (:mod:`kneeseg.networks.checkpoints`).
        provenance: where the model came from (``train.json``'s ``model_provenance``: kneeseg
            version, seed, data list, number of training and validation items, recipe), recorded
            as ``"trained_with"``; informative only, inference does not read it.
    """

    def __init__(
        self,
        save_dir: PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "model.pt",
        key_metric: str | None = None,
        resume: bool = False,
        contract: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        self.contract = None if contract is None else json.loads(json.dumps(dict(contract), default=_jsonable))
        self.provenance = None if provenance is None else json.loads(json.dumps(dict(provenance), default=_jsonable))
        self.path = Path(save_dir) / filename
        self.record = self.path.with_suffix(".json")
        self.save_dict = dict(save_dict)
        self.key_metric = key_metric
        self.resume = bool(resume)
        self.best: float | None = None
        self._vouched = False  # whether an existing model.pt may be replaced by a better one

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if is_rank0():
            for target in (self.path.name, self.record.name):
                _remove_stale_temporaries(self.path.parent, target)
        if self.resume:
            self.best = self.stored_score(self.path)
            if self.best is not None:
                self._vouched = True
                logger.info("resuming: %s holds the best %s so far, %.4f", self.path, self.key_metric or "score", self.best)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    @staticmethod
    def stored_score(path: PathLike) -> float | None:
        """The best score recorded for ``path`` (None without a ``.json`` record that matches it)."""
        import json

        path = Path(path)
        record = path.with_suffix(".json")
        if not path.is_file() or not record.is_file():
            return None
        try:
            info = json.loads(record.read_text())
            digest = file_sha256(path)
            return float(info["score"]) if info.get("sha256") == digest else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _keep_previous(self) -> None:
        """A model.pt this run cannot vouch for: move it aside (never delete it)."""
        if self._vouched:
            return
        self._vouched = True
        if self.path.is_file():
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.path.stat().st_mtime))
            aside = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
            n = 1
            while aside.exists():
                aside = self.path.with_name(f"{self.path.stem}.{stamp}-{n}{self.path.suffix}")
                n += 1
            os.replace(self.path, aside)
            if self.record.is_file():
                os.replace(self.record, aside.with_suffix(".json"))
            logger.warning("kept the earlier %s as %s (this run does not build on it)", self.path.name, aside)

    def __call__(self, engine: Any) -> None:
        import json

        name = self.key_metric or getattr(engine.state, "key_metric_name", None)
        metrics = getattr(engine.state, "metrics", {}) or {}
        if name is None or name not in metrics:
            raise ValueError(f"BestCheckpointSaver: metric {name!r} not among the validator's metrics {sorted(metrics)}")
        score = float(metrics[name])
        if self.best is not None and not score > self.best:
            return
        self.best = score
        if not is_rank0():
            return
        self._keep_previous()
        states = {}
        for key, obj in self.save_dict.items():
            target = obj.module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj
            states[key] = target.state_dict() if hasattr(target, "state_dict") else target
        state = next(iter(states.values())) if len(states) == 1 else states
        write_torch(state, self.path)
        info = {"metric": str(name), "score": score, "epoch": int(getattr(engine.state, "epoch", 0) or 0),
                "sha256": file_sha256(self.path)}  # fmt: skip
        if self.contract is not None:
            info["model"] = self.contract
        if self.provenance is not None:
            info["trained_with"] = self.provenance
        atomic_write_text(self.record, json.dumps(info, indent=1) + "\n")
        logger.info("saved %s (%s %.4f)", self.path, name, score)
