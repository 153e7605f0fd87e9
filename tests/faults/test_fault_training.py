"""Training faults: a kill in the middle of a checkpoint save, a corrupt or foreign ``last.pt``, a
resume whose first validation is worse, a fresh run over an earlier model, the GradScaler state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle_helpers import CONFIGS, TRAIN_CONFIGS, tiny_overrides
from kneeseg.phantom import generate_phantom
from kneeseg.handlers import BestCheckpointSaver, LastCheckpointSaver, ResumeFromCheckpoint
from kneeseg.atomic import is_temporary_of


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train_faults")
    generate_phantom(out, cases=3, seed=2, shape=(48, 48, 8), png_negatives=1)
    return out


def _workflow(dataset: Path, run_dir: Path, **extra) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=TRAIN_CONFIGS, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
        **tiny_overrides(dataset, run_dir, **extra),
    )  # fmt: skip
    wf.initialize()
    return wf


def _train(dataset: Path, run_dir: Path, **extra) -> ConfigWorkflow:
    wf = _workflow(dataset, run_dir, **extra)
    wf.run()
    wf.finalize()
    return wf


def test_kill_during_a_checkpoint_save_then_resume(phantom, tmp_path):
    """SIGKILL-like exit half-way through writing last.pt after epoch 2: the epoch-1 checkpoint is
    intact, the next run removes the leftover and resumes at epoch 2."""
    script = tmp_path / "train_and_die.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from bundle_helpers import CONFIGS, TRAIN_CONFIGS, tiny_overrides
        from monai.bundle import ConfigWorkflow
        from pathlib import Path
        real, calls = torch.save, []
        def dying_save(obj, f, *a, **k):  # f: the open temporary file beside the checkpoint
            calls.append(f.name)
            if "last.pt" in f.name and sum("last.pt" in c for c in calls) == 2:
                f.write(b"half a checkpoint")
                f.flush()
                os._exit(137)  # no cleanup, like SIGKILL
            return real(obj, f, *a, **k)
        torch.save = dying_save
        wf = ConfigWorkflow(config_file=TRAIN_CONFIGS, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
                            **tiny_overrides(Path({str(phantom)!r}), Path({str(tmp_path / 'run')!r}), max_epochs=3))
        wf.initialize(); wf.run()
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 137, proc.stderr[-2000:]
    models = tmp_path / "run" / "models"
    leftovers = [p for p in models.iterdir() if is_temporary_of(p.name, "last.pt")]
    assert len(leftovers) == 1  # the half-written temporary; last.pt itself is the complete epoch-1 file
    trainer_state = torch.load(models / "last.pt", weights_only=True)["trainer"]
    assert trainer_state["iteration"] // trainer_state["epoch_length"] == 1  # epoch 1, complete
    wf = _train(phantom, tmp_path / "run", max_epochs=3, resume=True)
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 3
    assert not [p for p in models.iterdir() if is_temporary_of(p.name)]


def _root_cause(exc: BaseException) -> BaseException:
    """MONAI's config parser wraps errors in RuntimeError; the user's message is the cause."""
    while exc.__cause__ is not None:
        if isinstance(exc, ValueError):
            return exc
        exc = exc.__cause__
    return exc


def test_resume_refuses_a_corrupt_or_foreign_checkpoint(phantom, tmp_path):
    _train(phantom, tmp_path / "run", max_epochs=1)
    last = tmp_path / "run" / "models" / "last.pt"
    good = last.read_bytes()
    with pytest.raises(Exception) as info:
        _train(phantom, tmp_path / "run", max_epochs=2, resume=True, width=8)
    cause = _root_cause(info.value)
    assert isinstance(cause, ValueError)
    assert "last.pt: cannot resume, its 'model' was saved by a different network configuration" in str(cause)
    last.write_bytes(good[: len(good) // 2])
    with pytest.raises(Exception) as info:
        _train(phantom, tmp_path / "run", max_epochs=2, resume=True)
    cause = _root_cause(info.value)
    assert isinstance(cause, ValueError) and "last.pt: cannot resume, the checkpoint is unreadable" in str(cause)
    assert "delete it to start again, or train with resume=false" in str(cause)


def test_resume_keeps_a_better_model_and_a_fresh_run_keeps_the_earlier_one(phantom, tmp_path):
    run_dir = tmp_path / "run"
    _train(phantom, run_dir, max_epochs=1)
    model = run_dir / "models" / "model.pt"
    record = model.with_suffix(".json")
    info = json.loads(record.read_text())
    assert info["metric"] == "val_f1" and info["epoch"] == 1
    assert isinstance(torch.load(model, weights_only=True), dict)  # a bare state dict, as MONAI writes it
    info["score"] = 2.0  # unbeatable: no later validation may replace it
    record.write_text(json.dumps(info))
    before = model.read_bytes()
    _train(phantom, run_dir, max_epochs=2, resume=True)
    assert model.read_bytes() == before, "a resumed run replaced a better model.pt"
    # a fresh run (resume=false) writes its own model.pt and keeps the earlier one aside
    _train(phantom, run_dir, max_epochs=1, resume=False)
    kept = [p for p in (run_dir / "models").glob("model.*.pt")]
    assert len(kept) == 1 and kept[0].read_bytes() == before
    assert json.loads(kept[0].with_suffix(".json").read_text())["score"] == 2.0
    assert BestCheckpointSaver.stored_score(model) < 2.0


def test_the_grad_scaler_state_is_saved_and_restored(tmp_path):
    """fp16 AMP's GradScaler (a real torch.amp.GradScaler) goes into last.pt and comes back."""
    from ignite.engine import Engine, Events

    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def make_engine(scale: float) -> Engine:
        engine = Engine(lambda e, b: None)
        engine.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        return engine

    first = make_engine(1024.0)
    first.scaler.scale(torch.ones(1))  # the scaler's state exists once it has scaled a loss
    saver = LastCheckpointSaver(tmp_path, {"model": net, "optimizer": opt})
    saver.attach(first)
    first.scaler.update(new_scale=256.0)
    first.run([0], max_epochs=1)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["scaler"]["scale"] == 256.0
    second = make_engine(1024.0)
    ResumeFromCheckpoint(tmp_path / "last.pt", {"model": net, "optimizer": opt}).attach(second)
    second.fire_event(Events.STARTED)
    assert second.scaler.get_scale() == 256.0
