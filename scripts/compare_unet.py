#!/usr/bin/env python
"""KM-UNet against MONAI's UNet, like for like: the protocol of docs/comparison_protocol.md.

Every network is trained and tested with the segmentation bundle's own configs (``train.json``, then
``inference.json`` + ``evaluate.json`` with ``eval_split=test``); only ``network_def``, ``learning_rate``, ``seed``
and ``epochs`` change. Five rows per data set:

* **KMUNet**: the bundle's default network;
* **(a)** MONAI ``UNet`` with the same ``channels``/``strides`` (``num_res_units=2``, instance norm);
* **(b)** the same UNet with every channel count widened by one factor, searched so that its parameter count is
  within 5% of KMUNet's;
* **(c)** the UNet of (a) trained for as many epochs as fit in KMUNet's measured training time;
* **(d)** the KMUNet topology with plain convolutions (``conv_type="standard"``, the KAN-off switch).

Each of KMUNet, (a), (b) and (d) gets its own learning rate: the value of ``--lrs`` with the best validation Dice
(the bundle's checkpoint-selection metric on the last ``num_val`` training items) after training with the first
seed; (c) reuses the rate chosen for (a) (its network) unless ``--lr-search-time-matched``. At the chosen rate every
seed is trained, and only then is each seed's best checkpoint evaluated on the held-out ``test`` list. Each
finished training or test run is cached as JSON under ``--work`` (keyed by data set, row, learning rate, seed and
epochs), so an interrupted protocol continues where it stopped; a cached run whose settings differ is redone.

    python scripts/compare_unet.py --readme bundles           # the full protocol (about 3 h on 2 CPU cores)
    python scripts/compare_unet.py --tasks synthetic2d --readme 2d=/tmp/README.md
    python scripts/compare_unet.py --write-only --readme bundles   # re-render from <work>/results.json

Tasks: ``synthetic3d``/``synthetic2d`` (the bundles' default phantoms), ``mni152_3d``/``mni152_2d`` and
``pyradiomics_3d`` (real data from the package registry, prepared by scripts/prepare_real_data.py on first use).

``--variants`` measures KMUNet's training options instead (issue 10, item 5; docs/kmunet_variants.md): on one task,
at KMUNet's chosen learning rate, each variant of :data:`VARIANTS` (low-rank KAN convolutions, control-point
initialisation, normalisation, grid update during training, a separate learning rate for the control points) is
trained like the KMUNet row and scored on the validation split only; the runs are cached the same way
(``<work>/<task>/kmunet_<variant>/...``; the default is the KMUNet row's own cached run) and the table goes to
``<work>/variants.json`` and, with ``--variants-doc``, between the markers of that file.

    python scripts/compare_unet.py --variants --tasks synthetic3d --variants-doc docs/kmunet_variants.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from _bundle_runs import REPO, read_metrics, read_raw_metrics, run_bundle, write_between_markers

BUNDLE = {3: REPO / "bundles" / "kmunet_3d_segmentation", 2: REPO / "bundles" / "kmunet_2d_segmentation"}
START, END = "<!-- comparison:start -->", "<!-- comparison:end -->"
#: the rows of every table, in order
ARMS = ("kmunet", "unet", "unet_wide", "unet_time", "kmunet_plain")
#: the rows whose learning rate is searched (``unet_time`` reuses ``unet``'s unless asked)
SEARCHED_ARMS = ("kmunet", "unet", "unet_wide", "kmunet_plain")
DEFAULT_LRS = (0.001, 0.003, 0.01)
DEFAULT_SEEDS = (0, 1, 2)
#: a widened UNet must be this close to KMUNet's parameter count
PARAM_TOLERANCE = 0.05


class TaskSpec(NamedTuple):
    """One data set of the protocol and its training budget.

    Attributes:
        dims: 2 or 3 (which bundle).
        data: ``None`` for the bundle's default phantoms, else ``"<source>_<d>d"`` of prepare_real_data.py.
        epochs: training epochs of every row except (c).
        val_interval: validation (checkpoint selection) every this many epochs.
        label: caption of the table.
    """

    dims: int
    data: Optional[str]
    epochs: int
    val_interval: int
    label: str


# Budgets chosen so that the whole protocol (5 rows x 3 learning rates x 3 seeds per data set, see
# docs/comparison_protocol.md for the run count and the time estimate) fits about 3 hours of 2 CPU cores; the two
# *_default tasks add about 0.5 h each (measured on two free cores).
TASKS: Dict[str, TaskSpec] = {
    "synthetic3d": TaskSpec(3, None, 6, 2, "synthetic phantoms (3D, the bundle's default data)"),
    "synthetic2d": TaskSpec(2, None, 10, 2, "synthetic phantoms (2D, the bundle's default data)"),
    "mni152_3d": TaskSpec(3, "mni152_3d", 20, 5, "MNI152 T1 template, tissue labels (3D slabs, nilearn)"),
    "mni152_2d": TaskSpec(2, "mni152_2d", 10, 2, "MNI152 T1 template, tissue labels (2D slices, nilearn)"),
    "pyradiomics_3d": TaskSpec(3, "pyradiomics_3d", 20, 5,
                               "pyradiomics 3.0.1 tumor cases (3D; 3 train, 1 validation, 1 test)"),
    # the 2D sets again at the 2D config's own budget (30 epochs, validation every 5): cheap enough on two free
    # cores, and the small budget above leaves KMUNet under-trained there
    "synthetic2d_default": TaskSpec(2, None, 30, 5, "synthetic phantoms (2D, the bundle's default data and budget)"),
    "mni152_2d_default": TaskSpec(2, "mni152_2d", 30, 5,
                                  "MNI152 T1 template, tissue labels (2D slices, nilearn), the default budget"),
}
#: a table whose best row stays below this mean test Dice cannot rank the networks: the verdict says so
NO_SIGNAL_DICE = 0.05


class Task(NamedTuple):
    """A task resolved for running: its bundle overrides, classes and patch.

    Attributes:
        name: the task's key.
        dims: 2 or 3.
        label: table caption.
        epochs, val_interval: the budget.
        class_names: all classes, background first.
        patch_size: the training patch (MACs are counted on it).
        data_args: bundle overrides that select the data (``dataset_dir``, ``class_names``, ...).
        network_def: KMUNet's ``network_def`` (the bundle default unless a test sets a small one).
    """

    name: str
    dims: int
    label: str
    epochs: int
    val_interval: int
    class_names: List[str]
    patch_size: List[int]
    data_args: Dict[str, Any]
    network_def: Dict[str, Any]


# ---------------------------------------------------------------------------------------------------------------------
# networks: definitions, parameters, MACs, the parameter-matched width


def bundle_config(dims: int) -> Dict[str, Any]:
    """The ``train.json`` of the ``dims``-D segmentation bundle, as a dict.

    Args:
        dims: 2 or 3.
    """
    return json.loads((BUNDLE[dims] / "configs" / "train.json").read_text())


def widened(channels: Sequence[int], factor: float) -> List[int]:
    """``channels`` times ``factor``, rounded (at least 1 each).

    Args:
        channels: channels per level.
        factor: width factor.
    """
    return [max(1, int(round(c * factor))) for c in channels]


def arm_network_def(arm: str, base: Mapping[str, Any], factor: float = 1.0) -> Dict[str, Any]:
    """The ``network_def`` of one row, built from KMUNet's.

    Args:
        arm: one of :data:`ARMS`.
        base: KMUNet's ``network_def`` (the bundle's).
        factor: channel width factor of ``"unet_wide"``.

    Raises:
        ValueError: unknown ``arm``.
    """
    if arm == "kmunet":
        return dict(base)
    if arm == "kmunet_plain":
        return {**base, "conv_type": "standard"}
    if arm not in ("unet", "unet_wide", "unet_time"):
        raise ValueError(f"unknown row {arm!r}; choose from {ARMS}.")
    return {"_target_": "UNet", "spatial_dims": base["spatial_dims"], "in_channels": base["in_channels"],
            "out_channels": base["out_channels"],
            "channels": widened(base["channels"], factor if arm == "unet_wide" else 1.0),
            "strides": list(base["strides"]), "num_res_units": 2, "norm": base.get("norm", "instance")}


def build_network(net_def: Mapping[str, Any], num_classes: int):
    """Instantiate a ``network_def`` as the bundle would (short names after ``import monai_kan``), on the CPU.

    Args:
        net_def: the definition; ``"@num_classes"`` resolves to ``num_classes``.
        num_classes: output channels.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser({"imports": ["$import monai_kan"], "num_classes": num_classes, "network_def": dict(net_def)})
    return parser.get_parsed_content("network_def")


