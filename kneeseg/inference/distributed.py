"""Batch inference under ``torchrun``: the process group, and what rank 0 shares with the others.

A gloo group (CPU tensors only: the work list and a barrier travel, no images), created here when
``WORLD_SIZE`` > 1 and no group exists yet; one process needs none of it.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

__all__ = ["barrier", "broadcast", "dist_context"]


def dist_context() -> tuple[int, int, bool]:
    """``(rank, world_size, initialised_here)``; initialises a gloo group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist  # only under torchrun

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
    return dist.get_rank(), dist.get_world_size(), True


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in one process)."""
    if world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: int) -> None:
    """Wait for every rank (nothing in one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
