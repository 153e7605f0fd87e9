"""The paper's network: a U-Net with residual conv blocks and CSAM attention.

Jia, Zuo, Zou, Chen, *Optimisation of U-Net Semantic Segmentation Model Based on Residual
Connectivity and Attention Mechanisms*. Encoder stages of 64..1024 channels with 2x2
max-pooling, a 1024-channel bottleneck, 2x2 stride-2 transposed convolutions up,
concatenated skips, residual connections around every conv block, and channel + spatial
attention (CSAM) on the skip connections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool

from kneeseg.networks.attention import CSAM, AttentionConcat, Concat
from kneeseg.networks.residual import ResidualConvBlock

__all__ = ["CSAMUNet", "ATTENTION_PLACEMENTS", "CSAM_UNET_PRESETS", "csam_unet_preset"]

ATTENTION_PLACEMENTS = ("skip", "decoder", "both", "none")


class _DecoderStage(nn.Module):
    """Up-sample, merge with the skip (``[CSAM(skip), up]`` or ``[skip, up]``), conv block, (attend)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        block: nn.Module,
        merge: nn.Module,
        out_attention: nn.Module,
    ) -> None:
        super().__init__()
        self.up = Conv[Conv.CONVTRANS, spatial_dims](in_channels, out_channels, kernel_size=2, stride=2, padding=0)
        self.merge = merge
        self.block = block
        self.out_attention = out_attention

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.out_attention(self.block(self.merge(skip, self.up(x))))


