"""Ignite event handlers for kneeseg's MONAI engines (bundle ``_target_`` names ``kneeseg.handlers.*``).

- :mod:`~kneeseg.handlers.metrics`: metric handlers (F1, Dice, IoU, precision, recall, MAE, HD95,
  loss rate) around :mod:`kneeseg.metrics`' metrics, for ``key_val_metric`` / ``additional_metrics``.
- :mod:`~kneeseg.handlers.report`: :class:`MetricsReportHandler`, the evaluation's per-case CSV,
  summary JSON and Table 1 row.
- :mod:`~kneeseg.handlers.checkpoint`: a resumable ``last.pt`` after every epoch, ``model.pt`` when
  validation improves, and resuming from ``last.pt``.
- :mod:`~kneeseg.handlers.validation`: periodic validation that also validates after the last epoch.
- :mod:`~kneeseg.handlers.convergence`: early stopping on the validation metric (and why a run
  stopped: ``stop.json``), the learning-rate schedule stepped per epoch or per validation.
- :mod:`~kneeseg.handlers.curves`: training curves (PNG and JSON) after every epoch.
- :mod:`~kneeseg.handlers.progress`: :class:`TrainingProgress`, a bar with the time left on a
  terminal, one line per epoch elsewhere.
- :mod:`~kneeseg.handlers.rng`: :class:`RandomStreams`, the run's random states in ``last.pt``, so
  that a resumed run draws what the uninterrupted one would have.
"""

from kneeseg.handlers.checkpoint import (
    BestCheckpointSaver,
    LastCheckpointSaver,
    ResumeFromCheckpoint,
    save_checkpoint,
)
from kneeseg.handlers.convergence import EarlyStopping, ScheduleStepper, read_stop_record
from kneeseg.handlers.curves import TrainingCurveHandler, plot_training_curves
from kneeseg.handlers.metrics import (
    DiceHandler,
    F1Handler,
    HD95Handler,
    IoUHandler,
    LossRateHandler,
    MAEHandler,
    OverlapHandler,
    PrecisionHandler,
    RecallHandler,
    metric_handler,
)
from kneeseg.handlers.progress import TrainingProgress
from kneeseg.handlers.report import MetricsReportHandler
from kneeseg.handlers.rng import RandomStreams
from kneeseg.handlers.validation import FinalValidationHandler

__all__ = [
    "BestCheckpointSaver",
    "RandomStreams",
    "DiceHandler",
    "EarlyStopping",
    "ScheduleStepper",
    "read_stop_record",
    "F1Handler",
    "FinalValidationHandler",
    "HD95Handler",
    "IoUHandler",
    "LastCheckpointSaver",
    "LossRateHandler",
    "MAEHandler",
    "MetricsReportHandler",
    "OverlapHandler",
    "PrecisionHandler",
    "RecallHandler",
    "ResumeFromCheckpoint",
    "TrainingCurveHandler",
    "TrainingProgress",
    "metric_handler",
    "plot_training_curves",
    "save_checkpoint",
]
