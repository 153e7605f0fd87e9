"""The convergence rule: early stopping on the validation metric, the stop record, the schedules."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow

from bundle_helpers import CONFIGS, TRAIN_CONFIGS, make_tiny_phantom, tiny_overrides
from kneeseg.execution import lr_scheduler
from kneeseg.handlers import EarlyStopping, ScheduleStepper, read_stop_record


def _engines(scores):
    """A real ignite trainer (no-op iterations) that runs a real validator after every epoch; the
    validator reports ``scores[epoch - 1]`` as its key metric ``val_dice``."""
    trainer = Engine(lambda e, b: None)
    validator = Engine(lambda e, b: None)
    validator.state.key_metric_name = "val_dice"

    @validator.on(Events.COMPLETED)
    def _score(engine):
        engine.state.metrics["val_dice"] = scores[trainer.state.epoch - 1]

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0]))
    return trainer, validator


def test_stops_once_the_metric_has_not_improved_for_patience_epochs(tmp_path):
    trainer, validator = _engines([0.1, 0.5, 0.4, 0.5, 0.45, 0.49, 0.9, 0.95])
    stop = EarlyStopping(validator, patience=3, output_dir=tmp_path)
    stop.attach(trainer)  # after the validator's own handler: it sees this epoch's score
    trainer.run([0, 0], max_epochs=8)
    assert trainer.state.epoch == 5  # best 0.5 at epoch 2 (a tie does not count), 3 epochs without
    record = read_stop_record(tmp_path)
    assert record == {"stop_reason": "patience", "metric": "val_dice", "best_metric": 0.5, "best_epoch": 2,
                      "epochs": 5, "iterations": 10, "max_epochs": 8, "patience": 3}  # fmt: skip


def test_min_delta_and_the_cap(tmp_path):
    trainer, validator = _engines([0.1, 0.2, 0.3, 0.4])
    EarlyStopping(validator, patience=0, output_dir=tmp_path / "off").attach(trainer)
    trainer.run([0], max_epochs=4)
    assert read_stop_record(tmp_path / "off")["stop_reason"] == "max_epochs" and trainer.state.epoch == 4
    trainer, validator = _engines([0.1, 0.15, 0.2, 0.25, 0.3])
    EarlyStopping(validator, patience=2, min_delta=0.1, output_dir=tmp_path / "delta").attach(trainer)
    trainer.run([0], max_epochs=5)
    rec = read_stop_record(tmp_path / "delta")
    assert rec["stop_reason"] == "patience" and rec["best_epoch"] == 1 and rec["epochs"] == 3
    with pytest.raises(ValueError, match="patience must be >= 0"):
        EarlyStopping(validator, patience=-1)


def test_a_resumed_run_stops_where_an_uninterrupted_one_would_with_min_delta(tmp_path):
    """With ``min_delta`` the rule's best (improved by more than it) is not the checkpoint's (any
    improvement): a resumed run replays the rule over the run's history.json instead of starting
    from the checkpoint's record."""
    scores = [0.5, 0.6, 0.605, 0.61, 0.615, 0.62, 0.625, 0.63]
    trainer, validator = _engines(scores)
    EarlyStopping(validator, patience=3, min_delta=0.02, output_dir=tmp_path / "whole").attach(trainer)
    trainer.run([0], max_epochs=8)
    assert trainer.state.epoch == 5 and read_stop_record(tmp_path / "whole")["best_epoch"] == 2
    # the same run cut after epoch 3: its history (TrainingCurveHandler's format) and its checkpoint's
    # record (model.json: the best by any improvement, epoch 3)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "history.json").write_text(json.dumps({"epoch": [1, 2, 3, 4], "loss": [1.0] * 4, "val_epoch": [1, 2, 3, 4],
                                                  "val": {"val_dice": scores[:4]}}))  # fmt: skip  # epoch 4 not in last.pt
    (cut / "model.json").write_text(json.dumps({"score": 0.605, "epoch": 3}))

    def resumed() -> Engine:
        trainer, validator = _engines(scores)
        EarlyStopping(validator, patience=3, min_delta=0.02, output_dir=cut, resume_record=cut / "model.json").attach(trainer)
        trainer.load_state_dict({"epoch": 3, "max_epochs": 8, "epoch_length": 1})
        trainer.run([0])
        return trainer

    assert resumed().state.epoch == 5 and read_stop_record(cut)["best_epoch"] == 2
    (cut / "history.json").unlink()  # without the history only the checkpoint's record is left
    assert resumed().state.epoch == 6 and read_stop_record(cut)["best_epoch"] == 3


