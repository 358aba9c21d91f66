"""Evaluation suite of the KAE paper: metrics, protocol, baselines and a report beside the paper's tables.

Importing this package registers the ``"fourierkan"`` and ``"wavkan"`` layer types of
:class:`~monai_kan.networks.KAE`.
"""

from .metrics import (
    add_gaussian_noise,
    add_salt_and_pepper_noise,
    batched_apply,
    nearest_neighbor_accuracy,
    pairwise_sq_distances,
    recall_at_k,
    reconstruction_mse,
)
from .models import MLP_GRID, MODEL_SPECS, PAPER_GRID, PAPER_MODELS, ModelSpec, build_model, count_parameters
from .paper_tables import PAPER_TABLES, paper_value
from .protocol import (
    AUTHORS_CONFIG,
    ProtocolConfig,
    evaluate_autoencoder,
    flatten_splits,
    run_protocol,
    select_configuration,
    train_autoencoder,
)
from .report import render_report

__all__ = [
    "AUTHORS_CONFIG",
    "MLP_GRID",
    "MODEL_SPECS",
    "ModelSpec",
    "PAPER_GRID",
    "PAPER_MODELS",
    "PAPER_TABLES",
    "ProtocolConfig",
    "add_gaussian_noise",
    "add_salt_and_pepper_noise",
    "batched_apply",
    "build_model",
    "count_parameters",
    "evaluate_autoencoder",
    "flatten_splits",
    "nearest_neighbor_accuracy",
    "pairwise_sq_distances",
    "paper_value",
    "recall_at_k",
    "reconstruction_mse",
    "render_report",
    "run_protocol",
    "select_configuration",
    "train_autoencoder",
]
