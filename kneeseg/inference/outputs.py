"""Writing a batch run's outputs: each series' NIfTI / DICOM SEG / PNG files, and the output folder's upkeep.

:func:`write_outputs` checks one predicted volume (:func:`kneeseg.inference.qc.quality_check`)
and writes the chosen :data:`FORMATS` to ``OUT/<patient>/<series folder>/`` (each file
atomically); :func:`check_writable` and :func:`clean_stale_temporaries` prepare the output folder
before a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.data.nifti import write_nifti
from kneeseg.data.orientation import LPS_TO_RAS
from kneeseg.inference.planning import WorkItem, safe_name
from kneeseg.inference.results import RECORDS_DIR, RESULTS_CSV, measurement_fields
from kneeseg.atomic import atomic_write_bytes, is_temporary_of

__all__ = ["FILE_NAMES", "FORMATS", "check_writable", "clean_stale_temporaries", "write_outputs"]


#: Output formats: NIfTI label map, DICOM Segmentation, PNG preview.
FORMATS = ("nifti", "seg", "png")

#: The file written per series for each format.
FILE_NAMES = {"nifti": "seg.nii.gz", "seg": "seg.dcm", "png": "preview.png"}


def check_writable(out: Path) -> None:
    """Create ``out`` and prove a file can be written there, or raise a clear ``OSError``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = atomic_write_bytes(out / ".kneeseg-write-test", b"")
        probe.unlink()
    except OSError as exc:
        error = OSError(f"output folder {out} is not writable: {exc.strerror or exc}")
        error.errno = exc.errno
        raise error from exc


def clean_stale_temporaries(out: Path) -> int:
    """Remove the temporary files a killed run of this tool left behind, and nothing else.

    Only kneeseg's own temporaries (``.<name>.kneeseg-<random>.tmp``, :func:`kneeseg.atomic.atomic_path`)
    of the files this tool writes are removed: ``manifest.csv``, the series outputs, the records
    and the ONNX cache. Other ``.tmp`` files under ``out`` are left alone.
    """
    removed = 0
    if not out.is_dir():
        return 0
    for dirpath, _dirnames, filenames in os.walk(out):
        rel = Path(dirpath).relative_to(out)
        for name in filenames:
            if not is_temporary_of(name):
                continue
            target = name[1 : name.rindex(".kneeseg-")]
            if rel == RECORDS_DIR:
                ours = target.endswith(".json")
            elif rel == RECORDS_DIR.parent / "cache":
                ours = target.endswith(".onnx")
            elif rel == Path("."):
                ours = target == RESULTS_CSV
            else:
                ours = target in FILE_NAMES.values()
            if ours:
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def write_outputs(
    out: Path,
    item: WorkItem,
    image: np.ndarray,
    meta: Mapping[str, Any],
    prediction: Any,
    formats: Sequence[str],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Check and write one volume's results; returns the row's qc, path and measurement fields."""
    from kneeseg.inference.qc import quality_check

    vol = item.volume
    labels = prediction.labels
    affine = np.asarray(meta["affine"], dtype=float)
    class_names: Mapping[int, str] = settings["class_names"]
    normal_ras = LPS_TO_RAS[:3, :3] @ settings["slice_orientation"].normal
    qc = quality_check(labels, prediction.confidence, affine, class_names, settings.get("qc", {}), normal_ras,
                       prediction.raw_components)  # fmt: skip
    folder = Path(safe_name(vol.patient_id, "anonymous")) / safe_name(
        f"{vol.series_number if vol.series_number is not None else 'x'}_{vol.volume_id}", item.key
    )
    fields: dict[str, Any] = {"qc": qc.verdict, "nifti": "", "dicom_seg": "", "preview": ""}
    try:
        if "nifti" in formats:
            rel = folder / FILE_NAMES["nifti"]
            write_nifti(out / rel, labels.astype(np.uint8), affine, time_unit="sec")
            fields["nifti"] = rel.as_posix()
        if "seg" in formats:
            from kneeseg.inference.dicom_seg import write_dicom_seg

            rel = folder / FILE_NAMES["seg"]
            write_dicom_seg(
                vol, labels, out / rel, class_names=class_names,
                algorithm_name=f"kneeseg {settings['network_name']}",
                uid_seed=f"{vol.volume_id}|{settings.get('ckpt_digest', '')}",
            )  # fmt: skip
            fields["dicom_seg"] = rel.as_posix()
        if "png" in formats:
            from kneeseg.inference.preview import save_overlay_png

            rel = folder / FILE_NAMES["png"]
            desc = f" '{vol.series_description}'" if vol.series_description else ""
            save_overlay_png(
                image, labels, out / rel, title=f"{vol.patient_id} series {vol.series_number}{desc}",
                class_names={c: n for c, n in class_names.items() if c > 0}, affine=affine,
                subtitle=f"QC: {qc.verdict}",
            )  # fmt: skip
            fields["preview"] = rel.as_posix()
    except BaseException:  # a failed row leaves no output of its own behind (the row names the error)
        for key in ("nifti", "dicom_seg", "preview"):
            if fields[key]:
                (out / fields[key]).unlink(missing_ok=True)
        raise
    fields.update(measurement_fields(class_names, qc.measurements))
    return fields
