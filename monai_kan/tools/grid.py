"""Function-preserving grid update and grid extension of B-spline KAN layers (Liu et al., arXiv:2404.19756,
section 2.5).

Both operations replace the knots of every input channel and refit the control points by least squares, so that
each edge function keeps its values on the data. The refit is linear in the control points and identical for every
edge reading the same input channel, so it is one small ``(G' + k) x (G + k)`` transfer matrix per channel:

    ``T_i = argmin_T sum_m || B'(x_m) T - B(x_m) ||^2 = (A'^T A')^{-1} A'^T A``  (``A``: basis on the samples)

applied to ``spline_weight`` directly. Because it is linear, ``T (s * w) = s * (T w)``: the per-edge
``spline_scaler`` stays as it is and the effective function is preserved (efficient-kan refits ``spline_weight``
to curves that already include the scaler, which changes the function when the scaler is on). In a low-rank layer
(``rank``) it applies to the shared functions (``shared_spline_weight``, the layer's
:attr:`~monai_kan.layers.BSplineKANBase.grid_weight`), and every edge, a mixture of them, follows exactly.

The samples of input channel ``i`` are all values of channel ``i`` in the batch (for a convolution every kernel
offset applies the same function family to them; zero-padded positions contribute nothing and need no sample).

Under ``torch.distributed`` (initialized, more than one process; e.g. ``DistributedDataParallel``), the grid update
and extension are collective: every rank must call them for the same layers, and all ranks end with identical knots
and control points. The samples of every rank are gathered (``max_samples`` then caps their total, drawn from each
rank in proportion to its number of positions), so the knots are the quantiles of all ranks' data and the refit is
the least-squares fit on all of it, exactly what one process would compute on the concatenated batches; rank 0's
result is then broadcast, so that floating-point differences between devices cannot leave the replicas apart.
``distributed=False`` keeps an operation local to the calling rank.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from monai_kan.basis.bspline import bspline_basis, is_uniform_knots
from monai_kan.basis.knots import data_knots, refined_knots
from monai_kan.layers.bspline_kan import BSplineKANBase, sample_rows
from monai_kan.utils import check_positive_int

__all__ = [
    "GridRefit",
    "EDGE_NORM_FLOOR",
    "kan_layers",
    "gather_channel_samples",
    "refit_layer",
    "update_grid",
    "extend_grid",
    "record_kan_inputs",
    "KANInputCapture",
    "update_network_grids",
    "extend_network_grids",
    "replace_optimizer_params",
]


def kan_layers(net: nn.Module) -> List[Tuple[str, BSplineKANBase]]:
    """``(qualified name, layer)`` of every B-spline KAN layer (``KANLinear``/``KANConv``) in ``net``."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, BSplineKANBase)]


def _distributed(distributed: Optional[bool]) -> bool:
    """Whether to synchronise across ranks: ``None`` means "when torch.distributed runs more than one process"."""
    if distributed is False:
        return False
    ready = dist.is_available() and dist.is_initialized()
    if distributed and not ready:
        raise RuntimeError("`distributed=True` needs an initialized torch.distributed default process group.")
    return ready and dist.get_world_size() > 1


