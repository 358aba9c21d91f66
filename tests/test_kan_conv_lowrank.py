"""The low-rank (separable) KAN convolution (``KANConv(..., rank=r)``), control-point initialisation
(``spline_init``) and the separate learning rate of the control points (``kan_parameter_groups``).

The low-rank layer is checked in float64 against an explicit per-edge computation: scipy evaluates the ``r`` shared
functions of each input channel from ``knots`` and ``shared_spline_weight``, and a loop over output channels, input
channels and kernel offsets mixes them with ``spline_weight`` and adds the base branch (KM-UNet formulation:
V. Kumar, 2025; the low-rank form is its "future improvements" item)."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.interpolate import BSpline

from monai_kan.basis import bspline_basis
from monai_kan.layers import KANConv
from monai_kan.networks import KMUNet
from monai_kan.tools import extend_grid, kan_parameter_groups, prune_kan, update_grid

from helpers import saved_bytes


def randomize(layer: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return layer


def shared_function(layer: KANConv, c: int, s: int, values: np.ndarray) -> np.ndarray:
    """``phi_{c,s}(values)`` by scipy from the layer's knots and ``shared_spline_weight``."""
    k = layer.spline_order
    knots = layer.knots[c].detach().numpy()
    coef = layer.shared_spline_weight[c, s].detach().numpy()
    pad = np.arange(1, k + 1, dtype=float)  # zero pieces widen scipy's base interval to the whole knot span
    knots = np.concatenate([knots[0] - pad[::-1], knots, knots[-1] + pad])
    coef = np.concatenate([np.zeros(k), coef, np.zeros(k)])
    return np.nan_to_num(BSpline(knots, coef, k, extrapolate=False)(values))


def reference(layer: KANConv, x: torch.Tensor) -> np.ndarray:
    """``y[o] = sum_{c, offset} w_base act(x_c) + sum_s m[o, c, offset, s] phi_{c,s}(x_c)``, edge by edge."""
    x = x.detach().numpy()
    d, r = layer.spatial_dims, layer.rank
    if layer.padding_mode != "zeros":
        xp = torch.nn.functional.pad(torch.from_numpy(x), layer._pad_pairs, mode=layer.padding_mode).numpy()
    else:
        xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in layer.padding], constant_values=np.nan)
    ks, st, dl = layer.kernel_size, layer.stride, layer.dilation
    out_size = [(xp.shape[2 + a] - dl[a] * (ks[a] - 1) - 1) // st[a] + 1 for a in range(d)]
    y = np.zeros((x.shape[0], layer.out_channels, *out_size))
    cin_g = layer.in_channels // layer.groups
    mix = layer.spline_weight.detach().numpy()
    for o in range(layer.out_channels):
        group = o // (layer.out_channels // layer.groups)
        for i_local in range(cin_g):
            c = group * cin_g + i_local
            for kpos in itertools.product(*[range(k) for k in ks]):
                window = tuple(slice(kpos[a] * dl[a], kpos[a] * dl[a] + st[a] * (out_size[a] - 1) + 1, st[a])
                               for a in range(d))
                v = xp[(slice(None), c) + window]
                edge = sum(mix[(o, i_local) + kpos + (s,)] * shared_function(layer, c, s, v) for s in range(r))
                if layer.base_weight is not None:
                    base = layer.base_activation(torch.from_numpy(np.nan_to_num(v))).numpy()
                    edge = edge + layer.base_weight[(o, i_local) + kpos].item() * base
                y[:, o] += np.where(np.isnan(v), 0.0, edge)  # zero padding contributes nothing
    if layer.bias is not None:
        y += layer.bias.detach().numpy().reshape((1, -1) + (1,) * d)
    return y


CASES = [
    (1, dict(rank=1, kernel_size=3), (9,)),
    (1, dict(rank=3, kernel_size=5, stride=2, dilation=2, spline_order=2, grid_size=4), (15,)),
    (2, dict(rank=2, kernel_size=3, stride=2), (7, 6)),
    (2, dict(rank=2, kernel_size=3, groups=2, bias=True, grid_range=(-2.0, 2.0)), (5, 5)),
    (2, dict(rank=1, kernel_size=(3, 1), base_activation=None, spline_order=1), (6, 5)),
    (2, dict(rank=2, kernel_size=3, padding_mode="reflect", base_activation="tanh"), (5, 6)),
    (3, dict(rank=2, kernel_size=3), (4, 5, 3)),
    (3, dict(rank=1, kernel_size=(1, 3, 3), stride=(1, 2, 2), spline_order=0), (3, 6, 5)),
]


@pytest.mark.parametrize("dims,kwargs,size", CASES)
def test_low_rank_conv_matches_per_edge_reference(dims, kwargs, size):
    torch.manual_seed(0)
    layer = randomize(KANConv(dims, 4, 6, **kwargs).double())
    x = torch.randn(2, 4, *size, dtype=torch.float64) * 1.5  # also outside grid_range
    ref = reference(layer, x)
    out = layer(x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-10, rtol=1e-10)
    with torch.no_grad():  # inference, and the plain (TorchScript) path
        np.testing.assert_allclose(layer(x).numpy(), ref, atol=1e-10, rtol=1e-10)
        layer._use_fast_path = lambda inp: False
        np.testing.assert_allclose(layer(x).numpy(), ref, atol=1e-10, rtol=1e-10)


def test_low_rank_layer_is_the_full_layer_of_its_effective_coefficients():
    """``coefficients()`` (what grid update, regularisation, pruning and plots read) describes the same function."""
    torch.manual_seed(0)
    low = randomize(KANConv(2, 4, 6, kernel_size=3, groups=2, rank=2, bias=True).double())
    full = KANConv(2, 4, 6, kernel_size=3, groups=2, bias=True, standalone_scale_spline=False).double()
    with torch.no_grad():
        full.spline_weight.copy_(low.coefficients())
        full.base_weight.copy_(low.base_weight)
        full.bias.copy_(low.bias)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64) * 1.5
    torch.testing.assert_close(low(x), full(x), atol=1e-10, rtol=1e-10)
    assert low.coefficients().shape == full.spline_weight.shape
    xs = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None].expand(-1, 4)
    torch.testing.assert_close(low.edge_functions(xs), full.edge_functions(xs))


