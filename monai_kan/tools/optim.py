"""Optimizer parameter groups with a separate learning rate for the B-spline control points ("adaptive learning
rates", future work of the KM-UNet slides, V. Kumar 2025): control points and plain weights live on different scales
(a control point moves its edge function locally, a base weight scales the whole edge), so one rate may not suit both.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

import torch.nn as nn

from monai_kan.tools.grid import kan_layers

__all__ = ["kan_parameter_groups"]


def kan_parameter_groups(network: nn.Module, lr: float, spline_lr_scale: float = 1.0) -> List[Dict[str, Any]]:
    """Parameter groups of ``network`` for a ``torch.optim`` optimizer: every parameter exactly once, the B-spline
    parameters of its KAN layers (:meth:`~monai_kan.layers.BSplineKANBase.spline_parameters`: control points and
    ``spline_scaler``) at ``lr * spline_lr_scale``, all others (base weights, biases, norms, upsampling, any
    non-KAN network) at the optimizer's own rate.

    Args:
        network: any module (a ``DistributedDataParallel`` wrapper included); without KAN layers there is one group.
        lr: the optimizer's learning rate (the spline group gets ``lr * spline_lr_scale``).
        spline_lr_scale: ratio of the control points' rate to ``lr``. ``1.0`` (default) returns the single group
            ``[{"params": list(network.parameters())}]``, the same optimizer (and optimizer state layout) as
            ``network.parameters()``.

    Returns:
        ``[{"params": [...]}, {"params": [...], "lr": lr * spline_lr_scale}]`` (empty groups left out). A grid
        extension later replaces control points in place in their group
        (:func:`~monai_kan.tools.grid.replace_optimizer_params`).

    Raises:
        ValueError: ``lr`` or ``spline_lr_scale`` not a positive finite number.

    Bundle config::

        "optimizer": {"_target_": "torch.optim.Adam", "lr": "@learning_rate",
                      "params": "$monai_kan.tools.kan_parameter_groups(@network, @learning_rate, @spline_lr_scale)"}
    """
    for name, value in (("lr", lr), ("spline_lr_scale", spline_lr_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
    params = list(network.parameters())
    if spline_lr_scale == 1.0:
        return [{"params": params}]
    spline_ids = {id(p) for _, layer in kan_layers(network) for p in layer.spline_parameters()}
    groups = [{"params": [p for p in params if id(p) not in spline_ids]},
              {"params": [p for p in params if id(p) in spline_ids], "lr": float(lr) * float(spline_lr_scale)}]
    return [g for g in groups if g["params"]]