def _quotas(counts: Sequence[int], max_samples: Optional[int]) -> List[int]:
    """Rows to take from each rank: all of them, or ``max_samples`` in all, split in proportion to ``counts``
    (largest remainders; a rank never gets more rows than it has)."""
    total = sum(counts)
    if max_samples is None or total <= max_samples:
        return list(counts)
    quotas = [max_samples * c // total for c in counts]
    order = sorted(range(len(counts)), key=lambda r: (-(max_samples * counts[r] % total), r))
    for r in order[: max_samples - sum(quotas)]:
        quotas[r] += 1
    return quotas


def gather_channel_samples(
    layer: BSplineKANBase, x: Optional[torch.Tensor], max_samples: Optional[int] = 65536
) -> Optional[torch.Tensor]:
    """The samples of :meth:`~monai_kan.layers.BSplineKANBase.sample_channels` of all ranks, concatenated in rank order (a collective call).

    Ranks may hold different numbers of positions (or none: ``x=None``). ``max_samples`` caps the total; each rank
    contributes a random subset in proportion to its number of positions, so the result is a subsample of the union
    of all ranks' data, as :meth:`~monai_kan.layers.BSplineKANBase.sample_channels` would draw from the concatenated batches. Outside
    ``torch.distributed`` (or with one process) this is :meth:`~monai_kan.layers.BSplineKANBase.sample_channels` of the local ``x``.

    Args:
        layer: a B-spline KAN layer (the same one on every rank).
        x: this rank's input of the layer, or ``None`` when this rank has none.
        max_samples: cap on the total number of rows; ``None`` keeps all.

    Returns:
        ``(M, C)`` float64 samples, identical on every rank, or ``None`` when no rank has any.

    Raises:
        ValueError: when ``x`` has the wrong number of channels, or any rank's input is not finite (raised on
            every rank).
    """
    if not _distributed(None):
        return None if x is None else layer.sample_channels(x, max_samples).double()
    world, rank = dist.get_world_size(), dist.get_rank()
    device = layer.knots.device
    local = None if x is None else layer.channel_values(x).to(device)
    n = 0 if local is None else local.shape[0]
    bad = 0 if local is None else int(not bool(torch.isfinite(local).all()))
    info = torch.tensor([n, bad], dtype=torch.int64, device=device)
    infos = [torch.empty_like(info) for _ in range(world)]
    dist.all_gather(infos, info)
    counts, bad_ranks = [int(i[0]) for i in infos], [r for r, i in enumerate(infos) if int(i[1])]
    if bad_ranks:  # every rank raises: none is left waiting in a collective
        raise ValueError(f"`x` must be finite to place knots and refit the splines (not on ranks {bad_ranks}).")
    if sum(counts) == 0:
        return None
    quotas = _quotas(counts, max_samples)
    buf = torch.zeros(max(quotas), layer.in_channels, dtype=torch.float64, device=device)  # equal sizes: padded
    if quotas[rank]:
        rows = local if quotas[rank] == n else local[sample_rows(n, quotas[rank], device)]
        buf[: quotas[rank]] = rows
    bufs = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(bufs, buf)
    return torch.cat([b[:q] for b, q in zip(bufs, quotas)], 0)


EDGE_NORM_FLOOR = 1e-2
"""In :attr:`GridRefit.max_edge_error`, an edge whose function norm is below this fraction of the layer's RMS edge
norm is judged against that floor: the relative change of a ~0 edge (pruned, or driven to 0 by regularisation) is
a ratio of rounding noise and says nothing about the network."""


class GridRefit(NamedTuple):
    """Outcome of a grid update or extension of one layer.

    Attributes:
        replaced: the former ``grid_weight`` (``spline_weight``, or ``shared_spline_weight`` of a low-rank layer)
            when it was replaced by a parameter of another shape (grid
            extension; see :func:`replace_optimizer_params`), else ``None`` (updated in place).
        rel_error: relative L2 change of all edge functions together on the fit samples,
            ``sqrt(sum_e ||F'_e - F_e||^2 / sum_e ||F_e||^2)`` (whole edge functions, base branch and
            ``spline_scaler`` included; only the spline part changes). An average: a few badly changed edges
            can hide among many preserved ones, see ``max_edge_error``.
        applied: False when the refit was skipped because ``max_edge_error`` exceeded ``max_error``.
        max_edge_error: the worst relative change of a single edge function, ``max_e ||F'_e - F_e|| / ||F_e||_in``
            (an edge of a convolution is one kernel offset of an (input, output) channel pair). The change is
            measured on all fit samples of the edge's input channel; the norm ``||F_e||_in`` on those inside the old
            knot span ``(t_0, t_{G+2k})`` of that channel, where the old spline lives: outside it the old edge is its
            base branch alone, which the refit does not touch, and a single far sample (an outlier at 1e4 under a
            SiLU base branch has ``F_e ~ w * 1e4``) would otherwise dominate the norm and hide any change on all
            other samples. Edges whose ``||F_e||_in`` is below ``EDGE_NORM_FLOOR`` times the layer's RMS edge norm
            are compared with that floor instead (a ~0 edge, e.g. a pruned one, reports ~0, not a ratio of noise).
    """

    replaced: Optional[nn.Parameter]
    rel_error: float
    applied: bool
    max_edge_error: float


def _grams(layer: BSplineKANBase, samples: torch.Tensor, new_knots: torch.Tensor, chunk: int = 8192):
    """Per-channel float64 sums over ``samples`` of the new (``A'``) and old (``A``) bases and of the base branch
    ``a = act(x)``: ``A'^T A'``, ``A'^T A``, ``A^T A``, ``a^T A``, ``a^T a``, and ``a^T a`` over the samples inside
    the old knot span only (where some old basis function is nonzero)."""
    k, old_knots, act = layer.spline_order, layer.knots.double(), layer.base_activation
    c, n_new, n_old = old_knots.shape[0], new_knots.shape[1] - k - 1, old_knots.shape[1] - k - 1
    z = samples.new_zeros
    g_new, cross, g_old = z((c, n_new, n_new), dtype=torch.float64), z((c, n_new, n_old), dtype=torch.float64), \
        z((c, n_old, n_old), dtype=torch.float64)
    a_old_sum, a_sq = z((c, 1, n_old), dtype=torch.float64), z((c, 1, 1), dtype=torch.float64)
    a_sq_in = z((c, 1, 1), dtype=torch.float64)
    for start in range(0, samples.shape[0], chunk):  # accumulate: the basis of all samples may not fit in memory
        s = samples[start : start + chunk].double()
        a_new = bspline_basis(s, new_knots.double(), k)  # (m, C, n_new)
        a_old = bspline_basis(s, old_knots, k)
        g_new += torch.einsum("mcb,mcd->cbd", a_new, a_new)
        cross += torch.einsum("mcb,mcd->cbd", a_new, a_old)
        g_old += torch.einsum("mcb,mcd->cbd", a_old, a_old)
        if act is not None:
            base = act(s)  # (m, C)
            a_old_sum += torch.einsum("mc,mcd->cd", base, a_old).unsqueeze(1)
            a_sq += (base * base).sum(0)[:, None, None]
            a_sq_in += (base * base * (a_old > 0).any(-1)).sum(0)[:, None, None]
    return g_new, cross, g_old, a_old_sum, a_sq, a_sq_in


@torch.no_grad()
def refit_layer(
    layer: BSplineKANBase, samples: torch.Tensor, new_knots: torch.Tensor, max_error: Optional[float] = None
) -> GridRefit:
    """Install ``new_knots`` in ``layer`` and refit its control points to the old edge functions on ``samples``.

    This is local to the calling process (no collective); under ``torch.distributed`` give every rank the same
    ``samples`` (:func:`gather_channel_samples`) and knots, or use :func:`update_grid`/:func:`extend_grid`.

    Args:
        layer: a B-spline KAN layer (modified in place).
        samples: ``(M, C)`` fit points per input channel (see :meth:`~monai_kan.layers.BSplineKANBase.sample_channels`).
        new_knots: ``(C, G' + 2k + 1)`` knots, non-decreasing per channel.
        max_error: leave the layer unchanged when the worst relative change of an edge function on ``samples``
            (``max_edge_error`` of :class:`GridRefit`) would exceed this (``None``: always apply). Before the
            per-edge error existed this was compared with the average ``rel_error``, which one badly refitted
            channel among many cannot move.

    Returns:
        A :class:`GridRefit`. When the number of knots is unchanged, ``grid_weight`` is updated in place and
        keeps its identity; otherwise it is replaced.

    Raises:
        ValueError: when ``new_knots`` has the wrong shape.
    """
    k = layer.spline_order
    if new_knots.dim() != 2 or new_knots.shape[0] != layer.in_channels or new_knots.shape[1] < 2 * k + 2:
        raise ValueError(
            f"`new_knots` must have shape ({layer.in_channels}, G + {2 * k + 1}) with G >= 1, got {list(new_knots.shape)}."
        )
    dtype, device = layer.knots.dtype, layer.knots.device
    new_knots = new_knots.to(device=device, dtype=dtype)  # fit against the knots exactly as they will be stored
    g_new, cross, g_old, a_old, a_sq, a_sq_in = _grams(layer, samples.to(device), new_knots)
    # tiny ridge: a basis function without samples under it gets a zero control point instead of a singular solve
    ridge = 1e-10 * g_new.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-30)
    eye = torch.eye(g_new.shape[-1], dtype=g_new.dtype, device=device)
    t = torch.linalg.solve(g_new + ridge[:, None, None] * eye, cross)  # (C, n_new, n_old)
    # error of the effective functions: scaler applied, so large edges weigh as much as they contribute
    c = layer.edge_major(layer.coefficients().double())  # (C, n_old, E)
    tc = t @ c
    spline_sq = (c * (g_old @ c)).sum(1)  # (C, E): per edge, sums over the samples of its input channel
    resid = (spline_sq - 2 * (tc * (cross @ c)).sum(1) + (tc * (g_new @ tc)).sum(1)).clamp_min(0)
    norm, norm_in = spline_sq, spline_sq  # ||F_e||^2 on all samples / inside the old knot span
    if layer.base_weight is not None:  # the whole edge function w * act(x) + S(x): its spline part changes
        wb = layer.edge_major(layer.base_weight.double().unsqueeze(-1))[:, 0]  # (C, E)
        mixed = 2 * wb * (a_old @ c)[:, 0]  # the old spline is 0 outside its knot span: no outside term
        norm, norm_in = norm + wb * wb * a_sq[:, 0] + mixed, norm_in + wb * wb * a_sq_in[:, 0] + mixed
    rel_error = float((resid.sum() / norm.sum().clamp_min(1e-300)).sqrt())
    floor = EDGE_NORM_FLOOR**2 * norm_in.clamp_min(0).mean()
    max_edge_error = float((resid / torch.maximum(norm_in, floor).clamp_min(1e-300)).max().sqrt())
    if max_error is not None and max_edge_error > max_error:
        return GridRefit(None, rel_error, False, max_edge_error)
    # the map is linear and per input channel, so it applies to the stored control points directly:
    # T (s * w) = s * (T w), and a low-rank layer's shared functions carry every edge of their channel along
    new_w = layer.transformed_grid_weight(t).to(layer.grid_weight.dtype)
    replaced = None
    if new_knots.shape != layer.knots.shape:
        replaced = layer.resize_grid(new_knots.shape[1])
    layer.knots.copy_(new_knots)
    layer.grid_weight.copy_(new_w)
    layer.uniform_grid = is_uniform_knots(layer.knots)  # the closed-form basis is only valid for uniform knots
    return GridRefit(replaced, rel_error, True, max_edge_error)


