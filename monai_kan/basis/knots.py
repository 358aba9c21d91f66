"""Knot placement for B-spline KAN layers: on the data (grid update) and refined (grid extension).

Both return ``(C, G + 2k + 1)`` float64 knots per input channel, the layout of
:attr:`~monai_kan.layers.BSplineKANBase.knots`; uniform knots come from :func:`~monai_kan.basis.make_knots`.
"""

from __future__ import annotations

import torch

__all__ = ["data_knots", "refined_knots"]


def data_knots(
    samples: torch.Tensor, grid_size: int, spline_order: int, grid_eps: float = 0.02, margin: float = 0.01
) -> torch.Tensor:
    """Knots at data quantiles blended with a uniform grid over the data range (efficient-kan's scheme).

    Args:
        samples: ``(M, C)`` input values per channel.
        grid_size: number of intervals ``G`` between the data minimum and maximum.
        spline_order: order ``k``; ``k`` extra knots of the uniform spacing are added on each side.
        grid_eps: weight of the uniform grid, in ``[0, 1]`` (1: uniform over the data range, 0: pure quantiles).
        margin: absolute widening of the data range on each side.

    Returns:
        ``(C, G + 2k + 1)`` knots, float64.

    Raises:
        ValueError: ``grid_eps`` outside ``[0, 1]``.
    """
    if not 0.0 <= grid_eps <= 1.0:
        raise ValueError(f"`grid_eps` must be in [0, 1], got {grid_eps}.")
    s = samples.double().sort(dim=0).values  # (M, C)
    idx = torch.linspace(0, s.shape[0] - 1, grid_size + 1, device=s.device).round().long()
    adaptive = s[idx]  # (G + 1, C)
    step = (s[-1] - s[0] + 2 * margin) / grid_size  # (C,)
    ar = torch.arange(grid_size + 1, dtype=s.dtype, device=s.device).unsqueeze(1)
    uniform = s[0] - margin + ar * step
    grid = grid_eps * uniform + (1 - grid_eps) * adaptive
    ext = torch.arange(1, spline_order + 1, dtype=s.dtype, device=s.device).unsqueeze(1) * step
    return torch.cat([grid[:1] - ext.flip(0), grid, grid[-1:] + ext], dim=0).t().contiguous()


def refined_knots(knots: torch.Tensor, spline_order: int, grid_size: int) -> torch.Tensor:
    """Knots of ``grid_size`` intervals over the same interior ``[t_k, t_{G+k}]``, spaced like the old interior
    (piecewise-linear in the knot index: a uniform grid stays uniform, an adapted one keeps its adaptation), plus
    ``k`` knots on each side at the new boundary spacing.

    Args:
        knots: ``(C, G + 2k + 1)`` current knots.
        spline_order: order ``k``.
        grid_size: new number of intervals ``G'``.

    Returns:
        ``(C, G' + 2k + 1)`` knots, float64.
    """
    k = spline_order
    interior = knots.double()[:, k : knots.shape[1] - k]  # (C, G + 1)
    g_old = interior.shape[1] - 1
    u = torch.linspace(0, g_old, grid_size + 1, dtype=torch.float64, device=knots.device)
    lo = u.floor().long().clamp(max=g_old - 1)
    frac = u - lo
    grid = interior[:, lo] * (1 - frac) + interior[:, lo + 1] * frac  # (C, G' + 1)
    ext = torch.arange(1, k + 1, dtype=torch.float64, device=knots.device)
    left = grid[:, :1] - ext.flip(0) * (grid[:, 1:2] - grid[:, :1])
    right = grid[:, -1:] + ext * (grid[:, -1:] - grid[:, -2:-1])
    return torch.cat([left, grid, right], dim=1)
