"""Data-loader settings that follow the device: what keeps a GPU fed, and what a 2-core CPU wants."""

from __future__ import annotations

import os

import torch

__all__ = ["loader_workers"]


def loader_workers(device: str | torch.device, cap: int = 4) -> int:
    """Worker processes for the training and validation ``DataLoader``.

    On a CUDA device: ``min(cap, CPUs - 1)`` workers, so that the random slice choice, patches and
    augmentation of the next batches run while the GPU computes (with pinned memory and prefetching,
    see ``train.json``). On a CPU: 0 -- the ``CacheDataset`` leaves about 2 % of an epoch to the data
    (``benchmarks/train.py``), and worker processes would take cores from the network.
    """
    if torch.device(device).type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(int(cap), cpus - 1))
