"""ignite's tqdm progress bar, switchable from a bundle override and showing the loss of MONAI trainers."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Union

from monai.utils import IgniteInfo, min_version, optional_import

from monai_kan.handlers.bundle_utils import as_bool

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
IgniteProgressBar, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "ProgressBar",
                                       as_type="base")

__all__ = ["ProgressBar"]


def _loss(output: Any) -> Dict[str, float]:
    """The loss of a MONAI trainer output (a list of dicts with ``"loss"``, or one dict), else nothing to show."""
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict) and "loss" in output[0]:
        return {"loss": float(output[0]["loss"])}
    if isinstance(output, dict) and "loss" in output:
        return {"loss": float(output["loss"])}
    return {}


class ProgressBar(IgniteProgressBar):
    """ignite's ``ProgressBar`` that shows the loss of MONAI engines and can be switched off.

    MONAI engines call ``attach(engine)`` with no further arguments; the bar then shows the ``"loss"`` of the engine
    output (MONAI trainers), or only the progress (evaluators).

    Args:
        enabled: attach the bar (``--progress_bar false`` in the bundles turns it off, e.g. for log files); read by
            :func:`~monai_kan.handlers.as_bool`. Defaults to True.
        persist: keep the finished bar of each epoch on screen. Defaults to False.
        desc: bar description. Defaults to ``""``.
        output_transform: what to show of the engine output (a dict of scalars); defaults to the loss.
        tqdm_kwargs: passed to ``tqdm`` (through ignite's ``ProgressBar``).

    Raises:
        ValueError: ``enabled`` is not a boolean.
    """

    def __init__(
        self,
        enabled: bool = True,
        persist: bool = False,
        desc: str = "",
        output_transform: Optional[Callable] = None,
        **tqdm_kwargs: Any,
    ) -> None:
        super().__init__(persist=persist, desc=desc, **tqdm_kwargs)
        self.enabled = as_bool(enabled, "progress_bar")
        self.output_transform = output_transform or _loss

    def attach(  # type: ignore[override]
        self,
        engine: Any,
        metric_names: Optional[Union[str, List[str]]] = None,
        output_transform: Optional[Callable] = None,
        event_name: Any = Events.ITERATION_COMPLETED,
        closing_event_name: Any = Events.EPOCH_COMPLETED,
        state_attributes: Optional[List[str]] = None,
    ) -> None:
        """ignite's ``attach`` (same arguments), with this bar's ``output_transform`` by default; nothing if not
        ``enabled``.

        Args:
            engine: the engine to follow.
            metric_names: engine metrics to show, or ``"all"``.
            output_transform: what to show of the engine output; defaults to the constructor's.
            event_name: event on which the bar advances.
            closing_event_name: event on which the bar closes.
            state_attributes: engine state attributes to show.
        """
        if not self.enabled:
            return
        super().attach(engine, metric_names, output_transform or self.output_transform, event_name,
                       closing_event_name, state_attributes)
