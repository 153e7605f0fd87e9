"""kneeseg: knee MRI segmentation with a residual U-Net with channel and spatial attention, on MONAI.

Its packages load on first use (``kneeseg.phantom.PHANTOM_LABELS`` after ``import kneeseg``, as the
bundle's configs write it), so ``import kneeseg`` itself loads nothing.
"""

import importlib

__version__ = "0.1.0"

#: the packages reachable as attributes of ``kneeseg`` without importing them first
PACKAGES = ("data", "execution", "experiments", "handlers", "inference", "metrics", "networks", "phantom",
            "transforms")  # fmt: skip


def __getattr__(name: str):
    if name in PACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
