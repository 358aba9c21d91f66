"""KANLinear's lean path (``monai_kan.layers.fused.kan_linear``: one expansion kernel and matrix products) against its
reference path (the custom op of KANConv as a kernel-1 convolution): values and gradients in float64, autocast,
half precision, empty inputs, the recomputing backward for large expansions, and when each path is taken."""

import pytest
import torch

from monai_kan.layers import KANLinear
from monai_kan.layers import fused


def randomize(layer, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return layer


def values_and_grads(layer, x, lean: bool):
    """Output, input gradient and parameter gradients of ``sum(y^2)`` through the chosen path."""
    layer.zero_grad()
    x = x.detach().clone().requires_grad_(x.dtype.is_floating_point)
    layer._use_lean_path = (lambda rows: False) if not lean else KANLinear._use_lean_path.__get__(layer)
    try:
        y = layer(x)
        y.float().square().sum().backward()
    finally:
        del layer._use_lean_path
    return [y.detach(), x.grad] + [p.grad for p in layer.parameters()]


def count_lean_calls(monkeypatch):
    calls = []
    original = fused._KANLinearFunction.apply
    monkeypatch.setattr(fused._KANLinearFunction, "apply", lambda *a: calls.append(1) or original(*a))
    return calls


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(bias=True), dict(base_activation=None, spline_order=2, grid_size=4),
     dict(base_activation="tanh", standalone_scale_spline=False, grid_range=(-2.0, 2.0)), dict(spline_order=0)],
)
@pytest.mark.parametrize("shape", [(9, 7), (3, 4, 7), (1, 7), (70, 7)])
def test_lean_path_equals_reference_in_float64(kwargs, shape):
    torch.manual_seed(0)
    layer = randomize(KANLinear(7, 5, **kwargs).double())
    x = torch.randn(*shape, dtype=torch.float64) * 1.5  # also outside grid_range
    for fast, ref in zip(values_and_grads(layer, x, True), values_and_grads(layer, x, False)):
        torch.testing.assert_close(fast, ref, atol=1e-12, rtol=1e-12)


def test_lean_path_on_a_non_uniform_grid_and_with_fused_kernels_off():
    torch.manual_seed(0)
    layer = randomize(KANLinear(4, 3).double())
    with torch.no_grad():
        layer.knots.copy_((layer.knots + 0.1 * torch.rand_like(layer.knots)).sort(-1).values)
    layer.uniform_grid = False
    x = torch.randn(6, 4, dtype=torch.float64)
    for fast, ref in zip(values_and_grads(layer, x, True), values_and_grads(layer, x, False)):
        torch.testing.assert_close(fast, ref, atol=1e-12, rtol=1e-12)
    enabled = fused.fused_kernels_enabled()
    fused.set_fused_kernels(False)
    try:
        for fast, ref in zip(values_and_grads(layer, x, True), values_and_grads(layer, x, False)):
            torch.testing.assert_close(fast, ref, atol=1e-12, rtol=1e-12)
    finally:
        fused.set_fused_kernels(enabled)


def test_lean_path_gradcheck():
    torch.manual_seed(0)
    layer = randomize(KANLinear(3, 2, bias=True).double())
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, *ps: layer(inp), (x, *layer.parameters()), atol=1e-6)


def test_the_protocol_sizes_take_the_lean_path_and_match(monkeypatch):
    calls = count_lean_calls(monkeypatch)
    torch.manual_seed(0)
    layer = KANLinear(784, 16)
    x = torch.rand(256, 784)
    fast, ref = values_and_grads(layer, x, True), values_and_grads(layer, x, False)
    assert len(calls) == 1
    for a, b in zip(fast, ref):
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_large_expansions_are_recomputed_not_saved(monkeypatch):
    torch.manual_seed(0)
    layer = randomize(KANLinear(6, 4).double())
    x = torch.randn(40, 6, dtype=torch.float64)
    kept = values_and_grads(layer, x, True)
    monkeypatch.setattr(fused, "LINEAR_SAVED_EXPANSION_BYTES", 0)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        layer(x.requires_grad_(True))
    assert max(saved) < x.numel() * 2  # x (transposed) and the weights, not the 9x expansion
    for a, b in zip(values_and_grads(layer, x, True), kept):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_autocast_follows_the_reference_path():
    torch.manual_seed(0)
    layer = randomize(KANLinear(8, 5, bias=True))
    x = torch.randn(2, 6, 8)
    out = []
    for lean in (True, False):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out.append(values_and_grads(layer, x, lean))
    assert out[0][0].dtype == torch.bfloat16
    for a, b in zip(*out):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_layer_follows_the_reference_path(dtype):
    torch.manual_seed(0)
    layer = randomize(KANLinear(8, 5, bias=True)).to(dtype)
    x = torch.randn(12, 8).to(dtype)
    fast, ref = values_and_grads(layer, x, True), values_and_grads(layer, x, False)
    assert fast[0].dtype == dtype
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=3e-2)


def test_empty_inputs_and_no_grad(monkeypatch):
    calls = count_lean_calls(monkeypatch)
    layer = KANLinear(6, 4, bias=True)
    x = torch.randn(0, 6, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 4) and not calls  # no rows: the reference path
    y.sum().backward()
    assert x.grad.shape == (0, 6) and layer.spline_weight.grad.abs().sum() == 0
    assert layer(torch.randn(2, 0, 6)).shape == (2, 0, 4)
    z = torch.randn(3, 6)
    expected = values_and_grads(layer, z, False)[0]
    with torch.no_grad():
        torch.testing.assert_close(layer(z), expected, atol=1e-6, rtol=1e-5)
    assert calls


def test_compile_tracing_and_scripting_keep_the_reference_path(monkeypatch):
    calls = count_lean_calls(monkeypatch)
    layer = KANLinear(5, 3).eval()
    x = torch.randn(4, 5)
    with torch.no_grad():
        expected = layer(x)
        assert len(calls) == 1
        traced = torch.jit.trace(layer, x, check_trace=False)
        scripted = torch.jit.script(layer)
        assert len(calls) == 1
        torch.testing.assert_close(traced(x), expected)
        torch.testing.assert_close(scripted(x), expected)
        assert len(calls) == 1
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # as inside torch.compile(net)
        torch.testing.assert_close(layer(x), expected)
    assert len(calls) == 1
