"""Shared helpers for tests that run the MONAI bundle for real (tiny phantom, tiny network)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from collections.abc import Sequence

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = PROJECT_ROOT / "bundles" / "knee_mri_seg"
CONFIGS = BUNDLE / "configs"
TRAIN_CONFIGS = [str(CONFIGS / "train.json"), str(CONFIGS / "presets" / "cpu.json"), str(CONFIGS / "data" / "phantom.json")]

# a network and input small enough for a test: 4-wide stages, 64x64 slices
TINY = {"spatial_size": 64, "width": 4, "batch_size": 4, "val_interval": 1, "num_workers": 0}


def tiny_overrides(dataset_dir: Path, run_dir: Path, **extra) -> dict[str, object]:
    """Overrides that point the bundle at a tiny phantom and a scratch run folder."""
    out: dict[str, object] = dict(TINY)
    out.update(
        {
            "bundle_root": str(BUNDLE),
            "dataset_dir": str(dataset_dir),
            "ckpt_dir": str(run_dir / "models"),
            "output_dir": str(run_dir / "runs"),
        }
    )
    out.update(extra)
    return out


def cli_args(overrides: dict[str, object]) -> list[str]:
    """``--key value`` arguments for ``python -m monai.bundle``."""
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    return args


def run_bundle(command: Sequence[str], timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle <command...>`` in the bundle folder; raise with its output on failure."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *command],
        cwd=BUNDLE, capture_output=True, text=True, timeout=timeout, env=full_env,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"monai.bundle {' '.join(command[:2])} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def config_list(files: Sequence[str]) -> str:
    """The ``--config_file`` value for several files (later files override earlier ones)."""
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tiny_phantom(out: Path) -> Path:
    """The tiny phantom the bundle tests train on: 4 cases of 64 x 64 x 12, one PNG negative."""
    from kneeseg.phantom import generate_phantom

    generate_phantom(out, cases=4, seed=0, shape=(64, 64, 12), png_negatives=1)
    return out
