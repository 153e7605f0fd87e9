"""What kneeseg needs to say about files everywhere: the path type it accepts, a file's digest, and
the one line that names a file and what is wrong with it.

Standard library only, so every part of kneeseg (including the torch-free data layer that also
runs under MONAI Label's older pydicom) can import it.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["PathLike", "cause_of", "file_problem", "file_sha256"]

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


def cause_of(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """``exc`` or the first exception of type ``kind`` in its chain of causes (MONAI's config
    evaluation wraps errors in ``RuntimeError("Failed to evaluate ...")``)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kind):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def file_problem(exc: BaseException, path: PathLike) -> str:
    """One line naming ``path`` and the problem ``exc`` reports: the first ``ValueError`` or
    ``OSError`` of its chain where there is one (MONAI wraps a transform's error in a chain of
    ``RuntimeError("applying transform ...")``), with ``path`` in front unless the message names it."""
    reason = cause_of(exc, (ValueError, OSError)) or exc
    text = " ".join(str(reason).split()) or type(reason).__name__
    return text if str(path) in text else f"{path}: {text}"
