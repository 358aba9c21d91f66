"""Checkpoints for MONAI bundles that lose nothing: atomic writes, best-model saving, resumable training state, and a
loader that refuses to run inference without trained weights.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False``) and, with a fixed ``key_metric_filename``, deletes
the previous best model *before* writing the new one: an interruption at the wrong moment leaves no model at all.
The handlers here write every file to a temporary file in the same folder and ``os.replace`` it into place, so a
reader sees the old file or the new one, never half of one.

Typical bundle wiring (see ``bundles/kmunet_3d_segmentation/configs/train.json``)::

    validate#handlers: BestModelSaver(save_dir=@ckpt_dir, network=@network)          -> models/model.pt
    train#handlers:    ValidationHandler(...),                                        (runs first)
                       TrainingStateSaver(save_dir=@ckpt_dir, save_dict={...})       -> models/checkpoint_last.pt
                       TrainingResumer(load_path=..., load_dict={...}, enabled=@resume)
    inference:         load_trained_model(@network, @ckpt_path)                      (clear error if missing)

``models/model.pt`` is a plain ``state_dict`` of the (unwrapped) network, loadable on CPU with
``torch.load(path, map_location="cpu")``; ``checkpoint_last.pt`` maps names (``network``, ``optimizer``,
``lr_scheduler``, ``trainer``, ``best_model``) to their ``state_dict`` s.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from monai.utils import IgniteInfo, is_scalar, min_version, optional_import

from monai_kan.handlers.bundle_utils import as_bool
from monai_kan.utils import check_positive_int

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "BestModelSaver",
    "TrainedModelLoader",
    "TrainingResumer",
    "TrainingStateSaver",
    "atomic_save",
    "check_fresh_run",
    "load_network_state",
    "load_trained_model",
    "unwrap_model",
]

logger = logging.getLogger(__name__)


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def unwrap_model(network: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel``/``DataParallel`` wrappers (else ``network`` itself)."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


_WRAPPER_PREFIX = "module."  # key prefix of a state dict saved from nn.DataParallel / DistributedDataParallel


def _strip_wrapper_prefix(state: Mapping[str, Any], expected: Sequence[str]) -> Mapping[str, Any]:
    """``state`` without the ``module.`` prefixes of (nested) DataParallel/DDP wrappers: as many levels as make the
    most keys match ``expected`` (none if stripping matches no more of them). Stripped with PyTorch's
    ``consume_prefix_in_state_dict_if_present``, on a copy: the caller's mapping is left alone."""
    wanted, n = set(expected), len(_WRAPPER_PREFIX)
    keys, depth, best, best_depth = list(state), 0, len(wanted.intersection(state)), 0
    while keys and all(isinstance(k, str) and k.startswith(_WRAPPER_PREFIX) for k in keys):
        keys, depth = [k[n:] for k in keys], depth + 1
        if len(wanted.intersection(keys)) > best:
            best, best_depth = len(wanted.intersection(keys)), depth
    if best_depth == 0:
        return state
    stripped = OrderedDict(state)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:  # per-module versions used by some modules' loading code
        stripped._metadata = copy.copy(metadata)  # type: ignore[attr-defined]
    for _ in range(best_depth):
        consume_prefix_in_state_dict_if_present(stripped, _WRAPPER_PREFIX)
    return stripped


