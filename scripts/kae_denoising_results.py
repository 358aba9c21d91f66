"""Measure the KAE denoising bundle against learned and classical baselines; write the tables into its README.

For one data source (synthetic CT-like slices or MNI152 T1 slices) this script

1. trains, with the bundle CLI (same data, same training noise, same epochs), the bundle's default
   :class:`~monai_kan.networks.ConvKAE` and four baselines: the same topology with plain convolutions (``order=1``),
   plain convolutions widened to the same parameter count, the patch-based ``PatchKAE`` and its linear twin;
2. evaluates every trained model with the bundle's ``evaluate.json`` on the held-out test split at three test noises
   (Gaussian only, salt-and-pepper only, both: the bundle's default);
3. scores classical filters on the same noisy test files: median 3x3 / 5x5 (MONAI ``MedianSmooth``), non-local means
   (scikit-image) and BM3D (the ``bm3d`` package), the last two given the *oracle* noise level (the standard
   deviation of noisy minus clean, which a real user does not have) so that they are at their best;
4. writes the table between ``<!-- kae-results:<source>:start -->`` and ``<!-- kae-results:<source>:end -->`` in
   ``bundles/kae_denoising/docs/README.md``.

Every finished training, evaluation and filter score is cached as JSON under ``--work-dir``; an interrupted run
continues where it stopped (``--fresh`` starts over). Needs ``pip install scikit-image bm3d`` for the filters.

Usage (from the repository root)::

    nice -n 10 python scripts/kae_denoising_results.py                        # synthetic slices
    nice -n 10 python scripts/kae_denoising_results.py --data-source mni152   # MNI152 (prepare_real_data.py first)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from _bundle_runs import REPO, count_parameters, read_metrics, run_bundle, write_between_markers

BUNDLE = REPO / "bundles" / "kae_denoising"
CONFIGS = BUNDLE / "configs"

#: per data source: overrides that give every model about the same number of training crops (the MNI152 set has
#: fewer, larger slices than the synthetic one)
SOURCE_OVERRIDES = {"synthetic": [], "mni152": ["--num_val", "8", "--num_samples", "16"]}

#: test noises: name -> (Gaussian sigma, salt-and-pepper amount), on intensities in [0, 1]
NOISES: Dict[str, tuple] = {"mixed": (0.1, 0.05), "gaussian": (0.1, 0.0), "salt_pepper": (0.0, 0.05)}
NOISE_LABELS = {"mixed": "Gaussian 0.1 + 5% s&p (default)", "gaussian": "Gaussian 0.1", "salt_pepper": "5% s&p"}

_PATCH_KAE = {"_target_": "PatchKAE", "spatial_dims": 2, "in_channels": 1, "patch_size": 8, "stride": 4,
              "latent_dim": 16, "hidden_dims": [64]}


def _default_network() -> Dict[str, Any]:
    return json.loads((CONFIGS / "train.json").read_text())["network_def"]


def _widened_channels(target: int) -> List[int]:
    """Channels of the plain-convolution ConvKAE (``order=1``) whose parameter count is closest to ``target``."""
    from monai_kan.networks import ConvKAE

    base = _resolved_channels()
    best = None
    for step in range(100, 400):
        chans = [max(1, round(c * step / 100)) for c in base]
        n = sum(p.numel() for p in ConvKAE(2, channels=chans, order=1).parameters())
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (chans, n)
    return best[0]


def _resolved_channels() -> List[int]:
    meta = json.loads((CONFIGS / "train.json").read_text())
    channels = _default_network()["channels"]
    return list(meta[channels[1:]]) if isinstance(channels, str) and channels.startswith("@") else list(channels)


def models() -> Dict[str, tuple]:
    """Model key -> (label, ``args`` overrides of the bundle run)."""
    kae_params = count_parameters(CONFIGS / "train.json", {"bundle_root": str(BUNDLE)})
    wide = _widened_channels(kae_params)
    return {
        "convkae": ("ConvKAE, KAE conv edges of order 3 (bundle default)", {}),
        "convae": ("same topology, plain convolutions (order 1)", {"kae_order": 1}),
        "convae_wide": (f"plain convolutions widened to the same parameters (channels {wide})",
                        {"kae_order": 1, "channels": wide}),
        "patchkae": ("PatchKAE (patch KAE, order 3)", {"network_def": dict(_PATCH_KAE, order=3)}),
        "patchae": ("PatchAE (patch auto-encoder, linear layers)",
                    {"network_def": dict(_PATCH_KAE, layer_type="linear")}),
    }


def _cached(path: Path, compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """``compute()`` once: its JSON result is kept at ``path`` (written atomically) and read back on later runs."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    return result


