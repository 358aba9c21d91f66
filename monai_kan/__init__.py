"""monai-kan: Kolmogorov-Arnold Networks for MONAI."""

from .basis import bspline_basis, make_knots, uniform_bspline_basis
from .layers import KAELayer, KANConv, KANLinear, fused_kernels_enabled, set_fused_kernels
from .networks import KAE

__version__ = "0.1.0"