@torch.no_grad()
def _broadcast_refit(layer: BSplineKANBase, refit: GridRefit) -> GridRefit:
    """Rank 0's knots, control points and refit outcome on every rank (bitwise identical replicas)."""
    dist.broadcast(layer.knots, 0)
    dist.broadcast(layer.grid_weight.detach(), 0)
    stats = torch.tensor([refit.rel_error, refit.max_edge_error, float(refit.applied)], dtype=torch.float64,
                         device=layer.knots.device)
    dist.broadcast(stats, 0)
    layer.uniform_grid = is_uniform_knots(layer.knots)
    return GridRefit(refit.replaced, float(stats[0]), bool(stats[2]), float(stats[1]))


def update_grid(
    layer: BSplineKANBase,
    x: torch.Tensor,
    grid_eps: float = 0.02,
    margin: float = 0.01,
    max_samples: Optional[int] = 65536,
    max_error: Optional[float] = None,
    distributed: Optional[bool] = None,
) -> GridRefit:
    """Move the knots of every input channel to the data (quantiles blended with a uniform grid) and refit the
    control points by least squares so that every edge function keeps its values on ``x``.

    Args:
        layer: ``KANLinear`` or ``KANConv`` (modified in place; parameters keep their identity and shape).
        x: a batch of real inputs of the layer, ``(N, C_in, *spatial)`` or ``(..., in_features)``.
        grid_eps: weight of the uniform grid in the blend (efficient-kan's ``grid_eps``), in ``[0, 1]``.
        margin: absolute widening of the data range on each side.
        max_samples: at most this many positions (random subset) place the knots and fit the splines; under
            ``torch.distributed``, in total over all ranks.
        max_error: skip the update when an edge function would change by more than this (relative, the worst
            edge: ``max_edge_error`` of :class:`GridRefit`); ``None`` always applies it.
        distributed: ``None``: when ``torch.distributed`` is initialized with more than one process, this is a
            collective call (every rank calls it for the same layer, with its own ``x``) and all ranks end with the
            same knots and control points, fitted on all ranks' data (see the module docstring). ``False``: local.
            ``True``: as ``None``, but raise if no process group is initialized.

    Returns:
        A :class:`GridRefit` (``replaced`` is ``None``), the same on every rank.

    Raises:
        ValueError: when ``x`` has the wrong number of channels or non-finite values, or ``grid_eps`` is not in
            ``[0, 1]``.

    The refit is exact when the old functions lie in the new spline space on the data (e.g. polynomials of degree
    ``<= k`` inside the old grid, or an update on the same data as the previous one); otherwise it is the best L2
    approximation on ``x`` and ``rel_error``/``max_edge_error`` say how far it is (moving knots under a wiggly
    learned spline cannot be exact). Channels whose values in ``x`` are (nearly) constant keep their knots and
    functions.
    """
    refit = _update_layer(layer, x, _distributed(distributed), grid_eps, margin, max_samples, max_error)
    assert refit is not None  # x is given on this rank
    return refit


