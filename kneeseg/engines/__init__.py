"""What MONAI's engines lack for kneeseg: the AMP policy (CUDA fp16 + GradScaler, CPU bf16), the inferers and the
inference runtimes. The engines' event handlers are :mod:`kneeseg.handlers`."""

from kneeseg.engines.amp import AmpPolicy, cpu_supports_bf16, resolve_amp
from kneeseg.engines.inferers import (
    AutocastInferer,
    RuntimeInferer,
    SliceOrSimpleInferer,
)
from kneeseg.engines.loader import loader_workers
from kneeseg.engines.schedule import LR_SCHEDULES, lr_scheduler
from kneeseg.engines.runtime import (
    RUNTIMES,
    NetworkRunner,
    RuntimeChoice,
    choose_runtime,
)

__all__ = [
    "SliceOrSimpleInferer",
    "AmpPolicy",
    "AutocastInferer",
    "RuntimeInferer",
    "RUNTIMES",
    "NetworkRunner",
    "RuntimeChoice",
    "choose_runtime",
    "cpu_supports_bf16",
    "loader_workers",
    "LR_SCHEDULES",
    "lr_scheduler",
    "resolve_amp",
]
