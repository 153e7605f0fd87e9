"""The ``kneeseg data`` command group: phantom and manifest, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kneeseg.cli import build_parser, main


def test_phantom_command_writes_dataset_and_reports_progress(tmp_path: Path, capsys):
    out = tmp_path / "phantom"
    code = main(["data", "phantom", str(out), "--cases", "3", "--seed", "2", "--shape", "48", "48", "6"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["[1/3]", "[2/3]", "[3/3]"]
    assert lines[-1] == f"wrote {out / 'dataset.json'}"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["generator"] == {"seed": 2, "cases": 3, "shape": [48, 48, 6], "fov_mm": [150.0, 150.0, 120.0]}
    assert sum(len(meta[k]) for k in ("training", "validation", "test")) == 3
    assert (out / "dataset_2d.json").is_file() and len(list((out / "dicom").iterdir())) == 3


def test_phantom_command_quiet_without_png(tmp_path: Path, capsys):
    out = tmp_path / "p"
    assert main(["data", "phantom", str(out), "--cases", "1", "--shape", "32", "32", "4", "--no-png", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {out / 'dataset.json'}"]
    assert not (out / "png").exists() and not (out / "dataset_2d.json").exists()


def test_manifest_command(tmp_path: Path, capsys):
    root = tmp_path / "data"
    for p in range(10):
        for sub in ("imagesTr", "labelsTr"):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / f"pat{p}_scan.nii.gz").write_bytes(b"")
    out = tmp_path / "m.json"
    code = main(
        ["data", "manifest", str(root), "--out", str(out), "--patient-key", r"pat(\d+)_", "--seed", "4",
         "--ratios", "6", "2", "2", "--labels", "background", "femur", "--name", "toy"]
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}: training 6, validation 2, test 2"
    m = json.loads(out.read_text())
    assert m["name"] == "toy" and m["labels"] == {"0": "background", "1": "femur"}
    assert m["split"]["seed"] == 4 and m["split"]["ratios"] == [6, 2, 2]
    assert m["training"][0]["image"].startswith("imagesTr/pat")


def test_errors_are_reported_with_exit_status_2(tmp_path: Path, capsys):
    assert main(["data", "manifest", str(tmp_path / "nope"), "--out", str(tmp_path / "x.json")]) == 2
    assert "kneeseg: error: dataset root" in capsys.readouterr().err
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "imagesTr" / "a.nii.gz").write_bytes(b"")
    assert main(["data", "manifest", str(tmp_path), "--out", str(tmp_path / "x.json"), "--mask-glob", "", "--ratios", "1", "-1", "1"]) == 2
    assert "ratios must be finite and non-negative" in capsys.readouterr().err
    assert main(["data", "manifest", str(tmp_path), "--out", str(tmp_path / "x.json"), "--id-list", "train.txt"]) == 2
    assert "--id-list expects KEY=FILE" in capsys.readouterr().err
    assert main(["data", "phantom", str(tmp_path / "p"), "--cases", "0"]) == 2
    assert "cases must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_usage_help_and_version(capsys):
    assert main([]) == 2  # a command is required
    assert main(["data"]) == 2
    assert main(["data", "phantom", "--help"]) == 0
    assert "--cases" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("kneeseg ")
    # sub-command groups are registered on one parser, so more can be added later
    choices = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert "data" in choices


def test_module_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "kneeseg.cli", "data", "manifest", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "--patient-key" in proc.stdout
