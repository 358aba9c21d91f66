"""KAN networks usable from Python and, by short name, in MONAI bundle configs."""

from .kae import AUTOENCODER_LAYERS, KAE, register_autoencoder_layer
from .kae_denoiser import PatchKAE
from .kmunet import KMUNet, KMUnet

__all__ = ["AUTOENCODER_LAYERS", "KAE", "KMUNet", "KMUnet", "PatchKAE", "register_autoencoder_layer"]
