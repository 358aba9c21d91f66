"""Numbers behind the plots: edge-function curves, per-channel data ranges, edge importance and channel sensitivity."""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from monai_kan.layers.bspline_kan import BSplineKANBase
from monai_kan.tools.pruning import kan_edge_scores

__all__ = ["edge_functions", "channel_ranges", "curve_range", "layer_summary", "summaries", "to_jsonable"]


@torch.no_grad()
def edge_functions(layer: BSplineKANBase, xs: torch.Tensor) -> torch.Tensor:
    """Every edge function of ``layer`` at the points ``xs`` ``(n, in_channels)``:
    :meth:`~monai_kan.layers.BSplineKANBase.edge_functions`, ``(out, in // groups, *kernel_size, n)``."""
    return layer.edge_functions(xs)


def channel_ranges(layer: BSplineKANBase, x: torch.Tensor, q: Tuple[float, float] = (0.005, 0.995)) -> torch.Tensor:
    """``(in_channels, 2)`` lower and upper quantiles of each input channel of ``layer`` in ``x``."""
    s = layer.sample_channels(x, 200_000).float().sort(dim=0).values  # sort: torch.quantile caps the input size
    idx = [min(s.shape[0] - 1, max(0, round(v * (s.shape[0] - 1)))) for v in q]
    return s[idx].t().cpu().contiguous()


def curve_range(
    layer: BSplineKANBase, ranges: Optional[torch.Tensor] = None, channels: Optional[Sequence[int]] = None,
    pad: float = 0.08,
) -> Tuple[float, float]:
    """An x interval covering the grid interiors (where the splines live) and the data ranges of ``channels``
    (default: all input channels); without data ranges, the whole spline support."""
    k = layer.spline_order
    idx = list(range(layer.in_channels)) if channels is None else list(channels)
    knots = layer.knots[idx]
    if ranges is not None:
        r = ranges[idx]
        lo, hi = min(float(knots[:, k].min()), float(r[:, 0].min())), max(float(knots[:, -k - 1].max()), float(r[:, 1].max()))
    else:
        lo, hi = float(knots[:, 0].min()), float(knots[:, -1].max())
    w = hi - lo
    return lo - pad * w, hi + pad * w


@torch.no_grad()
def layer_summary(layer: BSplineKANBase, x: Optional[torch.Tensor] = None, max_samples: int = 4096) -> Dict:
    """Edge importance and per-input-channel importance and sensitivity of ``layer``.

    Args:
        layer: ``KANLinear`` or ``KANConv``.
        x: an input batch of the layer (``None``: inputs uniform over each channel's grid interior, a data-free
            proxy).
        max_samples: positions used for the sensitivity estimate.

    Returns:
        ``{"edge_scores": (out, in // g)`` mean ``|contribution|`` of each edge (channel pair for a convolution),
        ``"importance": (in,)`` each input channel's share of the layer's total contribution (sums to 1),
        ``"sensitivity": (in,)`` mean over the data of ``sum_{out, offsets} |F'(x)|`` (how strongly the layer's
        outputs move when that input moves), ``"data": bool}``.
    """
    if x is None:
        s = layer.grid_interior(256).to(layer.knots)  # (n, C)
        xin = s if layer.channel_dim == -1 else s.t().reshape((1, layer.in_channels, -1) + (1,) * (
            layer.spatial_dims - 1))
        scores = kan_edge_scores(layer, xin)
    else:
        scores = kan_edge_scores(layer, x)
        s = layer.sample_channels(x, max_samples)
    groups, cin_g = layer.groups, scores.shape[1]
    per_in = scores.reshape(groups, -1, cin_g).sum(1).reshape(-1)  # (in,)
    importance = per_in / per_in.sum().clamp_min(1e-30)
    # central differences of every edge function at the samples
    h = 1e-3 * float((layer.knots[:, -1] - layer.knots[:, 0]).mean())
    sens = torch.zeros(layer.in_channels, dtype=torch.float64)
    for chunk in s.split(512):
        d = (edge_functions(layer, chunk + h) - edge_functions(layer, chunk - h)) / (2 * h)  # (O, Cg, *K, m)
        d = d.abs().double().reshape(d.shape[0], cin_g, -1, d.shape[-1]).sum(2)  # (O, Cg, m)
        d = d.reshape(groups, -1, cin_g, d.shape[-1]).sum(1).reshape(-1, d.shape[-1])  # (in, m)
        sens += d.sum(-1).cpu()
    sens = sens / s.shape[0]
    return {"edge_scores": scores.float().cpu(), "importance": importance.float().cpu(), "sensitivity": sens.float(),
            "data": x is not None}


def summaries(
    layers: Mapping[str, BSplineKANBase], inputs: Optional[Mapping[str, torch.Tensor]] = None
) -> Dict[str, Dict]:
    """:func:`layer_summary` for several layers, with their recorded inputs when available."""
    return {n: layer_summary(m, None if inputs is None else inputs.get(n)) for n, m in layers.items()}


def to_jsonable(summary: Mapping[str, Dict], ranges: Optional[Mapping[str, torch.Tensor]] = None) -> Dict:
    """Plain lists for a JSON report."""
    out = {}
    for name, s in summary.items():
        out[name] = {"data": s["data"], "importance": [round(float(v), 6) for v in s["importance"]],
                     "sensitivity": [round(float(v), 6) for v in s["sensitivity"]],
                     "edge_scores": [[round(float(v), 6) for v in row] for row in s["edge_scores"]]}
        if ranges is not None and name in ranges:
            out[name]["data_range"] = [[round(float(a), 6), round(float(b), 6)] for a, b in ranges[name]]
    return out
