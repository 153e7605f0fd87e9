"""Atomic file writes: a temporary file beside the target, then ``os.replace``.

A crash or a kill at any moment leaves either the previous file or the complete new one,
never a half-written file; the temporary file is removed on errors. Standard library only,
so every part of kneeseg (including the torch-free data layer) can use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kneeseg.files import PathLike

__all__ = ["TEMP_MARKER", "atomic_path", "atomic_write_bytes", "atomic_write_text", "is_temporary_of"]

#: Part of every temporary file name kneeseg writes (``.<name>.kneeseg-<random>.tmp``), so that a
#: cleanup can tell its own leftovers from anybody else's ``.tmp`` files.
TEMP_MARKER = ".kneeseg-"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once at import: os.umask can only be read by setting it, which would race with writer threads
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: PathLike, keep_name: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    For writers that want a file name (``torch.save``, ``nibabel.save``)::

        with atomic_path("models/last.pt") as tmp:
            torch.save(state, tmp)

    ``keep_name``: the temporary path has ``path``'s own name, inside a temporary folder beside it,
    for writers that choose the format by the name's extension (``x.nii.gz``); the folder goes too.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if keep_name:
        folder = Path(tempfile.mkdtemp(prefix=f".{out.name}{TEMP_MARKER}", suffix=".tmp", dir=out.parent))
        try:
            yield folder / out.name
            os.replace(folder / out.name, out)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}{TEMP_MARKER}", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        # mkstemp creates the file 0600; give the result the mode a plain open() would (0666 - umask)
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield Path(tmp)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def is_temporary_of(filename: str, target: str | None = None) -> bool:
    """True when ``filename`` is a temporary file :func:`atomic_path` made (for ``target`` when given)."""
    if not (filename.startswith(".") and filename.endswith(".tmp") and TEMP_MARKER in filename):
        return False
    name = filename[1 : filename.rindex(TEMP_MARKER)]
    return target is None or name == target