class CSAMUNet(nn.Module):
    """Residual U-Net with channel + spatial attention (CSAM) for 2D or 3D segmentation.

    Layout for ``channels = (c0, ..., cL)``: encoder stage 0 is a conv block
    ``in_channels -> c0``; stage ``i > 0`` is a 2x max-pool then a block ``c(i-1) -> ci``;
    the last stage is the bottleneck. Decoder stage ``i`` (from ``L-1`` down to 0) is a
    2x2 stride-2 transposed convolution ``c(i+1) -> ci``, concatenation with the encoder's
    stage-``i`` output (the skip), and a block ``2 ci -> ci``. A 1x1 convolution maps
    ``c0`` to ``out_channels`` logits (no softmax: pair it with a CE/Dice loss that applies it).

    Attention placement: ``"skip"`` (the paper) gates each skip before concatenation,
    ``"decoder"`` gates each decoder block's output, ``"both"`` does both, ``"none"``
    disables it. ``residual=False, attention="none"`` is the plain U-Net.

    Inputs whose spatial size is not a multiple of ``2 ** (len(channels) - 1)`` are padded
    at the end of each axis (``pad_mode``) and the logits are cropped back, so the output
    always has the input's spatial size.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        channels: widths of the encoder stages, the last being the bottleneck.
            Defaults to the paper's ``(64, 128, 256, 512, 1024)``.
        encoder_kernel_size: kernel of the encoder (and bottleneck) convolutions; 3 by
            default, 1 reproduces the paper's literal text (``paper_literal`` preset).
        decoder_kernel_size: kernel of the decoder convolutions. Defaults to 3.
        residual: residual shortcut around every conv block.
        attention: CSAM placement, one of ``"skip"``, ``"decoder"``, ``"both"``, ``"none"``.
        reduction: reduction ratio of the channel-attention MLP.
        min_hidden: lower bound on the channel-attention MLP's hidden width (1: the plain
            ``channels // reduction``; the registry's builders use 4, see :func:`csam_unet`).
        spatial_kernel_size: kernel of the spatial-attention convolution.
        num_convs: convolutions per block. Defaults to 2.
        act: activation of the conv blocks. Defaults to ReLU (the paper).
        norm: normalisation of the conv blocks (MONAI ``Norm`` name), or ``None``.
        dropout: dropout probability inside the conv blocks.
        bias: conv bias.
        pad_mode: ``torch.nn.functional.pad`` mode for non-divisible inputs.

    Raises:
        ValueError: for an unknown ``attention`` value, fewer than two stages, or
            ``spatial_dims`` other than 2 or 3.

    See also:
        :py:class:`kneeseg.networks.CSAM`, :py:class:`kneeseg.networks.ResidualConvBlock`,
        :py:class:`monai.networks.nets.BasicUNet`.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (64, 128, 256, 512, 1024),
        encoder_kernel_size: int = 3,
        decoder_kernel_size: int = 3,
        residual: bool = True,
        attention: str = "skip",
        reduction: int = 16,
        min_hidden: int = 1,
        spatial_kernel_size: int = 7,
        num_convs: int = 2,
        act: tuple | str = ("relu", {"inplace": True}),
        norm: tuple | str | None = "batch",
        dropout: float = 0.0,
        bias: bool = True,
        pad_mode: str = "replicate",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if attention not in ATTENTION_PLACEMENTS:
            raise ValueError(f"attention must be one of {ATTENTION_PLACEMENTS}, got {attention!r}.")
        channels = [int(c) for c in channels]
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two stages (one encoder + bottleneck), got {channels}.")
        self.spatial_dims = spatial_dims
        self.divisor = 2 ** (len(channels) - 1)
        self.pad_mode = pad_mode
        self.attention = attention

        def block(cin: int, cout: int, k: int) -> ResidualConvBlock:
            return ResidualConvBlock(
                spatial_dims, cin, cout, kernel_size=k, num_convs=num_convs, act=act, norm=norm,
                dropout=dropout, bias=bias, residual=residual,
            )  # fmt: skip

        def csam(c: int) -> CSAM:
            return CSAM(spatial_dims, c, reduction=reduction, min_hidden=min_hidden, spatial_kernel_size=spatial_kernel_size)

        pool = Pool[Pool.MAX, spatial_dims]
        encoder: list[nn.Module] = []
        for i, c in enumerate(channels):
            stage = block(in_channels if i == 0 else channels[i - 1], c, encoder_kernel_size)
            encoder.append(stage if i == 0 else nn.Sequential(pool(kernel_size=2, stride=2), stage))
        self.encoder = nn.ModuleList(encoder)

        on_skip = attention in ("skip", "both")
        on_decoder = attention in ("decoder", "both")
        decoder: list[nn.Module] = []
        for i in range(len(channels) - 2, -1, -1):
            c = channels[i]
            decoder.append(
                _DecoderStage(
                    spatial_dims,
                    channels[i + 1],
                    c,
                    block(2 * c, c, decoder_kernel_size),
                    AttentionConcat(csam(c)) if on_skip else Concat(),
                    csam(c) if on_decoder else nn.Identity(),
                )
            )
        self.decoder = nn.ModuleList(decoder)
        self.head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, in_channels, *spatial)``. Returns logits ``(B, out_channels, *spatial)``."""
        size: list[int] = list(x.shape[2:])
        pads: list[int] = []
        for d in range(len(size) - 1, -1, -1):  # F.pad lists the last axis first
            pads += [0, (self.divisor - size[d] % self.divisor) % self.divisor]
        # always pad/crop while tracing so exported graphs (ONNX) keep the shape arithmetic
        padded = torch.jit.is_tracing() or sum(pads) > 0
        if padded:
            x = F.pad(x, pads, mode=self.pad_mode)

        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        n = len(skips)
        for j, stage in enumerate(self.decoder):
            x = stage(x, skips[n - 2 - j])
        x = self.head(x)

        if padded:
            for d in range(len(size)):
                x = x.narrow(d + 2, 0, size[d])
        return x


CSAM_UNET_PRESETS: dict[str, dict[str, Any]] = {
    # the paper's network with the default 3x3 encoder (see docs/networks.md for why)
    "paper": {"channels": (64, 128, 256, 512, 1024), "encoder_kernel_size": 3, "residual": True, "attention": "skip"},
    # the paper's text taken literally: 1x1 encoder convolutions
    "paper_literal": {"channels": (64, 128, 256, 512, 1024), "encoder_kernel_size": 1, "residual": True, "attention": "skip"},
}


def csam_unet_preset(name: str, **overrides: Any) -> CSAMUNet:
    """Build :py:class:`CSAMUNet` from a named preset (``paper`` or ``paper_literal``) plus overrides.

    Raises:
        KeyError: for an unknown preset name (the message lists the known ones).
    """
    if name not in CSAM_UNET_PRESETS:
        raise KeyError(f"unknown CSAMUNet preset {name!r}; known presets: {sorted(CSAM_UNET_PRESETS)}")
    kwargs = dict(CSAM_UNET_PRESETS[name])
    kwargs.update(overrides)
    return CSAMUNet(**kwargs)
