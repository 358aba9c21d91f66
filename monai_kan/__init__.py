"""monai-kan: Kolmogorov-Arnold Networks for MONAI.

``import monai_kan`` makes the networks resolvable by short name in MONAI bundle configs
(``"_target_": "KMUNet"`` with ``"$import monai_kan"`` in ``imports``) and registers ``Conv["kanconv", dim]``.
"""

from .basis import bspline_basis, make_knots, power_basis, uniform_bspline_basis
from .blocks import KANConvBlock, KANResidualUnit
from .layers import KAELayer, KANConv, KANLinear, fused_kernels_enabled, set_fused_kernels
from .tools.grid import (
    extend_grid,
    extend_network_grids,
    replace_optimizer_params,
    update_grid,
    update_network_grids,
)
from .tools.pruning import PrunedKAN, prune_kan
from .losses import KANRegularization, KANRegularizedLoss
from .networks import KAE, FourierKANLinear, KMUNet, KMUnet, PatchKAE, WaveletKANLinear

__version__ = "0.1.0"

__all__ = [
    "FourierKANLinear",
    "KAE",
    "KAELayer",
    "KANConv",
    "KANConvBlock",
    "KANLinear",
    "KANResidualUnit",
    "KMUNet",
    "KMUnet",
    "KANRegularization",
    "KANRegularizedLoss",
    "PatchKAE",
    "WaveletKANLinear",
    "PrunedKAN",
    "bspline_basis",
    "extend_grid",
    "extend_network_grids",
    "prune_kan",
    "replace_optimizer_params",
    "update_grid",
    "update_network_grids",
    "fused_kernels_enabled",
    "make_knots",
    "power_basis",
    "set_fused_kernels",
    "uniform_bspline_basis",
]
