"""MONAI's checkpoint handlers, extended so that a run never loses its model.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False`` in its ``_DiskSaver``, because ignite's atomic mode
leaves the file at mode 0600), and ignite's ``Checkpoint`` removes the previous file *before* it writes the new
one: with a fixed filename an interruption at that moment leaves no model at all. Here:

* :class:`AtomicDiskSaver` (an ignite ``DiskSaver``) writes through a temporary file, ``fsync`` and ``os.replace``
  at mode 0644, supports a fixed filename, and carries out removals only after the next save succeeded;
* :class:`AtomicCheckpointSaver` (a ``monai.handlers.CheckpointSaver``) uses it for every file it writes, adds a
  fixed-name rolling checkpoint (``interval_filename``), the attached engine in the training state
  (``engine_key``), a ``state_dict()`` holding the best key-metric score, and never counts a NaN metric as better;
* :class:`CheckedCheckpointLoader` (a ``monai.handlers.CheckpointLoader``) resumes with ``enabled``, clear errors,
  all-or-nothing network loading, DDP prefixes and a larger ``max_epochs`` than the checkpoint's, whose cosine
  learning-rate schedule it then extends (``lr_schedule="restart"``).

Bundle wiring (``bundles/kmunet_3d_segmentation/configs/train.json``)::

    training_state:            {network, optimizer, lr_scheduler, best_model: @validate#checkpoint_saver}
    validate#checkpoint_saver: AtomicCheckpointSaver(save_dict={"network": @network}, save_key_metric=True,
                                   key_metric_filename="model.pt")                         -> models/model.pt
    train#handlers:            ValidationHandler(...), FinalValidation(...)                (run first)
                               AtomicCheckpointSaver(save_dict=@training_state, engine_key="trainer",
                                   save_interval=1, interval_filename="checkpoint_last.pt",
                                   save_final=True, final_filename="checkpoint_last.pt")   -> models/checkpoint_last.pt
                               CheckedCheckpointLoader(load_path=<ckpt_dir>/checkpoint_last.pt,
                                   load_dict=@training_state, engine_key="trainer", enabled=@resume)
    inference initialize:      monai_kan.handlers.load_trained_model(@network, @ckpt_path)

``models/model.pt`` is a plain ``state_dict`` of the unwrapped network (ignite saves a single object's state dict
directly and unwraps DP/DDP); ``checkpoint_last.pt`` maps ``network``, ``optimizer``, ``lr_scheduler``,
``best_model`` and ``trainer`` to their state dicts.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch.nn as nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import

from monai_kan.handlers.bundle_utils import as_bool
from monai_kan.handlers.state_dict import atomic_save, load_checkpoint, load_network_state

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver",
                               as_type="base")
idist, _ = optional_import("ignite.distributed", IgniteInfo.OPT_IMPORT_VERSION, min_version)

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver", "CheckedCheckpointLoader"]

logger = logging.getLogger(__name__)


class AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` that replaces files atomically and removes old ones only after a successful save.

    * Every file is written to a temporary file in the same folder, ``fsync``-ed, given mode 0644 and moved into
      place with ``os.replace`` (:func:`monai_kan.handlers.state_dict.atomic_save`): a reader sees the old file or
      the new one, never a part of one.
    * ``remove(filename)`` (ignite's ``Checkpoint`` calls it *before* saving the replacement) is deferred until the
      next save has succeeded, and never removes the file that save just wrote. So the previous checkpoint stays
      on disk if the new one cannot be written.
    * ``filename`` fixes the file name whatever name ``Checkpoint`` asks for (as MONAI's ``_DiskSaver``).
    * Only the process of rank ``save_on_rank`` (``ignite.distributed.get_rank()``) writes or removes anything.

    Args:
        dirname: folder of the files.
        filename: fixed file name; ``None`` uses the names ``Checkpoint`` gives.
        create_dir: create ``dirname`` if missing. Defaults to True.
        require_empty: refuse a folder that already holds ``.pt`` files. Defaults to False.
        save_on_rank: the rank that writes. Defaults to 0.
        kwargs: passed to ``torch.save``.

    Raises:
        ValueError: ``dirname`` does not exist and ``create_dir`` is False, or holds ``.pt`` files and
            ``require_empty`` is True (from ignite's ``DiskSaver``).
    """

    def __init__(
        self,
        dirname: str | Path,
        filename: Optional[str] = None,
        create_dir: bool = True,
        require_empty: bool = False,
        save_on_rank: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(dirname, atomic=True, create_dir=create_dir, require_empty=require_empty,
                         save_on_rank=save_on_rank, **kwargs)
        self.filename = filename
        self._pending_removals: List[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Optional[Mapping] = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        atomic_save(checkpoint, str(path), func, **self.kwargs)
        written, pending, self._pending_removals = Path(path).name, self._pending_removals, []
        for name in pending:
            if name == written:
                continue
            try:
                (self.dirname / name).unlink(missing_ok=True)
            except OSError as e:  # the new file is saved: an old one that stays is not worth stopping the run
                logger.warning(f"could not remove the replaced checkpoint {self.dirname / name}: {e}")

    def remove(self, filename: str) -> None:
        """Remove ``filename`` after the next successful save (unless that save writes it).

        Args:
            filename: a file name in ``dirname`` (replaced by the fixed ``filename`` if one is set).
        """
        name = self.filename or filename
        if idist.get_rank() == self.save_on_rank and name not in self._pending_removals:
            self._pending_removals.append(name)


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` whose files are written by :class:`AtomicDiskSaver`, with a fixed-name
    rolling checkpoint, the attached engine in the training state, and a resumable best score.

    The arguments of MONAI's ``CheckpointSaver`` keep their meaning; the differences:

    * Every file (final, key metric, interval) is replaced atomically at mode 0644, and a file is removed only after
      its successor is on disk; only rank 0 writes (the handler itself may run on every rank).
    * ``interval_filename`` gives the interval checkpoint a fixed name (``"checkpoint_last.pt"``: always the
      latest state); with it ``n_saved`` is 1.
    * ``engine_key`` adds the attached engine (the trainer: epoch and iteration counters) to the interval and final
      checkpoints under that name, so a config need not reference the trainer from its own handler list (a
      circular reference for the config parser). The key-metric checkpoint keeps ``save_dict`` only: with a single
      object (``{"network": net}``) its file is that object's plain ``state_dict`` (DP/DDP unwrapped by ignite).
    * ``state_dict()`` returns the key-metric ranking (scores and file names), and ``load_state_dict`` restores it
      (MONAI has only the latter): put the saver in the training state so that a resumed run does not replace a
      better model by a worse one.
    * A NaN key metric is never an improvement (ignite would save it as the first model and then compare every
      later score against NaN, which is never greater): it is logged and skipped.
    * With ``save_final`` the final checkpoint is written when the engine completes, not when it raises: the
      state of a failed iteration (possibly non-finite weights) does not replace the last good one.

    Args:
        save_dir: folder of the checkpoint files.
        save_dict: objects with ``state_dict()`` to save, e.g. ``{"network": net, "optimizer": opt}``.
        name: logger name; ``None`` uses the engine's logger.
        file_prefix: prefix of the generated file names.
        save_final: save when the engine completes.
        final_filename: fixed name of the final checkpoint (default ``checkpoint_final_iteration=N.pt``).
        save_key_metric: save when the key metric is better than all earlier values.
        key_metric_name: metric to compare; defaults to the engine's key metric.
        key_metric_n_saved: how many best checkpoints to keep.
        key_metric_filename: fixed name of the best checkpoint (then ``key_metric_n_saved`` must be 1).
        key_metric_save_state: add the key-metric ranking to the key-metric file (ignite's ``include_self``).
        key_metric_greater_or_equal: an equal score replaces the saved model.
        key_metric_negative_sign: smaller is better (errors).
        epoch_level: ``save_interval`` counts epochs (else iterations).
        save_interval: save every N epochs/iterations; 0 disables interval saving.
        n_saved: how many interval checkpoints to keep (``None``: all; 1 with ``interval_filename``).
        interval_filename: fixed name of the interval checkpoint.
        engine_key: name of the attached engine's ``state_dict`` in the interval and final checkpoints; ``None``
            leaves it out.

    Raises:
        ValueError: ``engine_key`` is also a key of ``save_dict``, ``interval_filename`` with ``n_saved`` other than
            1 (or ``None``), or MONAI's own argument errors.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: Dict[str, Any],
        name: Optional[str] = None,
        file_prefix: str = "",
        save_final: bool = False,
        final_filename: Optional[str] = None,
        save_key_metric: bool = False,
        key_metric_name: Optional[str] = None,
        key_metric_n_saved: int = 1,
        key_metric_filename: Optional[str] = None,
        key_metric_save_state: bool = False,
        key_metric_greater_or_equal: bool = False,
        key_metric_negative_sign: bool = False,
        epoch_level: bool = True,
        save_interval: int = 0,
        n_saved: Optional[int] = None,
        interval_filename: Optional[str] = None,
        engine_key: Optional[str] = None,
    ) -> None:
        if engine_key is not None and engine_key in (save_dict or {}):
            raise ValueError(f"`save_dict` must not use the name {engine_key!r}: `engine_key` gives it to the "
                             f"attached engine.")
        if interval_filename is not None:
            if n_saved not in (None, 1):
                raise ValueError(f"with a fixed `interval_filename` only one interval checkpoint is kept: `n_saved` "
                                 f"must be 1 or None, got {n_saved!r}.")
            n_saved = 1
        super().__init__(
            save_dir, save_dict, name=name, file_prefix=file_prefix, save_final=save_final,
            final_filename=final_filename, save_key_metric=save_key_metric, key_metric_name=key_metric_name,
            key_metric_n_saved=key_metric_n_saved, key_metric_filename=key_metric_filename,
            key_metric_save_state=key_metric_save_state, key_metric_greater_or_equal=key_metric_greater_or_equal,
            key_metric_negative_sign=key_metric_negative_sign, epoch_level=epoch_level, save_interval=save_interval,
            n_saved=n_saved,
        )
        self.engine_key = engine_key
        self._key_metric_filename = key_metric_filename
        for checkpoint, filename in ((self._final_checkpoint, final_filename),
                                     (self._key_metric_checkpoint, key_metric_filename),
                                     (self._interval_checkpoint, interval_filename)):
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(save_dir, filename=filename)

    def attach(self, engine: Any) -> None:
        """Attach to ``engine`` as MONAI's saver does, with the engine added under ``engine_key`` and no saving on
        ``EXCEPTION_RAISED``.

        Args:
            engine: ignite engine (a trainer, validator or evaluator).
        """
        if self.engine_key is not None:
            for checkpoint in (self._interval_checkpoint, self._final_checkpoint):
                if checkpoint is not None:
                    checkpoint.to_save = {**self.save_dict, self.engine_key: engine}
        if self._name is None:
            self.logger = engine.logger
        # MONAI's attach, without `exception_raised`: removing that handler afterwards would not do, since an
        # engine with an (even empty) EXCEPTION_RAISED handler list no longer raises
        if self._final_checkpoint is not None:
            engine.add_event_handler(Events.COMPLETED, self.completed)
        if self._key_metric_checkpoint is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.metrics_completed)
        if self._interval_checkpoint is not None:
            event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
            engine.add_event_handler(event(every=self.save_interval), self.interval_completed)

    def metrics_completed(self, engine: Any) -> None:
        """Save the key-metric checkpoint if the key metric improved; a NaN metric is skipped with a warning.

        Args:
            engine: ignite engine whose ``state.metrics`` hold the key metric.
        """
        checkpoint = self._key_metric_checkpoint
        if checkpoint is None:
            raise AssertionError("Error: _key_metric_checkpoint function not specified.")
        score = checkpoint.score_function(engine)
        try:
            is_nan = math.isnan(float(score))
        except (TypeError, ValueError):
            is_nan = False
        if is_nan:
            self.logger.warning(f"the key metric is NaN at epoch {engine.state.epoch}: not an improvement, the best "
                                f"model is kept.")
            return
        before = list(checkpoint._saved)
        super().metrics_completed(engine)
        if checkpoint._saved != before:
            filename = self._key_metric_filename or checkpoint._saved[-1].filename
            self.logger.info(f"new best key metric ({abs(float(score)):.4f}) at epoch {engine.state.epoch}: saved "
                             f"{os.path.join(self.save_dir, filename)}")

    def state_dict(self) -> Dict[str, Any]:
        """The key-metric ranking: ``{"_saved": [(score, filename), ...]}`` (empty without ``save_key_metric``)."""
        if self._key_metric_checkpoint is None:
            return {}
        return {"_saved": [(float(p), str(f)) for p, f in self._key_metric_checkpoint._saved]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the key-metric ranking of :meth:`state_dict` (an empty state restores nothing).

        Args:
            state_dict: a :meth:`state_dict` of an earlier run.
        """
        if state_dict:
            super().load_state_dict(dict(state_dict))


class CheckedCheckpointLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` for resuming: switchable, all-or-nothing, with errors that say what to do.

    The arguments of MONAI's ``CheckpointLoader`` keep their meaning; the differences:

    * ``enabled=False`` attaches nothing, so bundles wire the loader unconditionally and expose ``--resume true``.
    * A missing file, or a file without one of the requested entries, stops the run with an error naming the path
      and the entries (``FileNotFoundError``, ``KeyError``).
    * Networks are loaded first, with :func:`~monai_kan.handlers.state_dict.load_network_state`: a state that does
      not fit changes nothing (neither the network nor the optimizer, scheduler or engine) and the error names the
      keys and both shapes; ``module.`` prefixes of DataParallel/DDP checkpoints are accepted either way.
    * ``engine_key`` restores the attached engine (the trainer) from that entry, as
      :class:`AtomicCheckpointSaver` saves it, without the config referencing the trainer.
    * The engine keeps its own ``max_epochs``, also when it is larger than the checkpoint's (train longer with a
      larger ``--epochs``); a checkpoint that already reached it logs "nothing left to train" instead of raising.
    * With a larger ``max_epochs`` than the checkpoint's, the restored learning-rate schedule would still end at the
      checkpoint's ``max_epochs`` (a ``CosineAnnealingLR`` keeps its ``T_max``, and past it the rate climbs back
      up). ``lr_schedule="restart"`` (default) restarts the cosine from the current rate over the remaining epochs:
      ``base_lrs`` = the current rates, ``T_max`` = new ``max_epochs`` - completed epochs, ``last_epoch`` = 0, same
      ``eta_min``. The rate then never rises and reaches ``eta_min`` at the new last epoch (with a
      per-epoch ``LrScheduleHandler``). Rebuilding the cosine over the new total instead would raise the rate at the
      resume (the stretched curve lies above the old one), undoing the annealing already done. ``"keep"`` restores
      the checkpoint's schedule unchanged (MONAI's behaviour). Schedulers other than ``CosineAnnealingLR`` are
      restored unchanged, with a warning when ``max_epochs`` grew.

    With one object in ``load_dict`` a plain ``state_dict`` file is accepted (as in MONAI). With
    ``strict_shape=False`` MONAI's partial loading of the networks is used unchanged (everything else is skipped).

    Args:
        load_path: checkpoint file (e.g. ``models/checkpoint_last.pt``).
        load_dict: objects to restore, by the names used when saving.
        name: logger name; ``None`` uses the engine's logger.
        map_location: ``torch.load`` map location. Defaults to ``"cpu"`` (the optimizer moves its state to the
            parameters' device, networks copy into their own).
        strict: require exactly the networks' keys. Defaults to True.
        strict_shape: see MONAI's ``CheckpointLoader``. Defaults to True.
        enabled: whether to attach at all. Defaults to True.
        engine_key: entry holding the attached engine's state; ``None`` leaves the engine's counters alone.
        lr_schedule: ``"restart"`` (default) or ``"keep"``: what a larger ``max_epochs`` than the checkpoint's does
            to the ``CosineAnnealingLR`` schedulers of ``load_dict`` (see above; needs ``engine_key``).

    Raises:
        ValueError: ``engine_key`` is also a key of ``load_dict``; ``enabled`` is not a boolean; an unknown
            ``lr_schedule``.
    """

    def __init__(
        self,
        load_path: str,
        load_dict: Dict[str, Any],
        name: Optional[str] = None,
        map_location: Any = "cpu",
        strict: bool = True,
        strict_shape: bool = True,
        enabled: bool = True,
        engine_key: Optional[str] = None,
        lr_schedule: str = "restart",
    ) -> None:
        super().__init__(load_path, load_dict, name=name, map_location=map_location, strict=strict,
                         strict_shape=strict_shape)
        if lr_schedule not in ("restart", "keep"):
            raise ValueError(f"`lr_schedule` must be 'restart' or 'keep', got {lr_schedule!r}.")
        self.lr_schedule = lr_schedule
        if engine_key is not None and engine_key in load_dict:
            raise ValueError(f"`load_dict` must not use the name {engine_key!r}: `engine_key` gives it to the "
                             f"attached engine.")
        self.load_dict = dict(load_dict)  # MONAI's strict_shape=False pops entries: not from the caller's dict
        self.enabled = as_bool(enabled, "enabled")
        self.engine_key = engine_key

    def attach(self, engine: Any) -> None:
        """Load when ``engine`` starts (nothing if not ``enabled``).

        Args:
            engine: ignite engine, typically the trainer.
        """
        if self.enabled:
            super().attach(engine)

    def __call__(self, engine: Any) -> None:
        """Restore ``load_dict`` (networks first) and the engine from ``load_path``.

        Args:
            engine: the attached engine.

        Raises:
            FileNotFoundError: no checkpoint at ``load_path``.
            KeyError: the checkpoint lacks requested entries (the message lists them and what it holds).
            ValueError: a network's state does not fit (nothing has been loaded then), or the file is unreadable.
        """
        wanted = list(self.load_dict) + ([self.engine_key] if self.engine_key is not None else [])
        if not os.path.isfile(self.load_path):
            raise FileNotFoundError(
                f"there is no checkpoint at {self.load_path} to restore {wanted} from: train without `--resume true` "
                f"first (the training state is written after every epoch), or point `load_path` at a checkpoint."
            )
        if not self.strict_shape:
            super().__call__(engine)
            return
        checkpoint = load_checkpoint(self.load_path, self.map_location)
        first = next(iter(self.load_dict))
        if len(wanted) == 1 and isinstance(checkpoint, Mapping) and first not in checkpoint:
            checkpoint = {first: checkpoint}  # a single object saved directly (e.g. models/model.pt)
        if not isinstance(checkpoint, Mapping):
            raise ValueError(f"{self.load_path} holds a {type(checkpoint).__name__}, not a dict of state dicts.")
        missing = [k for k in wanted if k not in checkpoint]
        if missing:
            raise KeyError(f"{self.load_path} has no {missing} (it holds {sorted(checkpoint)}).")
        prior_max_epochs = engine.state.max_epochs
        # networks first: they are checked before anything is changed, so a checkpoint that does not fit stops the
        # run with the optimizer, scheduler and engine counters untouched
        modules = {k: v for k, v in self.load_dict.items() if isinstance(v, nn.Module)}
        for key, obj in modules.items():
            load_network_state(obj, checkpoint[key], self.strict, f"the checkpoint {self.load_path} ({key!r})")
        for key, obj in self.load_dict.items():
            if key not in modules:
                obj.load_state_dict(checkpoint[key])
        if self.engine_key is None:
            self.logger.info(f"restored {list(self.load_dict)} from {self.load_path}")
            return
        engine.load_state_dict(checkpoint[self.engine_key])
        saved_max_epochs = engine.state.max_epochs
        if prior_max_epochs is not None:  # the engine's own budget, not the checkpoint's
            engine.state.max_epochs = prior_max_epochs
        if prior_max_epochs is not None and saved_max_epochs is not None and prior_max_epochs > saved_max_epochs:
            self._extend_schedules(engine.state.epoch, saved_max_epochs, prior_max_epochs)
        if prior_max_epochs is not None and engine.state.epoch >= prior_max_epochs:
            self.logger.warning(f"the checkpoint {self.load_path} already completed {engine.state.epoch} epochs >= "
                                f"max_epochs={prior_max_epochs}: nothing left to train (raise `epochs` to continue).")
        else:
            self.logger.info(f"resumed from {self.load_path}: epoch {engine.state.epoch} of {prior_max_epochs} done.")

    def _extend_schedules(self, done: int, saved_max_epochs: int, max_epochs: int) -> None:
        """Restart every cosine schedule of ``load_dict`` from its current rates over ``max_epochs - done`` epochs."""
        for key, obj in self.load_dict.items():
            if not isinstance(obj, LRScheduler):
                continue
            if self.lr_schedule == "keep":
                self.logger.info(f"{key!r}: the checkpoint's schedule is kept (lr_schedule='keep') although "
                                 f"max_epochs grew from {saved_max_epochs} to {max_epochs}.")
                continue
            if not isinstance(obj, CosineAnnealingLR):
                self.logger.warning(f"{key!r} is a {type(obj).__name__}, not a CosineAnnealingLR: its schedule is "
                                    f"restored unchanged although max_epochs grew from {saved_max_epochs} to "
                                    f"{max_epochs}.")
                continue
            remaining = max_epochs - done
            if remaining < 1:
                continue
            rates = [group["lr"] for group in obj.optimizer.param_groups]
            obj.base_lrs = list(rates)
            obj.T_max = remaining
            obj.last_epoch = 0
            self.logger.info(f"{key!r}: max_epochs grew from {saved_max_epochs} to {max_epochs}: the cosine schedule "
                             f"restarts from the current rate {rates[0]:.3g} and anneals to eta_min={obj.eta_min:.3g} "
                             f"over the remaining {remaining} epochs.")
