"""B-spline KAN linear layer: ``y_j = sum_i F_{j,i}(x_i)`` with one learnable univariate function per edge."""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn

from monai_kan.layers.bspline_kan import BSplineKANBase
from monai_kan.layers.fused import activation_name, kan_linear
from monai_kan.layers.metatensor import is_meta_tensor, plain_tensor, with_meta_of
from monai_kan.utils import check_floating_input

__all__ = ["KANLinear"]


class KANLinear(BSplineKANBase):
    """KAN layer with B-spline edge functions (efficient-kan conventions).

    Args:
        in_features: size of the last input dimension.
        out_features: size of the last output dimension.
        grid_size: number of grid intervals ``G``. Defaults to 5.
        spline_order: B-spline order ``k``. Defaults to 3.
        grid_range: interval the grid covers. Defaults to (-1, 1).
        base_activation: residual base branch (MONAI activation name, tuple or module); ``None`` gives the pure
            B-spline KAN: only B-spline edges, no base branch. Defaults to ``"silu"``.
        bias: learnable output bias. Defaults to False (the KAN of Liu et al., arXiv:2404.19756, has no biases).
        standalone_scale_spline: separate learnable scale per edge multiplying its control points. Defaults to True.
        scale_noise: amplitude of the control-point noise at initialisation. Defaults to 0.1.

    Input ``(..., in_features)``, output ``(..., out_features)``. ``in_features``/``out_features`` are the base
    class's ``in_channels``/``out_channels`` under their ``nn.Linear`` names (one stored value, so tools that resize
    a layer, e.g. pruning, change both).

    Raises:
        ValueError: a size is not a positive integer, ``grid_size < 1``, ``spline_order < 0``, an empty or reversed
            ``grid_range``, or an unknown ``base_activation``.

    In eager PyTorch the rows go through :func:`~monai_kan.layers.fused.kan_linear`: one expansion kernel and one
    matrix product forward (the expansion kept for backward up to
    :data:`~monai_kan.layers.fused.LINEAR_SAVED_EXPANSION_BYTES`, else recomputed). Under ``torch.compile``,
    tracing, ONNX export and TorchScript, and for empty inputs, the contraction runs as a kernel-1 convolution over
    all positions, the custom op of :class:`~monai_kan.layers.KANConv` (same values, same precision policy).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        base_activation: Union[str, tuple, nn.Module, None] = "silu",
        bias: bool = False,
        standalone_scale_spline: bool = True,
        scale_noise: float = 0.1,
    ) -> None:
        super().__init__(
            in_features, out_features, (), 1, bias, grid_size, spline_order, grid_range, base_activation,
            standalone_scale_spline, scale_noise,
        )

    @property
    def in_features(self) -> int:
        return self.in_channels

    @property
    def out_features(self) -> int:
        return self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and is_meta_tensor(x):
            return with_meta_of(self._forward(plain_tensor(x)), x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_channels:
            raise ValueError(f"KANLinear expected input of shape (..., {self.in_channels}), got {list(x.shape)}.")
        check_floating_input(x, "KANLinear")
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_channels)  # (M, in)
        if not torch.jit.is_scripting():
            if self._use_lean_path(rows):
                return self._lean_forward(rows).reshape(list(lead) + [self.out_channels])
        if rows.shape[0] == 0:  # no positions: a length-0 convolution is an error, a batch of 0 is not
            y = self._kan_conv(rows.unsqueeze(-1), [1], [0], [1]).squeeze(-1)  # (0, out)
        else:
            columns = rows.t().contiguous().unsqueeze(0)  # (1, in, M): positions as length
            y = self._kan_conv(columns, [1], [0], [1]).squeeze(0).t()  # (M, out)
        return y.reshape(list(lead) + [self.out_channels])

    @torch.jit.unused
    def _use_lean_path(self, rows: torch.Tensor) -> bool:
        # torch.compile, tracing and export see the custom op (one opaque node); the low-rank form (if the base class
        # has one) and learnable or unlisted base activations keep the base class's path
        if rows.shape[0] == 0 or torch.compiler.is_compiling() or not self._use_fast_path(rows):
            return False
        return getattr(self, "rank", None) is None and activation_name(self.base_activation) is not None

    @torch.jit.unused
    def _lean_forward(self, rows: torch.Tensor) -> torch.Tensor:
        dtype = self._compute_dtype(rows)
        weight = self._fused_weight(dtype).squeeze(-1)  # (out, in * (b + G + k))
        bias = None if self.bias is None else self.bias.to(dtype)
        return kan_linear(rows.to(dtype), weight, bias, self.knots, self.spline_order, self.uniform_grid,
                          self.base_activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_channels}, out_features={self.out_channels}, " + super().extra_repr()
