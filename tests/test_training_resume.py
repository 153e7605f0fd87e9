"""`kneeseg train` as a user meets it: a killed run resumed to the losses of an uninterrupted one,
a rerun over an earlier run that asks for --resume or --fresh, Ctrl-C, and the closing summary."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bundle_helpers import make_tiny_phantom

EPOCHS = 4


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return make_tiny_phantom(tmp_path_factory.mktemp("phantom"))


def _cmd(phantom: Path, run: Path, *extra: str) -> list[str]:
    tiny = ["spatial_size=64", "width=4", "batch_size=4", "val_interval=1", f"max_epochs={EPOCHS}"]
    return [sys.executable, "-m", "kneeseg.cli", "train", "--preset", "cpu", "--data", "phantom",
            "--dataset-dir", str(phantom), "--model", str(run / "models"), "--output-dir", str(run / "runs"),
            *[f"--set={t}" for t in tiny], *extra]  # fmt: skip


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _epoch_of(last: Path) -> int:
    state = torch.load(last, map_location="cpu", weights_only=True)["trainer"]
    return int(state["iteration"]) // int(state["epoch_length"])


def _start_and_stop_after_first_epoch(cmd: list[str], last: Path, sig: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not last.is_file() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    return proc


@pytest.fixture(scope="module")
def uninterrupted(phantom, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run = tmp_path_factory.mktemp("whole")
    proc = _run(_cmd(phantom, run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc


def _history(run: Path) -> dict:
    return json.loads((run / "runs" / "history.json").read_text())


def test_a_killed_training_resumes_to_the_losses_of_an_uninterrupted_one(phantom, uninterrupted, tmp_path):
    ref, whole = uninterrupted
    # the closing summary: best metric, where the model and the curves are
    out = whole.stdout.strip().splitlines()
    assert out[-4].startswith("best val_f1 ") and " at epoch " in out[-4], out
    assert out[-3] == f"model:  {ref / 'models' / 'model.pt'}"
    assert out[-2] == f"curves: {ref / 'runs' / 'training_curves.png'}"
    # progress: one line per epoch with the time left (stderr is not a terminal here)
    assert f"epoch 1/{EPOCHS}: loss " in whole.stderr and " left" in whole.stderr
    assert "Not all config files are in" not in whole.stdout + whole.stderr

    run = tmp_path / "killed"
    last = run / "models" / "last.pt"
    proc = _start_and_stop_after_first_epoch(_cmd(phantom, run), last, signal.SIGKILL)
    proc.communicate(timeout=120)
    stopped_at = _epoch_of(last)  # last.pt is whole after a SIGKILL: written atomically
    assert 1 <= stopped_at < EPOCHS, f"the kill landed after epoch {stopped_at}"

    again = _run(_cmd(phantom, run))  # the same command again: neither continue nor overwrite silently
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"kneeseg: error: {last} holds epoch {stopped_at} of {EPOCHS}, not finished: add --resume to continue it, "
        "or --fresh to start a new run (an earlier model.pt is then kept aside as model.<date>.pt)"
    )
    resumed = _run(_cmd(phantom, run, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "no checkpoint" not in resumed.stderr
    a, b = _history(ref), _history(run)
    assert b["epoch"] == list(range(1, EPOCHS + 1)) and b["val_epoch"] == list(range(1, EPOCHS + 1))
    assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
    for name, values in a["val"].items():
        assert b["val"][name] == pytest.approx(values, abs=1e-6), name
    assert _epoch_of(last) == EPOCHS

    # --fresh: a new run, the earlier model kept aside
    fresh = _run(_cmd(phantom, run, "--fresh", "--set=max_epochs=1"))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert _history(run)["epoch"] == [1]
    assert list((run / "models").glob("model.*.pt")), "the earlier model.pt was not kept aside"


def test_without_its_random_streams_a_resume_warns_and_goes_another_way(phantom, uninterrupted, tmp_path):
    """The random streams in last.pt are what makes a resume exact: a checkpoint without them
    (written before they were saved) still resumes, with a warning, and draws other batches."""
    run = tmp_path / "old"
    first = _run(_cmd(phantom, run, "--set=max_epochs=2"))
    assert first.returncode == 0, first.stderr[-3000:]
    last = run / "models" / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert "rng" in state
    del state["rng"]
    state["trainer"]["max_epochs"] = EPOCHS
    torch.save(state, last)
    resumed = _run(_cmd(phantom, run, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "holds no 'rng' state: the run resumes, but not exactly" in resumed.stdout + resumed.stderr
    a, b = _history(uninterrupted[0]), _history(run)
    assert b["loss"][:2] == pytest.approx(a["loss"][:2], abs=1e-6)
    assert b["loss"][2:] != pytest.approx(a["loss"][2:], abs=1e-6)


@pytest.mark.parametrize("sig, name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_during_training_says_how_to_continue_and_leaves_a_valid_last_pt(phantom, tmp_path, sig, name):
    run = tmp_path / "run"
    last = run / "models" / "last.pt"
    proc = _start_and_stop_after_first_epoch(_cmd(phantom, run), last, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"kneeseg: training interrupted ({name}); {last} holds the last finished epoch: rerun the same command "
        "with --resume to continue"
    )
    assert "Traceback" not in err
    assert 1 <= _epoch_of(last) <= EPOCHS


def test_on_a_terminal_training_draws_a_bar_with_the_time_left(phantom, tmp_path):
    """Through a real pseudo-terminal (as a user's shell): a tqdm bar redrawn in place, with the
    epoch, the loss and the time left; no per-epoch lines."""
    from terminal_helpers import run_in_terminal

    code, screen = run_in_terminal(_cmd(phantom, tmp_path / "run", "--set=max_epochs=2"))
    assert code == 0
    frames = [f for f in screen.split("\r") if f.strip()]
    assert any(f.startswith("epoch 2/2: 100%|") and "loss=" in f for f in frames), screen[-1500:]
    assert any(re.search(r"\[\d\d:\d\d<\d\d:\d\d", f) for f in frames), "no elapsed<left time in the bar"
    assert "epoch 1/2: loss" not in screen  # the per-epoch lines are for logs, not terminals
    assert frames[-1].strip() == "training: 2 epochs in " + frames[-1].strip().split(" in ")[-1]