def _update_layer(
    layer: BSplineKANBase,
    x: Optional[torch.Tensor],
    sync: bool,
    grid_eps: float = 0.02,
    margin: float = 0.01,
    max_samples: Optional[int] = 65536,
    max_error: Optional[float] = None,
) -> Optional[GridRefit]:
    """:func:`update_grid`; with ``sync``, ``x`` may be ``None`` on some ranks (``None``: no rank had data)."""
    if not 0.0 <= grid_eps <= 1.0:  # before any collective: every rank raises alike
        raise ValueError(f"`grid_eps` must be in [0, 1], got {grid_eps}.")
    samples = gather_channel_samples(layer, x, max_samples) if sync else layer.sample_channels(x, max_samples)
    if samples is None:
        return None
    k = layer.spline_order
    knots = data_knots(samples, layer.n_basis - k, k, grid_eps, margin)
    flat = _flat(samples)
    if bool(flat.any()):  # keep their knots, and fit them over their grid so that their functions stay identical
        knots[flat] = layer.knots[flat].to(knots)
        samples = _with_interior_points(samples, layer, flat, 16 * layer.n_basis)
    refit = refit_layer(layer, samples, knots, max_error)
    return _broadcast_refit(layer, refit) if sync else refit


def _flat(samples: torch.Tensor) -> torch.Tensor:
    """``(C,)`` True for channels whose samples are (nearly) constant: quantiles cannot place a grid there."""
    s = samples.double()
    return (s.max(0).values - s.min(0).values) <= 1e-6 * (1.0 + s.abs().max(0).values)


