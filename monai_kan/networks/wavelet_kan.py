"""Wavelet KAN linear layer (Wav-KAN; Bozorgasl & Chen, arXiv:2405.12832) with Mexican-hat edges."""

from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

from monai_kan.layers.fused import fused_kernels_enabled, run_kernel
from monai_kan.utils import check_floating_input, check_positive_int

__all__ = ["WaveletKANLinear", "mexican_hat_edges"]

# normalisation of the Mexican hat wavelet, 2 / (sqrt(3) * pi^(1/4)), as in Wav-KAN
_MEXICAN_HAT_C = 2.0 / (math.sqrt(3.0) * math.pi**0.25)


def mexican_hat_edges(x: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Reference (autograd, TorchScript-able) evaluation of ``y_j = sum_i w_ji psi((x_i - t_ji) / s_ji)``.

    ``psi(u) = C (u^2 - 1) exp(-u^2 / 2)`` with ``C = 2 / (sqrt(3) pi^(1/4))``: the sign convention of the official
    Wav-KAN code (the textbook Mexican hat is ``-psi``; the learnable weights absorb the sign).

    Args:
        x: ``(N, in_features)``.
        scale: ``(out_features, in_features)`` wavelet scales ``s``.
        translation: ``(out_features, in_features)`` wavelet translations ``t``.
        weight: ``(out_features, in_features)`` wavelet weights ``w``.

    Returns:
        ``(N, out_features)``.
    """
    u = (x.unsqueeze(1) - translation) / scale  # (N, out, in): scale and translation differ per edge
    u2 = u * u
    psi = (u2 - 1.0) * torch.exp(-0.5 * u2)
    return (psi * weight).sum(-1) * (2.0 / (math.sqrt(3.0) * math.pi**0.25))  # literal: TorchScript takes no globals


def _edges_forward_t(x_t: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor, weight: torch.Tensor):
    """:func:`mexican_hat_edges` on transposed rows, for the fused kernel: ``x_t (in, N)`` -> ``y_t (out, N)``.

    The intermediate is laid out ``(out, in, N)``, batch innermost: the sum over ``in`` then adds whole contiguous
    rows, and the backward's sums over the batch are contiguous too (about twice as fast as ``(N, out, in)``)."""
    u = (x_t.unsqueeze(0) - translation.unsqueeze(-1)) / scale.unsqueeze(-1)
    u2 = u * u
    return ((u2 - 1.0) * torch.exp(-0.5 * u2) * weight.unsqueeze(-1)).sum(1) * _MEXICAN_HAT_C


def _edges_backward_t(x_t, scale, translation, weight, grad_t):
    """Gradients of :func:`mexican_hat_edges` from its inputs alone (the fused kernel recomputes ``u``), transposed
    like :func:`_edges_forward_t`: ``x_t (in, N)``, ``grad_t (out, N)`` -> ``grad_x_t (in, N)`` and the gradients of
    ``scale``, ``translation`` and ``weight`` ``(out, in)``."""
    inv_scale = (1.0 / scale).unsqueeze(-1)
    u = (x_t.unsqueeze(0) - translation.unsqueeze(-1)) * inv_scale  # (out, in, N)
    u2 = u * u
    gauss = torch.exp(-0.5 * u2)
    g = (grad_t * _MEXICAN_HAT_C).unsqueeze(1)  # (out, 1, N)
    grad_weight = ((u2 - 1.0) * gauss * g).sum(-1)
    grad_u = u * (3.0 - u2) * gauss * g * weight.unsqueeze(-1)  # d psi / du = u (3 - u^2) exp(-u^2 / 2)
    grad_x_t = (grad_u * inv_scale).sum(0)
    inv = inv_scale.squeeze(-1)
    grad_translation = -grad_u.sum(-1) * inv
    grad_scale = -(grad_u * u).sum(-1) * inv  # du/ds = -u / s
    return grad_x_t, grad_scale, grad_translation, grad_weight


def _fused(name: str, fn: Callable, *tensors: torch.Tensor) -> torch.Tensor:
    # the batch (last dim of x_t and grad_t, the first and fifth tensors) is dynamic; the layer's shapes are static
    return run_kernel(name, fn, [(t, (1,) if i == 0 or i == 4 else ()) for i, t in enumerate(tensors)])


class _MexicanHatEdges(torch.autograd.Function):
    """Same values as :func:`mexican_hat_edges`, with a hand-written backward.

    Per-edge scales and translations make ``(N, out, in)`` tensors unavoidable, and eager autograd would keep about
    six of them and make a memory pass per elementary op. With fused kernels (``torch.compile``, see
    :func:`~monai_kan.layers.fused_kernels_enabled`) forward and backward are one pass each and only the inputs are
    saved; in eager mode forward keeps ``u`` and ``exp(-u^2/2)`` and backward derives every gradient from them.
    Either way about two to three times faster than autograd on CPU.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor, weight: torch.Tensor):
        ctx.fused = fused_kernels_enabled()
        if ctx.fused:
            x_t = x.t().contiguous()
            ctx.save_for_backward(x_t, scale, translation, weight)
            return _fused("wavelet_forward_t", _edges_forward_t, x_t, scale, translation, weight).t()
        inv_scale = scale.reciprocal()
        u = (x.unsqueeze(1) - translation).mul_(inv_scale)
        u2 = u * u
        gauss = torch.exp(u2 * -0.5)
        ctx.save_for_backward(u, gauss, inv_scale, weight)
        return u2.sub_(1.0).mul_(gauss).mul_(weight).sum(-1).mul_(_MEXICAN_HAT_C)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if ctx.fused:
            grad_t = grad_out.t().contiguous()
            grad_x_t, *grads = _fused("wavelet_backward_t", _edges_backward_t, *ctx.saved_tensors, grad_t)
            return (grad_x_t.t(), *grads)
        u, gauss, inv_scale, weight = ctx.saved_tensors
        g = (grad_out * _MEXICAN_HAT_C).unsqueeze(-1)  # (N, out, 1)
        u2 = u * u
        grad_weight = (u2 - 1.0).mul_(gauss).mul_(g).sum(0)
        # reuse the u2 buffer for the chain of products of d psi / du
        grad_u = u2.neg_().add_(3.0).mul_(u).mul_(gauss).mul_(g).mul_(weight)
        grad_x = (grad_u * inv_scale).sum(1)
        grad_translation = grad_u.sum(0).mul_(inv_scale).neg_()
        grad_scale = grad_u.mul_(u).sum(0).mul_(inv_scale).neg_()
        return grad_x, grad_scale, grad_translation, grad_weight


# ------------------------------------------------------------------------------------- hand-written CPU kernels
# One pass each way over the (out, in, N) edges, nothing of that size written to memory: forward accumulates each
# output row in cache; backward runs over inputs (outer, so threads own disjoint rows of grad_x and columns of the
# parameter gradients), recomputes u and exp(-u^2/2) once per edge and sample, keeps the three per-edge sums over
# the batch in registers and accumulates grad_x's row in cache. Edges are parametrised as u = a x + b (a = 1/s,
# b = -t/s) with the weight pre-multiplied by C (wc = C w), so the inner loop has no division; the chain rule back
# to s, t, w is applied to the small (out, in) sums. float32 uses the vectorised exp of ATen's ``exp_u20`` (about
# 2 ulp), float64 the 1-ulp ``exp``. Built with inductor's C++ toolchain (same compiler flags and cache as its
# generated kernels) on first use; if that fails, the torch.compile kernels below are used.
_CPP_SOURCE = r"""
#include <torch/csrc/inductor/cpp_prefix.h>
template <typename V> static inline V gauss_of(const V& v) {
    if constexpr (std::is_same_v<typename V::value_type, float>) { return v.exp_u20(); } else { return v.exp(); }
}
// y_t[j, n] = sum_i wc[j, i] psi0(a[j, i] x_t[i, n] + b[j, i]),  psi0(u) = (u^2 - 1) exp(-u^2 / 2)
template <typename T>
static void wav_forward(const T* x_t, const T* a, const T* b, const T* wc, T* y_t,
                        int64_t n_out, int64_t n_in, int64_t n, int64_t threads) {
    using V = at::vec::Vectorized<T>;
    constexpr int64_t L = V::size();
    const int64_t n_main = n - n % L;
    #pragma omp parallel for num_threads(threads) if(threads > 1)
    for (int64_t j = 0; j < n_out; ++j) {
        T* y = y_t + j * n;
        for (int64_t k = 0; k < n; ++k) y[k] = T(0);
        const V one(T(1)), mhalf(T(-0.5));
        for (int64_t i = 0; i < n_in; ++i) {
            const T* x = x_t + i * n;
            const int64_t e = j * n_in + i;
            const V va(a[e]), vb(b[e]), vw(wc[e]);
            for (int64_t k = 0; k < n; k += L) {
                const int64_t cnt = k < n_main ? L : n - k;
                const V u = at::vec::fmadd(V::loadu(x + k, cnt), va, vb);
                const V u2 = u * u;
                at::vec::fmadd((u2 - one) * gauss_of(u2 * mhalf), vw, V::loadu(y + k, cnt)).store(y + k, cnt);
            }
        }
    }
}
// grad_x_t[i, n] = sum_j g_t[j, n] wc a psi0'(u);  ga = sum_n g wc psi0'(u) x;  gb = sum_n g wc psi0'(u);
// gwc = sum_n g psi0(u)
template <typename T>
static void wav_backward(const T* x_t, const T* a, const T* b, const T* wc, const T* g_t, T* gx_t, T* ga, T* gb,
                         T* gwc, int64_t n_out, int64_t n_in, int64_t n, int64_t threads) {
    using V = at::vec::Vectorized<T>;
    constexpr int64_t L = V::size();
    const int64_t n_main = n - n % L;
    #pragma omp parallel for num_threads(threads) if(threads > 1)
    for (int64_t i = 0; i < n_in; ++i) {
        const T* x = x_t + i * n;
        T* gx = gx_t + i * n;
        for (int64_t k = 0; k < n; ++k) gx[k] = T(0);
        const V one(T(1)), three(T(3)), mhalf(T(-0.5));
        for (int64_t j = 0; j < n_out; ++j) {
            const int64_t e = j * n_in + i;
            const T* g = g_t + j * n;
            const V va(a[e]), vb(b[e]), vwa(wc[e] * a[e]);
            V acc_w(T(0)), acc_a(T(0)), acc_b(T(0));
            for (int64_t k = 0; k < n; k += L) {
                const int64_t cnt = k < n_main ? L : n - k;
                const V xv = V::loadu(x + k, cnt);
                const V gv = V::loadu(g + k, cnt);  // zero past the end: the tail adds nothing
                const V u = at::vec::fmadd(xv, va, vb);
                const V u2 = u * u;
                const V ge = gauss_of(u2 * mhalf) * gv;
                acc_w = at::vec::fmadd(u2 - one, ge, acc_w);
                const V q = u * (three - u2) * ge;  // g psi0'(u)
                acc_b = acc_b + q;
                acc_a = at::vec::fmadd(q, xv, acc_a);
                at::vec::fmadd(q, vwa, V::loadu(gx + k, cnt)).store(gx + k, cnt);
            }
            auto add = [](V& p, V& q) { return p + q; };
            gwc[e] = at::vec::vec_reduce_all<T>(add, acc_w);
            ga[e] = at::vec::vec_reduce_all<T>(add, acc_a) * wc[e];
            gb[e] = at::vec::vec_reduce_all<T>(add, acc_b) * wc[e];
        }
    }
}
extern "C" void kernel(const SCALAR* x_t, const SCALAR* a, const SCALAR* b, const SCALAR* wc, const SCALAR* g_t,
                       SCALAR* out0, SCALAR* ga, SCALAR* gb, SCALAR* gwc, const int64_t backward,
                       const int64_t n_out, const int64_t n_in, const int64_t n, const int64_t threads) {
    if (backward) {
        wav_backward<SCALAR>(x_t, a, b, wc, g_t, out0, ga, gb, gwc, n_out, n_in, n, threads);
    } else {
        wav_forward<SCALAR>(x_t, a, b, wc, out0, n_out, n_in, n, threads);
    }
}
"""
_CPP_KERNELS: Dict[torch.dtype, Optional[Callable]] = {}
_CPP_TYPES = {torch.float32: "float", torch.float64: "double"}


def _cpp_kernel(dtype: torch.dtype) -> Optional[Callable]:
    """The compiled kernel for ``dtype`` (float32 or float64), or ``None`` where it cannot be built."""
    if dtype not in _CPP_KERNELS:
        try:
            from torch._inductor.codecache import CppPythonBindingsCodeCache

            c_type = _CPP_TYPES[dtype]
            source = _CPP_SOURCE.replace("SCALAR", c_type)
            argtypes = [f"const {c_type}*"] * 5 + [f"{c_type}*"] * 4 + ["const int64_t"] * 5
            _CPP_KERNELS[dtype] = CppPythonBindingsCodeCache.load_pybinding(argtypes, source)
        except Exception as err:  # an optimisation only: the torch.compile kernels remain
            warnings.warn(f"monai_kan: the Wav-KAN C++ kernel could not be built ({type(err).__name__}: {err}); "
                          "using the torch.compile kernels.", stacklevel=3)
            _CPP_KERNELS[dtype] = None
    return _CPP_KERNELS[dtype]


def _use_cpp_kernel(x: torch.Tensor, *params: torch.Tensor) -> bool:
    if not fused_kernels_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if x.device.type != "cpu" or x.dtype not in _CPP_TYPES or x.shape[0] == 0:
        return False
    if any(p.device.type != "cpu" or p.dtype != x.dtype for p in params):
        return False
    return _cpp_kernel(x.dtype) is not None


class _MexicanHatEdgesCpp(torch.autograd.Function):
    """Same values as :func:`mexican_hat_edges` (to rounding) from the hand-written CPU kernels above; only the
    inputs and three ``(out, in)`` tensors are saved for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor, weight: torch.Tensor):
        kernel = _cpp_kernel(x.dtype)
        a = scale.reciprocal().contiguous()
        b = (translation * a).neg_().contiguous()
        wc = (weight * _MEXICAN_HAT_C).contiguous()
        x_t = x.t().contiguous()
        n_out, n_in, n = scale.shape[0], scale.shape[1], x.shape[0]
        y_t = x.new_empty(n_out, n)
        kernel(x_t, a, b, wc, x_t, y_t, y_t, y_t, y_t, 0, n_out, n_in, n, torch.get_num_threads())
        ctx.save_for_backward(x_t, a, b, wc, translation)
        return y_t.t()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x_t, a, b, wc, translation = ctx.saved_tensors
        kernel = _cpp_kernel(x_t.dtype)
        g_t = grad_out.t().to(x_t.dtype).contiguous()
        n_in, n = x_t.shape
        n_out = a.shape[0]
        grad_x_t = torch.empty_like(x_t)
        grad_a, grad_b, grad_wc = torch.empty_like(a), torch.empty_like(a), torch.empty_like(a)
        kernel(x_t, a, b, wc, g_t, grad_x_t, grad_a, grad_b, grad_wc, 1, n_out, n_in, n, torch.get_num_threads())
        # chain rule to the layer's parameters: a = 1/s, b = -t/s, wc = C w
        grad_scale = (translation * grad_b).sub_(grad_a).mul_(a * a)
        grad_translation = (grad_b * a).neg_()
        return grad_x_t.t(), grad_scale, grad_translation, grad_wc.mul_(_MEXICAN_HAT_C)


