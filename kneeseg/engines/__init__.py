"""What MONAI's engines lack for kneeseg: the AMP policy (CUDA fp16 + GradScaler, CPU bf16), the inferers, the
inference runtimes, the learning-rate schedules and the data-loader settings. The engines' event handlers are
:mod:`kneeseg.handlers`.

Imports are lazy, so ``import kneeseg.engines`` (and the names of :mod:`kneeseg.engines.choices`) do not load torch.
"""

from kneeseg.lazy import lazy_exports

_EXPORTS = {
    "AmpPolicy": "kneeseg.engines.amp",
    "cpu_supports_bf16": "kneeseg.engines.amp",
    "resolve_amp": "kneeseg.engines.amp",
    "AutocastInferer": "kneeseg.engines.inferers",
    "RuntimeInferer": "kneeseg.engines.inferers",
    "SliceOrSimpleInferer": "kneeseg.engines.inferers",
    "loader_workers": "kneeseg.engines.loader",
    "LR_SCHEDULES": "kneeseg.engines.choices",
    "lr_scheduler": "kneeseg.engines.schedule",
    "RUNTIMES": "kneeseg.engines.choices",
    "NetworkRunner": "kneeseg.engines.runtime",
    "RuntimeChoice": "kneeseg.engines.runtime",
    "choose_runtime": "kneeseg.engines.runtime",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