def _with_interior_points(samples: torch.Tensor, layer: BSplineKANBase, flat: torch.Tensor, n: int):
    """Samples where the ``flat`` channels are replaced by ``>= n`` points evenly covering their grid interior."""
    s = samples.double()
    if s.shape[0] < n:  # repeat rows: equal weights, same least-squares solution for the other channels
        s = s[torch.arange(n, device=s.device) % s.shape[0]]
    s = s.clone()
    s[:, flat] = layer.grid_interior(s.shape[0]).to(s.device)[:, flat]
    return s


def extend_grid(
    layer: BSplineKANBase,
    new_grid_size: int,
    x: Optional[torch.Tensor] = None,
    grid_eps: float = 0.02,
    margin: float = 0.01,
    max_samples: Optional[int] = 65536,
    n_fit: int = 64,
    distributed: Optional[bool] = None,
) -> GridRefit:
    """Grid extension ``G -> G'`` (e.g. 5 -> 10): new knots and a least-squares refit of the control points.

    Args:
        layer: ``KANLinear`` or ``KANConv`` (modified in place).
        new_grid_size: new number of grid intervals ``G'`` (>= 1).
        x: optional batch of real inputs. Given: the knots are placed on the data as in :func:`update_grid` and the
            functions are preserved on ``x`` (exactly when the old knots are nested in the new ones, e.g. after an
            update on the same data and ``G'`` a multiple of ``G``). ``None``: the grid interior
            ``[t_k, t_{G+k}]`` is subdivided (uniform knots stay uniform and keep the fast closed-form basis) and
            the functions are preserved on the interior, exactly when ``G'`` is a multiple of ``G``; the ``k``
            outer intervals shrink with the spacing, so inputs there (e.g. the tails of normalised features) see a
            changed function: prefer passing ``x``.
        grid_eps, margin, max_samples: as :func:`update_grid` (used when ``x`` is given).
        n_fit: fit points per new grid interval over the interior, when ``x`` is ``None``.
        distributed: as :func:`update_grid` (a collective call under ``torch.distributed``; a rank may pass
            ``x=None`` while others pass data: the knots are then placed on the other ranks' data).

    Returns:
        A :class:`GridRefit`; ``replaced`` is the former ``grid_weight`` (``None`` if ``G' == G``). An optimizer
        that held it must be told, since its state has the old shape:
        ``replace_optimizer_params(optimizer, {refit.replaced: layer.grid_weight})``, or build a new optimizer.
        A ``DistributedDataParallel`` wrapper holds the former parameter too: wrap the module again afterwards
        (see :func:`extend_network_grids`).

    Raises:
        ValueError: when ``new_grid_size`` is not a positive integer, or as :func:`update_grid` for ``x``.
    """
    return _extend_layer(layer, new_grid_size, x, _distributed(distributed), grid_eps, margin, max_samples, n_fit)


