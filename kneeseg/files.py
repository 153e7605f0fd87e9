"""What kneeseg needs to say about files everywhere: the path type it accepts and a file's digest.

Standard library only, so every part of kneeseg (including the torch-free data layer that also
runs under MONAI Label's older pydicom) can import it.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["PathLike", "file_sha256"]

#: A file system path as kneeseg's functions accept it: ``str`` or any ``os.PathLike`` (``Path``).
PathLike = str | os.PathLike[str]


def file_sha256(path: PathLike, length: int | None = None) -> str:
    """SHA-256 of a file's bytes as hex, read in 1 MiB blocks; the first ``length`` characters when given.

    Identifies checkpoints in records, caches and MONAI Label apps.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    return digest if length is None else digest[:length]
