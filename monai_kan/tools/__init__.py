"""Network-level KAN tools (the training techniques of Liu et al., arXiv:2404.19756, section 2.5):
function-preserving grid update and grid extension of every B-spline KAN layer of a network, DDP-safe, edge
pruning, and optimizer parameter groups with a separate rate for the control points. They work through the layer's
own description of itself (:class:`~monai_kan.layers.BSplineKANBase` methods); knot placement is in
:mod:`monai_kan.basis.knots`, the bundle handlers in :mod:`monai_kan.handlers`."""

from .grid import (
    GridRefit,
    KANInputCapture,
    extend_grid,
    extend_network_grids,
    kan_layers,
    record_kan_inputs,
    refit_layer,
    replace_optimizer_params,
    update_grid,
    update_network_grids,
)
from .optim import kan_parameter_groups
from .pruning import PrunedKAN, PruneReport, freeze_pruned_edges, kan_edge_scores, prune_kan, pruned_edge_mask

__all__ = [
    "GridRefit",
    "KANInputCapture",
    "PruneReport",
    "PrunedKAN",
    "extend_grid",
    "extend_network_grids",
    "freeze_pruned_edges",
    "kan_edge_scores",
    "kan_layers",
    "kan_parameter_groups",
    "prune_kan",
    "pruned_edge_mask",
    "record_kan_inputs",
    "refit_layer",
    "replace_optimizer_params",
    "update_grid",
    "update_network_grids",
]