def _extend_layer(
    layer: BSplineKANBase,
    new_grid_size: int,
    x: Optional[torch.Tensor],
    sync: bool,
    grid_eps: float = 0.02,
    margin: float = 0.01,
    max_samples: Optional[int] = 65536,
    n_fit: int = 64,
) -> GridRefit:
    """:func:`extend_grid`; with ``sync``, ``x`` may be ``None`` on some ranks."""
    check_positive_int(new_grid_size=new_grid_size)
    if not 0.0 <= grid_eps <= 1.0:
        raise ValueError(f"`grid_eps` must be in [0, 1], got {grid_eps}.")
    k = layer.spline_order
    if sync:
        samples = gather_channel_samples(layer, x, max_samples)
    else:
        samples = None if x is None else layer.sample_channels(x, max_samples)
    if samples is not None:
        knots = data_knots(samples, new_grid_size, k, grid_eps, margin)
        flat = _flat(samples)
        if bool(flat.any()):  # constant channels: refine their current grid instead
            knots[flat] = refined_knots(layer.knots[flat], k, new_grid_size).to(knots)
            samples = _with_interior_points(samples, layer, flat, n_fit * new_grid_size)
    else:
        knots = refined_knots(layer.knots, k, new_grid_size)
        samples = layer.grid_interior(n_fit * new_grid_size)
    refit = refit_layer(layer, samples, knots)
    return _broadcast_refit(layer, refit) if sync else refit


# ---------------------------------------------------------------------------------------------------- networks


@torch.no_grad()
def record_kan_inputs(
    net: nn.Module, *inputs, forward: Optional[Callable] = None, layers: Optional[Sequence[str]] = None
) -> Dict[str, torch.Tensor]:
    """Run ``net`` once (in eval mode) and return the detached input of each B-spline KAN layer, by name.

    Args:
        net: the network.
        inputs: arguments of ``net(...)`` (or of ``forward``).
        forward: callable to run instead of ``net(*inputs)`` (e.g. a sliding-window inferer).
        layers: restrict to these layer names.

    A layer called several times keeps the concatenation of its inputs along the batch dimension.
    """
    seen: Dict[str, List[torch.Tensor]] = {}
    handles = []
    for name, layer in kan_layers(net):
        if layers is not None and name not in layers:
            continue

        def hook(_mod, args, name=name):
            seen.setdefault(name, []).append(args[0].detach())

        handles.append(layer.register_forward_pre_hook(hook))
    was_training = net.training
    try:
        net.eval()  # running statistics of norm layers must not move for a bookkeeping pass
        (forward or net)(*inputs)
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return {n: (v[0] if len(v) == 1 else torch.cat(v, 0)) for n, v in seen.items()}