def test_plateau_schedule_reduces_after_patience_validations_without_improvement():
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = lr_scheduler(opt, "plateau", patience=2)
    trainer, validator = _engines([0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7])
    ScheduleStepper(sched, validator).attach(trainer)
    lrs = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: lrs.append(opt.param_groups[0]["lr"]))
    trainer.run([0], max_epochs=7)
    # best 0.6 at epoch 2; epochs 3 and 4 do not improve -> x0.1 after epoch 4; 0.7 at 5, then 6, 7
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-5])


def test_step_and_cosine_schedules_step_per_epoch_and_bad_names_are_refused():
    net = torch.nn.Linear(2, 1)
    # the rate each epoch leaves for the next one: x0.1 once 2 epochs are done
    for name, expected in (("step", [1e-3, 1e-4, 1e-4, 1e-4]), ("cosine", [8.536e-4, 5e-4, 1.464e-4, 0.0])):
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        sched = lr_scheduler(opt, name, milestones=[2], max_epochs=4)
        trainer = Engine(lambda e, b: None)
        ScheduleStepper(sched).attach(trainer)
        lrs = []
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e, o=opt: lrs.append(o.param_groups[0]["lr"]))
        trainer.run([0], max_epochs=4)
        assert lrs == pytest.approx(expected, abs=1e-6), name
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        lr_scheduler(torch.optim.Adam(net.parameters()), "linear")


def test_bundle_training_stops_early_and_records_why(tmp_path):
    """Through the bundle: nothing after the first validation improves by 1.0, so a run with
    patience 2 stops after epoch 3 of 10, with the record in runs/stop.json, on the plateau schedule."""
    data = make_tiny_phantom(tmp_path / "phantom")
    wf = ConfigWorkflow(
        config_file=TRAIN_CONFIGS, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
        **tiny_overrides(data, tmp_path / "run", max_epochs=10, early_stop_patience=2, early_stop_min_delta=1.0,
                         lr_schedule="plateau", lr_patience=1, resume=False),
    )  # fmt: skip
    wf.initialize()
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    record = json.loads((tmp_path / "run" / "runs" / "stop.json").read_text())
    assert trainer.state.epoch == 3 and record["stop_reason"] == "patience" and record["best_epoch"] == 1
    assert record["iterations"] == trainer.state.iteration and record["max_epochs"] == 10
    assert (tmp_path / "run" / "models" / "model.pt").is_file() and (tmp_path / "run" / "models" / "last.pt").is_file()
    assert isinstance(wf.parser.get_parsed_content("lr_scheduler"), torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_the_cpu_converged_preset_is_the_cpu_recipe_under_the_cv_rule_with_a_cap_no_cv_run_reached():
    """presets/cpu_converged.json = presets/cpu.json (its step schedule aside) + the CV's convergence rule,
    with a cap above every run of the shipped 5-fold table; the bundle builds it with early stopping on
    and the plateau schedule."""
    import csv
    from pathlib import Path

    from monai.bundle import ConfigParser

    from kneeseg.experiments.protocol import CONVERGENCE_RULE
    from kneeseg.workflows import workflow_config_files

    cpu = json.loads((CONFIGS / "presets" / "cpu.json").read_text())
    conv = json.loads((CONFIGS / "presets" / "cpu_converged.json").read_text())
    expected = {k: v for k, v in cpu.items() if k != "lr_drop_epoch"} | dict(CONVERGENCE_RULE)
    cap = conv.pop("max_epochs")
    expected.pop("max_epochs")
    assert conv == expected
    runs = list(csv.DictReader((Path(__file__).parents[1] / "docs" / "results" / "cv" / "runs.csv").open()))
    assert runs and cap <= CONVERGENCE_RULE["max_epochs"]
    assert max(int(r["epochs"]) for r in runs) < cap and all(r["stop_reason"] == "patience" for r in runs)

    parser = ConfigParser()
    parser.read_config(workflow_config_files("train", preset="cpu_converged", data="phantom"))
    assert parser.get_parsed_content("max_epochs") == cap and parser.get_parsed_content("early_stop_patience") == 20
    assert isinstance(parser.get_parsed_content("lr_scheduler"), torch.optim.lr_scheduler.ReduceLROnPlateau)
