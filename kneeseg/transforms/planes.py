"""The in-plane axes of channel-first images and volumes, and their planes as one batch.

The MONAI transforms of :mod:`kneeseg.transforms.resize` and :mod:`kneeseg.transforms.preprocessing`
work on the two in-plane axes of an image or of a volume processed slice-wise; these helpers name
those axes, the pad size that touches only them, and view the data as planes ``(C * S, 1, A0, A1)``
for the batched functions of :mod:`kneeseg.transforms.functional`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import ensure_tuple

__all__ = ["from_planes", "in_plane_axes", "in_plane_pad_size", "to_planes"]


def in_plane_axes(spatial_axes: Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """The ``spatial_axes`` of an ``ndim``-D array as distinct non-negative ints (all axes for ``None``)."""
    if spatial_axes is None:
        return tuple(range(ndim))
    axes = tuple(int(a) % ndim for a in ensure_tuple(spatial_axes))
    if len(set(axes)) != len(axes):
        raise ValueError(f"spatial_axes must be distinct, got {spatial_axes}")
    return axes


def in_plane_pad_size(
    spatial_size: int, spatial_dims: int, spatial_axes: Sequence[int] | None = None
) -> tuple[int, ...]:
    """``SpatialPad`` size that pads ``spatial_axes`` to ``spatial_size`` and leaves others (-1)."""
    axes = in_plane_axes(spatial_axes, spatial_dims)
    return tuple(spatial_size if i in axes else -1 for i in range(spatial_dims))


def to_planes(data: torch.Tensor, in_plane: Sequence[int]) -> torch.Tensor:
    """``(C, *spatial)`` -> planes ``(C * S, 1, A0, A1)`` over the two ``in_plane`` axes (in order)."""
    nsp = data.dim() - 1
    if nsp == 2:
        return data[:, None] if tuple(in_plane) == (0, 1) else data.transpose(1, 2)[:, None]
    (slice_axis,) = set(range(3)) - set(in_plane)
    moved = data.permute(0, 1 + slice_axis, 1 + in_plane[0], 1 + in_plane[1])
    return moved.reshape(-1, 1, moved.shape[2], moved.shape[3])


def from_planes(planes: torch.Tensor, channels: int, in_plane: Sequence[int], nsp: int) -> torch.Tensor:
    """Inverse of :func:`to_planes`: planes ``(C * S, 1, A0, A1)`` -> ``(C, *spatial)``."""
    if nsp == 2:
        out = planes[:, 0]
        return out if tuple(in_plane) == (0, 1) else out.transpose(1, 2)
    (slice_axis,) = set(range(3)) - set(in_plane)
    moved = planes.reshape(channels, -1, planes.shape[2], planes.shape[3])
    order = [0, 0, 0]
    order[slice_axis], order[in_plane[0]], order[in_plane[1]] = 1, 2, 3
    return moved.permute(0, *order)
