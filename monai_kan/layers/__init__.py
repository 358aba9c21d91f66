"""KAN layers: B-spline linear and convolution (1D/2D/3D) and the KAE polynomial layer."""

from .bspline_kan import BSplineKANBase
from .fused import fused_kernels_enabled, set_fused_kernels
from .kae import KAELayer
from .kan_conv import KANConv
from .kan_linear import KANLinear

__all__ = ["BSplineKANBase", "KAELayer", "KANConv", "KANLinear", "fused_kernels_enabled", "set_fused_kernels"]
