"""An inferer that runs another inferer's forward pass under kneeseg's precision policy."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn
from monai.inferers import Inferer, SimpleInferer, SliceInferer

from kneeseg.execution.precision import AmpPolicy, resolve_amp
from kneeseg.execution.runtimes import NetworkRunner

__all__ = ["AutocastInferer", "RuntimeInferer", "SliceOrSimpleInferer"]

logger = logging.getLogger(__name__)


class AutocastInferer(Inferer):
    """Wraps a MONAI inferer: forward under autocast (bf16 on CPU, fp16 on CUDA), fp32 out.

    MONAI's engines call ``inferer(inputs, network)`` for every forward pass, in training
    as in evaluation, so wrapping the inferer applies the precision policy everywhere
    without a second training loop. The output is cast back to fp32 so that losses,
    metrics and post-processing run in full precision.

    Args:
        inferer: the wrapped inferer (``SimpleInferer``, ``SliceInferer``, ``SlidingWindowInferer``...).
            Defaults to :py:class:`monai.inferers.SimpleInferer`.
        policy: a resolved :py:class:`AmpPolicy`; or give ``amp`` and ``device`` instead.
        amp: ``"auto"``, ``True`` or ``False`` (used when ``policy`` is None).
        device: device used to resolve ``amp``.
        channels_last: convert 4D inputs and the network to ``channels_last`` memory format
            (faster convolutions on CPU with oneDNN, especially in bf16).
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        policy: AmpPolicy | None = None,
        amp: str | bool | None = "auto",
        device: str | torch.device | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.policy = policy if policy is not None else resolve_amp(amp, device)
        self.channels_last = channels_last
        self._converted: set[int] = set()

    def _prepare(self, inputs: torch.Tensor, network: nn.Module) -> torch.Tensor:
        if not self.channels_last or inputs.dim() != 4:
            return inputs
        if id(network) not in self._converted:
            network.to(memory_format=torch.channels_last)  # in place: parameters keep their identity
            self._converted.add(id(network))
        return inputs.contiguous(memory_format=torch.channels_last)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        """Args: inputs ``(B, C, *spatial)``; network: the model (or a callable). Returns fp32 outputs."""
        if isinstance(network, nn.Module):
            inputs = self._prepare(inputs, network)
        with self.policy.autocast():
            out = self.inferer(inputs, network, *args, **kwargs)
        return _to_float(out)


class RuntimeInferer(Inferer):
    """Wraps a MONAI inferer: the network's forward passes under an inference runtime.

    The bundle's ``inference.json`` uses it so that ``python -m monai.bundle run`` and
    ``kneeseg infer-datalist`` run the network the way ``kneeseg infer`` does: ``runtime``
    ``auto`` (default), ``eager``, ``bf16`` or ``onnx``, resolved by
    :func:`kneeseg.execution.runtimes.choose_runtime` on the first call (when the checkpoint's
    weights are loaded) and logged once. The ONNX export is redone only if the weights change.

    Args:
        inferer: the wrapped inferer (e.g. :class:`SliceOrSimpleInferer`); default ``SimpleInferer``.
        runtime: ``auto``, ``eager``, ``bf16`` or ``onnx``.
        device: the inference device (default: the inputs').
        spatial_size: the network's input side (default: the last side of the first input).
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        runtime: str = "auto",
        device: str | torch.device | None = None,
        spatial_size: int | None = None,
    ) -> None:
        super().__init__()
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.runtime = runtime
        self.device = device
        self.spatial_size = spatial_size
        self.runner: NetworkRunner | None = None
        self._key: tuple[Any, ...] | None = None

    @staticmethod
    def _weights_key(network: nn.Module) -> tuple[Any, ...]:
        return (id(network),) + tuple(p._version for p in network.parameters())

    def _runner_for(self, network: nn.Module, inputs: torch.Tensor) -> NetworkRunner:
        if self.runner is None or self._key != self._weights_key(network):
            first = self.runner is None
            device = self.device if self.device is not None else inputs.device
            size = int(self.spatial_size or inputs.shape[-1])
            self.runner = NetworkRunner(network, size, self.runtime, device)
            self._key = self._weights_key(network)
            if first:
                logger.info("runtime: %s", self.runner.choice.describe())
        return self.runner

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        """Args: inputs ``(B, C, *spatial)``; network: the model (or a callable, run as it is)."""
        if isinstance(network, nn.Module):
            network = self._runner_for(network, inputs)
        return _to_float(self.inferer(inputs, network, *args, **kwargs))


def _to_float(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    return out


class SliceOrSimpleInferer(Inferer):
    """A 2D network on 2D images (one forward pass) or on 3D volumes (slice by slice).

    ``(B, C, H, W)`` inputs go straight through the network; ``(B, C, H, W, D)`` inputs go
    through MONAI's ``SliceInferer`` along ``spatial_dim`` with ``roi_size`` and
    ``sw_batch_size`` slices per pass. Lets one inference config serve both.
    """

    def __init__(self, roi_size: Any, spatial_dim: int = 2, sw_batch_size: int = 8, **kwargs: Any) -> None:
        super().__init__()
        self.slice_inferer = SliceInferer(
            roi_size=roi_size, spatial_dim=spatial_dim, sw_batch_size=sw_batch_size, progress=False, **kwargs
        )

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        if inputs.dim() == 5:
            return self.slice_inferer(inputs, network, *args, **kwargs)
        if inputs.dim() == 4:
            return network(inputs, *args, **kwargs)
        raise ValueError(f"expected (B, C, H, W) or (B, C, H, W, D) inputs, got shape {tuple(inputs.shape)}")
