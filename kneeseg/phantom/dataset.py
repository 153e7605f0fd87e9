"""The phantom dataset: :func:`generate_phantom` renders the cases and writes the NIfTI, DICOM and
PNG files and the MSD datalists (layout in the :mod:`kneeseg.phantom` docstring)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.atomic import atomic_write_bytes
from kneeseg.data.manifest import write_manifest
from kneeseg.data.nifti import write_nifti
from kneeseg.phantom.case import (
    DEFAULT_FOV_MM,
    DEFAULT_SHAPE,
    PHANTOM_LABELS,
    PNG_ORIENTATION,
    PhantomCase,
)
from kneeseg.phantom.dicom_writer import write_dicom_series
from kneeseg.phantom.render import check_shape, render_case
from kneeseg.data.splits import DEFAULT_RATIOS, assign_groups
from kneeseg.files import PathLike
from kneeseg import __version__

__all__ = ["generate_phantom", "write_case_nifti", "write_png_slices"]


def write_case_nifti(case: PhantomCase, image_path: PathLike, label_path: PathLike) -> None:
    """Write image (uint16) and label (uint8) NIfTI files in dcm2niix's layout
    (:py:meth:`PhantomCase.to_nifti_layout`: ``(columns, rows, slices)``, rows reversed) with the
    RAS affine of :py:meth:`PhantomCase.affine_ras` as qform and sform (scanner code)."""
    affine = case.affine_ras()
    for data, path in ((case.image, image_path), (case.label, label_path)):
        write_nifti(path, case.to_nifti_layout(data), affine, description="kneeseg phantom", compresslevel=1)


def write_png_slices(
    case: PhantomCase, folder: PathLike, negatives: int = 3
) -> list[tuple[int, Path, Path]]:
    """Write 8-bit PNG slice pairs: every slice with ligament plus ``negatives`` without.

    Images are windowed to the case's 0.5-99.5 percentile; masks hold class ids (0-4).
    Files: ``<case>_<slice:03d>_img.png`` and ``_mask.png`` (rows x columns).

    Returns:
        ``(slice, image_path, mask_path)`` in slice order.
    """
    from PIL import Image

    folder = Path(folder)
    lig = np.flatnonzero((case.label == 4).any(axis=(1, 2)))
    others = np.setdiff1d(np.arange(case.image.shape[0]), lig)
    rng = np.random.default_rng([case.seed, case.index, 0x504E47])
    extra = rng.choice(others, size=min(negatives, others.size), replace=False) if others.size else []
    lo, hi = (float(x) for x in np.percentile(case.image, [0.5, 99.5]))
    out = []
    for k in sorted(set(lig.tolist()) | {int(x) for x in extra}):
        img8 = np.clip((case.image[k].astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255)
        pairs = []
        for arr, tag in ((np.rint(img8).astype(np.uint8), "img"), (case.label[k], "mask")):
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(arr), mode="L").save(buf, format="PNG")
            path = folder / f"{case.case_id}_{k:03d}_{tag}.png"
            atomic_write_bytes(path, buf.getvalue())
            pairs.append(path)
        out.append((k, pairs[0], pairs[1]))
    return out


def generate_phantom(
    out_dir: PathLike,
    cases: int = 10,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    fov_mm: Sequence[float] = DEFAULT_FOV_MM,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    png: bool = True,
    png_negatives: int = 3,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Generate the phantom dataset in ``out_dir`` (layout in the :mod:`kneeseg.phantom` docstring).

    Args:
        out_dir: output folder (created; existing files of the same names are replaced).
        cases: number of cases (>= 1).
        seed: dataset seed (>= 0); the same seed gives the same pixel data and UIDs.
        shape: ``(columns, rows, slices)`` per case; default ``(256, 256, 40)``.
        fov_mm: field of view (mm) along the same axes; default ``(150, 150, 120)``.
        ratios: train / validation / test ratios of the case split (default 8:1:1; with at
            least 3 cases every part gets one).
        png: also write the 2D PNG slices and ``dataset_2d.json``.
        png_negatives: PNG slices without ligament per case.
        progress: called with one line per case (e.g. ``print``), or None.

    Returns:
        Path of ``dataset.json``; load it with ``monai.data.load_decathlon_datalist``.
    """
    if isinstance(cases, bool) or int(cases) != cases or cases < 1:
        raise ValueError(f"cases must be a positive integer, got {cases!r}")
    shape_t, fov_t = check_shape(shape, fov_mm)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    case_ids = [f"case_{i:03d}" for i in range(int(cases))]
    parts = assign_groups(case_ids, ratios, seed)
    keys = ("training", "validation", "test")
    volumes: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    slices: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    for i, cid in enumerate(case_ids):
        t0 = time.perf_counter()
        case = render_case(seed, i, shape_t, fov_t)
        write_dicom_series(case, out / "dicom" / cid)
        write_case_nifti(case, out / "imagesTr" / f"{cid}.nii.gz", out / "labelsTr" / f"{cid}.nii.gz")
        part = keys[parts[cid]]
        volumes[part].append(
            {
                "image": f"imagesTr/{cid}.nii.gz",
                "label": f"labelsTr/{cid}.nii.gz",
                "dicom": f"dicom/{cid}",
                "case": cid,
                "contrast": case.params["contrast"],
            }
        )
        n_png = 0
        if png:
            for k, ip, mp in write_png_slices(case, out / "png", png_negatives):
                slices[part].append(
                    {
                        "image": f"png/{ip.name}",
                        "label": f"png/{mp.name}",
                        "case": cid,
                        "slice": k,
                        "ligament": bool((case.label[k] == 4).any()),
                    }
                )
                n_png += 1
        if progress is not None:
            n_lig = int((case.label == 4).any(axis=(1, 2)).sum())
            progress(
                f"[{i + 1}/{cases}] {cid} ({part}, {case.params['contrast']}): {shape_t[2]} slices, "
                f"ligament in {n_lig}, {n_png} png pairs, {time.perf_counter() - t0:.1f} s"
            )

    common = {
        "reference": "synthetic knee phantom generated by kneeseg.phantom",
        "licence": "CC0-1.0 (generated data)",
        "release": _version(),
        "modality": {"0": "MR"},
        "labels": {str(k): v for k, v in PHANTOM_LABELS.items()},
        "split": {"unit": "case", "seed": int(seed), "ratios": [float(r) for r in ratios], "keys": list(keys)},
        "generator": {"seed": int(seed), "cases": int(cases), "shape": list(shape_t), "fov_mm": list(fov_t)},
    }
    datalist: dict[str, Any] = {
        "name": "kneeseg-phantom",
        "description": "Synthetic sagittal knee MR volumes (NIfTI + DICOM series); paths relative to this file's folder",
        "tensorImageSize": "3D",
        **common,
        "numTraining": len(volumes["training"]),
        "numTest": len(volumes["test"]),
    }
    datalist.update({k: v for k, v in volumes.items() if v})
    path = write_manifest(datalist, out / "dataset.json")
    if png:
        datalist_2d: dict[str, Any] = {
            "name": "kneeseg-phantom-2d",
            "description": "PNG slices of the phantom (every ligament slice plus a few without), same case split",
            "tensorImageSize": "2D",
            **common,
            # the PNGs keep the DICOM storage order: anterior left, superior up
            "image_orientation": PNG_ORIENTATION.to_config(),
            "numTraining": len(slices["training"]),
            "numTest": len(slices["test"]),
        }
        datalist_2d.update({k: v for k, v in slices.items() if v})
        write_manifest(datalist_2d, out / "dataset_2d.json")
    return path


def _version() -> str:
    return __version__
