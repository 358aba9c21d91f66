"""KAN layers (modules only): B-spline linear and convolution (1D/2D/3D), their fused custom ops, and the KAE
polynomial layer and convolution. Network-level tools that use them are in :mod:`monai_kan.tools`."""

from .bspline_kan import BSplineKANBase
from .factories import KAN_CONV, kan_conv_factory
from .fused import fused_kernels_enabled, set_fused_kernels
from .kae import KAELayer
from .kae_conv import KAEConv
from .kan_conv import KANConv
from .kan_linear import KANLinear

__all__ = [
    "KAN_CONV",
    "BSplineKANBase", "KAEConv", "KAELayer", "KANConv", "KANLinear", "fused_kernels_enabled",
    "kan_conv_factory",
    "set_fused_kernels",
]
