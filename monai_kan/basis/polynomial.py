"""Monomial basis of the KAE edge functions (F. Yu et al., arXiv:2501.00420, eq. 3)."""

from __future__ import annotations

import torch

__all__ = ["power_basis"]


def power_basis(x: torch.Tensor, order: int) -> torch.Tensor:
    """Stack the powers ``x, x^2, ..., x^order`` along the last axis.

    Args:
        x: ``(..., C)`` inputs.
        order: polynomial order ``p >= 1``.

    Returns:
        ``(..., C * order)``: for every power ``k`` (outer) the ``C`` inputs (inner), so that one matrix product with
        ``[W_1 | W_2 | ... | W_p]`` of shape ``(out, C * p)`` evaluates ``sum_k W_k x^k``.
    """
    powers = [x]
    for _ in range(1, order):
        powers.append(powers[-1] * x)  # repeated products: exact for negative x, cheaper than pow
    return torch.cat(powers, dim=-1)
