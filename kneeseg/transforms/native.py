"""Predictions in the image's own space, for evaluation against the mask as it is on disk.

Evaluation scores the network on the ``N x N`` grid it sees (resized, padded, in the model's slice
orientation), against a label resampled the same way. :func:`native_transforms` adds, for each
evaluated item, the prediction in the image's own space (softmax, then the chain's recorded
orientation, resize and padding inverted -- MONAI ``Invertd``, probabilities interpolated -- then
the log, so that the evaluation's softmax-based metrics read the inverted probabilities back
unchanged) and the original mask loaded again from its file (:class:`LoadSourceLabeld`): the
metrics of both then count the image's own pixels, with the image's own spacing.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.data import ImageReader, MetaTensor
from monai.transforms import Activationsd, Compose, CopyItemsd, Invertd, Lambdad, MapTransform

from kneeseg.transforms.loading import load_label

__all__ = ["LoadSourceLabeld", "native_transforms"]


class LoadSourceLabeld(MapTransform):
    """Load the file a processed label came from, as it is on disk, into ``output_key``.

    The file is the label's ``filename_or_obj`` meta entry; it is read by the chains' label loader
    (:func:`kneeseg.transforms.load_label`: class ids, ``value_map``/``label_map`` applied, channel
    first) and nothing else: no orientation, no resize.

    Raises:
        ValueError: the label carries no source file name.
    """

    def __init__(
        self,
        label_key: str = "label",
        output_key: str = "label_native",
        value_map: Mapping[int, int] | None = None,
        label_map: Mapping[str, int] | None = None,
        reader: ImageReader | str | None = None,
    ) -> None:
        super().__init__(label_key)
        self.label_key, self.output_key = label_key, output_key
        self.loader = load_label("label", reader, value_map=value_map, label_map=label_map)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = d[self.label_key]
        source = label.meta.get("filename_or_obj") if isinstance(label, MetaTensor) else None
        if isinstance(source, (list, tuple)):
            source = source[0] if len(source) == 1 else list(source)
        if not source:
            raise ValueError(f"'{self.label_key}' carries no source file name: cannot load it at native resolution")
        d[self.output_key] = self.loader({"label": source})["label"]
        return d


def _log_probabilities(p: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.log(p.clamp(min=eps))


def native_transforms(
    preprocess: Compose,
    pred_key: str = "pred",
    label_key: str = "label",
    image_key: str = "image",
    suffix: str = "_native",
    value_map: Mapping[int, int] | None = None,
    label_map: Mapping[str, int] | None = None,
    label_reader: ImageReader | str | None = None,
    eps: float = 1e-7,
) -> Compose:
    """Post-processing of one evaluated item that adds ``pred + suffix`` and ``label + suffix``.

    ``pred + suffix``: log-probabilities ``(K, *native)`` in the image's own space (softmax of
    ``pred``, the chain ``preprocess`` inverted with the image's recorded transforms, log clamped at
    ``eps``); ``label + suffix``: the original label file's class ids ``(1, *native)``. ``pred`` and
    ``label`` stay as they are (the grid metrics keep working).

    Args:
        preprocess: the evaluation chain that made the network input (``validate#preprocessing``);
            it must not cut volumes into slices (``slices_per_volume`` 0).
        value_map, label_map, label_reader: as for the evaluation chain's labels.
    """
    out_pred, out_label = f"{pred_key}{suffix}", f"{label_key}{suffix}"
    return Compose([
        CopyItemsd(pred_key, names=out_pred),
        Activationsd(out_pred, softmax=True),
        Invertd(out_pred, transform=preprocess, orig_keys=image_key, nearest_interp=False, to_tensor=True),
        Lambdad(out_pred, lambda p: _log_probabilities(p, eps)),
        LoadSourceLabeld(label_key, out_label, value_map=value_map, label_map=label_map, reader=label_reader),
    ])  # fmt: skip
