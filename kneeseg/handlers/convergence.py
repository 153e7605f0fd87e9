"""The convergence rule of a training run: early stopping on the validation metric, and why a run stopped.

:class:`EarlyStopping` ends training once the validator's key metric has not improved for
``patience`` epochs and writes ``stop.json`` (stop reason, best epoch and metric, epochs and
optimiser steps run) when training ends, however it ends; :class:`ScheduleStepper` steps the
learning-rate schedule: after every epoch, or -- for ``ReduceLROnPlateau`` -- after every
validation on its metric. Both attach to the trainer and take the validator, the way
:class:`~kneeseg.handlers.validation.FinalValidationHandler` does, so the bundle config has no
circular reference.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from monai.utils import min_version, optional_import

from kneeseg.atomic import atomic_write_text
from kneeseg.files import PathLike

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["EarlyStopping", "ScheduleStepper", "read_stop_record"]

logger = logging.getLogger(__name__)

#: ``stop_reason`` values: no improvement for ``patience`` epochs; the epoch cap; anything else
#: (an exception, an outside ``terminate``)
STOP_REASONS = ("patience", "max_epochs", "interrupted")


def _metric_of(validator: Any, metric: str | None) -> str:
    if metric:
        return metric
    name = getattr(getattr(validator, "state", None), "key_metric_name", None) or getattr(validator, "key_metric_name", None)
    if not name:
        raise ValueError("EarlyStopping needs the validator's key metric or an explicit metric name")
    return str(name)


class EarlyStopping:
    """Stop training when the validation metric has not improved for ``patience`` epochs.

    After every validation the validator's ``metric`` (default: its key metric, the bundle's
    ``val_f1``; higher is better) is compared with the best so far; an improvement of more than
    ``min_delta`` makes it the new best. Once the trainer's epoch is ``patience`` or more epochs past
    the best epoch, the trainer is terminated after that validation. With ``patience`` 0 or ``None``
    it never stops the run but still writes the record.

    When training ends (completed or stopped early; a run that fails with an exception writes
    none), ``output_dir/stop.json`` holds ``stop_reason`` (``patience``, ``max_epochs`` -- the run
    reached its cap -- or ``interrupted``: terminated from outside), ``best_epoch``, ``best_metric``, ``metric``, ``epochs``, ``iterations``
    (optimiser steps), ``max_epochs`` and ``patience``.

    Args:
        validator: the validation engine (``SupervisedEvaluator``).
        patience: epochs without improvement before stopping; 0/None: never stop early.
        min_delta: the smallest increase that counts as an improvement.
        metric: the validator's metric to watch (default: its key metric).
        output_dir: folder of ``stop.json`` (``None``: no file).
        resume_record: a best-model record (``model.json`` of
            :class:`~kneeseg.handlers.BestCheckpointSaver`: ``score``, ``epoch``) to start from when
            the trainer resumes mid-run and the run's ``history.json`` (in ``output_dir``, written by
            :class:`~kneeseg.handlers.TrainingCurveHandler`) is not there. With the history, the rule is
            replayed over the validations up to the resumed epoch, so that a resumed run stops where an
            uninterrupted one would also when ``min_delta`` is above 0 (the checkpoint's best then need
            not be the rule's).
    """

    def __init__(
        self,
        validator: Any,
        patience: int | None = None,
        min_delta: float = 0.0,
        metric: str | None = None,
        output_dir: PathLike | None = None,
        resume_record: PathLike | None = None,
    ) -> None:
        if patience is not None and int(patience) < 0:
            raise ValueError(f"patience must be >= 0 epochs (0: off), got {patience}")
        self.validator = validator
        self.patience = int(patience or 0)
        self.min_delta = float(min_delta)
        self.metric = metric
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.resume_record = None if resume_record is None else Path(resume_record)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.reason: str | None = None
        self.trainer: Any = None

    def attach(self, trainer: Any) -> None:
        """Register with the trainer (and, through it, the validator)."""
        self.trainer = trainer
        self.validator.add_event_handler(Events.COMPLETED, self._after_validation)
        trainer.add_event_handler(Events.STARTED, self._on_started)
        trainer.add_event_handler(Events.COMPLETED, self._on_completed)

    def _update(self, value: float, epoch: int) -> bool:
        """Count one validation; True when it improved on the best by more than ``min_delta``."""
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.best_epoch = value, epoch
            return True
        return False

    def _replay_history(self, epoch: int) -> bool:
        """The rule over the run's recorded validations up to ``epoch``; False without a usable history."""
        path = self.output_dir / "history.json" if self.output_dir is not None else None
        if path is None or not path.is_file():
            return False
        try:
            history = json.loads(path.read_text())
            name = _metric_of(self.validator, self.metric)
            pairs = [(int(e), float(v)) for e, v in zip(history["val_epoch"], history["val"][name]) if int(e) <= epoch]
        except (ValueError, KeyError, TypeError):
            return False
        for e, v in pairs:
            if math.isfinite(v):
                self._update(v, e)
        return self.best is not None

    def _on_started(self, trainer: Any) -> None:
        self.reason = None
        self.best, self.best_epoch = None, None
        if trainer.state.epoch and self._replay_history(int(trainer.state.epoch)):
            return
        if trainer.state.epoch and self.resume_record is not None and self.resume_record.is_file():
            try:
                rec = json.loads(self.resume_record.read_text())
                self.best, self.best_epoch = float(rec["score"]), int(rec["epoch"])
            except (ValueError, KeyError, TypeError):
                logger.warning("%s: not a best-model record; early stopping counts from the resumed epoch", self.resume_record)

    def _after_validation(self, validator: Any) -> None:
        name = _metric_of(validator, self.metric)
        value = validator.state.metrics.get(name)
        if value is None or not math.isfinite(float(value)):
            return
        epoch = int(self.trainer.state.epoch)
        if self._update(float(value), epoch):
            return
        if self.patience and epoch - int(self.best_epoch or 0) >= self.patience and epoch < self.trainer.state.max_epochs:
            self.reason = "patience"
            logger.info(
                "early stopping at epoch %d: %s has not improved on %.4f (epoch %d) for %d epochs",
                epoch, name, self.best, self.best_epoch, epoch - int(self.best_epoch or 0),
            )  # fmt: skip
            self.trainer.terminate()

    def record(self) -> dict[str, Any]:
        """What ``stop.json`` holds (see the class docstring)."""
        state = self.trainer.state
        reason = self.reason
        if reason is None:
            reason = "max_epochs" if state.epoch >= state.max_epochs else "interrupted"
        return {
            "stop_reason": reason,
            "metric": self.metric or getattr(self.validator.state, "key_metric_name", None),
            "best_metric": self.best,
            "best_epoch": self.best_epoch,
            "epochs": int(state.epoch),
            "iterations": int(state.iteration),
            "max_epochs": int(state.max_epochs),
            "patience": self.patience,
        }

    def _write(self) -> None:
        if self.output_dir is not None:
            atomic_write_text(self.output_dir / "stop.json", json.dumps(self.record(), indent=1) + "\n")

    def _on_completed(self, trainer: Any) -> None:
        self._write()


def read_stop_record(output_dir: PathLike) -> dict[str, Any] | None:
    """A run's ``stop.json`` (:class:`EarlyStopping`), or ``None`` when it has none."""
    path = Path(output_dir) / "stop.json"
    return json.loads(path.read_text()) if path.is_file() else None


class ScheduleStepper:
    """Step a learning-rate schedule: after each epoch, or after each validation for ``ReduceLROnPlateau``.

    Args:
        lr_scheduler: a ``torch.optim.lr_scheduler`` scheduler.
        validator: the validation engine, whose ``metric`` a ``ReduceLROnPlateau`` is stepped with.
        metric: the validator's metric (default: its key metric).
    """

    def __init__(self, lr_scheduler: Any, validator: Any = None, metric: str | None = None) -> None:
        self.lr_scheduler = lr_scheduler
        self.validator = validator
        self.metric = metric

    @property
    def on_plateau(self) -> bool:
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        return isinstance(self.lr_scheduler, ReduceLROnPlateau)

    def attach(self, trainer: Any) -> None:
        """Register with the trainer (and, for a plateau schedule, the validator)."""
        if self.on_plateau:
            if self.validator is None:
                raise ValueError("a ReduceLROnPlateau schedule needs the validator (validator=...)")
            self.validator.add_event_handler(Events.COMPLETED, self._after_validation)
        else:
            trainer.add_event_handler(Events.EPOCH_COMPLETED, self._after_epoch)

    def _lr(self) -> float:
        return float(self.lr_scheduler.optimizer.param_groups[0]["lr"])

    def _after_epoch(self, trainer: Any) -> None:
        before = self._lr()
        self.lr_scheduler.step()
        if self._lr() != before:
            logger.info("epoch %d: learning rate %.3g -> %.3g", trainer.state.epoch, before, self._lr())

    def _after_validation(self, validator: Any) -> None:
        value = validator.state.metrics.get(_metric_of(validator, self.metric))
        if value is None or not math.isfinite(float(value)):
            return
        before = self._lr()
        self.lr_scheduler.step(float(value))
        if self._lr() != before:
            logger.info("validation %.4f: learning rate %.3g -> %.3g (plateau)", float(value), before, self._lr())
