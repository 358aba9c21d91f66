"""Basis functions of KAN edge functions (B-splines, the KAN/KM-UNet edge; monomials, the KAE edge) and the
placement of B-spline knots."""

from .bspline import (
    bspline_basis,
    bspline_basis_derivative,
    is_uniform_knots,
    make_knots,
    num_basis,
    uniform_bspline_basis,
    uniform_bspline_basis_derivative,
)
from .knots import data_knots, refined_knots
from .polynomial import power_basis

__all__ = [
    "bspline_basis",
    "bspline_basis_derivative",
    "data_knots",
    "is_uniform_knots",
    "make_knots",
    "num_basis",
    "power_basis",
    "refined_knots",
    "uniform_bspline_basis",
    "uniform_bspline_basis_derivative",
]
