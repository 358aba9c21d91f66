"""KAE polynomial layer (F. Yu et al., arXiv:2501.00420, eq. 3): ``y = b + sum_{k=1..p} W_k x^k``, one learnable
polynomial per edge."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_kan.basis.polynomial import power_basis
from monai_kan.utils import check_floating_input, check_positive_int

__all__ = ["CONSTANT_TERMS", "KAELayer"]

#: where the order-0 coefficients of a KAE layer live: one per output (``"output"``) or one per edge (``"edge"``)
CONSTANT_TERMS = ("output", "edge")


class KAELayer(nn.Module):
    """Polynomial KAN layer of the Kolmogorov-Arnold Auto-Encoder (F. Yu et al., arXiv:2501.00420, eq. 3).

    Edge ``(j, i)`` carries ``phi_{j,i}(x) = c_{j,i} + sum_{k=1..p} W_k[j, i] x^k``, so the layer is eq. 3,
    ``y = C 1 + sum_k W_k x^k + b``. Evaluated as a single matrix product of ``[W_1 | ... | W_p]`` with the stacked
    powers ``[x, x^2, ..., x^p]`` (no ``(batch, out, in)`` intermediate); the constants enter as one vector.

    The constant term can be parametrised two ways, equal in function but not in training:

    - ``constant="output"``: the constants of one output are summed into a single learnable ``b_j`` (the ``bias``),
      ``out_features`` parameters. The smallest parametrisation.
    - ``constant="edge"``: one learnable ``c_{j,i}`` per edge (``edge_constant``, ``(out, in)``, initialised like the
      other coefficients, ``N(0, 0.01^2)``) plus the ``bias``, as the authors' code stores it (a coefficient tensor
      ``(out, in, p + 1)`` whose order-0 slice is ``C``). Every ``c_{j,i}`` receives the gradient of ``b_j``, so
      Adam, which moves each parameter by about the learning rate per step, moves the output's constant
      ``sum_i c_{j,i}`` about ``in_features`` times faster than a single bias. On Fashion-MNIST this is what closes
      the gap to the paper's reconstruction errors (see ``docs/kae_results.md``).

    Args:
        in_features: size of the last input dimension.
        out_features: size of the last output dimension.
        order: polynomial order ``p >= 1`` (``p = 1`` is an affine layer). Defaults to 3.
        bias: learnable per-output constant ``b``. Defaults to True.
        constant: ``"output"`` (default) or ``"edge"``: where the order-0 coefficients live (see above).

    Input ``(..., in_features)``, output ``(..., out_features)``.

    Attributes:
        weight: ``(out_features, in_features * order)``; ``weight[:, (k - 1) * in : k * in]`` is ``W_k``.
        edge_constant: ``(out_features, in_features)`` with ``constant="edge"``, else ``None``.

    Raises:
        ValueError: ``in_features``, ``out_features`` or ``order`` is not a positive integer, or an unknown
            ``constant``.
    """

    def __init__(
        self, in_features: int, out_features: int, order: int = 3, bias: bool = True, constant: str = "output"
    ) -> None:
        super().__init__()
        check_positive_int(in_features=in_features, out_features=out_features, order=order)
        if constant not in CONSTANT_TERMS:
            raise ValueError(f"`constant` must be one of {CONSTANT_TERMS}, got {constant!r}.")
        self.in_features = in_features
        self.out_features = out_features
        self.order = order
        self.constant = constant
        self.weight = nn.Parameter(torch.empty(out_features, in_features * order))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.edge_constant = nn.Parameter(torch.empty(out_features, in_features)) if constant == "edge" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the KAE authors' initialisation: every polynomial coefficient (order 0 included) ~ N(0, 0.01^2), bias zero
        with torch.no_grad():
            self.weight.normal_(0.0, 0.01)
            if self.edge_constant is not None:
                self.edge_constant.normal_(0.0, 0.01)
            if self.bias is not None:
                self.bias.zero_()

    def coefficients(self) -> torch.Tensor:
        """Polynomial coefficients ``(out_features, in_features, order)``: ``[..., k - 1]`` multiplies ``x^k``."""
        return self.weight.view(self.out_features, self.order, self.in_features).transpose(1, 2)

    def output_constant(self) -> Optional[torch.Tensor]:
        """The constant term of each output, ``(out_features,)``: ``b + C 1`` (``None`` without either)."""
        const = self.bias
        if self.edge_constant is not None:
            summed = self.edge_constant.sum(1)
            const = summed if const is None else const + summed
        return const

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"KAELayer expected input of shape (..., {self.in_features}), got {list(x.shape)}.")
        check_floating_input(x, "KAELayer")
        return F.linear(power_basis(x, self.order), self.weight, self.output_constant())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, order={self.order}, "
                f"constant={self.constant!r}")
