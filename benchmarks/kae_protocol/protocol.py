"""Training and evaluation protocol of the KAE paper (Yu et al., arXiv:2501.00420, section 4), on tensors held in
memory.

Per dataset, latent size and model: the configuration (learning rate x weight decay, see
:mod:`benchmarks.kae_protocol.models`) is selected by reconstruction loss on a validation part held out of the
training set, trained with the first seed; then, for every seed, the model is trained on the whole training set
with that configuration and evaluated on the test set. Test metrics never take part in the selection.

Every training (one grid entry of a selection, or one seed of a final model) is a task of its own: tasks run in
worker processes (longest first, a seed's task as soon as its model's selection is complete), and each finished
task is stored in the results at once, so an interrupted run resumes with the next missing task.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mnist import ImageSplits
from .metrics import (
    add_gaussian_noise,
    add_salt_and_pepper_noise,
    batched_apply,
    class_balanced_subset,
    nearest_neighbor_accuracy,
    recall_at_k,
    reconstruction_mse,
)
from .models import MODEL_SPECS, build_model, count_parameters

__all__ = [
    "ProtocolConfig",
    "flatten_splits",
    "make_optimizer",
    "train_autoencoder",
    "evaluate_autoencoder",
    "select_configuration",
    "run_protocol",
    "pending_tasks",
    "AUTHORS_CONFIG",
    "RECALL_SAMPLINGS",
]

#: the configuration committed in the KAE authors' model configs (used with ``selection="fixed"``)
AUTHORS_CONFIG = {"lr": 1e-4, "weight_decay": 1e-4}
#: how the similarity-search queries are drawn from the test set (see :class:`ProtocolConfig`)
RECALL_SAMPLINGS = ("per-class", "random")

Log = Callable[[str], None]


@dataclass
class ProtocolConfig:
    """Settings of the protocol; the defaults are the paper's (ambiguities resolved as the authors' code does).

    Args:
        epochs: training epochs. Paper: 10.
        batch_size: Adam mini-batch size. Paper: 256.
        seeds: seeds of the repeated runs (model initialisation, data order, random test subsets, noise). Paper:
            2024-2033.
        selection: ``"validation"`` (choose the grid entry with the lowest validation reconstruction MSE, trained
            with the first seed) or ``"fixed"`` (the authors' committed lr 1e-4, weight decay 1e-4; the MLP keeps
            its validation selection).
        val_fraction: share of the training set held out for selection. Defaults to 0.1.
        split_seed: seed of the train/validation split. Defaults to 0.
        shuffle: reshuffle the training set every epoch. Defaults to False: the authors' loaders do not shuffle.
        recall_samples: test samples in the similarity search. Paper: 1,000.
        recall_k: ``k`` of Recall@k. Paper: 10.
        recall_sampling: which test samples form the search set: ``"per-class"`` (default; the authors' code,
            ``RetrieverPack.get_x`` with ``label_num=100``: the first ``recall_samples / n_classes`` test images of
            each class in file order, the same set for every seed) or ``"random"`` (the paper's text, "randomly
            selected": a new random draw per seed). Both are computed; this one is the reported Table 3.
        gaussian_std: standard deviation of the Gaussian noise (not stated in the paper; 0.1 reproduces the paper's
            gap between Tables 2 and 5).
        salt_pepper_prob: probability of pepper (0) and, separately, of salt (1) per pixel (a total amount of twice
            that in `monai_kan.data.transforms.salt_and_pepper_noise`). Paper: 0.05, i.e. amount 0.10.
        eval_batch_size: rows per forward pass in evaluation.

    Raises:
        ValueError: an unknown ``selection`` or ``recall_sampling``, ``val_fraction`` outside ``(0, 1)``,
            ``epochs < 1``, ``batch_size < 2`` or no seeds.
    """

    epochs: int = 10
    batch_size: int = 256
    seeds: Sequence[int] = (2024, 2025, 2026)
    selection: str = "validation"
    val_fraction: float = 0.1
    split_seed: int = 0
    shuffle: bool = False
    recall_samples: int = 1000
    recall_k: int = 10
    recall_sampling: str = "per-class"
    gaussian_std: float = 0.1
    salt_pepper_prob: float = 0.05
    eval_batch_size: int = 2048

    def __post_init__(self) -> None:
        if self.selection not in ("validation", "fixed"):
            raise ValueError(f"`selection` must be 'validation' or 'fixed', got {self.selection!r}.")
        if self.recall_sampling not in RECALL_SAMPLINGS:
            raise ValueError(f"`recall_sampling` must be one of {RECALL_SAMPLINGS}, got {self.recall_sampling!r}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in (0, 1), got {self.val_fraction!r}.")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"`epochs` must be >= 1 and `batch_size` >= 2, got {self.epochs!r}, {self.batch_size!r}.")
        if len(self.seeds) < 1:
            raise ValueError("`seeds` must not be empty.")
        self.seeds = tuple(int(s) for s in self.seeds)

    def as_dict(self) -> dict:
        """The settings as a plain dict (JSON-serialisable; saved with results to check a resume)."""
        return asdict(self)

    def cache_key(self) -> dict:
        """The settings a stored result depends on: all but the list of seeds (each final run is stored under its
        own seed, so a run with more seeds reuses the ones already done), with the selection seed instead."""
        key = self.as_dict()
        key.pop("seeds")
        key["selection_seed"] = self.seeds[0]
        return key


@dataclass
class _Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def flatten_splits(splits: ImageSplits) -> _Data:
    """Images ``(N, 1, H, W)`` -> contiguous float32 rows ``(N, H * W)``, labels kept.

    Args:
        splits: a dataset from :mod:`~benchmarks.kae_protocol.mnist` or :mod:`~benchmarks.kae_protocol.synthetic`.
    """
    flat = lambda t: t.reshape(t.shape[0], -1).to(torch.float32).contiguous()  # noqa: E731
    return _Data(flat(splits.train_images), splits.train_labels, flat(splits.test_images), splits.test_labels)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` with L2 weight decay, as the authors'; PyTorch's fused (one-kernel) implementation
    where the parameters' device has it (CPU since torch 2.4: same update rule, several times less time for the
    step of a model of 250k parameters), else the default one.

    Args:
        model: the module to optimise.
        lr: learning rate.
        weight_decay: L2 penalty added to the gradient (``torch.optim.Adam``'s ``weight_decay``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an older torch or a device without the fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def train_autoencoder(
    model: nn.Module, x: torch.Tensor, lr: float, weight_decay: float, epochs: int, batch_size: int,
    shuffle: bool = False, generator: Optional[torch.Generator] = None,
) -> List[float]:
    """Adam on the reconstruction MSE, mini-batches sliced from one in-memory tensor (views, no copies, unless
    ``shuffle`` gathers a permuted batch).

    Args:
        model: autoencoder, ``model(x)`` reconstructs ``x``.
        x: ``(N, D)`` training rows in ``[0, 1]``.
        lr: learning rate.
        weight_decay: Adam's (L2) weight decay, as in the authors' ``torch.optim.Adam``.
        epochs: passes over ``x``.
        batch_size: rows per step.
        shuffle: new random order each epoch (drawn from ``generator``); else the stored order.
        generator: random source for the shuffling.

    Returns:
        the mean training loss of each epoch.
    """
    opt = make_optimizer(model, lr, weight_decay)
    model.train()
    n = x.shape[0]
    history = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator) if shuffle else None
        total = torch.zeros((), dtype=torch.float64)
        steps = 0
        for start in range(0, n, batch_size):
            if n - start < 2:
                break  # a one-row batch breaks batch norm (WavKAN); the authors' sizes never produce one
            xb = x[start : start + batch_size] if order is None else x[order[start : start + batch_size]]
            loss = F.mse_loss(model(xb), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            steps += 1
        history.append(float(total) / max(steps, 1))
    model.eval()
    return history


def _pre_activation_encoder(model: nn.Module) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The encoder without its final activation (the latent before the ReLU), when the model is built that way."""
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Sequential) and len(encoder) > 1 and isinstance(encoder[-1], nn.ReLU):
        head = encoder[:-1]
        return lambda x: head(x.flatten(1))
    return None


