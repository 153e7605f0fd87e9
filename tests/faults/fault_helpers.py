"""Shared pieces of the fault-injection suite: a tiny model, a small DICOM tree, write faults.

Faults are injected at the file-system call that commits every kneeseg write (``os.replace`` of
the temporary file onto its target, :func:`kneeseg.atomic.atomic_path`), or are real (a full or
read-only tmpfs, a SIGKILL). Each case checks what the user sees (a row or message naming the
file and the problem), that nothing is lost or half-written, and that a rerun ends like a clean run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path
from collections.abc import Callable, Iterator

import nibabel as nib
import pydicom
from PIL import Image

TINY = {"width": 4, "spatial_size": 64}
PHANTOM = {"cases": 3, "seed": 31, "shape": (48, 48, 8)}


def make_tree(root: Path) -> Path:
    """Three small phantom DICOM series (one patient each); returns the folder to segment."""
    from kneeseg.phantom import generate_phantom

    generate_phantom(root / "src", png=False, **PHANTOM)
    return root / "src" / "dicom"


def run(tree: Path, out: Path, model: Path, **kwargs):
    from kneeseg.inference.batch import predict_folder

    kwargs.setdefault("progress", lambda line: None)
    return predict_folder(tree, out, ckpt=model, overrides=TINY, runtime="eager", **kwargs)


@contextlib.contextmanager
def failing_writes(matches: Callable[[Path], bool], code: int, times: int = 1) -> Iterator[list]:
    """Make the first ``times`` commits of files matching ``matches`` fail with ``code``
    (``errno.ENOSPC``: the disk is full, ``errno.EACCES``: permission denied); yields the
    list of paths that failed."""
    real = os.replace
    failed: list = []

    def replace(src, dst, *args, **kwargs):
        target = Path(os.fsdecode(dst))
        if len(failed) < times and matches(target):
            failed.append(target)
            raise OSError(code, os.strerror(code), str(target))
        return real(src, dst, *args, **kwargs)

    os.replace = replace
    try:
        yield failed
    finally:
        os.replace = real


def kneeseg_temporaries(out: Path) -> list:
    from kneeseg.atomic import is_temporary_of

    return [p for p in out.rglob("*") if is_temporary_of(p.name)]


def assert_complete_files(out: Path) -> None:
    """Every output file present opens completely (nothing half-written)."""
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        if p.name.endswith(".nii.gz"):
            nib.load(str(p)).get_fdata()
        elif p.suffix == ".dcm":
            pydicom.dcmread(p).pixel_array
        elif p.suffix == ".png":
            Image.open(p).load()


def can_mount() -> str | None:
    """None when this process may mount a tmpfs (root with mount), else why not."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """Mount a real tmpfs of ``size`` at ``path`` (a full disk or a read-only folder), then unmount."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mount failed: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


ENOSPC, EACCES, EROFS = errno.ENOSPC, errno.EACCES, errno.EROFS
