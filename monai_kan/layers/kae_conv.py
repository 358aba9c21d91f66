"""KAE convolution: the convolutional analogue of the KAE polynomial layer (F. Yu et al., arXiv:2501.00420, eq. 3).

Every (output channel, input channel, kernel offset) edge carries a polynomial of order ``p`` without constant term,
and each output adds one constant:

    ``Y[q, c_out] = b_{c_out} + sum_{c_in} sum_{o} sum_{k=1..p} W_k[c_out, c_in, o] X[q * stride + o, c_in]^k``

Stacking the powers ``[X, X^2, ..., X^p]`` along the channel axis turns this into one ordinary convolution with
``p`` times the input channels, so cost and memory are those of a convolution ``p`` times as wide. With ``p = 1`` it
is exactly ``nn.Conv`` (the plain twin used to judge what the polynomial edges add).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv
from monai.utils import ensure_tuple_rep

from monai_kan.layers.metatensor import is_meta_tensor, plain_tensor, with_meta_of
from monai_kan.utils import check_positive_int, check_spatial_input

__all__ = ["KAEConv"]


class KAEConv(nn.Module):
    """Polynomial-edge (KAE) convolution, one class for 1D, 2D and 3D.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels ``C_in``.
        out_channels: number of output channels ``C_out``.
        kernel_size: convolution kernel size. Defaults to 3.
        stride: convolution stride. Defaults to 1.
        padding: padding per side; ``None`` (default) keeps the size at stride 1 (``kernel_size // 2``).
        order: polynomial order ``p >= 1`` of every edge. Defaults to 3.
        bias: learnable constant per output channel. Defaults to True.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (as ``nn.Conv``). Defaults to
            ``"zeros"``: padded positions contribute nothing to any power.

    Input ``(N, C_in, *spatial)``, output ``(N, C_out, *spatial_out)`` with the usual convolution arithmetic. Inputs
    should be bounded (e.g. intensities in ``[0, 1]`` or the output of a bounded activation): ``x^p`` grows fast.

    Initialisation: ``W_1`` as ``nn.Conv`` (Kaiming-uniform), the higher powers ``W_k`` (``k >= 2``) at a tenth of
    that scale, so the layer starts close to its plain convolution and learns its nonlinearity.

    Attributes:
        conv: the ``nn.Conv`` over the stacked powers; its ``weight`` is ``(C_out, C_in * p, *kernel_size)`` with
            ``weight[:, (k - 1) * C_in : k * C_in]`` = ``W_k``.

    Raises:
        ValueError: ``spatial_dims`` not 1, 2 or 3, or a size or ``order`` that is not a positive integer.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[Sequence[int], int] = 3,
        stride: Union[Sequence[int], int] = 1,
        padding: Union[Sequence[int], int, None] = None,
        order: int = 3,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 1, 2 or 3, got {spatial_dims!r}.")
        check_positive_int(in_channels=in_channels, out_channels=out_channels, order=order)
        ks = ensure_tuple_rep(kernel_size, spatial_dims)
        pad = tuple(k // 2 for k in ks) if padding is None else ensure_tuple_rep(padding, spatial_dims)
        self.spatial_dims, self.order = spatial_dims, order
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv = Conv[Conv.CONV, spatial_dims](
            in_channels * order, out_channels, ks, stride=stride, padding=pad, bias=bias, padding_mode=padding_mode
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``W_1`` and the bias as ``nn.Conv`` over ``C_in`` inputs, ``W_k`` (``k >= 2``) ten times smaller."""
        w = self.conv.weight
        fan_in = self.in_channels * math.prod(w.shape[2:])
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            nn.init.kaiming_uniform_(w[:, : self.in_channels], a=math.sqrt(5))
            w[:, self.in_channels :].uniform_(-0.1 * bound, 0.1 * bound)
            if self.conv.bias is not None:
                self.conv.bias.uniform_(-bound, bound)

    def coefficients(self) -> torch.Tensor:
        """Edge polynomial coefficients ``(C_out, C_in, *kernel_size, p)``: ``[..., k - 1]`` multiplies ``x^k``."""
        w = self.conv.weight
        return w.view(w.shape[0], self.order, self.in_channels, *w.shape[2:]).movedim(1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and is_meta_tensor(x):
            return with_meta_of(self._forward(plain_tensor(x)), x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spatial_input(x, self.spatial_dims, self.in_channels, "KAEConv")
        powers = [x]
        for _ in range(1, self.order):
            powers.append(powers[-1] * x)  # (N, C_in, *spatial) each; repeated products, exact for x < 0
        return self.conv(torch.cat(powers, dim=1) if self.order > 1 else x)  # (N, C_in * p, *spatial) -> conv

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, {self.in_channels}, {self.out_channels}, order={self.order}"
