"""Generic handlers and helpers for MONAI bundles (checkpoints, resume, per-class metrics, paths)."""

from .bundle_utils import as_bool, check_output_dir, choose, find_bundle_root
from .checkpoint import (
    BestModelSaver,
    TrainedModelLoader,
    TrainingResumer,
    TrainingStateSaver,
    atomic_save,
    check_fresh_run,
    load_network_state,
    load_trained_model,
    unwrap_model,
)
from .kan_grid import KANGridHandler
from .kan_tensorboard import KANSplineTensorBoardHandler
from .metrics import class_output_transform, per_class_metrics
from .progress import ProgressBar
from .validation import FinalValidation

__all__ = [
    "KANGridHandler",
    "KANSplineTensorBoardHandler",
    "BestModelSaver",
    "FinalValidation",
    "ProgressBar",
    "TrainedModelLoader",
    "TrainingResumer",
    "TrainingStateSaver",
    "as_bool",
    "atomic_save",
    "check_fresh_run",
    "check_output_dir",
    "choose",
    "class_output_transform",
    "find_bundle_root",
    "load_network_state",
    "load_trained_model",
    "per_class_metrics",
    "unwrap_model",
]
