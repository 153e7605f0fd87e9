"""Serve the kneeseg bundle with MONAI Label 0.8.5 (for 3D Slicer's MONAI Label extension).

MONAI Label lives in its own virtual environment (``make label-env``; default
``<repo>/.venv-label`` or ``$KNEESEG_LABEL_VENV``) because it needs ``numpy<2`` and
``pydicom<3``. This package only lays out files and drives that environment's processes, so it
imports with the standard library and kneeseg alone and works from any kneeseg environment.

- :func:`prepare_app` (:mod:`~kneeseg.monailabel.app`): a ``monaibundle`` app folder (MONAI
  Label's sample app, copied from the installed package) with the kneeseg bundle at
  ``model/knee_mri_seg`` and a checkpoint at ``model/knee_mri_seg/models/model.pt``; plain
  top-level values of ``configs/inference.json`` and ``configs/train.json`` can be substituted
  (``{"width": 8, "spatial_size": 128}``).
- :func:`start_server` (:mod:`~kneeseg.monailabel.server`): ``monailabel start_server`` on
  127.0.0.1 in its own process group, waiting until ``GET /info/`` answers; :class:`Server`
  stops it (SIGTERM, SIGKILL fallback).
- :func:`label_venv` (:mod:`~kneeseg.monailabel.environment`): where the environment is.
- ``python -m kneeseg.monailabel prepare|serve`` (:mod:`~kneeseg.monailabel.cli`): the same from
  the command line (used by ``make label-server``).

Details and pitfalls: ``docs/monai_label.md``.
"""

from kneeseg.monailabel.app import APP_MARKER, MODEL_NAME, find_sample_app, prepare_app
from kneeseg.monailabel.cli import main
from kneeseg.monailabel.environment import label_venv
from kneeseg.monailabel.server import (
    HOST,
    Server,
    free_port,
    port_is_free,
    start_server,
)

__all__ = [
    "APP_MARKER",
    "HOST",
    "MODEL_NAME",
    "Server",
    "find_sample_app",
    "free_port",
    "label_venv",
    "main",
    "port_is_free",
    "prepare_app",
    "start_server",
]
