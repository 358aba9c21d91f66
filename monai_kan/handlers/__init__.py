"""ignite/MONAI handlers and helpers for MONAI bundles.

* ``checkpoint``: MONAI's ``CheckpointSaver``/``CheckpointLoader`` extended so that nothing is lost
  (:class:`AtomicCheckpointSaver` over ignite's ``DiskSaver`` subclass :class:`AtomicDiskSaver`, and
  :class:`CheckedCheckpointLoader` for resuming);
* ``state_dict``: plain functions for checkpoint files (atomic write, the one state-dict reader, all-or-nothing
  loading into plain or DP/DDP networks, :func:`load_trained_model` for inference);
* ``bundle_utils``: the default ``bundle_root``, boolean flags (``as_bool`` over MONAI's ``str2bool``), guards
  against replacing an earlier run's outputs, named choices;
* ``data_errors``: a data error ends a bundle command with its one-line message (naming the file) last and exit
  status 1 (:func:`exit_on_data_error`, the first ``initialize`` step of every bundle);
* ``progress`` (ignite's ``ProgressBar``, switchable), ``kan_tensorboard`` (spline images, a MONAI
  ``TensorBoardHandler``), ``kan_grid`` (grid update/extension during training), ``metrics`` (HD95 in mm,
  per-class metrics, CSV columns named after the classes), ``validation`` (validate the last epochs).
"""

from .bundle_utils import as_bool, check_fresh_run, check_output_dir, choose, default_bundle_root
from .checkpoint import AtomicCheckpointSaver, AtomicDiskSaver, CheckedCheckpointLoader
from .data_errors import data_error_message, exit_on_data_error
from .kan_grid import KANGridHandler
from .kan_tensorboard import KANSplineTensorBoardHandler
from .metrics import ClassNamedMetricsSaver, HausdorffDistanceMM, class_output_transform, per_class_metrics
from .progress import ProgressBar
from .state_dict import (
    atomic_save,
    load_checkpoint,
    load_network_state,
    load_trained_model,
    read_state_dict,
    unwrap_model,
)
from .validation import FinalValidation

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "CheckedCheckpointLoader",
    "ClassNamedMetricsSaver",
    "FinalValidation",
    "HausdorffDistanceMM",
    "KANGridHandler",
    "KANSplineTensorBoardHandler",
    "ProgressBar",
    "as_bool",
    "atomic_save",
    "check_fresh_run",
    "check_output_dir",
    "choose",
    "class_output_transform",
    "data_error_message",
    "default_bundle_root",
    "exit_on_data_error",
    "load_checkpoint",
    "load_network_state",
    "load_trained_model",
    "per_class_metrics",
    "read_state_dict",
    "unwrap_model",
]
