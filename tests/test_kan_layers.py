"""KANLinear and KANConv against a naive evaluation of their formula (the KM-UNet formulation of a KAN convolution;
KAN: Liu et al., arXiv:2404.19756) with scipy splines built from the layers' own ``knots`` and ``coefficients()``
(float64), plus gradients, TorchScript, memory and argument checks."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.interpolate import BSpline

from monai_kan.layers import KANConv, KANLinear
from monai_kan.layers.fused import kan_convolution

from helpers import saved_bytes


def randomize(layer: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter a non-trivial value so that no term of the formula hides behind its initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return layer


def edge_function(layer, o: int, i_local: int, kpos: tuple, values: np.ndarray) -> np.ndarray:
    """F_{o,i,kpos}(values) from scipy, built from the layer's knots and coefficients (NaN marks padding)."""
    ch = (o // (layer.out_channels // layer.groups)) * (layer.in_channels // layer.groups) + i_local
    k = layer.spline_order
    knots = layer.knots[ch].detach().numpy()
    coef = layer.coefficients()[(o, i_local) + kpos].detach().numpy()
    # scipy evaluates only on [t_k, t_n] (grid_range); k zero-weight pieces on each side widen that to the whole
    # knot span, outside which every B-spline is zero
    pad = np.arange(1, k + 1, dtype=float)
    knots = np.concatenate([knots[0] - pad[::-1], knots, knots[-1] + pad])
    coef = np.concatenate([np.zeros(k), coef, np.zeros(k)])
    out = np.nan_to_num(BSpline(knots, coef, k, extrapolate=False)(values))
    if layer.base_weight is not None:
        base = layer.base_activation(torch.from_numpy(np.nan_to_num(values))).numpy()
        out = out + layer.base_weight[(o, i_local) + kpos].item() * base
    return np.where(np.isnan(values), 0.0, out)  # padded positions contribute nothing


def naive_conv(layer: KANConv, x: torch.Tensor) -> np.ndarray:
    x = x.detach().numpy()
    d = layer.spatial_dims
    if layer.padding_mode != "zeros":
        xp = torch.nn.functional.pad(torch.from_numpy(x), layer._pad_pairs, mode=layer.padding_mode).numpy()
    else:
        xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in layer.padding], constant_values=np.nan)
    ks, st, dl = layer.kernel_size, layer.stride, layer.dilation
    out_size = [(xp.shape[2 + a] - dl[a] * (ks[a] - 1) - 1) // st[a] + 1 for a in range(d)]
    y = np.zeros((x.shape[0], layer.out_channels, *out_size))
    cin_g = layer.in_channels // layer.groups
    for o in range(layer.out_channels):
        group = o // (layer.out_channels // layer.groups)
        for i_local in range(cin_g):
            channel = xp[:, group * cin_g + i_local]
            for kpos in itertools.product(*[range(k) for k in ks]):
                window = tuple(
                    slice(kpos[a] * dl[a], kpos[a] * dl[a] + st[a] * (out_size[a] - 1) + 1, st[a]) for a in range(d)
                )
                y[:, o] += edge_function(layer, o, i_local, kpos, channel[(slice(None),) + window])
    if layer.bias is not None:
        y += layer.bias.detach().numpy().reshape((1, -1) + (1,) * d)
    return y


CONV_CASES = [
    # spatial_dims, kwargs, input spatial size
    (1, dict(kernel_size=3), (9,)),
    (1, dict(kernel_size=5, stride=2, dilation=2, spline_order=2, grid_size=4), (15,)),
    (2, dict(kernel_size=3, stride=2), (7, 6)),
    (2, dict(kernel_size=(3, 1), dilation=(2, 1), spline_order=1, base_activation=None), (8, 5)),
    (2, dict(kernel_size=3, groups=2, bias=True, grid_range=(-2.0, 2.0)), (5, 5)),
    (2, dict(kernel_size=3, padding=0, spline_order=4, standalone_scale_spline=False), (6, 6)),
    (2, dict(kernel_size=3, padding_mode="reflect"), (5, 6)),
    (2, dict(kernel_size=3, padding_mode="circular", base_activation="tanh"), (5, 5)),
    (3, dict(kernel_size=3), (4, 5, 3)),
    (3, dict(kernel_size=(1, 3, 3), stride=(1, 2, 2), spline_order=0, base_activation=None), (3, 6, 5)),
]


@pytest.mark.parametrize("dims,kwargs,size", CONV_CASES)
def test_kan_conv_matches_formula(dims, kwargs, size):
    torch.manual_seed(0)
    layer = randomize(KANConv(dims, 4, 6, **kwargs).double())
    x = torch.randn(2, 4, *size, dtype=torch.float64) * 1.5  # also outside grid_range
    ref = naive_conv(layer, x)
    out = layer(x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-10, rtol=1e-10)
    with torch.no_grad():  # the inference path (no custom autograd function)
        np.testing.assert_allclose(layer(x).numpy(), ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("base,order", [(None, 3), ("silu", 3), (None, 1), ("relu", 2)])
def test_kan_linear_matches_sum_of_scipy_splines(base, order):
    layer = randomize(KANLinear(5, 3, spline_order=order, base_activation=base).double())
    x = torch.randn(11, 5, dtype=torch.float64) * 1.5
    ref = np.zeros((11, 3))
    for o, i in itertools.product(range(3), range(5)):
        ref[:, o] += edge_function(layer, o, i, (), x[:, i].numpy())
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, atol=1e-10, rtol=1e-10)
    # leading dims are kept
    assert layer(x.view(11, 1, 5)).shape == (11, 1, 3)


def test_introspection_shapes():
    conv = KANConv(3, 4, 6, kernel_size=(3, 1, 3), groups=2, grid_size=7, spline_order=2)
    assert conv.spline_order == 2 and conv.n_basis == 9
    assert conv.knots.shape == (4, 7 + 2 * 2 + 1)
    assert conv.coefficients().shape == (6, 2, 3, 1, 3, 9)
    lin = KANLinear(5, 3)
    assert lin.knots.shape == (5, 12) and lin.coefficients().shape == (3, 5, 8)
    assert "knots" in dict(conv.named_buffers()) and "knots" in conv.state_dict()


@pytest.mark.parametrize("dims,kwargs", [(1, {}), (2, dict(stride=2, dilation=1)), (2, dict(groups=2, bias=True)),
                                         (3, dict(kernel_size=2, base_activation=None))])
def test_gradcheck_conv(dims, kwargs):
    torch.manual_seed(0)
    layer = randomize(KANConv(dims, 2, 2, **kwargs).double())
    x = (torch.randn(1, 2, *([4] * dims), dtype=torch.float64) * 1.2).requires_grad_(True)
    params = [p for p in layer.parameters()]
    assert torch.autograd.gradcheck(lambda inp, *ps: layer(inp), (x, *params), atol=1e-6)


def test_gradcheck_linear_and_non_uniform_grid():
    torch.manual_seed(0)
    layer = randomize(KANLinear(3, 2).double())
    x = (torch.randn(4, 3, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(layer, (x,), atol=1e-6)
    # a non-uniform grid takes the Cox-de Boor path in forward and backward
    with torch.no_grad():
        layer.knots.copy_(layer.knots + 0.05 * torch.randn_like(layer.knots).cumsum(-1).abs().sort(-1).values)
        layer.knots.copy_(layer.knots.sort(-1).values)
    layer.uniform_grid = False
    assert torch.autograd.gradcheck(layer, (x,), atol=1e-6)


def test_custom_backward_equals_autograd_through_formula():
    torch.manual_seed(0)
    layer = randomize(KANConv(2, 3, 4, stride=2, bias=True).double())
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    fast = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    layer._use_fast_path = lambda inp: False  # plain autograd through the expansion
    layer(x).square().sum().backward()
    slow = [x.grad] + [p.grad for p in layer.parameters()]
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_saved_memory_is_that_of_a_plain_conv():
    """The recomputing backward keeps x and the weights, not the (G + k + 1)x basis expansion."""
    layer = KANConv(2, 8, 8)
    x = torch.randn(2, 8, 32, 32, requires_grad=True)
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    assert saved_bytes(lambda: layer(x)) <= 1.5 * saved_bytes(lambda: conv(x))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_torchscript_round_trip(dims, tmp_path):
    layer = KANConv(dims, 2, 3, stride=2, padding_mode="replicate" if dims == 2 else "zeros").eval()
    x = torch.randn(2, 2, *([6] * dims))
    scripted = torch.jit.script(layer)
    path = tmp_path / "layer.ts"
    torch.jit.save(scripted, str(path))
    torch.testing.assert_close(torch.jit.load(str(path))(x), layer(x))
    lin = KANLinear(4, 2).eval()
    torch.testing.assert_close(torch.jit.script(lin)(torch.ones(3, 4)), lin(torch.ones(3, 4)))


def test_state_dict_round_trip_restores_grid_kind():
    a = KANLinear(3, 2)
    with torch.no_grad():
        a.knots[0, 3] += 0.05  # non-uniform
    a.uniform_grid = False
    b = KANLinear(3, 2)
    assert b.uniform_grid is True
    b.load_state_dict(a.state_dict())
    assert b.uniform_grid is False  # recomputed from the loaded knots
    x = torch.randn(5, 3)
    torch.testing.assert_close(b(x), a(x))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(spatial_dims=4), "spatial_dims"),
        (dict(in_channels=0), "in_channels"),
        (dict(groups=3), "groups"),
        (dict(kernel_size=0), "kernel_size"),
        (dict(stride=-1), "stride"),
        (dict(padding_mode="mirror"), "padding_mode"),
        (dict(base_activation=3), "base_activation"),
        (dict(grid_size=0), "grid_size"),
        (dict(grid_range=(1.0, 1.0)), "grid_range"),
    ],
)
def test_conv_ill_arguments(kwargs, match):
    args = dict(spatial_dims=2, in_channels=4, out_channels=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        KANConv(**args)


def test_bad_inputs_give_clear_errors():
    layer = KANConv(2, 3, 4)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, <2 spatial dims>\), got \[1, 2, 8, 8\]"):
        layer(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="got \\[1, 3, 8\\]"):
        layer(torch.randn(1, 3, 8))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(1, 3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\)"):
        KANLinear(5, 2)(torch.randn(3, 4))


