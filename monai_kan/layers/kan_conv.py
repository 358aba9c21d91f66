"""KAN convolution for 1D, 2D and 3D: every (input channel, output channel, kernel offset) edge is a learnable
univariate B-spline function (the KM-UNet formulation: V. Kumar, *KM-UNet: Combining UNet and KANs for Image
Segmentation*, 2025, "KAN Convolution: Mathematical Formulation"):

    ``Y[p, c_out] = sum_{c_in} sum_{o in kernel} F_{o, c_in, c_out}(X[p * stride + o * dilation, c_in])``

The basis is evaluated once per input element and a standard convolution contracts it with the control points, so
the cost is one convolution with ``(G + k + 1)`` times the input channels, not ``K^d`` spline evaluations per pixel.

With ``rank=r`` the layer is the low-rank (separable) form: each input channel has ``r`` learnable B-spline functions
``phi_{c,s}`` shared by all outputs and kernel offsets, and ``F_{o,c_in,c_out}(x) = w * act(x) + sum_s
m_{o,c_in,c_out,s} phi_{c_in,s}(x)``; it runs as a cheap 1x1 evaluation of the ``phi`` followed by one convolution
with ``(r + 1)`` times the input channels (the "low-rank KANs" of the KM-UNet slides' future work).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import ensure_tuple_rep

from monai_kan.layers.bspline_kan import BSplineKANBase
from monai_kan.layers.metatensor import is_meta_tensor, plain_tensor, with_meta_of
from monai_kan.utils import check_spatial_input

__all__ = ["KANConv"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class KANConv(BSplineKANBase):
    """B-spline KAN convolution, one class for 1D, 2D and 3D.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels ``C_in``.
        out_channels: number of output channels ``C_out``.
        kernel_size: convolution kernel size (int or one per spatial dim). Defaults to 3.
        stride: convolution stride. Defaults to 1.
        padding: padding per side; ``None`` (default) keeps the size at stride 1: ``(kernel_size - 1) * dilation // 2``.
        dilation: kernel dilation. Defaults to 1.
        groups: channel groups, as in ``torch.nn.Conv``. Defaults to 1.
        bias: learnable bias per output channel. Defaults to False: a B-spline already represents constants.
        grid_size: number of grid intervals ``G`` on ``grid_range``. Defaults to 5.
        spline_order: B-spline order ``k`` (3 = cubic). Defaults to 3.
        grid_range: interval the grid covers; inputs should lie in it (see Note). Defaults to (-1, 1).
        base_activation: residual base branch ``w * act(x)`` added to each edge function (efficient-kan style), as a
            MONAI activation name, ``(name, args)`` tuple or module; ``None`` gives the pure B-spline edge of
            the KM-UNet formulation.
            Defaults to ``"silu"``.
        standalone_scale_spline: learn a separate scale per edge that multiplies its control points. Defaults to True.
        scale_noise: amplitude of the control-point noise at initialisation. Defaults to 0.1.
        padding_mode: ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or ``"circular"``.
        rank: ``None`` (default) for the full KAN convolution (``G + k`` control points per edge); ``r >= 1`` for the
            low-rank form: ``r`` shared B-spline functions per input channel (``shared_spline_weight``
            ``(C_in, r, G + k)``) mixed per output channel and kernel offset (``spline_weight``
            ``(C_out, C_in // groups, *kernel_size, r)``); about ``r + 1`` plain convolutions of cost.
            ``standalone_scale_spline`` does not apply (the mixing weights scale each edge).
        spline_init: control-point initialisation: ``None`` (default: small noise with a base branch, the line ``x``
            without), ``"noise"``, ``"zero"``, ``"linear"``, or an activation (e.g. ``"silu"``) fitted by least
            squares; see :meth:`~monai_kan.layers.BSplineKANBase.reset_parameters`.

    Input ``(N, C_in, *spatial)``, output ``(N, C_out, *spatial_out)`` with the usual convolution arithmetic.

    Note:
        Borders: with ``padding_mode="zeros"`` the padded positions contribute nothing, i.e. the sum of the formula
        runs over the kernel offsets that fall inside the input (the expansion is zero-padded, which is not the same
        as evaluating ``F(0)``). The other modes pad the input itself, so every edge function sees a real value.

        Range: B-splines vanish outside ``[t_0, t_{G+2k}]`` (``grid_range`` widened by ``k`` intervals each side),
        so there only the base branch acts. Normalise inputs (as :class:`~monai_kan.networks.KMUNet` does).

        NaN in the input propagates to every output whose receptive field contains it. ``+-Inf`` gives zero spline
        terms, but the base branch turns it into ``+-Inf`` or NaN.

    Raises:
        ValueError: ``spatial_dims`` not 1, 2 or 3; a size that is not a positive integer; ``groups`` that
            does not divide both channel counts; ``kernel_size``/``stride``/``dilation``/``padding`` of the wrong
            length or range; an unknown ``padding_mode`` or ``base_activation``; ``grid_size < 1``,
            ``spline_order < 0`` or a reversed ``grid_range``; ``rank`` not None or a positive integer; an unknown
            ``spline_init``.
    """

    channel_dim = 1  # inputs are (N, C, *spatial)

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[Sequence[int], int] = 3,
        stride: Union[Sequence[int], int] = 1,
        padding: Union[Sequence[int], int, None] = None,
        dilation: Union[Sequence[int], int] = 1,
        groups: int = 1,
        bias: bool = False,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        base_activation: Union[str, tuple, nn.Module, None] = "silu",
        standalone_scale_spline: bool = True,
        scale_noise: float = 0.1,
        padding_mode: str = "zeros",
        rank: Optional[int] = None,
        spline_init: Union[str, tuple, nn.Module, None] = None,
    ) -> None:
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"`spatial_dims` must be 1, 2 or 3, got {spatial_dims!r}.")
        ks = _int_tuple("kernel_size", kernel_size, spatial_dims, 1)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"`padding_mode` must be one of {_PADDING_MODES}, got {padding_mode!r}.")
        super().__init__(
            in_channels, out_channels, ks, groups, bias, grid_size, spline_order, grid_range, base_activation,
            standalone_scale_spline, scale_noise, rank, spline_init,
        )
        self.spatial_dims = spatial_dims
        self.kernel_size = ks
        self.stride: List[int] = list(_int_tuple("stride", stride, spatial_dims, 1))
        self.dilation: List[int] = list(_int_tuple("dilation", dilation, spatial_dims, 1))
        if padding is None:
            padding = tuple((k - 1) * d // 2 for k, d in zip(ks, self.dilation))
        self.padding: List[int] = list(_int_tuple("padding", padding, spatial_dims, 0))
        self.padding_mode = padding_mode
        # F.pad wants (last dim left, last dim right, ..., first dim left, first dim right)
        self._pad_pairs: List[int] = [p for p in reversed(self.padding) for _ in range(2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and is_meta_tensor(x):
            return with_meta_of(self._forward(plain_tensor(x)), x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spatial_input(x, self.spatial_dims, self.in_channels, "KANConv")
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._pad_pairs, mode=self.padding_mode)
            padding = [0] * self.spatial_dims
        return self._kan_conv(x, self.stride, padding, self.dilation)

    def extra_repr(self) -> str:
        return (f"spatial_dims={self.spatial_dims}, {self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={tuple(self.stride)}, padding={tuple(self.padding)}, "
                f"dilation={tuple(self.dilation)}, groups={self.groups}, padding_mode={self.padding_mode}, "
                + super().extra_repr())


def _int_tuple(name: str, value, dims: int, minimum: int) -> Tuple[int, ...]:
    out = ensure_tuple_rep(value, dims)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in out):
        raise ValueError(f"`{name}` must be an int >= {minimum} or {dims} of them, got {value!r}.")
    return tuple(int(v) for v in out)