def classical_scores(pairs: List[Dict[str, str]]) -> Dict[str, Dict[str, float]]:
    """Classical filters on the noisy test files, scored like the bundle's ``evaluate.json``.

    Args:
        pairs: ``{"image": noisy file, "label": clean file}`` items.

    Returns:
        method -> mean ``psnr`` and ``ssim`` over the pairs.

    Raises:
        ImportError: scikit-image or bm3d is missing (``pip install scikit-image bm3d``).
    """
    import numpy as np
    import torch
    from monai.metrics import PSNRMetric, SSIMMetric
    from monai.transforms import MedianSmooth

    try:
        import bm3d
        from skimage.restoration import denoise_nl_means
    except ImportError as e:
        raise ImportError("the classical baselines need scikit-image and bm3d: pip install scikit-image bm3d") from e
    from monai_kan.data.transforms import load_slice

    def nlm(x: np.ndarray, sigma: float) -> np.ndarray:
        return denoise_nl_means(x, patch_size=5, patch_distance=6, h=0.8 * sigma, sigma=sigma, fast_mode=True)

    methods = {
        "noisy input (no denoising)": lambda x, s: x,
        "median 3x3 (MONAI MedianSmooth)": lambda x, s: MedianSmooth(1)(torch.from_numpy(x)[None])[0].numpy(),
        "median 5x5 (MONAI MedianSmooth)": lambda x, s: MedianSmooth(2)(torch.from_numpy(x)[None])[0].numpy(),
        "non-local means, oracle sigma (scikit-image)": nlm,
        "BM3D, oracle sigma (bm3d)": lambda x, s: bm3d.bm3d(x, sigma_psd=max(s, 1e-3)),
    }
    scores: Dict[str, Dict[str, List[float]]] = {m: {"psnr": [], "ssim": []} for m in methods}
    for pair in pairs:
        noisy = load_slice(pair["image"]).as_tensor()[0].numpy().astype(np.float64)
        clean = load_slice(pair["label"]).as_tensor()[None].float()
        sigma = float(np.std(noisy - clean[0, 0].numpy()))  # oracle: uses the clean image
        for name, fn in methods.items():
            pred = torch.as_tensor(np.clip(fn(noisy, sigma), 0.0, 1.0), dtype=torch.float32)[None, None]
            scores[name]["psnr"].append(PSNRMetric(1.0)(pred, clean).item())
            scores[name]["ssim"].append(SSIMMetric(2, data_range=1.0)(pred, clean).item())
    return {m: {k: float(np.mean(v)) for k, v in s.items()} for m, s in scores.items()}


