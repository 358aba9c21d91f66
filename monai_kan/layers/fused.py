"""Memory-lean, optionally fused execution of B-spline KAN convolutions.

A KAN convolution is ``conv(expand(x), W)``, where ``expand`` writes, for every input channel, the base activation and
the ``G + k`` basis values: a tensor ``(G + k + 1)`` times the input. Autograd would keep that tensor (and the
intermediates that built it) for backward, which is what makes 3D KAN training run out of memory. Here the expansion
is recomputed in backward from ``x``, so the bytes saved for backward are those of a plain convolution.

The elementwise work (the expansion, and the reduction of its gradient back onto ``x``) is where the time goes on
CPU: eager PyTorch makes a pass over the 9x tensor per operation. When fused kernels are enabled both functions are
compiled with ``torch.compile`` (one pass each). Set ``MONAI_KAN_FUSED=0`` (or call :func:`set_fused_kernels`) to
stay in eager mode; if compilation fails (no C++ compiler, unsupported device) the eager code is used with a warning.
"""

from __future__ import annotations

import os
import shutil
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from monai_kan.basis.bspline import bspline_basis, uniform_bspline_basis, uniform_bspline_basis_derivative

__all__ = ["expand_bspline", "kan_convolution", "set_fused_kernels", "fused_kernels_enabled"]

_STATE = {"fused": os.environ.get("MONAI_KAN_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")}
_COMPILED: dict = {}


def set_fused_kernels(enabled: bool) -> None:
    """Turn ``torch.compile``-fused expansion kernels on or off for all KAN layers of this process."""
    _STATE["fused"] = bool(enabled)


def fused_kernels_enabled() -> bool:
    """Whether KAN layers will try ``torch.compile``-fused kernels (see :func:`set_fused_kernels`)."""
    return _STATE["fused"]