def count_macs(net, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of the convolutions (and linear layers) in one forward pass of ``net``.

    Counted with forward hooks: a convolution does ``C_in / groups * prod(kernel)`` MACs per output element, a
    transposed convolution ``C_out / groups * prod(kernel)`` per input element; a B-spline KAN layer reports its own
    count (:meth:`~monai_kan.layers.BSplineKANBase.macs`: ``(G + k + [base branch]) * C_in / groups * prod(kernel)``
    per output element, each edge's control points and base weight, i.e. the contraction it runs; a low-rank one
    ``(r + [base branch])`` per edge plus ``r * (G + k)`` per input element). Biases, normalisation, activations and
    the B-spline basis evaluation (elementwise) are not counted.

    Args:
        net: the network (run once under ``no_grad`` on zeros, eager KAN kernels).
        input_shape: ``(N, C, *spatial)``.
    """
    import torch
    import torch.nn as nn

    from monai_kan import fused_kernels_enabled, set_fused_kernels
    from monai_kan.layers import BSplineKANBase

    total = [0]

    def kernel(m) -> int:
        return math.prod(m.kernel_size)

    def hook(m, inputs, output) -> None:
        x = inputs[0]
        if isinstance(m, BSplineKANBase):
            total[0] += m.macs(x.shape, output.shape)
        elif isinstance(m, nn.modules.conv._ConvNd):
            if m.transposed:
                total[0] += x.numel() * (m.out_channels // m.groups) * kernel(m)
            else:
                total[0] += output.numel() * (m.in_channels // m.groups) * kernel(m)
        elif isinstance(m, nn.Linear):
            total[0] += output.numel() * m.in_features

    counted = (BSplineKANBase, nn.modules.conv._ConvNd, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, counted)]
    fused = fused_kernels_enabled()
    set_fused_kernels(False)  # no compilation for one counting pass
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(tuple(input_shape)))
    finally:
        set_fused_kernels(fused)
        for h in handles:
            h.remove()
    return total[0]


def network_stats(net_def: Mapping[str, Any], num_classes: int, patch_size: Sequence[int]) -> Dict[str, Any]:
    """Parameters and MACs per input voxel of a ``network_def`` (one input channel assumed per its definition).

    Args:
        net_def: the definition.
        num_classes: output channels.
        patch_size: spatial size of the counting pass (the training patch).
    """
    net = build_network(net_def, num_classes)
    shape = (1, int(net_def.get("in_channels", 1)), *patch_size)
    macs = count_macs(net, shape)
    return {"parameters": sum(p.numel() for p in net.parameters()), "macs": macs,
            "macs_per_voxel": macs / math.prod(patch_size)}


def match_width(base: Mapping[str, Any], num_classes: int, target: int,
                tolerance: float = PARAM_TOLERANCE) -> Tuple[float, List[int], int]:
    """The channel factor of the widened UNet (row b) whose parameter count is closest to ``target``.

    Bisection on the factor (the count grows with it), then the closer of the two bracketing widths.

    Args:
        base: KMUNet's ``network_def``.
        num_classes: output channels.
        target: KMUNet's parameter count.
        tolerance: largest accepted relative difference.

    Returns:
        ``(factor, channels, parameters)``.

    Raises:
        ValueError: no width comes within ``tolerance`` of ``target``.
    """
    cache: Dict[Tuple[int, ...], int] = {}

    def params(f: float) -> int:
        key = tuple(widened(base["channels"], f))
        if key not in cache:
            net = build_network(arm_network_def("unet_wide", base, f), num_classes)
            cache[key] = sum(p.numel() for p in net.parameters())
        return cache[key]

    lo, hi = 0.25, 1.0
    while params(hi) < target:
        lo, hi = hi, hi * 2
        if hi > 256:
            raise ValueError(f"no UNet width reaches {target} parameters.")
    for _ in range(30):
        mid = (lo + hi) / 2
        if params(mid) < target:
            lo = mid
        else:
            hi = mid
    factor = min((lo, hi), key=lambda f: abs(params(f) - target))
    n = params(factor)
    if abs(n - target) > tolerance * target:
        raise ValueError(f"the closest widened UNet has {n} parameters, KMUNet {target} (more than "
                         f"{tolerance:.0%} apart).")
    return round(factor, 4), widened(base["channels"], factor), n


# ---------------------------------------------------------------------------------------------------------------------
# the protocol: cache, learning-rate selection, runs


def cached_json(path: Path, spec: Mapping[str, Any], compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """``compute()`` once per ``spec``: its result is kept in ``path`` (written atomically) with the spec, and read back
    on later calls with the same spec; a file with another spec is recomputed.

    Args:
        path: the JSON file.
        spec: what the result depends on (JSON-serialisable).
        compute: makes the result (a JSON-serialisable dict).
    """
    spec = json.loads(json.dumps(spec))  # tuples -> lists, as they come back from the file
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            record = {}
        if record.get("spec") == spec:
            return record["result"]
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"spec": spec, "result": result}, indent=2))
    os.replace(tmp, path)
    return result


def select_lr(validation: Mapping[float, float]) -> float:
    """The learning rate with the best validation score (ties: the earlier one; NaN never wins).

    Args:
        validation: learning rate -> best validation mean Dice of its run. Only validation numbers come in: the
            test split is evaluated after this choice, at the chosen rate only.

    Raises:
        ValueError: empty.
    """
    if not validation:
        raise ValueError("no learning rates to choose from.")

    def score(item):
        v = item[1]
        return -math.inf if v is None or v != v else v

    return max(validation.items(), key=score)[0]


def _mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def run_task(task: Task, runner, work: Path, lrs: Sequence[float] = DEFAULT_LRS,
             seeds: Sequence[int] = DEFAULT_SEEDS, lr_search_time_matched: bool = False,
             log: Callable[[str], None] = print) -> Dict[str, Any]:
    """The whole protocol on one task; every training and test run goes through the cache in ``work``.

    Args:
        task: the resolved task.
        runner: has ``train(task, network_def, lr, seed, epochs, folder) -> dict`` (with ``train_loop_s`` and
            ``best_val_mean_dice``) and ``test(task, network_def, folder) -> dict`` (with ``dice``: class ->
            value, and ``mean_dice``); see :class:`BundleRunner`.
        work: cache and scratch folder (``<work>/<task>/<row>/lr<lr>_seed<seed>_ep<epochs>/``).
        lrs: the learning-rate grid.
        seeds: seeds; the first one also serves the learning-rate search.
        lr_search_time_matched: search the rate of row (c) too (else it reuses row (a)'s).
        log: progress messages.

    Returns:
        the task's results: per row its ``network_def``, ``parameters``, ``macs_per_voxel``, ``lr``, ``epochs``,
        ``lr_search`` (rate -> validation Dice), and per seed the ``train`` and ``test`` records.
    """
    num_classes = len(task.class_names)
    base = task.network_def
    kmunet_stats = network_stats(base, num_classes, task.patch_size)
    factor, wide_channels, _ = match_width(base, num_classes, kmunet_stats["parameters"])
    defs = {arm: arm_network_def(arm, base, factor) for arm in ARMS}
    result: Dict[str, Any] = {"task": task.name, "label": task.label, "dims": task.dims,
                              "class_names": list(task.class_names), "epochs": task.epochs,
                              "val_interval": task.val_interval, "lrs": list(lrs), "seeds": list(seeds),
                              "patch_size": list(task.patch_size), "width_factor": factor,
                              "lr_search_time_matched": lr_search_time_matched, "arms": {}}
    walls: Dict[str, float] = {}  # wall time of every bundle command the result rests on (searches included)

    def folder(arm: str, lr: float, seed: int, epochs: int) -> Path:
        return work / task.name / arm / f"lr{lr:g}_seed{seed}_ep{epochs}"

    def spec(arm: str, lr: float, seed: int, epochs: int) -> Dict[str, Any]:
        return {"task": task.name, "arm": arm, "network_def": defs[arm], "lr": lr, "seed": seed, "epochs": epochs,
                "val_interval": task.val_interval, "data_args": task.data_args,
                "runner": getattr(runner, "settings", None)}

    def train(arm: str, lr: float, seed: int, epochs: int) -> Dict[str, Any]:
        out = folder(arm, lr, seed, epochs)

        def compute():
            log(f"[{task.name}] train {arm} lr={lr:g} seed={seed} epochs={epochs}")
            return runner.train(task, defs[arm], lr, seed, epochs, out)

        record = cached_json(out / "train_result.json", spec(arm, lr, seed, epochs), compute)
        walls[str(out / "train")] = record.get("wall_s", 0.0)
        return record

    def test(arm: str, lr: float, seed: int, epochs: int) -> Dict[str, Any]:
        out = folder(arm, lr, seed, epochs)

        def compute():
            log(f"[{task.name}] test {arm} lr={lr:g} seed={seed} epochs={epochs}")
            return runner.test(task, defs[arm], out)

        record = cached_json(out / "test_result.json", spec(arm, lr, seed, epochs), compute)
        walls[str(out / "test")] = record.get("wall_s", 0.0)
        return record

    def finish(arm: str, lr: float, epochs: int, search: Dict[float, float]) -> None:
        stats = kmunet_stats if arm == "kmunet" else network_stats(defs[arm], num_classes, task.patch_size)
        runs = {}
        for seed in seeds:
            runs[str(seed)] = {"train": train(arm, lr, seed, epochs)}
        for seed in seeds:  # the test split only now, after the rate and the checkpoints are fixed
            runs[str(seed)]["test"] = test(arm, lr, seed, epochs)
        result["arms"][arm] = {"network_def": defs[arm], **stats, "lr": lr, "epochs": epochs,
                               "lr_search": {f"{k:g}": v for k, v in search.items()}, "seeds": runs}

    for arm in SEARCHED_ARMS:
        search = {lr: train(arm, lr, seeds[0], task.epochs)["best_val_mean_dice"] for lr in lrs}
        finish(arm, select_lr(search), task.epochs, search)

    # (c): the UNet of (a) for as many epochs as fit in KMUNet's training time (means over the seeds)
    t_kmunet = statistics.fmean(r["train"]["train_loop_s"] for r in result["arms"]["kmunet"]["seeds"].values())
    t_unet = statistics.fmean(r["train"]["train_loop_s"] for r in result["arms"]["unet"]["seeds"].values())
    time_epochs = max(task.epochs, int(task.epochs * t_kmunet / t_unet))
    result["time_matched"] = {"kmunet_train_s": t_kmunet, "unet_train_s": t_unet, "epochs": time_epochs}
    if lr_search_time_matched:
        search = {lr: train("unet_time", lr, seeds[0], time_epochs)["best_val_mean_dice"] for lr in lrs}
        lr_time = select_lr(search)
    else:
        search, lr_time = {}, result["arms"]["unet"]["lr"]
    finish("unet_time", lr_time, time_epochs, search)
    result["arms"] = {arm: result["arms"][arm] for arm in ARMS}
    result["protocol_wall_s"] = sum(walls.values())
    result["runs"] = len(walls)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# running the bundle


#: merged after train.json (with its imports plus json and resource): the same training, then a JSON file of what
#: the protocol needs from the process
STATS_RUN = [
    "$@train#trainer.run()",
    "$pathlib.Path(@compare_stats_file).write_text(json.dumps({"
    "'train_loop_s': float(@train#trainer.state.times['COMPLETED']), "
    "'epochs_run': int(@train#trainer.state.epoch), "
    "'iterations': int(@train#trainer.state.iteration), "
    "'best_val_mean_dice': float(@validate#evaluator.state.best_metric), "
    "'best_val_epoch': int(@validate#evaluator.state.best_metric_epoch), "
    "'last_val_metrics': {k: float(v) for k, v in @validate#evaluator.state.metrics.items() "
    "if isinstance(v, (int, float))}, "
    "'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "
    "'torch_threads': torch.get_num_threads()}, indent=2))",
]


def stats_config(dims: int) -> Dict[str, Any]:
    """The config merged after the ``dims``-D bundle's ``train.json``: its ``run`` replaced by :data:`STATS_RUN`.

    Args:
        dims: 2 or 3.
    """
    imports = bundle_config(dims)["imports"] + ["$import json", "$import pathlib", "$import resource",
                                                 "$import torch"]
    return {"imports": imports, "compare_stats_file": "stats.json", "run": list(STATS_RUN)}


def _metric(metrics: Mapping[str, float], name: str) -> Optional[float]:
    """``val_<name>`` from an evaluation's ``metrics.csv``, or any ``*_<name>`` (the prefix may change)."""
    if f"val_{name}" in metrics:
        return metrics[f"val_{name}"]
    for key, value in metrics.items():
        if key.endswith(f"_{name}"):
            return value
    return None


class BundleRunner:
    """Runs the segmentation bundles (``python -m monai.bundle run``) for :func:`run_task`.

    Args:
        work: folder of the stats config.
        fused: compiled KAN kernels (``MONAI_KAN_FUSED=1``).
    """

    def __init__(self, work: Path, fused: bool = True) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.stats_config = {d: work / f"stats_config_{d}d.json" for d in (2, 3)}
        for d, path in self.stats_config.items():
            path.write_text(json.dumps(stats_config(d), indent=2))
        self.env = {**os.environ, "MONAI_KAN_FUSED": "1" if fused else "0"}
        #: overrides of every training: validation computes only the key metric (mean Dice, which selects the
        #: checkpoint and the learning rate); the bundle's per-class HD95 would cost more than the training on
        #: small budgets and is not used here. Part of every cached run's spec.
        self.settings = {"fused": fused, "train_overrides": {"validate#additional_metrics": {}}}

    def train(self, task: Task, net_def: Mapping[str, Any], lr: float, seed: int, epochs: int,
              folder: Path, overrides: Optional[Mapping[str, Any]] = None,
              configs: Sequence[Mapping[str, Any]] = ()) -> Dict[str, Any]:
        """Train one row with the bundle's ``train.json``; returns the stats of the training process.

        Args:
            overrides: further bundle overrides (a variant's, e.g. ``{"spline_lr_scale": 0.1}``).
            configs: further configs merged after ``train.json`` (a variant's, e.g. a grid-update handler), written
                into ``folder``.

        Raises:
            RuntimeError: the command failed (the message names its log).
        """
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted run starts again
        folder.mkdir(parents=True)
        stats = folder / "stats.json"
        args = {**task.data_args, "network_def": dict(net_def), "learning_rate": lr, "seed": seed,
                "epochs": epochs, "val_interval": task.val_interval, "progress_bar": False, "overwrite": True,
                "ckpt_dir": str(folder / "models"), "log_dir": str(folder / "runs"),
                "compare_stats_file": str(stats), **self.settings["train_overrides"], **(overrides or {})}
        extra = []
        for i, config in enumerate(configs):
            extra.append(folder / f"variant_config_{i}.json")
            extra[-1].write_text(json.dumps(config, indent=2))
        timing = run_bundle([BUNDLE[task.dims] / "configs" / "train.json", self.stats_config[task.dims], *extra],
                            log=folder / "train.log", args=args, env=self.env)
        record = json.loads(stats.read_text())
        record.update(wall_s=timing["wall_s"], cpu_s=timing["cpu_s"], load_avg=os.getloadavg()[0])
        return record

    def test(self, task: Task, net_def: Mapping[str, Any], folder: Path) -> Dict[str, Any]:
        """Evaluate the best checkpoint of a training in ``folder`` on the ``test`` list (``evaluate.json``).

        Raises:
            RuntimeError: the command failed (the message names its log).
        """
        out = folder / "test_eval"
        args = {**task.data_args, "network_def": dict(net_def), "ckpt_path": str(folder / "models" / "model.pt"),
                "eval_split": "test", "output_dir": str(out), "progress_bar": False, "overwrite": True}
        timing = run_bundle([BUNDLE[task.dims] / "configs" / n for n in ("inference.json", "evaluate.json")],
                            log=folder / "test.log", args=args, env=self.env)
        metrics = read_metrics(out / "metrics.csv")
        fg = task.class_names[1:]
        return {"dice": {c: _metric(metrics, f"dice_{c}") for c in fg},
                "mean_dice": _metric(metrics, "mean_dice"),
                "hd95": {c: _metric(metrics, f"hd95_{c}") for c in fg},
                "test_cases": len(read_raw_metrics(out / "val_mean_dice_raw.csv")),
                "metrics": metrics, "wall_s": timing["wall_s"], "cpu_s": timing["cpu_s"]}


def prepare_task(name: str, data_root: Optional[Path], epochs: Optional[int] = None,
                 val_interval: Optional[int] = None, phantom: Optional[Mapping[str, Any]] = None,
                 overrides: Optional[Mapping[str, Any]] = None) -> Task:
    """Resolve a task of :data:`TASKS`: prepare its data if needed and collect the bundle overrides.

    Args:
        name: a key of :data:`TASKS`.
        data_root: folder of the real data sets (``<data_root>/<source>_<d>d``); None: the bundle's ``data/``.
        epochs, val_interval: override the task's budget.
        phantom: for the synthetic tasks, phantom settings (e.g. fewer, smaller cases for a smoke run); the set
            is generated into ``<data_root>/phantom<d>d_<hash of the settings>``.
        overrides: further bundle overrides (e.g. ``{"num_val": 1}``).

    Raises:
        subprocess.CalledProcessError: the data preparation failed.
    """
    spec = TASKS[name]
    config = bundle_config(spec.dims)
    data_args: Dict[str, Any] = {}
    if spec.data is not None:
        folder = (data_root or BUNDLE[spec.dims] / "data") / spec.data
        if not (folder / "dataset.json").is_file():
            source, dims = spec.data.rsplit("_", 1)
            subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_real_data.py"), "--source", source,
                            "--dims", dims[0], "--out", str(folder)], check=True)
        data_args = json.loads((folder / "bundle_args.json").read_text())
    elif phantom:
        settings = {**config["phantom"], **phantom}
        tag = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        folder = (data_root or BUNDLE[spec.dims] / "data") / f"phantom{spec.dims}d_{tag}"
        data_args = {"phantom": settings, "dataset_dir": str(folder),
                     "default_dataset_dir": str(folder)}
    data_args.update(overrides or {})
    return Task(name=name, dims=spec.dims, label=spec.label, epochs=epochs or spec.epochs,
                val_interval=val_interval or spec.val_interval,
                class_names=list(data_args.get("class_names", config["class_names"])),
                patch_size=list(data_args.get("patch_size", config["patch_size"])), data_args=data_args,
                network_def=dict(config["network_def"]))


