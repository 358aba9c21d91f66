"""FourierKANLinear and WaveletKANLinear: values against plain formulas, gradients, TorchScript, KAE registration."""

from __future__ import annotations

import math

import pytest
import torch

from monai_kan.networks.fourier_kan import FourierKANLinear
from monai_kan.layers.fused import fused_kernels_enabled, set_fused_kernels
from monai_kan.networks.wavelet_kan import WaveletKANLinear, _MexicanHatEdges, mexican_hat_edges
from monai_kan.networks import KAE


def _fourier_by_loops(layer: FourierKANLinear, x: torch.Tensor) -> torch.Tensor:
    c = layer.fourier_coeffs
    y = torch.zeros(x.shape[0], layer.out_features, dtype=x.dtype)
    for j in range(layer.out_features):
        for i in range(layer.in_features):
            for k in range(1, layer.grid_size + 1):
                y[:, j] += c[0, j, i, k - 1] * torch.cos(k * x[:, i]) + c[1, j, i, k - 1] * torch.sin(k * x[:, i])
    return y + layer.bias


def test_fourier_matches_definition_and_shapes():
    torch.manual_seed(0)
    layer = FourierKANLinear(3, 2, grid_size=4).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, 3, dtype=torch.double)
    torch.testing.assert_close(layer(x), _fourier_by_loops(layer, x))
    assert layer(torch.randn(2, 7, 3, dtype=torch.double)).shape == (2, 7, 2)
    assert sum(p.numel() for p in layer.parameters()) == 2 * 2 * 3 * 4 + 2


def test_fourier_initialisation_and_options():
    torch.manual_seed(0)
    layer = FourierKANLinear(400, 50, grid_size=5)
    assert layer.fourier_coeffs.std().item() == pytest.approx(1 / math.sqrt(400 * 5), rel=0.05)
    assert torch.equal(layer.bias, torch.zeros(50))
    assert FourierKANLinear(4, 3, bias=False).bias is None
    smooth = FourierKANLinear(400, 50, grid_size=5, smooth_initialization=True)
    ratio = smooth.fourier_coeffs[..., 0].std() / smooth.fourier_coeffs[..., 4].std()
    assert ratio.item() == pytest.approx(25.0, rel=0.15)  # 1 / k^2 decay
    for bad in ({"in_features": 0}, {"grid_size": 0}, {"out_features": 2.5}):
        kwargs = {"in_features": 3, "out_features": 2, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            FourierKANLinear(**kwargs)
    with pytest.raises(ValueError, match="expected input"):
        layer(torch.randn(2, 3))


def test_fourier_gradients_and_torchscript():
    layer = FourierKANLinear(4, 3, grid_size=3).double()
    x = torch.randn(6, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))
    layer(x).sum().backward()
    assert layer.fourier_coeffs.grad is not None and layer.bias.grad is not None
    scripted = torch.jit.script(layer)
    torch.testing.assert_close(scripted(x), layer(x))


def test_mexican_hat_reference_against_formula():
    x = torch.tensor([[0.0, 1.0]], dtype=torch.double)
    s = torch.tensor([[1.0, 2.0]], dtype=torch.double)
    t = torch.tensor([[0.0, 1.0]], dtype=torch.double)
    w = torch.tensor([[1.0, 3.0]], dtype=torch.double)
    c = 2.0 / (math.sqrt(3.0) * math.pi**0.25)
    # u = (0 - 0)/1 = 0 -> psi = -c ; u = (1 - 1)/2 = 0 -> psi = -c
    expected = c * (-1.0) * 1.0 + c * (-1.0) * 3.0
    torch.testing.assert_close(mexican_hat_edges(x, s, t, w), torch.tensor([[expected]], dtype=torch.double))


@pytest.mark.parametrize("fused", [False, True])
def test_mexican_hat_function_matches_autograd(fused):
    before = fused_kernels_enabled()
    set_fused_kernels(fused)
    try:
        torch.manual_seed(0)
        x = torch.randn(9, 5, dtype=torch.double, requires_grad=True)
        s = (torch.rand(3, 5, dtype=torch.double) + 0.5).requires_grad_()
        t = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
        w = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
        torch.testing.assert_close(_MexicanHatEdges.apply(x, s, t, w), mexican_hat_edges(x, s, t, w))
        assert torch.autograd.gradcheck(_MexicanHatEdges.apply, (x, s, t, w))
    finally:
        set_fused_kernels(before)


def test_wavelet_layer_shapes_params_and_batch_norm():
    torch.manual_seed(0)
    layer = WaveletKANLinear(6, 4)
    assert torch.equal(layer.scale, torch.ones(4, 6)) and torch.equal(layer.translation, torch.zeros(4, 6))
    assert sum(p.numel() for p in layer.parameters()) == 3 * 6 * 4 + 2 * 4
    y = layer(torch.randn(32, 6))
    assert y.shape == (32, 4)
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-5, rtol=0)  # batch norm in training mode
    assert layer(torch.randn(2, 5, 6)).shape == (2, 5, 4)
    plain = WaveletKANLinear(6, 4, batch_norm=False)
    x = torch.randn(3, 6)
    torch.testing.assert_close(plain(x), mexican_hat_edges(x, plain.scale, plain.translation, plain.wavelet_weights))
    with pytest.raises(ValueError, match="in_features"):
        WaveletKANLinear(0, 4)
    with pytest.raises(ValueError, match="expected input"):
        layer(torch.randn(3, 5))


def test_wavelet_gradients_and_torchscript():
    layer = WaveletKANLinear(5, 3)
    x = torch.randn(8, 5, requires_grad=True)
    layer(x).square().sum().backward()
    for p in (x, layer.scale, layer.translation, layer.wavelet_weights):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    layer.eval()
    scripted = torch.jit.script(layer)
    xe = torch.randn(4, 5)
    torch.testing.assert_close(scripted(xe), layer(xe))


@pytest.mark.parametrize("layer_type", ["fourierkan", "wavkan"])
def test_registered_in_kae(layer_type):
    model = KAE(784, 16, layer_type=layer_type)
    x = torch.rand(4, 1, 28, 28)
    out = model(x)
    assert out.shape == (4, 784) and (out >= 0).all() and (out <= 1).all()
    assert model.encode(x).shape == (4, 16)
