"""Build a KAN network from a bundle directory or from a checkpoint plus an explicit network definition."""

from __future__ import annotations

import json
import os
import zipfile
from typing import Dict, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from monai_kan.tools.grid import kan_layers

__all__ = ["load_network", "load_state_dict_file"]

_CONFIG_EXT = (".json", ".yaml", ".yml")


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """The state dict in a ``torch.save`` checkpoint: a plain state dict, or a dict holding one under ``model``,
    ``network``, ``state_dict`` or ``net`` (MONAI/ignite checkpoints); a ``module.`` prefix (DataParallel) is removed.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist()):
                raise ValueError(f"{path} is a TorchScript export: its KAN layers are compiled code. Pass the state "
                                 "dict checkpoint (e.g. the bundle's models/model.pt) instead.")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "network", "state_dict", "net"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__}).")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


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

    A checkpoint saved after grid extension loads into a network built with the original ``grid_size``
    (the layers adopt the saved grid in ``load_state_dict``).
    """
    from monai.bundle import ConfigParser

    import monai_kan  # noqa: F401  (registers the short names used in bundle configs)

    parser = ConfigParser()
    if os.path.isdir(path):
        parser.read_config(list(config_file) if isinstance(config_file, (list, tuple)) else
                           [config_file] if config_file else _bundle_configs(path))
        meta = os.path.join(path, "configs", "metadata.json")
        if os.path.isfile(meta):
            parser.read_meta(meta)
        parser["bundle_root"] = path
        checkpoint = checkpoint or os.path.join(path, "models", "model.pt")
    else:
        checkpoint = checkpoint or path
        if config_file:
            parser.read_config(list(config_file) if isinstance(config_file, (list, tuple)) else [config_file])
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
    state = load_state_dict_file(checkpoint)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {checkpoint} does not match the network definition: {err}") from err
    return net.eval()
