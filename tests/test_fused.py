"""torch.compile-fused kernels compute what the eager kernels compute (values and gradients)."""

import pytest
import torch

from monai_kan.layers import KANConv, KANLinear, set_fused_kernels
from monai_kan.layers import fused


@pytest.fixture
def fused_on():
    before = fused.fused_kernels_enabled()
    set_fused_kernels(True)
    yield
    set_fused_kernels(before)


def run(layer, x):
    x = x.clone().requires_grad_(True)
    layer.zero_grad()
    y = layer(x)
    y.square().sum().backward()
    return [y.detach(), x.grad] + [p.grad.clone() for p in layer.parameters()]


def test_fused_equals_eager(fused_on):
    torch.manual_seed(0)
    conv = KANConv(3, 3, 4, stride=2, bias=True)
    x = torch.randn(2, 3, 6, 8, 4)
    set_fused_kernels(False)
    eager = run(conv, x)
    set_fused_kernels(True)
    fused_out = run(conv, x)
    assert fused.fused_kernels_enabled(), "torch.compile failed on this machine; see the warning"
    assert "expand" in fused._COMPILED and "expand_grad" in fused._COMPILED
    for a, b in zip(eager, fused_out):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # the same compiled graphs serve another rank and the linear layer (inputs are viewed as (N, C, L))
    lin = KANLinear(5, 2)
    z = torch.randn(7, 5)
    set_fused_kernels(False)
    eager = run(lin, z)
    set_fused_kernels(True)
    for a, b in zip(eager, run(lin, z)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
