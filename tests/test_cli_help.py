"""Every ``kneeseg ... --help`` answers without importing torch or MONAI (they take seconds to load),
and every option of ``bench table1`` says what it does and its default."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

COMMANDS = [[], ["train"], ["evaluate"], ["infer-datalist"], ["infer"], ["data", "phantom"], ["data", "manifest"],
            ["bench"], ["bench", "table1"], ["bench", "cv"], ["bench", "ablations"]]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "kneeseg")
def test_help_loads_neither_torch_nor_monai(command):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "kneeseg.cli", *command, "--help"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "usage:" in proc.stdout
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    heavy = {"torch", "monai", "onnxruntime", "pydicom", "matplotlib"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_bench_table1_options_are_described_with_their_defaults():
    proc = subprocess.run([sys.executable, "-m", "kneeseg.cli", "bench", "table1", "--help"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    text = " ".join(proc.stdout.split())
    for option in ("--out OUT", "--methods NAME", "--seeds S", "--preset PRESET", "--data DATA", "--dataset-dir"):
        assert re.search(re.escape(option) + r"[^-]*\(default", text), option
