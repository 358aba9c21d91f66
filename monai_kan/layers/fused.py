"""Memory-lean, mixed-precision-aware and optionally fused execution of B-spline KAN convolutions.

A KAN convolution is ``conv(expand(x), W)``, where ``expand`` writes, for every input channel, the base activation and
the ``G + k`` basis values: a tensor ``(G + k + 1)`` times the input. Autograd would keep that tensor (and the
intermediates that built it) for backward, which is what makes 3D KAN training run out of memory. Here the expansion
is recomputed in backward from ``x``, so the bytes saved for backward are those of a plain convolution.

Precision policy (one for all B-spline KAN layers): the convolution runs in the *compute dtype* (the
``torch.autocast`` dtype when autocast is on, else the input's dtype), exactly like ``nn.Conv``; the basis is
evaluated in at least float32 from the knots (kept in float32/float64 by the layers) and rounded to the compute
dtype once, as the convolution's input. So a bfloat16 layer rounds where ``nn.Conv`` rounds, not inside the
cancelling sums of the B-spline closed form.

The whole operation is the ``torch.library`` custom op ``monai_kan::kan_conv`` (with its backward
``monai_kan::kan_conv_backward``): ``torch.compile(net)`` sees one opaque node per KAN convolution (no graph break,
no re-tracing of the spline maths), DDP and autocast see an ordinary op. Inside, the elementwise work (the expansion,
and the reduction of its gradient onto ``x``) is where the time goes on CPU; with fused kernels enabled both are
compiled by ``torch.compile`` once, with every size marked dynamic (batch 0 or 1 and single channels included), so a
session compiles a handful of graphs (one per dtype, grid kind, spline order and activation) instead of one per
shape. Set ``MONAI_KAN_FUSED=0`` (or call :func:`set_fused_kernels`) to stay in eager mode; if compilation fails
(no C++ compiler, unsupported device) the eager code is used with a warning.
"""

from __future__ import annotations

import math
import os
import shutil
import types
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_kan.basis.bspline import (
    bspline_basis,
    bspline_basis_derivative,
    uniform_bspline_basis,
    uniform_bspline_basis_derivative,
)

__all__ = [
    "expand_bspline",
    "kan_convolution",
    "kan_linear",
    "set_fused_kernels",
    "fused_kernels_enabled",
    "activation_name",
    "basis_dtype",
    "run_kernel",
]

_STATE = {"fused": os.environ.get("MONAI_KAN_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")}
_COMPILED: Dict[tuple, Callable] = {}  # (kernel name, static configuration) -> compiled


def set_fused_kernels(enabled: bool) -> None:
    """Turn ``torch.compile``-fused expansion kernels on or off for all KAN layers of this process."""
    _STATE["fused"] = bool(enabled)


def fused_kernels_enabled() -> bool:
    """Whether KAN layers will try ``torch.compile``-fused kernels (see :func:`set_fused_kernels`)."""
    return _STATE["fused"]


def basis_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype the B-spline basis is evaluated in for a given compute dtype: float64 stays, all else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ------------------------------------------------------------------------------------------------ base activations
# The custom op takes the base activation by name (an op schema cannot carry a module); each has its derivative.


def _silu_grad(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def _gelu_grad(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x * 0.7071067811865476)) + x * torch.exp(-0.5 * x * x) * 0.3989422804014327


_ACTIVATIONS: Dict[str, Tuple[Callable, Callable]] = {
    "silu": (F.silu, _silu_grad),
    "relu": (torch.relu, lambda x: (x > 0).to(x.dtype)),
    "tanh": (torch.tanh, lambda x: 1.0 - torch.tanh(x) ** 2),
    "sigmoid": (torch.sigmoid, lambda x: torch.sigmoid(x) * (1.0 - torch.sigmoid(x))),
    "gelu": (F.gelu, _gelu_grad),
    "identity": (lambda x: x, torch.ones_like),
}


