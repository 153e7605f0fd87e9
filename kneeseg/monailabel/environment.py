"""The MONAI Label virtual environment: where it is, its python, and the environment its processes run with.

MONAI Label lives in its own virtual environment (``make label-env``; default
``<repo>/.venv-label`` or ``$KNEESEG_LABEL_VENV``) because it needs ``numpy<2`` and ``pydicom<3``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from kneeseg.files import PathLike

__all__ = ["Progress", "label_venv", "repo_root", "say", "venv_env", "venv_python"]

#: called with one line per step (e.g. ``print``), or None
Progress = Callable[[str], None] | None


def say(progress: Progress, line: str) -> None:
    if progress is not None:
        progress(line)


def repo_root() -> Path:
    """The source checkout this package lives in (``kneeseg/monailabel/environment.py`` -> ``<repo>``)."""
    return Path(__file__).resolve().parents[2]


def label_venv() -> Path:
    """The MONAI Label virtual environment: ``$KNEESEG_LABEL_VENV`` or ``<repo>/.venv-label``."""
    env = os.environ.get("KNEESEG_LABEL_VENV")
    return Path(env).expanduser() if env else repo_root() / ".venv-label"


def venv_python(venv: PathLike | None) -> Path:
    """``<venv>/bin/python`` (``venv`` None: :func:`label_venv`); FileNotFoundError when it is missing."""
    # absolute (processes run in the app folder) but not resolved: bin/python must stay the venv's symlink
    root = (Path(venv).expanduser() if venv is not None else label_venv()).absolute()
    python = root / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(
            f"MONAI Label environment not found: {python} does not exist (run `make label-env`, "
            "or set KNEESEG_LABEL_VENV to an environment with monailabel==0.8.5 and kneeseg)"
        )
    return python


def venv_env(venv: Path) -> dict[str, str]:
    """Environment for the venv's processes: its bin first on PATH (MONAI Label starts `python`)."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
    env["MONAILABEL_PYEXE"] = str(venv / "bin" / "python")
    env["PYTHONUNBUFFERED"] = "1"
    return env
