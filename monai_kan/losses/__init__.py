"""Losses for KAN networks: sparsity/smoothness regularisation and a wrapper adding it to any loss."""

from .kan_regularization import KANRegularization, KANRegularizedLoss, kan_edge_magnitudes

__all__ = ["KANRegularization", "KANRegularizedLoss", "kan_edge_magnitudes"]
