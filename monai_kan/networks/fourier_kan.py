"""Fourier KAN linear layer (FourierKAN; Xu et al., arXiv:2406.01034): every edge is a truncated Fourier series."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_kan.layers.fused import fused_kernels_enabled, run_kernel
from monai_kan.utils import check_floating_input, check_positive_int

__all__ = ["FourierKANLinear", "fourier_features"]


def fourier_features(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """Reference (autograd, TorchScript-able) harmonic features ``(..., in)`` -> ``(..., 2 * in * G)``.

    The order is ``[cos(k x_i) for k, i] + [sin(k x_i) for k, i]`` (input fastest, so that every harmonic is a
    contiguous, vectorisable block), the layout of the flattened ``fourier_coeffs.permute(1, 0, 3, 2)``.

    Args:
        x: ``(..., in_features)``.
        frequencies: ``(G,)`` harmonic numbers ``1..G`` in ``x``'s dtype.
    """
    angles = x.unsqueeze(-2) * frequencies.unsqueeze(-1)  # (..., G, in)
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-3).flatten(-3)


def _features_backward(x: torch.Tensor, frequencies: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``d/dx`` of :func:`fourier_features` contracted with ``grad (N, 2 * in * G)``: ``sum_k k (cos(k x) g_sin -
    sin(k x) g_cos)`` per input, recomputing the harmonics instead of keeping them."""
    angles = x.unsqueeze(-2) * frequencies.unsqueeze(-1)  # (N, G, in)
    g = grad.view(x.shape[0], 2, frequencies.shape[0], x.shape[1])
    return ((torch.cos(angles) * g[:, 1] - torch.sin(angles) * g[:, 0]) * frequencies.unsqueeze(-1)).sum(-2)


class _FourierFeatures(torch.autograd.Function):
    """:func:`fourier_features` of ``(N, in)`` rows as one fused pass (``torch.compile``, see
    :func:`~monai_kan.layers.fused_kernels_enabled`) that writes the ``(N, 2 * in * G)`` features directly, instead of
    the angle, cosine, sine and stacked copies of eager mode (about twice as fast on CPU); the backward
    recomputes the harmonics from ``x``. Only used when fused kernels are on."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, frequencies)
        return run_kernel("fourier_features", fourier_features, [(x, (0,)), (frequencies, ())])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], None]:
        x, frequencies = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        tensors = [(x, (0,)), (frequencies, ()), (grad.contiguous(), (0,))]
        return run_kernel("fourier_features_backward", _features_backward, tensors), None


class FourierKANLinear(nn.Module):
    """KAN layer with Fourier-series edges: ``y_j = b_j + sum_i sum_{k=1..G} a_{jik} cos(k x_i) + c_{jik} sin(k x_i)``.

    Matches the basic FourierKAN implementation the KAE paper uses as a baseline (``gridsize = 5``, bias added,
    no smooth initialisation: coefficients ``~ N(0, 1) / (sqrt(in_features) * sqrt(grid_size))``). Evaluated as one
    matrix product of the ``2 * G * in_features`` harmonic features with the flattened coefficients, so no
    ``(batch, out, in)`` tensor is formed; with fused kernels on (the default) the features come from one compiled
    pass whose backward recomputes them.

    Args:
        in_features: size of the last input dimension.
        out_features: size of the last output dimension.
        grid_size: number of harmonics ``G`` per edge. Defaults to 5.
        bias: learnable output bias (initialised to zero). Defaults to True.
        smooth_initialization: scale harmonic ``k`` by ``1 / k^2`` instead of ``1 / sqrt(G)`` at initialisation.
            Defaults to False (the paper's setting).

    Input ``(..., in_features)``, output ``(..., out_features)``.

    Attributes:
        fourier_coeffs: ``(2, out_features, in_features, grid_size)``; ``[0]`` multiplies ``cos(k x)``, ``[1]``
            ``sin(k x)``, index ``k - 1`` on the last axis.

    Raises:
        ValueError: ``in_features``, ``out_features`` or ``grid_size`` is not a positive integer.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        bias: bool = True,
        smooth_initialization: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int(in_features=in_features, out_features=out_features, grid_size=grid_size)
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.smooth_initialization = smooth_initialization
        self.fourier_coeffs = nn.Parameter(torch.empty(2, out_features, in_features, grid_size))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        # harmonic numbers 1..G, a buffer so that they follow .to(device)
        self.register_buffer("frequencies", torch.arange(1, grid_size + 1, dtype=torch.float32), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.fourier_coeffs.normal_(0.0, 1.0)
            if self.smooth_initialization:
                self.fourier_coeffs.div_(self.frequencies.square() * math.sqrt(self.in_features))
            else:
                self.fourier_coeffs.div_(math.sqrt(self.in_features) * math.sqrt(self.grid_size))
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"FourierKANLinear expected input of shape (..., {self.in_features}), got {list(x.shape)}.")
        check_floating_input(x, "FourierKANLinear")
        frequencies = self.frequencies.to(x.dtype)
        if torch.jit.is_scripting():
            features = fourier_features(x, frequencies)  # (..., 2 * G * in), same order as the coefficients below
        else:
            features = self._features(x, frequencies)
        weight = self.fourier_coeffs.permute(1, 0, 3, 2).reshape(self.out_features, -1)  # (out, 2 * G * in)
        return F.linear(features, weight, self.bias)

    @torch.jit.unused
    def _features(self, x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
        if not fused_kernels_enabled():
            return fourier_features(x, frequencies)
        rows = x.reshape(-1, self.in_features).contiguous()
        out = _FourierFeatures.apply(rows, frequencies)
        return out.reshape(list(x.shape[:-1]) + [out.shape[-1]])

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, grid_size={self.grid_size}, "
            f"bias={self.bias is not None}"
        )
