"""Write the spline-grid PNGs and the importance report of a whole network."""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from monai_kan.tools.grid import kan_layers, record_kan_inputs
from monai_kan.visualize.analysis import channel_ranges, layer_summary, to_jsonable
from monai_kan.visualize.plot import plot_edge_kernel, plot_importance, plot_layer_edges

__all__ = ["visualize_network"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "layer"


@torch.no_grad()
def visualize_network(
    net: nn.Module,
    out_dir: str,
    batch: Optional[torch.Tensor] = None,
    ranges: Optional[Mapping[str, torch.Tensor]] = None,
    layers: Optional[Sequence[str]] = None,
    top_k: int = 12,
    kernel_pairs: int = 1,
    dpi: int = 100,
) -> List[str]:
    """PNG grids of the learned edge functions of every (or the selected) KAN layer, plus an importance summary.

    Args:
        net: the network (evaluated in eval mode, on its device).
        out_dir: output directory (created).
        batch: network input: one forward pass records each layer's input, giving the data ranges (shaded) and
            the importance of each edge on data. ``None``: no shading, importance for inputs uniform on the grid.
        ranges: ``{layer name: (in_channels, 2)}`` data ranges to use instead of those of ``batch``
            (e.g. from a previous run's ``summary.json``).
        layers: layer names or regular expressions to plot (default: all KAN layers).
        top_k: panels per layer figure (edges ranked by importance).
        kernel_pairs: for the most important channel pairs of each convolution, one figure with a panel per kernel
            offset (0 disables).
        dpi: resolution of the PNGs.

    Returns:
        The written files: ``<layer>_edges.png``, ``<layer>_kernel_in<i>_out<o>.png``, ``importance.png`` and
        ``summary.json`` (importance, sensitivity, edge scores and data ranges per layer).
    """
    os.makedirs(out_dir, exist_ok=True)
    all_layers = dict(kan_layers(net))
    if layers:
        pats = [re.compile(p) for p in layers]
        selected = {n: m for n, m in all_layers.items() if any(n == p.pattern or p.fullmatch(n) for p in pats)}
        if not selected:
            raise ValueError(f"`layers` {list(layers)} match none of the KAN layers: {list(all_layers)}.")
    else:
        selected = all_layers
    inputs: Dict[str, torch.Tensor] = record_kan_inputs(net, batch) if batch is not None else {}
    got = dict(ranges or {})
    for n, x in inputs.items():
        got.setdefault(n, channel_ranges(all_layers[n], x))
    summaries = {n: layer_summary(m, inputs.get(n)) for n, m in selected.items()}
    written = []
    for name, layer in selected.items():
        rng = got.get(name)
        fig = plot_layer_edges(layer, name, summaries[name], rng, top_k=top_k)
        path = os.path.join(out_dir, f"{_safe(name)}_edges.png")
        fig.savefig(path, dpi=dpi)
        written.append(path)
        if kernel_pairs and layer.spline_weight.dim() > 3 and layer.spline_weight[0, 0, ..., 0].numel() > 1:
            scores = summaries[name]["edge_scores"]
            for flat in scores.flatten().argsort(descending=True)[:kernel_pairs].tolist():
                o, i = divmod(flat, scores.shape[1])
                fig = plot_edge_kernel(layer, o, i, name, rng)
                path = os.path.join(out_dir, f"{_safe(name)}_kernel_in{i}_out{o}.png")
                fig.savefig(path, dpi=dpi)
                written.append(path)
    fig = plot_importance(summaries)
    path = os.path.join(out_dir, "importance.png")
    fig.savefig(path, dpi=dpi)
    written.append(path)
    path = os.path.join(out_dir, "summary.json")
    with open(path, "w") as f:
        json.dump(to_jsonable(summaries, got), f, indent=1)
    written.append(path)
    return written
