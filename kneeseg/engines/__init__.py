"""What MONAI's engines lack for kneeseg: the AMP policy (CUDA fp16 + GradScaler, CPU bf16)."""

from kneeseg.engines.amp import AmpPolicy, cpu_supports_bf16, resolve_amp
from kneeseg.engines.checkpoint import BestCheckpointSaver, LastCheckpointSaver, ResumeFromCheckpoint, save_checkpoint
from kneeseg.engines.curves import TrainingCurveHandler, plot_training_curves
from kneeseg.engines.inferers import AutocastInferer, RuntimeInferer, SliceOrSimpleInferer
from kneeseg.engines.runtime import RUNTIMES, NetworkRunner, RuntimeChoice, choose_runtime
from kneeseg.engines.validation import FinalValidationHandler

__all__ = [
    "SliceOrSimpleInferer",
    "FinalValidationHandler",
    "AmpPolicy",
    "AutocastInferer",
    "RuntimeInferer",
    "RUNTIMES",
    "NetworkRunner",
    "RuntimeChoice",
    "choose_runtime",
    "BestCheckpointSaver",
    "LastCheckpointSaver",
    "ResumeFromCheckpoint",
    "TrainingCurveHandler",
    "cpu_supports_bf16",
    "plot_training_curves",
    "save_checkpoint",
    "resolve_amp",
]
