"""KAN networks usable from Python and, by short name, in MONAI bundle configs: KM-UNet (segmentation), KAE, PatchKAE
and ConvKAE (auto-encoders, denoising), and the KAE paper's baseline layers (FourierKAN, Wav-KAN) selectable as
``KAE(layer_type=...)``. Benchmark code is not here: the KAE paper protocol is ``benchmarks/kae_protocol`` in the
repository, not installed."""

from .conv_kae import ConvKAE
from .fourier_kan import FourierKANLinear
from .kae import AUTOENCODER_LAYERS, KAE, register_autoencoder_layer
from .kae_denoiser import PatchKAE
from .kmunet import KMUNet, KMUnet
from .wavelet_kan import WaveletKANLinear

__all__ = [
    "AUTOENCODER_LAYERS",
    "ConvKAE",
    "FourierKANLinear",
    "KAE",
    "KMUNet",
    "KMUnet",
    "PatchKAE",
    "WaveletKANLinear",
    "register_autoencoder_layer",
]
