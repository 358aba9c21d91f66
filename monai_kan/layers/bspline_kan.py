"""Shared state of B-spline KAN layers: knots, control points, base branch, and their introspection.

Every edge ``(c_out, c_in[, kernel offset])`` carries a univariate function

    ``F(x) = w_base * base_activation(x) + sum_i c_i B_{i,k}(x)``

with learnable control points ``c_i`` (``spline_weight``, optionally times a per-edge ``spline_scaler``) on the knots
of input channel ``c_in``. With ``base_activation=None`` the edge is the pure B-spline of the KAN/KM-UNet seed.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.layers.utils import get_act_layer

from monai_kan.basis.bspline import is_uniform_knots, make_knots, num_basis
from monai_kan.layers.fused import expand_bspline, kan_convolution

__all__ = ["BSplineKANBase"]


def _resolve_activation(base_activation: Union[str, tuple, nn.Module, None]) -> Optional[nn.Module]:
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


class BSplineKANBase(nn.Module):
    """Parameters and introspection shared by :class:`~monai_kan.layers.KANLinear` and
    :class:`~monai_kan.layers.KANConv`; ``kernel_size`` is ``()`` for the linear layer.

    Attributes:
        knots: buffer ``(in_channels, G + 2k + 1)``, the knot vector of each input channel.
        spline_weight: ``(out, in // groups, *kernel_size, G + k)`` control points (before ``spline_scaler``).
        spline_scaler: ``(out, in // groups, *kernel_size)`` per-edge scale, or ``None``.
        base_weight: ``(out, in // groups, *kernel_size)`` weight of the base branch, or ``None``.
        bias: ``(out,)`` or ``None``.
    """

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
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
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
        self.register_buffer("knots", make_knots(grid_size, spline_order, grid_range, channels=in_channels))
        self.uniform_grid = True
        self.base_activation = _resolve_activation(base_activation)

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

    def coefficients(self) -> torch.Tensor:
        """Effective control points ``(out, in // groups, *kernel_size, G + k)`` with ``spline_scaler`` folded in."""
        if self.spline_scaler is not None:
            return self.spline_weight * self.spline_scaler.unsqueeze(-1)
        return self.spline_weight

    def _fused_weight(self) -> torch.Tensor:
        """Convolution weight ``(out, in // groups * (b + G + k), *kernel_size)`` laid out as the expansion."""
        coef = self.coefficients().movedim(-1, 2)  # (out, in // groups, G + k, *kernel_size)
        if self.base_weight is not None:
            coef = torch.cat([self.base_weight.unsqueeze(2), coef], dim=2)
        return coef.flatten(1, 2)

    def _kan_conv(
        self, x: torch.Tensor, weight: torch.Tensor, stride: List[int], padding: List[int], dilation: List[int]
    ) -> torch.Tensor:
        """``(N, C_in, *spatial)`` -> ``(N, C_out, *spatial_out)``; memory-lean path, TorchScript-able fallback."""
        if not torch.jit.is_scripting():
            if self._use_fast_path(x):
                return kan_convolution(
                    x, weight, self.bias, self.knots, self.spline_order, self.uniform_grid, self.base_activation,
                    stride, padding, dilation, self.groups,
                )
        base: Optional[torch.Tensor] = None
        if self.base_activation is not None:
            base = self.base_activation(x)
        expanded = expand_bspline(x, self.knots, self.spline_order, self.uniform_grid, base)
        return torch.convolution(expanded, weight, self.bias, stride, padding, dilation, False, [0] * len(stride),
                                 self.groups)

    @torch.jit.unused
    def _use_fast_path(self, x: torch.Tensor) -> bool:
        # tracing/exporting/compiling a whole model: keep the plain graph so the outer tool sees ordinary ops
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            return False
        if torch.is_autocast_enabled(x.device.type):  # mixed precision: let autograd handle the casts
            return False
        act = self.base_activation
        if act is not None and any(True for _ in act.parameters()):
            return False  # a learnable activation's gradient is left to autograd
        return True

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.uniform_grid and self.knots.dtype == torch.float64:
            # knots made in float32 are uniform only to float32 precision; the closed-form basis assumes exact
            # spacing, so re-space them evenly between the same end knots after a cast to float64
            with torch.no_grad():
                n = self.knots.shape[1]
                first, last = self.knots[:, :1], self.knots[:, -1:]
                steps = torch.arange(n, dtype=torch.float64, device=self.knots.device) / (n - 1)
                self.knots.copy_(first + (last - first) * steps)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        knots = state_dict.get(prefix + "knots")
        if knots is not None and knots.dim() == 2 and knots.shape[0] == self.knots.shape[0] \
                and knots.shape[1] != self.knots.shape[1]:
            # a checkpoint saved after grid extension (G -> G'): adopt its grid size before copying values
            n = knots.shape[1] - self.spline_order - 1
            self.knots = self.knots.new_empty(knots.shape)
            self.spline_weight = nn.Parameter(self.spline_weight.new_empty(self.spline_weight.shape[:-1] + (n,)))
            self.grid_size = n - self.spline_order
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.uniform_grid = is_uniform_knots(self.knots)

    def extra_repr(self) -> str:
        act = None if self.base_activation is None else type(self.base_activation).__name__
        return (f"grid_size={self.grid_size}, spline_order={self.spline_order}, grid_range={self.grid_range}, "
                f"base_activation={act}, scaler={self.spline_scaler is not None}, bias={self.bias is not None}")

