"""Ignite handler: learned KAN edge functions as TensorBoard images during training."""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
from monai.handlers import TensorBoardHandler
from monai.utils import IgniteInfo, min_version, optional_import

from monai_kan.tools.grid import KANInputCapture, kan_layers
from monai_kan.utils import check_positive_int

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["KANSplineTensorBoardHandler"]


class KANSplineTensorBoardHandler(TensorBoardHandler):
    """Every ``interval`` epochs (or iterations), log one spline-grid image per selected KAN layer (the ``top_k``
    most important edges, kernel offsets overlaid, data range shaded) and the input-channel importance heatmap.

    The data ranges and importance come from the layer inputs of the last training iteration before the event
    (recorded with forward pre-hooks during that iteration's forward pass: no extra pass).

    A ``monai.handlers.TensorBoardHandler``: without ``summary_writer`` it writes through its own writer on
    ``log_dir``, created when the first images are logged (so a handler that never logs creates no folder) and
    closed when the engine completes (:meth:`close`; a later run opens a new one). A given writer is left open.

    Args:
        network: the KAN network.
        summary_writer: a TensorBoard ``SummaryWriter``; ``None`` creates one on ``log_dir``.
        log_dir: TensorBoard directory when ``summary_writer`` is None. Defaults to ``"./runs"``.
        interval: logging period in epochs (iterations if ``epoch_level=False``).
        epoch_level: count epochs (default) or iterations.
        layers: layer names or regular expressions to plot; ``None``: the first and the last KAN layer (the network
            inputs and the output head, the easiest to read).
        top_k: panels per layer image.
        tag: prefix of the image tags (``<tag>/<layer>``, ``<tag>/importance``).
        dpi: resolution of the rendered figures.

    Raises:
        ValueError: ``network`` has no B-spline KAN layer, ``layers`` match none of them, or ``interval`` is not a
            positive integer.

    Bundle config (``train#handlers``)::

        {"_target_": "monai_kan.handlers.KANSplineTensorBoardHandler", "network": "@network",
         "log_dir": "@output_dir", "interval": 1}
    """

    def __init__(
        self,
        network: nn.Module,
        summary_writer: Optional[Any] = None,
        log_dir: str = "./runs",
        interval: int = 1,
        epoch_level: bool = True,
        layers: Optional[Sequence[str]] = None,
        top_k: int = 8,
        tag: str = "kan_splines",
        dpi: int = 72,
    ) -> None:
        check_positive_int(interval=interval)
        names = [n for n, _ in kan_layers(network)]
        if not names:
            raise ValueError("`network` has no B-spline KAN layers (KANLinear/KANConv).")
        if layers:
            pats = [re.compile(p) for p in layers]
            chosen = [n for n in names if any(n == p.pattern or p.fullmatch(n) for p in pats)]
            if not chosen:
                raise ValueError(f"`layers` {list(layers)} match none of the KAN layers: {names}.")
        else:
            chosen = sorted({names[0], names[-1]}, key=names.index)
        if summary_writer is not None:
            super().__init__(summary_writer=summary_writer)
        else:  # TensorBoardHandler would create the writer (and its folder) now; it is created at the first image
            self._writer, self.internal_writer = None, True
        self.network, self.layers, self.log_dir = network, chosen, log_dir
        self.interval, self.epoch_level, self.top_k, self.tag, self.dpi = interval, epoch_level, top_k, tag, dpi
        self.capture = KANInputCapture(network, chosen)

    @property
    def writer(self) -> Any:
        """The summary writer (an internal one is created on ``log_dir`` by ``TensorBoardHandler`` when first used)."""
        if self._writer is None:
            super().__init__(summary_writer=None, log_dir=self.log_dir)
        return self._writer

    def close(self) -> None:
        """Close the writer if this handler created it (a later image opens a new one)."""
        if self.internal_writer and self._writer is not None:
            super().close()
            self._writer = None

    def attach(self, engine: Any) -> None:
        """Record layer inputs in the due iterations, log the images, close an internal writer at ``COMPLETED``.

        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.ITERATION_STARTED, self._arm)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        if self.epoch_level:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self._log)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.close())

    def _arm(self, engine) -> None:
        if self.epoch_level:
            length = engine.state.epoch_length
            due = engine.state.epoch % self.interval == 0 and (length is None or engine.state.iteration % length == 0)
        else:
            due = engine.state.iteration % self.interval == 0
        if due:
            self.capture.arm()

    def _iteration_completed(self, engine) -> None:
        self.capture.disarm()
        if not self.epoch_level and engine.state.iteration % self.interval == 0:
            self._log(engine)

    @torch.no_grad()
    def _log(self, engine) -> None:
        from monai_kan.visualize.analysis import channel_ranges, layer_summary
        from monai_kan.visualize.plot import figure_to_array, plot_importance, plot_layer_edges

        inputs = self.capture.pop()
        step = engine.state.epoch if self.epoch_level else engine.state.iteration
        mods = dict(kan_layers(self.network))
        summaries = {}
        for name in self.layers:
            layer, x = mods[name], inputs.get(name)
            summaries[name] = layer_summary(layer, x)
            ranges = None if x is None else channel_ranges(layer, x)
            fig = plot_layer_edges(layer, name, summaries[name], ranges, top_k=self.top_k)
            fig.set_dpi(self.dpi)
            self.writer.add_image(f"{self.tag}/{name}", figure_to_array(fig), step, dataformats="HWC")
        fig = plot_importance(summaries)
        fig.set_dpi(self.dpi)
        self.writer.add_image(f"{self.tag}/importance", figure_to_array(fig), step, dataformats="HWC")
        self.writer.flush()
