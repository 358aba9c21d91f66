"""Blocks of KAN convolutional networks."""

from .kan_blocks import KANConvBlock, KANResidualUnit

__all__ = ["KANConvBlock", "KANResidualUnit"]
