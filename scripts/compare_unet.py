#!/usr/bin/env python
"""KM-UNet against MONAI's UNet: same bundle, same channels, same data split, same training budget.

For every task, both networks are trained with the segmentation bundle's ``train.json`` (only ``network_def``
differs: ``KMUNet`` or ``UNet`` with the same ``channels``/``strides``, ``num_res_units=2``), the best checkpoint is
picked on the validation split (the last ``num_val`` items of the ``training`` list), and both are evaluated with
``inference.json`` + ``evaluate.json`` on the held-out ``test`` list, which plays no part in training or checkpoint
selection. The script writes the tables (Dice per class, HD95 per class, parameters, train time) between the
``<!-- comparison:start -->`` / ``<!-- comparison:end -->`` markers of the bundle's ``docs/README.md`` and keeps the
raw numbers in ``docs/comparison.json``.

    python scripts/compare_unet.py                              # every task (long: run it with nice, in the back)
    python scripts/compare_unet.py --tasks synthetic3d --epochs 30
    python scripts/compare_unet.py --write-only                 # re-render the tables from docs/comparison.json

Tasks: ``synthetic3d``/``synthetic2d`` (the bundles' default phantoms), ``mni152_3d``/``mni152_2d`` and
``pyradiomics_3d`` (real data from the package registry; prepared on the fly by scripts/prepare_real_data.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any, Dict, Optional

from _bundle_runs import count_parameters, read_metrics, read_raw_metrics, run_bundle, write_between_markers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = {3: os.path.join(REPO, "bundles", "kmunet_3d_segmentation"),
          2: os.path.join(REPO, "bundles", "kmunet_2d_segmentation")}
# epochs None: the bundle's default (the synthetic 3D run measures the default config). The real sets are small
# (3-4 training volumes: 2 iterations per epoch in 3D), so their budgets are set in epochs to give similar numbers
# of iterations while the whole comparison fits a few hours on 2 CPU cores
TASKS: Dict[str, Dict[str, Any]] = {
    "synthetic3d": {"dims": 3, "data": None, "epochs": None, "label": "synthetic phantoms (3D, default data)"},
    "synthetic2d": {"dims": 2, "data": None, "epochs": None, "label": "synthetic phantoms (2D, default data)"},
    "mni152_3d": {"dims": 3, "data": "mni152_3d", "epochs": 40,
                  "label": "MNI152 T1 template, tissue labels (3D slabs, nilearn)"},
    "mni152_2d": {"dims": 2, "data": "mni152_2d", "epochs": 20,
                  "label": "MNI152 T1 template, tissue labels (2D slices, nilearn)"},
    "pyradiomics_3d": {"dims": 3, "data": "pyradiomics_3d", "epochs": 40,
                       "label": "pyradiomics 3.0.1 tumor cases (3D, 5 cases: 3 train, 1 validation, 1 test)"},
}
START, END = "<!-- comparison:start -->", "<!-- comparison:end -->"


def bundle_config(dims: int) -> Dict[str, Any]:
    """The ``train.json`` of the ``dims``-D segmentation bundle, as a dict.

    Args:
        dims: 2 or 3.
    """
    with open(os.path.join(BUNDLE[dims], "configs", "train.json")) as f:
        return json.load(f)


def network_def(model: str, dims: int) -> Dict[str, Any]:
    """The bundle's ``network_def`` for ``model``: its own KMUNet, or MONAI's UNet with the same channels and strides.

    Args:
        model: ``"kmunet"`` or ``"unet"``.
        dims: 2 or 3.
    """
    base = bundle_config(dims)["network_def"]
    if model == "kmunet":
        return dict(base)
    return {"_target_": "UNet", "spatial_dims": dims, "in_channels": 1, "out_channels": "@num_classes",
            "channels": base["channels"], "strides": base["strides"], "num_res_units": 2, "norm": "instance"}


def network_parameters(model: str, dims: int, num_classes: int) -> int:
    """Parameters of ``model`` as the bundle builds it for ``num_classes`` classes.

    Args:
        model: ``"kmunet"`` or ``"unet"``.
        dims: 2 or 3.
        num_classes: output channels.
    """
    cfg = network_def(model, dims)
    cfg["out_channels"] = num_classes
    return count_parameters({"imports": ["$import monai_kan"], "network_def": cfg})


def prepare(task: str) -> Optional[str]:
    """The task's ``bundle_args.json`` (None for the bundles' default data), running prepare_real_data.py if needed.

    Args:
        task: a key of :data:`TASKS`.

    Raises:
        subprocess.CalledProcessError: the data preparation failed.
    """
    spec = TASKS[task]
    if spec["data"] is None:
        return None
    out = os.path.join(BUNDLE[spec["dims"]], "data", spec["data"])
    if not os.path.isfile(os.path.join(out, "dataset.json")):
        source, dims = spec["data"].rsplit("_", 1)
        subprocess.run([sys.executable, os.path.join(REPO, "scripts", "prepare_real_data.py"), "--source", source,
                        "--dims", dims[0]], check=True)
    return os.path.join(out, "bundle_args.json")


def run_task(task: str, epochs: Optional[int], val_interval: Optional[int], work: str, fused: bool) -> Dict[str, Any]:
    """Train and test KMUNet and UNet on one task; returns the task's results (metrics, parameters, times).

    Args:
        task: a key of :data:`TASKS`.
        epochs: training epochs (None: the task's budget, else the bundle's).
        val_interval: validation interval in epochs (None: the bundle's).
        work: scratch folder; ``<work>/<task>/<model>`` is replaced.
        fused: run with the compiled kernels (``MONAI_KAN_FUSED=1``).

    Raises:
        RuntimeError: a bundle command failed (the message names its log).
    """
    spec = TASKS[task]
    dims = spec["dims"]
    data_args: Dict[str, Any] = {}
    args_path = prepare(task)
    if args_path is not None:
        with open(args_path) as f:
            data_args = json.load(f)
    defaults = bundle_config(dims)
    class_names = data_args.get("class_names", defaults["class_names"])
    budget = {"epochs": epochs or spec["epochs"] or defaults["epochs"],
              "val_interval": val_interval or defaults["val_interval"]}
    env = {**os.environ, "MONAI_KAN_FUSED": "1" if fused else "0"}
    result: Dict[str, Any] = {"task": task, "label": spec["label"], "dims": dims, "class_names": class_names,
                              **budget, "models": {}}
    for model in ("kmunet", "unet"):
        folder = os.path.join(work, task, model)
        if os.path.isdir(folder):
            shutil.rmtree(folder)  # this script's own scratch space (under the git-ignored eval/)
        os.makedirs(folder)
        common = {**data_args, "network_def": network_def(model, dims), "progress_bar": False}
        train_args = {**common, **budget, "ckpt_dir": os.path.join(folder, "models"),
                      "log_dir": os.path.join(folder, "runs")}
        print(f"[{task}] training {model} ({budget['epochs']} epochs) ...", flush=True)
        timing = run_bundle([os.path.join(BUNDLE[dims], "configs", "train.json")],
                            log=os.path.join(folder, "train.log"), args=train_args, env=env)
        eval_args = {**common, "ckpt_path": os.path.join(folder, "models", "model.pt"), "eval_split": "test",
                     "output_dir": os.path.join(folder, "test_eval")}
        eval_args.pop("num_val", None)
        print(f"[{task}] evaluating {model} on the test split ...", flush=True)
        run_bundle([os.path.join(BUNDLE[dims], "configs", n) for n in ("inference.json", "evaluate.json")],
                   log=os.path.join(folder, "eval.log"), args=eval_args, env=env)
        metrics = read_metrics(os.path.join(folder, "test_eval", "metrics.csv"))
        n_test = len(read_raw_metrics(os.path.join(folder, "test_eval", "val_mean_dice_raw.csv")))
        result["models"][model] = {
            "parameters": network_parameters(model, dims, len(class_names)),
            "train_wall_s": round(timing["wall_s"], 1),
            "train_cpu_s": round(timing["cpu_s"], 1),
            "test_cases": n_test,
            "metrics": metrics,
        }
        print(f"[{task}] {model}: {metrics}", flush=True)
    return result


def _fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None or value != value:
        return "n/a"
    if value == float("inf"):
        return "inf"
    return f"{value:.{digits}f}"


def render(results: Dict[str, Any], dims: int, machine: str) -> str:
    """The comparison tables of the ``dims``-D tasks (the text between the README markers).

    Args:
        results: task -> :func:`run_task` result.
        dims: 2 or 3.
        machine: description of the machine, for the caption.
    """
    lines = ["",
             f"Generated by `python scripts/compare_unet.py` on {machine}; numbers are measured, not typed. "
             "Test split = the dataset's held-out `test` list (never used for training or checkpoint selection). "
             "HD95 is in voxels of the original image grid (1 mm for the phantoms and MNI152). Train time is the "
             "wall-clock time of the training command (data caching, validation and compilation included) with "
             "its CPU time in brackets; the machine was shared with other jobs, so wall-clock times are upper "
             "bounds.", ""]
    for task, res in results.items():
        if res["dims"] != dims:
            continue
        fg = res["class_names"][1:]
        lines.append(f"**{res['label']}** ({res['epochs']} epochs, validation every {res['val_interval']}; "
                     f"{next(iter(res['models'].values()))['test_cases']} test cases)")
        lines.append("")
        header = ["model", "parameters"] + [f"Dice {c}" for c in fg] + ["mean Dice"] + [f"HD95 {c}" for c in fg]
        header += ["train time (CPU)"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        for model, m in res["models"].items():
            name = "KMUNet" if model == "kmunet" else "UNet (MONAI)"
            met = m["metrics"]
            row = [name, f"{m['parameters']:,}"]
            row += [_fmt(met.get(f"val_dice_{c}")) for c in fg] + [_fmt(met.get("val_mean_dice"))]
            row += [_fmt(met.get(f"val_hd95_{c}"), 1) for c in fg]
            row += [f"{m['train_wall_s'] / 60:.1f} min ({m['train_cpu_s'] / 60:.1f} min)"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def write_readmes(results: Dict[str, Any], machine: str) -> None:
    """Write the tables into the README of each bundle that has results.

    Args:
        results: task -> :func:`run_task` result.
        machine: description of the machine, for the caption.

    Raises:
        ValueError: a README lacks the comparison markers.
    """
    for dims in (3, 2):
        if not any(r["dims"] == dims for r in results.values()):
            continue
        readme = os.path.join(BUNDLE[dims], "docs", "README.md")
        write_between_markers(readme, START, END, render(results, dims, machine))
        print(f"tables written to {readme}")


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {list(TASKS)}")
    parser.add_argument("--epochs", type=int, default=None, help="override the bundle's epochs (all tasks)")
    parser.add_argument("--val-interval", type=int, default=None)
    parser.add_argument("--work", default=None, help="scratch folder (default: <bundle>/eval/compare)")
    parser.add_argument("--eager", action="store_true", help="MONAI_KAN_FUSED=0 (no torch.compile)")
    parser.add_argument("--write-only", action="store_true", help="only re-render the README tables")
    parser.add_argument("--results-dir", default=None,
                        help="keep the raw results here (comparison_<d>d.json) instead of "
                             "<bundle>/docs/comparison.json and leave the READMEs alone (for runs in parallel)")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {list(TASKS)}")
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores (shared)"
    if args.results_dir:
        os.makedirs(args.results_dir, exist_ok=True)
        results_path = {d: os.path.join(args.results_dir, f"comparison_{d}d.json") for d in (2, 3)}
    else:
        results_path = {d: os.path.join(BUNDLE[d], "docs", "comparison.json") for d in (2, 3)}
    results: Dict[str, Any] = {}
    for d in (3, 2):
        if os.path.isfile(results_path[d]):
            with open(results_path[d]) as f:
                results.update(json.load(f))
    if not args.write_only:
        for task in tasks:
            dims = TASKS[task]["dims"]
            work = args.work or os.path.join(BUNDLE[dims], "eval", "compare")
            results[task] = run_task(task, args.epochs, args.val_interval, work, fused=not args.eager)
            for d in (3, 2):  # save after every task: an interruption loses at most one task
                subset = {k: v for k, v in results.items() if v["dims"] == d}
                if subset:
                    with open(results_path[d], "w") as f:
                        json.dump(subset, f, indent=2)
            if not args.results_dir:
                write_readmes({k: v for k, v in results.items() if k in TASKS}, machine)
    else:
        write_readmes(results, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