def test_nan_and_inf_behaviour_is_as_documented():
    layer = KANConv(1, 1, 1, kernel_size=3)
    x = torch.zeros(1, 1, 9)
    x[0, 0, 4] = float("nan")
    y = layer(x)
    assert torch.isnan(y[0, 0, 3:6]).all() and torch.isfinite(y[0, 0, :3]).all() and torch.isfinite(y[0, 0, 6:]).all()
    pure = KANConv(1, 1, 1, kernel_size=1, base_activation=None)
    x = torch.tensor([[[float("inf"), -float("inf"), 0.5]]])
    out = pure(x)
    assert out[0, 0, 0] == 0 and out[0, 0, 1] == 0 and torch.isfinite(out).all()  # splines vanish at +-Inf


@pytest.mark.parametrize("grad", [False, True])
def test_functional_kan_convolution_matches_formula(grad):
    """The custom op ``kan_convolution`` called on its own (as ``torch.compile`` and tools see it), with and without
    autograd, against the float64 scipy reference: not against the layer, which calls the same op."""
    torch.manual_seed(0)
    layer = randomize(KANConv(2, 4, 6, stride=2, groups=2, bias=True, spline_order=2).double())
    x = (torch.randn(2, 4, 7, 6, dtype=torch.float64) * 1.5).requires_grad_(grad)
    ref = naive_conv(layer, x)
    with torch.set_grad_enabled(grad):
        out = kan_convolution(x, layer._fused_weight(x.dtype), layer.bias, layer.knots, layer.spline_order,
                              layer.uniform_grid, layer.base_activation, layer.stride, layer.padding,
                              layer.dilation, layer.groups)
    assert out.requires_grad == grad
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-10, rtol=1e-10)