class KANInputCapture:
    """Forward pre-hooks that keep the latest input of every B-spline KAN layer while armed (no extra forward pass).

    Args:
        net: the network.
        layers: restrict to these layer names.

    Example::

        capture = KANInputCapture(net)
        capture.arm()
        loss = loss_fn(net(x), y)   # the training forward fills capture.inputs
        capture.disarm()
        update_network_grids(net, inputs=capture.pop())
    """

    def __init__(self, net: nn.Module, layers: Optional[Sequence[str]] = None) -> None:
        self.net, self.layers = net, layers
        self.inputs: Dict[str, torch.Tensor] = {}
        self._handles: List = []

    def arm(self) -> None:
        """Start recording (re-reads the layers, so modules replaced since are seen)."""
        self.disarm()
        for name, layer in kan_layers(self.net):
            if self.layers is None or name in self.layers:

                def hook(_mod, args, name=name):
                    self.inputs[name] = args[0].detach()

                self._handles.append(layer.register_forward_pre_hook(hook))

    def disarm(self) -> None:
        """Stop recording (keeps what was recorded)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def pop(self) -> Dict[str, torch.Tensor]:
        """The recorded inputs, forgetting them."""
        out, self.inputs = self.inputs, {}
        return out


def _layer_inputs(net: nn.Module, inputs: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``inputs`` keyed by the layer names of ``net``; names recorded on a ``DistributedDataParallel`` wrapper
    (``module.`` prefix) are accepted for its module."""
    names = {name for name, _ in kan_layers(net)}
    out, unknown = {}, []
    for name, x in inputs.items():
        key = name if name in names else name[len("module.") :] if name.startswith("module.") else None
        if key not in names:
            unknown.append(name)
        out[key] = x
    if unknown:
        raise ValueError(f"`inputs` names no B-spline KAN layer of `net`: {sorted(unknown)}.")
    return out


def _wraps_ddp(net: nn.Module) -> bool:
    return any(isinstance(m, DistributedDataParallel) for m in net.modules())