def evaluate_autoencoder(model: nn.Module, data: _Data, cfg: ProtocolConfig, seed: int) -> Dict[str, float]:
    """All test metrics of the paper for a trained model (in eval mode, no gradients).

    Args:
        model: a trained autoencoder with ``encode``.
        data: rows from :func:`flatten_splits`.
        cfg: protocol settings (recall samples, ``k`` and sampling, noise levels, evaluation batch size).
        seed: seed of the random test subset of Recall@k and of the noise.

    Returns:
        ``recon_mse`` (Table 2); ``recall`` (Table 3: Recall@k on ``cfg.recall_samples`` test samples drawn as
        ``cfg.recall_sampling`` says, the query part of the database, Euclidean distance, latent after the ReLU),
        and the same Recall@k with one thing changed, to show what the protocol's choices weigh:
        ``recall_per_class`` / ``recall_random`` (either sampling), ``recall_no_self`` (query left out of its own
        neighbour lists), ``recall_cosine`` (cosine distance in both spaces), ``recall_pre_relu`` (latent before the
        encoder's ReLU; absent for models without one); ``knn_acc`` (Table 4, 1-NN with the training codes as
        reference); and for Table 5 ``gauss_clean`` / ``sp_clean`` (MSE of the reconstruction of the noisy input
        against the clean image, as the paper's text defines it) and ``gauss_noisy`` / ``sp_noisy`` (against the
        noisy input, as the authors' code computes it).
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    bs = cfg.eval_batch_size
    out: Dict[str, float] = {}
    out["recon_mse"] = reconstruction_mse(batched_apply(model, data.x_test, bs), data.x_test)
    z_test = batched_apply(model.encode, data.x_test, bs)
    z_train = batched_apply(model.encode, data.x_train, bs)
    n_test = data.x_test.shape[0]
    n_recall = min(cfg.recall_samples, n_test)
    k = min(cfg.recall_k, n_recall)
    n_classes = int(torch.unique(data.y_test).numel())
    subsets = {
        "random": torch.randperm(n_test, generator=gen)[:n_recall],
        "per-class": class_balanced_subset(data.y_test, max(1, n_recall // n_classes)),
    }
    for name, idx in subsets.items():
        out["recall_" + name.replace("-", "_")] = recall_at_k(data.x_test[idx], z_test[idx], k=k)
    idx = subsets[cfg.recall_sampling]
    out["recall"] = out["recall_" + cfg.recall_sampling.replace("-", "_")]
    x_q, z_q = data.x_test[idx], z_test[idx]
    out["recall_no_self"] = recall_at_k(x_q, z_q, k=min(k, x_q.shape[0] - 1), exclude_self=True)
    out["recall_cosine"] = recall_at_k(F.normalize(x_q.double(), dim=1), F.normalize(z_q.double(), dim=1), k=k)
    pre = _pre_activation_encoder(model)
    if pre is not None:
        out["recall_pre_relu"] = recall_at_k(x_q, batched_apply(pre, x_q, bs), k=k)
    out["knn_acc"] = nearest_neighbor_accuracy(z_train, data.y_train, z_test, data.y_test)
    for name, noisy in (
        ("gauss", add_gaussian_noise(data.x_test, cfg.gaussian_std, gen)),
        ("sp", add_salt_and_pepper_noise(data.x_test, cfg.salt_pepper_prob, gen)),
    ):
        rec = batched_apply(model, noisy, bs)
        out[f"{name}_clean"] = reconstruction_mse(rec, data.x_test)
        out[f"{name}_noisy"] = reconstruction_mse(rec, noisy)
    return out


def _validation_split(data: _Data, cfg: ProtocolConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """(rows to fit, held-out validation rows) of the training set; the fit rows keep their stored order."""
    n = data.x_train.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed))
    n_val = max(1, int(round(n * cfg.val_fraction)))
    return data.x_train[perm[n_val:].sort().values], data.x_train[perm[:n_val]]


def _train_one(key: str, x: torch.Tensor, latent_dim: int, config: dict, seed: int, cfg: ProtocolConfig):
    torch.manual_seed(seed)  # model initialisation
    model = build_model(key, x.shape[1], latent_dim, config)
    gen = torch.Generator().manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    history = train_autoencoder(
        model, x, config["lr"], config["weight_decay"], cfg.epochs, cfg.batch_size, cfg.shuffle, gen
    )
    return model, time.perf_counter() - t0, history, time.process_time() - c0


def _select_one(key: str, split: Tuple[torch.Tensor, torch.Tensor], latent_dim: int, config: dict,
                cfg: ProtocolConfig) -> dict:
    fit_x, val_x = split
    model, seconds, _, cpu = _train_one(key, fit_x, latent_dim, config, cfg.seeds[0], cfg)
    val = reconstruction_mse(batched_apply(model, val_x, cfg.eval_batch_size), val_x)
    return {"config": dict(config), "val_mse": val, "train_time": seconds, "train_cpu": cpu}


def _final_one(key: str, data: _Data, latent_dim: int, config: dict, seed: int, cfg: ProtocolConfig) -> dict:
    model, seconds, history, cpu = _train_one(key, data.x_train, latent_dim, config, seed, cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = evaluate_autoencoder(model, data, cfg, seed)
    metrics.update(train_time=seconds, eval_time=time.perf_counter() - t0, final_train_loss=history[-1],
                   params=count_parameters(model), train_cpu=cpu, eval_cpu=time.process_time() - c0)
    return metrics


def select_configuration(
    key: str, data: _Data, latent_dim: int, cfg: ProtocolConfig, log: Log = print
) -> Tuple[dict, List[dict], float]:
    """Pick the model's configuration by validation reconstruction MSE (first seed only), in this process.

    With ``cfg.selection == "fixed"`` the paper's models get :data:`AUTHORS_CONFIG` without training.

    Args:
        key: model key of :data:`~benchmarks.kae_protocol.models.MODEL_SPECS`.
        data: rows from :func:`flatten_splits`; the validation part is held out of its training rows.
        latent_dim: code size ``d``.
        cfg: protocol settings.
        log: progress printer.

    Returns:
        the chosen configuration, one record per grid entry (``config``, ``val_mse``, ``train_time``,
        ``train_cpu``: wall and CPU seconds), and the wall time of the selection in seconds.
    """
    if cfg.selection == "fixed" and key != "mlp":
        return dict(AUTHORS_CONFIG), [], 0.0
    t0 = time.perf_counter()
    split = _validation_split(data, cfg)
    records = []
    for config in MODEL_SPECS[key].grid:
        records.append(_select_one(key, split, latent_dim, config, cfg))
        log(f"    select {key:<10} {_fmt_config(config):<28} val MSE {records[-1]['val_mse']:.5f}  "
            f"({records[-1]['train_time']:.1f}s)")
    best = min(records, key=lambda r: r["val_mse"])
    return dict(best["config"]), records, time.perf_counter() - t0


def _fmt_config(config: dict) -> str:
    parts = [f"lr={config['lr']:g}", f"wd={config['weight_decay']:g}"]
    if "hidden" in config:
        parts.append(f"hidden={int(config['hidden'])}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------------ task scheduling
#: relative time of one training step of each model (measured on 2 CPU cores), to start the longest tasks first
_COST = {"wavkan": 8.0, "kan": 7.0, "fourierkan": 5.0, "mlp": 4.0, "kae3": 2.0, "kae3e": 2.0, "kae2": 1.7,
         "kae2e": 1.7, "kae1": 1.3, "kae1e": 1.3}

#: a task: (cell name ``"<dataset>/<d>/<model>"``, ``"select"`` or ``"seed"``, grid index or seed)
Task = Tuple[str, str, int]


def _needs_selection(key: str, cfg: ProtocolConfig) -> bool:
    return not (cfg.selection == "fixed" and key != "mlp")


def _settle_selection(cell: dict, key: str, cfg: ProtocolConfig) -> None:
    """Choose the configuration once every grid entry of the cell has its validation record."""
    if "selected" in cell:
        return
    if not _needs_selection(key, cfg):
        cell.update(selected=dict(AUTHORS_CONFIG), selection=[], selection_time=0.0)
        return
    grid = MODEL_SPECS[key].grid
    runs = cell.setdefault("selection_runs", {})
    if all(str(i) in runs for i in range(len(grid))):
        records = [runs[str(i)] for i in range(len(grid))]
        best = min(records, key=lambda r: r["val_mse"])
        cell.update(selected=dict(best["config"]), selection=records,
                    selection_time=sum(r["train_time"] for r in records))


def pending_tasks(cells: Dict[str, dict], names: Sequence[str], cfg: ProtocolConfig) -> List[Task]:
    """The tasks that can run now: missing grid entries of unfinished selections and missing seeds of selected
    models (a seed waits for its model's selection).

    Args:
        cells: the results' cells (updated: a complete selection is settled here).
        names: the cells of this run.
        cfg: protocol settings.
    """
    tasks: List[Task] = []
    for name in names:
        key = name.split("/")[2]
        cell = cells[name]
        _settle_selection(cell, key, cfg)
        if "selected" not in cell:
            done = cell.get("selection_runs", {})
            tasks += [(name, "select", i) for i in range(len(MODEL_SPECS[key].grid)) if str(i) not in done]
        else:
            tasks += [(name, "seed", s) for s in cfg.seeds if str(s) not in cell["runs"]]
    return tasks


class _Context:
    """What a task needs: the data and protocol settings, and each dataset's validation split, made once."""

    def __init__(self, data: Dict[str, _Data], cfg: ProtocolConfig) -> None:
        self.data, self.cfg, self.splits = data, cfg, {}

    def run(self, task: Task, config: Optional[dict] = None) -> Tuple[Task, dict]:
        """Run ``task``; a seed task needs its model's chosen ``config``."""
        name, kind, index = task
        ds, d, key = name.split("/")
        if kind == "select":
            if ds not in self.splits:
                self.splits[ds] = _validation_split(self.data[ds], self.cfg)
            return task, _select_one(key, self.splits[ds], int(d), MODEL_SPECS[key].grid[index], self.cfg)
        return task, _final_one(key, self.data[ds], int(d), dict(config or {}), index, self.cfg)


_WORKER: Dict[str, object] = {}


def _worker_init(data: Dict[str, _Data], cfg: ProtocolConfig, threads: int, fused: bool) -> None:
    from monai_kan.layers.fused import set_fused_kernels

    torch.set_num_threads(threads)
    set_fused_kernels(fused)
    _WORKER["context"] = _Context(data, cfg)


def _worker_run(task: Tuple[Task, Optional[dict]]) -> Tuple[Task, dict]:
    """Run one task in a worker process: ``(task, chosen configuration for a seed task or None)``."""
    context: _Context = _WORKER["context"]  # type: ignore[assignment]
    return context.run(*task)


def _task_cost(task: Task, data: Dict[str, _Data]) -> float:
    name, kind, _ = task
    ds, _, key = name.split("/")
    n = data[ds].x_train.shape[0]
    return _COST.get(key, 1.0) * n * (1.0 if kind == "select" else 1.3)  # a final run: more rows + evaluation


def _describe(task: Task, record: dict, cfg: ProtocolConfig, key: str) -> str:
    name, kind, index = task
    if kind == "select":
        return (f"[{name}] select {_fmt_config(MODEL_SPECS[key].grid[index]):<28} val MSE {record['val_mse']:.5f} "
                f"({record['train_time']:.1f}s)")
    return (f"[{name}] seed {index}: recon {record['recon_mse']:.4f}  R@{cfg.recall_k} {record['recall']:.3f}  "
            f"1-NN {record['knn_acc']:.3f}  gauss {record['gauss_clean']:.4f}  s&p {record['sp_clean']:.4f}  "
            f"train {record['train_time']:.1f}s  eval {record['eval_time']:.1f}s")


def _store(cells: Dict[str, dict], task: Task, record: dict, cfg: ProtocolConfig) -> None:
    name, kind, index = task
    cell = cells[name]
    if kind == "select":
        cell.setdefault("selection_runs", {})[str(index)] = record
        _settle_selection(cell, name.split("/")[2], cfg)
    else:
        cell["params"] = int(record.pop("params"))
        cell["runs"][str(index)] = record


def run_protocol(
    datasets: Dict[str, ImageSplits],
    models: Sequence[str],
    latent_dims: Sequence[int],
    cfg: ProtocolConfig,
    log: Log = print,
    results: Optional[dict] = None,
    on_update: Optional[Callable[[dict], None]] = None,
    workers: int = 1,
    threads_per_worker: int = 1,
) -> dict:
    """Run selection, training and evaluation for every dataset x latent size x model x seed.

    Args:
        datasets: name -> data.
        models: keys of :data:`~benchmarks.kae_protocol.models.MODEL_SPECS`.
        latent_dims: code sizes ``d``.
        cfg: protocol settings.
        log: progress printer.
        results: earlier (partial) results of the same settings, to resume: finished trainings are skipped.
        on_update: called with the results after every finished training (e.g. to save them).
        workers: trainings run in this many processes at once (longest first); 1 runs them in this process.
        threads_per_worker: torch threads of each worker process.

    Returns:
        ``{"cells": {"<dataset>/<d>/<model>": {"selected", "selection", "selection_runs", "selection_time",
        "params", "runs": {seed: metrics + train_time + eval_time}}}, "dataset_sources": {...}}``; the
        selection time is the sum of the selection's training times.

    Raises:
        ValueError: an unknown model key, or ``workers < 1``.
    """
    unknown = [m for m in models if m not in MODEL_SPECS]
    if unknown:
        raise ValueError(f"`models` must be among {sorted(MODEL_SPECS)}, got {unknown}.")
    if workers < 1:
        raise ValueError(f"`workers` must be >= 1, got {workers!r}.")
    results = results if results is not None else {}
    cells = results.setdefault("cells", {})
    sources = results.setdefault("dataset_sources", {})
    data = {}
    for ds_name, splits in datasets.items():
        data[ds_name] = flatten_splits(splits)
        sources[ds_name] = {
            "source": splits.source, "n_train": int(data[ds_name].x_train.shape[0]),
            "n_test": int(data[ds_name].x_test.shape[0]), "n_features": int(data[ds_name].x_train.shape[1]),
        }
    names = [f"{ds}/{d}/{key}" for ds in datasets for d in latent_dims for key in models]
    for name in names:  # canonical order of the cells, whatever order they finish in
        cells.setdefault(name, {"runs": {}})
    notify = (lambda: on_update(results)) if on_update else (lambda: None)
    in_flight: set = set()

    def ready() -> List[Task]:
        tasks = [t for t in pending_tasks(cells, names, cfg) if t not in in_flight]
        return sorted(tasks, key=lambda t: -_task_cost(t, data))

    def finish(task: Task, record: dict) -> None:
        _store(cells, task, record, cfg)
        log(_describe(task, record, cfg, task[0].split("/")[2]))
        if "selected" in cells[task[0]] and task[1] == "select":
            log(f"[{task[0]}] chosen {_fmt_config(cells[task[0]]['selected'])}")
        notify()

    if not ready():
        return results
    if workers == 1:
        context = _Context(data, cfg)
        while True:
            tasks = ready()
            if not tasks:
                return results
            task = tasks[0]
            finish(*context.run(task, cells[task[0]].get("selected")))

    import concurrent.futures as cf

    import torch.multiprocessing as tmp

    from monai_kan.layers.fused import fused_kernels_enabled

    log(f"running the trainings in {workers} worker processes, {threads_per_worker} thread(s) each")
    init = (data, cfg, threads_per_worker, fused_kernels_enabled())
    with cf.ProcessPoolExecutor(workers, mp_context=tmp.get_context("spawn"), initializer=_worker_init,
                                initargs=init) as pool:
        futures: Dict[cf.Future, Task] = {}
        while True:
            for task in ready()[: max(0, workers - len(futures))]:
                config = cells[task[0]].get("selected") if task[1] == "seed" else None
                futures[pool.submit(_worker_run, (task, config))] = task
                in_flight.add(task)
            if not futures:
                return results
            done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for future in done:
                task = futures.pop(future)
                in_flight.discard(task)
                finish(*future.result())
