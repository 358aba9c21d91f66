"""KAN networks usable from Python and, by short name, in MONAI bundle configs."""

from .kae import AUTOENCODER_LAYERS, KAE, register_autoencoder_layer
from .kmunet import KMUNet, KMUnet

__all__ = ["AUTOENCODER_LAYERS", "KAE", "KMUNet", "KMUnet", "register_autoencoder_layer"]
