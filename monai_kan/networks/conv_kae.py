"""Convolutional Kolmogorov-Arnold Auto-Encoder for whole images (denoising, restoration).

The KAE of F. Yu et al. (arXiv:2501.00420) is fully connected, so it sees a fixed number of pixels;
:class:`~monai_kan.networks.PatchKAE` applies it patch by patch. :class:`ConvKAE` instead builds a convolutional
encoder-decoder from :class:`~monai_kan.layers.KAEConv` layers (polynomial edges, the convolutional form of the
paper's eq. 3), so it takes images of any size and shares its weights across positions.
"""

from __future__ import annotations

from typing import List, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.utils import get_act_layer

from monai_kan.layers.kae_conv import KAEConv
from monai_kan.layers.metatensor import is_meta_tensor, plain_tensor, with_meta_of
from monai_kan.utils import check_positive_int, check_spatial_input

__all__ = ["ConvKAE"]


class ConvKAE(nn.Module):
    """Convolutional KAE: an encoder-decoder of :class:`~monai_kan.layers.KAEConv` layers with a residual output.

    Encoder: at each level two ``3^d`` KAE convolutions (the first of every level after the top one with stride 2).
    Decoder: per level, upsampling (nearest, x2), a KAE convolution, the encoder features of that resolution added
    (additive skip), a second KAE convolution. Head: a KAE convolution to ``in_channels``. Between layers the
    activation ``act`` (default tanh, which keeps every input of a polynomial edge in ``[-1, 1]``).

    With ``residual=True`` (default) the head predicts the corruption and the output is ``x - head(...)``: the
    network starts close to the identity, the standard choice for denoising (Zhang et al., DnCNN, arXiv:1608.03981).
    With ``order=1`` every layer is a plain convolution: the same topology without the polynomial edges, the
    baseline that isolates what the KAE edges add.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: image channels (input and output). Defaults to 1.
        channels: feature channels per level, top first; every level after the first halves the resolution.
            Defaults to ``(32, 64)``.
        order: polynomial order ``p`` of every edge. Defaults to 3.
        act: activation between layers (MONAI name or ``(name, args)``). Defaults to ``"tanh"``.
        residual: output ``x - head`` (True, default) or ``head`` itself (False).

    Input ``(N, in_channels, *spatial)`` floating point, intensities expected in ``[0, 1]``; any spatial size (odd
    sizes are padded by replication to a multiple of ``2 ** (len(channels) - 1)`` and cropped back). Output of the
    same shape.

    Example::

        net = ConvKAE(spatial_dims=2, channels=(32, 64), order=3)
        denoised = net(torch.rand(2, 1, 181, 217))  # (2, 1, 181, 217)

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3, an empty ``channels``, or a size or ``order`` that is not a
            positive integer.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64),
        order: int = 3,
        act: Union[str, tuple] = "tanh",
        residual: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}.")
        channels = tuple(channels)
        if not channels:
            raise ValueError("`channels` must name at least one level, got ().")
        check_positive_int(in_channels=in_channels, order=order)
        check_positive_int(**{f"channels[{i}]": c for i, c in enumerate(channels)})
        self.spatial_dims, self.in_channels, self.channels = spatial_dims, in_channels, channels
        self.order, self.residual = order, bool(residual)
        self.levels = len(channels)
        self.size_multiple = 1 << (self.levels - 1)  # spatial sizes are padded to a multiple of this

        def conv(cin: int, cout: int, stride: int = 1) -> KAEConv:
            return KAEConv(spatial_dims, cin, cout, 3, stride=stride, order=order, padding_mode="replicate")

        self.act = get_act_layer(act)
        self.encoder = nn.ModuleList()
        previous = in_channels
        for i, c in enumerate(channels):
            self.encoder.append(nn.ModuleList([conv(previous, c, 1 if i == 0 else 2), conv(c, c)]))
            previous = c
        self.decoder = nn.ModuleList()
        for i in range(self.levels - 1, 0, -1):  # from the bottom level up
            up, merge = conv(channels[i], channels[i - 1]), conv(channels[i - 1], channels[i - 1])
            self.decoder.append(nn.ModuleList([up, merge]))
        self.head = conv(channels[0], in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and is_meta_tensor(x):
            return with_meta_of(self._forward(plain_tensor(x)), x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spatial_input(x, self.spatial_dims, self.in_channels, "ConvKAE")
        if x.shape[0] == 0:
            return x.clone()
        spatial = list(x.shape[2:])
        pads: List[int] = []
        padded = False
        for size in spatial[::-1]:  # F.pad order: last dimension first
            extra = (self.size_multiple - size % self.size_multiple) % self.size_multiple
            pads += [0, extra]
            padded = padded or extra > 0
        h = F.pad(x, pads, mode="replicate") if padded else x
        inp = h
        skips: List[torch.Tensor] = []
        for level in self.encoder:
            for layer in level:
                h = self.act(layer(h))
            skips.append(h)
        i = 0
        for level in self.decoder:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = self.act(level[0](h)) + skips[self.levels - 2 - i]
            h = self.act(level[1](h))
            i += 1
        out = self.head(h)
        if self.residual:
            out = inp - out
        if padded:
            for d, size in enumerate(spatial):
                out = out.narrow(d + 2, 0, size)
        return out

    def extra_repr(self) -> str:
        return (f"spatial_dims={self.spatial_dims}, channels={self.channels}, order={self.order}, "
                f"residual={self.residual}")
