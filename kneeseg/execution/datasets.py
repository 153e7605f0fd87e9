"""The bundle's inference dataset: a batch job that records failures, carries on, and resumes.

:class:`ResumableDataset` feeds the ``inferring`` workflow (``inference.json``, ``kneeseg
infer-datalist``). It preprocesses the datalist's images one by one, as MONAI's ``Dataset`` does,
but

- an image that cannot be read or preprocessed (a missing or corrupt file, NaNs, a wrong shape)
  is logged with its file and the problem, written to ``failures.csv`` in the output folder
  (``image, error``; rewritten atomically after each failure, removed by a run without any), and
  skipped: the other images are still predicted;
- an image whose mask already exists (the saver's :meth:`~kneeseg.transforms.SaveLabelsd.output_path`;
  masks are written atomically, so one that exists is complete) is skipped unless ``overwrite``:
  a rerun after a crash or a kill continues where the last one stopped.

It is an ``IterableDataset`` without a length: MONAI's engines then run until it is exhausted, so
a skipped image costs no iteration (with a length, ignite would expect that many items and start
the list again when fewer come). One process reads the list: use it with ``num_workers=0``, as the bundle does.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset

from kneeseg.atomic import atomic_write_text
from kneeseg.files import file_problem

__all__ = ["FAILURES_CSV", "ResumableDataset"]

logger = logging.getLogger(__name__)

#: the failures of an inference run, in its output folder
FAILURES_CSV = "failures.csv"


class ResumableDataset(IterableDataset):
    """The preprocessed images of ``data`` (datalist entries), less those that fail and those done.

    Args:
        data: datalist entries (dicts with the ``image_key`` path).
        transform: the preprocessing applied to each entry.
        saver: the post-processing's :class:`~kneeseg.transforms.SaveLabelsd`: where each image's mask
            goes (to skip finished images). ``None``: nothing is skipped.
        output_dir: where ``failures.csv`` goes (default: the saver's output folder).
        overwrite: predict images whose mask exists again.
        image_key: the entries' image key.
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        transform: Callable[[Any], Any] | None = None,
        saver: Any = None,
        output_dir: str | os.PathLike | None = None,
        overwrite: bool = False,
        image_key: str = "image",
    ) -> None:
        self.data = list(data)
        self.transform = transform
        self.saver = saver
        folder = output_dir if output_dir is not None else getattr(getattr(saver, "saver", None), "folder_layout", None)
        folder = getattr(folder, "output_dir", folder)
        self.output_dir = Path(folder) if folder is not None else None
        self.overwrite = bool(overwrite)
        self.image_key = image_key
        #: ``(image, error)`` of this pass's failures
        self.failures: list[tuple[str, str]] = []
        #: images skipped because their mask exists
        self.done_earlier: list[str] = []

    def _done(self, image: str) -> bool:
        if self.overwrite or self.saver is None:
            return False
        return os.path.isfile(self.saver.output_path(image=image))

    def _write_failures(self) -> None:
        if self.output_dir is None:
            return
        path = self.output_dir / FAILURES_CSV
        if not self.failures:
            if path.is_file():
                path.unlink()
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", "error"])
        writer.writerows(self.failures)
        atomic_write_text(path, buf.getvalue())

    def __iter__(self) -> Iterator[Any]:
        self.failures, self.done_earlier = [], []
        predicted = 0
        for entry in self.data:
            image = str(entry.get(self.image_key, ""))
            if image and self._done(image):
                self.done_earlier.append(image)
                continue
            try:
                item = self.transform(dict(entry)) if self.transform is not None else dict(entry)
            except Exception as exc:  # noqa: BLE001 -- any failure of one image is that image's, recorded
                message = file_problem(exc, image)
                logger.warning("skipped %s", message)
                self.failures.append((image, message))
                self._write_failures()
                continue
            predicted += 1
            yield item
        self._write_failures()
        parts = [f"{predicted} of {len(self.data)} image(s) predicted"]
        if self.done_earlier:
            parts.append(f"{len(self.done_earlier)} skipped: their mask exists (overwrite=true redoes them)")
        if self.failures:
            parts.append(f"{len(self.failures)} failed, listed in {self.output_dir / FAILURES_CSV if self.output_dir else 'the log'}")
        logger.info("inference: %s", "; ".join(parts))
