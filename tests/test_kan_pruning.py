"""Edge scores, pruning that removes parameters, and pruned models that still run, fine-tune and export."""

import copy

import pytest
import torch
from monai.networks.utils import convert_to_torchscript

from monai_kan.layers import KANConv, KANLinear
from monai_kan.tools.pruning import PrunedKAN, freeze_pruned_edges, kan_edge_scores, prune_kan, pruned_edge_mask
from monai_kan.networks import KMUNet


def _only_edge(layer, o, i):
    """A copy of ``layer`` where only edge (o, i) is left (no bias): its output is that edge's contribution."""
    m = copy.deepcopy(layer)
    keep = torch.zeros(m.spline_weight.shape[:2], dtype=m.spline_weight.dtype)
    keep[o, i] = 1
    with torch.no_grad():
        m.spline_weight.mul_(keep.reshape(keep.shape + (1,) * (m.spline_weight.dim() - 2)))
        m.base_weight.mul_(keep.reshape(keep.shape + (1,) * (m.base_weight.dim() - 2)))
        if m.bias is not None:
            m.bias.zero_()
    return m


@pytest.mark.parametrize("layer", [
    KANLinear(3, 2, bias=True),
    KANConv(2, 3, 2, kernel_size=3, stride=2, bias=True),
    KANConv(1, 4, 4, kernel_size=3, groups=2, padding_mode="reflect"),
])
def test_edge_scores_are_mean_absolute_contributions(layer):
    torch.manual_seed(0)
    layer = layer.double()
    x = torch.randn((50, 3) if isinstance(layer, KANLinear) else (2, layer.in_channels) + (7,) * layer.spatial_dims,
                   dtype=torch.float64)
    scores = kan_edge_scores(layer, x)
    assert scores.shape == layer.spline_weight.shape[:2]
    for o in range(scores.shape[0]):
        for i in range(scores.shape[1]):
            y = _only_edge(layer, o, i)(x)
            y = y[..., o] if isinstance(layer, KANLinear) else y[:, o]
            assert scores[o, i].item() == pytest.approx(y.abs().mean().item(), rel=1e-9, abs=1e-12)


def test_prune_kan_stack_shrinks_exactly_and_exports():
    torch.manual_seed(0)
    net = torch.nn.Sequential(KANLinear(4, 8), torch.nn.Dropout(0.1), KANLinear(8, 8, bias=True), KANLinear(8, 2))
    x = torch.randn(64, 4)
    masked, rep_m = prune_kan(net, x, threshold=0.3, shrink=False)
    pruned, rep = prune_kan(net, x, threshold=0.3, metric=lambda m: float(m.eval()(x).abs().mean()))
    assert rep.params_removed > 0 and rep.params_after == sum(p.numel() for p in pruned.parameters())
    assert rep.params_before == sum(p.numel() for p in net.parameters())  # the input network is untouched
    assert rep_m.params_removed == 0 and rep_m.params_masked > 0
    assert any(isinstance(m, PrunedKAN) for m in pruned.modules())
    assert rep.metric_before is not None and rep.metric_after is not None and "physically removed" in str(rep)
    masked.eval(), pruned.eval()
    with torch.no_grad():
        assert torch.allclose(pruned(x), masked(x), atol=1e-6)  # shrinking only drops what masking zeroed
    ts = convert_to_torchscript(pruned, verify=True, inputs=[x])
    assert torch.allclose(ts(x), pruned(x), atol=1e-6)


def test_prune_trained_kmunet_runs_finetunes_and_exports():
    torch.manual_seed(0)
    net = KMUNet(2, 1, 2, channels=(4, 8), strides=(2,))
    x = torch.randn(2, 1, 16, 16)
    y = (x > 0.5).long()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y[:, 0]).backward()
        opt.step()
    pruned, rep = prune_kan(net, x, threshold=0.6)
    assert sum(v["pruned_edges"] for v in rep.layers.values()) > 0
    assert rep.params_removed > 0 and rep.params_removed + rep.params_after == rep.params_before
    # fine-tuning keeps the masked edges at zero (their gradients are zeroed)
    before = {n: pruned_edge_mask(m).clone() for n, m in pruned.named_modules() if hasattr(m, "spline_weight")}
    opt = torch.optim.Adam(pruned.parameters(), 1e-2)
    pruned.train()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(pruned(x), y[:, 0]).backward()
    opt.step()
    for n, m in pruned.named_modules():
        if n in before:
            assert torch.equal(pruned_edge_mask(m) & before[n], before[n])
    pruned.eval()
    ts = convert_to_torchscript(pruned, verify=True, inputs=[x])
    assert ts(x).shape == (2, 2, 16, 16)


def test_threshold_zero_and_freeze_count():
    net = torch.nn.Sequential(KANLinear(3, 3), KANLinear(3, 1))
    x = torch.randn(16, 3)
    same, rep = prune_kan(net, x, threshold=0.0)
    assert rep.params_removed == 0 and rep.params_masked == 0 and rep.output_change == 0.0
    with torch.no_grad():
        same[0].spline_weight[1, 2] = 0
        same[0].base_weight[1, 2] = 0
    assert freeze_pruned_edges(same) == 1
    with pytest.raises(ValueError, match="threshold"):
        prune_kan(net, x, threshold=-1)