def activation_name(act: Optional[nn.Module]) -> Optional[str]:
    """Name of a base activation the fused op implements (``"none"`` for no base branch), or ``None`` when the
    module is not one of them (learnable or unlisted activations then run through plain autograd)."""
    if act is None:
        return "none"
    if type(act) is nn.GELU and act.approximate != "none":
        return None
    for name, cls in (("silu", nn.SiLU), ("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid),
                      ("gelu", nn.GELU), ("identity", nn.Identity)):
        if type(act) is cls:
            return name
    return None


# --------------------------------------------------------------------------------------------------- the expansion


def _grid_params(knots: torch.Tensor, x: torch.Tensor, channel_dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """First knot and inverse knot spacing per channel, shaped to broadcast against ``x``."""
    shape = [1] * x.dim()
    shape[channel_dim] = knots.shape[0]
    start = knots[:, 0].to(x.dtype).view(shape)
    inv_step = (1.0 / (knots[:, 1] - knots[:, 0])).to(x.dtype).view(shape)
    return start, inv_step


def _basis(x: torch.Tensor, knots: torch.Tensor, spline_order: int, uniform: bool) -> torch.Tensor:
    """``(N, C, *spatial)`` -> ``(N, C, G + k, *spatial)`` basis values, in ``x``'s dtype."""
    n_basis = knots.shape[1] - spline_order - 1
    if uniform:
        start, inv_step = _grid_params(knots, x, 1)
        return uniform_bspline_basis(x, start, inv_step, n_basis, spline_order, 2)
    return bspline_basis(x.movedim(1, -1), knots, spline_order).movedim(-2, 1).movedim(-1, 2)


def expand_bspline(
    x: torch.Tensor, knots: torch.Tensor, spline_order: int, uniform: bool, base: Optional[torch.Tensor]
) -> torch.Tensor:
    """Evaluate every edge's basis once per input element (TorchScript-able).

    Args:
        x: ``(N, C, *spatial)`` feature map, in the dtype the basis is evaluated in (see :func:`basis_dtype`).
        knots: ``(C, G + 2k + 1)`` knots of each input channel.
        spline_order: order ``k``.
        uniform: use the closed form (knots uniformly spaced) instead of the Cox-de Boor recursion.
        base: ``base_activation(x)`` (same shape as ``x``) for a residual base branch, or ``None``.

    Returns:
        ``(N, C * (b + G + k), *spatial)`` with ``b = 1`` when ``base`` is given; per input channel the base value
        comes first, then the ``G + k`` basis values.
    """
    basis = _basis(x, knots, spline_order, uniform)
    if base is not None:
        basis = torch.cat([base.unsqueeze(2).to(basis.dtype), basis], dim=2)
    return basis.flatten(1, 2)


def _expand_kernel(x: torch.Tensor, knots: torch.Tensor, spline_order: int, uniform: bool, activation: str):
    """``(N, C, L)`` in the compute dtype -> ``(N, C, b + G + k, L)`` in the compute dtype, evaluated in >= fp32."""
    xb = x.to(basis_dtype(x.dtype))
    # each part is rounded before the concatenation, so that the fused kernel writes the compute dtype directly
    # (a cast after it would first write a float32 copy of the whole expansion)
    basis = _basis(xb, knots, spline_order, uniform).to(x.dtype)
    if activation != "none":
        basis = torch.cat([_ACTIVATIONS[activation][0](xb).to(x.dtype).unsqueeze(2), basis], dim=2)
    return basis


def _expand_grad_kernel(
    x: torch.Tensor, grad: torch.Tensor, knots: torch.Tensor, spline_order: int, uniform: bool, activation: str
) -> torch.Tensor:
    """Chain rule from d(loss)/d(expansion) ``(N, C, b + G + k, L)`` to d(loss)/dx ``(N, C, L)``: a weighted sum
    over the basis axis, evaluated in >= fp32."""
    dtype = basis_dtype(x.dtype)
    xb, g = x.to(dtype), grad.to(dtype)
    n_basis = knots.shape[1] - spline_order - 1
    has_base = activation != "none"
    g_spline = g[:, :, 1:] if has_base else g
    if uniform:
        start, inv_step = _grid_params(knots, xb, 1)
        d_basis = uniform_bspline_basis_derivative(xb, start, inv_step, n_basis, spline_order, 2)
        grad_x = (g_spline * d_basis).sum(2)
    else:
        d_basis = bspline_basis_derivative(xb.movedim(1, -1), knots, spline_order).movedim(-2, 1).movedim(-1, 2)
        grad_x = (g_spline * d_basis).sum(2)
    if has_base:
        grad_x = grad_x + _ACTIVATIONS[activation][1](xb) * g[:, :, 0]
    return grad_x.to(x.dtype)


# -------------------------------------------------------------------------------------- compiled, shape-generic runs


def _mark_dynamic(t: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    t = t.detach()  # a fresh alias: the caller's tensor keeps no marks, and no requires_grad guard is taken
    for d in range(t.dim()):
        if d in dims:
            torch._dynamo.decorators.mark_unbacked(t, d)  # unbacked: no specialisation on sizes 0 and 1
        else:
            # static: the number of basis functions, so the loop over them is unrolled and shares the loads
            torch._dynamo.mark_static(t, d)
    return t


def _kernel(name: str, fn: Callable, key: tuple) -> Callable:
    """The compiled ``fn`` for one static configuration ``key`` (dtypes, basis size, order, grid kind, activation).

    Each configuration gets a code object of its own: torch's compile cache and its recompile limit are per code
    object, so a session that mixes float32 and autocast, uniform and data-placed knots, and grid sizes compiles
    each configuration once and never runs into the limit (where new variants would silently run eager)."""
    if key not in _COMPILED:
        code = fn.__code__.replace()  # an equal but distinct code object
        _COMPILED[key] = torch.compile(
            types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__), dynamic=True
        )
    return _COMPILED[key]


def run_kernel(name: str, fn: Callable, tensors: Sequence[Tuple[torch.Tensor, Sequence[int]]], *static):
    """``fn(*tensors, *static)``, where each tensor comes with its dynamic dims (every other dim, the dtypes, the
    device and ``static`` make its configuration): compiled by ``torch.compile`` once per configuration when fused
    kernels are on, without autograd; the eager ``fn`` otherwise. The package's one compile-or-fall-back path: if
    compilation fails, fused kernels are turned off for the process with a warning and ``fn`` runs."""
    if _STATE["fused"] and not _COMPILED:
        if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
            warnings.warn("monai_kan: no C++ compiler found, KAN layers use eager (unfused) kernels.", stacklevel=3)
            _STATE["fused"] = False
    if _STATE["fused"]:
        key = (name,) + static + tuple(
            (t.dtype, t.device.type) + tuple(size for d, size in enumerate(t.shape) if d not in dims)
            for t, dims in tensors
        )
        try:
            compiled = _kernel(name, fn, key)
            with torch.no_grad():
                return compiled(*[_mark_dynamic(t, dims) for t, dims in tensors], *static)
        except Exception as err:  # compilation is an optimisation: never let it break a forward pass
            warnings.warn(f"monai_kan: torch.compile of {name} failed ({type(err).__name__}: {err}); "
                          "falling back to eager kernels.", stacklevel=2)
            _STATE["fused"] = False
    return fn(*[t for t, _ in tensors], *static)


def _expansion(x: torch.Tensor, knots: torch.Tensor, spline_order: int, uniform: bool, activation: str):
    """``(N, C, *spatial)`` -> ``(N, C * (b + G + k), *spatial)``: the convolution input, in ``x``'s dtype."""
    n, c, length = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    flat = x.reshape(n, c, length)  # (N, C, L): one compiled graph serves 1D, 2D and 3D
    out = run_kernel("expand", _expand_kernel, [(flat, (0, 1, 2)), (knots, (0,))], spline_order, uniform, activation)
    return out.view((n, c * out.shape[2]) + tuple(x.shape[2:]))


def _width(knots: torch.Tensor, spline_order: int, activation: str) -> int:
    """Expansion channels per input channel, ``b + G + k``."""
    return knots.shape[1] - spline_order - 1 + int(activation != "none")


# ------------------------------------------------------------------------------------------------- the custom ops


def _no_autocast(x: torch.Tensor):
    # inputs arrive in the compute dtype already; autocast must not re-cast inside
    return torch.autocast(x.device.type, enabled=False)


@torch.library.custom_op("monai_kan::kan_conv", mutates_args=())
def _kan_conv_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    knots: torch.Tensor,
    spline_order: int,
    uniform: bool,
    activation: str,
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
) -> torch.Tensor:
    with _no_autocast(x):
        expanded = _expansion(x, knots, spline_order, uniform, activation)
        return torch.convolution(expanded, weight, bias, stride, padding, dilation, False, [0] * len(stride), groups)


@_kan_conv_op.register_fake
def _(x, weight, bias, knots, spline_order, uniform, activation, stride, padding, dilation, groups):
    expanded = x.new_empty((x.shape[0], x.shape[1] * _width(knots, spline_order, activation)) + tuple(x.shape[2:]))
    return torch.convolution(expanded, weight, bias, stride, padding, dilation, False, [0] * len(stride), groups)


@torch.library.custom_op("monai_kan::kan_conv_backward", mutates_args=())
def _kan_conv_backward_op(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    knots: torch.Tensor,
    spline_order: int,
    uniform: bool,
    activation: str,
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
    output_mask: List[bool],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for ``x``, ``weight`` and ``bias`` (empty tensors where ``output_mask`` is False)."""
    width = _width(knots, spline_order, activation)
    shape = (x.shape[0], x.shape[1] * width) + tuple(x.shape[2:])
    with _no_autocast(x):
        # the weight gradient needs the expansion (recomputed here); the input gradient only its shape
        expanded = _expansion(x, knots, spline_order, uniform, activation) if output_mask[1] else x.new_empty(shape)
        grad_exp, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out, expanded, weight, [weight.shape[0]] if output_mask[2] else None,
            stride, padding, dilation, False, [0] * len(stride), groups, output_mask,
        )
        del expanded
        grad_x = x.new_empty(0)
        if output_mask[0]:
            n, c, length = x.shape[0], x.shape[1], math.prod(x.shape[2:])
            grad_x = run_kernel(
                "expand_grad", _expand_grad_kernel,
                [(x.reshape(n, c, length), (0, 1, 2)), (grad_exp.reshape(n, c, width, length), (0, 1, 3)),
                 (knots, (0,))],
                spline_order, uniform, activation,
            ).view(x.shape)
    return grad_x, grad_w if output_mask[1] else weight.new_empty(0), grad_b if output_mask[2] else weight.new_empty(0)


@_kan_conv_backward_op.register_fake
def _(grad_out, x, weight, knots, spline_order, uniform, activation, stride, padding, dilation, groups, output_mask):
    return (torch.empty_like(x) if output_mask[0] else x.new_empty(0),
            torch.empty_like(weight) if output_mask[1] else weight.new_empty(0),
            weight.new_empty(weight.shape[0]) if output_mask[2] else weight.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, weight, bias, knots, spline_order, uniform, activation, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight, knots)  # x and the weights only: the expansion is recomputed
    ctx.conf = (spline_order, uniform, activation, stride, padding, dilation, groups, bias is not None)


def _backward(ctx, grad_out):
    x, weight, knots = ctx.saved_tensors
    spline_order, uniform, activation, stride, padding, dilation, groups, has_bias = ctx.conf
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
    grad_x, grad_w, grad_b = _kan_conv_backward_op(
        grad_out.contiguous(), x, weight, knots, spline_order, uniform, activation, stride, padding, dilation,
        groups, mask,
    )
    return (grad_x if mask[0] else None, grad_w if mask[1] else None, grad_b if mask[2] else None,
            None, None, None, None, None, None, None, None)


_kan_conv_op.register_autograd(_backward, setup_context=_setup_context)


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
    """KAN convolution ``conv(expand(x), weight) + bias`` with a recomputing backward (``monai_kan::kan_conv``).

    Args:
        x: ``(N, C_in, *spatial)`` in the compute dtype.
        weight: ``(C_out, C_in // groups * (b + G + k), *kernel_size)`` in the compute dtype, laid out as
            :func:`expand_bspline`'s channels.
        bias: ``(C_out,)`` or ``None``, in the compute dtype.
        knots: ``(C_in, G + 2k + 1)``, float32 or float64.
        base_activation: ``None`` or an activation :func:`activation_name` knows.

    Returns:
        ``(N, C_out, *spatial_out)`` in the compute dtype.

    Raises:
        ValueError: when ``base_activation`` has no fused implementation.
    """
    name = activation_name(base_activation)
    if name is None:
        raise ValueError(f"`base_activation` {type(base_activation).__name__} has no fused implementation; "
                         f"supported: None, {', '.join(_ACTIVATIONS)}.")
    return _kan_conv_op(x, weight, bias, knots, int(spline_order), bool(uniform), name, list(stride), list(padding),
                        list(dilation), int(groups))


# ------------------------------------------------------------------------------------------- the lean linear path
#: a linear layer keeps its expansion for backward (instead of recomputing it) up to this many bytes of it
LINEAR_SAVED_EXPANSION_BYTES = 64 * 2**20


def _rows_product(expanded: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``expanded^T @ weight^T + bias``, ``(M, out)``, from ``expanded (K, M)`` and ``weight (out, K)``: for fewer
    outputs than rows formed as ``weight @ expanded`` (both operands row-major; about 1.5x faster with MKL for
    784 -> 16) and transposed, else directly."""
    if weight.shape[0] < expanded.shape[1]:
        y_t = weight.mm(expanded) if bias is None else torch.addmm(bias.unsqueeze(1), weight, expanded)
        return y_t.t().contiguous()
    return expanded.t().mm(weight.t()) if bias is None else torch.addmm(bias, expanded.t(), weight.t())


class _KANLinearFunction(torch.autograd.Function):
    """``y = expand(x) @ W^T + b`` for rows ``x (M, C)``: one expansion kernel and one matrix product forward, two
    products and (when ``x`` needs its gradient) one reduction kernel backward.

    The expansion is written ``(C * (b + G + k), M)``, positions innermost, by the same compiled kernel as the
    convolutions (it vectorises over the positions), and enters the products as a transposed view, so nothing is
    copied. It is kept for backward when it is at most :data:`LINEAR_SAVED_EXPANSION_BYTES` (a linear layer's is
    small next to a convolution's: ``M`` rows, not a whole feature map), else recomputed there as in
    :func:`kan_convolution`.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, knots, spline_order: int, uniform: bool, activation: str):
        m, c = x.shape
        with _no_autocast(x):
            x_t = x.t().contiguous().unsqueeze(0)  # (1, C, M)
            expanded = _expansion(x_t, knots, spline_order, uniform, activation).view(weight.shape[1], m)
            y = _rows_product(expanded, weight, bias)
        keep = expanded.numel() * expanded.element_size() <= LINEAR_SAVED_EXPANSION_BYTES
        ctx.save_for_backward(x_t, weight, knots, expanded if keep else None)
        ctx.conf = (spline_order, uniform, activation, bias is not None)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x_t, weight, knots, expanded = ctx.saved_tensors
        spline_order, uniform, activation, has_bias = ctx.conf
        grad_x = grad_w = grad_b = None
        with _no_autocast(x_t):
            if ctx.needs_input_grad[1]:
                if expanded is None:
                    expanded = _expansion(x_t, knots, spline_order, uniform, activation).view(weight.shape[1], -1)
                # (out, C * w), formed as (C * w, out) from a row-major gradient: the fastest layout with MKL
                grad_w = expanded.mm(grad_out.contiguous()).t()
            if has_bias and ctx.needs_input_grad[2]:
                grad_b = grad_out.sum(0)
            if ctx.needs_input_grad[0]:
                c, m = x_t.shape[1], x_t.shape[2]
                width = weight.shape[1] // c
                grad_exp = weight.t().matmul(grad_out.t())  # (C * w, M), positions innermost as the kernel reads them
                grad_x = run_kernel(
                    "expand_grad", _expand_grad_kernel,
                    [(x_t, (0, 1, 2)), (grad_exp.view(1, c, width, m), (0, 1, 3)), (knots, (0,))],
                    spline_order, uniform, activation,
                ).view(c, m).t()
        return grad_x, grad_w, grad_b, None, None, None, None


def kan_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    knots: torch.Tensor,
    spline_order: int,
    uniform: bool,
    base_activation: Optional[nn.Module],
) -> torch.Tensor:
    """KAN linear map ``expand(x) @ weight^T + bias`` of rows, in eager PyTorch (the lean path of
    :class:`~monai_kan.layers.KANLinear`; same expansion kernels and precision policy as :func:`kan_convolution`,
    without the custom op's dispatch and the convolution's reshapes).

    Args:
        x: ``(M, C_in)`` rows in the compute dtype, ``M >= 1``.
        weight: ``(C_out, C_in * (b + G + k))`` in the compute dtype, laid out as :func:`expand_bspline`'s channels.
        bias: ``(C_out,)`` or ``None``, in the compute dtype.
        knots: ``(C_in, G + 2k + 1)``, float32 or float64.
        base_activation: ``None`` or an activation :func:`activation_name` knows.

    Returns:
        ``(M, C_out)`` in the compute dtype.

    Raises:
        ValueError: when ``base_activation`` has no fused implementation or ``x`` has no rows.
    """
    name = activation_name(base_activation)
    if name is None:
        raise ValueError(f"`base_activation` {type(base_activation).__name__} has no fused implementation; "
                         f"supported: None, {', '.join(_ACTIVATIONS)}.")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"`x` must be (M, C_in) rows with M >= 1, got shape {list(x.shape)}.")
    return _KANLinearFunction.apply(x, weight, bias, knots, int(spline_order), bool(uniform), name)