def test_shapes_parameters_and_macs():
    conv = KANConv(3, 4, 6, kernel_size=3, rank=2, grid_size=5, spline_order=3)
    assert conv.spline_weight.shape == (6, 4, 3, 3, 3, 2) and conv.shared_spline_weight.shape == (4, 2, 8)
    assert conv.spline_scaler is None and conv.grid_weight is conv.shared_spline_weight
    assert "rank=2" in repr(conv)
    full = KANConv(3, 4, 6, kernel_size=3)
    n_low, n_full = (sum(p.numel() for p in m.parameters()) for m in (conv, full))
    assert n_low == 6 * 4 * 27 * (2 + 1) + 4 * 2 * 8  # mixing + base weights, shared control points
    assert n_full == 6 * 4 * 27 * (8 + 2)  # control points, base weight, scaler
    x = torch.randn(1, 4, 5, 5, 5)
    y = conv(x)
    # (b + r) per edge and output element, plus r * (G + k) per input element for the shared functions
    assert conv.macs(x.shape, y.shape) == y.numel() * 4 * 27 * 3 + x.numel() * 2 * 8
    assert full.macs(x.shape, full(x).shape) == y.numel() * 4 * 27 * 9


@pytest.mark.parametrize("rank", [None, 0, -1, 1.5, True])
def test_bad_rank_is_named(rank):
    if rank is None:
        KANConv(2, 2, 2, rank=rank)
        return
    with pytest.raises(ValueError, match="`rank`"):
        KANConv(2, 2, 2, rank=rank)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_empty_batch(dims):
    layer = KANConv(dims, 3, 5, rank=2)
    x = torch.randn(0, 3, *([4] * dims), requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 5) + (4,) * dims
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_autocast_bfloat16_rounds_where_a_conv_would():
    torch.manual_seed(0)
    layer = KANConv(2, 4, 6, rank=2)
    x = torch.randn(2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()  # the parameters stay float32 and get float32 gradients
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())
    with torch.no_grad():
        ref = layer(x)
        assert float((y.detach().float() - ref).abs().max()) < 0.05 * float(ref.abs().max())
        with torch.autocast("cpu", dtype=torch.bfloat16):  # float64 stays float64, as nn.Conv does
            assert layer.double()(x.double()).dtype == torch.float64


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_torchscript_round_trip(dims, tmp_path):
    layer = KANConv(dims, 2, 3, stride=2, rank=2, padding_mode="replicate" if dims == 2 else "zeros").eval()
    x = torch.randn(2, 2, *([6] * dims))
    scripted = torch.jit.script(layer)
    path = tmp_path / "layer.ts"
    torch.jit.save(scripted, str(path))
    torch.testing.assert_close(torch.jit.load(str(path))(x), layer(x))


