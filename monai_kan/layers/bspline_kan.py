"""Shared state of B-spline KAN layers: knots, control points, base branch, and their introspection.

Every edge ``(c_out, c_in[, kernel offset])`` carries a univariate function

    ``F(x) = w_base * base_activation(x) + sum_i c_i B_{i,k}(x)``

with learnable control points ``c_i`` (``spline_weight``, optionally times a per-edge ``spline_scaler``) on the knots
of input channel ``c_in``. With ``base_activation=None`` the edge is the pure B-spline of the KAN
(Liu et al., arXiv:2404.19756, eq. 2.10 without the residual) and KM-UNet formulations.

Low-rank (separable) form, ``rank=r``: each input channel ``c`` has ``r`` learnable B-spline functions
``phi_{c,s}(x) = sum_i a_{c,s,i} B_i(x)`` (``shared_spline_weight``) shared by all outputs and kernel offsets, and each
edge mixes them, ``F(x) = w_base * act(x) + sum_s m_s phi_{c,s}(x)`` (``spline_weight`` then holds the mixing weights
``m``). The effective control points of an edge are ``sum_s m_s a_{c,s}``, so every tool that reads edge functions
through :meth:`BSplineKANBase.coefficients` sees the low-rank layer as the full one it represents (the "low-rank KANs"
of the KM-UNet slides' future work, V. Kumar 2025). A convolution then costs ``r + 1`` plain convolutions instead of
``G + k + 1``.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.layers.utils import get_act_layer

from monai_kan.basis.bspline import bspline_basis, is_uniform_knots, make_knots, num_basis
from monai_kan.layers.fused import activation_name, basis_dtype, expand_bspline, kan_convolution
from monai_kan.utils import check_positive_int

__all__ = ["BSplineKANBase", "SPLINE_INITS", "get_base_activation", "sample_rows"]

#: named control-point initialisations; any activation (name, ``(name, args)`` or module) is fitted instead
SPLINE_INITS = ("noise", "zero", "linear")


def get_base_activation(base_activation: Union[str, tuple, nn.Module, None]) -> Optional[nn.Module]:
    """The module of a ``base_activation`` argument (``None`` stays ``None``); ``"silu"`` is ``nn.SiLU``.

    Raises:
        ValueError: not None, a MONAI activation name, a ``(name, args)`` tuple or a module.
    """
    if base_activation is None:
        return None
    if isinstance(base_activation, nn.Module):
        return base_activation
    if isinstance(base_activation, str) and base_activation.lower() == "silu":
        return nn.SiLU()  # MONAI's Act factory names it "swish" (its own module); SiLU has a fused derivative here
    if isinstance(base_activation, (str, tuple)):
        return get_act_layer(base_activation)
    raise ValueError(
        "`base_activation` must be None, a MONAI activation name (e.g. 'silu'), a (name, args) tuple or an "
        f"nn.Module, got {type(base_activation).__name__}."
    )


def _spline_init_fn(spline_init) -> Tuple[str, Optional[Callable]]:
    """``(kind, function to fit or None)`` of a ``spline_init`` argument.

    Raises:
        ValueError: not None, one of :data:`SPLINE_INITS`, or an activation :func:`get_base_activation` builds.
    """
    if spline_init is None or spline_init in SPLINE_INITS:
        return spline_init or "default", None
    try:
        fn = get_base_activation(spline_init)
    except Exception as err:
        raise ValueError(f"`spline_init` must be None, one of {SPLINE_INITS}, or an activation to fit (a MONAI "
                         f"activation name, (name, args) or nn.Module), got {spline_init!r}.") from err
    return (spline_init if isinstance(spline_init, str) else type(fn).__name__), fn


def sample_rows(n: int, m: int, device: torch.device) -> torch.Tensor:
    """``m`` of ``n`` row indices, reproducibly (a fixed generator leaves the training's random stream alone)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:m].to(device)


class BSplineKANBase(nn.Module):
    """Parameters and introspection shared by :class:`~monai_kan.layers.KANLinear` and
    :class:`~monai_kan.layers.KANConv`; ``kernel_size`` is ``()`` for the linear layer.

    The layer owns the knowledge tools need about it (grid update, pruning, regularisation, visualisation call
    these instead of reading the layout): :attr:`channel_dim`, :meth:`channel_values`, :meth:`sample_channels`,
    :meth:`grid_interior`, :meth:`edge_input_channels`, :meth:`edge_weight`, :meth:`edge_major`,
    :meth:`edge_minor`, :meth:`edge_functions` and :meth:`resize_grid`.

    Attributes:
        channel_dim: the input's channel axis: ``1`` for ``(N, C, *spatial)`` convolutions, ``-1`` for linear layers.
        knots: buffer ``(in_channels, G + 2k + 1)``, the knot vector of each input channel.
        rank: ``None`` (full layer) or ``r``, the number of shared functions per input channel (low-rank form).
        spline_weight: ``(out, in // groups, *kernel_size, G + k)`` control points (before ``spline_scaler``); with
            ``rank``, ``(out, in // groups, *kernel_size, r)`` mixing weights of the shared functions.
        shared_spline_weight: with ``rank``, ``(in_channels, r, G + k)`` control points of the shared functions;
            else ``None``.
        spline_scaler: ``(out, in // groups, *kernel_size)`` per-edge scale, or ``None`` (always with ``rank``: the
            mixing weights scale each edge already).
        base_weight: ``(out, in // groups, *kernel_size)`` weight of the base branch, or ``None``.
        bias: ``(out,)`` or ``None``.
    """

    channel_dim: int = -1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Tuple[int, ...],
        groups: int,
        bias: bool,
        grid_size: int,
        spline_order: int,
        grid_range: Sequence[float],
        base_activation: Union[str, tuple, nn.Module, None],
        standalone_scale_spline: bool,
        scale_noise: float,
        rank: Optional[int] = None,
        spline_init: Union[str, tuple, nn.Module, None] = None,
    ) -> None:
        super().__init__()
        check_positive_int(in_channels=in_channels, out_channels=out_channels, groups=groups)
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"`rank` must be None (full KAN layer) or a positive integer, got {rank!r}.")
        self._spline_init = _spline_init_fn(spline_init)  # a tuple: a module to fit is not a submodule
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"`groups` must divide `in_channels` and `out_channels`, got groups={groups}, "
                f"in_channels={in_channels}, out_channels={out_channels}."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.grid_size = int(grid_size)
        self.spline_order = int(spline_order)
        self.grid_range = (float(grid_range[0]), float(grid_range[1])) if len(grid_range) == 2 else tuple(grid_range)
        # float32 (float64 under a float64 default dtype) whatever the module is later cast to: see `_apply`
        knots = make_knots(grid_size, spline_order, grid_range, channels=in_channels,
                           dtype=basis_dtype(torch.get_default_dtype()))
        self.register_buffer("knots", knots)
        self.uniform_grid = True
        self.base_activation = get_base_activation(base_activation)

        n = num_basis(grid_size, spline_order)
        edge_shape = (out_channels, in_channels // groups) + tuple(kernel_size)
        self.rank = rank
        self.spline_weight = nn.Parameter(torch.empty(edge_shape + ((n,) if rank is None else (rank,))))
        self.shared_spline_weight = nn.Parameter(torch.empty(in_channels, rank, n)) if rank is not None else None
        # with rank the mixing weights already scale each edge: a scaler would only add parameters
        self.spline_scaler = nn.Parameter(torch.empty(edge_shape)) if standalone_scale_spline and rank is None else None
        self.base_weight = nn.Parameter(torch.empty(edge_shape)) if self.base_activation is not None else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale_noise = float(scale_noise)
        self.reset_parameters()

    @property
    def n_basis(self) -> int:
        """Number of basis functions (control points) per edge, ``G + k``."""
        return self.knots.shape[1] - self.spline_order - 1

    @property
    def grid_weight(self) -> nn.Parameter:
        """The parameter whose last dimension runs over the basis functions, i.e. what a grid update refits and a
        grid extension resizes: ``spline_weight``, or ``shared_spline_weight`` with ``rank``."""
        return self.spline_weight if self.shared_spline_weight is None else self.shared_spline_weight

    def spline_parameters(self) -> List[nn.Parameter]:
        """The parameters that shape the B-spline terms: control points (``spline_weight``, with ``rank`` also
        ``shared_spline_weight``) and ``spline_scaler``; the others (``base_weight``, ``bias``) are plain weights.
        Used for separate learning rates (:func:`~monai_kan.tools.kan_parameter_groups`)."""
        return [p for p in (self.spline_weight, self.shared_spline_weight, self.spline_scaler) if p is not None]

    def macs(self, input_shape: Sequence[int], output_shape: Sequence[int]) -> int:
        """Multiply-accumulates of one forward pass from an input of ``input_shape`` to ``output_shape``.

        Per output element the contraction with each edge's weights, ``in // groups * prod(kernel_size) * (b + G +
        k)`` (``b = 1`` with a base branch); with ``rank``, ``(b + r)`` instead of ``(b + G + k)``, plus the shared
        functions, ``r * (G + k)`` per input element. The elementwise basis evaluation is not counted.
        """
        per_edge = (1 if self.base_weight is not None else 0) + (self.n_basis if self.rank is None else self.rank)
        edges = math.prod(self.spline_weight.shape[1:-1])  # in // groups * prod(kernel_size)
        total = math.prod(output_shape) * edges * per_edge
        if self.rank is not None:
            total += math.prod(input_shape) * self.rank * self.n_basis
        return int(total)

    def reset_parameters(self) -> None:
        """Kaiming-uniform scale per edge times a spline shape chosen by ``spline_init``:

        * default (``None``): with a base branch, small noise (efficient-kan's scheme: the base branch carries the
          signal); without one, the line ``x`` (exact on ``grid_range``, since control points at the Greville
          abscissae reproduce ``x``) plus small noise, so a pure KAN starts as its linear counterpart;
        * ``"noise"``: small noise; ``"zero"``: exactly zero (the layer starts as its plain ``w * act(x)`` twin);
          ``"linear"``: the line ``x`` plus noise;
        * an activation (e.g. ``"silu"``, ``"tanh"``): its least-squares fit on the grid interior plus noise.

        The noise is uniform in ``+-scale_noise / G``. With ``rank`` the shared functions get the shape and the mixing
        weights the Kaiming scale (divided by ``sqrt(r)``, as ``r`` terms add up). Every choice draws the same random
        numbers, so at one seed the variants differ only in the spline shape.
        """
        fan_in = self.spline_weight[0].numel() // self.spline_weight.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        target = self.grid_weight
        noise = (torch.rand_like(target) * 2 - 1) * self.scale_noise / self.grid_size
        kind, fn = self._spline_init
        if kind == "default":
            kind = "noise" if self.base_weight is not None else "linear"
        with torch.no_grad():
            edge_weight = torch.empty(self.spline_weight.shape[:-1]).uniform_(-bound, bound)
            if self.base_weight is not None:
                self.base_weight.copy_(edge_weight)
                edge_weight = torch.empty_like(edge_weight).uniform_(-bound, bound)
            if kind == "zero":
                shape = torch.zeros_like(noise)
            elif kind == "noise":
                shape = noise
            else:
                shape = self._fitted_shape(fn).to(noise) + noise
            if self.shared_spline_weight is not None:
                self.shared_spline_weight.copy_(shape)
                self.spline_weight.uniform_(-bound / math.sqrt(self.rank), bound / math.sqrt(self.rank))
            elif self.spline_scaler is not None:
                self.spline_scaler.copy_(edge_weight)
                self.spline_weight.copy_(shape)
            else:
                self.spline_weight.copy_(shape * edge_weight.unsqueeze(-1))
            if self.bias is not None:
                self.bias.zero_()

    def _fitted_shape(self, fn: Optional[Callable]) -> torch.Tensor:
        """Control points of ``fn`` (``None``: the line ``x``) for every function of :attr:`grid_weight`, broadcast
        to its shape: the Greville abscissae for the line, else the least-squares fit on each channel's grid
        interior (float64)."""
        k, n, c = self.spline_order, self.n_basis, self.in_channels
        knots = self.knots if fn is None else self.knots.double()  # the default's line as it always was
        if fn is None:
            per_channel = knots.unfold(1, k, 1)[:, 1 : n + 1].mean(-1) if k > 0 else 0.5 * (knots[:, :-1] + knots[:, 1:])
        else:
            xs = self.grid_interior(16 * n)  # (m, C)
            basis = bspline_basis(xs, knots, k).transpose(0, 1)  # (C, m, n)
            per_channel = torch.linalg.lstsq(basis, fn(xs).t().unsqueeze(-1)).solution[..., 0]  # (C, n)
        if self.shared_spline_weight is not None:
            return per_channel.unsqueeze(1).expand(c, self.rank, n)
        extra = self.spline_weight.dim() - 3
        shape = per_channel[self.edge_input_channels()]  # (out, in // groups, n)
        return shape.reshape(shape.shape[:2] + (1,) * extra + (n,)).expand(self.spline_weight.shape)

    def coefficients(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Effective control points ``(out, in // groups, *kernel_size, G + k)`` with ``spline_scaler`` folded in
        (with ``rank``: the mixtures of the shared functions' control points), computed in ``dtype`` (default: the
        parameters' dtype)."""
        w = self.spline_weight if dtype is None else self.spline_weight.to(dtype)
        shared = self.shared_spline_weight
        if shared is not None:
            out, cin_g = w.shape[0], w.shape[1]
            a = shared.to(w.dtype)[self.edge_input_channels()]  # (out, in // groups, r, G + k)
            coef = torch.matmul(w.reshape(out, cin_g, -1, w.shape[-1]), a)  # (out, in // groups, prod(K), G + k)
            return coef.reshape(w.shape[:-1] + (a.shape[-1],))
        if self.spline_scaler is not None:
            return w * self.spline_scaler.to(w.dtype).unsqueeze(-1)
        return w

    # ------------------------------------------------------------------------------ what tools need to know

    def channel_values(self, x: torch.Tensor) -> torch.Tensor:
        """All values of the input ``x`` as ``(M, in_channels)`` rows (detached, unchecked).

        Raises:
            ValueError: when ``x`` does not have ``in_channels`` channels on :attr:`channel_dim`.
        """
        if x.dim() < 1 or x.shape[self.channel_dim] != self.in_channels:
            raise ValueError(f"`x` must have {self.in_channels} channels on dim {self.channel_dim}, "
                             f"got shape {list(x.shape)}.")
        return x.detach().movedim(self.channel_dim, -1).reshape(-1, self.in_channels)

    def sample_channels(self, x: torch.Tensor, max_samples: Optional[int] = 65536) -> torch.Tensor:
        """Values of each input channel in ``x`` as ``(M, in_channels)``, at most ``max_samples`` rows (a random
        subset of positions shared by all channels, drawn by :func:`sample_rows`).

        Raises:
            ValueError: when ``x`` has the wrong number of channels or non-finite values.
        """
        s = self.channel_values(x)
        if not bool(torch.isfinite(s).all()):
            raise ValueError("`x` must be finite to place knots and refit the splines.")
        if max_samples is not None and s.shape[0] > max_samples:
            s = s[sample_rows(s.shape[0], max_samples, s.device)]
        return s

    def grid_interior(self, n: int) -> torch.Tensor:
        """``(n, in_channels)`` float64 points evenly covering each channel's grid interior ``[t_k, t_{G+k}]``
        (midpoints of ``n`` equal cells), where the splines are fully supported."""
        k = self.spline_order
        lo, hi = self.knots[:, k].double(), self.knots[:, self.knots.shape[1] - k - 1].double()
        u = (torch.arange(n, dtype=torch.float64, device=self.knots.device) + 0.5) / n
        return lo + u[:, None] * (hi - lo)

    def edge_input_channels(self) -> torch.Tensor:
        """``(out, in // groups)`` index of the input channel each edge reads (groups taken into account)."""
        out, cin_g = self.spline_weight.shape[0], self.spline_weight.shape[1]
        dev = self.spline_weight.device
        group = torch.arange(out, device=dev)[:, None] // (out // self.groups)
        return group * cin_g + torch.arange(cin_g, device=dev)

    def edge_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """``(out, in // groups, b + G + k, *kernel_size)``: per edge, the base weight (if any) then the effective
        control points: the weights of the expansion's channels, computed in ``dtype`` (default: the parameters')."""
        coef = self.coefficients(dtype).movedim(-1, 2)
        if self.base_weight is not None:
            coef = torch.cat([self.base_weight.to(coef.dtype).unsqueeze(2), coef], dim=2)
        return coef

    def edge_major(self, w: torch.Tensor) -> torch.Tensor:
        """``(out, in // groups, *kernel_size, n)`` per-edge values (e.g. ``spline_weight``) ->
        ``(in_channels, n, E)``: those of the ``E`` edges reading each input channel."""
        out, cin_g, n = w.shape[0], w.shape[1], w.shape[-1]
        w = w.reshape(self.groups, out // self.groups, cin_g, -1, n)  # (g, out/g, in/g, K, n)
        return w.permute(0, 2, 4, 1, 3).reshape(self.groups * cin_g, n, -1)

    def edge_minor(self, w: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`edge_major`: ``(in_channels, n, E)`` -> ``(out, in // groups, *kernel_size, n)``."""
        out, cin_g, n = self.spline_weight.shape[0], self.spline_weight.shape[1], w.shape[1]
        w = w.reshape(self.groups, cin_g, n, out // self.groups, -1).permute(0, 3, 1, 4, 2)  # (g, out/g, in/g, K, n)
        return w.reshape((out, cin_g) + tuple(self.spline_weight.shape[2:-1]) + (n,))

    def edge_functions(self, xs: torch.Tensor) -> torch.Tensor:
        """Every edge function ``F(x) = w * act(x) + sum_b c_b B_b(x)`` at the points ``xs`` ``(n, in_channels)``
        (one column of points per input channel), as ``(out, in // groups, *kernel_size, n)``."""
        xs = xs.to(self.knots)
        out, cin_g = self.spline_weight.shape[0], self.spline_weight.shape[1]
        chan = self.edge_input_channels()
        extra = self.spline_weight.dim() - 3
        basis = bspline_basis(xs, self.knots, self.spline_order)  # (n, C, n_basis)
        b = basis.permute(1, 2, 0)[chan].reshape((out, cin_g) + (1,) * extra + basis.shape[2:] + basis.shape[:1])
        y = (self.coefficients().to(b.dtype).unsqueeze(-1) * b).sum(-2)  # (out, in/g, *K, n)
        if self.base_weight is not None:
            act = self.base_activation(xs).t()[chan].reshape((out, cin_g) + (1,) * extra + (xs.shape[0],))
            y = y + self.base_weight.to(b.dtype).unsqueeze(-1) * act
        return y

    def transformed_grid_weight(self, t: torch.Tensor) -> torch.Tensor:
        """:attr:`grid_weight` with the basis coordinates of every input channel ``c`` mapped by ``t[c]``:
        ``t`` ``(in_channels, n_new, G + k)`` -> ``(..., n_new)`` in float64 (a grid update's refit, linear in the
        control points, so the low-rank form's edge functions follow their shared functions)."""
        if self.shared_spline_weight is not None:
            return torch.matmul(self.shared_spline_weight.double(), t.transpose(1, 2))  # (C, r, n_new)
        return self.edge_minor(t @ self.edge_major(self.spline_weight.double()))

    def resize_grid(self, n_knots: int) -> nn.Parameter:
        """Give the layer ``n_knots`` knots per channel: new (uninitialised) ``knots`` and :attr:`grid_weight` of the
        matching basis size, ``grid_size`` updated; the caller fills them. Returns the former :attr:`grid_weight`
        (an optimizer holding it must be told: :func:`~monai_kan.tools.grid.replace_optimizer_params`).

        Raises:
            ValueError: when ``n_knots`` leaves no basis function (``< spline_order + 2``).
        """
        n = n_knots - self.spline_order - 1
        if n < 1:
            raise ValueError(f"`n_knots` must be at least spline_order + 2 = {self.spline_order + 2}, got {n_knots}.")
        old = self.grid_weight
        self.knots = self.knots.new_empty((self.in_channels, n_knots))
        new = nn.Parameter(old.new_empty(old.shape[:-1] + (n,)), requires_grad=old.requires_grad)
        if self.shared_spline_weight is not None:
            self.shared_spline_weight = new
        else:
            self.spline_weight = new
        self.grid_size = n - self.spline_order
        return old

    # ------------------------------------------------------------------------------------------- computation

    def _fused_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """Convolution weight ``(out, in // groups * (b + G + k), *kernel_size)`` (kernel ``(1,)`` for the linear
        layer) laid out as the expansion, formed in at least float32 (the scaler product is not rounded twice) and
        cast once to the compute ``dtype``."""
        coef = self.edge_weight(basis_dtype(self.spline_weight.dtype))  # (out, in // groups, b + G + k, *kernel_size)
        # contiguous: without a base branch the movedim in edge_weight can leave strides that look channels-last, and
        # the convolution picks its memory format from its weight
        weight = coef.flatten(1, 2).to(dtype).contiguous()
        if weight.dim() == 2:  # the linear layer runs as a kernel-1 convolution
            weight = weight.unsqueeze(-1)
        return weight

    def _kan_conv(self, x: torch.Tensor, stride: List[int], padding: List[int], dilation: List[int]) -> torch.Tensor:
        """``(N, C_in, *spatial)`` -> ``(N, C_out, *spatial_out)`` in the compute dtype (see
        :mod:`monai_kan.layers.fused`); memory-lean custom op, TorchScript-able fallback."""
        dtype = x.dtype
        if not torch.jit.is_scripting():
            dtype = self._compute_dtype(x)
        x = x.to(dtype)
        bias = self.bias
        if bias is not None:
            bias = bias.to(dtype)
        shared = self.shared_spline_weight
        if shared is not None:
            return self._low_rank_conv(x, shared, bias, dtype, stride, padding, dilation)
        weight = self._fused_weight(dtype)
        if not torch.jit.is_scripting():
            if self._use_fast_path(x):
                return kan_convolution(x, weight, bias, self.knots, self.spline_order, self.uniform_grid,
                                       self.base_activation, stride, padding, dilation, self.groups)
        xb = x.to(basis_dtype(dtype))  # the basis is evaluated in >= float32 whatever the compute dtype
        base: Optional[torch.Tensor] = None
        if self.base_activation is not None:
            base = self.base_activation(xb)
        expanded = expand_bspline(xb, self.knots, self.spline_order, self.uniform_grid, base).to(dtype)
        return torch.convolution(expanded, weight, bias, stride, padding, dilation, False, [0] * len(stride),
                                 self.groups)

    def _low_rank_conv(self, x: torch.Tensor, shared: torch.Tensor, bias: Optional[torch.Tensor], dtype: torch.dtype,
                       stride: List[int], padding: List[int], dilation: List[int]) -> torch.Tensor:
        """The low-rank form as two convolutions: a 1x1 one with one group per input channel evaluates
        ``[act(x_c), phi_{c,1..r}(x_c)]`` from the basis expansion (memory-lean custom op when it applies), then the
        ``(b + r) * in // groups`` feature maps are mixed per output channel and kernel offset."""
        d = len(stride)
        ones, zeros = [1] * d, [0] * d
        wdtype = basis_dtype(self.spline_weight.dtype)
        a = shared.to(wdtype)  # (C, r, G + k)
        mix = self.spline_weight.to(wdtype).movedim(-1, 2)  # (out, in // groups, r, *kernel_size)
        if self.base_weight is not None:  # the base value passes through the first stage unchanged
            a = torch.cat([a.new_zeros([a.shape[0], a.shape[1], 1]), a], dim=2)
            a = torch.cat([torch.eye(1, a.shape[2], dtype=a.dtype, device=a.device).expand(a.shape[0], 1, -1), a], 1)
            mix = torch.cat([self.base_weight.to(wdtype).unsqueeze(2), mix], dim=2)
        w_feat = a.reshape([a.shape[0] * a.shape[1], a.shape[2]] + ones).to(dtype)
        w_mix = mix.flatten(1, 2).to(dtype).contiguous()
        feat: Optional[torch.Tensor] = None
        if not torch.jit.is_scripting():  # (TorchScript skips this block only when it is the whole condition)
            if self._use_fast_path(x):
                feat = kan_convolution(x, w_feat, None, self.knots, self.spline_order, self.uniform_grid,
                                       self.base_activation, ones, zeros, ones, self.in_channels)
        if feat is None:
            xb = x.to(basis_dtype(dtype))
            base: Optional[torch.Tensor] = None
            if self.base_activation is not None:
                base = self.base_activation(xb)
            expanded = expand_bspline(xb, self.knots, self.spline_order, self.uniform_grid, base).to(dtype)
            feat = torch.convolution(expanded, w_feat, None, ones, zeros, ones, False, zeros, self.in_channels)
        return torch.convolution(feat, w_mix, bias, stride, padding, dilation, False, zeros, self.groups)

    @torch.jit.unused
    def _compute_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The autocast dtype when autocast is on (as ``nn.Conv``: float64 inputs are not cast), else ``x.dtype``."""
        device = x.device.type
        if x.dtype != torch.float64 and torch.is_autocast_enabled(device):
            return torch.get_autocast_dtype(device)
        return x.dtype

    @torch.jit.unused
    def _use_fast_path(self, x: torch.Tensor) -> bool:
        # tracing/exporting: keep the plain graph so the outer tool sees ordinary ops (torch.compile sees the op)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return False
        return activation_name(self.base_activation) is not None  # learnable or unlisted activations: autograd

    def _apply(self, fn, recurse=True):
        knots = self.knots

        def convert(t):
            try:
                return fn(t)
            except RuntimeError:
                # `.to(memory_format=torch.channels_last)` converts every 5-D tensor and fails on the 2D layer's
                # (out, in, kh, kw, G + k) control points; they only feed `_fused_weight`, so convert a 4-D view
                # (device/dtype as asked) and keep their plain layout
                if t.dim() == 5 and t.shape == self.spline_weight.shape:
                    return fn(t.flatten(3)).reshape(t.shape)
                raise

        super()._apply(convert, recurse)
        if self.knots.dtype not in (torch.float32, torch.float64):
            # knots stay float32/float64 whatever the module's dtype: `.half()` would round them (a 0.4 knot
            # spacing becomes 0.40625 in bfloat16) and move every edge function
            self.knots = knots.to(device=self.knots.device,
                                  dtype=knots.dtype if knots.dtype == torch.float64 else torch.float32)
        if self.uniform_grid and self.knots.dtype == torch.float64 and knots.dtype != torch.float64:
            # knots made in float32 are uniform only to float32 precision; the closed-form basis assumes exact
            # spacing, so re-space them evenly between the same end knots after a cast to float64
            with torch.no_grad():
                n = self.knots.shape[1]
                first, last = self.knots[:, :1], self.knots[:, -1:]
                steps = torch.arange(n, dtype=torch.float64, device=self.knots.device) / (n - 1)
                self.knots.copy_(first + (last - first) * steps)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # transactional: a load that reports an error leaves this layer exactly as it was
        own = {**{k: v for k, v in self._parameters.items() if v is not None},
               **{k: v for k, v in self._buffers.items() if v is not None}}
        values = {k: v.detach().clone() for k, v in own.items()}
        grid_size, n_errors = self.grid_size, len(error_msgs)
        name = "spline_weight" if self.shared_spline_weight is None else "shared_spline_weight"
        knots, weight = state_dict.get(prefix + "knots"), state_dict.get(prefix + name)
        shared = state_dict.get(prefix + "shared_spline_weight")
        saved_rank = None if shared is None or shared.dim() != 3 else int(shared.shape[1])
        if prefix + "spline_weight" in state_dict and saved_rank != self.rank:
            error_msgs.append(f"{prefix}: the checkpoint holds a KAN layer with rank={saved_rank}, this layer has "
                              f"rank={self.rank} (build it with the checkpoint's `rank`).")
        if knots is not None and weight is not None and knots.dim() == 2 and knots.shape[1] != self.knots.shape[1]:
            n = knots.shape[1] - self.spline_order - 1
            expected = tuple(self.grid_weight.shape[:-1]) + (n,)
            if knots.shape[0] == self.in_channels and tuple(weight.shape) == expected:
                self.resize_grid(knots.shape[1])  # a checkpoint saved after grid extension (G -> G'): adopt its size
            elif weight.dim() >= 1 and knots.shape[1] - weight.shape[-1] - 1 != self.spline_order:
                error_msgs.append(
                    f"{prefix}knots {list(knots.shape)} and {prefix}{name} {list(weight.shape)} of the "
                    f"checkpoint are of spline_order {knots.shape[1] - weight.shape[-1] - 1}; this layer has "
                    f"spline_order={self.spline_order} (knots {list(self.knots.shape)}, {name} "
                    f"{list(self.grid_weight.shape)})."
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if len(error_msgs) > n_errors:
            with torch.no_grad():
                for k, v in own.items():
                    (self._parameters if k in self._parameters else self._buffers)[k] = v
                    v.copy_(values[k])
            self.grid_size = grid_size
        self.uniform_grid = is_uniform_knots(self.knots)

    def extra_repr(self) -> str:
        act = None if self.base_activation is None else type(self.base_activation).__name__
        return (f"grid_size={self.grid_size}, spline_order={self.spline_order}, grid_range={self.grid_range}, "
                f"base_activation={act}, scaler={self.spline_scaler is not None}, bias={self.bias is not None}"
                + ("" if self.rank is None else f", rank={self.rank}")
                + ("" if self._spline_init[0] == "default" else f", spline_init={self._spline_init[0]}"))

