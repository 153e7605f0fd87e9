"""An inferer that runs another inferer's forward pass under kneeseg's precision policy."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
import torch.nn as nn

from monai.inferers import Inferer, SimpleInferer, SliceInferer

from kneeseg.engines.amp import AmpPolicy, resolve_amp

__all__ = ["AutocastInferer", "SliceOrSimpleInferer"]


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
        inferer: Optional[Inferer] = None,
        policy: Optional[AmpPolicy] = None,
        amp: Union[str, bool, None] = "auto",
        device: Union[str, torch.device, None] = None,
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
