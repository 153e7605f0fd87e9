"""FR-UNet: the full-resolution network of Liu et al. (IEEE JBHI 2022), for 2D and 3D.

A comparison method of the reproduced paper's Table 1. Built from MONAI's blocks
(:class:`~monai.networks.blocks.ResidualUnit`, :class:`~monai.networks.blocks.Convolution`)
so one class serves 2D and 3D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.layers.factories import Conv
from torch import nn

__all__ = ["FRUNet"]


def _level_channels(features: int, level: int) -> int:
    """Channels of resolution level ``level`` (0 = full resolution): doubled per level."""
    return features * 2**level


class FeatureAggregationNode(nn.Module):
    """One node ``(level, column)`` of the FR-UNet grid: feature aggregation + modified residual block.

    The node takes the previous column's features and concatenates (along channels) up to three
    of them, all brought to this node's resolution and width:

    - ``same``: the previous column's feature at the same level (as is);
    - ``up``: the previous column's feature one level below, upsampled by a 2x transposed conv;
    - ``down``: the previous column's feature one level above, downsampled by a stride-2 conv.

    The concatenation feeds a modified residual block: (conv-norm-dropout-act) x2 plus a 1x1
    projection shortcut (MONAI's ``ResidualUnit`` with ``adn_ordering="NDA"``).

    Args:
        spatial_dims: number of spatial dimensions.
        level: resolution level of this node (0 = full resolution).
        channels: output channels of this node (``features * 2**level``).
        same_channels: channels of the same-level input, or 0 when there is none.
        up_channels: channels of the lower-level input to upsample, or 0 when there is none.
        down_channels: channels of the upper-level input to downsample, or 0 when there is none.
        act: activation type and arguments.
        norm: normalization type and arguments.
        dropout: dropout probability inside the residual block.

    Raises:
        ValueError: when the node has no input at all.
    """

    def __init__(
        self,
        spatial_dims: int,
        level: int,
        channels: int,
        same_channels: int,
        up_channels: int,
        down_channels: int,
        act: tuple | str,
        norm: tuple | str,
        dropout: float,
    ) -> None:
        super().__init__()
        if same_channels <= 0 and up_channels <= 0 and down_channels <= 0:
            raise ValueError(f"FR-UNet node at level {level} has no input.")
        self.level = level
        self.has_same = same_channels > 0
        self.has_up = up_channels > 0
        self.has_down = down_channels > 0
        self.up: nn.Module = nn.Identity()
        self.down: nn.Module = nn.Identity()
        if self.has_up:
            # 2x2 transposed conv, stride 2: exactly doubles each (even-padded) axis.
            self.up = Convolution(
                spatial_dims, up_channels, channels, strides=2, kernel_size=2, padding=0, output_padding=0,
                is_transposed=True, act=act, norm=norm, adn_ordering="NDA",
            )
        if self.has_down:
            # 3x3 conv, stride 2, padding 1: exactly halves each (even-padded) axis.
            self.down = Convolution(
                spatial_dims, down_channels, channels, strides=2, kernel_size=3,
                act=act, norm=norm, adn_ordering="NDA",
            )
        in_channels = (same_channels if self.has_same else 0) + channels * (int(self.has_up) + int(self.has_down))
        self.block = ResidualUnit(
            spatial_dims, in_channels, channels, strides=1, kernel_size=3, subunits=2,
            adn_ordering="NDA", act=act, norm=norm, dropout=dropout,
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Aggregate the previous column's features ``feats[level]`` (shape ``(B, C_level, *S_level)``)
        and return this node's feature, shape ``(B, features * 2**level, *S_level)``."""
        parts: list[torch.Tensor] = []
        if self.has_same:
            parts.append(feats[self.level])
        if self.has_up:
            parts.append(self.up(feats[self.level + 1]))
        if self.has_down:
            parts.append(self.down(feats[self.level - 1]))
        return self.block(torch.cat(parts, dim=1))


class FRUNetColumn(nn.Module):
    """One column (stage) of the FR-UNet grid: the nodes of levels ``0 .. depth-1``.

    Args:
        nodes: the column's nodes, ordered by level (node ``i`` is at level ``i``).
        head: a 1x1 conv mapping the column's full-resolution feature to logits, or ``None``
            when this column carries no deep-supervision head.
    """

    def __init__(self, nodes: Sequence[FeatureAggregationNode], head: nn.Module | None) -> None:
        super().__init__()
        self.nodes = nn.ModuleList(nodes)
        self.is_head = head is not None
        self.head: nn.Module = head if head is not None else nn.Identity()

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Map the previous column's per-level features to this column's, level 0 first."""
        out: list[torch.Tensor] = []
        for node in self.nodes:
            out.append(node(feats))
        return out


class FRUNet(nn.Module):
    """FR-UNet, the full-resolution U-Net of Liu et al. (2022), with fused deep supervision.

    Liu W., Yang H., Tian T., Cao Z., Pan X., Xu W., Jin Y., Gao F., "Full-Resolution Network and
    Dual-Threshold Iteration for Retinal Vessel and Coronary Angiograph Segmentation",
    IEEE Journal of Biomedical and Health Informatics, 2022 (IEEE Xplore document 9815506).

    **Wiring.** The network is a grid of nodes with ``levels`` rows (resolution levels; level
    ``l`` has ``features * 2**l`` channels at ``1/2**l`` resolution) and ``columns`` columns
    (stages). The top row keeps full resolution from the first column to the last. Row ``l``
    exists in columns ``l .. columns-1-l``, so the grid first expands vertically (one new, coarser
    level per column) and then contracts back to the full-resolution row, like a diamond. Each
    node of column ``c`` fuses, by concatenation, the column ``c-1`` features of its own level,
    of the level below (2x2 stride-2 transposed conv) and of the level above (3x3 stride-2 conv),
    then applies a modified residual block ((conv-norm-dropout-act) x2 + 1x1 projection shortcut).
    Column 0 is a single residual block on the input. ``supervision_heads`` 1x1 convs read the
    full-resolution features of the last columns; their logits are averaged into the output.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels (classes; logits, no softmax).
        features: channels of the full-resolution level; level ``l`` has ``features * 2**l``.
            Default 32, the paper's base width.
        levels: number of resolution levels (rows), including full resolution. Default 4.
        columns: number of columns (stages) along the width; at least ``2 * levels - 1`` so
            that the coarsest level is reached. Default ``None`` means ``2 * levels - 1``.
        supervision_heads: number of deep-supervision heads, on the top-row nodes of the last
            ``supervision_heads`` columns; must be in ``1 .. columns``. Default 4.
        dropout: dropout probability inside every residual block. Default 0.2.
        act: activation type and arguments. Default LeakyReLU with slope 0.1.
        norm: feature normalization type and arguments. Default batch norm.
        padding_mode: how inputs are padded (at the end of each spatial axis) to a multiple of
            ``2**(levels-1)``: ``"replicate"`` (default) or ``"constant"`` (zeros). The output is
            cropped back to the input size.

    Raises:
        ValueError: for ``spatial_dims`` not in (2, 3), non-positive sizes, too few columns,
            ``supervision_heads`` out of range, or an unknown ``padding_mode``.

    See also:
        :class:`monai.networks.nets.BasicUNetPlusPlus` (nested grid, but no full-resolution branch
        exchanging with the coarser levels), :class:`monai.networks.blocks.ResidualUnit` (the node
        block), and HRNet (Wang et al., TPAMI 2020) for parallel multi-resolution branches.

    Example:
        >>> net = FRUNet(spatial_dims=2, in_channels=1, out_channels=2)
        >>> net(torch.zeros(1, 1, 61, 75)).shape
        torch.Size([1, 2, 61, 75])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: int = 32,
        levels: int = 4,
        columns: int | None = None,
        supervision_heads: int = 4,
        dropout: float = 0.2,
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.1, "inplace": True}),
        norm: tuple | str = "batch",
        padding_mode: str = "replicate",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1 or features < 1 or levels < 1:
            raise ValueError(
                "in_channels, out_channels, features and levels must be positive, got "
                f"{in_channels}, {out_channels}, {features}, {levels}."
            )
        if columns is None:
            columns = 2 * levels - 1
        if columns < 2 * levels - 1:
            raise ValueError(
                f"columns must be at least 2 * levels - 1 = {2 * levels - 1} to reach level {levels - 1}, "
                f"got {columns}."
            )
        if not 1 <= supervision_heads <= columns:
            raise ValueError(f"supervision_heads must be in 1..{columns}, got {supervision_heads}.")
        if padding_mode not in ("replicate", "constant"):
            raise ValueError(f"padding_mode must be 'replicate' or 'constant', got {padding_mode!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")

        self.spatial_dims = spatial_dims
        self.levels = levels
        self.multiple = 2 ** (levels - 1)
        self.padding_mode = padding_mode

        conv_type = Conv[Conv.CONV, spatial_dims]
        column_modules: list[FRUNetColumn] = []
        prev_depth = 0
        for c in range(columns):
            depth = min(c, columns - 1 - c, levels - 1) + 1  # levels present in column c
            nodes: list[FeatureAggregationNode] = []
            for lvl in range(depth):
                ch = _level_channels(features, lvl)
                if c == 0:
                    same = in_channels
                else:
                    same = ch if lvl < prev_depth else 0
                up = _level_channels(features, lvl + 1) if c > 0 and lvl + 1 < prev_depth else 0
                down = _level_channels(features, lvl - 1) if c > 0 and lvl >= 1 else 0
                nodes.append(FeatureAggregationNode(spatial_dims, lvl, ch, same, up, down, act, norm, dropout))
            head = conv_type(features, out_channels, kernel_size=1) if c >= columns - supervision_heads else None
            column_modules.append(FRUNetColumn(nodes, head))
            prev_depth = depth
        self.columns = nn.ModuleList(column_modules)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad the end of every spatial axis of ``x`` up to a multiple of ``2**(levels-1)``."""
        pads: list[int] = []
        for i in range(self.spatial_dims):  # F.pad lists the last axis first
            size = x.shape[-1 - i]
            pads += [0, (self.multiple - size % self.multiple) % self.multiple]
        if self.padding_mode == "replicate":
            return F.pad(x, pads, mode="replicate")
        return F.pad(x, pads, mode="constant", value=0.0)

    def _crop(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Crop ``y`` to the spatial size of ``x`` (keeping the start of every axis)."""
        for i in range(self.spatial_dims):
            y = y.narrow(2 + i, 0, x.shape[2 + i])
        return y

    def _padded_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the grid on the padded input; return each head's logits at the padded size."""
        feats: list[torch.Tensor] = [self._pad(x)]
        logits: list[torch.Tensor] = []
        for column in self.columns:
            feats = column(feats)
            if column.is_head:
                logits.append(column.head(feats[0]))
        return logits

    @torch.jit.export
    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every deep-supervision head, first column first.

        Args:
            x: input of shape ``(B, in_channels, *spatial)``.

        Returns:
            ``supervision_heads`` tensors of shape ``(B, out_channels, *spatial)``; :meth:`forward`
            returns their mean.
        """
        return [self._crop(h, x) for h in self._padded_heads(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused logits (mean of the deep-supervision heads), in train and eval mode alike.

        Args:
            x: input of shape ``(B, in_channels, *spatial)``, any spatial size.

        Returns:
            logits of shape ``(B, out_channels, *spatial)``, the same spatial size as ``x``.
        """
        fused = torch.stack(self._padded_heads(x), dim=0).mean(dim=0)
        return self._crop(fused, x)
