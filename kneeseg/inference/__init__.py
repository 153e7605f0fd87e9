"""Inference outputs and (later) batch inference over DICOM folders."""

from kneeseg.inference.preview import display_slice, pick_slices, save_overlay_png

__all__ = ["display_slice", "pick_slices", "save_overlay_png"]
