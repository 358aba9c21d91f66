"""KAE polynomial layer (F. Yu et al., arXiv:2501.00420, eq. 3): ``y = b + sum_{k=1..p} W_k x^k``, one learnable polynomial per edge."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_kan.basis.polynomial import power_basis
from monai_kan.utils import check_floating_input, check_positive_int

__all__ = ["KAELayer"]


class KAELayer(nn.Module):
    """Polynomial KAN layer of the Kolmogorov-Arnold Auto-Encoder.

    Edge ``(j, i)`` carries ``phi_{j,i}(x) = c_{j,i} + sum_k W_k[j, i] x^k``; the constants of one output add up to
    the bias ``b_j``. Evaluated as a single matrix product of ``[W_1 | ... | W_p]`` with the stacked powers
    ``[x, x^2, ..., x^p]`` (no ``(batch, out, in)`` intermediate).

    Args:
        in_features: size of the last input dimension.
        out_features: size of the last output dimension.
        order: polynomial order ``p >= 1`` (``p = 1`` is an affine layer). Defaults to 3.
        bias: learnable constant term ``b``. Defaults to True.

    Input ``(..., in_features)``, output ``(..., out_features)``.

    Attributes:
        weight: ``(out_features, in_features * order)``; ``weight[:, (k - 1) * in : k * in]`` is ``W_k``.

    Raises:
        ValueError: ``in_features``, ``out_features`` or ``order`` is not a positive integer.
    """

    def __init__(self, in_features: int, out_features: int, order: int = 3, bias: bool = True) -> None:
        super().__init__()
        check_positive_int(in_features=in_features, out_features=out_features, order=order)
        self.in_features = in_features
        self.out_features = out_features
        self.order = order
        self.weight = nn.Parameter(torch.empty(out_features, in_features * order))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the KAE authors' initialisation: every polynomial coefficient ~ N(0, 0.01^2), constant term zero
        with torch.no_grad():
            self.weight.normal_(0.0, 0.01)
            if self.bias is not None:
                self.bias.zero_()

    def coefficients(self) -> torch.Tensor:
        """Polynomial coefficients ``(out_features, in_features, order)``: ``[..., k - 1]`` multiplies ``x^k``."""
        return self.weight.view(self.out_features, self.order, self.in_features).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"KAELayer expected input of shape (..., {self.in_features}), got {list(x.shape)}.")
        check_floating_input(x, "KAELayer")
        return F.linear(power_basis(x, self.order), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, order={self.order}"
