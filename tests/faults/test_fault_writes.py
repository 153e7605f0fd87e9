"""Write faults in batch inference: a full disk or a refused write at every kind of output.

For each output (NIfTI, DICOM SEG, PNG preview, the per-series record, the manifest) the first
write fails with ENOSPC or EACCES at the file-system call. The run must finish (no hang), say
which file and why, keep every other series, leave no temporary or half-written file, exit 1,
and a rerun without the fault must end exactly like a clean run. A real full tmpfs and a
read-only output folder check the same without injection.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fault_helpers import (
    EACCES,
    ENOSPC,
    TINY,
    assert_complete_files,
    can_mount,
    failing_writes,
    kneeseg_temporaries,
    make_tree,
    run,
    tmpfs,
)
from inference_helpers import output_snapshot, untrained_model

TARGETS = {
    "nifti": lambda p: p.name == "seg.nii.gz",
    "seg": lambda p: p.name == "seg.dcm",
    "png": lambda p: p.name == "preview.png",
    "record": lambda p: p.parent.name == "records" and p.suffix == ".json",
    "manifest": lambda p: p.name == "manifest.csv",
}
MESSAGES = {ENOSPC: "No space left on device", EACCES: "Permission denied"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("write_faults")
    tree = make_tree(root)
    model = untrained_model(root / "model.pt")
    clean = root / "clean"
    res = run(tree, clean, model)
    assert res.exit_code == 0 and res.counts == {"ok": 3}
    return {"tree": tree, "model": model, "clean": output_snapshot(clean)}


@pytest.mark.parametrize("code", [ENOSPC, EACCES], ids=["ENOSPC", "EACCES"])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_failed_write_is_reported_and_a_rerun_completes(setup, tmp_path, target, code):
    out = tmp_path / "out"
    with failing_writes(TARGETS[target], code) as failed:
        res = run(setup["tree"], out, setup["model"])
    assert len(failed) == 1, f"the {target} write was never attempted"
    assert res.exit_code == 1
    assert not kneeseg_temporaries(out), "temporary files left"
    assert_complete_files(out)
    message = MESSAGES[code]
    if target == "manifest":
        assert res.manifest_error.startswith(f"could not write {out / 'manifest.csv'}: {message}")
        assert not (out / "manifest.csv").exists() and res.counts == {"ok": 3}  # every series done and recorded
    else:
        bad = [r for r in res.rows if r["status"] == "failed"]
        assert len(bad) == 1 and sum(r["status"] == "ok" for r in res.rows) == 2
        assert message in bad[0]["reason"] and failed[0].name in bad[0]["reason"]
        if target == "record":
            assert bad[0]["reason"].startswith("could not write its record")
        rows = [r for r in (out / "manifest.csv").read_text().splitlines()[1:]]
        assert len(rows) == 3, "a row went missing"
    rerun = run(setup["tree"], out, setup["model"])
    assert rerun.exit_code == 0 and rerun.counts == {"ok": 3}
    assert output_snapshot(out) == setup["clean"]


@pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))
def test_a_really_full_disk(setup, tmp_path):
    """A 120 KB tmpfs (a clean run writes about 220 KB): what fits is kept, the rest fails with ENOSPC;
    remounted bigger, a rerun completes it."""
    out = tmp_path / "small"
    with tmpfs(out, "120k"):
        res = run(setup["tree"], out, setup["model"])
        assert res.exit_code == 1
        failed = [r for r in res.rows if r["status"] == "failed"]
        assert failed and all("No space left on device" in r["reason"] for r in failed), res.rows
        assert not kneeseg_temporaries(out)
        assert_complete_files(out)
        subprocess.run(["mount", "-o", "remount,size=50m", str(out)], check=True)
        rerun = run(setup["tree"], out, setup["model"])
        assert rerun.exit_code == 0 and rerun.resumed == 3 - len(failed)
        assert output_snapshot(out) == setup["clean"]


@pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))
def test_a_read_only_output_folder_is_a_clear_error(setup, tmp_path):
    out = tmp_path / "ro"
    with tmpfs(out, "1m", read_only=True):
        with pytest.raises(OSError, match=f"output folder {out} is not writable: Read-only file system"):
            run(setup["tree"], out, setup["model"])
        args = ["infer", str(setup["tree"]), "-o", str(out), "--ckpt", str(setup["model"]), "--runtime", "eager"]
        args += sum((["--set", f"{k}={v}"] for k, v in TINY.items()), [])
        proc = subprocess.run([sys.executable, "-m", "kneeseg.cli", *args], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))  # fmt: skip
        assert proc.returncode == 2
        assert f"kneeseg: error: output folder {out} is not writable: Read-only file system" in proc.stderr
