"""Selection and loading: pick one volume of a discovery result and decode its pixels.

:func:`select_volume` chooses exactly one volume (by series UID, echo or volume id) or says why it
cannot; :func:`load_volume` decodes a volume into a float32 ``(columns, rows, slices)`` array with
its RAS affine (see :mod:`kneeseg.data.dicom.volume` for the convention); :func:`load_series` does
discovery, selection and loading in one call. Reading raises
:class:`~kneeseg.data.dicom.volume.DicomSeriesError` with a message naming the series, file and
problem.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom

from kneeseg.data.dicom.discovery import discover_series
from kneeseg.data.dicom.tags import transfer_syntax
from kneeseg.data.dicom.volume import DicomSeriesError, DiscoveryResult, SeriesVolume
from kneeseg.data.orientation import dicom_plane_to_volume
from kneeseg.files import PathLike

__all__ = ["load_series", "load_volume", "select_volume"]

logger = logging.getLogger(__name__)


def _volume_summary(v: SeriesVolume) -> str:
    te = f"TE {v.echo_time:g} ms, " if v.echo_time is not None else ""
    acq = f", acquisition {v.acquisition_number}, volume_id {v.volume_id}" if "_a" in v.volume_id else ""
    if v.diffusion_index is not None:
        b = f", b = {v.b_value:g} s/mm^2" if v.b_value is not None else ""
        acq = f"{b}, volume_id {v.volume_id}"
    return f"echo={v.echo_index} ({te}{v.num_slices} slices{acq})"


def select_volume(
    result: DiscoveryResult,
    *,
    echo: int | None = None,
    series_uid: str | None = None,
    volume_id: str | None = None,
    source: str = "input",
    strict: bool = True,
) -> SeriesVolume:
    """Pick exactly one volume from a discovery result, or raise :class:`DicomSeriesError` saying why.

    Args:
        result: output of :func:`discover_series`.
        echo: 0-based echo index (echoes sorted by echo time) for multi-echo series.
        series_uid: SeriesInstanceUID to pick when the input holds several series.
        volume_id: exact :attr:`SeriesVolume.volume_id` (overrides the other selectors).
        source: name of the input used in messages.
        strict: if True, any file problem (unreadable/truncated/empty file) is an error.

    Raises:
        DicomSeriesError: no series, several series, several echoes/acquisitions without a
            selector, an unknown selector, unreadable files (``strict``).
    """
    file_problems = [p for p in result.problems if p.volume_id is None]
    if strict and file_problems:
        listed = "; ".join(str(p) for p in file_problems[:5])
        more = f" (and {len(file_problems) - 5} more)" if len(file_problems) > 5 else ""
        raise DicomSeriesError(f"{source}: {len(file_problems)} DICOM file(s) could not be read: {listed}{more}")
    for p in file_problems:
        logger.warning("skipping %s", p)
    volumes = result.volumes
    if not volumes:
        raise DicomSeriesError(f"{source}: no DICOM image series found")
    if volume_id is not None:
        volumes = [v for v in volumes if v.volume_id == volume_id]
        if not volumes:
            ids = ", ".join(v.volume_id for v in result.volumes)
            raise DicomSeriesError(f"{source}: no volume with id {volume_id}; available: {ids}")
        return volumes[0]
    if series_uid is not None:
        volumes = [v for v in volumes if v.series_uid == series_uid]
        if not volumes:
            uids = ", ".join(result.series_uids)
            raise DicomSeriesError(f"{source}: no series with SeriesInstanceUID {series_uid}; available: {uids}")
    uids = list(dict.fromkeys(v.series_uid for v in volumes))
    if len(uids) > 1:
        desc = "; ".join(
            f"{u} ('{next(v.series_description for v in volumes if v.series_uid == u)}', "
            f"{sum(len(v.files) for v in volumes if v.series_uid == u)} files)"
            for u in uids
        )
        raise DicomSeriesError(
            f"{source} holds {len(uids)} DICOM series: {desc}; pass series_uid=... or point at one series"
        )
    if echo is not None:
        chosen = [v for v in volumes if v.echo_index == echo]
        if not chosen:
            listed = "; ".join(_volume_summary(v) for v in volumes)
            raise DicomSeriesError(f"{source}: series {uids[0]} has no echo={echo}; available: {listed}")
        volumes = chosen
    if len(volumes) > 1:
        listed = "; ".join(_volume_summary(v) for v in volumes)
        what = "echo volumes" if len({v.echo_index for v in volumes}) > 1 else "acquisitions"
        if len({v.echo_index for v in volumes}) == 1 and any(v.diffusion_index is not None for v in volumes):
            what = "diffusion volumes"
        raise DicomSeriesError(
            f"{source}: series {uids[0]} holds {len(volumes)} {what} ({listed}); pass echo=<index> "
            "(or volume_id=...) to choose one"
        )
    return volumes[0]


#: a compressed frame may decode to at most this many times its encoded size before the header is
#: doubted (real MR compresses 2-10x losslessly; RLE cannot exceed 64x, a blank JPEG frame a few 100x)
MAX_EXPANSION = 200
#: decoded sizes below this are never doubted
_DOUBT_ABOVE = 1 << 30


def check_pixel_data_size(ds: Any, path: str) -> None:
    """Compare the pixel data with what the header promises, before any decode or allocation.

    Native (uncompressed) pixel data must hold Rows x Columns x SamplesPerPixel x NumberOfFrames x
    BitsAllocated / 8 bytes; compressed pixel data may not promise more than ``MAX_EXPANSION`` times
    its encoded size when that is over 1 GiB (a 65535 x 65535 header over a few kB of RLE would
    otherwise allocate tens of GiB).

    Raises:
        DicomSeriesError: naming the file, the header's numbers and the pixel data's size.
    """
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomSeriesError(f"{path}: incomplete image header ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise DicomSeriesError(f"{path}: no pixel data")
    expected = rows * cols * samples * frames * max(bits, 1) // 8
    stored = len(ds.PixelData)
    header = f"{rows} x {cols} x {samples} sample(s) x {frames} frame(s) x {bits} bits = {expected} bytes"
    ts = transfer_syntax(ds)
    if not ts.is_compressed:
        if stored < expected:
            raise DicomSeriesError(f"{path}: header and pixel data disagree: the header says {header}, "
                                   f"the pixel data holds {stored} bytes")  # fmt: skip
    elif expected > _DOUBT_ABOVE and expected > MAX_EXPANSION * stored:
        raise DicomSeriesError(f"{path}: header and pixel data disagree: the header says {header}, "
                               f"over {MAX_EXPANSION}x the {stored} bytes of {ts.name} pixel data")  # fmt: skip


def _decode(path: str, ds_cache: dict[str, np.ndarray]) -> np.ndarray:
    if path not in ds_cache:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            raise DicomSeriesError(f"{path}: cannot read DICOM file ({type(exc).__name__}: {exc})") from exc
        ts = transfer_syntax(ds)
        check_pixel_data_size(ds, path)
        try:
            ds_cache[path] = np.asarray(ds.pixel_array)
        except Exception as exc:  # decoder plugins raise various types
            raise DicomSeriesError(
                f"{path}: cannot decode pixel data ({ts.name}, {ts}): {type(exc).__name__}: {exc}"
            ) from exc
    return ds_cache[path]


def load_volume(volume: SeriesVolume) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode the pixels of one volume.

    Returns:
        ``(array, meta)``: float32 array shaped ``(columns, rows, slices)`` with RescaleSlope/Intercept
        applied, and a meta dict with ``affine`` (RAS), ``affine_lps``, ``spatial_shape``, ``spacing``
        ``(i, j, k)`` mm, ``pixdim`` (NIfTI-style, 8 values), ``space`` ("RAS") and the fields of
        :meth:`SeriesVolume.describe`.

    Raises:
        DicomSeriesError: the volume has geometry issues, is a Siemens MOSAIC, or a file cannot be
            read/decoded.
    """
    if volume.issues:
        raise DicomSeriesError(f"{volume.label}: " + "; ".join(volume.issues))
    if volume.is_mosaic:  # read as one tiled slice its geometry would be wrong by the whole tile layout
        tiles = f"{volume.mosaic_images} images" if volume.mosaic_images else "several images"
        raise DicomSeriesError(
            f"{volume.label}: a Siemens MOSAIC ({tiles} tiled in each {volume.rows} x {volume.columns} file, "
            f"{volume.slices[0].path if volume.slices else ''}): not supported, the tiles are not unpacked; "
            "convert the series first (e.g. dcm2niix) or export it as single slices"
        )
    # slice-major storage (each plane contiguous, written and later read as a whole), seen as
    # (columns, rows, slices)
    cache: dict[str, np.ndarray] = {}
    if volume.slices:  # the first file's header against its pixel data, before the volume is allocated
        _decode(volume.slices[0].path, cache)
    planes = np.empty((volume.num_slices, volume.columns, volume.rows), dtype=np.float32)
    out = np.moveaxis(planes, 0, 2)
    for k, ref in enumerate(volume.slices):
        pixels = _decode(ref.path, cache)
        if ref.frame is not None:
            pixels = pixels[ref.frame] if pixels.ndim == 3 else pixels
        if pixels.shape != (volume.rows, volume.columns):
            where = ref.path if ref.frame is None else f"{ref.path} frame {ref.frame}"
            raise DicomSeriesError(
                f"{where}: decoded pixel array has shape {pixels.shape}, expected ({volume.rows}, {volume.columns})"
            )
        # rescale by hand: per-frame values of enhanced MR are handled the same on pydicom 2.4 and 3.x
        plane = pixels.astype(np.float32)
        if ref.slope != 1.0 or ref.intercept != 0.0:
            plane = plane * np.float32(ref.slope) + np.float32(ref.intercept)
        planes[k] = dicom_plane_to_volume(plane)
        if ref.frame is None:
            cache.pop(ref.path, None)  # single-frame files are used once
    affine = volume.affine
    meta = volume.describe()
    spacing = np.asarray(volume.spacing, dtype=float)
    qfac = 1.0 if np.linalg.det(affine[:3, :3]) >= 0 else -1.0
    meta.update(
        affine=affine,
        affine_lps=volume.affine_lps,
        spatial_shape=np.asarray(out.shape, dtype=int),
        spacing=spacing,
        pixdim=np.asarray([qfac, *spacing, 1.0, 1.0, 1.0, 1.0], dtype=float),
        space="RAS",
    )
    return out, meta


def load_series(
    source: SeriesVolume | PathLike | Sequence[PathLike],
    echo: int | None = None,
    *,
    series_uid: str | None = None,
    volume_id: str | None = None,
    strict: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Load one DICOM volume from a :class:`SeriesVolume`, a series folder, or a list of files.

    Args:
        source: a discovered volume, a folder (searched recursively) or files of one series.
        echo: 0-based echo index (by echo time) when the series has several echoes; required then.
        series_uid: which series to read when the folder holds several.
        volume_id: exact volume id (see :attr:`SeriesVolume.volume_id`).
        strict: if True (default) any unreadable/truncated/empty DICOM file in ``source`` is an error;
            if False such files are logged and skipped.

    Returns:
        ``(array, meta)`` as :func:`load_volume`: float32 ``(columns, rows, slices)`` and RAS ``affine``.

    Raises:
        DicomSeriesError: with a message naming the series/file and the problem.
    """
    if isinstance(source, SeriesVolume):
        return load_volume(source)
    name = str(source) if isinstance(source, (str, os.PathLike)) else f"{len(source)} files"
    result = discover_series(source)
    volume = select_volume(
        result, echo=echo, series_uid=series_uid, volume_id=volume_id, source=name, strict=strict
    )
    return load_volume(volume)