@pytest.mark.parametrize("kwargs", [dict(rank=1), dict(rank=2, groups=2, bias=True, stride=2),
                                    dict(rank=2, base_activation=None)])
def test_gradcheck(kwargs):
    torch.manual_seed(0)
    layer = randomize(KANConv(2, 2, 2, **kwargs).double())
    x = (torch.randn(1, 2, 4, 4, dtype=torch.float64) * 1.2).requires_grad_(True)
    params = list(layer.parameters())
    assert torch.autograd.gradcheck(lambda inp, *ps: layer(inp), (x, *params), atol=1e-6)


def test_custom_backward_equals_autograd_and_saves_little():
    torch.manual_seed(0)
    layer = randomize(KANConv(2, 3, 4, stride=2, bias=True, rank=2).double())
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    fast = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    layer._use_fast_path = lambda inp: False
    layer(x).square().sum().backward()
    for a, b in zip(fast, [x.grad] + [p.grad for p in layer.parameters()]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # the basis expansion is recomputed, only the (1 + r) feature maps are kept
    low, conv = KANConv(2, 8, 8, rank=2), nn.Conv2d(8, 8, 3, padding=1, bias=False)
    xi = torch.randn(2, 8, 32, 32, requires_grad=True)
    assert saved_bytes(lambda: low(xi)) <= 4.5 * saved_bytes(lambda: conv(xi))


# --- the tools: grid update and extension, pruning, regularisation, state dict --------------------------------------


def test_grid_update_and_extension_preserve_the_low_rank_functions():
    torch.manual_seed(0)
    layer = KANConv(2, 3, 4, rank=2).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 0.8
    y0 = layer(x)
    mix = layer.spline_weight.detach().clone()
    refit = update_grid(layer, x)
    assert refit.applied and refit.replaced is None and refit.rel_error < 0.05
    torch.testing.assert_close(layer.spline_weight, mix)  # only the shared functions and knots move
    torch.testing.assert_close(layer(x), y0, atol=0.05 * float(y0.abs().max()), rtol=0)
    shared = layer.shared_spline_weight
    k = layer.spline_order
    lo, hi = layer.knots[:, k].max(), layer.knots[:, -k - 1].min()
    inside = x.clamp(float(lo), float(hi))  # the grid interior of every channel
    y1 = layer(inside)
    refit = extend_grid(layer, 10)  # refines the grid interior: exact there for G' a multiple of G
    assert refit.replaced is shared and layer.shared_spline_weight.shape == (3, 2, 13)
    assert layer.spline_weight.shape[-1] == 2 and layer.grid_size == 10
    torch.testing.assert_close(layer(inside), y1, atol=1e-8, rtol=1e-8)
    # a checkpoint saved after the extension loads into a layer built with the original grid size
    fresh = KANConv(2, 3, 4, rank=2).double()
    fresh.load_state_dict(layer.state_dict())
    assert fresh.grid_size == 10
    torch.testing.assert_close(fresh(x), layer(x))
    for other in (KANConv(2, 3, 4).double(), KANConv(2, 3, 4, rank=1).double()):
        before = [t.clone() for t in other.state_dict().values()]
        with pytest.raises(RuntimeError, match="rank=2, this layer has rank="):
            other.load_state_dict(layer.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(before, other.state_dict().values()))  # left unchanged


def test_pruning_regularisation_and_summaries_work_on_low_rank_networks():
    from monai_kan.losses import KANRegularization
    from monai_kan.visualize.analysis import layer_summary

    torch.manual_seed(0)
    net = KMUNet(2, 1, 2, channels=(4, 8), strides=(2,), rank=1)
    x = torch.randn(2, 1, 16, 16)
    pruned, report = prune_kan(net, x, threshold=0.3)
    assert report.layers and pruned(x).shape == (2, 2, 16, 16)
    reg = KANRegularization(net)
    net(x)
    loss = reg()
    loss.backward()
    assert net.encoders[0].conv.shared_spline_weight.grad is not None
    summary = layer_summary(net.encoders[1].conv, None)
    assert summary["edge_scores"].shape == (8, 4)
    pytest.importorskip("matplotlib")
    from monai_kan.visualize.plot import plot_edge_kernel, plot_layer_edges

    plot_layer_edges(net.encoders[1].conv, "encoders.1.conv", summary)  # kernel layout read from spline_weight
    plot_edge_kernel(net.encoders[1].conv, 7, 3, "encoders.1.conv")


# --- KMUNet and configs --------------------------------------------------------------------------------------------


def test_kmunet_low_rank_by_name_in_a_bundle_config():
    from monai.bundle import ConfigParser
    from monai.networks.layers.factories import Conv

    import monai_kan  # noqa: F401  (short names)

    net_def = {"_target_": "KMUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
               "strides": [2], "rank": 2, "spline_init": "zero"}
    net = ConfigParser({"imports": ["$import monai_kan"], "net": net_def}).get_parsed_content("net")
    convs = [m for m in net.modules() if isinstance(m, KANConv)]
    assert convs and all(m.rank == 2 for m in convs)
    assert all(float(m.shared_spline_weight.abs().max()) == 0 for m in convs)
    full = KMUNet(2, 1, 3, channels=(4, 8), strides=(2,))
    assert sum(p.numel() for p in net.parameters()) < 0.5 * sum(p.numel() for p in full.parameters())
    assert net(torch.randn(1, 1, 8, 8)).shape == (1, 3, 8, 8)
    assert Conv["kanconv", 3](2, 3, kernel_size=3, rank=1).rank == 1


# --- control-point initialisation --------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [None, 2])
def test_spline_init_options(rank):
    def make(init, **kw):
        torch.manual_seed(0)
        return KANConv(2, 3, 4, rank=rank, spline_init=init, **kw).double()

    default, noise, zero, linear, silu = (make(i) for i in (None, "noise", "zero", "linear", "silu"))
    for m in (noise, zero, linear, silu):  # the same random numbers: the base weights are identical
        torch.testing.assert_close(m.base_weight, default.base_weight)
    torch.testing.assert_close(noise.coefficients(), default.coefficients())  # with a base branch, noise is default
    assert float(zero.coefficients().abs().max()) == 0.0
    # zero: the layer is its plain twin w * SiLU(x) (conv_type="standard" of KMUNet)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    twin = torch.nn.functional.conv2d(torch.nn.functional.silu(x), zero.base_weight, padding=1)
    torch.testing.assert_close(zero(x), twin)
    # linear / silu: every function of the grid weight is the line x / SiLU on the grid interior, up to the noise
    xs = zero.grid_interior(50)  # (50, C)
    noise_bound = 0.1 / 5 * 1.01  # scale_noise / G, summed over a partition of unity

    def shapes(m):  # every function of the grid weight (before its Kaiming scale) at xs, (functions, 50)
        return m.grid_weight.detach().reshape(-1, m.n_basis) @ bspline_basis(xs, m.knots, 3)[:, 0].t()

    assert float((shapes(linear) - xs[:, 0]).abs().max()) < noise_bound
    assert float((shapes(silu) - torch.nn.functional.silu(xs[:, 0])).abs().max()) < noise_bound + 1e-3
    # without a base branch the default stays the line (a pure KAN starts as its linear counterpart)
    torch.manual_seed(0)
    pure = KANConv(2, 3, 4, rank=rank, base_activation=None).double()
    assert float((shapes(pure) - xs[:, 0]).abs().max()) < noise_bound
    with pytest.raises(ValueError, match="`spline_init`"):
        make("no-such-init")


# --- separate learning rates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [None, 1])
def test_parameter_groups_cover_every_parameter_once(rank):
    net = KMUNet(2, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, rank=rank)
    groups = kan_parameter_groups(net, 0.003, 10.0)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in net.parameters()}
    assert len(groups) == 2 and "lr" not in groups[0] and groups[1]["lr"] == pytest.approx(0.03)
    spline = {id(p) for g in groups[1:] for p in g["params"]}
    for m in net.modules():
        if isinstance(m, KANConv):
            assert id(m.spline_weight) in spline and id(m.base_weight) not in spline
            if rank:
                assert id(m.shared_spline_weight) in spline
            else:
                assert id(m.spline_scaler) in spline
    opt = torch.optim.Adam(groups, lr=0.003)
    assert [g["lr"] for g in opt.param_groups] == [0.003, pytest.approx(0.03)]
    # 1.0: exactly network.parameters() in one group (the optimizer state of older checkpoints still fits)
    one = kan_parameter_groups(net, 0.003)
    assert len(one) == 1 and [id(p) for p in one[0]["params"]] == [id(p) for p in net.parameters()]
    plain = nn.Conv2d(1, 2, 3)
    assert len(kan_parameter_groups(plain, 0.01, 0.1)) == 1  # no KAN layer: one group
    for bad in ({"lr": 0.0}, {"spline_lr_scale": -1.0}, {"spline_lr_scale": float("nan")}):
        args = {"lr": 0.003, "spline_lr_scale": 2.0, **bad}
        with pytest.raises(ValueError, match=f"`{next(iter(bad))}`"):
            kan_parameter_groups(net, **args)


