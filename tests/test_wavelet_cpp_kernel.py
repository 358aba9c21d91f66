"""The hand-written CPU kernels of the Wav-KAN edges (``_MexicanHatEdgesCpp``) against the autograd reference."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_matches_float64

from monai_kan.layers.fused import set_fused_kernels
from monai_kan.networks.wavelet_kan import (
    WaveletKANLinear,
    _MexicanHatEdgesCpp,
    _use_cpp_kernel,
    mexican_hat_edges,
)


def _params(n_in, n_out, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, dtype=dtype, generator=g) * 1.5
    s = torch.rand(n_out, n_in, dtype=dtype, generator=g) + 0.5
    t = torch.randn(n_out, n_in, dtype=dtype, generator=g) * 0.3
    w = torch.randn(n_out, n_in, dtype=dtype, generator=g)
    return [p.requires_grad_() for p in (x, s, t, w)]


@pytest.mark.parametrize("shape", [(5, 3, 7), (3, 2, 1), (16, 40, 33), (40, 16, 17), (9, 4, 64)])
def test_cpp_float64_equals_autograd_reference(fused_on, shape):
    params = _params(*shape, torch.float64)
    assert _use_cpp_kernel(*params)
    y = _MexicanHatEdgesCpp.apply(*params)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, params, g)
    ref = mexican_hat_edges(*params)
    ref_grads = torch.autograd.grad(ref, params, g)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_cpp_gradcheck(fused_on):
    params = _params(3, 2, 5, torch.float64)
    assert torch.autograd.gradcheck(lambda *p: _MexicanHatEdgesCpp.apply(*p), params)


def test_cpp_float32_within_rounding_of_float64(fused_on):
    """The protocol's sizes in float32 (exp_u20) against the float64 reference."""
    params = _params(784, 16, 37, torch.float32)
    assert_matches_float64(_MexicanHatEdgesCpp.apply(*params), params, mexican_hat_edges)


def test_cpp_threads_agree(fused_on):
    params = _params(16, 24, 50, torch.float64)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = _MexicanHatEdgesCpp.apply(*params)
            outs.append((y, *torch.autograd.grad(y.sum(), params)))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_layer_uses_cpp_and_matches_unfused(fused_on):
    torch.manual_seed(0)
    layer = WaveletKANLinear(6, 5).double()
    with torch.no_grad():
        layer.scale.uniform_(0.5, 1.5)
        layer.translation.normal_(0.0, 0.3)
    x = torch.randn(2, 9, 6, dtype=torch.double, requires_grad=True)
    y = layer(x)
    grads = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()])
    set_fused_kernels(False)
    layer.bn.reset_running_stats()
    y_ref = layer(x)
    ref_grads = torch.autograd.grad(y_ref.square().sum(), [x, *layer.parameters()])
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_empty_batch(fused_on):
    layer = WaveletKANLinear(4, 3, batch_norm=False).double()
    x = torch.zeros(0, 4, dtype=torch.double, requires_grad=True)
    assert not _use_cpp_kernel(x, layer.scale)
    y = layer(x)
    assert y.shape == (0, 3)
    y.sum().backward()
    assert x.grad.shape == (0, 4) and layer.scale.grad is not None


def test_autocast_and_bfloat16(fused_on):
    torch.manual_seed(0)
    layer = WaveletKANLinear(8, 4, batch_norm=False)
    x = torch.randn(11, 8, requires_grad=True)
    y32 = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_auto = layer(x)  # elementwise maths: autocast leaves float32 inputs in float32
    torch.testing.assert_close(y_auto.float(), y32, rtol=1e-5, atol=1e-5)
    y_auto.float().sum().backward()
    assert x.grad is not None
    xb = x.detach().bfloat16()
    assert not _use_cpp_kernel(xb, layer.scale)  # bfloat16: the torch.compile / eager kernels
    layer_b = WaveletKANLinear(8, 4, batch_norm=False).bfloat16()
    assert layer_b(xb).dtype == torch.bfloat16
