"""MONAI transforms and the named chains (train / eval / infer / post) used by the bundle.

- :mod:`.loading`: ``LoadImaged`` with kneeseg's 2D and labelme readers registered.
- :mod:`.checks`: input checks naming the offending file (NaN/Inf, size mismatch, empty mask).
- :mod:`.functional`: the preprocessing steps as batched functions on planes (their one
  implementation) and the ordered description of the steps (``preprocessing_steps``).
- :mod:`.clahe`: CLAHE and global histogram equalisation of plane stacks in PyTorch (any device).
- :mod:`.preprocessing`: the paper's preprocessing as MONAI transforms over those functions
  (aspect-preserving resize to N, percentile scaling, smoothing, histogram equalisation, centre pad
  to N x N), invertible where spatial; the resize itself in :mod:`.resize` (labels by one-hot
  linear interpolation), the in-plane axes and plane views in :mod:`.planes`.
- :mod:`.orientation`: ``OrientSlicesd``, slices into the model's orientation (rule in
  :mod:`kneeseg.data.orientation`).
- :mod:`.slicing`: volumes cut into 2D training slices, weak (slice-range) labels.
- :mod:`.augmentation`: knee-MRI training augmentation (no anatomy-breaking flips).
- :mod:`.postprocess`: probabilities -> class ids and the largest-component clean-up, as batched
  functions (their one implementation, also called by ``kneeseg infer``'s fast path) and MONAI
  transforms over them.
- :mod:`.chains`: ``train_transforms``, ``eval_transforms``, ``infer_transforms``,
  ``post_transforms``.
- :mod:`.native`: evaluation in the image's own space (predictions inverted, the mask reloaded).
"""

from kneeseg.transforms.augmentation import knee_augmentations
from kneeseg.transforms.chains import (
    KneeCompose,
    eval_transforms,
    infer_transforms,
    post_transforms,
    train_transforms,
)
from kneeseg.transforms.checks import (
    CheckFinited,
    CheckImageMaskPaird,
    CheckMaskNotEmptyd,
    CheckSpatialDimsd,
    source_of,
)
from kneeseg.transforms.loading import load_image, load_label
from kneeseg.transforms.native import LoadSourceLabeld, native_transforms
from kneeseg.transforms.orientation import OrientSlicesd
from kneeseg.transforms.postprocess import (
    KeepLargestComponentsd,
    ProbabilitiesToLabelsd,
    SaveLabelsd,
    count_components,
    keep_largest_components,
    probabilities_to_labels,
)
from kneeseg.transforms.functional import (
    DEFAULT_STEPS,
    NATIVE_RESOLUTION_STEPS,
    PreprocessingStep,
    preprocess_planes,
    preprocessing_steps,
)
from kneeseg.transforms.preprocessing import (
    LABEL_LINEAR,
    PREPROCESSING_DEFAULTS,
    HistogramEqualize,
    HistogramEqualized,
    PlaneIntensityd,
    ResizeLongestSide,
    ResizeLongestSided,
    ScalePercentiles,
    ScalePercentilesd,
    SmoothPlanes,
    SmoothPlanesd,
    in_plane_pad_size,
    longest_side_size,
    paper_preprocessing,
    percentile_scaling,
    preprocessing_options,
)
from kneeseg.transforms.slicing import UNKNOWN_LABEL, SampleSlicesd, WeakSliceLabeld

__all__ = [
    "DEFAULT_STEPS",
    "LoadSourceLabeld",
    "native_transforms",
    "NATIVE_RESOLUTION_STEPS",
    "PlaneIntensityd",
    "PreprocessingStep",
    "ScalePercentiles",
    "ScalePercentilesd",
    "SmoothPlanes",
    "SmoothPlanesd",
    "preprocess_planes",
    "preprocessing_steps",
    "OrientSlicesd",
    "KeepLargestComponentsd",
    "ProbabilitiesToLabelsd",
    "SaveLabelsd",
    "count_components",
    "keep_largest_components",
    "probabilities_to_labels",
    "PREPROCESSING_DEFAULTS",
    "SampleSlicesd",
    "UNKNOWN_LABEL",
    "WeakSliceLabeld",
    "percentile_scaling",
    "preprocessing_options",
    "LABEL_LINEAR",
    "CheckFinited",
    "CheckImageMaskPaird",
    "CheckMaskNotEmptyd",
    "CheckSpatialDimsd",
    "HistogramEqualize",
    "HistogramEqualized",
    "KneeCompose",
    "ResizeLongestSide",
    "ResizeLongestSided",
    "eval_transforms",
    "in_plane_pad_size",
    "infer_transforms",
    "knee_augmentations",
    "load_image",
    "load_label",
    "longest_side_size",
    "paper_preprocessing",
    "post_transforms",
    "source_of",
    "train_transforms",
]
