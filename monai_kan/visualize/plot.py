"""Figures of learned KAN edge functions (matplotlib ``Figure`` objects, no pyplot state, any backend)."""

from __future__ import annotations

import itertools
import math
import textwrap
from typing import List, Mapping, Optional, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from monai_kan.layers.bspline_kan import BSplineKANBase
from monai_kan.visualize.analysis import curve_range, edge_functions, layer_summary

__all__ = ["plot_layer_edges", "plot_edge_kernel", "plot_importance", "figure_to_array"]

_SHADE = dict(color="0.55", alpha=0.18, lw=0)


def _describe(layer: BSplineKANBase, name: str) -> str:
    kind = type(layer).__name__
    ks = tuple(layer.spline_weight.shape[2:-1])
    kern = f", kernel {'x'.join(map(str, ks))}" if ks else ""
    return (f"{name}  ({kind} {layer.in_channels}\u2192{layer.out_channels}{kern}, "
            f"G={layer.n_basis - layer.spline_order}, k={layer.spline_order})")


def _offsets(layer: BSplineKANBase) -> List[tuple]:
    """Kernel offsets relative to the centre, in ``spline_weight`` order."""
    ks = tuple(layer.spline_weight.shape[2:-1])
    return [tuple(i - (k - 1) // 2 for i, k in zip(idx, ks)) for idx in itertools.product(*[range(k) for k in ks])]


def _decorate(ax, knots: np.ndarray, rng: Optional[Sequence[float]], xlim) -> None:
    if rng is not None:  # grey = where the layer saw no data
        ax.axvspan(xlim[0], rng[0], **_SHADE)
        ax.axvspan(rng[1], xlim[1], **_SHADE)
    ax.vlines(knots, 0.0, 0.06, transform=ax.get_xaxis_transform(), colors="0.3", lw=0.8)  # knot ticks
    ax.axhline(0.0, color="0.75", lw=0.6, zorder=0)
    ax.set_xlim(*xlim)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25, lw=0.5)


def _ylim(curves: np.ndarray):
    lo, hi = float(np.nanmin(curves)), float(np.nanmax(curves))
    pad = 0.06 * max(hi - lo, 1e-6)
    return lo - pad, hi + pad


def plot_layer_edges(
    layer: BSplineKANBase,
    name: str = "layer",
    summary: Optional[Mapping] = None,
    ranges: Optional[torch.Tensor] = None,
    top_k: int = 12,
    n_points: int = 200,
    ncols: int = 4,
) -> Figure:
    """The ``top_k`` most important edges of a layer, one panel per (input, output) channel pair.

    Args:
        layer: ``KANLinear`` or ``KANConv``.
        name: layer name for the title.
        summary: :func:`~monai_kan.visualize.analysis.layer_summary` of the layer (computed without data if None).
        ranges: ``(in_channels, 2)`` data range of each input channel, shaded outside; ``None``: no shading.
        top_k: number of panels (edges ranked by mean absolute contribution).
        n_points: abscissae per curve.
        ncols: panels per row.

    Each panel shows the edge function of every kernel offset (centre offset in black, the others coloured by
    position), on a y scale shared by all panels so that magnitudes compare; ticks at the bottom mark the knots.
    """
    summary = summary if summary is not None else layer_summary(layer)
    scores = summary["edge_scores"]
    order = scores.flatten().argsort(descending=True)[: max(1, top_k)]
    cin_g, groups = scores.shape[1], layer.groups
    pairs = [(int(i) // cin_g, int(i) % cin_g) for i in order]
    shown_in = sorted({(o // (layer.out_channels // groups)) * cin_g + i for o, i in pairs})
    xlim = curve_range(layer, ranges, shown_in)
    xs = torch.linspace(xlim[0], xlim[1], n_points, dtype=torch.float64)
    curves = edge_functions(layer, xs[:, None].expand(-1, layer.in_channels))
    curves = curves.reshape(curves.shape[0], cin_g, -1, n_points).double().cpu().numpy()  # (O, Cg, K, n)
    xs = xs.numpy()
    n = len(pairs)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(3.1 * ncols, 2.3 * nrows + 0.75), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    # y scale shared by all panels, fitted to where the data are (the extrapolation beyond may be clipped)
    shown = []
    for o, i in pairs:
        c_in = (o // (layer.out_channels // groups)) * cin_g + i
        inside = np.ones_like(xs, dtype=bool) if ranges is None else (
            (xs >= float(ranges[c_in, 0])) & (xs <= float(ranges[c_in, 1])))
        shown.append(curves[o, i][:, inside if inside.any() else slice(None)].ravel())
    ylim = _ylim(np.concatenate(shown))
    n_off = curves.shape[2]
    centre = n_off // 2
    best = float(scores.max())
    for ax, (o, i) in zip(axes.flat, pairs):
        c_in = (o // (layer.out_channels // groups)) * cin_g + i  # actual input channel (grouped layers)
        rng = None if ranges is None else ranges[c_in].tolist()
        _decorate(ax, layer.knots[c_in].cpu().numpy(), rng, xlim)
        for j in range(n_off):
            if j != centre:
                ax.plot(xs, curves[o, i, j], color=_cmap(j, n_off), lw=0.9, alpha=0.85)
        ax.plot(xs, curves[o, i, centre], color="black", lw=1.8)
        share = float(scores[o, i]) / max(best, 1e-30)
        ax.set_title(f"in {c_in} \u2192 out {o}   mean|F| {float(scores[o, i]):.3g} ({share:.0%})", fontsize=8.5)
        ax.set_ylim(*ylim)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("input value", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("edge output F(x)", fontsize=8)
    total = scores.numel()
    src = "on data" if summary.get("data") else "for inputs uniform on the grid (no data given)"
    legend = "black: centre kernel offset, colours: other offsets (key, top left); " if n_off > 1 else ""
    shade = "grey: outside the data range (0.5-99.5%); " if ranges is not None else ""
    key_in = _kernel_key(fig, tuple(layer.spline_weight.shape[2:-1])) if n_off > 1 else 0.0
    lines = [_describe(layer, name), f"top {n} of {total} edges by mean |contribution| {src}", f"{legend}{shade}ticks: knots"]
    fig.suptitle(_wrap(lines, fig.get_figwidth() - 2 * key_in), fontsize=9)
    return fig


def _wrap(lines: List[str], width_in: float) -> str:
    """Title lines wrapped to fit ``width_in`` inches at 9 pt (about 13 characters per inch)."""
    return "\n".join(textwrap.fill(line, max(30, int(width_in * 13))) for line in lines)


def _kernel_key(fig: Figure, ks: tuple) -> float:
    """A small kernel-shaped colour key (top left): which colour is which kernel offset. Returns the width it
    takes, in inches (the title stays clear of it)."""
    n = int(np.prod(ks))
    rows, cols = (ks[-2], ks[-1] * (ks[0] if len(ks) == 3 else 1)) if len(ks) >= 2 else (1, ks[0])
    img = np.ones((rows, cols, 4))
    for flat in range(n):
        idx = np.unravel_index(flat, ks)
        r, c = (idx[1], idx[0] * ks[2] + idx[2]) if len(ks) == 3 else (idx if len(ks) == 2 else (0, idx[0]))
        img[r, c] = (0, 0, 0, 1) if flat == n // 2 else _cmap(flat, n)
    w_in = min(0.42 * cols / rows, 0.95)  # about 0.4 inch tall, at most ~1 inch wide
    h = w_in * rows / cols / fig.get_figheight()
    w = w_in / fig.get_figwidth()
    ax = fig.add_axes((0.008, 0.99 - h, w, h))
    ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(1.08, 0.5, "kernel offset\ncolours", transform=ax.transAxes, va="center", fontsize=7)
    if len(ks) == 3:
        for b in range(1, ks[0]):
            ax.axvline(b * ks[2] - 0.5, color="white", lw=2)
    return w_in + 0.9


def _cmap(j: int, n: int):
    return colormaps["viridis"](0.9 * j / max(n - 1, 1))


def plot_edge_kernel(
    layer: BSplineKANBase,
    out_channel: int,
    in_channel: int,
    name: str = "layer",
    ranges: Optional[torch.Tensor] = None,
    n_points: int = 200,
) -> Figure:
    """The edge functions of one (input, output) channel pair at every kernel offset, laid out like the kernel
    (3D: one block of ``K_h x K_w`` panels per depth offset, side by side).

    Args:
        layer: ``KANConv`` (or ``KANLinear``: a single panel).
        out_channel: output channel.
        in_channel: input channel (index within its group for grouped convolutions).
        name: layer name for the title.
        ranges: ``(in_channels, 2)`` data ranges (shaded outside).
        n_points: abscissae per curve.
    """
    ks = tuple(layer.spline_weight.shape[2:-1]) or (1,)
    if not (0 <= out_channel < layer.out_channels and 0 <= in_channel < layer.spline_weight.shape[1]):
        raise ValueError(f"`out_channel`/`in_channel` must index a ({layer.out_channels}, "
                         f"{layer.spline_weight.shape[1]}) edge grid, got ({out_channel}, {in_channel}).")
    c_in = (out_channel // (layer.out_channels // layer.groups)) * layer.spline_weight.shape[1] + in_channel
    xlim = curve_range(layer, ranges, [c_in])
    xs = torch.linspace(xlim[0], xlim[1], n_points, dtype=torch.float64)
    curves = edge_functions(layer, xs[:, None].expand(-1, layer.in_channels))[out_channel, in_channel]
    curves = curves.reshape(ks + (n_points,)).double().cpu().numpy()
    d3 = len(ks) == 3
    rows = ks[-2] if len(ks) >= 2 else 1
    cols = ks[-1] * (ks[0] if d3 else 1)
    fig = Figure(figsize=(2.3 * cols + 0.3, 1.9 * rows + 0.7), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    ylim = _ylim(curves)
    rng = None if ranges is None else ranges[c_in].tolist()
    offsets = _offsets(layer) or [()]
    for flat, off in enumerate(offsets):
        idx = np.unravel_index(flat, ks)
        if d3:
            r, c = idx[1], idx[0] * ks[2] + idx[2]
        elif len(ks) == 2:
            r, c = idx
        else:
            r, c = 0, idx[0]
        ax = axes[r, c]
        _decorate(ax, layer.knots[c_in].cpu().numpy(), rng, xlim)
        centre = all(v == 0 for v in off)
        ax.plot(xs.numpy(), curves[idx], color="black" if centre else "tab:blue", lw=1.6 if centre else 1.2)
        ax.set_title(f"offset {off if off else '(scalar)'}" + ("  centre" if centre else ""), fontsize=8)
        ax.set_ylim(*ylim)
        if r == rows - 1:
            ax.set_xlabel(f"input value (channel {c_in})", fontsize=7)
        if c == 0:
            ax.set_ylabel("F(x)", fontsize=8)
    labels = {1: "(dx)", 2: "(dy, dx)", 3: "(dz, dy, dx)"}.get(len(_offsets(layer)[0]) if _offsets(layer) else 0, "")
    lines = [_describe(layer, name), f"edge in {c_in} \u2192 out {out_channel}: one function per kernel offset {labels}"
             + ("; grey: outside the data range" if rng else "") + "; ticks: knots"]
    fig.suptitle(_wrap(lines, fig.get_figwidth()), fontsize=9)
    return fig


def plot_importance(summaries: Mapping[str, Mapping], title: str = "KAN input-channel importance") -> Figure:
    """Per layer and input channel: share of the layer's total contribution, and sensitivity (mean ``sum |F'|``,
    relative to the layer's most sensitive channel). Rows are layers in forward-registration order."""
    names = list(summaries)
    width = max(len(s["importance"]) for s in summaries.values())
    imp = np.full((len(names), width), np.nan)
    sen = np.full((len(names), width), np.nan)
    for r, n in enumerate(names):
        v = summaries[n]["importance"].numpy()
        imp[r, : len(v)] = v / max(float(v.max()), 1e-30)
        s = summaries[n]["sensitivity"].numpy()
        sen[r, : len(s)] = s / max(float(s.max()), 1e-30)
    h = 0.34 * len(names) + 1.5
    fig = Figure(figsize=(2 * min(3 + 0.3 * width, 9), h), dpi=100, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, data, label in ((axes[0], imp, "importance: mean |contribution|\n(relative to the layer's top channel)"),
                            (axes[1], sen, "sensitivity: mean sum |dF/dx|\n(relative to the layer's top channel)")):
        im = ax.imshow(data, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0, vmax=1)
        ax.set_xlabel("input channel", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
        if width <= 24:  # numbers are readable: write them
            for (r, c), v in np.ndenumerate(data):
                if not np.isnan(v):
                    ax.text(c, r, f"{v:.2f}"[1:] if v < 1 else "1", ha="center", va="center", fontsize=6,
                            color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=list(axes), fraction=0.03, pad=0.01).ax.tick_params(labelsize=7)
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=7)
    data = all(s.get("data") for s in summaries.values())
    fig.suptitle(title + ("" if data else " (no data given: inputs uniform on each grid)"), fontsize=10)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an ``(H, W, 3)`` uint8 RGB array (e.g. for TensorBoard ``add_image(..., dataformats="HWC")``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
