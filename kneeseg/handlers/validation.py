"""Periodic validation that also validates after the last epoch."""

from __future__ import annotations

from typing import Any

from monai.handlers import ValidationHandler
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["FinalValidationHandler"]


class FinalValidationHandler(ValidationHandler):
    """MONAI's ``ValidationHandler`` plus one validation when training completes, unless the
    last epoch was just validated.

    With ``interval`` larger than the number of epochs (a one-epoch fine-tuning run from
    MONAI Label, say) the plain handler never validates, so the best-metric checkpoint is
    never written. This one always ends with a validated, saved model. Arguments as MONAI's
    (``final=False`` gives the plain behaviour).
    """

    def __init__(self, *args: Any, final: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.final = final
        self._last_validated: int | None = None

    def attach(self, engine: Any) -> None:
        super().attach(engine)
        if self.final:
            engine.add_event_handler(Events.COMPLETED, self._on_completed)

    def __call__(self, engine: Any) -> None:
        super().__call__(engine)
        self._last_validated = engine.state.epoch

    def _on_completed(self, engine: Any) -> None:
        if engine.state.epoch and self._last_validated != engine.state.epoch:
            self(engine)
