"""Residual convolution block: ``n`` convolutions with a shortcut added to their output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, split_args

__all__ = ["ResidualConvBlock"]


class ResidualConvBlock(nn.Module):
    """``act(convs(x) + shortcut(x))``: the building block of the paper's U-Net stages.

    ``convs`` is ``num_convs`` MONAI :py:class:`~monai.networks.blocks.Convolution` layers
    (conv -> norm -> dropout -> act); the last one stops before its activation, which is
    applied after the addition (the ResNet ordering). The shortcut is the identity when
    the channel count is unchanged and a 1x1 convolution (projection) otherwise.
    With ``residual=False`` the block is a plain stack of ``num_convs`` conv-norm-act
    layers with exactly the same convolution parameters and no shortcut.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel of every convolution (``padding = kernel_size // 2``).
        num_convs: number of convolutions, at least 1. Defaults to 2.
        act: activation (MONAI ``Act`` name or ``(name, args)``). Defaults to ReLU.
        norm: normalisation (MONAI ``Norm`` name or ``(name, args)``), or ``None``.
        dropout: dropout probability inside each convolution layer.
        bias: whether the convolutions have a bias term.
        residual: add the shortcut; ``False`` gives the plain U-Net block.

    Raises:
        ValueError: when ``num_convs < 1`` or ``kernel_size`` is even.

    See also:
        :py:class:`monai.networks.blocks.ResidualUnit` (MONAI's variant with strided subunits).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int = 3,
        num_convs: int = 2,
        act: tuple | str = ("relu", {"inplace": True}),
        norm: tuple | str | None = "batch",
        dropout: float = 0.0,
        bias: bool = True,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}.")
        ks = [kernel_size] if isinstance(kernel_size, int) else list(kernel_size)
        if any(k % 2 == 0 for k in ks):
            raise ValueError(f"kernel_size must be odd so that 'same' padding keeps the size, got {kernel_size}.")
        self.residual = residual
        layers = []
        for i in range(num_convs):
            last = i == num_convs - 1
            layers.append(
                Convolution(
                    spatial_dims,
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    kernel_size=kernel_size,
                    act=None if (last and residual) else act,
                    norm=norm,
                    dropout=dropout if dropout > 0 else None,
                    bias=bias,
                )
            )
        self.convs = nn.Sequential(*layers)
        if residual and in_channels != out_channels:
            self.shortcut: nn.Module = Convolution(
                spatial_dims, in_channels, out_channels, kernel_size=1, bias=bias, conv_only=True
            )
        else:
            self.shortcut = nn.Identity()
        if residual:
            act_name, act_args = split_args(act)
            self.out_act: nn.Module = Act[act_name](**act_args)
        else:
            self.out_act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, in_channels, *spatial)``. Returns ``(B, out_channels, *spatial)``."""
        y = self.convs(x)
        if self.residual:
            # in place: y is a fresh output of conv/norm, none of which keeps it for backward
            y = self.out_act(y.add_(self.shortcut(x)))
        return y
