"""What every benchmark run shares: its console messages, where it was measured, and the best
validation score of a training (:mod:`~kneeseg.experiments.table1`, :mod:`~kneeseg.experiments.cv` and
:mod:`~kneeseg.experiments.cv_ensemble` all use them)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["best_val", "environment", "say"]


def say(progress: Callable[[str], None] | None, line: str) -> None:
    """Report ``line`` through ``progress``, or print it."""
    (progress or (lambda s: print(s, flush=True)))(line)


def best_val(hist_path: Path) -> tuple:
    """(best validation F1, its epoch) from a training run's history.json."""
    if not hist_path.is_file():
        return (None, None)
    h = json.loads(hist_path.read_text())
    vals = h.get("val", {}).get("val_f1") or []
    if not vals:
        return (None, None)
    i = int(np.argmax(vals))
    return (float(vals[i]), int(h["val_epoch"][i]))


def environment() -> dict[str, Any]:
    """Where the table was measured: CPU, threads, library versions, precision policy."""
    import platform

    import monai
    import torch

    from kneeseg.execution import resolve_amp

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "monai": monai.__version__, "python": platform.python_version(), "gpu": torch.cuda.is_available(),
            "precision": resolve_amp("auto").describe()}  # fmt: skip


def describe_environment(env: dict[str, Any]) -> str:
    """``environment()`` as the tables print it: ``CPU (2 cores, 1 torch thread, GPU: no), torch ..., MONAI ..., precision``."""
    threads = env["torch_threads"]
    return (f"{env['cpu']} ({env['cores']} cores, {threads} torch thread{'' if threads == 1 else 's'}, "
            f"GPU: {'yes' if env['gpu'] else 'no'}), torch {env['torch']}, MONAI {env['monai']}, {env['precision']}")  # fmt: skip
