"""KAN networks usable from Python and, by short name, in MONAI bundle configs, and the KAE paper's baseline layers
(FourierKAN, Wav-KAN) selectable as ``KAE(layer_type=...)``."""

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
