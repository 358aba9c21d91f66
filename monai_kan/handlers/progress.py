"""A tqdm progress bar handler for MONAI engines that can be switched off from a bundle override."""

from __future__ import annotations

from typing import Any

from monai.utils import IgniteInfo, min_version, optional_import

from monai_kan.handlers.bundle_utils import as_bool

IgniteProgressBar, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "ProgressBar")

__all__ = ["ProgressBar"]


def _loss(output: Any) -> Any:
    """The loss of a MONAI trainer output (a list of dicts with ``"loss"``), else nothing to show."""
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict) and "loss" in output[0]:
        return {"loss": float(output[0]["loss"])}
    if isinstance(output, dict) and "loss" in output:
        return {"loss": float(output["loss"])}
    return None


class ProgressBar:
    """Iteration progress bar (ignite's ``ProgressBar``) showing the loss when the engine produces one.

    Args:
        enabled: attach the bar (``--progress_bar false`` in the bundles turns it off, e.g. for log files).
            Defaults to True.
        persist: keep the finished bar of each epoch on screen. Defaults to False.
        desc: bar description. Defaults to ``""``.
    """

    def __init__(self, enabled: bool = True, persist: bool = False, desc: str = "") -> None:
        self.enabled = as_bool(enabled, "progress_bar")
        self.persist = persist
        self.desc = desc

    def attach(self, engine: Any) -> None:
        if not self.enabled:
            return
        bar = IgniteProgressBar(persist=self.persist, desc=self.desc)

        def show(output: Any) -> Any:
            return _loss(output) or {}

        bar.attach(engine, output_transform=show)
