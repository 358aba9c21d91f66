"""KAN networks usable from Python and, by short name, in MONAI bundle configs."""

from .kae import AUTOENCODER_LAYERS, KAE, register_autoencoder_layer

__all__ = ["AUTOENCODER_LAYERS", "KAE", "register_autoencoder_layer"]
