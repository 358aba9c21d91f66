"""KAN regulariser: values on known cases, data-aware bound, gradients, loss wrapper and bundle-config use."""

import math

import pytest
import torch
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss

from monai_kan.layers import KANConv, KANLinear
from monai_kan.tools.pruning import kan_edge_scores
from monai_kan.losses import KANRegularization, KANRegularizedLoss, kan_edge_magnitudes
from monai_kan.networks import KMUNet


def _pure(in_f=1, out_f=1):
    return KANLinear(in_f, out_f, base_activation=None, standalone_scale_spline=False).double()


def test_magnitude_of_constant_spline_is_exact():
    layer = _pure()
    with torch.no_grad():
        layer.spline_weight.fill_(-0.7)  # partition of unity: F = -0.7 on the grid interior
    assert kan_edge_magnitudes(layer).item() == pytest.approx(0.7, rel=1e-6)
    reg = KANRegularization(layer, l1_weight=1.0, entropy_weight=0.0, smoothness_weight=0.0, data_aware=False)
    assert reg().item() == pytest.approx(0.7, rel=1e-6)


def test_smoothness_second_differences():
    layer = _pure()
    n = layer.n_basis
    reg = KANRegularization(layer, l1_weight=0.0, entropy_weight=0.0, smoothness_weight=1.0, data_aware=False)
    with torch.no_grad():
        layer.spline_weight.copy_(torch.arange(n, dtype=torch.float64) * 0.3 - 1)  # a straight line: no penalty
    assert reg().item() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        layer.spline_weight.copy_(torch.arange(n, dtype=torch.float64) ** 2)  # second differences all 2
    assert reg().item() == pytest.approx(4.0 * (n - 2))


def test_entropy_and_reduction():
    layer = _pure(2, 1)
    with torch.no_grad():
        layer.spline_weight.fill_(1.0)
    kw = dict(l1_weight=0.0, smoothness_weight=0.0, data_aware=False)
    assert KANRegularization(layer, entropy_weight=1.0, **kw)().item() == pytest.approx(math.log(2))
    with torch.no_grad():
        layer.spline_weight[0, 1] = 0.0  # one edge carries the layer: zero entropy
    assert KANRegularization(layer, entropy_weight=1.0, **kw)().item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        layer.spline_weight.fill_(1.0)
    l1 = dict(entropy_weight=0.0, smoothness_weight=0.0, data_aware=False)
    assert KANRegularization(layer, reduction="sum", **l1)().item() == pytest.approx(2e-3)
    assert KANRegularization(layer, reduction="mean", **l1)().item() == pytest.approx(1e-3)


def test_data_aware_bound_and_gradients():
    torch.manual_seed(0)
    layer = KANConv(2, 3, 4, kernel_size=1)
    x = torch.randn(2, 3, 8, 8) * 0.7
    reg = KANRegularization(layer)
    plain = kan_edge_magnitudes(layer)
    layer(x)  # records per-channel basis means
    assert id(layer) in reg._stats
    bound = kan_edge_magnitudes(layer, *reg._stats[id(layer)])
    exact = kan_edge_scores(layer, x)  # E|F(x)| on the batch, per edge (1x1 kernel: the bound is per edge)
    assert torch.all(bound >= exact - 1e-5) and not torch.allclose(bound, plain)
    value = reg()
    value.backward()
    assert layer.spline_weight.grad.abs().sum() > 0 and layer.base_weight.grad.abs().sum() > 0
    assert set(reg.last_terms) == {"l1", "entropy", "smoothness"}
    reg.remove()
    layer(x * 3)
    assert torch.allclose(kan_edge_magnitudes(layer, *reg._stats[id(layer)]), bound)  # hooks gone


def test_wrapped_loss_and_bundle_config():
    torch.manual_seed(0)
    config = {
        "imports": ["$import monai_kan"],
        "network": {"_target_": "KMUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                    "channels": [4, 8], "strides": [2]},
        "loss_base": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
        "loss": {"_target_": "monai_kan.losses.KANRegularizedLoss", "loss": "@loss_base", "network": "@network",
                 "l1_weight": 0.01, "entropy_weight": 0.01, "smoothness_weight": 0.01},
    }
    parser = ConfigParser(config)
    net, loss = parser.get_parsed_content("network"), parser.get_parsed_content("loss")
    assert isinstance(net, KMUNet) and isinstance(loss, KANRegularizedLoss)
    assert not list(loss.parameters())  # the network is not a submodule of the loss
    x, y = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    pred = net(x)
    total = loss(pred, y)
    base = DiceCELoss(to_onehot_y=True, softmax=True)(pred, y)
    assert total.item() == pytest.approx(base.item() + loss.regularization().item(), rel=1e-5)
    total.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_errors():
    with pytest.raises(ValueError, match="reduction"):
        KANRegularization(_pure(), reduction="max")
    with pytest.raises(ValueError, match="l1_weight"):
        KANRegularization(_pure(), l1_weight=-1.0)
    with pytest.raises(ValueError, match="no B-spline KAN layers"):
        KANRegularization(torch.nn.Linear(2, 2))()