def test_loading_a_checkpoint_with_another_grid_size_adopts_it():
    """A checkpoint saved after grid extension (G = 5 -> 8) loads into a layer built with the original G."""
    big = randomize(KANConv(2, 3, 2, grid_size=8))
    small = KANConv(2, 3, 2, grid_size=5)
    small.load_state_dict(big.state_dict())
    assert small.grid_size == 8 and small.n_basis == 11 and small.uniform_grid
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(small(x), big(x))


def test_the_layer_describes_itself_to_tools():
    """What grid update, pruning, regularisation and visualisation need comes from the layer's own methods."""
    torch.manual_seed(0)
    lin = randomize(KANLinear(3, 4))
    x = torch.randn(6, 3)
    # the output is the sum over inputs of the edge functions at each input value
    per_edge = lin.edge_functions(x)  # (out, in, n)
    torch.testing.assert_close(per_edge.sum(1).t(), lin(x), rtol=1e-5, atol=1e-5)
    conv = randomize(KANConv(2, 4, 6, groups=2))
    assert conv.channel_dim == 1 and lin.channel_dim == -1
    xc = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv.channel_values(xc), xc.movedim(1, -1).reshape(-1, 4))
    assert conv.sample_channels(xc, 7).shape == (7, 4)
    with pytest.raises(ValueError, match="4 channels on dim 1"):
        conv.channel_values(torch.randn(2, 3, 5, 5))
    # edge-major layout: every edge reading input channel c, and back
    w = conv.spline_weight
    major = conv.edge_major(w)
    assert major.shape == (4, w.shape[-1], 3 * 9)  # 2 groups: 3 outputs read each input, 9 kernel offsets
    torch.testing.assert_close(conv.edge_minor(major), w)
    chan = conv.edge_input_channels()
    assert chan.tolist() == [[0, 1]] * 3 + [[2, 3]] * 3
    assert torch.equal(major[2, :, 0], w[3, 0, 0, 0])  # input channel 2 is read by output 3 (group 1) first
    # the grid interior [t_k, t_{G+k}] is grid_range for uniform knots
    interior = conv.grid_interior(4)
    assert interior.shape == (4, 4) and float(interior.min()) > -1 and float(interior.max()) < 1
    # resizing the grid: new knots and control points of the matching size, the old parameter returned
    old = conv.resize_grid(conv.knots.shape[1] + 3)
    assert old is w and conv.grid_size == 8 and conv.spline_weight.shape[-1] == 11
    with pytest.raises(ValueError, match="n_knots"):
        conv.resize_grid(conv.spline_order + 1)