# ---------------------------------------------------------------------------------------------------------------------
# tables and the generated sentences


def arm_label(arm: str, res: Mapping[str, Any]) -> str:
    """Row name of ``arm`` in the table of task result ``res``."""
    a = res["arms"][arm]
    if arm == "kmunet":
        return "KMUNet (bundle default)"
    if arm == "unet":
        return "(a) UNet, same channels"
    if arm == "unet_wide":
        return f"(b) UNet, channels x{res['width_factor']:.2f} (parameters matched)"
    if arm == "unet_time":
        return f"(c) UNet, same channels, {a['epochs']} epochs (train time matched)"
    return "(d) KMUNet topology, plain convolutions"


def summarize(res: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per row: mean and std over seeds of test Dice per class and mean Dice, train time and peak memory.

    Args:
        res: a :func:`run_task` result.

    Returns:
        row -> ``{"label", "lr", "epochs", "parameters", "macs_per_voxel", "dice": {class: (mean, std)},
        "mean_dice": (mean, std), "train_s": (mean, std), "peak_mib": (mean, std), "n_seeds"}``; std is the
        sample std (None for one seed).
    """
    rows = {}
    for arm, a in res["arms"].items():
        runs = list(a["seeds"].values())
        rows[arm] = {
            "label": arm_label(arm, res), "lr": a["lr"], "epochs": a["epochs"], "parameters": a["parameters"],
            "macs_per_voxel": a["macs_per_voxel"], "n_seeds": len(runs),
            "dice": {c: _mean_std([r["test"]["dice"].get(c) for r in runs]) for c in res["class_names"][1:]},
            "mean_dice": _mean_std([r["test"]["mean_dice"] for r in runs]),
            "train_s": _mean_std([r["train"]["train_loop_s"] for r in runs]),
            # CPU time of the training process: unlike wall time, comparable between runs at different loads
            "cpu_s": _mean_std([r["train"].get("cpu_s") for r in runs]),
            "peak_mib": _mean_std([r["train"]["peak_rss_mib"] for r in runs]),
        }
    return rows


def _pm(ms: Tuple[float, Optional[float]], digits: int = 3) -> str:
    mean, std = ms
    if mean != mean:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _short(label: str) -> str:
    """``(a) UNet, same channels`` -> ``(a)``; KMUNet's own label unchanged."""
    return label.split(" ", 1)[0] if label.startswith("(") else label


def verdict(rows: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> str:
    """The generated sentences: where KMUNet loses (test Dice per class and mean, then cost), and where it is best.

    Every comparison is computed from ``rows`` (:func:`summarize`): a baseline beats KMUNet on a class when its mean
    test Dice over the seeds is higher at the table's 3 decimals; "within the seed spread" marks a gap smaller than
    the larger of the two seed standard deviations. Costs (parameters, MACs per voxel, train time, peak memory)
    are ratios KMUNet / baseline, listed where KMUNet needs more than 1.05x.

    Args:
        rows: :func:`summarize` of one task.
        class_names: all classes, background first.
    """
    k = rows["kmunet"]
    targets = [(c, f"Dice {c}") for c in class_names[1:]] + [(None, "mean Dice")]

    def dice(row, c):
        return row["mean_dice"] if c is None else row["dice"][c]

    best_mean = max(row["mean_dice"][0] for row in rows.values())
    no_signal = (f"**No row segments this set at this budget** (best mean test Dice {best_mean:.3f}, below "
                 f"{NO_SIGNAL_DICE}): the differences in this table are noise and do not rank the networks. "
                 if best_mean < NO_SIGNAL_DICE else "")

    losses = []
    for arm, row in rows.items():
        if arm == "kmunet":
            continue
        items = []
        for c, name in targets:
            (km, ks), (bm, bs) = dice(k, c), dice(row, c)
            if bm == bm and km == km and round(bm, 3) > round(km, 3):  # a gap the table shows
                spread = max(s for s in (ks, bs, 0.0) if s is not None)
                note = ", within the seed spread" if bm - km < spread else ""
                items.append(f"{name} ({bm:.3f} vs KMUNet's {km:.3f}{note})")
        if items:
            losses.append(f"{row['label']} on " + ", ".join(items))
    if losses:
        text = "**Where KMUNet loses:** on test Dice to " + "; to ".join(losses) + "."
    else:
        text = "**Where KMUNet loses:** on test Dice to none of the baselines here."
    costs = []
    for arm, row in rows.items():
        if arm == "kmunet":
            continue
        parts = []
        for key, name in (("parameters", "the parameters"), ("macs_per_voxel", "the MACs per voxel"),
                          ("train_s", "the train time"), ("cpu_s", "the CPU time"),
                          ("peak_mib", "the peak memory")):
            if key not in k or key not in row:
                continue
            kv, bv = (k[key][0], row[key][0]) if isinstance(k[key], tuple) else (k[key], row[key])
            if bv and kv == kv and bv == bv and kv / bv > 1.05:
                parts.append(f"{kv / bv:.1f}x {name}")
        if parts:
            costs.append(f"{', '.join(parts)} of {_short(row['label'])}")
    if costs:
        text += " On cost it needs " + "; ".join(costs) + "."
    best = []
    for c, name in targets:
        values = {arm: dice(row, c)[0] for arm, row in rows.items() if dice(row, c)[0] == dice(row, c)[0]}
        if values and max(values, key=values.get) == "kmunet":
            best.append(name)
    text += (" KMUNet has the best " + ", ".join(best) + " of all rows." if best
             else " KMUNet has the best test Dice of no class.")
    return no_signal + text


def task_loads(res: Mapping[str, Any]) -> List[float]:
    """The 1-minute load averages recorded at the end of one task's trainings (runs of older versions have none)."""
    return [run["train"]["load_avg"] for a in res["arms"].values() for run in a["seeds"].values()
            if "load_avg" in run["train"]]


def render_task(res: Mapping[str, Any]) -> List[str]:
    """The markdown lines of one task: caption, table, generated verdict."""
    rows = summarize(res)
    fg = res["class_names"][1:]
    n_test = next(iter(next(iter(res["arms"].values()))["seeds"].values()))["test"]["test_cases"]
    n_seeds = len(res["seeds"])
    loads = task_loads(res)
    load = f", load {statistics.fmean(loads):.1f} (max {max(loads):.1f})" if loads else ""
    lines = [f"**{res['label']}**: {res['epochs']} epoch{'s' if res['epochs'] != 1 else ''} (row c: "
             f"{res['time_matched']['epochs']}), validation "
             f"every {res['val_interval']}, learning rate from {{{', '.join(f'{x:g}' for x in res['lrs'])}}} "
             f"on the validation split (row c: {'searched too' if res.get('lr_search_time_matched') else 'row a'}"
             f"'s), {n_seeds} seed{'s' if n_seeds > 1 else ''}, {n_test} test case{'s' if n_test != 1 else ''}; "
             f"`{res.get('command', 'python scripts/compare_unet.py')}`, {res.get('runs', 0)} bundle commands in "
             f"{res.get('protocol_wall_s', 0.0) / 3600:.2f} h{load}", ""]
    header = (["model", "lr", "parameters", "MACs/voxel", "train time", "CPU time", "peak memory"]
              + [f"Dice {c}" for c in fg] + ["mean Dice"])
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for arm, r in rows.items():
        cells = [r["label"], f"{r['lr']:g}", f"{r['parameters']:,}", f"{r['macs_per_voxel'] / 1e3:,.1f} k",
                 _duration(r["train_s"][0]), _duration(r["cpu_s"][0]) if r["cpu_s"][0] == r["cpu_s"][0] else "-",
                 f"{r['peak_mib'][0]:,.0f} MiB"]
        cells += [_pm(r["dice"][c]) for c in fg] + [_pm(r["mean_dice"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", verdict(rows, res["class_names"]), ""]
    return lines


def render(results: Mapping[str, Mapping[str, Any]], dims: int, machine: str) -> str:
    """The comparison section of the ``dims``-D bundle README (the text between the markers).

    Args:
        results: task -> :func:`run_task` result (with ``"command"``, ``"protocol_wall_s"`` and ``"runs"``).
        dims: 2 or 3.
        machine: the machine, for the caption.
    """
    tasks = [r for r in results.values() if r["dims"] == dims]
    wall = sum(r.get("protocol_wall_s", 0.0) for r in tasks)
    if any(task_loads(r) for r in tasks):
        load = (f"Load (each caption): the 1-minute load average at the end of the trainings, mean and max, on "
                f"{os.cpu_count()} cores; the protocol alone accounts for up to about 4 (two torch threads, two "
                "data-loader workers), more means other jobs shared the machine and the times are upper bounds.")
    else:
        load = "The machine load was not recorded."
    lines = ["",
             f"Generated by `scripts/compare_unet.py` on {machine}: {wall / 3600:.2f} h of bundle commands for these "
             "tables (each table names its command); the numbers and the verdicts under each table are computed "
             "by the script, not typed. Protocol "
             "(docs/comparison_protocol.md): every row is trained by this bundle's `train.json` and tested by its "
             "`evaluate.json` on the held-out `test` list, which plays no part in training, checkpoint or "
             "learning-rate selection; each row's learning rate is the grid value with the best validation Dice "
             "(first seed). Dice: mean ± sample std over the seeds of the test-set mean. "
             "MACs/voxel: multiply-accumulates of the convolutions in one forward pass per input voxel (a KAN "
             "convolution counts G + k + 1 per edge and kernel offset; basis evaluation, norms and activations not "
             "counted). Train time: wall-clock time of the training loop (validation included, start-up and data "
             "caching not), mean over seeds; it grows with the machine's load, and row (c)'s epochs are matched on "
             "it. CPU time: all threads of the training process (start-up included); it also grows under contention "
             "(cache and memory-bandwidth sharing), so on a shared machine neither time is a load-free cost, and "
             "MACs/voxel is; peak memory: the training process's maximum resident set (the cached data set and the "
             "runtime included, so differences are what the networks add). " + load, ""]
    for res in tasks:
        lines += render_task(res)
    return "\n".join(lines)


def readme_targets(values: Sequence[str]) -> Dict[int, Path]:
    """``--readme`` values -> dims -> README: ``bundles`` (both bundles' docs/README.md), ``2d=PATH``, ``3d=PATH``.

    Raises:
        ValueError: another form.
    """
    out: Dict[int, Path] = {}
    for value in values:
        if value == "bundles":
            out.update({d: BUNDLE[d] / "docs" / "README.md" for d in (2, 3)})
        elif value[:3] in ("2d=", "3d="):
            out[int(value[0])] = Path(value[3:])
        else:
            raise ValueError(f"--readme takes 'bundles', '2d=PATH' or '3d=PATH', got {value!r}.")
    return out


def write_readmes(results: Mapping[str, Mapping[str, Any]], targets: Mapping[int, Path], machine: str) -> List[Path]:
    """Write the tables between the comparison markers of each target README that has results.

    Args:
        results: task -> :func:`run_task` result.
        targets: dims -> README.
        machine: the machine, for the caption.

    Returns:
        the READMEs written.

    Raises:
        ValueError: a README lacks the markers.
    """
    written = []
    for dims, path in targets.items():
        if any(r["dims"] == dims for r in results.values()):
            write_between_markers(path, START, END, render(results, dims, machine))
            written.append(path)
    return written


# ---------------------------------------------------------------------------------------------------------------------
# issue 10, item 5: KMUNet's training options, each against the default on the validation split


VARIANT_START, VARIANT_END = "<!-- kmunet-variants:start -->", "<!-- kmunet-variants:end -->"


def variant_slot(task_name: str, seeds: Sequence[int]) -> Tuple[str, str, str]:
    """Where a ``--variants`` run is kept and shown: its key in ``variants.json`` and its doc markers. The one-seed
    screen (seed 0) uses the task name and :data:`VARIANT_START`/:data:`VARIANT_END`; a run with other seeds (the
    check of the screen's candidates) gets its own key and markers, so neither replaces the other."""
    if list(seeds) == [0]:
        return task_name, VARIANT_START, VARIANT_END
    tag = "seeds=" + ",".join(str(s) for s in seeds)
    return f"{task_name}:{tag}", f"<!-- kmunet-variants:{tag}:start -->", f"<!-- kmunet-variants:{tag}:end -->"
#: task of ``--variants`` when ``--tasks`` is not given
VARIANT_TASK = "synthetic3d"


class Variant(NamedTuple):
    """One KMUNet training option of ``--variants``.

    Attributes:
        label: row name of the table.
        network: merged into KMUNet's ``network_def`` (e.g. ``{"rank": 2}``).
        overrides: further ``train.json`` overrides (e.g. ``{"spline_lr_scale": 0.1}``).
        grid_update: merge the bundle's grid-update handler (``KANGridHandler`` of ``configs/kan_tools.json``, with
            its schedule) after ``train.json``.
    """

    label: str
    network: Dict[str, Any] = {}
    overrides: Dict[str, Any] = {}
    grid_update: bool = False


#: the options of the KM-UNet slides' future work that are cheap to try (V. Kumar, 2025, "Future Improvements":
#: initialisation strategies, normalisation, adaptive learning rates, grid refinement, low-rank KANs); "default"
#: is the bundle's KMUNet, the KMUNet row of the protocol
VARIANTS: Dict[str, Variant] = {
    "default": Variant("KMUNet (bundle default: full KAN convs, noise init, instance norm, one rate)"),
    "rank1": Variant("low-rank KAN convs, r = 1", {"rank": 1}),
    "rank2": Variant("low-rank KAN convs, r = 2", {"rank": 2}),
    "init_zero": Variant("control points start at zero (the plain-conv twin)", {"spline_init": "zero"}),
    "init_linear": Variant("control points start as the line x", {"spline_init": "linear"}),
    "norm_batch": Variant("batch norm before the KAN convs", {"norm": "batch"}),
    "norm_group1": Variant("group norm, 1 group (layer norm over C and space)", {"norm": ["group", {"num_groups": 1}]}),
    "grid_update": Variant("grid update during training (kan_tools.json schedule)", grid_update=True),
    "spline_lr_0.1": Variant("control points at 0.1x the learning rate", overrides={"spline_lr_scale": 0.1}),
    "spline_lr_10": Variant("control points at 10x the learning rate", overrides={"spline_lr_scale": 10.0}),
}


def grid_update_config(dims: int) -> Dict[str, Any]:
    """The grid-update part of the ``dims``-D bundle's ``configs/kan_tools.json``: its ``kan_grid_*`` settings and
    its ``KANGridHandler`` entry, as a config to merge after ``train.json`` (without the regularised loss and the
    TensorBoard handler of that file, which are other options).

    Args:
        dims: 2 or 3.

    Raises:
        ValueError: ``kan_tools.json`` has no ``KANGridHandler``.
    """
    tools = json.loads((BUNDLE[dims] / "configs" / "kan_tools.json").read_text())
    handlers = [h for h in tools.get("+train#handlers", []) if str(h.get("_target_", "")).endswith("KANGridHandler")]
    if not handlers:
        raise ValueError(f"{BUNDLE[dims] / 'configs' / 'kan_tools.json'} has no KANGridHandler.")
    return {**{k: v for k, v in tools.items() if k.startswith("kan_grid_")}, "+train#handlers": handlers}


def variant_run(name: str, base: Mapping[str, Any], dims: int) -> Dict[str, Any]:
    """What training variant ``name`` changes: ``{"row", "network_def", "overrides", "configs"}``.

    Args:
        name: a key of :data:`VARIANTS`.
        base: KMUNet's ``network_def``.
        dims: 2 or 3 (which bundle's grid-update config).

    Raises:
        ValueError: unknown ``name``.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {list(VARIANTS)}.")
    v = VARIANTS[name]
    return {"row": "kmunet" if name == "default" else f"kmunet_{name}", "network_def": {**base, **v.network},
            "overrides": dict(v.overrides), "configs": [grid_update_config(dims)] if v.grid_update else []}


def run_variants(task: Task, runner, work: Path, names: Sequence[str] = tuple(VARIANTS), lr: Optional[float] = None,
                 lrs: Sequence[float] = DEFAULT_LRS, seeds: Sequence[int] = (0,),
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train every variant of ``names`` (plus the default) on ``task`` and score it on the validation split.

    The default is the protocol's KMUNet row: same folder and cache spec (``<work>/<task>/kmunet/lr.._seed.._ep..``),
    so a protocol run in the same ``work`` is reused and vice versa; a variant's runs are cached alike under
    ``<work>/<task>/kmunet_<variant>/`` with what it changes in their spec. Nothing is evaluated on the test split.

    Args:
        task: the resolved task.
        runner: as :func:`run_task`; ``train`` also takes ``overrides`` and ``configs`` (:class:`BundleRunner`).
        work: cache folder (the protocol's).
        names: variants to run (keys of :data:`VARIANTS`); ``"default"`` is always added.
        lr: KMUNet's learning rate; ``None``: the protocol's choice, i.e. the rate of ``lrs`` with the best validation
            Dice of KMUNet with the first seed (its cached runs, or trained now).
        lrs: the protocol's learning-rate grid (used when ``lr`` is None).
        seeds: seeds of every variant.
        log: progress messages.

    Returns:
        ``{"task", "label", "dims", "epochs", "val_interval", "lr", "lr_search", "seeds", "patch_size",
        "variants": {name: {"label", "network_def", "overrides", "grid_update", "parameters", "macs_per_voxel",
        "seeds": {seed: train record}}}, "protocol_wall_s", "runs"}``.

    Raises:
        ValueError: an unknown variant.
    """
    names = ["default"] + [n for n in names if n != "default"]
    runs = {n: variant_run(n, task.network_def, task.dims) for n in names}
    num_classes = len(task.class_names)
    walls: Dict[str, float] = {}

    def train(name: str, lr: float, seed: int) -> Dict[str, Any]:
        r = runs[name]
        out = work / task.name / r["row"] / f"lr{lr:g}_seed{seed}_ep{task.epochs}"
        # the protocol's spec (run_task), plus what a variant changes: the default row is the protocol's KMUNet run
        spec = {"task": task.name, "arm": r["row"], "network_def": r["network_def"], "lr": lr, "seed": seed,
                "epochs": task.epochs, "val_interval": task.val_interval, "data_args": task.data_args,
                "runner": getattr(runner, "settings", None)}
        extra = {}
        if name != "default":
            spec["variant"] = {"overrides": r["overrides"], "configs": r["configs"]}
            extra = {"overrides": r["overrides"], "configs": r["configs"]}

        def compute():
            log(f"[{task.name}] train variant {name} lr={lr:g} seed={seed} epochs={task.epochs}")
            return runner.train(task, r["network_def"], lr, seed, task.epochs, out, **extra)

        record = cached_json(out / "train_result.json", spec, compute)
        walls[str(out / "train")] = record.get("wall_s", 0.0)
        return record

    search: Dict[str, Any] = {}
    if lr is None:
        values = {x: train("default", x, seeds[0])["best_val_mean_dice"] for x in lrs}
        lr, search = select_lr(values), {f"{k:g}": v for k, v in values.items()}
    result: Dict[str, Any] = {"task": task.name, "label": task.label, "dims": task.dims, "epochs": task.epochs,
                              "val_interval": task.val_interval, "lr": lr, "lr_search": search, "seeds": list(seeds),
                              "patch_size": list(task.patch_size), "variants": {}}
    for name in names:
        r = runs[name]
        stats = network_stats(r["network_def"], num_classes, task.patch_size)
        result["variants"][name] = {
            "label": VARIANTS[name].label, "network_def": r["network_def"], "overrides": r["overrides"],
            "grid_update": bool(r["configs"]), **stats,
            "seeds": {str(seed): train(name, lr, seed) for seed in seeds}}
    result["protocol_wall_s"] = sum(walls.values())
    result["runs"] = len(walls)
    return result


def protocol_seed_spread(protocol: Mapping[str, Any], task_name: str, lr: Optional[float]) -> Optional[Dict[str, Any]]:
    """The default KMUNet's validation Dice over the protocol's seeds, the yardstick of a variant's one-seed gain.

    Args:
        protocol: the protocol's ``results.json`` (task -> :func:`run_task` result).
        task_name: the variants' task.
        lr: the variants' learning rate; the spread is used only when the protocol chose the same rate.

    Returns:
        ``{"seeds": {seed: best validation mean Dice}, "lr": rate}``, or None without at least two seeds at ``lr``.
    """
    arm = protocol.get(task_name, {}).get("arms", {}).get("kmunet")
    if not arm or lr is None or abs(arm.get("lr", float("nan")) - lr) > 1e-12 * max(1.0, abs(lr)):
        return None
    seeds = {k: v["train"]["best_val_mean_dice"] for k, v in arm.get("seeds", {}).items()}
    return {"seeds": seeds, "lr": lr} if len(seeds) >= 2 else None


def render_variants(res: Mapping[str, Any], machine: str) -> str:
    """The variants table (the text between :data:`VARIANT_START` and :data:`VARIANT_END`) with its caption and
    generated sentences: which variants beat the default on the validation split, and at what cost.

    Args:
        res: a :func:`run_variants` result (with ``"command"``; with ``"seed_spread"``, from
            :func:`protocol_seed_spread`, a gain within the default's seed range is called so).
        machine: the machine, for the caption.
    """
    n_seeds = len(res["seeds"])
    rows = {}
    for name, v in res["variants"].items():
        runs = list(v["seeds"].values())
        rows[name] = {"label": v["label"], "parameters": v["parameters"], "macs": v["macs_per_voxel"],
                      "train_s": _mean_std([r["train_loop_s"] for r in runs]),
                      # CPU time of the whole training process: comparable across runs made at different loads
                      "cpu_s": _mean_std([r.get("cpu_s") for r in runs]),
                      "load": max(r.get("load_avg", float("nan")) for r in runs),
                      "dice": _mean_std([r["best_val_mean_dice"] for r in runs])}
    default = rows["default"]["dice"][0]
    lines = ["",
             f"Generated by `scripts/compare_unet.py --variants` on {machine}: **{res['label']}**, {res['epochs']} "
             f"epoch{'s' if res['epochs'] != 1 else ''} (validation every {res['val_interval']}), KMUNet's learning "
             f"rate {res['lr']:g} for every variant"
             + (f" (chosen on validation from {{{', '.join(res['lr_search'])}}})" if res.get("lr_search")
                else f" ({res['lr_source']})" if res.get("lr_source") else "")
             + f", seed{'s' if n_seeds > 1 else ''} {', '.join(map(str, res['seeds']))}; "
             f"`{res.get('command', 'python scripts/compare_unet.py --variants')}`, {res.get('runs', 0)} bundle "
             f"commands in {res.get('protocol_wall_s', 0.0) / 3600:.2f} h. Validation mean Dice: the best of the "
             "training's validations (the checkpoint-selection metric, on the last `num_val` items of the training "
             "list); the test split is not used. Δ: against the default row"
             + (", mean over the seeds" if n_seeds > 1 else "; one seed, so differences of a few 0.01 are noise")
             + ". Train time is the training loop's wall-clock time and depends on the machine's load (the 1-minute "
             "load average at the end of the training, on all cores, in the load column); CPU time (all threads of the "
             "training process, start-up included) grows with the load too, though less: compare costs by MACs/voxel, "
             "and times only between rows run at similar loads.", "",
             "| variant | parameters | MACs/voxel | train time (wall) | CPU time | load | validation mean Dice | "
             "Δ vs default |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        delta = "" if name == "default" or r["dice"][0] != r["dice"][0] else f"{r['dice'][0] - default:+.3f}"
        cpu = _duration(r["cpu_s"][0]) if r["cpu_s"][0] == r["cpu_s"][0] else "-"
        load = f"{r['load']:.1f}" if r["load"] == r["load"] else "-"
        lines.append(f"| `{name}`: {r['label']} | {r['parameters']:,} | {r['macs'] / 1e3:,.1f} k | "
                     f"{_duration(r['train_s'][0])} | {cpu} | {load} | {_pm(r['dice'])} | {delta} |")
    base_cpu = rows["default"]["cpu_s"][0]
    better = [(n, r["dice"][0] - default) for n, r in rows.items()
              if n != "default" and r["dice"][0] == r["dice"][0] and round(r["dice"][0] - default, 3) > 0]
    spread = res.get("seed_spread")
    top = max(spread["seeds"].values()) if spread else None
    lines.append("")
    if better:
        lines.append("**Better than the default on validation:** " + ", ".join(
            f"`{n}` ({d:+.3f}" + (f", {rows[n]['cpu_s'][0] / base_cpu:.2f}x the CPU time"
                                   if base_cpu == base_cpu and base_cpu > 0 and rows[n]["cpu_s"][0] == rows[n]["cpu_s"][0]
                                   else "")
            + (", within the default's seed range" if top is not None and default + d <= top else "")
            + ")" for n, d in better) + ".")
    else:
        lines.append("**Better than the default on validation:** none of the variants.")
    if spread:
        values = [spread["seeds"][k] for k in sorted(spread["seeds"], key=int)]
        lines += ["", f"Seed spread of the default at this rate (the protocol's KMUNet row, seeds "
                      f"{', '.join(sorted(spread['seeds'], key=int))}): validation mean Dice "
                      f"{', '.join(f'{v:.3f}' for v in values)}, a range of {max(values) - min(values):.3f}. "
                      "A one-seed gain that stays within that range "
                      "is not evidence that the variant trains better."]
    lines.append("")
    return "\n".join(lines)


def variants_main(args, task_name: str, names: Sequence[str], lrs: Sequence[float], seeds: Sequence[int],
                  overrides: Mapping[str, Any], machine: str, command: str) -> int:
    """``--variants``: run (or with ``--write-only`` only render) the variants of one task; results in
    ``<work>/variants.json`` (``results.json``, the protocol's, is only read, for KMUNet's chosen rate)."""
    path = args.work / "variants.json"
    results: Dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    key, start, end = variant_slot(task_name, seeds)
    if not args.write_only:
        lr, source = args.variant_lr, "set by --variant-lr"
        protocol = args.work / "results.json"
        if lr is None and protocol.is_file():
            lr = json.loads(protocol.read_text()).get(task_name, {}).get("arms", {}).get("kmunet", {}).get("lr")
            source = "the protocol's choice for KMUNet in results.json"
        runner = BundleRunner(args.work, fused=not args.eager)
        task = prepare_task(task_name, args.data_root, args.epochs, args.val_interval, args.phantom, overrides)
        res = run_variants(task, runner, args.work, names, lr, lrs, seeds, log=lambda m: print(m, flush=True))
        res["command"] = command
        if lr is not None:
            res["lr_source"] = source
        results[key] = res
        path.write_text(json.dumps(results, indent=2))
    if key not in results:
        print(f"no variants of {key} in {path}", file=sys.stderr)
        return 1
    protocol = args.work / "results.json"
    if protocol.is_file():  # the default's seed spread, when the protocol ran in the same --work
        spread = protocol_seed_spread(json.loads(protocol.read_text()), task_name, results[key].get("lr"))
        if spread:
            results[key]["seed_spread"] = spread
    text = render_variants(results[key], machine)
    print(text, flush=True)
    if args.variants_doc is not None:
        write_between_markers(args.variants_doc, start, end, text)
        print(f"variants table written to {args.variants_doc}")
    return 0


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=None,
                        help=f"comma-separated, from {list(TASKS)} (default: all; with --variants one, "
                             f"{VARIANT_TASK})")
    parser.add_argument("--epochs", type=int, default=None, help="override every task's epochs")
    parser.add_argument("--val-interval", type=int, default=None, help="override every task's validation interval")
    parser.add_argument("--lrs", default=",".join(f"{x:g}" for x in DEFAULT_LRS), help="learning-rate grid")
    parser.add_argument("--seeds", default=None,
                        help="seeds (the first one searches; default: 0,1,2, with --variants 0)")
    parser.add_argument("--lr-search-time-matched", action="store_true",
                        help="search the learning rate of row (c) too (default: row (a)'s)")
    parser.add_argument("--work", type=Path, default=REPO / "eval" / "compare_unet",
                        help="cache and scratch folder (default: eval/compare_unet, git-ignored)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder of the real data sets (default: the bundles' data/ folders)")
    parser.add_argument("--phantom", type=json.loads, default=None,
                        help="JSON phantom settings for the synthetic tasks (smoke runs), e.g. '{\"num_train\": 5}'")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                        help="further bundle override for every task, e.g. num_val=1 (repeatable)")
    parser.add_argument("--eager", action="store_true", help="MONAI_KAN_FUSED=0 (no torch.compile)")
    parser.add_argument("--readme", action="append", default=[], metavar="bundles|2d=PATH|3d=PATH",
                        help="write the tables between the comparison markers of these READMEs (repeatable)")
    parser.add_argument("--write-only", action="store_true",
                        help="only render <work>/results.json (with --variants: <work>/variants.json)")
    parser.add_argument("--variants", nargs="?", const="all", default=None, metavar="NAMES",
                        help=f"measure KMUNet's training variants instead (issue 10, item 5) on one task: all, or "
                             f"comma-separated from {list(VARIANTS)}")
    parser.add_argument("--variant-lr", type=float, default=None,
                        help="KMUNet's learning rate for the variants (default: <work>/results.json's choice for "
                             "the task, else the protocol's search over --lrs, cached)")
    parser.add_argument("--variants-doc", type=Path, default=None, metavar="PATH",
                        help="write the variants table between the kmunet-variants markers of this file, e.g. "
                             "docs/kmunet_variants.md")
    args = parser.parse_args(argv)
    default_tasks = VARIANT_TASK if args.variants is not None else ",".join(TASKS)
    tasks = [t.strip() for t in (args.tasks or default_tasks).split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {list(TASKS)}")
    if args.variants is not None:
        if len(tasks) != 1:
            parser.error(f"--variants runs on one task, got {tasks}")
        names = list(VARIANTS) if args.variants == "all" else [n.strip() for n in args.variants.split(",") if n]
        bad = [n for n in names if n not in VARIANTS]
        if bad:
            parser.error(f"unknown variants {bad}; choose from {list(VARIANTS)}")
    if args.variants_doc is not None and args.variants is None:
        parser.error("--variants-doc needs --variants")
    try:
        targets = readme_targets(args.readme)
    except ValueError as e:
        parser.error(str(e))
    overrides = {}
    for item in args.override:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    lrs = [float(x) for x in args.lrs.split(",")]
    default_seeds = (0,) if args.variants is not None else DEFAULT_SEEDS
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else list(default_seeds)
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores"
    command = "python scripts/compare_unet.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    if args.variants is not None:
        return variants_main(args, tasks[0], names, lrs, seeds, overrides, machine, command)
    results_path = args.work / "results.json"
    results: Dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if not args.write_only:
        runner = BundleRunner(args.work, fused=not args.eager)
        for name in tasks:
            task = prepare_task(name, args.data_root, args.epochs, args.val_interval, args.phantom, overrides)
            res = run_task(task, runner, args.work, lrs, seeds, args.lr_search_time_matched,
                           log=lambda m: print(m, flush=True))
            res["command"] = command
            results[name] = res
            results_path.write_text(json.dumps(results, indent=2))
            print("\n".join(render_task(res)), flush=True)
    for path in write_readmes({k: v for k, v in results.items() if k in tasks}, targets, machine):
        print(f"tables written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
