"""KAEConv against its formula (per-power convolutions, float64) and ConvKAE: shapes, twin, TorchScript, MetaTensor."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.utils import convert_to_torchscript

from monai_kan.layers import KAEConv
from monai_kan.networks import ConvKAE


def _by_edges(layer: KAEConv, x: torch.Tensor) -> torch.Tensor:
    """``b + sum_{c_in, o, k} W_k[c_out, c_in, o] x[., c_in, . + o]^k`` by explicit loops over edges (2D, stride 1,
    zero padding of ``x`` itself, so padded positions contribute 0 to every power)."""
    coef = layer.coefficients()  # (out, in, kh, kw, p)
    out_c, in_c, kh, kw, p = coef.shape
    xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
    h, w = x.shape[2:]
    y = torch.zeros(x.shape[0], out_c, h, w, dtype=x.dtype)
    for j in range(out_c):
        for i in range(in_c):
            for a in range(kh):
                for b in range(kw):
                    patch = xp[:, i, a : a + h, b : b + w]
                    y[:, j] += sum(coef[j, i, a, b, k - 1] * patch**k for k in range(1, p + 1))
    return y + layer.conv.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_kae_conv_is_a_polynomial_on_every_edge(order):
    torch.manual_seed(0)
    layer = KAEConv(2, 3, 2, kernel_size=3, order=order).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _by_edges(layer, x), rtol=1e-12, atol=1e-12)
    assert layer.coefficients().shape == (2, 3, 3, 3, order)


def test_kae_conv_order_one_is_nn_conv_and_higher_powers_start_small():
    torch.manual_seed(0)
    layer = KAEConv(3, 4, 5, kernel_size=3, stride=2, order=1)
    conv = nn.Conv3d(4, 5, 3, stride=2, padding=1)
    conv.load_state_dict({"weight": layer.conv.weight, "bias": layer.conv.bias})
    x = torch.randn(2, 4, 7, 8, 9)
    torch.testing.assert_close(layer(x), conv(x))
    cubic = KAEConv(2, 16, 16, order=3)
    w = cubic.conv.weight
    assert w[:, 16:].abs().max() < 0.11 * w[:, :16].abs().max()  # W_2, W_3 at a tenth of W_1's scale


def test_kae_conv_arguments_and_inputs():
    with pytest.raises(ValueError, match="spatial_dims"):
        KAEConv(4, 1, 1)
    with pytest.raises(ValueError, match="order"):
        KAEConv(2, 1, 1, order=0)
    layer = KAEConv(2, 2, 3)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 2"):
        layer(torch.rand(1, 3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(1, 2, 8, 8, dtype=torch.long))
    assert layer(torch.rand(0, 2, 8, 8)).shape == (0, 3, 8, 8)


@pytest.mark.parametrize(
    "spatial_dims, channels, shape",
    [(2, (8, 16), (2, 1, 37, 53)), (2, (8,), (1, 1, 5, 7)), (2, (4, 8, 8), (1, 1, 1, 1)), (3, (4, 8), (1, 1, 9, 10, 11))],
)
def test_conv_kae_keeps_any_shape(spatial_dims, channels, shape):
    net = ConvKAE(spatial_dims, channels=channels)
    y = net(torch.rand(shape))
    assert y.shape == shape and torch.isfinite(y).all()


def test_conv_kae_residual_and_plain_twin():
    torch.manual_seed(0)
    net = ConvKAE(2, channels=(8, 16), order=3)
    with torch.no_grad():
        net.head.conv.weight.zero_()
        net.head.conv.bias.zero_()
    x = torch.rand(2, 1, 20, 24)
    torch.testing.assert_close(net(x), x)  # residual: a zero head is the identity
    twin = ConvKAE(2, channels=(8, 16), order=1)
    assert all(m.order == 1 for m in twin.modules() if isinstance(m, KAEConv))
    kae_params = sum(p.numel() for p in net.parameters())
    twin_params = sum(p.numel() for p in twin.parameters())
    biases = sum(m.conv.bias.numel() for m in net.modules() if isinstance(m, KAEConv))
    assert kae_params - biases == 3 * (twin_params - biases)  # the polynomial edges: p weights per edge


def test_conv_kae_torchscript_metatensor_and_errors(tmp_path):
    net = ConvKAE(2, channels=(4, 8)).eval()
    x = torch.rand(2, 1, 19, 22)
    convert_to_torchscript(net, filename_or_obj=str(tmp_path / "convkae.ts"), verify=True, inputs=[x])
    torch.testing.assert_close(torch.jit.load(str(tmp_path / "convkae.ts"))(x), net(x))
    meta = MetaTensor(x, affine=torch.diag(torch.tensor([0.7, 0.7, 1.0, 1.0])))
    y = net(meta)
    assert isinstance(y, MetaTensor) and torch.equal(y.affine, meta.affine)
    assert net(torch.rand(0, 1, 8, 8)).shape == (0, 1, 8, 8)
    with pytest.raises(ValueError, match="spatial_dims"):
        ConvKAE(1)
    with pytest.raises(ValueError, match="channels"):
        ConvKAE(2, channels=())
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1"):
        net(torch.rand(1, 2, 8, 8))
