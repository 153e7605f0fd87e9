"""kneeseg: knee MRI segmentation with a residual U-Net with channel and spatial attention, on MONAI."""

__version__ = "0.1.0"
