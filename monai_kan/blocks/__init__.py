"""Blocks of KAN convolutional networks."""

from .kan_blocks import CONV_TYPES, KANConvBlock, KANResidualUnit, make_conv

__all__ = ["CONV_TYPES", "KANConvBlock", "KANResidualUnit", "make_conv"]
