"""Slice-wise segmentation of one volume with a trained bundle network: the fast path.

:class:`SliceSegmenter` computes what the bundle's ``inference.json`` computes (MONAI
``infer_transforms`` -> ``SliceInferer`` -> ``post_transforms``), restructured for speed:

- the preprocessing is the bundle's own: the ordered steps of
  :func:`kneeseg.transforms.functional.preprocessing_steps`, computed by the same batched functions
  the MONAI transforms call, here on all slices of the series at once and on the inference device
  (a CUDA GPU preprocesses on itself);
- the network sees batches of slices under one of three runtimes
  (:mod:`kneeseg.execution.runtimes`): ``eager`` (fp32 PyTorch), ``bf16`` (autocast +
  channels_last) or ``onnx`` (ONNX Runtime); ``auto`` (the default) picks one from what this
  machine can do;
- each batch's probabilities are cropped, resized back and turned into labels right away, so
  memory stays at one batch of probabilities rather than the whole volume's.

Every setting comes from the bundle's ``inference.json``
(:func:`~kneeseg.inference.definition.bundle_settings`): the model's
``slice_orientation`` (each volume is reoriented from its affine with
:func:`kneeseg.data.orientation.map_volume`, exactly as the chain's ``OrientSlicesd`` does, and
back after), ``preprocessing_options`` (read through
:func:`kneeseg.transforms.functional.preprocessing_options`; no defaults of its own) and
``largest_component`` (3D, per class). Results equal the MONAI pipeline's up to floating-point
rounding (tested).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kneeseg.data.orientation import AxisMap, map_volume, SliceOrientation
from kneeseg.execution.runtimes import NetworkRunner, RuntimeChoice, ensemble_runners
from kneeseg.files import PathLike
from kneeseg.inference.definition import bundle_settings, load_networks
from kneeseg.networks.ensemble import mean_softmax
from kneeseg.transforms.functional import preprocess_planes, preprocessing_options, preprocessing_steps
from kneeseg.transforms.postprocess import (
    count_components,
    keep_largest_components,
    probabilities_to_labels,
    resize_probabilities,
)
from kneeseg.networks.checkpoints import checkpoint_paths, contract_overrides, read_contract

__all__ = ["Prediction", "PreparedVolume", "SliceSegmenter", "load_model", "load_segmenter"]

logger = logging.getLogger(__name__)


@dataclass
class PreparedVolume:
    """Network-ready slices of one volume plus what is needed to map predictions back.

    ``slices``: float32 ``(S, 1, N, N)``; ``shape``: the volume's shape in the model's
    orientation ``(X, Y, S)``; ``axis_map``: the reorientation from the input layout (its
    inverse restores it); ``resized``: in-plane size after the longest-side resize; ``pad``:
    ``(before0, before1)``.
    """

    slices: torch.Tensor
    shape: tuple[int, int, int]
    resized: tuple[int, int]
    pad: tuple[int, int]
    axis_map: AxisMap = field(default_factory=lambda: AxisMap((0, 1, 2), (False, False, False)))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """Labels of one volume in its input layout, with what quality checks need.

    ``labels``: uint8 class ids; ``confidence``: uint8, the predicted class's softmax
    probability x 255; ``raw_components``: ``{class id: 3D connected components}`` before the
    largest-component cleanup; ``timings``: seconds per stage.
    """

    labels: np.ndarray
    confidence: np.ndarray
    raw_components: dict[int, int] = field(default_factory=dict)
    #: seconds spent: ``network`` (forward passes), ``postprocess`` (the rest)
    timings: dict[str, float] = field(default_factory=dict)


class SliceSegmenter:
    """Segment volumes slice by slice with a 2D network, in the model's slice orientation.

    Args:
        network: a 2D network ``(B, 1, N, N) -> (B, K, N, N)`` logits (weights loaded), or a
            list of such networks: a fold ensemble, whose softmax outputs are averaged before
            the argmax (time and ONNX exports grow with the number of members).
        spatial_size: ``N`` of the bundle (longest in-plane side after resize; padded square).
        runtime: one of :data:`~kneeseg.execution.runtimes.RUNTIMES` (``auto``: see
            :func:`kneeseg.execution.runtimes.choose_runtime`); the resolved one is
            :attr:`runtime`, with its reason in :attr:`runtime_choice`.
        device: torch device for ``eager``/``bf16`` (``onnx`` uses the CUDA provider when the
            device is CUDA and onnxruntime has it, else the CPU provider).
        class_names: ``{class id: name}`` including 0.
        slice_batch: slices per forward pass.
        slice_orientation: the model's slice orientation (the bundle's ``slice_orientation``);
            volumes given with an affine are reoriented into it and back. ``None``: volumes are
            used as given.
        preprocessing: the bundle's ``preprocessing_options``; missing entries take
            :data:`~kneeseg.transforms.preprocessing.PREPROCESSING_DEFAULTS`.
        largest_component: keep the largest 3D connected component of each foreground class
            (the bundle's ``largest_component``).
        onnx_path: where to cache the exported ONNX model (``onnx`` runtime); default: a
            temporary in-memory export.
        threads: CPU threads of the network runtime (default: ``torch.get_num_threads()``).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        spatial_size: int,
        *,
        runtime: str = "auto",
        device: str | torch.device = "cpu",
        class_names: Mapping[int, str] | None = None,
        slice_batch: int = 8,
        slice_orientation: Any = None,
        preprocessing: Mapping[str, Any] | None = None,
        largest_component: bool = False,
        onnx_path: PathLike | None = None,
        threads: int | None = None,
    ) -> None:
        if slice_batch < 1:
            raise ValueError(f"slice_batch must be >= 1, got {slice_batch}")
        self.device = torch.device(device)
        self.spatial_size = int(spatial_size)
        self.slice_batch = int(slice_batch)
        self.slice_orientation = None if slice_orientation is None else SliceOrientation.parse(slice_orientation)
        self.largest_component = bool(largest_component)
        self.class_names = dict(class_names or {0: "background", 1: "foreground"})
        self.preprocessing = preprocessing_options(preprocessing)
        #: the ordered steps of the definition, run by :func:`kneeseg.transforms.functional.preprocess_planes`
        self.steps = preprocessing_steps(self.preprocessing)
        #: the resize step's interpolation, used again to bring probabilities back (as the bundle's Invertd)
        self.resize_mode = next(s.params["mode"] for s in self.steps if s.name == "resize")
        #: where the preprocessing runs: the inference device (a CUDA GPU preprocesses on itself)
        self.preprocess_device = self.device
        self.threads = max(1, int(threads or torch.get_num_threads()))
        self.runners: list[NetworkRunner] = ensemble_runners(
            network, self.spatial_size, runtime, self.device, threads=self.threads, probe_batch=self.slice_batch,
            onnx_path=onnx_path,
        )  # fmt: skip
        self.runner = self.runners[0]
        self._net_pool: ThreadPoolExecutor | None = None
        self.network = self.runner.network
        #: stage -> seconds spent by :meth:`preprocess` / :meth:`predict_full` on the last volume
        self.timings: dict[str, float] = {}

    @property
    def runtime(self) -> str:
        """The resolved runtime: ``eager``, ``bf16`` or ``onnx``."""
        return self.runner.name

    @property
    def runtime_choice(self) -> RuntimeChoice:
        """The resolved runtime and why it was chosen."""
        return self.runner.choice

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, N, N)`` float32 on the CPU for a ``(B, 1, N, N)`` batch (first network)."""
        return self.runner(batch).float().cpu()

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Softmax ``(B, K, N, N)`` for a ``(B, 1, N, N)`` batch: of the network, or the mean of
        the ensemble members' softmax (fold ensembles average probabilities, then argmax)."""
        return mean_softmax(runner(batch).float().cpu() for runner in self.runners)

    # ------------------------------------------------------------------ preprocessing
    def orientation_map(self, affine: Any, space: str = "RAS", slice_axis: int | None = None) -> AxisMap:
        """The reorientation of a volume with ``affine`` into the model's slice orientation
        (identity without an affine or a model orientation)."""
        if affine is None or self.slice_orientation is None:
            return AxisMap((0, 1, 2), (False, False, False))
        return map_volume(affine, self.slice_orientation, space=space, slice_axis=slice_axis)

    def preprocess(
        self, volume: np.ndarray, affine: Any = None, *, space: str = "RAS", slice_axis: int | None = None
    ) -> PreparedVolume:
        """A volume and its affine -> :class:`PreparedVolume` (network input).

        Same steps as the bundle's ``infer_transforms``: reorientation into the model's slices
        (from ``affine``; without one the volume's axes 0, 1 are taken as the model's in-plane
        axes and axis 2 as the slice axis), then the definition's steps in its order (by default
        the longest-side resize with anti-aliasing, percentile scaling over the volume, in-plane
        Gaussian smoothing, per-slice CLAHE, symmetric zero padding to ``N x N``), on
        :attr:`preprocess_device`.

        Args:
            volume: 3D intensities (e.g. kneeseg's ``(columns, rows, slices)`` DICOM layout).
            affine: its voxel -> world affine (``space``: ``"RAS"`` or ``"LPS"``).
            slice_axis: see :func:`kneeseg.data.orientation.map_volume` (2: the acquisition plane).

        Raises:
            ValueError: not a 3D array, or NaN/Inf values.
        """
        started = time.perf_counter()
        arr = np.asarray(volume, dtype=np.float32)
        if arr.ndim != 3:
            raise ValueError(f"expected a 3D volume, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"volume holds {int((~np.isfinite(arr)).sum())} NaN/Inf value(s)")
        amap = self.orientation_map(affine, space, slice_axis)
        arr = amap.apply(arr)
        cols, rows, depth = arr.shape
        planes = torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, 2, 0)))[:, None]  # (S, 1, X, Y)
        prepared = preprocess_planes(planes.to(self.preprocess_device), self.spatial_size, self.steps)
        return PreparedVolume(
            slices=prepared.planes, shape=(cols, rows, depth), resized=prepared.resized, pad=prepared.pad,
            axis_map=amap, extra={"seconds": time.perf_counter() - started},
        )  # fmt: skip

    # ------------------------------------------------------------------ prediction
    def predict_full(
        self, prepared: PreparedVolume, progress: Callable[[int, int], None] | None = None
    ) -> Prediction:
        """Labels, confidence and raw component counts in the input layout (see :class:`Prediction`).

        With two classes the softmax's second channel alone decides (``p1 > 0.5`` is the
        argmax, and resizing, a weighted mean, keeps ``p0 = 1 - p1``), so only one channel is
        resized back to full size; with more classes all of them are. Cropping the padding,
        resizing back (the resize step's ``image_mode``), labels and the clean-up are the functions
        of :mod:`kneeseg.transforms.postprocess`, as in the bundle's ``post_transforms``.
        """
        cols, rows, depth = prepared.shape
        (h, w), (p0, p1) = prepared.resized, prepared.pad
        labels = np.empty((depth, cols, rows), dtype=np.uint8)
        confidence = np.empty((depth, cols, rows), dtype=np.uint8)
        network = post = 0.0
        t0 = time.perf_counter()
        for start, probs in self._forward_batches(prepared.slices):
            stop = start + probs.shape[0]
            t1 = time.perf_counter()
            if probs.shape[1] == 2:  # the foreground channel decides: resize that one back
                probs = probs[:, 1:2]
            probs = resize_probabilities(probs[:, :, p0 : p0 + h, p1 : p1 + w], (cols, rows), self.resize_mode)
            lab, best = probabilities_to_labels(probs)
            labels[start:stop] = lab.numpy()
            confidence[start:stop] = (best * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
            network += t1 - t0
            if progress is not None:
                progress(stop, depth)
            t0 = time.perf_counter()
            post += t0 - t1
        t0 = time.perf_counter()
        labels = np.moveaxis(labels, 0, 2)
        components: dict[int, int] = {}
        if self.largest_component:
            labels, components = keep_largest_components(labels, [c for c in self.class_names if c > 0])
        else:
            components = count_components(labels, [c for c in self.class_names if c > 0])
        inv = prepared.axis_map
        prediction = Prediction(
            labels=np.ascontiguousarray(inv.invert(labels)),
            confidence=np.ascontiguousarray(inv.invert(np.moveaxis(confidence, 0, 2))),
            raw_components=components,
        )
        post += time.perf_counter() - t0
        prediction.timings.update(network=network, postprocess=post)
        return prediction

    def _forward_batches(self, slices: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, probabilities)`` of each batch of ``slice_batch`` slices, in order; with a
        runner that wants several batches at once, that many run in parallel (one ahead each)."""
        starts = range(0, slices.shape[0], self.slice_batch)
        parallel = self.runner.concurrent
        if parallel <= 1:
            for start in starts:
                yield start, self.probabilities(slices[start : start + self.slice_batch])
            return
        if self._net_pool is None:
            self._net_pool = ThreadPoolExecutor(parallel, thread_name_prefix="kneeseg-net")
        pending: deque[tuple[int, Any]] = deque()
        for start in starts:
            pending.append((start, self._net_pool.submit(self.probabilities, slices[start : start + self.slice_batch])))
            if len(pending) >= parallel:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()

    def predict(self, prepared: PreparedVolume, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """uint8 labels in the input volume's layout."""
        return self.predict_full(prepared, progress).labels

    def __call__(self, volume: np.ndarray, affine: Any = None, **kwargs: Any) -> np.ndarray:
        """Preprocess and predict: a volume (and its affine) -> uint8 labels of the same shape."""
        return self.predict(self.preprocess(volume, affine, **kwargs))

    def close(self) -> None:
        for name in ("_net_pool",):
            pool = getattr(self, name)
            if pool is not None:
                pool.shutdown(wait=True)
                setattr(self, name, None)


# ---------------------------------------------------------------------------- loading from a bundle


def load_model(
    bundle: PathLike | None = None,
    ckpt: PathLike | Sequence[PathLike] | None = None,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[list[torch.nn.Module], dict[str, Any]]:
    """The trained network(s) and the inference settings, with no side effect (nothing written).

    The model's own record (``model.json`` beside the checkpoint, written by training) sets the
    network, width, input size, classes, slice orientation and preprocessing, so no preset is
    needed; an explicit override of the network, width or classes that contradicts it is refused
    (:func:`kneeseg.networks.checkpoints.contract_overrides`). Arguments as :func:`load_segmenter`.

    Returns:
        ``(networks, settings)``: one network per checkpoint (several: a fold ensemble), and
        :func:`bundle_settings` plus ``ckpt_path``, ``ckpt_digest`` and ``ensemble``.

    Raises:
        FileNotFoundError: missing checkpoint. ValueError: an unreadable checkpoint, one that does not
        fit the network (saying what differs), or an override that contradicts the model's record.
    """
    paths = checkpoint_paths(ckpt) if ckpt is not None and not (isinstance(ckpt, (list, tuple)) and not ckpt) else None
    settings = bundle_settings(bundle, preset, contract_overrides(read_contract(paths[0]) if paths else None, overrides))
    return load_networks(settings, paths if paths is not None else ckpt), settings


def load_segmenter(
    bundle: PathLike | None = None,
    ckpt: PathLike | Sequence[PathLike] | None = None,
    *,
    runtime: str = "auto",
    device: str | torch.device = "cpu",
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    slice_batch: int | None = None,
    onnx_cache: PathLike | None = None,
    model: tuple[list[torch.nn.Module], dict[str, Any]] | None = None,
) -> tuple[SliceSegmenter, dict[str, Any]]:
    """A :class:`SliceSegmenter` for a bundle's network with trained weights.

    Args:
        bundle: bundle folder (default: the bundle shipped with kneeseg).
        ckpt: checkpoint (a state dict or ``{"model": state_dict}``), a model folder (its
            ``model.pt``, or its ``fold*/model.pt`` as an ensemble) or a list of checkpoints (a fold
            ensemble: softmax averaged over the members); default the bundle's ``ckpt_path``
            (``models/model.pt``). The model's ``model.json`` (written by training) sets the network,
            width, input size, classes, orientation and preprocessing, so no preset is needed.
        runtime, device, slice_batch: see :class:`SliceSegmenter`.
        preset: a bundle preset (``cpu``, ``paper`` or a JSON file) that defines the network.
        overrides: bundle config overrides (``width``, ``spatial_size``, ``network_name``...).
        onnx_cache: folder for the exported ONNX model (named after the checkpoint's digest).
        model: :func:`load_model`'s result, when already loaded (then ``bundle``, ``ckpt``,
            ``preset`` and ``overrides`` are not read again).

    Returns:
        ``(segmenter, settings)`` with ``settings`` as :func:`bundle_settings` plus ``ckpt_path``
        and ``ckpt_digest``.

    Raises:
        FileNotFoundError: missing checkpoint. ValueError: checkpoint does not fit the network.
    """
    nets, settings = model if model is not None else load_model(bundle, ckpt, preset=preset, overrides=overrides)
    digest = settings["ckpt_digest"]
    onnx_path = None
    if runtime in ("onnx", "auto") and onnx_cache is not None:
        onnx_path = Path(onnx_cache) / f"{settings['network_name']}-{digest}-{settings['spatial_size']}.onnx"
    segmenter = SliceSegmenter(
        nets if len(nets) > 1 else nets[0],
        settings["spatial_size"],
        runtime=runtime,
        device=device,
        class_names=settings["class_names"],
        slice_batch=slice_batch or settings["slice_batch_size"],
        slice_orientation=settings["slice_orientation"],
        preprocessing=settings["preprocessing"],
        largest_component=settings["largest_component"],
        onnx_path=onnx_path,
    )
    return segmenter, settings

