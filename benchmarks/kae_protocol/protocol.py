"""Training and evaluation protocol of the KAE paper (Yu et al., arXiv:2501.00420, section 4), on tensors held in
memory.

Per dataset, latent size and model: the configuration (learning rate x weight decay, see
:mod:`benchmarks.kae_protocol.models`) is selected by reconstruction loss on a validation part held out of the
training set, trained with the first seed; then, for every seed, the model is trained on the whole training set
with that configuration and evaluated on the test set. Test metrics never take part in the selection.
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
    nearest_neighbor_accuracy,
    recall_at_k,
    reconstruction_mse,
)
from .models import MODEL_SPECS, build_model, count_parameters

__all__ = [
    "ProtocolConfig",
    "flatten_splits",
    "train_autoencoder",
    "evaluate_autoencoder",
    "select_configuration",
    "run_protocol",
    "AUTHORS_CONFIG",
]

#: the configuration committed in the KAE authors' model configs (used with ``selection="fixed"``)
AUTHORS_CONFIG = {"lr": 1e-4, "weight_decay": 1e-4}

Log = Callable[[str], None]


@dataclass
class ProtocolConfig:
    """Settings of the protocol; the defaults are the paper's (ambiguities resolved as the authors' code does).

    Args:
        epochs: training epochs. Paper: 10.
        batch_size: Adam mini-batch size. Paper: 256.
        seeds: seeds of the repeated runs (model initialisation, data order, test subsets, noise). Paper: 2024-2033.
        selection: ``"validation"`` (choose the grid entry with the lowest validation reconstruction MSE, trained
            with the first seed) or ``"fixed"`` (the authors' committed lr 1e-4, weight decay 1e-4; the MLP keeps
            its validation selection).
        val_fraction: share of the training set held out for selection. Defaults to 0.1.
        split_seed: seed of the train/validation split. Defaults to 0.
        shuffle: reshuffle the training set every epoch. Defaults to False: the authors' loaders do not shuffle.
        recall_samples: test samples in the similarity search. Paper: 1,000.
        recall_k: ``k`` of Recall@k. Paper: 10.
        gaussian_std: standard deviation of the Gaussian noise (not stated in the paper; 0.1 reproduces the paper's
            gap between Tables 2 and 5).
        salt_pepper_prob: probability of pepper (0) and, separately, of salt (1) per pixel (a total amount of twice
            that in `monai_kan.data.transforms.salt_and_pepper_noise`). Paper: 0.05, i.e. amount 0.10.
        eval_batch_size: rows per forward pass in evaluation.

    Raises:
        ValueError: an unknown ``selection``, ``val_fraction`` outside ``(0, 1)``, ``epochs < 1``,
            ``batch_size < 2`` or no seeds.
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
    gaussian_std: float = 0.1
    salt_pepper_prob: float = 0.05
    eval_batch_size: int = 2048

    def __post_init__(self) -> None:
        if self.selection not in ("validation", "fixed"):
            raise ValueError(f"`selection` must be 'validation' or 'fixed', got {self.selection!r}.")
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


