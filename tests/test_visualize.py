"""Spline plots from a trained checkpoint: bundle directory and bare checkpoint, CLI and API, clear errors."""

import json
import os

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from monai_kan.layers import KANConv, KANLinear
from monai_kan.tools.grid import extend_network_grids
from monai_kan.networks import KMUNet
from monai_kan.visualize import (
    edge_functions,
    figure_to_array,
    layer_summary,
    load_network,
    plot_edge_kernel,
    plot_layer_edges,
)
from monai_kan.visualize.__main__ import main

NET_DEF = {"_target_": "KMUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
           "strides": [2]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A KMUNet trained for a few steps, saved as a bundle (configs + models/model.pt) and as a batch file."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("bundle")
    net = KMUNet(2, 1, 2, channels=(4, 8), strides=(2,))
    x = torch.rand(4, 1, 16, 16)
    y = (x > 0.6).long()[:, 0]
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(4):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    os.makedirs(root / "configs")
    os.makedirs(root / "models")
    with open(root / "configs" / "inference.json", "w") as f:
        json.dump({"imports": ["$import monai_kan"], "network_def": NET_DEF}, f)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    torch.save({"image": x}, root / "batch.pt")
    return root, net.eval(), x


def _png_ok(path):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 0.01


def test_cli_bundle_with_data(trained, tmp_path):
    root, net, x = trained
    out = tmp_path / "plots"
    rc = main([str(root), "--out", str(out), "--data", str(root / "batch.pt"), "--top-k", "4",
               "--layers", "head.1", "decoders.0.conv"])
    assert rc == 0
    files = sorted(os.listdir(out))
    assert "head.1_edges.png" in files and "decoders.0.conv_edges.png" in files and "importance.png" in files
    assert any(f.startswith("decoders.0.conv_kernel_in") for f in files)
    for f in files:
        if f.endswith(".png"):
            _png_ok(out / f)
    summary = json.load(open(out / "summary.json"))
    head = summary["head.1"]
    assert head["data"] and len(head["data_range"]) == 4 and abs(sum(head["importance"]) - 1) < 1e-4
    assert np.array(head["edge_scores"]).shape == (2, 4)
    # the recorded ranges can be reused instead of data
    rc = main([str(root), "--out", str(tmp_path / "again"), "--ranges", str(out / "summary.json"), "--layers",
               "head.1", "--top-k", "2"])
    assert rc == 0


def test_checkpoint_needs_architecture(trained, tmp_path, capsys):
    root, net, x = trained
    ckpt = str(root / "models" / "model.pt")
    assert main([ckpt, "--out", str(tmp_path)]) == 2
    assert "no architecture" in capsys.readouterr().err
    rc = main([ckpt, "--out", str(tmp_path / "p"), "--network-def", json.dumps(NET_DEF), "--layers", "head.1",
               "--random-input", "1,1,16,16", "--top-k", "2"])
    assert rc == 0 and os.path.isfile(tmp_path / "p" / "head.1_edges.png")
    bad = dict(NET_DEF, channels=[4, 16])
    assert main([ckpt, "--out", str(tmp_path), "--network-def", json.dumps(bad)]) == 2
    err = capsys.readouterr().err
    assert "does not fit the configured network" in err and "vs" in err  # keys and both shapes named
    ts = tmp_path / "model.ts"
    torch.jit.script(net).save(str(ts))
    assert main([str(ts), "--out", str(tmp_path), "--network-def", json.dumps(NET_DEF)]) == 2
    assert "TorchScript" in capsys.readouterr().err


def test_checkpoint_after_grid_extension_loads(trained, tmp_path):
    root, net, x = trained
    wide = KMUNet(2, 1, 2, channels=(4, 8), strides=(2,))
    wide.load_state_dict(net.state_dict())
    extend_network_grids(wide, 10, x)
    torch.save({"model": wide.state_dict()}, tmp_path / "ext.pt")
    loaded = load_network(str(tmp_path / "ext.pt"), NET_DEF)
    assert loaded.head[1].grid_size == 10
    with torch.no_grad():
        assert torch.allclose(loaded(x), wide.eval()(x), atol=1e-6)


def test_edge_functions_match_layer_and_plots():
    torch.manual_seed(0)
    lin = KANLinear(2, 3).double()
    xs = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64)[:, None].expand(-1, 2)
    f = edge_functions(lin, xs)  # (3, 2, 7)
    x = torch.zeros(7, 2, dtype=torch.float64)
    x[:, 0] = xs[:, 0]
    other = edge_functions(lin, torch.zeros(1, 2, dtype=torch.float64))[:, 1, 0]
    assert torch.allclose(lin(x), f[:, 0].t() + other, atol=1e-10)
    conv = KANConv(3, 2, 2, kernel_size=3)
    summary = layer_summary(conv)  # no data: uniform on the grid
    assert not summary["data"] and summary["edge_scores"].shape == (2, 2)
    fig = plot_edge_kernel(conv, 1, 0, "conv3d")
    assert len([a for a in fig.axes if a.get_visible()]) == 27
    arr = figure_to_array(plot_layer_edges(lin, "lin", top_k=4))
    assert arr.dtype == np.uint8 and arr.shape[2] == 3
    with pytest.raises(ValueError, match="out_channel"):
        plot_edge_kernel(conv, 5, 0)