def _shape(value: Any) -> Optional[Tuple[int, ...]]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _shape_mismatches(own: Mapping[str, Any], state: Mapping[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """``{key: (checkpoint shape, network shape)}`` for the tensors present in both with different shapes."""
    return {
        k: (_shape(state[k]), _shape(v))
        for k, v in own.items()
        if k in state and _shape(v) is not None and _shape(state[k]) is not None and _shape(state[k]) != _shape(v)
    }


def _listed(keys: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(k) for k in list(keys)[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_network_state(
    network: nn.Module, state: Mapping[str, Any], strict: bool = True, source: str = "the checkpoint"
) -> nn.Module:
    """``load_state_dict`` that accepts DataParallel/DDP checkpoints and changes nothing when the state does not fit.

    ``network`` may be wrapped in ``nn.DataParallel``/``DistributedDataParallel`` (the wrapped module is filled, as
    MONAI's ``monai.networks.utils.get_state_dict`` reads it) and ``state`` may come from a wrapped network (keys
    prefixed ``module.``, removed as by PyTorch's ``consume_prefix_in_state_dict_if_present``), in any combination.

    PyTorch's ``load_state_dict`` copies every tensor that fits before it raises for the ones that do not; here keys
    and shapes are checked first, so a failed load leaves the network unchanged. A shape that differs is tried on a
    copy of the network first, since a module's own loading code may adopt it (a KAN layer takes the grid size of a
    checkpoint saved after grid extension).

    Args:
        network: network to fill (wrappers are unwrapped).
        state: its ``state_dict``, possibly with ``module.`` prefixes.
        strict: require exactly the network's keys (as in ``load_state_dict``); shapes must always fit.
        source: what ``state`` is, for the error message (e.g. the checkpoint path).

    Returns:
        ``network``.

    Raises:
        ValueError: missing or unexpected keys (``strict``), or tensors whose shapes differ; the message names the
            keys, with the checkpoint's and the network's shapes. The network is then unchanged.
    """
    module = unwrap_model(network)
    own = module.state_dict()
    state = _strip_wrapper_prefix(state, list(own))
    problems: List[str] = []
    if strict:
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing:
            problems.append(f"missing in the checkpoint: {_listed(missing)}")
        if unexpected:
            problems.append(f"not in the network: {_listed(unexpected)}")
    mismatched = _shape_mismatches(own, state)
    trial_error = None
    if mismatched and not problems:
        try:
            trial = copy.deepcopy(module)
        except Exception:  # cannot try on a copy: every differing shape is an error
            trial = None
        if trial is not None:
            try:
                trial.load_state_dict(state, strict=strict)
                mismatched = {}
            except RuntimeError as e:
                after = trial.state_dict()  # shapes the module's loading code did not adopt
                mismatched = {k: v for k, v in mismatched.items() if _shape(after.get(k)) != v[0]}
                trial_error = None if mismatched else e
            del trial
    if mismatched:
        problems.append("shapes differ (checkpoint vs network): " + "; ".join(
            f"{k!r}: {list(ckpt)} vs {list(net)}" for k, (ckpt, net) in list(mismatched.items())[:10])
            + (f"; and {len(mismatched) - 10} more" if len(mismatched) > 10 else ""))
    elif trial_error is not None:
        problems.append(str(trial_error))
    if problems:
        raise ValueError(f"{source} does not fit the configured network (were the network settings changed since "
                         f"training?), nothing was loaded: " + "; ".join(problems) + ".")
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as e:  # not expected after the checks above
        raise ValueError(f"{source} does not fit the configured network: {e}") from e
    return network


def _state_dict(obj: Any) -> Any:
    if isinstance(obj, nn.Module):
        return unwrap_model(obj).state_dict()
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    raise TypeError(f"cannot checkpoint {type(obj).__name__}: it has no state_dict().")


def atomic_save(obj: Any, path: str) -> str:
    """``torch.save(obj, path)`` through a temporary file in the same folder and ``os.replace``.

    The file at ``path`` is either the previous one or the complete new one, even if the process is killed while
    writing. The folder is created if needed; the file gets mode 0644 (unlike ``tempfile``'s 0600).

    Args:
        obj: object to save (typically a ``state_dict``).
        path: destination file.

    Returns:
        ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


class BestModelSaver:
    """Save the network whenever the key metric of the attached evaluator improves (atomically, rank 0 only).

    Attach it to the validation evaluator (``validate#handlers``). The file is a plain ``state_dict`` of the
    unwrapped network, loadable on CPU. Its ``state_dict()`` (best score and epoch) belongs in the training state so
    that a resumed run does not replace a better model by a worse one.

    Args:
        save_dir: folder of the model file.
        network: the trained network (a DDP wrapper is unwrapped).
        filename: model file name. Defaults to ``"model.pt"``.
        key_metric_name: metric to compare; defaults to the engine's key metric.
        negative_sign: the metric is an error (smaller is better). Defaults to False.
    """

    def __init__(
        self,
        save_dir: str,
        network: nn.Module,
        filename: str = "model.pt",
        key_metric_name: Optional[str] = None,
        negative_sign: bool = False,
    ) -> None:
        self.path = os.path.join(save_dir, filename)
        self.network = network
        self.key_metric_name = key_metric_name
        self.negative_sign = negative_sign
        self.best_score: Optional[float] = None
        self.best_epoch: int = -1

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            raise ValueError(f"BestModelSaver expected key metric {name!r} in the engine metrics, "
                             f"found {sorted(engine.state.metrics)}.")
        value = engine.state.metrics[name]
        if not is_scalar(value):
            raise ValueError(f"BestModelSaver expected a scalar key metric {name!r}, got {value!r}.")
        score = float(value) * (-1.0 if self.negative_sign else 1.0)
        if score != score:  # NaN never counts as an improvement
            engine.logger.warning(f"key metric {name} is NaN at epoch {engine.state.epoch}; the best model is kept.")
            return
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_epoch = score, int(engine.state.epoch)
            if _rank() == 0:
                atomic_save(_state_dict(self.network), self.path)
                engine.logger.info(f"saved new best model ({name}={float(value):.4f}, epoch {self.best_epoch}) "
                                   f"to {self.path}")

    def state_dict(self) -> Dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_score = state.get("best_score")
        self.best_epoch = int(state.get("best_epoch", -1))


class TrainingStateSaver:
    """Save everything needed to resume training, atomically, every ``interval`` epochs and at the end.

    Attach it to the trainer *after* the ``ValidationHandler`` (handlers run in the order they are attached), so
    that the saved state includes the validation of the epoch. The engine it is attached to (the trainer: epoch and
    iteration counters) is saved under ``engine_key``, so configs need not reference the trainer from its own
    handler list (a circular reference for the config parser).

    Args:
        save_dir: folder of the checkpoint file.
        save_dict: objects with ``state_dict()``; e.g. ``{"network": net, "optimizer": opt, "lr_scheduler": sched,
            "best_model": best_model_saver}``. Modules are unwrapped from DDP.
        filename: checkpoint file name. Defaults to ``"checkpoint_last.pt"``.
        interval: save every ``interval`` epochs. Defaults to 1.
        engine_key: name of the attached engine's state in the file; ``None`` leaves it out. Defaults to
            ``"trainer"``.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: Mapping[str, Any],
        filename: str = "checkpoint_last.pt",
        interval: int = 1,
        engine_key: Optional[str] = "trainer",
    ) -> None:
        if not save_dict:
            raise ValueError("TrainingStateSaver expected a non-empty `save_dict`.")
        check_positive_int(interval=interval)
        if engine_key is not None and engine_key in save_dict:
            raise ValueError(f"`save_dict` must not use the name {engine_key!r}: it holds the attached engine.")
        self.path = os.path.join(save_dir, filename)
        self.save_dict = dict(save_dict)
        self.interval = interval
        self.engine_key = engine_key

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        if _rank() != 0:
            return
        state = {k: _state_dict(v) for k, v in self.save_dict.items()}
        if self.engine_key is not None:
            state[self.engine_key] = engine.state_dict()
        atomic_save(state, self.path)
        engine.logger.info(f"saved training state (epoch {engine.state.epoch}) to {self.path}")


class TrainingResumer:
    """Resume training from a :class:`TrainingStateSaver` checkpoint when the trainer starts.

    Completed epochs are kept: the trainer continues at the epoch after the saved one, up to its (possibly larger)
    ``max_epochs``. With ``enabled=False`` it does nothing, so bundles wire it unconditionally and expose
    ``--resume true``.

    Args:
        load_path: checkpoint file written by :class:`TrainingStateSaver`.
        load_dict: objects to restore, by the names used when saving.
        enabled: whether to resume. Defaults to True.
        map_location: ``torch.load`` map location. Defaults to ``"cpu"`` (the optimizer moves its state to the
            parameters' device).
        strict: strict ``load_state_dict`` for modules (loaded by :func:`load_network_state`: ``module.`` prefixes
            of DataParallel/DDP checkpoints are accepted). Defaults to True.
        engine_key: name of the attached engine's state in the file (see :class:`TrainingStateSaver`); ``None``
            leaves the engine's counters alone. Defaults to ``"trainer"``.

    Raises:
        FileNotFoundError: resuming was asked for but there is no checkpoint.
        KeyError: the checkpoint lacks one of the requested objects.
        ValueError: a network's state does not fit (see :func:`load_network_state`); nothing has been loaded then.
    """

    def __init__(
        self,
        load_path: str,
        load_dict: Mapping[str, Any],
        enabled: bool = True,
        map_location: Any = "cpu",
        strict: bool = True,
        engine_key: Optional[str] = "trainer",
    ) -> None:
        self.load_path = load_path
        self.load_dict = dict(load_dict)
        self.enabled = as_bool(enabled, "resume")
        self.map_location = map_location
        self.strict = strict
        self.engine_key = engine_key

    def attach(self, engine: Any) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Any) -> None:
        if not os.path.isfile(self.load_path):
            raise FileNotFoundError(
                f"resume was requested but there is no training state at {self.load_path}; train without "
                f"`--resume true` first (the checkpoint is written after every epoch)."
            )
        checkpoint = torch.load(self.load_path, map_location=self.map_location, weights_only=True)
        wanted = list(self.load_dict) + ([self.engine_key] if self.engine_key is not None else [])
        missing = [k for k in wanted if k not in checkpoint]
        if missing:
            raise KeyError(f"{self.load_path} has no {missing} (it holds {sorted(checkpoint)}).")
        max_epochs = engine.state.max_epochs
        # networks first: they are checked before anything is changed, so a checkpoint that does not fit stops the
        # run with the optimizer, scheduler and trainer counters untouched
        modules = {k: v for k, v in self.load_dict.items() if isinstance(v, nn.Module)}
        for name, obj in modules.items():
            load_network_state(obj, checkpoint[name], self.strict, f"the checkpoint {self.load_path} ({name!r})")
        for name, obj in self.load_dict.items():
            if name not in modules:
                obj.load_state_dict(checkpoint[name])
        if self.engine_key is not None:
            engine.load_state_dict(checkpoint[self.engine_key])
        if engine.state.max_epochs != max_epochs:  # the trainer's state came from the file: keep the new budget
            engine.state.max_epochs = max_epochs
        if engine.state.epoch >= max_epochs:
            engine.logger.warning(f"the checkpoint {self.load_path} already completed {engine.state.epoch} epochs "
                                  f">= max_epochs={max_epochs}: nothing left to train (raise `epochs` to continue).")
        else:
            engine.logger.info(f"resumed from {self.load_path}: epoch {engine.state.epoch} of {max_epochs} done.")


def load_trained_model(
    network: nn.Module, ckpt_path: str, map_location: Any = None, strict: bool = True
) -> nn.Module:
    """Load trained weights into ``network``, refusing to go on without them.

    Accepts a plain ``state_dict`` (``models/model.pt``) or a dict holding one under ``"model"`` or ``"network"``
    (e.g. ``checkpoint_last.pt``), saved from a plain or a DataParallel/DDP-wrapped network (``module.`` key
    prefixes), into a plain or a wrapped network (see :func:`load_network_state`). A checkpoint that does not fit
    leaves ``network`` unchanged.

    Args:
        network: network to fill (a DataParallel/DDP wrapper is unwrapped).
        ckpt_path: checkpoint file.
        map_location: ``torch.load`` map location. Defaults to the device of the network's parameters.
        strict: require exactly the network's keys. Defaults to True.

    Returns:
        ``network``.

    Raises:
        FileNotFoundError: no checkpoint (instead of silently predicting with random weights).
        ValueError: the checkpoint does not fit the network (e.g. other channels or classes); the message names the
            keys and both shapes.
    """
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(
            f"no trained model at {ckpt_path}: inference with untrained (random) weights is refused. Train the bundle "
            f"first (python -m monai.bundle run --config_file <bundle>/configs/train.json) or point `ckpt_path` at "
            f"a trained model.pt."
        )
    module = unwrap_model(network)
    if map_location is None:
        param = next(module.parameters(), None)
        map_location = param.device if param is not None else "cpu"
    state = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    if isinstance(state, Mapping):
        for key in ("model", "network"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"{ckpt_path} does not hold a state_dict (got {type(state).__name__}).")
    load_network_state(network, state, strict=strict, source=f"the checkpoint {ckpt_path}")
    logger.info(f"loaded trained weights from {ckpt_path}")
    return network


class TrainedModelLoader:
    """Handler form of :func:`load_trained_model`, run when the attached engine starts.

    Args:
        load_path: checkpoint file.
        network: network to fill (plain or DataParallel/DDP-wrapped; ``module.`` prefixes in the file are accepted).
        map_location: see :func:`load_trained_model`.
        strict: see :func:`load_trained_model`.
    """

    def __init__(self, load_path: str, network: nn.Module, map_location: Any = None, strict: bool = True) -> None:
        self.load_path = load_path
        self.network = network
        self.map_location = map_location
        self.strict = strict

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Any) -> None:
        load_trained_model(self.network, self.load_path, self.map_location, self.strict)


def check_fresh_run(
    ckpt_dir: str,
    resume: bool = False,
    overwrite: bool = False,
    filenames: Sequence[str] = ("model.pt", "checkpoint_last.pt"),
) -> None:
    """Refuse to start a new training run over the checkpoints of an earlier one, unless told what to do.

    Args:
        ckpt_dir: checkpoint folder.
        resume: the run resumes the earlier one (then the files are expected).
        overwrite: the run starts over and may replace the files.
        filenames: files that mark an earlier run.

    Raises:
        FileExistsError: earlier checkpoints and neither ``resume`` nor ``overwrite``.
        ValueError: both ``resume`` and ``overwrite``.
    """
    resume, overwrite = as_bool(resume, "resume"), as_bool(overwrite, "overwrite")
    if resume and overwrite:
        raise ValueError("`resume` and `overwrite` exclude each other: resume continues the earlier run, overwrite "
                         "starts a new one over it.")
    if resume or overwrite:
        return
    found = [os.path.join(ckpt_dir, f) for f in filenames if os.path.exists(os.path.join(ckpt_dir, f))]
    if found:
        raise FileExistsError(
            f"{ckpt_dir} already holds checkpoints of an earlier run ({', '.join(found)}): pass `--resume true` to "
            f"continue it, `--overwrite true` to start over (replacing them), or another `--ckpt_dir`."
        )
