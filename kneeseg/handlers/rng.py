"""The random streams of a training run as one checkpointable object, so that a resumed run draws
what the uninterrupted run would have drawn.

An epoch draws from torch's generators (the loader's shuffle, any random layer), numpy's and
Python's global generators, and the transform chain's own generators (every MONAI ``Randomizable``
holds a ``numpy.random.RandomState``, seeded by the chain's ``set_random_state``). Saved in
``last.pt`` at the end of an epoch and restored when the run resumes, they continue where they
were; without them a resumed epoch sees other slices, patches and augmentations than the
uninterrupted run. Everything is stored as tensors, ints and strings, so the checkpoint still
loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["RandomStreams"]


def _np_state(rs: Any) -> tuple:
    name, keys, pos, has_gauss, cached = rs.get_state()
    return (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached))


def _set_np_state(rs: Any, state: Any) -> None:
    name, keys, pos, has_gauss, cached = state
    rs.set_state((name, np.asarray(keys.numpy() if isinstance(keys, torch.Tensor) else keys, dtype=np.uint32),
                  int(pos), int(has_gauss), float(cached)))  # fmt: skip


def _randomizables(obj: Any, seen: set[int] | None = None, depth: int = 0) -> Iterator[Any]:
    """Every object under ``obj`` (transforms of a ``Compose``, their attributes, a dataset's
    transform) that holds a ``RandomState`` as ``R``, in a fixed order."""
    seen = set() if seen is None else seen
    if obj is None or id(obj) in seen or depth > 6 or isinstance(obj, (str, bytes, int, float, torch.Tensor, np.ndarray)):
        return
    seen.add(id(obj))
    if isinstance(getattr(obj, "R", None), np.random.RandomState):
        yield obj
    if isinstance(obj, Mapping):
        children: Iterable[Any] = obj.values()
    elif isinstance(obj, (list, tuple)):
        children = obj
    else:
        attrs = getattr(obj, "__dict__", None)
        children = [attrs[k] for k in sorted(attrs)] if isinstance(attrs, dict) else []
    for child in children:
        if isinstance(child, (Mapping, list, tuple)) or hasattr(child, "__dict__"):
            yield from _randomizables(child, seen, depth + 1)


class RandomStreams:
    """torch, numpy, Python and the transforms' random states, with ``state_dict`` / ``load_state_dict``.

    Args:
        transforms: the objects whose ``Randomizable`` transforms draw during training (the training
            chain, or the dataset holding it); searched recursively.
    """

    def __init__(self, transforms: Any = None) -> None:
        self.transforms = transforms

    def _streams(self) -> list[Any]:
        return list(_randomizables(self.transforms))

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _np_state(np.random.mtrand._rand),
            "python": random.getstate(),
            "transforms": [_np_state(t.R) for t in self._streams()],
        }
        if torch.cuda.is_available():
            out["cuda"] = torch.cuda.get_rng_state_all()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        streams = self._streams()
        saved = list(state.get("transforms", []))
        if len(saved) != len(streams):
            raise ValueError(f"the checkpoint holds {len(saved)} transform random states, this run's chain has "
                             f"{len(streams)}: resume with the chain it was trained with")  # fmt: skip
        torch.set_rng_state(state["torch"])
        _set_np_state(np.random.mtrand._rand, state["numpy"])
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
        for t, s in zip(streams, saved):
            _set_np_state(t.R, s)
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
