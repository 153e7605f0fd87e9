"""Channel and spatial attention (CSAM) blocks for 2D and 3D feature maps.

The paper's CSAM ("channel + spatial attention module") follows the CBAM recipe: a channel
gate computed from globally pooled descriptors, then a spatial gate computed from
channel-pooled maps. Both gates are sigmoids, so every weight lies in (0, 1) and the
module only re-weights its input.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Act, Conv, split_args

__all__ = ["ChannelAttention", "SpatialAttention", "CSAM", "AttentionConcat", "Concat"]


def _gate_shape(x: torch.Tensor, keep_channels: bool, spatial_dims: int) -> list[int]:
    """Broadcast shape of a gate: ``(B, C, 1, ...)`` for channels, ``(B, 1, *spatial)`` otherwise."""
    if keep_channels:
        return [x.shape[0], x.shape[1]] + [1] * spatial_dims
    return [x.shape[0], 1] + list(x.shape[2:])


class ChannelAttention(nn.Module):
    """Channel gate: ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` scales each channel.

    The two global descriptors (average and maximum over all positions) go through one
    shared MLP with a single hidden layer of ``max(channels // reduction, min_hidden)``
    units; the two outputs are summed and squashed by a sigmoid.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        channels: number of input (and output) channels ``C``.
        reduction: reduction ratio ``r`` of the hidden layer. Defaults to 16.
        min_hidden: lower bound on the hidden width, so narrow layers keep a usable MLP.
        act: activation of the hidden layer, any name understood by MONAI's ``Act`` factory.

    Raises:
        ValueError: when ``channels`` or ``reduction`` is not positive.

    See also:
        :py:class:`monai.networks.blocks.ChannelSELayer` (average pooling only, no max branch).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        reduction: int = 16,
        min_hidden: int = 1,
        act: tuple | str = ("relu", {"inplace": True}),
    ) -> None:
        super().__init__()
        if channels <= 0 or reduction <= 0:
            raise ValueError(f"channels and reduction must be positive, got channels={channels}, reduction={reduction}.")
        self.spatial_dims = spatial_dims
        hidden = max(channels // reduction, min_hidden, 1)
        act_name, act_args = split_args(act)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=True),
            Act[act_name](**act_args),
            nn.Linear(hidden, channels, bias=True),
        )

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights in (0, 1).

        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``(B, C, 1, ...)``, broadcastable against ``x``.
        """
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # channels_last: positions x channels is a view (a flatten would copy the tensor), and
            # reducing its rows is vectorised across channels
            flat = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])
            mean, peak = flat.mean(dim=1), flat.amax(dim=1)
        else:
            flat = x.flatten(2)
            mean, peak = flat.mean(dim=-1), flat.amax(dim=-1)
        # one batched MLP call for both descriptors: (B, 2, C)
        desc = torch.stack((mean, peak), dim=1)
        logits = self.mlp(desc).sum(dim=1)
        return torch.sigmoid(logits).reshape(_gate_shape(x, True, self.spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, C, *spatial)``. Returns ``x * weights(x)`` of the same shape."""
        return x * self.weights(x)


class SpatialAttention(nn.Module):
    """Spatial gate: ``sigmoid(conv_k([mean_c(x), max_c(x)]))`` scales each position.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        kernel_size: size ``k`` of the ``k x k`` (x k) convolution over the two pooled maps;
            odd, defaults to 7 as in the paper.

    Raises:
        ValueError: when ``kernel_size`` is not a positive odd number.

    See also:
        :py:class:`ChannelAttention`, :py:class:`CSAM`.
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
        self.spatial_dims = spatial_dims
        self.conv = Conv[Conv.CONV, spatial_dims](2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=True)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Position weights in (0, 1).

        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``(B, 1, *spatial)``, broadcastable against ``x``.
        """
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, C, *spatial)``. Returns ``x * weights(x)`` of the same shape."""
        return x * self.weights(x)


class CSAM(nn.Module):
    """Channel attention followed by spatial attention: ``y = x * Wc(x); out = y * Ws(y)``.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        channels: number of input (and output) channels.
        reduction: reduction ratio of the channel MLP. Defaults to 16.
        spatial_kernel_size: kernel of the spatial gate's convolution. Defaults to 7.
        min_hidden: lower bound on the channel MLP's hidden width.
        act: activation of the channel MLP's hidden layer.

    See also:
        :py:class:`ChannelAttention`, :py:class:`SpatialAttention`.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        reduction: int = 16,
        spatial_kernel_size: int = 7,
        min_hidden: int = 1,
        act: tuple | str = ("relu", {"inplace": True}),
    ) -> None:
        super().__init__()
        self.channel = ChannelAttention(spatial_dims, channels, reduction=reduction, min_hidden=min_hidden, act=act)
        self.spatial = SpatialAttention(spatial_dims, kernel_size=spatial_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, C, *spatial)``. Returns a tensor of the same shape."""
        y = x * self.channel.weights(x)
        gate = self.spatial.weights(y)
        if torch.is_grad_enabled() or torch.jit.is_tracing():
            return y * gate
        # inference: re-use y's buffer instead of allocating a third full-size tensor
        return y.mul_(gate)


class Concat(nn.Module):
    """``cat([skip, up], dim=1)``: the plain U-Net skip merge (the counterpart of :py:class:`AttentionConcat`)."""

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """Args: skip ``(B, Cs, *spatial)``, up ``(B, Cu, *spatial)``. Returns ``(B, Cs + Cu, *spatial)``."""
        return torch.cat((skip, up), dim=1)


class AttentionConcat(nn.Module):
    """``cat([CSAM(skip), up], dim=1)``, computed without intermediate full-size tensors at inference.

    With autograd enabled it is exactly ``torch.cat((attention(skip), up), 1)``. Under
    ``torch.no_grad``/``inference_mode`` the gated skip is written straight into its slice
    of the concatenated output and re-weighted there in place: the same arithmetic, but
    no extra full-resolution buffers (on CPU a fresh large buffer costs more than the
    multiply itself, because every page of it is faulted in).

    Args:
        attention: the :py:class:`CSAM` applied to the skip.
    """

    def __init__(self, attention: CSAM) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """Args: skip ``(B, Cs, *spatial)``, up ``(B, Cu, *spatial)``. Returns ``(B, Cs + Cu, *spatial)``."""
        if torch.is_grad_enabled() or torch.jit.is_tracing():  # ONNX/trace graphs cannot hold out= writes
            return torch.cat((self.attention(skip), up), dim=1)
        cs = skip.shape[1]
        shape = list(up.shape)
        shape[1] = cs + shape[1]
        if up.dim() == 4 and up.is_contiguous(memory_format=torch.channels_last):
            out = torch.empty(shape, dtype=up.dtype, device=up.device, memory_format=torch.channels_last)
        elif up.dim() == 5 and up.is_contiguous(memory_format=torch.channels_last_3d):
            out = torch.empty(shape, dtype=up.dtype, device=up.device, memory_format=torch.channels_last_3d)
        else:
            out = torch.empty(shape, dtype=up.dtype, device=up.device)
        gated = out.narrow(1, 0, cs)
        torch.mul(skip, self.attention.channel.weights(skip).to(skip.dtype), out=gated)
        gated.mul_(self.attention.spatial.weights(gated).to(skip.dtype))
        out.narrow(1, cs, up.shape[1]).copy_(up)
        return out
