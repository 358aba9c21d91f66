"""KM-UNet: a U-Net whose convolutions are B-spline KAN convolutions (V. Kumar, *KM-UNet: Combining UNet and KANs for
Image Segmentation*, IIT Dharwad, 2025)."""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_norm_layer
from monai.utils import ensure_tuple_rep

from monai_kan.blocks.kan_blocks import CONV_TYPES, KANConvBlock, KANResidualUnit, make_conv
from monai_kan.layers.metatensor import is_meta_tensor, plain_tensor, with_meta_of
from monai_kan.utils import check_positive_int, check_spatial_input

__all__ = ["KMUNet", "KMUnet"]


class KMUNet(nn.Module):
    """U-Net with KAN convolutions for 1D/2D/3D segmentation, configured like :class:`monai.networks.nets.UNet`.

    Encoder: one KAN conv block per level (or a residual unit of ``num_res_units`` blocks); every level after the
    first starts with a strided KAN convolution (``strides``). Decoder: upsampling (learnable transposed convolution
    or interpolation), concatenation with the encoder features of the same resolution, a KAN conv block. Head:
    a 1x1 KAN convolution to ``out_channels`` logits (apply softmax/sigmoid in the loss or post-processing).

    Each KAN conv is preceded by a normalisation layer (``norm``, instance norm by default): B-splines vanish
    outside their knots, so the inputs of every edge function are standardised per channel (zero mean, unit
    variance); with the default ``grid_range=(-1, 1)``, ``G = 5``, ``k = 3`` the knots span ``[-2.2, 2.2]`` and the
    SiLU base branch carries the tails. There are no nodal activations: the nonlinearity is on the edges.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels (classes).
        channels: channels per level, top first; at least 2 levels.
        strides: downsampling stride between consecutive levels; ``len(channels) - 1`` values.
        kernel_size: KAN convolution kernel size (odd). Defaults to 3.
        up_kernel_size: transposed-convolution kernel size of the upsampling (odd). Defaults to 3.
        num_res_units: 0 for one KAN conv block per level, else residual units of that many blocks. Defaults to 0.
        norm: MONAI normalisation before every KAN conv. Defaults to instance norm.
        dropout: dropout ratio after each KAN conv block. Defaults to 0.
        grid_size, spline_order, grid_range, base_activation, standalone_scale_spline: passed to every
            :class:`~monai_kan.layers.KANConv`.
        upsample: ``"deconv"`` (learnable transposed conv, default) or ``"nontrainable"`` (interpolation; all
            learning then sits in KAN convolutions).
        conv_type: ``"kan"`` (default), or ``"standard"`` for the ablation twin: the same topology with every KAN
            convolution replaced by ``base_activation -> nn.Conv`` of the same channels, kernel and stride (each
            KAN edge with its B-spline term removed; see :func:`~monai_kan.blocks.make_conv`). Comparing the two
            isolates what the splines add.
        rank: ``None`` (default) for full KAN convolutions; ``r >= 1`` for low-rank ones (``r`` shared B-spline
            functions per input channel, mixed per output channel and kernel offset: about ``r + 1`` plain
            convolutions of cost instead of ``G + k + 1``), see :class:`~monai_kan.layers.KANConv`.
        spline_init: control-point initialisation of every KAN convolution (``None``, ``"noise"``, ``"zero"``,
            ``"linear"`` or an activation to fit), see :meth:`~monai_kan.layers.BSplineKANBase.reset_parameters`.

    ``rank`` and ``spline_init`` (like the grid arguments) have no effect with ``conv_type="standard"``.

    ``MetaTensor`` inputs run on the plain tensor (no ``__torch_function__`` overhead, no recompiles) and the output
    is a ``MetaTensor`` with the input's metadata, as MONAI's own networks return.

    Input ``(N, in_channels, *spatial)`` with every spatial size divisible by ``prod(strides)``; output
    ``(N, out_channels, *spatial)``.

    Example::

        net = KMUNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(8, 16, 32), strides=(2, 2))

    Raises:
        ValueError: ``spatial_dims`` not 1, 2 or 3; fewer than 2 ``channels``; ``strides`` of the wrong
            length or not positive; even ``kernel_size``/``up_kernel_size`` or of the wrong length;
            ``num_res_units < 0``; an unknown ``conv_type`` or ``upsample``; or from
            :class:`~monai_kan.layers.KANConv` (grid arguments, ``rank``, ``spline_init``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        kernel_size: Union[Sequence[int], int] = 3,
        up_kernel_size: Union[Sequence[int], int] = 3,
        num_res_units: int = 0,
        norm: Union[Tuple, str] = "instance",
        dropout: float = 0.0,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        base_activation: Union[str, tuple, nn.Module, None] = "silu",
        standalone_scale_spline: bool = True,
        upsample: str = "deconv",
        conv_type: str = "kan",
        rank: Optional[int] = None,
        spline_init: Union[str, tuple, nn.Module, None] = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"`spatial_dims` must be 1, 2 or 3, got {spatial_dims!r}.")
        check_positive_int(in_channels=in_channels, out_channels=out_channels)
        if len(channels) < 2:
            raise ValueError(f"the length of `channels` should be no less than 2, got {tuple(channels)}.")
        if any(not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"`channels` must be positive integers, got {tuple(channels)}.")
        delta = len(strides) - (len(channels) - 1)
        if delta < 0:
            raise ValueError(
                f"the length of `strides` should equal to `len(channels) - 1` = {len(channels) - 1}, got {len(strides)}."
            )
        if delta > 0:
            warnings.warn(f"`len(strides) > len(channels) - 1`, the last {delta} values of strides will not be used.")
        strides = [ensure_tuple_rep(s, spatial_dims) for s in strides[: len(channels) - 1]]
        if any(not isinstance(v, int) or v < 1 for s in strides for v in s):
            raise ValueError(f"`strides` must be positive integers, got {strides}.")
        for name, ks in (("kernel_size", kernel_size), ("up_kernel_size", up_kernel_size)):
            if isinstance(ks, Sequence) and len(ks) != spatial_dims:
                raise ValueError(f"the length of `{name}` should equal to `spatial_dims` = {spatial_dims}, got {len(ks)}.")
            if any(k % 2 == 0 or k < 1 for k in ensure_tuple_rep(ks, spatial_dims)):
                raise ValueError(f"`{name}` values should be odd, got {ks}.")
        if num_res_units < 0:
            raise ValueError(f"`num_res_units` must be >= 0, got {num_res_units}.")
        if conv_type not in CONV_TYPES:
            raise ValueError(f"`conv_type` must be one of {CONV_TYPES}, got {conv_type!r}.")
        if upsample not in ("deconv", "nontrainable"):
            raise ValueError(f"`upsample` must be 'deconv' or 'nontrainable', got {upsample!r}.")

        self.dimensions = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = tuple(channels)
        self.strides = tuple(strides)
        self.num_res_units = num_res_units
        self.upsample = upsample
        self.conv_type = conv_type
        # each spatial size must be divisible by the product of the strides along it
        self.size_divisor: List[int] = [
            int(torch.tensor([s[d] for s in strides]).prod()) for d in range(spatial_dims)
        ]
        kan_kwargs = dict(grid_size=grid_size, spline_order=spline_order, grid_range=grid_range,
                          base_activation=base_activation, standalone_scale_spline=standalone_scale_spline,
                          rank=rank, spline_init=spline_init)

        def block(c_in: int, c_out: int, stride) -> nn.Module:
            if num_res_units > 0:
                return KANResidualUnit(spatial_dims, c_in, c_out, stride, kernel_size, num_res_units, norm, dropout,
                                       kan_kwargs, conv_type)
            return KANConvBlock(spatial_dims, c_in, c_out, stride, kernel_size, norm, dropout, kan_kwargs, conv_type)

        self.encoders = nn.ModuleList(
            [block(in_channels if i == 0 else channels[i - 1], channels[i], 1 if i == 0 else strides[i - 1])
             for i in range(len(channels))]
        )
        ups, decoders = [], []
        for i in reversed(range(len(channels) - 1)):  # bottom-up
            if upsample == "deconv":
                ups.append(Convolution(spatial_dims, channels[i + 1], channels[i], strides=strides[i],
                                       kernel_size=up_kernel_size, is_transposed=True, conv_only=True))
                dec_in = 2 * channels[i]
            else:
                ups.append(nn.Upsample(scale_factor=tuple(float(s) for s in strides[i]), mode="nearest"))
                dec_in = channels[i + 1] + channels[i]
            decoders.append(block(dec_in, channels[i], 1))
        self.ups = nn.ModuleList(ups)
        self.decoders = nn.ModuleList(decoders)
        self.head = nn.Sequential(
            get_norm_layer(norm, spatial_dims, channels[0]) if norm else nn.Identity(),
            make_conv(conv_type, spatial_dims, channels[0], out_channels, kernel_size=1, bias=True,
                      kan_kwargs=kan_kwargs),
        )

    def _check_input(self, x: torch.Tensor) -> None:
        check_spatial_input(x, self.dimensions, self.in_channels, "KMUNet")
        spatial = x.shape[2:]
        for d in range(self.dimensions):
            if spatial[d] % self.size_divisor[d] != 0:
                raise ValueError(
                    f"KMUNet expected spatial sizes divisible by {self.size_divisor} (the product of `strides`), "
                    f"got {list(spatial)}; pad or crop the input (e.g. monai.transforms.DivisiblePad)."
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and is_meta_tensor(x):
            return with_meta_of(self._forward(plain_tensor(x)), x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        skips: List[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        level = len(skips) - 2
        for up, decoder in zip(self.ups, self.decoders):
            x = decoder(torch.cat([up(x), skips[level]], dim=1))
            level -= 1
        return self.head(x)


KMUnet = KMUNet