def train_autoencoder(
    model: nn.Module, x: torch.Tensor, lr: float, weight_decay: float, epochs: int, batch_size: int,
    shuffle: bool = False, generator: Optional[torch.Generator] = None,
) -> List[float]:
    """Adam on the reconstruction MSE, mini-batches sliced from one in-memory tensor.

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
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    n = x.shape[0]
    history = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator) if shuffle else None
        total, steps = 0.0, 0
        for start in range(0, n, batch_size):
            if n - start < 2:
                break  # a one-row batch breaks batch norm (WavKAN); the authors' sizes never produce one
            xb = x[start : start + batch_size] if order is None else x[order[start : start + batch_size]]
            loss = F.mse_loss(model(xb), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        history.append(total / max(steps, 1))
    model.eval()
    return history


def evaluate_autoencoder(model: nn.Module, data: _Data, cfg: ProtocolConfig, seed: int) -> Dict[str, float]:
    """All test metrics of the paper for a trained model (in eval mode, no gradients).

    Args:
        model: a trained autoencoder with ``encode``.
        data: rows from :func:`flatten_splits`.
        cfg: protocol settings (recall samples and ``k``, noise levels, evaluation batch size).
        seed: seed of the random test subset of Recall@k and of the noise.

    Returns:
        ``recon_mse`` (Table 2), ``recall`` (Table 3, Recall@k on ``cfg.recall_samples`` random test samples),
        ``knn_acc`` (Table 4, 1-NN with the training codes as reference), and for Table 5 ``gauss_clean`` /
        ``sp_clean`` (MSE of the reconstruction of the noisy input against the clean image, as the paper's text
        defines it) and ``gauss_noisy`` / ``sp_noisy`` (against the noisy input, as the authors' code computes it).
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    bs = cfg.eval_batch_size
    out: Dict[str, float] = {}
    out["recon_mse"] = reconstruction_mse(batched_apply(model, data.x_test, bs), data.x_test)
    z_test = batched_apply(model.encode, data.x_test, bs)
    z_train = batched_apply(model.encode, data.x_train, bs)
    n_recall = min(cfg.recall_samples, data.x_test.shape[0])
    idx = torch.randperm(data.x_test.shape[0], generator=gen)[:n_recall]
    out["recall"] = recall_at_k(data.x_test[idx], z_test[idx], k=min(cfg.recall_k, n_recall))
    out["knn_acc"] = nearest_neighbor_accuracy(z_train, data.y_train, z_test, data.y_test)
    for name, noisy in (
        ("gauss", add_gaussian_noise(data.x_test, cfg.gaussian_std, gen)),
        ("sp", add_salt_and_pepper_noise(data.x_test, cfg.salt_pepper_prob, gen)),
    ):
        rec = batched_apply(model, noisy, bs)
        out[f"{name}_clean"] = reconstruction_mse(rec, data.x_test)
        out[f"{name}_noisy"] = reconstruction_mse(rec, noisy)
    return out


def _train_one(key: str, x: torch.Tensor, latent_dim: int, config: dict, seed: int, cfg: ProtocolConfig):
    torch.manual_seed(seed)  # model initialisation
    model = build_model(key, x.shape[1], latent_dim, config)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    history = train_autoencoder(
        model, x, config["lr"], config["weight_decay"], cfg.epochs, cfg.batch_size, cfg.shuffle, gen
    )
    return model, time.perf_counter() - t0, history


def select_configuration(
    key: str, data: _Data, latent_dim: int, cfg: ProtocolConfig, log: Log = print
) -> Tuple[dict, List[dict], float]:
    """Pick the model's configuration by validation reconstruction MSE (first seed only).

    With ``cfg.selection == "fixed"`` the paper's models get :data:`AUTHORS_CONFIG` without training.

    Args:
        key: model key of :data:`~benchmarks.kae_protocol.models.MODEL_SPECS`.
        data: rows from :func:`flatten_splits`; the validation part is held out of its training rows.
        latent_dim: code size ``d``.
        cfg: protocol settings.
        log: progress printer.

    Returns:
        the chosen configuration, one record per grid entry (``config``, ``val_mse``, ``train_time``), and the
        wall time of the selection in seconds.
    """
    spec = MODEL_SPECS[key]
    if cfg.selection == "fixed" and key != "mlp":
        return dict(AUTHORS_CONFIG), [], 0.0
    t0 = time.perf_counter()
    n = data.x_train.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed))
    n_val = max(1, int(round(n * cfg.val_fraction)))
    val_x = data.x_train[perm[:n_val]]
    fit_x = data.x_train[perm[n_val:].sort().values]  # keep the stored order: no shuffling unless asked
    records = []
    for config in spec.grid:
        model, seconds, _ = _train_one(key, fit_x, latent_dim, config, cfg.seeds[0], cfg)
        val = reconstruction_mse(batched_apply(model, val_x, cfg.eval_batch_size), val_x)
        records.append({"config": dict(config), "val_mse": val, "train_time": seconds})
        log(f"    select {key:<10} {_fmt_config(config):<28} val MSE {val:.5f}  ({seconds:.1f}s)")
    best = min(records, key=lambda r: r["val_mse"])
    return dict(best["config"]), records, time.perf_counter() - t0


def _fmt_config(config: dict) -> str:
    parts = [f"lr={config['lr']:g}", f"wd={config['weight_decay']:g}"]
    if "hidden" in config:
        parts.append(f"hidden={int(config['hidden'])}")
    return " ".join(parts)


