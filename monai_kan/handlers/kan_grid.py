"""Ignite handler: KAN grid update every N iterations/epochs up to a stopping point, and scheduled grid extension."""

from __future__ import annotations

import logging
from typing import Mapping, Optional, Union

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from monai_kan.tools.grid import KANInputCapture, _distributed, extend_network_grids, kan_layers, update_network_grids

__all__ = ["KANGridHandler"]


class KANGridHandler:
    """Adapt the B-spline grids of a KAN network to its training data (KAN paper, section 2.5).

    The inputs of every KAN layer are recorded during the training forward pass of a due iteration (the last
    iteration of a due epoch with ``epoch_level=True``), and after that iteration's optimizer step the grids are

    * **extended** to a new size if ``extend_at`` schedules one at this iteration/epoch (least-squares refit on the
      recorded inputs; the ``spline_weight`` parameters are replaced and the optimizer's param groups are pointed at
      the new ones with fresh state), else
    * **updated** (knots at data quantiles, function-preserving refit) every ``update_every`` iterations/epochs
      while the count is ``<= update_until``; the optimizer state of the refitted control points is dropped, as it
      refers to the old basis.

    Args:
        network: the KAN network (the one the trainer optimises).
        optimizer: its optimizer; ``None`` takes ``engine.optimizer`` (MONAI trainers have one).
        update_every: grid update period in iterations (epochs if ``epoch_level``); ``None`` or 0 disables updates.
        update_until: last iteration/epoch at which an update may happen (``None``: no limit). The KAN paper stops
            updating early: a grid that keeps moving keeps disturbing the optimizer.
        extend_at: ``{iteration or epoch: new grid size}``, e.g. ``{"200": 10, "400": 20}`` (JSON keys are strings).
        epoch_level: count epochs instead of iterations.
        grid_eps: blend of uniform and quantile knots (see :func:`monai_kan.tools.grid.update_grid`).
        max_error: skip a layer's update when one of its edge functions would change by more than this (relative,
            the worst edge: ``max_edge_error`` of :class:`monai_kan.tools.grid.GridRefit`; single edges change
            much more than the layer average, e.g. tens of percent for spline-dominated edges in a first update).
        max_samples: positions per layer used to place knots and refit (in total over all ranks under
            ``torch.distributed``).
        logger_name: logger to report to: per event, the worst layer's relative change of all its edge functions
            together (``rel_error``) and the worst single edge's (``max_edge_error``).

    Raises:
        ValueError: when ``network`` has no B-spline KAN layer, ``update_every`` is negative, an ``extend_at`` size
            is not positive, or ``extend_at`` is given for a ``DistributedDataParallel`` network.

    ``history`` keeps ``(count, action, worst rel_error, worst max_edge_error)`` per event.

    Note:
        After an extension the checkpoint's ``knots``/``spline_weight`` have the new size; a network built with
        the original ``grid_size`` adopts it in ``load_state_dict``
        (:meth:`~monai_kan.layers.BSplineKANBase.resize_grid`).

        Under ``DistributedDataParallel`` (``network`` the wrapper, the handler attached on every rank) grid updates
        are collective and keep the replicas identical: the knots are placed on, and the splines refitted to, the
        recorded inputs of all ranks. Grid extension is refused there: it replaces the ``spline_weight``
        parameters, which the wrapper (and the trainer and evaluators holding it) would not follow; build the
        network with the final ``grid_size``, or extend between two training runs
        (:func:`monai_kan.tools.grid.extend_network_grids` on ``ddp.module``, then wrap it again).

    Bundle config (``train#handlers``)::

        {"_target_": "monai_kan.handlers.KANGridHandler", "network": "@network", "optimizer": "@optimizer",
         "update_every": 20, "update_until": 200, "extend_at": {"300": 10}}
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        update_every: Optional[int] = 10,
        update_until: Optional[int] = None,
        extend_at: Optional[Mapping[Union[int, str], int]] = None,
        epoch_level: bool = False,
        grid_eps: float = 0.02,
        max_error: Optional[float] = None,
        max_samples: int = 65536,
        logger_name: Optional[str] = None,
    ) -> None:
        if update_every is not None and update_every < 0:
            raise ValueError(f"`update_every` must be None or >= 0, got {update_every}.")
        if not kan_layers(network):
            raise ValueError("`network` has no B-spline KAN layers (KANLinear/KANConv).")
        if extend_at and any(isinstance(m, DistributedDataParallel) for m in network.modules()):
            raise ValueError(
                "`extend_at` is not supported for a DistributedDataParallel network: extension replaces parameters "
                "that the wrapper would not follow (see monai_kan.tools.grid.extend_network_grids)."
            )
        self.network = network
        self.optimizer = optimizer
        self.update_every = update_every or 0
        self.update_until = update_until
        self.extend_at = {int(k): int(v) for k, v in (extend_at or {}).items()}
        if any(v < 1 for v in self.extend_at.values()):
            raise ValueError(f"`extend_at` grid sizes must be positive integers, got {dict(extend_at)}.")
        self.epoch_level = epoch_level
        self.grid_eps, self.max_error, self.max_samples = grid_eps, max_error, max_samples
        self.logger = logging.getLogger(logger_name or __name__)
        self.capture = KANInputCapture(network)
        self.history: list = []  # (count, action, worst rel_error, worst max_edge_error) per event

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_STARTED, self._arm)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        if self.epoch_level:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._apply)

    def _count(self, engine) -> int:
        return engine.state.epoch if self.epoch_level else engine.state.iteration

    def _action(self, count: int) -> Optional[str]:
        if count in self.extend_at:
            return "extend"
        if self.update_every and count % self.update_every == 0 and (
                self.update_until is None or count <= self.update_until):
            return "update"
        return None

    def _arm(self, engine) -> None:
        if self._action(self._count(engine)) is None:
            return
        length = engine.state.epoch_length
        if self.epoch_level and length is not None and engine.state.iteration % length != 0:
            return  # record the last iteration of the epoch only
        self.capture.arm()

    def _iteration_completed(self, engine) -> None:
        self.capture.disarm()  # keep the training inputs only (not e.g. a validation run's)
        if not self.epoch_level:
            self._apply(engine)

    def _apply(self, engine) -> None:
        inputs = self.capture.pop()
        count = self._count(engine)
        action = self._action(count)
        # under torch.distributed a rank without inputs still joins the collective refit (with none of its own)
        if action is None or (not inputs and not _distributed(None)):
            return
        optimizer = self.optimizer if self.optimizer is not None else getattr(engine, "optimizer", None)
        if action == "extend":
            res = extend_network_grids(self.network, self.extend_at[count], inputs=inputs, optimizer=optimizer,
                                       grid_eps=self.grid_eps, max_samples=self.max_samples)
        else:
            res = update_network_grids(self.network, inputs=inputs, optimizer=optimizer, grid_eps=self.grid_eps,
                                       max_samples=self.max_samples, max_error=self.max_error)
        if not res:
            return
        worst = max(r.rel_error for r in res.values())
        worst_edge, worst_layer = max((r.max_edge_error, n) for n, r in res.items())
        skipped = sum(not r.applied for r in res.values())
        self.history.append((count, action, worst, worst_edge))
        unit = "epoch" if self.epoch_level else "iteration"
        detail = f" to G={self.extend_at[count]}" if action == "extend" else ""
        self.logger.info(f"KAN grid {action}{detail} at {unit} {count}: {len(res)} layers, worst relative change "
                         f"of a layer's edge functions {worst:.3g}, of a single edge {worst_edge:.3g} ({worst_layer})"
                         + (f", {skipped} skipped (max_error)" if skipped else ""))
