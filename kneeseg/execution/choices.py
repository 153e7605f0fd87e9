"""The names the engines accept, in a module without heavy imports (the command line's choices)."""

from __future__ import annotations

__all__ = ["LR_SCHEDULES", "RUNTIMES"]

#: Accepted inference runtimes; ``auto`` resolves to one of the other three (``kneeseg.execution.runtimes``).
RUNTIMES = ("auto", "eager", "bf16", "onnx")

#: ``step``: x ``gamma`` at each milestone epoch (the paper's: x0.1 after epoch 300); ``plateau``: x
#: ``gamma`` when the validation metric has not improved for ``patience`` validations (it follows
#: the convergence rule); ``cosine``: cosine annealing from the initial rate to 0 over ``max_epochs``
#: (``kneeseg.execution.schedule``).
LR_SCHEDULES = ("step", "plateau", "cosine")
