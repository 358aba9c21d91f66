"""KAELayer against eq. 3 of the KAE paper, and the KAE autoencoder."""

import numpy as np
import pytest
import torch
from monai.networks import eval_mode
from monai.networks.utils import convert_to_torchscript

from monai_kan.layers import KAELayer
from monai_kan.networks import KAE


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_kae_layer_matches_equation_3(order):
    torch.manual_seed(0)
    layer = KAELayer(6, 4, order=order).double()
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    x = torch.randn(9, 6, dtype=torch.float64)
    # y = b + sum_k W_k x^k, W_k = weight[:, (k-1)*in : k*in]
    ref = layer.bias.detach().numpy() + sum(
        x.numpy() ** k @ layer.weight[:, (k - 1) * 6 : k * 6].detach().numpy().T for k in range(1, order + 1)
    )
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    # coefficients(): per edge polynomial, [..., k-1] multiplies x^k
    coef = layer.coefficients().detach().numpy()
    assert coef.shape == (4, 6, order)
    per_edge = sum(coef[None, :, :, k - 1] * x.numpy()[:, None, :] ** k for k in range(1, order + 1)).sum(-1)
    np.testing.assert_allclose(per_edge + layer.bias.detach().numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [1, 3])
def test_kae_layer_edge_constant_is_equation_3_with_a_constant_matrix(order):
    """constant="edge": y = C 1 + sum_k W_k x^k + b with one learnable C[j, i] per edge (the authors' layout), in
    float64 against numpy; the same function as the "output" layer whose bias is b + C 1, but not the same training:
    every C[j, i] gets the gradient of b_j."""
    torch.manual_seed(0)
    layer = KAELayer(6, 4, order=order, constant="edge").double()
    assert layer.edge_constant.shape == (4, 6) and layer.bias.shape == (4,)
    assert 0.005 < layer.edge_constant.std().item() < 0.02  # the authors' N(0, 0.01^2) for every coefficient
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(9, 6, dtype=torch.float64)
    w, c, b = (t.detach().numpy() for t in (layer.weight, layer.edge_constant, layer.bias))
    ref = c @ np.ones(6) + b + sum(x.numpy() ** k @ w[:, (k - 1) * 6 : k * 6].T for k in range(1, order + 1))
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-12, atol=1e-12)

    twin = KAELayer(6, 4, order=order).double()
    with torch.no_grad():
        twin.weight.copy_(layer.weight)
        twin.bias.copy_(layer.bias + layer.edge_constant.sum(1))
    torch.testing.assert_close(twin(x), layer(x), rtol=1e-12, atol=1e-12)
    layer(x).sum().backward()
    torch.testing.assert_close(layer.edge_constant.grad, layer.bias.grad[:, None].expand(4, 6))
    assert sum(p.numel() for p in layer.parameters()) == 4 * 6 * order + 4 + 4 * 6
    with pytest.raises(ValueError, match="constant"):
        KAELayer(6, 4, constant="per-edge")


def test_kae_options_apply_to_kae_layers_only():
    net = KAE(64, 8, order=2, constant="edge")
    assert all(m.constant == "edge" and m.order == 2 for m in net.modules() if isinstance(m, KAELayer))
    assert (KAE(64, 8).order, KAE(64, 8).constant) == (3, "output")
    for kwargs in (dict(order=2), dict(constant="edge")):
        with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}` does not apply to layer_type='linear'"):
            KAE(64, 8, layer_type="linear", **kwargs)
    KAE(64, 8, layer_type="linear", order=None)  # unset is fine


def test_kae_layer_gradcheck_and_leading_dims():
    layer = KAELayer(3, 2, order=3).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert layer(x).shape == (2, 5, 2)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(in_features=0, out_features=2), "in_features"), (dict(in_features=2, out_features=2, order=0), "order")],
)
def test_kae_layer_ill_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KAELayer(**kwargs)


@pytest.mark.parametrize("layer_type", ["kae", "linear", "kan"])
@pytest.mark.parametrize("hidden", [(), (32,)])
def test_kae_shapes_and_architecture(layer_type, hidden):
    net = KAE(784, 16, hidden_dims=hidden, layer_type=layer_type)
    x = torch.rand(5, 1, 28, 28)
    with eval_mode(net):
        z = net.encode(x)
        out = net(x)
        assert z.shape == (5, 16) and (z >= 0).all()  # ReLU on the latent
        assert out.shape == (5, 784) and ((out > 0) & (out < 1)).all()  # sigmoid output
        torch.testing.assert_close(net.decode(z), out)
    assert isinstance(net.encoder[-1], torch.nn.ReLU) and isinstance(net.decoder[-1], torch.nn.Sigmoid)
    assert len(net.encoder) == 2 * (len(hidden) + 1)


def test_kae_torchscript_round_trip(tmp_path):
    net = KAE(64, 8, hidden_dims=(16,), order=2).eval()
    x = torch.rand(4, 64)
    convert_to_torchscript(net, filename_or_obj=str(tmp_path / "kae.ts"), verify=True, inputs=[x])
    torch.testing.assert_close(torch.jit.load(str(tmp_path / "kae.ts"))(x), net(x))


def test_kae_bad_inputs():
    net = KAE(64, 8)
    with pytest.raises(ValueError, match="expected 64 features per sample, got 63"):
        net(torch.rand(2, 63))
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.ones(2, 64, dtype=torch.long))
    with pytest.raises(ValueError, match=r"latent of shape \(N, 8\)"):
        net.decode(torch.rand(2, 7))
    with pytest.raises(ValueError, match="layer_type"):
        KAE(64, 8, layer_type="bspline-ish")


def test_kae_training_lowers_reconstruction_error():
    torch.manual_seed(0)
    basis = torch.rand(4, 64)
    data = torch.sigmoid((torch.rand(256, 4) @ basis - 1.0) * 3)  # 4-dim manifold in [0, 1]^64
    net = KAE(64, 4, order=3)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(data), data)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first