def _grid_params(knots: torch.Tensor, x: torch.Tensor, channel_dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """First knot and inverse knot spacing per channel, shaped to broadcast against ``x``."""
    shape = [1] * x.dim()
    shape[channel_dim] = knots.shape[0]
    start = knots[:, 0].to(x.dtype).view(shape)
    inv_step = (1.0 / (knots[:, 1] - knots[:, 0])).to(x.dtype).view(shape)
    return start, inv_step


def expand_bspline(
    x: torch.Tensor, knots: torch.Tensor, spline_order: int, uniform: bool, base: Optional[torch.Tensor]
) -> torch.Tensor:
    """Evaluate every edge's basis once per input element (TorchScript-able).

    Args:
        x: ``(N, C, *spatial)`` feature map.
        knots: ``(C, G + 2k + 1)`` knots of each input channel.
        spline_order: order ``k``.
        uniform: use the closed form (knots uniformly spaced) instead of the Cox-de Boor recursion.
        base: ``base_activation(x)`` (same shape as ``x``) for a residual base branch, or ``None``.

    Returns:
        ``(N, C * (b + G + k), *spatial)`` with ``b = 1`` when ``base`` is given; per input channel the base value
        comes first, then the ``G + k`` basis values.
    """
    n_basis = knots.shape[1] - spline_order - 1
    if uniform:
        start, inv_step = _grid_params(knots, x, 1)
        basis = uniform_bspline_basis(x, start, inv_step, n_basis, spline_order, 2)  # (N, C, G + k, *spatial)
    else:
        basis = bspline_basis(x.movedim(1, -1), knots, spline_order).movedim(-2, 1).movedim(-1, 2)
    if base is not None:
        basis = torch.cat([base.unsqueeze(2), basis], dim=2)
    return basis.flatten(1, 2)


def _expand_with(
    x: torch.Tensor, knots: torch.Tensor, spline_order: int, uniform: bool, act: Optional[nn.Module]
) -> torch.Tensor:
    return expand_bspline(x, knots, spline_order, uniform, None if act is None else act(x))


def _activation_grad(act: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    if isinstance(act, nn.SiLU):
        s = torch.sigmoid(x)
        return grad * s * (1.0 + x * (1.0 - s))
    if isinstance(act, nn.ReLU):
        return grad * (x > 0).to(grad.dtype)
    if isinstance(act, nn.Tanh):
        return grad * (1.0 - torch.tanh(x) ** 2)
    if isinstance(act, nn.Identity):
        return grad
    with torch.enable_grad():  # any other parameter-free activation: differentiate it locally
        xd = x.detach().requires_grad_(True)
        return torch.autograd.grad(act(xd), xd, grad)[0]


def _expand_grad(
    x: torch.Tensor,
    grad_expanded: torch.Tensor,
    knots: torch.Tensor,
    spline_order: int,
    uniform: bool,
    base_activation: Optional[nn.Module],
) -> torch.Tensor:
    """Chain rule from d(loss)/d(expand(x)) to d(loss)/dx: a weighted sum over the basis axis."""
    n_basis = knots.shape[1] - spline_order - 1
    has_base = base_activation is not None
    g = grad_expanded.unflatten(1, (x.shape[1], n_basis + int(has_base)))  # (N, C, b + G + k, *spatial)
    if uniform:
        start, inv_step = _grid_params(knots, x, 1)
        d_basis = uniform_bspline_basis_derivative(x, start, inv_step, n_basis, spline_order, 2)
        grad_x = (g[:, :, int(has_base) :] * d_basis).sum(2)
    else:
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            basis = bspline_basis(xd.movedim(1, -1), knots, spline_order).movedim(-2, 1).movedim(-1, 2)
            grad_x = torch.autograd.grad(basis, xd, g[:, :, int(has_base) :])[0]
    if has_base:
        grad_x = grad_x + _activation_grad(base_activation, x, g[:, :, 0])
    return grad_x


def _maybe_compiled(name: str, fn: Callable) -> Callable:
    if not _STATE["fused"]:
        return fn
    if name not in _COMPILED:
        if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
            warnings.warn("monai_kan: no C++ compiler found, KAN layers use eager (unfused) kernels.", stacklevel=3)
            _STATE["fused"] = False
            return fn
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    compiled = _COMPILED[name]

    def run(*args):
        try:
            return compiled(*args)
        except Exception as err:  # compilation is an optimisation: never let it break a forward pass
            warnings.warn(f"monai_kan: torch.compile of {name} failed ({type(err).__name__}: {err}); "
                          "falling back to eager kernels.", stacklevel=2)
            _STATE["fused"] = False
            return fn(*args)

    return run


class _KANConvFunction(torch.autograd.Function):
    """``conv(expand(x), weight) + bias`` that saves only ``x`` and ``weight`` for backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, knots, spline_order, uniform, base_activation, stride, padding, dilation, groups):
        expanded = _expand_fast(x, knots, spline_order, uniform, base_activation)
        out = torch.convolution(expanded, weight, bias, stride, padding, dilation, False, [0] * len(stride), groups)
        ctx.save_for_backward(x, weight, knots)
        ctx.conf = (spline_order, uniform, base_activation, stride, padding, dilation, groups, bias is not None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, knots = ctx.saved_tensors
        spline_order, uniform, act, stride, padding, dilation, groups, has_bias = ctx.conf
        expanded = _expand_fast(x, knots, spline_order, uniform, act)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
        grad_exp, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out.contiguous(), expanded, weight, [weight.shape[0]] if has_bias else None,
            stride, padding, dilation, False, [0] * len(stride), groups, mask,
        )
        del expanded
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = _maybe_compiled("expand_grad", _expand_grad)(
                x.flatten(2), grad_exp.flatten(2), knots, spline_order, uniform, act
            ).view_as(x)
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None, None


def _expand_fast(x, knots, spline_order, uniform, act):
    # the elementwise kernels see (N, C, L): one compiled graph serves 1D, 2D and 3D inputs
    expanded = _maybe_compiled("expand", _expand_with)(x.flatten(2), knots, spline_order, uniform, act)
    return expanded.view((x.shape[0], expanded.shape[1]) + tuple(x.shape[2:]))


def kan_convolution(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    knots: torch.Tensor,
    spline_order: int,
    uniform: bool,
    base_activation: Optional[nn.Module],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """KAN convolution ``conv(expand(x), weight)`` with a recomputing backward.

    Args:
        x: ``(N, C_in, *spatial)``.
        weight: ``(C_out, C_in // groups * (G + k + b), *kernel_size)``, laid out as :func:`expand_bspline`'s
            channels.
        bias: ``(C_out,)`` or ``None``.

    Returns:
        ``(N, C_out, *spatial_out)``.
    """
    stride, padding, dilation = list(stride), list(padding), list(dilation)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if not needs_grad:
        expanded = _expand_fast(x, knots, spline_order, uniform, base_activation)
        return torch.convolution(expanded, weight, bias, stride, padding, dilation, False, [0] * len(stride), groups)
    return _KANConvFunction.apply(
        x, weight, bias, knots, spline_order, uniform, base_activation, stride, padding, dilation, groups
    )
