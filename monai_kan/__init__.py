"""monai-kan: Kolmogorov-Arnold Networks for MONAI.

``import monai_kan`` makes the networks resolvable by short name in MONAI bundle configs
(``"_target_": "KMUNet"`` with ``"$import monai_kan"`` in ``imports``) and registers ``Conv["kanconv", dim]``.

Layout (by role): ``basis`` (B-spline and polynomial bases, knot placement), ``layers`` (KAN modules only),
``blocks``, ``networks`` (KM-UNet, KAE, PatchKAE and the KAE baselines), ``tools`` (network-level KAN tools: grid
update/extension, pruning), ``losses`` (KAN regularisation), ``handlers`` (ignite/MONAI bundle handlers),
``data`` (datasets, MSD folders, transforms), ``visualize`` (edge-function plots and export).

References:
    - KAN: Z. Liu, Y. Wang, S. Vaidya, F. Ruehle, J. Halverson, M. Soljacic, T. Y. Hou, M. Tegmark,
      *KAN: Kolmogorov-Arnold Networks*, arXiv:2404.19756 (2024). Cited below as "Liu et al., arXiv:2404.19756".
    - KM-UNet: V. Kumar, *KM-UNet: Combining UNet and KANs for Image Segmentation*, IIT Dharwad (slides,
      March 2025): the KAN convolution ``Y = sum_{c_in} sum_o F_{o,c_in,c_out}(X)`` and the KM-UNet topology.
    - KAE: F. Yu et al., *KAE: Kolmogorov-Arnold Auto-Encoder for Representation Learning*, arXiv:2501.00420
      (2025): the polynomial layer (eq. 3) and the auto-encoder protocol.
    - efficient-kan (github.com/Blealtan/efficient-kan): the knot and base-branch conventions of the B-spline layers.
    - Baselines: FourierKAN (Xu et al., arXiv:2406.01034), Wav-KAN (Bozorgasl & Chen, arXiv:2405.12832).
"""

from .basis import bspline_basis, make_knots, power_basis, uniform_bspline_basis
from .blocks import KANConvBlock, KANResidualUnit
from .layers import KAEConv, KAELayer, KANConv, KANLinear, fused_kernels_enabled, set_fused_kernels
from .tools.grid import (
    extend_grid,
    extend_network_grids,
    replace_optimizer_params,
    update_grid,
    update_network_grids,
)
from .tools.pruning import PrunedKAN, prune_kan
from .losses import KANRegularization, KANRegularizedLoss
from .networks import KAE, ConvKAE, FourierKANLinear, KMUNet, KMUnet, PatchKAE, WaveletKANLinear

__version__ = "0.1.0"

__all__ = [
    "ConvKAE",
    "FourierKANLinear",
    "KAE",
    "KAEConv",
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
