"""Shared pytest fixtures.

Real knee data lives beside the project in ``../shared/data`` (never copied into the repo).
Tests that need it use the ``shared_data`` fixture: they skip when it is absent, unless
``KNEESEG_REQUIRE_SHARED_DATA=1`` (set by ``.ci/run``), where its absence is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Return the shared data folder (``$KNEESEG_SHARED_DATA`` or ``../shared/data``)."""
    env = os.environ.get("KNEESEG_SHARED_DATA")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data``; skips (or fails under CI's requirement) when missing."""
    root = shared_data_root()
    if not (root / "README.md").is_file():
        msg = f"shared knee data not found at {root}"
        if os.environ.get("KNEESEG_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg + " (KNEESEG_REQUIRE_SHARED_DATA=1)")
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def phantom_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the bundle network trained on a small phantom (about 3 minutes on 2 cores).

    Uses :data:`inference_helpers.PHANTOM_MODEL` (128 px input, width 8); pass the same values
    as bundle overrides when loading it.
    """
    from inference_helpers import train_phantom_model

    return train_phantom_model(tmp_path_factory.mktemp("phantom_model"))