def _run_cell(
    name: str, data: _Data, cfg: ProtocolConfig, cell: dict, log: Log, on_progress: Callable[[], None]
) -> dict:
    """Selection (unless done) and every missing seed of one ``dataset/d/model`` cell; ``cell`` is updated in place."""
    _, d, key = name.split("/")
    d = int(d)
    cell_log = lambda msg: log(f"[{name}] {msg.strip()}")  # noqa: E731  (lines of parallel workers interleave)
    cell_log(MODEL_SPECS[key].label)
    if "selected" not in cell:
        chosen, records, seconds = select_configuration(key, data, d, cfg, cell_log)
        cell.update(selected=chosen, selection=records, selection_time=seconds)
        on_progress()
    cell_log(f"chosen {_fmt_config(cell['selected'])}")
    for seed in cfg.seeds:
        if str(seed) in cell["runs"]:
            continue
        model, seconds, history = _train_one(key, data.x_train, d, cell["selected"], seed, cfg)
        t0 = time.perf_counter()
        metrics = evaluate_autoencoder(model, data, cfg, seed)
        metrics.update(train_time=seconds, eval_time=time.perf_counter() - t0, final_train_loss=history[-1])
        cell["params"] = count_parameters(model)
        cell["runs"][str(seed)] = metrics
        cell_log(
            f"seed {seed}: recon {metrics['recon_mse']:.4f}  R@{cfg.recall_k} {metrics['recall']:.3f}  "
            f"1-NN {metrics['knn_acc']:.3f}  gauss {metrics['gauss_clean']:.4f}  "
            f"s&p {metrics['sp_clean']:.4f}  train {seconds:.1f}s  eval {metrics['eval_time']:.1f}s"
        )
        on_progress()
    return cell


# relative cost of a model's training, to hand the longest cells out first when running in parallel
_COST = {"wavkan": 12.0, "kan": 6.0, "fourierkan": 5.0, "mlp": 2.0, "kae3": 1.5, "kae2": 1.2}
_WORKER: dict = {}


def _worker_init(data: Dict[str, _Data], cfg: ProtocolConfig, threads: int, fused: bool, t_start: float) -> None:
    from monai_kan.layers.fused import set_fused_kernels

    torch.set_num_threads(threads)
    set_fused_kernels(fused)
    _WORKER.update(data=data, cfg=cfg, t_start=t_start)


def _worker_run(task: Tuple[str, dict]) -> Tuple[str, dict]:
    name, cell = task
    log = lambda msg: print(f"[{time.time() - _WORKER['t_start']:7.0f}s] {msg}", flush=True)  # noqa: E731
    return name, _run_cell(name, _WORKER["data"][name.split("/")[0]], _WORKER["cfg"], cell, log, lambda: None)


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
    clock_origin: Optional[float] = None,
) -> dict:
    """Run selection, training and evaluation for every dataset x latent size x model x seed.

    Args:
        datasets: name -> data.
        models: keys of :data:`~benchmarks.kae_protocol.models.MODEL_SPECS`.
        latent_dims: code sizes ``d``.
        cfg: protocol settings.
        log: progress printer.
        results: earlier (partial) results of the same settings, to resume: finished parts are skipped.
        on_update: called with the results after every finished run (serial) or cell (parallel), e.g. to save them.
        workers: cells run in this many processes at once (each ``dataset/d/model`` cell is independent);
            1 runs them in this process.
        threads_per_worker: torch threads of each worker process.
        clock_origin: ``time.time()`` from which worker processes count the elapsed seconds they print.

    Returns:
        ``{"cells": {"<dataset>/<d>/<model>": {"selected", "selection", "selection_time", "params", "runs":
        {seed: metrics + train_time + eval_time}}}, "dataset_sources": {...}}``.

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
    pending = [n for n in names if "selected" not in cells[n] or len(cells[n]["runs"]) < len(cfg.seeds)]
    notify = (lambda: on_update(results)) if on_update else (lambda: None)
    if workers == 1 or len(pending) < 2:
        for name in pending:
            _run_cell(name, data[name.split("/")[0]], cfg, cells[name], log, notify)
        return results

    import multiprocessing as mp

    from monai_kan.layers.fused import fused_kernels_enabled

    def cost(name: str) -> float:
        ds, _, key = name.split("/")
        return _COST.get(key, 1.0) * data[ds].x_train.shape[0] * (len(cfg.seeds) - len(cells[name]["runs"]) + 4)

    pending.sort(key=cost, reverse=True)
    log(f"running {len(pending)} cells in {workers} worker processes, {threads_per_worker} thread(s) each")
    origin = time.time() if clock_origin is None else clock_origin
    init = (data, cfg, threads_per_worker, fused_kernels_enabled(), origin)
    with mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=init) as pool:
        for name, cell in pool.imap_unordered(_worker_run, [(n, cells[n]) for n in pending]):
            cells[name] = cell
            notify()
    return results
