"""monai-kan as a MONAI plugin: bundle-config names, layer factory, no name clashes."""

import inspect

import pytest
import torch
from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator
from monai.networks.layers.factories import Conv

import monai_kan
from monai_kan.layers import KANConv


@pytest.mark.parametrize("target", ["KMUNet", "monai_kan.networks.KMUNet", "monai_kan.networks.kmunet.KMUNet"])
def test_kmunet_resolves_in_bundle_config(target):
    config = {
        "imports": ["$import monai_kan"],
        "network_def": {"_target_": target, "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                        "channels": [4, 8], "strides": [2]},
        "network": "$@network_def.to('cpu')",
    }
    net = ConfigParser(config).get_parsed_content("network")
    assert isinstance(net, monai_kan.KMUNet)
    assert net(torch.randn(1, 1, 8, 8, 8)).shape == (1, 3, 8, 8, 8)


@pytest.mark.parametrize("name", ["KAE", "KAELayer", "KANConv", "KANLinear", "KANConvBlock", "KANResidualUnit"])
def test_short_names_resolve(name):
    assert ComponentLocator().get_component_module_name(name) is not None


def test_no_public_name_collides_with_monai():
    import importlib
    import pkgutil

    import monai.apps, monai.bundle, monai.data, monai.engines, monai.handlers, monai.inferers  # noqa: E401
    import monai.losses, monai.metrics, monai.networks.blocks, monai.networks.layers, monai.networks.nets  # noqa
    import monai.transforms, monai.utils  # noqa: E401

    ours = set()
    for info in pkgutil.walk_packages(monai_kan.__path__, "monai_kan."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        ours |= {n for n in getattr(module, "__all__", []) if inspect.isclass(getattr(module, n, None))
                 or inspect.isfunction(getattr(module, n, None))}
    assert {"KMUNet", "KAE", "PatchKAE", "KANConv"} <= ours
    locator = ComponentLocator()
    for name in sorted(ours):
        found = locator.get_component_module_name(name)
        modules = found if isinstance(found, list) else [found]
        assert all(m.startswith("monai_kan") for m in modules if m), f"{name} clashes with MONAI's {modules}"


def test_kan_conv_is_registered_with_monai_conv_factory():
    layer = Conv["kanconv", 3](2, 4, kernel_size=3)
    assert isinstance(layer, KANConv) and layer.spatial_dims == 3
    with pytest.raises(ValueError, match="spatial dims"):
        Conv["kanconv", 4]


def test_import_monai_kan_loads_no_benchmark_code():
    """The KAE paper's evaluation suite (training loops, process pools) is not part of a user's import; the KAE
    baseline layer types are registered by the KAE network itself. (torch imports its own throughput_benchmark.)"""
    import subprocess
    import sys

    code = ("import sys, torch; before = set(sys.modules); import monai_kan; "
            "print([m for m in set(sys.modules) - before if 'evaluation' in m or 'benchmark' in m])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    from monai_kan.networks.kae import AUTOENCODER_LAYERS

    assert {"fourierkan", "wavkan"} <= set(AUTOENCODER_LAYERS)
