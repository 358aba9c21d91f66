"""B-spline basis functions on (possibly per-channel) knot vectors.

Conventions (efficient-kan's): a grid of ``G`` intervals over ``grid_range`` is extended by ``k`` knots on each side,
giving ``G + 2k + 1`` knots ``t_0 < ... < t_{G+2k}`` and ``G + k`` basis functions ``B_{i,k}`` of order ``k``,
each supported on ``[t_i, t_{i+k+1})``. Outside ``[t_0, t_{G+2k})`` every basis function is zero, so a KAN edge
function vanishes far outside ``grid_range``: inputs must be normalised into range.

Two evaluators with identical values:

* :func:`bspline_basis` -- the Cox-de Boor recursion, valid for any non-decreasing knots (the reference).
* :func:`uniform_bspline_basis` -- a closed form for uniformly spaced knots. Every basis function is then a shift
  of one cardinal B-spline ``N_k``, which has the symmetric truncated-power form
  ``N_k(c - d) = 1/k! * sum_{j < c} (-1)^j C(k+1, j) (c - j - d)_+^k`` with ``c = (k + 1) / 2`` and ``d = |s - c|``.
  That is a handful of elementwise operations per basis function instead of ``O(k^2)`` recursion steps.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from monai_kan.utils import check_positive_int

__all__ = [
    "make_knots",
    "num_basis",
    "bspline_basis",
    "bspline_basis_derivative",
    "uniform_bspline_basis",
    "uniform_bspline_basis_derivative",
    "is_uniform_knots",
]


def num_basis(grid_size: int, spline_order: int) -> int:
    """Number of basis functions ``G + k`` of a grid of ``grid_size`` intervals and order ``spline_order``."""
    return grid_size + spline_order


def make_knots(
    grid_size: int,
    spline_order: int,
    grid_range: Sequence[float] = (-1.0, 1.0),
    channels: int = 0,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Uniform extended knot vector.

    Args:
        grid_size: number of grid intervals ``G`` inside ``grid_range`` (>= 1).
        spline_order: B-spline order ``k`` (>= 0); ``k = 3`` is cubic.
        grid_range: ``(low, high)`` covered by the ``G`` intervals.
        channels: if > 0, repeat the knot vector per channel.
        dtype: knot dtype; defaults to ``torch.get_default_dtype()``.

    Returns:
        ``(G + 2k + 1,)`` knots, or ``(channels, G + 2k + 1)`` when ``channels > 0``.
    """
    check_positive_int(grid_size=grid_size)
    if spline_order < 0:
        raise ValueError(f"`spline_order` must be >= 0, got {spline_order}.")
    if len(grid_range) != 2 or not float(grid_range[0]) < float(grid_range[1]):
        raise ValueError(f"`grid_range` must be (low, high) with low < high, got {tuple(grid_range)}.")
    low, high = float(grid_range[0]), float(grid_range[1])
    h = (high - low) / grid_size
    steps = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float64)
    knots = (low + steps * h).to(dtype or torch.get_default_dtype())
    if channels > 0:
        knots = knots.expand(channels, -1).contiguous()
    return knots


def is_uniform_knots(knots: torch.Tensor, rtol: float = 1e-5) -> bool:
    """True when every row of ``knots`` (``(n,)`` or ``(C, n)``) is uniformly spaced."""
    gaps = knots.diff(dim=-1)
    ref = gaps[..., :1]
    return bool(torch.all(gaps > 0)) and bool(torch.allclose(gaps, ref.expand_as(gaps), rtol=rtol, atol=0.0))


def _safe_inverse(spacing: torch.Tensor) -> torch.Tensor:
    """``1 / spacing``, and 0 where the spacing is 0 (repeated knots)."""
    return torch.where(spacing > 0, 1.0 / spacing.clamp_min(1e-30), 0.0)


def bspline_basis(x: torch.Tensor, knots: torch.Tensor, spline_order: int) -> torch.Tensor:
    """Cox-de Boor recursion (KM-UNet slides, "B-Spline Basis Functions"; de Boor, *A Practical Guide to Splines*)
    for arbitrary non-decreasing knots.

    Args:
        x: ``(..., C)`` inputs, channel last.
        knots: ``(n_knots,)`` shared knots or ``(C, n_knots)`` per-channel knots.
        spline_order: order ``k``.

    Returns:
        ``(..., C, n_knots - k - 1)`` basis values ``B_{i,k}(x)``.
    """
    x = x.unsqueeze(-1)  # (..., C, 1)
    t = knots.to(x.dtype)
    # order 0: indicator of the half-open interval [t_i, t_{i+1})
    bases = ((x >= t[..., :-1]) & (x < t[..., 1:])).to(x.dtype)  # (..., C, n_knots - 1)
    for k in range(1, spline_order + 1):
        # 0/0 terms of repeated knots are defined as 0: zero inverse spacings (computed on the knots, not per x)
        inv_left = _safe_inverse(t[..., k:-1] - t[..., : -(k + 1)])
        inv_right = _safe_inverse(t[..., k + 1 :] - t[..., 1:(-k)])
        left = (x - t[..., : -(k + 1)]) * inv_left
        right = (t[..., k + 1 :] - x) * inv_right
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases


def bspline_basis_derivative(x: torch.Tensor, knots: torch.Tensor, spline_order: int) -> torch.Tensor:
    """``d/dx`` of :func:`bspline_basis` (same arguments and output shape), from the order ``k - 1`` basis:
    ``B'_{i,k} = k B_{i,k-1} / (t_{i+k} - t_i) - k B_{i+1,k-1} / (t_{i+k+1} - t_{i+1})`` (terms with a zero
    denominator vanish, as in the recursion). Zero for order 0."""
    k = spline_order
    if k == 0:
        return torch.zeros_like(bspline_basis(x, knots, 0))
    lower = bspline_basis(x, knots, k - 1)  # (..., C, n_knots - k)
    t = knots.to(x.dtype)
    scaled = lower * (k * _safe_inverse(t[..., k:] - t[..., : t.shape[-1] - k]))  # t_{i+k} - t_i, order k - 1
    return scaled[..., :-1] - scaled[..., 1:]


def _cardinal_terms(spline_order: int) -> List[Tuple[float, float]]:
    """(shift, weight) pairs of the symmetric truncated-power form of the cardinal B-spline ``N_k``."""
    c = (spline_order + 1) / 2.0
    factorial = 1.0
    for i in range(2, spline_order + 1):
        factorial *= i
    terms: List[Tuple[float, float]] = []
    binom = 1.0  # C(k + 1, j), updated in place (TorchScript has no math.comb)
    sign = 1.0
    j = 0
    while j < c:
        terms.append((c - j, sign * binom / factorial))
        binom = binom * (spline_order + 1 - j) / (j + 1)
        sign = -sign
        j += 1
    return terms


def _offsets_shape(x: torch.Tensor, basis_dim: int, n: int) -> List[int]:
    shape = [1] * (x.dim() + 1)
    shape[basis_dim] = n
    return shape


def uniform_bspline_basis(
    x: torch.Tensor, grid_start: torch.Tensor, inv_step: torch.Tensor, n_basis: int, spline_order: int, basis_dim: int
) -> torch.Tensor:
    """Closed-form basis for uniform knots ``t_j = grid_start + j / inv_step``.

    Args:
        x: inputs of any shape.
        grid_start: first knot ``t_0``, broadcastable to ``x`` with as many dims (per channel).
        inv_step: ``1 / (t_1 - t_0)``, broadcastable to ``x`` with as many dims.
        n_basis: number of basis functions ``G + k``.
        spline_order: order ``k``.
        basis_dim: where the new basis axis is inserted in the output (``x.dim()`` for channel-last inputs,
            ``2`` for ``(N, C, *spatial)`` feature maps).

    Returns:
        ``x.shape`` with an axis of size ``n_basis`` inserted at ``basis_dim``.
    """
    u = ((x - grid_start) * inv_step).unsqueeze(basis_dim)  # position in knot units, relative to t_0
    offsets = torch.arange(n_basis, device=x.device, dtype=x.dtype).view(_offsets_shape(x, basis_dim, n_basis))
    s = u - offsets  # local coordinate of each basis function, support [0, k + 1)
    if spline_order == 0:
        return ((s >= 0) & (s < 1)).to(x.dtype)
    d = (s - 0.5 * (spline_order + 1)).abs()
    out = torch.zeros_like(d)
    for shift, weight in _cardinal_terms(spline_order):
        out = out + weight * torch.relu(shift - d) ** spline_order
    return out


def uniform_bspline_basis_derivative(
    x: torch.Tensor, grid_start: torch.Tensor, inv_step: torch.Tensor, n_basis: int, spline_order: int, basis_dim: int
) -> torch.Tensor:
    """``d/dx`` of :func:`uniform_bspline_basis` (same arguments, same output shape); zero for order 0."""
    u = ((x - grid_start) * inv_step).unsqueeze(basis_dim)
    offsets = torch.arange(n_basis, device=x.device, dtype=x.dtype).view(_offsets_shape(x, basis_dim, n_basis))
    if spline_order == 0:
        return torch.zeros_like(u - offsets)
    r = u - offsets - 0.5 * (spline_order + 1)
    d = r.abs()
    out = torch.zeros_like(d)
    for shift, weight in _cardinal_terms(spline_order):
        z = shift - d
        if spline_order == 1:  # (z)_+^0 is the indicator of z > 0
            out = out + weight * (z > 0).to(d.dtype)
        else:
            out = out + weight * torch.relu(z) ** (spline_order - 1)
    # dN/dd = -k * sum(...), dd/du = sign(r), du/dx = inv_step
    if inv_step.dim() > 0:
        inv_step = inv_step.unsqueeze(basis_dim)
    return out * (-float(spline_order)) * torch.sign(r) * inv_step
