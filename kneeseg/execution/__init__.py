"""How the networks run, around MONAI's engines: the precision policy (:mod:`.precision`: CUDA fp16 +
GradScaler, CPU bf16), the inference runtimes (:mod:`.runtimes`: eager, bf16, ONNX Runtime, chosen by
measurement), the inferers that apply them (:mod:`.inferers`), the learning-rate schedules
(:mod:`.schedule`), the data-loader settings (:mod:`.loader`) and the inference dataset that records
failures, carries on and resumes (:mod:`.datasets`). The engines' event handlers are
:mod:`kneeseg.handlers`; ``kneeseg.engines`` is this package's earlier name.

Imports are lazy, so ``import kneeseg.execution`` (and the names of :mod:`kneeseg.execution.choices`) do not load torch.
"""

from kneeseg.lazy import lazy_exports

_EXPORTS = {
    "AmpPolicy": "kneeseg.execution.precision",
    "cpu_supports_bf16": "kneeseg.execution.precision",
    "resolve_amp": "kneeseg.execution.precision",
    "AutocastInferer": "kneeseg.execution.inferers",
    "RuntimeInferer": "kneeseg.execution.inferers",
    "SliceOrSimpleInferer": "kneeseg.execution.inferers",
    "loader_workers": "kneeseg.execution.loader",
    "FAILURES_CSV": "kneeseg.execution.datasets",
    "ResumableDataset": "kneeseg.execution.datasets",
    "LR_SCHEDULES": "kneeseg.execution.choices",
    "lr_scheduler": "kneeseg.execution.schedule",
    "RUNTIMES": "kneeseg.execution.choices",
    "NetworkRunner": "kneeseg.execution.runtimes",
    "RuntimeChoice": "kneeseg.execution.runtimes",
    "choose_runtime": "kneeseg.execution.runtimes",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
