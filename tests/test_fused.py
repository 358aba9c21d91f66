"""torch.compile-fused kernels compute what the eager kernels compute (values and gradients)."""

import torch

from monai_kan.layers import KANConv, KANLinear, set_fused_kernels
from monai_kan.layers import fused


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
    assert {"expand", "expand_grad"} <= {key[0] for key in fused._COMPILED}
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


def test_fused_equals_eager_under_autocast(fused_on):
    torch.manual_seed(0)
    conv = KANConv(2, 3, 4, bias=True)
    x = torch.randn(2, 3, 9, 7)
    results = []
    for fuse in (False, True):
        set_fused_kernels(fuse)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(run(conv, x))
    assert fused.fused_kernels_enabled()
    assert results[1][0].dtype == torch.bfloat16
    for a, b in zip(*results):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-2)


def test_a_training_session_compiles_a_bounded_number_of_graphs(fused_on):
    """Train steps with batch sizes 2, 1 and 3, validation under no_grad with batches 4 and 1, sliding-window
    inference, autocast, grid update and extension, 1- and many-channel layers, 2D and 3D and a linear layer: every
    size is dynamic (0 and 1 included), so only dtype, grid kind, order and activation make new graphs."""
    from monai.inferers import sliding_window_inference
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    from torch._dynamo.utils import counters

    from monai_kan.tools.grid import extend_network_grids, update_network_grids
    from monai_kan.networks import KMUNet

    torch.manual_seed(0)
    before = counters["stats"]["unique_graphs"]
    kernels_before = set(fused._COMPILED)
    net = KMUNet(2, 1, 3, channels=(4, 8), strides=(2,))
    opt = torch.optim.Adam(net.parameters())

    def step(n):
        opt.zero_grad()
        net(torch.randn(n, 1, 16, 16)).square().mean().backward()
        opt.step()

    def validate(n):
        net.eval()
        with torch.no_grad():
            net(torch.randn(n, 1, 16, 16))
            sliding_window_inference(torch.randn(1, 1, 24, 20), (16, 16), 3, net)
        net.train()

    with _no_fallback_warning():
        for _ in range(2):
            step(2), validate(4), validate(1), step(1)
            update_network_grids(net, torch.randn(2, 1, 16, 16), optimizer=opt)
            step(3)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                step(2)
        extend_network_grids(net, 8, torch.randn(2, 1, 16, 16), optimizer=opt)
        step(2)
        net3 = KMUNet(3, 2, 2, channels=(4, 8), strides=(2,))
        net3(torch.randn(1, 2, 8, 8, 8)).sum().backward()
        KANLinear(5, 3)(torch.randn(7, 5)).sum().backward()
        KANLinear(5, 3)(torch.randn(0, 5))
    graphs = counters["stats"]["unique_graphs"] - before
    assert fused.fused_kernels_enabled()
    # one compiled kernel per static configuration ({float32, bfloat16} x {uniform, data-placed knots} x grid
    # sizes, for expand and its gradient), each compiled once or twice: never near the recompile limit
    kernels = [c for key, c in fused._COMPILED.items() if key not in kernels_before]
    entries = [len(_debug_get_cache_entry_list(c._torchdynamo_orig_callable.__code__)) for c in kernels]
    assert 0 < graphs <= 12 and 0 < len(kernels) <= 12, (graphs, len(kernels))
    assert max(entries) <= 2 < torch._dynamo.config.recompile_limit, entries


def _no_fallback_warning():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def ctx():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        bad = [str(w.message) for w in caught if "monai_kan" in str(w.message) or "recompile" in str(w.message)]
        assert not bad, bad

    return ctx()


def test_torch_compile_of_a_whole_network_matches_eager(fused_on):
    """The KAN convolution is the custom op monai_kan::kan_conv: torch.compile(net) traces through the network
    in one graph (fullgraph) and computes what the eager network computes."""
    from monai_kan.networks import KMUNet

    torch.manual_seed(0)
    net = KMUNet(2, 1, 2, channels=(4, 8), strides=(2,))
    x = torch.randn(2, 1, 16, 16)
    eager = run(net, x)
    compiled = torch.compile(net, fullgraph=True)
    for a, b in zip(eager, run(compiled, x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled(torch.randn(0, 1, 16, 16)), net(torch.randn(0, 1, 16, 16)))
