"""Atomic writes: the target is either the old or the new complete file; no temp files remain."""

import pytest

from kneeseg.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_atomic_write_gets_the_mode_of_a_plain_write(tmp_path):
    import stat

    from kneeseg.atomic import _UMASK, atomic_write_text

    atomic_write_text(tmp_path / "a.csv", "x\n")  # mkstemp alone would leave it 0600
    (tmp_path / "b.csv").write_text("x\n")
    mode = stat.S_IMODE((tmp_path / "a.csv").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.csv").stat().st_mode) == 0o666 & ~_UMASK
    assert mode != 0o600 or _UMASK == 0o177


def test_keep_name_gives_the_writer_the_real_name_and_cleans_up(tmp_path):
    """For writers that pick the format by the extension (nibabel's ``.nii.gz``): the temporary
    file has the target's own name in a temporary folder; a failed write keeps the old file and
    leaves neither a file nor the folder behind."""
    import nibabel as nib
    import numpy as np

    target = tmp_path / "case_seg.nii.gz"
    with atomic_path(target, keep_name=True) as tmp:
        assert tmp.name == target.name and tmp.parent != target.parent
        nib.save(nib.Nifti1Image(np.ones((4, 5), np.uint8), np.eye(4)), tmp)
        assert not target.exists()
    assert nib.load(target).shape == (4, 5) and sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(target, keep_name=True) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("killed while writing")
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [target.name]
