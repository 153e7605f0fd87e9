"""MONAI ``ImageReader`` for DICOM series folders, built on the :mod:`kneeseg.data.dicom` package.

Use it with ``monai.transforms.LoadImage(reader=KneeDicomReader())`` or ``LoadImaged``.
MONAI's own ``PydicomReader`` stacks every file of a folder as slices of one volume; this reader
groups by SeriesInstanceUID, splits echoes, orders slices by geometry, checks for gaps and returns
the array layout and RAS affine that nibabel reports for dcm2niix's NIfTI of the same series.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data.image_reader import ImageReader
from monai.utils import MetaKeys, SpaceKeys, TraceKeys, ensure_tuple

from kneeseg.data.dicom.discovery import discover_series
from kneeseg.data.dicom.loading import load_volume, select_volume
from kneeseg.data.dicom.volume import LPS_TO_RAS, DicomSeriesError
from kneeseg.files import PathLike

__all__ = ["KneeDicomReader"]


class KneeDicomReader(ImageReader):
    """Read one DICOM volume per input (a series folder, or the files of one series).

    The returned array is float32 shaped ``(columns, rows, slices)`` (rescale applied); the meta
    dict holds ``affine`` and ``original_affine`` (RAS by default), ``spatial_shape``, ``spacing``,
    ``pixdim`` (NIfTI-style: ``pixdim[1:4]`` is the voxel size), ``space``, ``affine_lps`` and the
    series description (``volume_id``, ``series_uid``, ``echo_index``, ``echo_time``, ...).

    Args:
        echo: 0-based echo index (echoes sorted by echo time). A multi-echo series without it
            raises :class:`DicomSeriesError` listing the echoes.
        series_uid: SeriesInstanceUID to read when a folder holds several series (otherwise an
            error names them).
        volume_id: exact volume id from :func:`discover_series` (overrides ``echo``/``series_uid``).
        strict: if True, an unreadable/truncated/empty DICOM file in the input is an error;
            if False it is logged and skipped.
        affine_lps_to_ras: if True (default) ``affine`` is RAS (MONAI/NIfTI); else DICOM LPS.
        channel_dim: as in MONAI's readers; None means "no channel" for a single 3D input.

    Raises:
        DicomSeriesError: (a ``ValueError``) from ``read`` with a message naming the folder,
            series or file and the problem.

    See also:
        :func:`kneeseg.data.dicom.discovery.discover_series`, :func:`kneeseg.data.dicom.loading.load_series`.

    Input forms: a folder -> one volume; several folders -> one volume each, stacked on a new
    channel dim (affines must match); a list of files -> one volume made of those files.
    """

    def __init__(
        self,
        echo: int | None = None,
        series_uid: str | None = None,
        volume_id: str | None = None,
        strict: bool = True,
        affine_lps_to_ras: bool = True,
        channel_dim: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.echo = echo
        self.series_uid = series_uid
        self.volume_id = volume_id
        self.strict = strict
        self.affine_lps_to_ras = affine_lps_to_ras
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True for folders, ``*.dcm`` files and files with the DICOM ``DICM`` marker."""
        for name in ensure_tuple(filename):
            path = Path(f"{name}")
            if path.is_dir() or path.suffix.lower() == ".dcm":
                continue
            try:
                if not pydicom.misc.is_dicom(str(path)):
                    return False
            except OSError:
                return False
        return True

    def read(
        self, data: Sequence[PathLike] | PathLike, **kwargs: Any
    ) -> list[tuple[np.ndarray, dict] | DicomSeriesError]:
        """Discover and decode the input; returns one ``(array, meta)`` per volume.

        Raises ``DicomSeriesError`` at once only when the input holds no DICOM at all; errors about
        DICOM input (several series/echoes, gaps, unreadable files) are returned and raised by
        :meth:`get_data`, so that ``LoadImage`` reports them instead of trying another reader.
        """
        names = [Path(f"{n}") for n in ensure_tuple(data)]
        options = {**self.kwargs, **kwargs}
        echo = options.get("echo", self.echo)
        series_uid = options.get("series_uid", self.series_uid)
        volume_id = options.get("volume_id", self.volume_id)
        if names and all(n.is_file() for n in names) and len(names) > 1:
            groups: list[list[Path]] = [names]  # the files of one series
        else:
            groups = [[n] for n in names]
        out: list[tuple[np.ndarray, dict] | DicomSeriesError] = []
        for group in groups:
            source = str(group[0]) if len(group) == 1 else f"{len(group)} files in {group[0].parent}"
            result = discover_series([str(p) for p in group])
            if not result.volumes and not result.problems:
                # nothing DICOM here: raise now so that LoadImage can try its other readers
                raise DicomSeriesError(f"{source}: no DICOM image series found")
            try:
                volume = select_volume(
                    result,
                    echo=echo,
                    series_uid=series_uid,
                    volume_id=volume_id,
                    source=source,
                    strict=self.strict,
                )
                out.append(load_volume(volume))
            except DicomSeriesError as exc:
                # LoadImage swallows exceptions from read() and silently falls back to MONAI's
                # PydicomReader (which would stack echoes as slices); get_data() re-raises instead.
                out.append(exc)
        if not out:
            raise DicomSeriesError("KneeDicomReader.read: no input given")
        return out

    def get_data(self, img: list[tuple[np.ndarray, dict] | DicomSeriesError]) -> tuple[np.ndarray, dict]:
        """Return ``(array, meta)``; several volumes are stacked on a new first (channel) dim.

        Raises:
            DicomSeriesError: the error :meth:`read` met for this input.
        """
        for item in img:
            if isinstance(item, DicomSeriesError):
                raise item
        arrays: list[np.ndarray] = []
        compatible: dict = {}
        for array, series_meta in img:  # type: ignore[misc]
            meta = dict(series_meta)
            meta.pop("files", None)  # variable-length list: breaks batch collation; see discover_series
            meta.pop("issues", None)
            affine = np.asarray(series_meta["affine"], dtype=float)
            if not self.affine_lps_to_ras:
                affine = LPS_TO_RAS @ affine
            meta[MetaKeys.AFFINE] = affine
            meta[MetaKeys.ORIGINAL_AFFINE] = affine.copy()
            meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(array.shape, dtype=int)
            meta[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            meta[MetaKeys.ORIGINAL_PIXDIM] = np.array(meta["pixdim"], copy=True)
            meta["orientation"] = np.asarray(meta["orientation"], dtype=float)
            meta["pixel_spacing"] = np.asarray(meta["pixel_spacing"], dtype=float)
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if self.channel_dim is None else self.channel_dim
            arrays.append(array)
            _merge_meta(meta, compatible)
        return _as_channels(arrays, compatible), compatible


def _merge_meta(meta: dict, merged: dict) -> None:
    """The first series' meta into ``merged`` (values that batch collation cannot take -- string or
    object arrays -- left out, ``None`` written as MONAI's ``"none"``); a further series, stacked as
    a channel, must have the same affine and spatial shape."""
    if not merged:
        for key, value in meta.items():
            if isinstance(value, np.ndarray) and value.dtype.kind in "SUO":
                continue
            merged[key] = str(TraceKeys.NONE) if value is None else value
        return
    for key, what in ((MetaKeys.AFFINE, "affine"), (MetaKeys.SPATIAL_SHAPE, "spatial shape")):
        if key in meta and not np.allclose(meta[key], merged[key]):
            raise DicomSeriesError(f"series read as channels must share their {what}: {merged[key]} and {meta[key]}")


def _as_channels(arrays: list[np.ndarray], merged: dict) -> np.ndarray:
    """One series as it is; several concatenated along the declared channel axis, or stacked on a new
    first axis (then recorded as the channel axis) when none was declared."""
    if len(arrays) == 1:
        return arrays[0]
    channel = merged.get(MetaKeys.ORIGINAL_CHANNEL_DIM)
    if channel is not None and not (isinstance(channel, float) and np.isnan(channel)) and channel != "no_channel":
        return np.concatenate(arrays, axis=int(channel))
    merged[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
    return np.stack(arrays, axis=0)
