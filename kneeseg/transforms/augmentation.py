"""Training augmentation suited to knee MRI slices (MONAI random dictionary transforms).

Geometry: small in-plane rotations (default +-12 degrees) and isotropic-ish scaling
(0.9-1.1), applied together by one ``RandAffined`` (images bilinear, labels nearest).
Intensity: bias field (coil shading), gamma, contrast (scale) and brightness (shift) jitter,
Gaussian noise -- images only.

No flips by default. A horizontal flip of a sagittal slice swaps anterior and posterior
(the patella would sit behind the femur), a vertical flip swaps superior and inferior; neither
occurs in real scans, so they only teach the network impossible anatomy. (A left-right flip
*across* sagittal slices -- left vs right knee -- is plausible for 3D models, but this chain
works in-plane.) ``flip_prob`` re-enables an in-plane flip for ablations.

Augmentation runs after the paper preprocessing, on ``N x N`` slices with intensities in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.transforms import (
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Transform,
)
from monai.utils import ensure_tuple

__all__ = ["knee_augmentations"]


def knee_augmentations(
    image_keys: str | Sequence[str] = "image",
    label_keys: str | Sequence[str] | None = "label",
    spatial_dims: int = 2,
    spatial_axes: Sequence[int] = (0, 1),
    rotate_deg: float = 12.0,
    scale_range: float = 0.1,
    affine_prob: float = 0.5,
    bias_field_prob: float = 0.3,
    bias_field_coeff: float = 0.1,
    gamma_range: tuple[float, float] = (0.75, 1.35),
    gamma_prob: float = 0.3,
    intensity_scale: float = 0.1,
    intensity_shift: float = 0.05,
    intensity_prob: float = 0.3,
    noise_std: float = 0.02,
    noise_prob: float = 0.2,
    flip_prob: float = 0.0,
    flip_axis: int = 0,
) -> list[Transform]:
    """Random dictionary transforms for training (see the module docstring for the reasoning).

    Args:
        image_keys: intensity images (all augmentations).
        label_keys: label maps (only the spatial ones, nearest interpolation).
        spatial_dims: 2 for slices, 3 for volumes augmented in-plane.
        spatial_axes: the in-plane axes (rotation/scaling act only there).
        rotate_deg: rotation range +-degrees in-plane.
        scale_range: scaling factor range 1 +- this value, same factor bound on both axes.
        affine_prob, bias_field_prob, gamma_prob, intensity_prob, noise_prob: probabilities.
        bias_field_coeff: upper bound of the bias field polynomial coefficients.
        gamma_range: gamma range for ``RandAdjustContrastd``.
        intensity_scale: multiplicative jitter ``1 +- intensity_scale``.
        intensity_shift: additive jitter ``+- intensity_shift``.
        noise_std: Gaussian noise standard deviation (intensities are in [0, 1]).
        flip_prob: probability of a flip along ``flip_axis`` (0: off, see module docstring).
        flip_axis: spatial axis to flip when ``flip_prob > 0``.

    Returns:
        A list of MONAI randomizable transforms; seed them with ``Compose.set_random_state``.
    """
    imgs = list(ensure_tuple(image_keys))
    labs = [] if label_keys is None else list(ensure_tuple(label_keys))
    keys = imgs + labs
    plane = tuple(int(a) % spatial_dims for a in spatial_axes)
    rad = math.radians(rotate_deg)
    if spatial_dims == 2:
        rotate_range: tuple[float, ...] = (rad,)
    else:  # rotate about the slice axis only
        rotate_range = tuple(rad if i not in plane else 0.0 for i in range(3))
    scales = tuple(scale_range if i in plane else 0.0 for i in range(spatial_dims))
    xforms: list[Transform] = [
        RandAffined(
            keys,
            prob=affine_prob,
            rotate_range=rotate_range,
            scale_range=scales,
            mode=["bilinear"] * len(imgs) + ["nearest"] * len(labs),
            padding_mode="zeros",
        )
    ]
    if flip_prob > 0:
        xforms.append(RandFlipd(keys, prob=flip_prob, spatial_axis=flip_axis))
    xforms += [
        RandBiasFieldd(imgs, coeff_range=(0.0, bias_field_coeff), prob=bias_field_prob),
        RandAdjustContrastd(imgs, gamma=gamma_range, prob=gamma_prob),
        RandScaleIntensityd(imgs, factors=intensity_scale, prob=intensity_prob),
        RandShiftIntensityd(imgs, offsets=intensity_shift, prob=intensity_prob),
        RandGaussianNoised(imgs, std=noise_std, prob=noise_prob),
    ]
    return xforms
