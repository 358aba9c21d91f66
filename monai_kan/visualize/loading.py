"""Build a KAN network from a bundle directory or from a checkpoint plus an explicit network definition."""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional, Sequence, Union

import torch.nn as nn
from monai.utils import ensure_tuple

from monai_kan.handlers.state_dict import load_trained_model, read_state_dict
from monai_kan.tools.grid import kan_layers

__all__ = ["load_network", "load_state_dict_file"]

#: the state dict in a checkpoint file: the reader the bundles use (:func:`monai_kan.handlers.read_state_dict`)
load_state_dict_file = read_state_dict

_CONFIG_EXT = (".json", ".yaml", ".yml")


def _bundle_configs(bundle: str) -> list:
    cfg_dir = os.path.join(bundle, "configs")
    for stem in ("inference", "train"):
        for ext in _CONFIG_EXT:
            f = os.path.join(cfg_dir, stem + ext)
            if os.path.isfile(f):
                return [f]
    raise ValueError(f"bundle {bundle!r} has no configs/inference.(json|yaml) or configs/train.(json|yaml).")


def load_network(
    path: str,
    network_def: Union[str, Mapping, None] = None,
    config_file: Union[str, Sequence[str], None] = None,
    network_key: str = "network_def",
    checkpoint: Optional[str] = None,
) -> nn.Module:
    """A KAN network with its trained weights, in eval mode on the CPU.

    Args:
        path: a bundle directory (``configs/`` + ``models/model.pt``) or a checkpoint file.
        network_def: the architecture as a MONAI bundle config item, a dict or a JSON string such as
            ``'{"_target_": "monai_kan.KMUNet", "spatial_dims": 2, ...}'``; required with a bare checkpoint
            unless ``config_file`` has ``network_key``.
        config_file: config file(s) holding ``network_key`` (default for a bundle: ``configs/inference.json``,
            else ``configs/train.json``).
        network_key: config id of the architecture. Defaults to ``"network_def"``.
        checkpoint: checkpoint file (default for a bundle: ``models/model.pt``).

    The weights are read and loaded as the bundles do (:func:`monai_kan.handlers.load_trained_model`): a plain state
    dict or one nested under ``model``/``network``/``state_dict``/``net``, ``module.`` prefixes accepted. A checkpoint
    saved after grid extension loads into a network built with the original ``grid_size`` (the layers adopt the
    saved grid in ``load_state_dict``).

    Raises:
        FileNotFoundError: no checkpoint.
        ValueError: a bare checkpoint without ``network_def``/``config_file``, a config without ``network_key``, a
            network without B-spline KAN layers, a TorchScript or non-state-dict file, or weights that do not fit
            the network (the message names the keys and both shapes).
    """
    from monai.bundle import ConfigParser

    import monai_kan  # noqa: F401  (registers the short names used in bundle configs)

    parser = ConfigParser()
    if os.path.isdir(path):
        parser.read_config(list(ensure_tuple(config_file)) if config_file else _bundle_configs(path))
        meta = os.path.join(path, "configs", "metadata.json")
        if os.path.isfile(meta):
            parser.read_meta(meta)
        parser["bundle_root"] = path
        checkpoint = checkpoint or os.path.join(path, "models", "model.pt")
    else:
        checkpoint = checkpoint or path
        if config_file:
            parser.read_config(list(ensure_tuple(config_file)))
        elif network_def is None:
            raise ValueError(
                f"{path} is a checkpoint, which holds weights but no architecture: pass `network_def` (CLI: "
                "--network-def '{\"_target_\": \"monai_kan.KMUNet\", ...}') or a `config_file` with "
                f"{network_key!r} (CLI: --config-file), or give a bundle directory."
            )
    if network_def is not None:
        if isinstance(network_def, str):
            network_def = json.loads(open(network_def).read() if os.path.isfile(network_def) else network_def)
        parser[network_key] = dict(network_def)
    if network_key not in parser:
        raise ValueError(f"no {network_key!r} in the configs; pass `network_key` or `network_def`.")
    net = parser.get_parsed_content(network_key, instantiate=True)
    if not isinstance(net, nn.Module):
        raise ValueError(f"config item {network_key!r} built a {type(net).__name__}, not a torch.nn.Module.")
    if not kan_layers(net):
        raise ValueError(f"the network built from {network_key!r} has no B-spline KAN layers (KANLinear/KANConv).")
    load_trained_model(net, checkpoint, map_location="cpu")
    return net.eval()
