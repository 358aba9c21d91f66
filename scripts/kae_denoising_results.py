"""Measure the KAE denoising bundle and write the results table into its docs/README.md.

Trains the bundle's default PatchKAE and, as a same-shape baseline, the plain auto-encoder (``--layer_type linear``)
with the bundle CLI (same data, same noise, same budget), evaluates both on the held-out test split with the bundle's
``evaluate.json``, and scores two classical baselines on the same noisy test files: the noisy input itself and
MONAI's median filter (3x3 and 5x5). The table (MSE, PSNR, SSIM, parameters, training wall time, the commands) goes
between ``<!-- kae-results:<data_source>:start -->`` and ``<!-- kae-results:<data_source>:end -->`` in the README.

Usage (from the repository root; each training is a few minutes on 2 CPU cores)::

    nice -n 10 python scripts/kae_denoising_results.py                                  # synthetic slices
    nice -n 10 python scripts/kae_denoising_results.py --data-source mni152 \\
        --mni152-template /tmp/nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz  # real MNI152 slices
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from _bundle_runs import REPO, count_parameters, read_metrics, run_bundle, write_between_markers

BUNDLE = REPO / "bundles" / "kae_denoising"
CONFIGS = BUNDLE / "configs"

#: per data source: overrides that give both models the same budget of ~57k training crops of 64x64
SOURCE_OVERRIDES = {
    "synthetic": [],
    "mni152": ["--num_val", "8", "--num_samples", "16"],
}
MODELS = [
    ("kae", "PatchKAE (KAE layers, order 3)", []),
    ("ae", "PatchAE (linear layers, same shape)", ["--layer_type", "linear"]),
]


def classical_baselines(test_pairs: list) -> dict:
    """Noisy input and median filters, scored with the same MONAI metrics as the bundle's evaluate.json.

    Args:
        test_pairs: ``{"image": noisy file, "label": clean file}`` items of the test split.

    Returns:
        method name -> mean ``mse``, ``psnr``, ``ssim`` over the pairs.
    """
    import torch
    from monai.metrics import MSEMetric, PSNRMetric, SSIMMetric
    from monai.transforms import MedianSmooth

    from monai_kan.data.transforms import load_slice

    methods = {"noisy input (no denoising)": lambda x: x, "median filter 3x3 (MONAI MedianSmooth)": MedianSmooth(1),
               "median filter 5x5 (MONAI MedianSmooth)": MedianSmooth(2)}
    scores = {name: {"mse": [], "psnr": [], "ssim": []} for name in methods}
    for pair in test_pairs:
        noisy, clean = load_slice(pair["image"]).as_tensor(), load_slice(pair["label"]).as_tensor()
        for name, fn in methods.items():
            pred = torch.as_tensor(fn(noisy)).float()[None]
            scores[name]["mse"].append(MSEMetric()(pred, clean[None]).item())
            scores[name]["psnr"].append(PSNRMetric(1.0)(pred, clean[None]).item())
            scores[name]["ssim"].append(SSIMMetric(2, data_range=1.0)(pred, clean[None]).item())
    return {name: {k: sum(v) / len(v) for k, v in s.items()} for name, s in scores.items()}


def network_parameters(overrides: list) -> int:
    """Parameters of the bundle's network under the model's command-line ``overrides``.

    Args:
        overrides: ``--key value`` list; only ``--layer_type`` changes the network.
    """
    pairs = dict(zip(overrides[::2], overrides[1::2]))
    extra = {"layer_type": pairs["--layer_type"]} if "--layer_type" in pairs else {}
    return count_parameters(CONFIGS / "train.json", {"bundle_root": str(BUNDLE), **extra})


def main() -> None:
    """Command-line entry point: train, evaluate and score both models and the filters, then write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-source", default="synthetic", choices=sorted(SOURCE_OVERRIDES))
    parser.add_argument("--mni152-template", default=None, help="path of the MNI152 T1 template (data-source mni152)")
    parser.add_argument("--work-dir", default="/tmp/kae_denoising_results", help="bundle roots of the runs")
    parser.add_argument("--epochs", type=int, default=None, help="override the bundle's epochs (default: configured)")
    parser.add_argument("--readme", default=str(BUNDLE / "docs" / "README.md"))
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()

    source = args.data_source
    common = ["--data_source", source, *SOURCE_OVERRIDES[source]]
    if args.mni152_template:
        common += ["--mni152_template", str(Path(args.mni152_template).resolve())]
    if args.epochs is not None:
        common += ["--epochs", str(args.epochs)]
    work = Path(args.work_dir) / source
    results, commands = [], []
    for key, label, extra in MODELS:
        root = work / key
        root.mkdir(parents=True, exist_ok=True)
        train_overrides = [*common, *extra, "--overwrite", "True", "--progress_bar", "False"]
        print(f"training {label} in {root} ...", flush=True)
        wall = run_bundle([CONFIGS / "train.json"], ["--bundle_root", str(root), *train_overrides],
                          log=root / "train.log")["wall_s"]
        run_bundle([CONFIGS / "evaluate.json"], ["--bundle_root", str(root), *common, *extra],
                   log=root / "evaluate.log")
        metrics = read_metrics(root / "eval" / "metrics.csv")
        scores = (metrics["test_mse"], metrics["test_psnr"], metrics["test_ssim"])
        results.append((label, network_parameters(extra), wall, *scores))
        commands.append(f"python -m monai.bundle run --config_file bundles/kae_denoising/configs/train.json "
                        f"--bundle_root {root} {' '.join(train_overrides)}")
        print(f"  {label}: {wall:.0f} s, PSNR {metrics['test_psnr']:.2f} dB", flush=True)

    # the noisy test files both runs evaluated on (same noise, same seed)
    from monai_kan.data.denoising_splits import denoising_datalist, noisy_pairs

    kae_root = work / "kae"
    data_root = sorted((kae_root / "data").glob(source))[0]
    meta = json.loads((CONFIGS / "train.json").read_text())
    pairs = noisy_pairs(denoising_datalist(data_root, "test"), kae_root / "data" / "noisy", meta["noise_std"],
                        meta["salt_pepper"], meta["noise_seed"], *meta["intensity_range"], split="test")
    for name, s in classical_baselines(pairs).items():
        results.append((name, 0, 0.0, s["mse"], s["psnr"], s["ssim"]))

    epochs = args.epochs or meta["epochs"]
    lines = [
        f"Held-out test split: {len(pairs)} {source} slices, Gaussian noise sigma={meta['noise_std']} plus "
        f"{meta['salt_pepper']:.0%} salt-and-pepper (fixed seed); metrics on intensities in [0, 1], averaged over "
        f"slices (MONAI `MSEMetric`, `PSNRMetric(max_val=1)`, `SSIMMetric(spatial_dims=2)`). Both networks: "
        f"{epochs} epochs, same data and noise; the best validation-PSNR checkpoint is evaluated. Wall time: "
        f"`python -m monai.bundle run` of train.json (validation included) on {platform.machine()} CPU "
        f"({os.cpu_count()} cores, shared with other jobs, `nice -n 10`).",
        "",
        "| method | parameters | training wall time | MSE | PSNR (dB) | SSIM |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, params, wall, mse, psnr, ssim in results:
        lines.append(f"| {label} | {params:,} | {f'{wall / 60:.1f} min' if wall else '-'} | {mse:.5f} | "
                     f"{psnr:.2f} | {ssim:.3f} |")
    lines += ["", "Commands (generated by `scripts/kae_denoising_results.py"
              + (f" --data-source {source}" if source != "synthetic" else "") + "`):", "", "```"]
    lines += commands + ["```"]
    table = "\n".join(lines)
    print(table)
    (work / "results.md").write_text(table + "\n")
    if not args.no_write:
        write_between_markers(args.readme, f"<!-- kae-results:{source}:start -->",
                              f"<!-- kae-results:{source}:end -->", table)
        print(f"wrote the table into {args.readme}")


if __name__ == "__main__":
    main()
