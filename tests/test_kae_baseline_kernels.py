"""The fused kernels of the KAE baseline layers (FourierKAN features, Wav-KAN edges) against float64 references."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_matches_float64

from monai_kan.layers.fused import set_fused_kernels
from monai_kan.networks.fourier_kan import FourierKANLinear, fourier_features
from monai_kan.networks.wavelet_kan import WaveletKANLinear, mexican_hat_edges


def _fourier_loops(layer: FourierKANLinear, x: torch.Tensor) -> torch.Tensor:
    """``y_j = b_j + sum_i sum_k a_jik cos(k x_i) + c_jik sin(k x_i)``, one edge at a time, in float64."""
    c, x = layer.fourier_coeffs.detach().double(), x.double()
    y = torch.zeros(x.shape[0], layer.out_features, dtype=torch.double)
    for j in range(layer.out_features):
        for i in range(layer.in_features):
            for k in range(1, layer.grid_size + 1):
                y[:, j] += c[0, j, i, k - 1] * torch.cos(k * x[:, i]) + c[1, j, i, k - 1] * torch.sin(k * x[:, i])
    return y + layer.bias.detach().double()


@pytest.mark.parametrize("n", [1, 7, 33])
def test_fourier_fused_equals_loops_float64(fused_on, n):
    torch.manual_seed(n)
    layer = FourierKANLinear(5, 3, grid_size=4).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(n, 5, dtype=torch.double) * 2
    torch.testing.assert_close(layer(x), _fourier_loops(layer, x), rtol=1e-12, atol=1e-12)
    assert layer(x.view(n, 1, 5)).shape == (n, 1, 3)


def test_fourier_fused_gradients(fused_on):
    torch.manual_seed(0)
    layer = FourierKANLinear(4, 3, grid_size=3).double()
    x = torch.randn(6, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))
    assert torch.autograd.gradcheck(lambda c: fourier_features(x, torch.arange(1.0, 4.0, dtype=torch.double)) @ c,
                                    (torch.randn(24, 2, dtype=torch.double, requires_grad=True),))


def test_fourier_float32_fused_equals_eager_and_float64(fused_on):
    """The paper's encoder size in float32: fused and eager agree, both within float32 rounding of float64."""
    torch.manual_seed(0)
    layer = FourierKANLinear(784, 16)
    x = torch.rand(50, 784, requires_grad=True)
    y = layer(x)
    set_fused_kernels(False)
    y_eager = layer(x)
    ref = torch.nn.functional.linear(
        fourier_features(x.detach().double(), layer.frequencies.double()),
        layer.fourier_coeffs.detach().double().permute(1, 0, 3, 2).reshape(16, -1), layer.bias.detach().double())
    torch.testing.assert_close(y, y_eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    (gx_eager,) = torch.autograd.grad(y_eager, x, g)
    set_fused_kernels(True)
    (gx,) = torch.autograd.grad(layer(x), x, g)
    torch.testing.assert_close(gx, gx_eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(784, 16), (16, 784)])
def test_wavelet_fused_float32_equals_float64_reference(fused_on, shape):
    """Forward and every gradient of the fused Wav-KAN edges in float32 against the float64 autograd reference."""
    torch.manual_seed(0)
    n_in, n_out = shape
    layer = WaveletKANLinear(n_in, n_out, batch_norm=False)
    with torch.no_grad():
        layer.scale.uniform_(0.5, 1.5)
        layer.translation.normal_(0.0, 0.3)
    x = torch.randn(37, n_in, requires_grad=True)
    params = (x, layer.scale, layer.translation, layer.wavelet_weights)
    assert_matches_float64(layer(x), params, mexican_hat_edges)
