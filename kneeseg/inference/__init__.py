"""Inference: batch segmentation of DICOM folders, the fast slice-wise segmenter, DICOM SEG and previews.

Imports are lazy, so ``import kneeseg.inference`` does not load torch.

- :func:`predict_folder` (``kneeseg infer ROOT -o OUT``): every knee MR series under a folder tree
  to NIfTI + DICOM SEG + PNG preview + ``manifest.csv``, resumable, sharded under torchrun;
- :class:`SliceSegmenter` / :func:`load_segmenter`: one volume, runtimes auto / eager / bf16 / onnx;
- :func:`bundle_settings`: the inference definition read from the bundle's ``inference.json``;
- :func:`write_dicom_seg`, :func:`validate_dicom_seg`: DICOM Segmentation export and dciodvfy check;
- :func:`quality_check`: the bundle's plausibility checks of a predicted volume (``qc`` column);
- :func:`save_overlay_png`: PNG previews.
"""

from kneeseg.lazy import lazy_exports

_EXPORTS = {
    "predict_folder": "kneeseg.inference.batch",
    "BatchResult": "kneeseg.inference.batch",
    "plan_work": "kneeseg.inference.planning",
    "read_results_csv": "kneeseg.inference.results",
    "SliceSegmenter": "kneeseg.inference.segmenter",
    "load_segmenter": "kneeseg.inference.segmenter",
    "Prediction": "kneeseg.inference.segmenter",
    "RUNTIMES": "kneeseg.execution.choices",
    "bundle_settings": "kneeseg.inference.definition",
    "QCResult": "kneeseg.inference.qc",
    "quality_check": "kneeseg.inference.qc",
    "write_dicom_seg": "kneeseg.inference.dicom_seg",
    "validate_dicom_seg": "kneeseg.inference.dicom_seg",
    "draw_overlay": "kneeseg.inference.preview",
    "pick_slices": "kneeseg.inference.preview",
    "save_overlay_png": "kneeseg.inference.preview",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
