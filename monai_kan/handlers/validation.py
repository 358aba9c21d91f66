"""Make sure the last epochs of a training run are validated (so their model can become ``models/model.pt``)."""

from __future__ import annotations

from typing import Any

from monai.utils import IgniteInfo, min_version, optional_import

from monai_kan.utils import check_positive_int

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["FinalValidation"]


class FinalValidation:
    """Run the validator once more when training ends on an epoch that ``ValidationHandler`` skipped.

    With ``epochs=12`` and ``val_interval=5`` MONAI validates after epochs 5 and 10 only: epochs 11-12 would never be
    considered for the best model (and a run shorter than ``val_interval`` would save none). Attach this handler
    right after the ``ValidationHandler`` (and before the state saver) with the same validator and interval.

    Args:
        validator: the evaluator run by ``ValidationHandler``.
        interval: the ``ValidationHandler`` interval in epochs.

    Raises:
        ValueError: ``interval`` is not a positive integer.
    """

    def __init__(self, validator: Any, interval: int) -> None:
        check_positive_int(interval=interval)
        self.validator = validator
        self.interval = interval

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        epoch = engine.state.epoch
        if epoch > 0 and epoch % self.interval != 0:
            self.validator.run(epoch)