@pytest.mark.parametrize("dims", [2, 3])
def test_bundle_train_config_takes_spline_lr_scale(dims):
    from pathlib import Path

    from monai.bundle import ConfigParser

    config = Path(__file__).parents[1] / "bundles" / f"kmunet_{dims}d_segmentation" / "configs" / "train.json"
    parser = ConfigParser()
    parser.read_config(str(config))
    assert parser["spline_lr_scale"] == 1.0  # the default: one group, as `network.parameters()` was
    assert len(parser.get_parsed_content("optimizer").param_groups) == 1
    parser["spline_lr_scale"] = 0.1
    parser.parse(True)
    opt = parser.get_parsed_content("optimizer", lazy=False)
    lr = parser["learning_rate"]
    assert [g["lr"] for g in opt.param_groups] == [lr, pytest.approx(0.1 * lr)]
    assert parser.get_parsed_content("lr_scheduler", lazy=False).base_lrs == [lr, pytest.approx(0.1 * lr)]


def test_network_grid_tools_keep_the_optimizer_groups_of_low_rank_layers():
    from monai_kan.tools import extend_network_grids, update_network_grids

    torch.manual_seed(0)
    net = KMUNet(2, 1, 2, channels=(4, 8), strides=(2,), rank=2)
    opt = torch.optim.Adam(kan_parameter_groups(net, 0.01, 0.1), lr=0.01)
    x = torch.randn(2, 1, 16, 16)
    net(x).square().mean().backward()
    opt.step()
    conv = net.encoders[0].conv
    assert conv.shared_spline_weight in opt.state
    update_network_grids(net, x, optimizer=opt)  # the refitted shared functions lose their (old-basis) state
    assert conv.shared_spline_weight not in opt.state and conv.spline_weight in opt.state
    old = conv.shared_spline_weight
    extend_network_grids(net, 10, x, optimizer=opt)
    assert conv.shared_spline_weight is not old and conv.shared_spline_weight.shape[-1] == 13
    spline_group = opt.param_groups[1]
    assert spline_group["lr"] == pytest.approx(0.001)
    assert any(p is conv.shared_spline_weight for p in spline_group["params"])
    assert not any(p is old for g in opt.param_groups for p in g["params"])
    net(x).square().mean().backward()
    opt.step()