def main(argv: Optional[List[str]] = None) -> None:
    """Command-line entry point: train, evaluate and score everything (cached), then write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-source", default="synthetic", choices=sorted(SOURCE_OVERRIDES))
    parser.add_argument("--mni152-template", default=None, help="MNI152 T1 template (data-source mni152; default: "
                        "the file scripts/prepare_real_data.py --source mni152 writes)")
    parser.add_argument("--work-dir", default="/tmp/kae_denoising_results", help="bundle roots and cache of the runs")
    parser.add_argument("--epochs", type=int, default=None, help="override the bundle's epochs (default: configured)")
    parser.add_argument("--models", nargs="*", default=None, help="subset of the model keys (default: all)")
    parser.add_argument("--readme", default=str(BUNDLE / "docs" / "README.md"))
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--fresh", action="store_true", help="forget the cached results of this data source")
    args = parser.parse_args(argv)

    source = args.data_source
    work = Path(args.work_dir) / source
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    common = ["--data_source", source, *SOURCE_OVERRIDES[source], "--progress_bar", "false"]
    if args.mni152_template:
        common += ["--mni152_template", str(Path(args.mni152_template).resolve())]
    if args.epochs is not None:
        common += ["--epochs", str(args.epochs)]
    meta = json.loads((CONFIGS / "train.json").read_text())
    epochs = args.epochs or meta["epochs"]
    all_models = models()
    unknown = sorted(set(args.models or ()) - set(all_models))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {sorted(all_models)}")
    chosen = {k: all_models[k] for k in (args.models or all_models)}  # in the order given

    rows: List[Dict[str, Any]] = []
    commands = []
    for key, (label, extra) in chosen.items():
        root = work / key
        root.mkdir(parents=True, exist_ok=True)

        def train(root=root, extra=extra) -> Dict[str, Any]:
            print(f"training {key} in {root} ...", flush=True)
            t = run_bundle([CONFIGS / "train.json"], ["--bundle_root", str(root), *common, "--overwrite", "true"],
                           log=root / "train.log", args=extra)
            params = count_parameters(CONFIGS / "train.json", {"bundle_root": str(root), **extra})
            return {"wall_s": t["wall_s"], "parameters": params}

        trained = _cached(root / "train_result.json", train)
        row = {"label": label, "parameters": trained["parameters"], "wall_s": trained["wall_s"]}
        for noise, (std, sp) in NOISES.items():
            def evaluate(root=root, extra=extra, noise=noise, std=std, sp=sp) -> Dict[str, Any]:
                out = root / f"eval_{noise}"
                run_bundle([CONFIGS / "evaluate.json"],
                           ["--bundle_root", str(root), *common, "--noise_std", str(std), "--salt_pepper", str(sp),
                            "--output_dir", str(out), "--overwrite", "true"],
                           log=root / f"evaluate_{noise}.log", args=extra)
                m = read_metrics(out / "metrics.csv")
                return {"psnr": m["test_psnr"], "ssim": m["test_ssim"]}

            row[noise] = _cached(root / f"eval_{noise}.json", evaluate)
        rows.append(row)
        print(f"  {label}: " + ", ".join(f"{n} {row[n]['psnr']:.2f} dB" for n in NOISES), flush=True)
        commands.append(f"python -m monai.bundle run --config_file bundles/kae_denoising/configs/train.json "
                        f"--bundle_root {root} {' '.join(common)}" + "".join(f" --{k} {json.dumps(v)!r}"
                                                                             for k, v in extra.items()))

    from monai_kan.data.denoising_splits import denoising_datalist, noisy_pairs

    first = work / next(iter(chosen))
    data_root = sorted((first / "data").glob(source))[0]
    classical: Dict[str, Dict[str, Dict[str, float]]] = {}
    num_test = 0
    for noise, (std, sp) in NOISES.items():
        pairs = noisy_pairs(denoising_datalist(data_root, "test"), work / "noisy", std, sp, meta["noise_seed"],
                            *meta["intensity_range"], split="test")
        num_test = len(pairs)
        classical[noise] = _cached(work / f"classical_{noise}.json", lambda pairs=pairs: classical_scores(pairs))
    for method in classical["mixed"]:
        rows.append({"label": method, "parameters": 0, "wall_s": 0.0, **{n: classical[n][method] for n in NOISES}})

    best_classical = {n: max(classical[n].values(), key=lambda s: s["psnr"]) for n in NOISES}
    default = next((r for r in rows if r["label"].endswith("(bundle default)")), None)
    lines = [
        f"Held-out test split: {num_test} {source} slices; intensities in [0, 1]; PSNR (dB) / SSIM averaged over "
        f"slices (MONAI `PSNRMetric(max_val=1)`, `SSIMMetric(spatial_dims=2)`), fixed noise seed. Every network: "
        f"{epochs} epochs of the bundle's training (random Gaussian and salt-and-pepper noise, each applied with "
        f"probability `noise_prob`), the best validation-PSNR checkpoint evaluated. Training wall time: "
        f"`python -m monai.bundle run` of train.json on {platform.machine()} CPU ({os.cpu_count()} cores, shared "
        "with other jobs). Non-local means and BM3D get the oracle noise level.",
        "",
        "| method | parameters | training | " + " | ".join(NOISE_LABELS[n] for n in NOISES) + " |",
        "|---|---:|---:|" + "---:|" * len(NOISES),
    ]
    for r in rows:
        cells = [f"{r[n]['psnr']:.2f} / {r[n]['ssim']:.3f}" for n in NOISES]
        wall = f"{r['wall_s'] / 60:.1f} min" if r["wall_s"] else "-"
        lines.append(f"| {r['label']} | {r['parameters']:,} | {wall} | " + " | ".join(cells) + " |")
    if default is not None:
        verdict = []
        for n in NOISES:
            margin = default[n]["psnr"] - best_classical[n]["psnr"]
            verdict.append(f"{NOISE_LABELS[n]}: {'+' if margin >= 0 else ''}{margin:.2f} dB")
        lines += ["", "The bundle default against the best classical filter (PSNR): " + "; ".join(verdict) + "."]
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
