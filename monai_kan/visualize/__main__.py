"""``python -m monai_kan.visualize <bundle dir or checkpoint> --out DIR``: PNG grids of learned KAN edge functions.

Examples::

    # a trained bundle: the network from configs/inference.json (or train.json), the weights from models/model.pt,
    # the data: the first batch of the validation dataloader of configs/train.json (its preprocessing applied)
    python -m monai_kan.visualize bundles/kmunet_2d_segmentation --out splines --bundle-data validate#dataloader

    # your own network input: a tensor [N, C, *spatial] saved with torch.save (or {"image": tensor}; .npy/.npz
    # work too), or image files (read as stored: preprocess them as the network expects)
    python -m monai_kan.visualize bundles/kmunet_2d_segmentation --out splines --data batch.pt

    # a bare checkpoint: give the architecture
    python -m monai_kan.visualize model.pt --out splines --random-input 1,1,64,64 \\
        --network-def '{"_target_": "monai_kan.KMUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                        "channels": [16, 32, 64], "strides": [2, 2]}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

import torch


def _load_data(paths: List[str], key: str) -> torch.Tensor:
    """A network input batch from ``.pt``/``.npy``/``.npz`` files or images readable by ``monai.transforms.LoadImage``."""
    import numpy as np

    items = []
    for p in paths:
        if p.endswith((".pt", ".pth")):
            obj = torch.load(p, map_location="cpu", weights_only=True)
            obj = obj[key] if isinstance(obj, dict) else obj
        elif p.endswith(".npy"):
            obj = torch.from_numpy(np.load(p))
        elif p.endswith(".npz"):
            z = np.load(p)
            obj = torch.from_numpy(z[key] if key in z else z[z.files[0]])
        else:
            from monai.transforms import LoadImage

            obj = LoadImage(image_only=True, ensure_channel_first=True)(p)
            obj = torch.as_tensor(obj).unsqueeze(0)
        items.append(torch.as_tensor(obj).float())
    return torch.cat(items, 0) if len(items) > 1 else items[0]


def _bundle_batch(bundle: str, item: str, configs: Optional[List[str]], key: str) -> torch.Tensor:
    """The first batch of a dataloader defined in the bundle configs (e.g. ``validate#dataloader``)."""
    from monai.bundle import ConfigParser

    import monai_kan  # noqa: F401

    parser = ConfigParser()
    cfg_dir = os.path.join(bundle, "configs")
    parser.read_config(configs or [os.path.join(cfg_dir, "train.json")])
    parser["bundle_root"] = bundle
    if item not in parser:
        raise ValueError(f"`--bundle-data` {item!r} is not a config id of {configs or 'configs/train.json'}.")
    if "prepare_data" in parser:  # the bundles' first initialize step: writes the default (phantom) data once
        parser.get_parsed_content("prepare_data")
    batch = next(iter(parser.get_parsed_content(item)))
    batch = torch.as_tensor(batch[key] if isinstance(batch, dict) else batch[0]).float()
    return batch.as_tensor() if hasattr(batch, "as_tensor") else batch  # a plain tensor, not a MetaTensor


def pad_to_network(net: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``batch`` padded so that the network accepts it: every spatial size up to a multiple of the network's
    ``size_divisor`` (KMUNet: the product of its ``strides``) with MONAI's ``DivisiblePad``; unchanged for networks
    without one. Whole-image batches (``--bundle-data validate#dataloader``: the validation images at their own
    sizes) are rarely divisible. Only the layer inputs are recorded, no output is shown, so nothing is cropped back.

    Args:
        net: the network.
        batch: ``(N, C, *spatial)``.

    Raises:
        ValueError: ``batch`` has fewer than 3 dimensions while the network has a ``size_divisor``.
    """
    k = getattr(net, "size_divisor", None)
    if k is None:
        return batch
    if batch.dim() < 3:
        raise ValueError(f"the network input must be (N, C, *spatial), got shape {tuple(batch.shape)}.")
    from monai.transforms import DivisiblePad

    n, c, spatial = batch.shape[0], batch.shape[1], batch.shape[2:]
    # edge padding repeats border values: it adds none outside the data range that the plots shade
    padded = DivisiblePad(k=list(k), mode="edge")(batch.reshape(n * c, *spatial))
    padded = torch.as_tensor(padded)
    padded = padded.as_tensor() if hasattr(padded, "as_tensor") else padded
    return padded.reshape(n, c, *padded.shape[1:])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m monai_kan.visualize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Inputs whose spatial sizes the network cannot take (KMUNet: not divisible by "
                                        "the product of its strides) are edge-padded to the next multiple "
                                        "(monai.transforms.DivisiblePad).")
    ap.add_argument("path", help="bundle directory, or checkpoint file (a state dict)")
    ap.add_argument("--out", required=True, help="output directory for the PNGs and summary.json")
    ap.add_argument("--network-def", help="architecture as a JSON config item (string or .json file)")
    ap.add_argument("--config-file", nargs="+", help="config file(s) holding the network definition")
    ap.add_argument("--network-key", default="network_def", help="config id of the network (default: network_def)")
    ap.add_argument("--checkpoint", help="weights to load (default for a bundle: models/model.pt)")
    data = ap.add_mutually_exclusive_group()
    data.add_argument("--data", nargs="+", help="network input (one pass records each layer's input range and the "
                                                "edge importance): a tensor [N, C, *spatial] saved with torch.save "
                                                "(.pt, or a dict holding it under --data-key), .npy/.npz, or image "
                                                "files read as stored (not preprocessed)")
    data.add_argument("--bundle-data", metavar="CONFIG_ID",
                      help="take the first batch of this dataloader of the bundle (its preprocessing applied), "
                           "e.g. validate#dataloader of configs/train.json (or of --config-file)")
    data.add_argument("--random-input", metavar="N,C,*SPATIAL", help="standard-normal input of this shape")
    data.add_argument("--ranges", help="summary.json of an earlier run: its recorded data ranges")
    ap.add_argument("--data-key", default="image", help="key of the image in dict batches/files (default: image)")
    ap.add_argument("--layers", nargs="+", help="layer names or regular expressions to plot (default: all)")
    ap.add_argument("--top-k", type=int, default=12, help="edges per layer figure (default: 12)")
    ap.add_argument("--kernel-pairs", type=int, default=1,
                    help="per convolution, figures of the top channel pairs with one panel per kernel offset")
    ap.add_argument("--dpi", type=int, default=100)
    args = ap.parse_args(argv)

    from monai_kan.visualize.export import visualize_network
    from monai_kan.visualize.loading import load_network

    try:
        net = load_network(args.path, args.network_def, args.config_file, args.network_key, args.checkpoint)
        batch = ranges = None
        if args.data:
            batch = _load_data(args.data, args.data_key)
        elif args.bundle_data:
            batch = _bundle_batch(args.path, args.bundle_data, args.config_file, args.data_key)
        elif args.random_input:
            batch = torch.randn([int(v) for v in args.random_input.split(",")])
        elif args.ranges:
            with open(args.ranges) as f:
                ranges = {k: torch.tensor(v["data_range"]) for k, v in json.load(f).items() if "data_range" in v}
        if batch is not None:
            batch = pad_to_network(net, batch)
        files = visualize_network(net, args.out, batch, ranges, args.layers, args.top_k, args.kernel_pairs, args.dpi)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
