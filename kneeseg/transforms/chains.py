"""Named transform chains used by the bundle: train, eval, infer, and inference post-processing.

Every chain is ``load -> check -> paper preprocessing -> (augment) -> EnsureTyped`` and takes
dictionaries of file paths, e.g. ``{"image": ".../img.png", "label": ".../mask.png"}``.

Outputs (``N = spatial_size``):

==============  =====================================  ========================================
chain           2D slice (``spatial_dims=2``)           volume (``spatial_dims=3``)
==============  =====================================  ========================================
image           float32 ``(1, N, N)`` in [0, 1]*        float32 ``(1, N, N, D)``
label           float32 ``(1, N, N)`` class ids         float32 ``(1, N, N, D)`` class ids
==============  =====================================  ========================================

(* before augmentation; intensity jitter and noise may leave [0, 1] slightly.) Spatial axes
follow MONAI's reader convention (``(W, H)`` for 2D files, see :mod:`kneeseg.data.images2d`);
volumes are resized/padded in-plane (``spatial_axes``, default ``(0, 1)``) and keep their slice
count ``D``. All geometric steps are invertible: :func:`post_transforms` maps predictions back to
the original geometry with ``Invertd``.

Readers: ``reader=None`` dispatches by suffix (PNG/JPEG -> kneeseg's 2D reader, NIfTI ->
nibabel, labelme ``.json`` labels when ``label_map`` is given). Pass ``reader=`` (an
``ImageReader`` instance such as a DICOM series reader) to load a folder or other format.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.data import ImageReader
from monai.transforms import (
    Activationsd,
    Compose,
    EnsureTyped,
    Invertd,
    MapTransform,
    RandCropByPosNegLabeld,
    SelectItemsd,
    Transform,
)
from monai.transforms.inverse import InvertibleTransform
from monai.utils import ensure_tuple

from kneeseg.transforms.augmentation import knee_augmentations
from kneeseg.transforms.checks import (
    CheckFinited,
    CheckImageMaskPaird,
    CheckMaskNotEmptyd,
    CheckSpatialDimsd,
    source_of,
)
from kneeseg.transforms.loading import load_image, load_label
from kneeseg.transforms.orientation import OrientSlicesd
from kneeseg.transforms.postprocess import KeepLargestComponentsd, ProbabilitiesToLabelsd
from kneeseg.transforms.preprocessing import paper_preprocessing, preprocessing_options
from kneeseg.transforms.slicing import SampleSlicesd, WeakSliceLabeld

__all__ = ["DimensionDispatchd", "KneeCompose", "OnePatchd", "eval_transforms", "infer_transforms", "post_transforms", "train_transforms"]


class KneeCompose(Compose):
    """``Compose`` that surfaces bad-input errors as ``ValueError`` with the original message.

    MONAI wraps any exception raised inside a chain as ``RuntimeError("applying transform
    ...")``; the useful text ("<file>: mask is empty ...") is then only in ``__cause__``. This
    subclass re-raises the innermost ``ValueError``'s message as a ``ValueError`` (chained to the
    MONAI error, so the failing transform stays visible in the traceback); other errors pass
    unchanged. Failing inputs are not logged a second time (``log_stats=False``).
    """

    def __init__(self, transforms: Sequence[Any] | Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("log_stats", False)
        super().__init__(transforms, **kwargs)

    def __call__(self, input_: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(input_, *args, **kwargs)
        except RuntimeError as err:
            root: BaseException | None = err
            while root is not None and not isinstance(root, ValueError):
                root = root.__cause__
            if root is None:
                raise
            raise ValueError(str(root)) from err


def _split_keys(keys: str | Sequence[str]) -> tuple[str, list[str]]:
    keys = list(ensure_tuple(keys))
    if not keys:
        raise ValueError("keys must name at least the image key")
    return keys[0], keys[1:]


def _front(
    image_key: str,
    label_keys: list[str],
    spatial_size: int,
    spatial_dims: int,
    spatial_axes: Sequence[int] | None,
    reader: ImageReader | str | None,
    label_reader: ImageReader | str | None,
    value_map: Mapping[int, int] | None,
    label_map: Mapping[str, int] | None,
    allow_empty: bool,
    preprocessing: Mapping[str, Any] | None,
    slices_per_volume: int = 0,
    pos_fraction: float = 0.75,
    slice_orientation: Any = None,
    image_orientation: Any = None,
    weak_labels: bool = False,
    negatives: str = "uniform",
) -> list[Transform]:
    options = preprocessing_options(preprocessing)
    orient: list[Transform] = []
    if slice_orientation is not None:  # the model's orientation, from geometry or the declared one
        orient = [OrientSlicesd([image_key, *label_keys], slice_orientation, image_orientation)]
    xforms: list[Transform] = [load_image(image_key, reader)]
    if label_keys:
        xforms.append(load_label(label_keys, label_reader, value_map=value_map, label_map=label_map,
                                 allow_missing_keys=weak_labels))  # fmt: skip
        if weak_labels:  # unlabelled volumes with a declared slice range: background elsewhere
            xforms.append(WeakSliceLabeld(label_keys[0], image_key))
    if slices_per_volume:
        if spatial_dims != 2:
            raise ValueError("slices_per_volume cuts volumes into 2D slices: use it with spatial_dims=2")
        # volumes: checked whole, oriented and preprocessed whole (slice-wise in-plane steps;
        # intensities scaled over the volume, as inference does), then cut into 2D slice samples.
        # Everything before the random slice choice is deterministic, so CacheDataset caches it.
        xforms.append(CheckFinited(image_key))
        if label_keys:
            xforms += [
                CheckImageMaskPaird(label_keys, image_key, axes_are_wh=True),
                CheckMaskNotEmptyd(label_keys, allow_empty=allow_empty),
            ]
        xforms += orient
        chains = {
            dims: KneeCompose(paper_preprocessing(image_key, label_keys or None, spatial_size=spatial_size,
                                                  spatial_dims=dims, spatial_axes=(0, 1), **options))
            for dims in (2, 3)
        }  # fmt: skip
        xforms += [
            DimensionDispatchd(image_key, chains),
            SampleSlicesd([image_key, *label_keys], label_key=label_keys[0] if label_keys else None,
                          num_slices=slices_per_volume, pos_fraction=pos_fraction, negatives=negatives),
            CheckSpatialDimsd([image_key, *label_keys], 2),
        ]  # fmt: skip
        return xforms
    xforms += [CheckSpatialDimsd([image_key, *label_keys], spatial_dims), CheckFinited(image_key)]
    if label_keys:
        xforms += [
            CheckImageMaskPaird(label_keys, image_key, axes_are_wh=spatial_dims == 2),
            CheckMaskNotEmptyd(label_keys, allow_empty=allow_empty),
        ]
    xforms += orient
    xforms += paper_preprocessing(
        image_key,
        label_keys or None,
        spatial_size=spatial_size,
        spatial_dims=spatial_dims,
        spatial_axes=spatial_axes,
        **options,
    )
    return xforms


def _typed(keys: list[str]) -> EnsureTyped:
    return EnsureTyped(keys, dtype=torch.float32, track_meta=True)


def train_transforms(
    keys: str | Sequence[str] = ("image", "label"),
    spatial_size: int = 512,
    *,
    spatial_dims: int = 2,
    spatial_axes: Sequence[int] | None = None,
    reader: ImageReader | str | None = None,
    label_reader: ImageReader | str | None = None,
    value_map: Mapping[int, int] | None = None,
    label_map: Mapping[str, int] | None = None,
    allow_empty: bool = False,
    preprocessing: Mapping[str, Any] | None = None,
    augmentation: Mapping[str, Any] | None = None,
    augment: bool = True,
    seed: int | None = None,
    slices_per_volume: int = 0,
    pos_fraction: float = 0.75,
    patch_size: int = 0,
    patch_pos_fraction: float = 0.67,
    slice_orientation: Any = None,
    image_orientation: Any = None,
    weak_labels: bool = False,
    slice_negatives: str = "uniform",
) -> Compose:
    """Training chain: load, check, orient, paper preprocessing, (patch), knee augmentation, float32.

    Args:
        keys: ``(image_key, *label_keys)``.
        spatial_size: ``N`` (longest side after resize, square side after padding).
        spatial_dims: 2 for slices, 3 for volumes processed in-plane.
        spatial_axes: the in-plane axes (default ``(0, 1)``).
        reader: image ``ImageReader`` (``None``: by suffix); e.g. a DICOM series reader.
        label_reader: label ``ImageReader`` (``None``: by suffix).
        value_map: 2D masks: ``{grey value: class id}``; ``None`` binarises ``> 0``.
        label_map: labelme JSON labels: ``{label name: class id}``.
        allow_empty: ``False`` (training default) rejects empty masks; ``True`` warns.
        preprocessing: extra arguments for :func:`paper_preprocessing` (``percentiles``,
            ``smooth_sigma``, ``equalization``, ``clip_limit``, ``image_mode``, ``label_mode``).
        augmentation: extra arguments for :func:`knee_augmentations`.
        augment: ``False`` drops the random transforms (then equal to :func:`eval_transforms`).
        seed: seeds every random transform (``Compose.set_random_state``) -> reproducible.
        slices_per_volume: ``0``: inputs must have ``spatial_dims`` dimensions. ``N > 0`` (with
            ``spatial_dims=2``): 3D volumes are cut into ``N`` random 2D slices each
            (:class:`~kneeseg.transforms.slicing.SampleSlicesd`; ``pos_fraction`` of them with
            foreground; after orientation, see ``slice_orientation``), 2D images pass unchanged; ``-1``:
            every slice. The whole volume's mask is checked for emptiness, not each slice.
        pos_fraction: share of sampled slices with foreground.
        patch_size: ``0``: train on the whole ``N x N`` image. ``P`` (``0 < P < N``): train on one
            random ``P x P`` in-plane patch per image (MONAI ``RandCropByPosNegLabeld``, after
            the preprocessing and before augmentation), so an epoch costs about ``(P/N)^2`` of a
            full-image epoch while the network keeps the resolution of ``N``; evaluation and
            inference still see the whole image (the networks are fully convolutional).
        patch_pos_fraction: share of patches centred on a foreground pixel (the rest on
            background), as nnU-Net's foreground oversampling.
        slice_orientation: the model's slice orientation (``{"right": ..., "down": ...}``, see
            :class:`kneeseg.data.orientation.SliceOrientation`): volumes are reoriented from their
            affine, 2D images from ``image_orientation`` (:class:`~kneeseg.transforms.orientation.OrientSlicesd`).
            ``None`` leaves every array as loaded.
        image_orientation: the declared orientation of 2D images (a datalist item's own
            ``image_orientation`` entry wins); ``None``: they are in the model's orientation.
        weak_labels: items without a label but with ``possible_slices`` (a volume's slice range
            that may hold the structure) train on their other slices as all background
            (:class:`~kneeseg.transforms.slicing.WeakSliceLabeld`; needs ``slices_per_volume``).
        slice_negatives: how volumes' slices without foreground are drawn: ``"uniform"`` or
            ``"near"`` (hard negatives next to the structure, see
            :class:`~kneeseg.transforms.slicing.SampleSlicesd`).

    Returns:
        ``Compose``; outputs per key as in the module table (``P`` instead of ``N`` with patches).

    Raises:
        ValueError (at call time): bad inputs -- colour image, size mismatch, empty mask, NaN/Inf,
            unknown labelme label, wrong number of dimensions; the message names the file.
    """
    image_key, label_keys = _split_keys(keys)
    if weak_labels and not slices_per_volume:
        raise ValueError("weak_labels need slices_per_volume (the volumes are cut into slices)")
    xforms = _front(
        image_key, label_keys, spatial_size, spatial_dims, spatial_axes, reader, label_reader,
        value_map, label_map, allow_empty, preprocessing, slices_per_volume, pos_fraction,
        slice_orientation, image_orientation, weak_labels, slice_negatives,
    )
    if patch_size:
        xforms.append(_patch_sampler(image_key, label_keys, int(patch_size), int(spatial_size), spatial_dims,
                                     spatial_axes, patch_pos_fraction))  # fmt: skip
    if augment:
        xforms += knee_augmentations(
            image_key,
            label_keys or None,
            spatial_dims=spatial_dims,
            spatial_axes=(0, 1) if spatial_axes is None else spatial_axes,
            **dict(augmentation or {}),
        )
    if slices_per_volume:
        # slices of volumes and 2D images carry different keys and meta: keep what training uses,
        # as plain tensors, so that a batch can mix them
        xforms += [SelectItemsd([image_key, *label_keys]), EnsureTyped([image_key, *label_keys], dtype=torch.float32, track_meta=False)]
    else:
        xforms.append(_typed([image_key, *label_keys]))
    chain = KneeCompose(xforms)
    if seed is not None:
        chain.set_random_state(seed=seed)
    return chain


class OnePatchd(RandCropByPosNegLabeld):
    """MONAI ``RandCropByPosNegLabeld`` with one sample, returning the patch's dictionary itself.

    MONAI returns a list of ``num_samples`` dictionaries. A volume cut into slices already is a list
    (:class:`~kneeseg.transforms.slicing.SampleSlicesd`), and a list per slice would nest lists,
    which the transforms after it cannot take; with one patch per slice the list is not needed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["num_samples"] = 1
        super().__init__(*args, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> Any:  # type: ignore[override]
        with warnings.catch_warnings():
            # a negative slice (no foreground, by design) gets a background patch; MONAI warns each time
            warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
            return super().__call__(data, lazy=lazy)[0]


def _patch_sampler(
    image_key: str,
    label_keys: list[str],
    patch_size: int,
    spatial_size: int,
    spatial_dims: int,
    spatial_axes: Sequence[int] | None,
    pos_fraction: float,
) -> OnePatchd:
    if not label_keys:
        raise ValueError("patch_size needs a label key (patches are centred on foreground or background)")
    if not 0 < patch_size < spatial_size:
        raise ValueError(f"patch_size must be between 0 and spatial_size ({spatial_size}), got {patch_size}")
    if not 0.0 <= pos_fraction <= 1.0:
        raise ValueError(f"patch_pos_fraction must be in [0, 1], got {pos_fraction}")
    plane = (0, 1) if spatial_axes is None else tuple(int(a) % spatial_dims for a in spatial_axes)
    roi = tuple(patch_size if i in plane else -1 for i in range(spatial_dims))
    # pos/neg are relative weights: pos_fraction of the patches centre on foreground
    return OnePatchd(
        [image_key, *label_keys], label_key=label_keys[0], spatial_size=roi, pos=pos_fraction,
        neg=1.0 - pos_fraction, allow_smaller=False,
    )  # fmt: skip


def eval_transforms(
    keys: str | Sequence[str] = ("image", "label"),
    spatial_size: int = 512,
    *,
    spatial_dims: int = 2,
    spatial_axes: Sequence[int] | None = None,
    reader: ImageReader | str | None = None,
    label_reader: ImageReader | str | None = None,
    value_map: Mapping[int, int] | None = None,
    label_map: Mapping[str, int] | None = None,
    allow_empty: bool = True,
    preprocessing: Mapping[str, Any] | None = None,
    slices_per_volume: int = 0,
    slice_orientation: Any = None,
    image_orientation: Any = None,
) -> Compose:
    """Evaluation chain: like :func:`train_transforms` without augmentation (deterministic).

    ``allow_empty`` defaults to ``True`` here (warns): an evaluation slice may truly contain no
    structure. ``slices_per_volume=-1`` evaluates volumes as all their 2D slices (a positive
    ``N`` would sample randomly; use -1 for evaluation). Arguments as in :func:`train_transforms`.
    """
    image_key, label_keys = _split_keys(keys)
    xforms = _front(
        image_key, label_keys, spatial_size, spatial_dims, spatial_axes, reader, label_reader,
        value_map, label_map, allow_empty, preprocessing, slices_per_volume,
        slice_orientation=slice_orientation, image_orientation=image_orientation,
    )
    xforms.append(_typed([image_key, *label_keys]))
    return KneeCompose(xforms)


class DimensionDispatchd(MapTransform, InvertibleTransform):
    """Run the chain made for the loaded image's number of spatial dimensions (2 or 3).

    ``chains`` maps 2 and/or 3 to a ``Compose``; the image under ``key`` picks one at call
    time, and :meth:`inverse` picks the same one from the number of dimensions of the data to
    invert, so ``Invertd`` works through it. Lets one inference config take 2D images and 3D
    volumes alike (MONAI Label reads a single ``inference.json``).
    """

    def __init__(self, key: str, chains: Mapping[int, Compose]) -> None:
        MapTransform.__init__(self, key)
        self.key = key
        self.chains = dict(chains)

    def _chain(self, data: Mapping[Hashable, Any]) -> Compose:
        value = data[self.key]
        nsp = value.ndim - 1
        if nsp not in self.chains:
            raise ValueError(
                f"{source_of(value, self.key, data)}: expected a 2D image or a 3D volume (channel first), "
                f"got shape {tuple(value.shape)}"
            )
        return self.chains[nsp]

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:  # type: ignore[override]
        return self._chain(data)(dict(data))

    def inverse(self, data: Mapping[Hashable, Any]) -> Any:
        return self._chain(data).inverse(dict(data))


def infer_transforms(
    keys: str | Sequence[str] = "image",
    spatial_size: int = 512,
    *,
    spatial_dims: int | str = 2,
    spatial_axes: Sequence[int] | None = None,
    reader: ImageReader | str | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    slice_orientation: Any = None,
    image_orientation: Any = None,
) -> Compose:
    """Inference chain: load, check, orient, paper preprocessing of the image only.

    Pass the returned ``Compose`` to :func:`post_transforms` so predictions are inverted back
    to the input geometry (orientation included). Arguments as in :func:`train_transforms`
    (extra keys are ignored), plus:

    Args:
        spatial_dims: 2, 3, or ``"auto"``: the chain for 2D images or for 3D volumes is chosen
            per input after loading (:class:`DimensionDispatchd`).
        slice_orientation: the model's slice orientation. Volumes are brought into it from their
            affine (slices cut along the axis closest to the model plane's normal), 2D images
            from ``image_orientation`` (``None``: taken as already in it, logged).
    """
    image_key, _ = _split_keys(keys)
    if spatial_dims == "auto":
        chains = {}
        for dims in (2, 3):
            full = infer_transforms(
                keys, spatial_size, spatial_dims=dims, spatial_axes=spatial_axes, reader=reader,
                preprocessing=preprocessing, slice_orientation=slice_orientation,
                image_orientation=image_orientation,
            )  # fmt: skip
            chains[dims] = KneeCompose(full.transforms[1:])  # everything after loading
        return KneeCompose([load_image(image_key, reader), DimensionDispatchd(image_key, chains)])
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2, 3 or 'auto', got {spatial_dims!r}")
    xforms = _front(
        image_key, [], spatial_size, spatial_dims, spatial_axes, reader, None, None, None, True,
        preprocessing, slice_orientation=slice_orientation, image_orientation=image_orientation,
    )
    xforms.append(_typed([image_key]))
    return KneeCompose(xforms)


def post_transforms(
    preprocess: Compose | None,
    pred_key: str = "pred",
    image_key: str = "image",
    *,
    activation: str | None = "softmax",
    discrete: bool = True,
    threshold: float = 0.5,
    largest_component: bool = False,
    applied_labels: Sequence[int] | None = None,
) -> Compose:
    """Post-processing of one (decollated) prediction: activation -> invert -> discretise -> LCC.

    Probabilities are inverted before discretising, so the upsampling back to the original size
    interpolates probabilities (bilinear, as recorded for the image), not hard labels.

    Args:
        preprocess: the chain that produced the network input (usually :func:`infer_transforms`);
            ``None`` skips inversion (output stays ``N x N``).
        pred_key: key of the network output ``(K, *spatial)`` (a MetaTensor; MONAI networks
            propagate the input's MetaTensor type).
        image_key: key whose recorded transforms are inverted.
        activation: ``"softmax"`` (K >= 2 channels), ``"sigmoid"`` (K = 1) or ``None`` (already
            probabilities).
        discrete: ``True``: class ids ``(1, *spatial)`` by
            :func:`kneeseg.transforms.postprocess.probabilities_to_labels` (argmax of three or more
            channels; one channel, or a two-class softmax's foreground channel, ``> threshold``),
            the function the fast path of ``kneeseg infer`` calls; ``False`` keeps probabilities.
        threshold: threshold of a single foreground probability (0.5: the argmax of two classes).
        largest_component: keep only the largest connected component of each foreground class
            (:func:`kneeseg.transforms.postprocess.keep_largest_components`, full connectivity).
        applied_labels: classes for ``largest_component`` (default: all foreground classes).

    Returns:
        ``Compose`` mapping ``{pred_key: (K, N, N), image_key: ...}`` to ``{pred_key: (1, *orig)}``
        float32 class ids in the original image geometry (``(1, W, H)`` for 2D files).
    """
    xforms: list[Transform] = []
    if activation == "softmax":
        xforms.append(Activationsd(pred_key, softmax=True))
    elif activation == "sigmoid":
        xforms.append(Activationsd(pred_key, sigmoid=True))
    elif activation is not None:
        raise ValueError(f"activation must be 'softmax', 'sigmoid' or None, got {activation!r}")
    if preprocess is not None:
        xforms.append(
            Invertd(pred_key, transform=preprocess, orig_keys=image_key, nearest_interp=False, to_tensor=True)
        )
    if discrete:
        # one implementation with the fast path of ``kneeseg infer`` (kneeseg.transforms.postprocess)
        xforms.append(ProbabilitiesToLabelsd(pred_key, threshold=threshold))
        if largest_component:
            xforms.append(KeepLargestComponentsd(pred_key, applied_labels=applied_labels))
    elif largest_component:
        raise ValueError("largest_component needs discrete=True")
    return KneeCompose(xforms)
