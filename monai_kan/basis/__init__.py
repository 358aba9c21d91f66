"""Basis functions of KAN edge functions: B-splines (the KAN/KM-UNet edge) and monomials (the KAE edge)."""

from .bspline import (
    bspline_basis,
    bspline_basis_derivative,
    is_uniform_knots,
    make_knots,
    num_basis,
    uniform_bspline_basis,
    uniform_bspline_basis_derivative,
)
from .polynomial import power_basis

__all__ = [
    "bspline_basis",
    "bspline_basis_derivative",
    "is_uniform_knots",
    "make_knots",
    "num_basis",
    "power_basis",
    "uniform_bspline_basis",
    "uniform_bspline_basis_derivative",
]
