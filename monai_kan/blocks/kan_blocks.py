"""Building blocks of KAN convolutional networks: ``norm -> KANConv -> dropout`` and its residual form.

The normalisation comes *before* each KAN convolution: B-splines vanish outside their knots, so every KAN conv must
see inputs in (or near) ``grid_range``. There is no nodal activation: the nonlinearity lives on the edges.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Dropout
from monai.networks.layers.utils import get_norm_layer
from monai.utils import ensure_tuple_rep

from monai_kan.layers.bspline_kan import get_base_activation
from monai_kan.layers.kan_conv import KANConv

__all__ = ["KANConvBlock", "KANResidualUnit", "CONV_TYPES", "make_conv"]

CONV_TYPES = ("kan", "standard")


def make_conv(
    conv_type: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Union[Sequence[int], int] = 3,
    strides: Union[Sequence[int], int] = 1,
    bias: bool = False,
    kan_kwargs: Optional[Dict[str, Any]] = None,
) -> nn.Module:
    """A :class:`~monai_kan.layers.KANConv`, or its ablation twin: the same convolution without the B-spline term.

    Args:
        conv_type: ``"kan"`` for a KAN convolution; ``"standard"`` for ``base_activation -> nn.Conv`` with the
            same channels, kernel, stride and padding (the KAN edge ``w * act(x) + spline(x)`` with its spline
            removed, SiLU unless ``kan_kwargs`` names another ``base_activation``).
        spatial_dims, in_channels, out_channels, kernel_size, strides, bias: as ``nn.Conv``.
        kan_kwargs: further :class:`~monai_kan.layers.KANConv` arguments; for ``"standard"`` only
            ``base_activation`` is used.

    Raises:
        ValueError: ``conv_type`` not in :data:`CONV_TYPES`, or ``"standard"`` with ``base_activation=None`` (the
            twin would be linear).
    """
    kan_kwargs = dict(kan_kwargs or {})
    if conv_type == "kan":
        return KANConv(spatial_dims, in_channels, out_channels, kernel_size, stride=strides, bias=bias, **kan_kwargs)
    if conv_type != "standard":
        raise ValueError(f"`conv_type` must be one of {CONV_TYPES}, got {conv_type!r}.")
    act = kan_kwargs.get("base_activation", "silu")
    if act is None:
        raise ValueError("`conv_type='standard'` keeps only the base branch `act(x)` of each KAN edge; "
                         "`base_activation=None` would make the network linear.")
    ks = ensure_tuple_rep(kernel_size, spatial_dims)
    conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, ks, stride=strides,
                                         padding=tuple((k - 1) // 2 for k in ks), bias=bias)
    return nn.Sequential(get_base_activation(act), conv)


class KANConvBlock(nn.Sequential):
    """``norm -> KANConv -> dropout``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels.
        strides: stride of the KAN convolution. Defaults to 1.
        kernel_size: kernel size. Defaults to 3.
        norm: MONAI normalisation name or ``(name, args)`` applied to the input; ``""`` for none. Defaults to
            instance norm.
        dropout: dropout ratio after the convolution. Defaults to 0.
        kan_kwargs: further :class:`~monai_kan.layers.KANConv` arguments (``grid_size``, ``spline_order``,
            ``grid_range``, ``base_activation``, ...).
        conv_type: ``"kan"`` (default) or ``"standard"``, the ablation twin (see :func:`make_conv`).

    Input ``(N, in_channels, *spatial)``, output ``(N, out_channels, *spatial / strides)``.

    Raises:
        ValueError: from :func:`make_conv` (unknown ``conv_type``) and :class:`~monai_kan.layers.KANConv`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: Union[Sequence[int], int] = 1,
        kernel_size: Union[Sequence[int], int] = 3,
        norm: Union[Tuple, str] = "instance",
        dropout: float = 0.0,
        kan_kwargs: Optional[Dict[str, Any]] = None,
        conv_type: str = "kan",
    ) -> None:
        super().__init__()
        self.add_module("norm", get_norm_layer(norm, spatial_dims, in_channels) if norm else nn.Identity())
        self.add_module("conv", make_conv(conv_type, spatial_dims, in_channels, out_channels, kernel_size, strides,
                                          kan_kwargs=kan_kwargs))
        if dropout:
            self.add_module("dropout", Dropout[Dropout.DROPOUT, spatial_dims](dropout))


class KANResidualUnit(nn.Module):
    """``subunits`` :class:`KANConvBlock` s (the first strided) plus a residual path.

    The residual path is the identity when shapes match, else a plain strided 1x1 convolution (a linear projection,
    as in MONAI's ``ResidualUnit``).

    Args:
        spatial_dims, in_channels, out_channels, strides, kernel_size, norm, dropout, kan_kwargs, conv_type: as
            :class:`KANConvBlock`.
        subunits: number of KAN conv blocks in the unit (>= 1). Defaults to 2.

    Raises:
        ValueError: ``subunits < 1``, or from :class:`KANConvBlock`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: Union[Sequence[int], int] = 1,
        kernel_size: Union[Sequence[int], int] = 3,
        subunits: int = 2,
        norm: Union[Tuple, str] = "instance",
        dropout: float = 0.0,
        kan_kwargs: Optional[Dict[str, Any]] = None,
        conv_type: str = "kan",
    ) -> None:
        super().__init__()
        if subunits < 1:
            raise ValueError(f"`subunits` must be >= 1, got {subunits}.")
        blocks = []
        for i in range(subunits):
            blocks.append(
                KANConvBlock(spatial_dims, in_channels if i == 0 else out_channels, out_channels,
                             strides if i == 0 else 1, kernel_size, norm, dropout, kan_kwargs, conv_type)
            )
        self.conv = nn.Sequential(*blocks)
        needs_projection = in_channels != out_channels or any(s != 1 for s in ensure_tuple_rep(strides, spatial_dims))
        self.residual: nn.Module = (
            Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=1, stride=strides)
            if needs_projection else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.residual(x)