def update_network_grids(
    net: nn.Module,
    batch=None,
    inputs: Optional[Mapping[str, torch.Tensor]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    distributed: Optional[bool] = None,
    **kwargs,
) -> Dict[str, GridRefit]:
    """:func:`update_grid` for every B-spline KAN layer of ``net``, on the inputs each layer sees for ``batch``.

    Args:
        net: the network; may be a ``DistributedDataParallel`` wrapper (the update is in place: parameters keep
            their identity and shape).
        batch: network input; one forward pass with hooks collects each layer's input. Or give ``inputs``.
        inputs: precomputed ``{layer name: layer input}`` (e.g. from :func:`record_kan_inputs`).
        optimizer: if given, the optimizer state (e.g. Adam moments) of every refitted ``grid_weight`` is dropped:
            it refers to the old basis.
        distributed: as :func:`update_grid`. Under ``torch.distributed`` every rank must call this (each with its
            own ``batch``/``inputs``): the layers are visited in module order, a layer recorded on some ranks only
            is fitted on their data, and all ranks end with identical knots, control points and results.
        kwargs: ``grid_eps``, ``margin``, ``max_samples``, ``max_error`` of :func:`update_grid`.

    Returns:
        ``{layer name: GridRefit}`` in module order, for the layers that had inputs (on any rank). The functions are
        preserved, so updating all layers from one pass is consistent (each layer's input is unchanged up to the
        fit error).

    Raises:
        ValueError: when neither ``batch`` nor ``inputs`` is given, or ``inputs`` names an unknown layer.
    """
    if inputs is None:
        if batch is None:
            raise ValueError("`batch` or `inputs` must be given.")
        inputs = record_kan_inputs(net, batch)
    mods, inputs = dict(kan_layers(net)), _layer_inputs(net, inputs)
    sync = _distributed(distributed)
    out: Dict[str, GridRefit] = {}
    for name, layer in mods.items():
        x = inputs.get(name)
        if x is None and not sync:
            continue
        refit = _update_layer(layer, x, sync, **kwargs)
        if refit is None:  # no rank recorded this layer
            continue
        out[name] = refit
        if optimizer is not None and refit.applied:
            optimizer.state.pop(layer.grid_weight, None)
    return out


def extend_network_grids(
    net: nn.Module,
    new_grid_size: int,
    batch=None,
    inputs: Optional[Mapping[str, torch.Tensor]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    distributed: Optional[bool] = None,
    **kwargs,
) -> Dict[str, GridRefit]:
    """:func:`extend_grid` for every B-spline KAN layer of ``net``.

    Args:
        net: the network (not a ``DistributedDataParallel`` wrapper, see below).
        new_grid_size: new number of intervals ``G'``.
        batch: network input used to collect each layer's input (or give ``inputs``); with neither, each layer's
            grid interior is refined without data.
        inputs: precomputed ``{layer name: layer input}`` (names recorded on a ``DistributedDataParallel``
            wrapper, ``module.``-prefixed, are accepted for ``ddp.module``).
        optimizer: if given, its param groups are pointed at the new parameters and the old state is dropped
            (:func:`replace_optimizer_params`). Otherwise build a new optimizer after the extension.
        distributed: as :func:`update_network_grids`; every rank must call this and all end with identical knots
            and control points.
        kwargs: ``grid_eps``, ``margin``, ``max_samples``, ``n_fit`` of :func:`extend_grid`.

    Returns:
        ``{layer name: GridRefit}``.

    Raises:
        ValueError: when ``net`` is or contains a ``DistributedDataParallel`` wrapper, or ``inputs`` names an
            unknown layer.

    Extension replaces every ``spline_weight`` by a new parameter, which a ``DistributedDataParallel`` wrapper does
    not follow: it keeps waiting for the gradients of the old ones, does not average those of the new ones (the
    replicas drift apart at the next step) and fails at the following iteration ("Expected to have finished
    reduction in the prior iteration"). So extend the wrapped module and wrap it again, on every rank (the new
    wrapper checks the shapes and broadcasts rank 0's state)::

        net = ddp.module
        extend_network_grids(net, 10, inputs=inputs, optimizer=opt)  # inputs may be recorded on the wrapper
        ddp = DistributedDataParallel(net, ...)  # same arguments as before; drop the old wrapper
    """
    if _wraps_ddp(net):
        raise ValueError(
            "grid extension replaces parameters, which a DistributedDataParallel wrapper does not follow: extend "
            "`ddp.module` and wrap it again afterwards (`ddp = DistributedDataParallel(ddp.module, ...)`)."
        )
    if inputs is None and batch is not None:
        inputs = record_kan_inputs(net, batch)
    mods = dict(kan_layers(net))
    inputs = None if inputs is None else _layer_inputs(net, inputs)
    sync = _distributed(distributed)
    out = {name: _extend_layer(m, new_grid_size, None if inputs is None else inputs.get(name), sync, **kwargs)
           for name, m in mods.items()}
    if optimizer is not None:
        replace_optimizer_params(optimizer, {r.replaced: mods[n].grid_weight for n, r in out.items() if r.replaced is not None})
    return out


def replace_optimizer_params(
    optimizer: torch.optim.Optimizer, replaced: Mapping[nn.Parameter, nn.Parameter]
) -> torch.optim.Optimizer:
    """Point ``optimizer``'s param groups at new parameters and drop the state of the old ones.

    Grid extension replaces ``spline_weight`` by a parameter of another shape: the optimizer would otherwise keep
    stepping the orphaned tensor, and its state (e.g. Adam moments) has the wrong shape. Learning rates, weight
    decay and every other group option are kept; the new parameters start with fresh state.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        replaced: ``{old parameter: new parameter}``, as returned by :func:`extend_network_grids`.

    Returns:
        ``optimizer`` (modified in place).
    """
    if not replaced:
        return optimizer
    by_id = {id(old): new for old, new in replaced.items()}
    for group in optimizer.param_groups:
        group["params"] = [by_id.get(id(p), p) for p in group["params"]]
    for old in replaced:
        optimizer.state.pop(old, None)
    return optimizer
