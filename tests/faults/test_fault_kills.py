"""SIGKILL at random points of a batch run, 10 seeds: every rerun ends exactly like a clean run.

Each seed starts ``kneeseg infer`` in a subprocess and kills it (SIGKILL, no cleanup possible)
after a random number of series records plus a random delay -- during reading, inference or
writing. What the killed run left must be complete files only (temporaries aside), and a rerun
must produce the clean run's outputs byte for byte (SEG write times aside) and its manifest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fault_helpers import TINY, assert_complete_files, kneeseg_temporaries, make_tree, run
from inference_helpers import output_snapshot, untrained_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kills")
    tree = make_tree(root)
    model = untrained_model(root / "model.pt")
    res = run(tree, root / "clean", model)
    assert res.exit_code == 0
    return {"tree": tree, "model": model, "clean": output_snapshot(root / "clean")}


def _cmd(tree, out, model):
    return [sys.executable, "-m", "kneeseg.cli", "infer", str(tree), "-o", str(out), "--ckpt", str(model),
            "--runtime", "eager", *sum((["--set", f"{k}={v}"] for k, v in TINY.items()), [])]  # fmt: skip


def test_sigkill_at_random_points_then_rerun_equals_a_clean_run(setup, tmp_path):
    landed = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        after_records, delay = int(rng.integers(0, 3)), float(rng.uniform(0.0, 0.6))
        out = tmp_path / f"seed{seed}"
        proc = subprocess.Popen(_cmd(setup["tree"], out, setup["model"]), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))  # fmt: skip
        records = out / ".kneeseg" / "records"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            done = len(list(records.glob("*.json"))) if records.is_dir() else 0
            if done >= after_records and (after_records or (out / ".kneeseg").is_dir()):
                break
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        recorded = len(list(records.glob("*.json"))) if records.is_dir() else 0
        landed.append((seed, recorded, (out / "manifest.csv").exists()))
        assert_complete_files(out)  # killed at any moment: only complete outputs
        rerun = run(setup["tree"], out, setup["model"])
        assert rerun.exit_code == 0, (seed, rerun.rows)
        assert not kneeseg_temporaries(out), f"seed {seed}: temporary files left"
        assert output_snapshot(out) == setup["clean"], f"seed {seed}: rerun differs from a clean run"
    print("kills (seed, series recorded at the kill, manifest written):", landed)
    assert sum(0 < r < 3 for _, r, _ in landed) >= 3, f"too few kills landed mid-run: {landed}"
