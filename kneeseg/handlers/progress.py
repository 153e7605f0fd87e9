"""Training progress a person can follow: a bar with the time left on a terminal, one line per epoch elsewhere."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import IO, Any

__all__ = ["TrainingProgress", "format_duration"]

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``75`` -> ``1 min 15 s``; ``4000`` -> ``1 h 07 min``; ``9.4`` -> ``9 s``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _loss_of(output: Any) -> float | None:
    item = output[0] if isinstance(output, (list, tuple)) and output else output
    if isinstance(item, dict) and "loss" in item:
        try:
            return float(item["loss"])
        except (TypeError, ValueError):
            return None
    return None


class TrainingProgress:
    """Ignite handler for a trainer: progress over the whole run, with the time left.

    On a terminal (``stream.isatty()``): a ``tqdm`` bar over all iterations of the run, showing
    the epoch, the running loss and the time left, redrawn in place. Elsewhere (a log file, CI,
    a pipe): one line per epoch -- ``epoch 3/24: loss 0.4123, 14.2 s; 5 min 12 s left`` -- and no
    carriage returns. The time left is the mean epoch time so far times the epochs to go (the cap;
    early stopping may end the run sooner). Only rank 0 reports under ``torch.distributed``.

    Args:
        stream: where to write (default ``sys.stderr``).
        bar: ``True``/``False`` forces the bar on or off; ``None`` decides by ``stream.isatty()``.
    """

    def __init__(self, stream: IO[str] | None = None, bar: bool | None = None) -> None:
        self.stream = stream
        self.bar = bar
        self._tqdm: Any = None
        self._epoch_started = 0.0
        self._run_started = 0.0
        self._epoch_times: list[float] = []
        self._losses: list[float] = []

    @property
    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stderr

    def _use_bar(self) -> bool:
        if self.bar is not None:
            return bool(self.bar)
        try:
            return bool(self._out.isatty())
        except (AttributeError, ValueError):
            return False

    def attach(self, engine: Any) -> None:
        """Register with an ignite engine (the trainer)."""
        from ignite.engine import Events

        from kneeseg.handlers.checkpoint import is_rank0

        if not is_rank0():
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_end)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def _total(self, engine: Any) -> int:
        length = engine.state.epoch_length or 0
        return int(length) * int(engine.state.max_epochs or 0)

    def _started(self, engine: Any) -> None:
        self._run_started = time.perf_counter()
        self._epoch_times = []
        if self._use_bar():
            from tqdm.auto import tqdm

            total = self._total(engine) or None
            try:  # a terminal that reports no size (a fresh pty) would get an empty or hidden bar
                size = os.get_terminal_size(self._out.fileno())
                width, lines = size.columns, size.lines
            except (AttributeError, OSError, ValueError):
                width, lines = 0, 0
            self._tqdm = tqdm(total=total, initial=int(engine.state.iteration or 0), file=self._out, unit="it",
                              dynamic_ncols=width > 0, ncols=None if width > 0 else 100,
                              nrows=None if lines > 0 else 24, leave=True, desc="training")  # fmt: skip

    def _epoch_start(self, engine: Any) -> None:
        self._epoch_started = time.perf_counter()
        self._losses = []

    def _iteration(self, engine: Any) -> None:
        loss = _loss_of(engine.state.output)
        if loss is not None:
            self._losses.append(loss)
        if self._tqdm is not None:
            self._tqdm.set_description(f"epoch {engine.state.epoch}/{engine.state.max_epochs}", refresh=False)
            if loss is not None:
                self._tqdm.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._tqdm.update(1)

    def _epoch_end(self, engine: Any) -> None:
        took = time.perf_counter() - self._epoch_started
        self._epoch_times.append(took)
        if self._tqdm is not None:
            return
        left = (int(engine.state.max_epochs) - int(engine.state.epoch)) * (sum(self._epoch_times) / len(self._epoch_times))
        loss = f"loss {sum(self._losses) / len(self._losses):.4f}, " if self._losses else ""
        tail = f"; {format_duration(left)} left" if engine.state.epoch < engine.state.max_epochs else ""
        print(f"epoch {engine.state.epoch}/{engine.state.max_epochs}: {loss}{took:.1f} s{tail}", file=self._out, flush=True)

    def _close(self, engine: Any) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        print(f"training: {engine.state.epoch} epochs in {format_duration(time.perf_counter() - self._run_started)}",
              file=self._out, flush=True)  # fmt: skip
