"""Shared state of B-spline KAN layers: knots, control points, base branch, and their introspection.

Every edge ``(c_out, c_in[, kernel offset])`` carries a univariate function

    ``F(x) = w_base * base_activation(x) + sum_i c_i B_{i,k}(x)``

with learnable control points ``c_i`` (``spline_weight``, optionally times a per-edge ``spline_scaler``) on the knots
of input channel ``c_in``. With ``base_activation=None`` the edge is the pure B-spline of the KAN
(Liu et al., arXiv:2404.19756, eq. 2.10 without the residual) and KM-UNet formulations.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.layers.utils import get_act_layer

from monai_kan.basis.bspline import bspline_basis, is_uniform_knots, make_knots, num_basis
from monai_kan.layers.fused import activation_name, basis_dtype, expand_bspline, kan_convolution
from monai_kan.utils import check_positive_int

__all__ = ["BSplineKANBase", "get_base_activation", "sample_rows"]


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
        spline_weight: ``(out, in // groups, *kernel_size, G + k)`` control points (before ``spline_scaler``).
        spline_scaler: ``(out, in // groups, *kernel_size)`` per-edge scale, or ``None``.
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
    ) -> None:
        super().__init__()
        check_positive_int(in_channels=in_channels, out_channels=out_channels, groups=groups)
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
        self.spline_weight = nn.Parameter(torch.empty(edge_shape + (n,)))
        self.spline_scaler = nn.Parameter(torch.empty(edge_shape)) if standalone_scale_spline else None
        self.base_weight = nn.Parameter(torch.empty(edge_shape)) if self.base_activation is not None else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale_noise = float(scale_noise)
        self.reset_parameters()

    @property
    def n_basis(self) -> int:
        """Number of basis functions (control points) per edge, ``G + k``."""
        return self.knots.shape[1] - self.spline_order - 1

    def reset_parameters(self) -> None:
        """Kaiming-uniform scale per edge; a pure-spline edge starts as the line ``w * x`` (exact on ``grid_range``,
        since control points at the Greville abscissae reproduce ``x``) plus small noise, so a pure KAN starts as
        its linear counterpart and learns its nonlinearity; with a base branch the splines start as small noise
        (efficient-kan's scheme) and the base branch carries the signal."""
        fan_in = self.spline_weight[0].numel() // self.spline_weight.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        noise = (torch.rand_like(self.spline_weight) * 2 - 1) * self.scale_noise / self.grid_size
        with torch.no_grad():
            edge_weight = torch.empty(self.spline_weight.shape[:-1]).uniform_(-bound, bound)
            if self.base_weight is not None:
                self.base_weight.copy_(edge_weight)
                edge_weight = torch.empty_like(edge_weight).uniform_(-bound, bound)
                shape = noise
            else:
                k = self.spline_order
                greville = self.knots[0].unfold(0, k, 1)[1 : self.n_basis + 1].mean(-1) if k > 0 else (
                    0.5 * (self.knots[0, :-1] + self.knots[0, 1:]))
                shape = greville + noise
            if self.spline_scaler is not None:
                self.spline_scaler.copy_(edge_weight)
                self.spline_weight.copy_(shape)
            else:
                self.spline_weight.copy_(shape * edge_weight.unsqueeze(-1))
            if self.bias is not None:
                self.bias.zero_()

    def coefficients(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Effective control points ``(out, in // groups, *kernel_size, G + k)`` with ``spline_scaler`` folded in,
        computed in ``dtype`` (default: the parameters' dtype)."""
        w = self.spline_weight if dtype is None else self.spline_weight.to(dtype)
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

    def resize_grid(self, n_knots: int) -> nn.Parameter:
        """Give the layer ``n_knots`` knots per channel: new (uninitialised) ``knots`` and ``spline_weight`` of the
        matching basis size, ``grid_size`` updated; the caller fills them. Returns the former ``spline_weight``
        (an optimizer holding it must be told: :func:`~monai_kan.tools.grid.replace_optimizer_params`).

        Raises:
            ValueError: when ``n_knots`` leaves no basis function (``< spline_order + 2``).
        """
        n = n_knots - self.spline_order - 1
        if n < 1:
            raise ValueError(f"`n_knots` must be at least spline_order + 2 = {self.spline_order + 2}, got {n_knots}.")
        old = self.spline_weight
        self.knots = self.knots.new_empty((self.in_channels, n_knots))
        self.spline_weight = nn.Parameter(old.new_empty(old.shape[:-1] + (n,)), requires_grad=old.requires_grad)
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
        weight = self._fused_weight(dtype)
        bias = self.bias
        if bias is not None:
            bias = bias.to(dtype)
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
        knots, weight = state_dict.get(prefix + "knots"), state_dict.get(prefix + "spline_weight")
        if knots is not None and weight is not None and knots.dim() == 2 and knots.shape[1] != self.knots.shape[1]:
            n = knots.shape[1] - self.spline_order - 1
            expected = tuple(self.spline_weight.shape[:-1]) + (n,)
            if knots.shape[0] == self.in_channels and tuple(weight.shape) == expected:
                self.resize_grid(knots.shape[1])  # a checkpoint saved after grid extension (G -> G'): adopt its size
            elif weight.dim() >= 1 and knots.shape[1] - weight.shape[-1] - 1 != self.spline_order:
                error_msgs.append(
                    f"{prefix}knots {list(knots.shape)} and {prefix}spline_weight {list(weight.shape)} of the "
                    f"checkpoint are of spline_order {knots.shape[1] - weight.shape[-1] - 1}; this layer has "
                    f"spline_order={self.spline_order} (knots {list(self.knots.shape)}, spline_weight "
                    f"{list(self.spline_weight.shape)})."
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
                f"base_activation={act}, scaler={self.spline_scaler is not None}, bias={self.bias is not None}")

