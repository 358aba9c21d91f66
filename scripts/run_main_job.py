#!/usr/bin/env python
"""The main job: train and run the 3D KM-UNet segmentation bundle on its embedded (synthetic) data, then report.

Steps, each an ordinary ``python -m monai.bundle run`` command (printed as it runs):

1. train ``bundles/kmunet_3d_segmentation`` (the phantom set is generated into its ``data/`` on first use);
2. evaluate the best checkpoint on the held-out ``test`` list (per-case Dice and HD95 to CSV);
3. infer the ``test`` list (NIfTI label maps on the input geometry);
4. print the Dice table and write a PNG overlay of image, label and prediction.

Outputs go to a new folder ``bundles/kmunet_3d_segmentation/eval/main_job/<date-time>/`` (never overwritten)::

    python scripts/run_main_job.py                 # full default training (~15 min of 2 free CPU cores)
    python scripts/run_main_job.py --epochs 2      # a quick smoke run
    python scripts/run_main_job.py --skip-train    # reuse models/model.pt

Extra ``--key value`` pairs after ``--`` go to the training command (e.g. ``-- --learning_rate 0.001``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List

from _bundle_runs import REPO, read_raw_metrics, run_bundle

from monai_kan.visualize.overlay import save_overlay_png

BUNDLE = os.path.join(REPO, "bundles", "kmunet_3d_segmentation")
CONFIGS = os.path.join(BUNDLE, "configs")


def bundle_run(configs: List[str], overrides: List[str]) -> float:
    """Run the bundle's ``configs`` (printing the command, output to the console); returns the wall time.

    Args:
        configs: config file names in the bundle's ``configs/``, merged in order.
        overrides: ``--key value`` arguments.

    Raises:
        RuntimeError: the command failed.
    """
    return run_bundle([os.path.join(CONFIGS, c) for c in configs], overrides, echo=True)["wall_s"]


def dice_table(eval_dir: str, class_names: List[str]) -> str:
    """Markdown table of per-case Dice and HD95 with their means, from the evaluation's ``*_raw.csv`` files.

    Args:
        eval_dir: the evaluation's output folder.
        class_names: all classes, background first (it gets no column).
    """
    dice = read_raw_metrics(os.path.join(eval_dir, "val_mean_dice_raw.csv"))
    hd95 = read_raw_metrics(os.path.join(eval_dir, "val_hd95_raw.csv"))
    fg = class_names[1:]
    header = ["case"] + [f"Dice {c}" for c in fg] + [f"HD95 {c} (mm)" for c in fg]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    cols: List[List[float]] = [[] for _ in range(2 * len(fg))]
    for case in sorted(dice):
        values = dice[case][: len(fg)] + hd95.get(case, [float("nan")] * len(fg))[: len(fg)]
        for i, v in enumerate(values):
            cols[i].append(v)
        lines.append("| " + " | ".join([case.replace(".nii.gz", "")] + [f"{v:.3f}" if i < len(fg) else f"{v:.1f}"
                                                                          for i, v in enumerate(values)]) + " |")
    means = [sum(c) / len(c) if c else float("nan") for c in cols]
    lines.append("| **mean** | " + " | ".join(f"**{v:.3f}**" if i < len(fg) else f"**{v:.1f}**"
                                               for i, v in enumerate(means)) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the bundle's epochs")
    parser.add_argument("--skip-train", action="store_true", help="use the existing models/model.pt")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted training")
    parser.add_argument("--overwrite", action="store_true", help="retrain over an earlier run's checkpoints")
    parser.add_argument("extra", nargs="*", help="further training overrides (after --)")
    args = parser.parse_args(argv)

    run_dir = os.path.join(BUNDLE, "eval", "main_job", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(run_dir)
    ckpt = os.path.join(BUNDLE, "models", "model.pt")
    times = {}
    if not args.skip_train:
        train = ["--progress_bar", "false"] + (["--epochs", str(args.epochs)] if args.epochs else [])
        train += ["--resume", "true"] if args.resume else []
        train += ["--overwrite", "true"] if args.overwrite else []
        times["train"] = bundle_run(["train.json"], train + args.extra)
    elif not os.path.isfile(ckpt):
        parser.error(f"--skip-train needs a trained model at {ckpt}")
    eval_dir = os.path.join(run_dir, "evaluation")
    times["evaluate"] = bundle_run(["inference.json", "evaluate.json"],
                                   ["--eval_split", "test", "--output_dir", eval_dir, "--progress_bar", "false"])
    pred_dir = os.path.join(run_dir, "predictions")
    times["infer"] = bundle_run(["inference.json"], ["--output_dir", pred_dir, "--progress_bar", "false"])

    data_dir = os.path.join(BUNDLE, "data", "phantom3d")
    with open(os.path.join(data_dir, "dataset.json")) as f:
        first = json.load(f)["test"][0]
    image, label = (os.path.join(data_dir, first[k]) for k in ("image", "label"))
    pred = os.path.join(pred_dir, os.path.basename(image).replace(".nii.gz", "_seg.nii.gz"))
    png = os.path.join(run_dir, "overlay.png")
    # the tumor's largest axial cross-section: image, image + label, image + prediction
    save_overlay_png(png, image, label, pred, class_names=["background", "organ", "tumor"],
                     intensity_range=[-200, 300], pred_title="prediction (KM-UNet)")

    table = dice_table(eval_dir, ["background", "organ", "tumor"])
    with open(os.path.join(run_dir, "dice_table.md"), "w") as f:
        f.write(table + "\n")
    print("\nHeld-out test cases (never used for training or checkpoint selection):\n")
    print(table)
    print("\n" + ", ".join(f"{k}: {v / 60:.1f} min" for k, v in times.items()))
    print(f"predictions: {pred_dir}\noverlay:     {png}\ntable:       {os.path.join(run_dir, 'dice_table.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