class WaveletKANLinear(nn.Module):
    """KAN layer with Mexican-hat wavelet edges, following the official Wav-KAN ``KANLinear``.

    ``y = BN(z)``, ``z_j = sum_i w_ji psi((x_i - t_ji) / s_ji)``, with per-edge scale ``s`` (initialised to 1),
    translation ``t`` (0) and weight ``w`` (Kaiming-uniform, ``a = sqrt(5)``), and a ``BatchNorm1d`` over the
    outputs, as in the official code and hence in the KAE paper's WavKAN baseline.

    Differences from the official code, on purpose: its second weight matrix (``weight1``, for an optional base
    branch whose output it computes and then discards) is left out, as it receives no gradient and only inflated
    the parameter count; the batch norm can be turned off (``batch_norm=False``); inputs may have any leading
    shape. Only the Mexican hat is provided (the paper's choice).

    Args:
        in_features: size of the last input dimension.
        out_features: size of the last output dimension.
        batch_norm: apply ``BatchNorm1d(out_features)`` to the output. Defaults to True (official Wav-KAN).

    Input ``(..., in_features)``, output ``(..., out_features)``. With ``batch_norm=True`` the statistics are over
    all leading positions, so training needs more than one of them.

    Raises:
        ValueError: ``in_features`` or ``out_features`` is not a positive integer.
    """

    def __init__(self, in_features: int, out_features: int, batch_norm: bool = True) -> None:
        super().__init__()
        check_positive_int(in_features=in_features, out_features=out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.scale = nn.Parameter(torch.empty(out_features, in_features))
        self.translation = nn.Parameter(torch.empty(out_features, in_features))
        self.wavelet_weights = nn.Parameter(torch.empty(out_features, in_features))
        self.bn = nn.BatchNorm1d(out_features) if batch_norm else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.scale.fill_(1.0)
            self.translation.zero_()
        nn.init.kaiming_uniform_(self.wavelet_weights, a=math.sqrt(5))
        if isinstance(self.bn, nn.BatchNorm1d):
            self.bn.reset_parameters()

    @torch.jit.unused
    def _edges_fast(self, x: torch.Tensor) -> torch.Tensor:
        params = (self.scale, self.translation, self.wavelet_weights)
        if _use_cpp_kernel(x, *params):
            return _MexicanHatEdgesCpp.apply(x, *params)
        return _MexicanHatEdges.apply(x, *params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"WaveletKANLinear expected input of shape (..., {self.in_features}), got {list(x.shape)}.")
        check_floating_input(x, "WaveletKANLinear")
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        if torch.jit.is_scripting():
            z = mexican_hat_edges(flat, self.scale, self.translation, self.wavelet_weights)
        else:
            z = self._edges_fast(flat)
        return self.bn(z).reshape(list(lead) + [self.out_features])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
