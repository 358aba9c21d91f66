"""Registration of the KAN convolution with MONAI's ``Conv`` layer factory.

After ``import monai_kan``: ``Conv["kanconv", 3](in_channels, out_channels, kernel_size=3)`` builds a 3D
:class:`~monai_kan.layers.KANConv`, so MONAI code that takes a conv type by name can use KAN convolutions.
"""

from __future__ import annotations

import functools

from monai.networks.layers.factories import Conv

from monai_kan.layers.kan_conv import KANConv

__all__ = ["KAN_CONV", "kan_conv_factory"]

KAN_CONV = "KANCONV"


def kan_conv_factory(dim: int):
    """B-spline KAN convolution of ``dim`` spatial dimensions (``functools.partial(KANConv, dim)``).

    Raises:
        ValueError: ``dim`` not 1, 2 or 3.
    """
    if dim not in (1, 2, 3):
        raise ValueError(f"KAN convolutions exist for 1, 2 or 3 spatial dims, got {dim!r}.")
    return functools.partial(KANConv, dim)


if KAN_CONV not in Conv.names:
    Conv.add_factory_callable(KAN_CONV, kan_conv_factory)
