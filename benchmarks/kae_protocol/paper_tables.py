"""Reference values of the KAE paper (Yu et al., arXiv:2501.00420), Tables 2-5, as printed there.

These are the paper's numbers, kept to print beside ours; nothing of ours is stored here. Each entry is
``(MNIST d=16, MNIST d=32, FashionMNIST 16, 32, CIFAR10 16, 32, CIFAR100 16, 32)``; CIFAR is not run here.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

__all__ = ["PAPER_TABLES", "PAPER_DATASET_COLUMNS", "paper_value"]

#: dataset name used by the benchmark -> index of its ``d = 16`` column (``d = 32`` is the next one)
PAPER_DATASET_COLUMNS = {"mnist": 0, "fashion-mnist": 2, "cifar10": 4, "cifar100": 6}

#: metric -> model key -> 8 values; "gauss" and "sp" are the two halves of Table 5
PAPER_TABLES: Dict[str, Dict[str, Tuple[float, ...]]] = {
    "recon_mse": {
        "ae": (0.056, 0.043, 0.045, 0.034, 0.034, 0.029, 0.037, 0.030),
        "kan": (0.047, 0.036, 0.032, 0.024, 0.025, 0.019, 0.025, 0.018),
        "fourierkan": (0.042, 0.031, 0.031, 0.024, 0.031, 0.023, 0.029, 0.022),
        "wavkan": (0.175, 0.161, 0.099, 0.089, 0.035, 0.025, 0.036, 0.026),
        "kae1": (0.050, 0.041, 0.029, 0.025, 0.021, 0.020, 0.021, 0.019),
        "kae2": (0.026, 0.017, 0.020, 0.016, 0.017, 0.013, 0.017, 0.013),
        "kae3": (0.024, 0.015, 0.018, 0.015, 0.016, 0.012, 0.016, 0.012),
    },
    "recall": {
        "ae": (0.354, 0.483, 0.401, 0.526, 0.368, 0.472, 0.380, 0.477),
        "kan": (0.457, 0.552, 0.495, 0.578, 0.377, 0.496, 0.391, 0.512),
        "fourierkan": (0.498, 0.638, 0.518, 0.615, 0.258, 0.406, 0.316, 0.435),
        "wavkan": (0.259, 0.447, 0.387, 0.488, 0.258, 0.428, 0.259, 0.430),
        "kae1": (0.404, 0.488, 0.544, 0.581, 0.440, 0.489, 0.453, 0.504),
        "kae2": (0.596, 0.689, 0.607, 0.661, 0.525, 0.631, 0.544, 0.639),
        "kae3": (0.554, 0.659, 0.521, 0.582, 0.488, 0.597, 0.493, 0.586),
    },
    "knn_acc": {
        "ae": (0.853, 0.916, 0.737, 0.781, 0.243, 0.283, 0.076, 0.101),
        "kan": (0.883, 0.931, 0.752, 0.786, 0.244, 0.290, 0.080, 0.110),
        "fourierkan": (0.859, 0.947, 0.735, 0.795, 0.164, 0.246, 0.040, 0.085),
        "wavkan": (0.649, 0.887, 0.679, 0.751, 0.189, 0.272, 0.043, 0.096),
        "kae1": (0.802, 0.868, 0.751, 0.773, 0.262, 0.282, 0.087, 0.104),
        "kae2": (0.929, 0.963, 0.801, 0.824, 0.304, 0.338, 0.124, 0.148),
        "kae3": (0.940, 0.964, 0.805, 0.826, 0.315, 0.354, 0.131, 0.154),
    },
    "gauss": {
        "ae": (0.065, 0.053, 0.056, 0.044, 0.044, 0.038, 0.047, 0.040),
        "kan": (0.058, 0.046, 0.043, 0.034, 0.035, 0.029, 0.034, 0.028),
        "fourierkan": (0.063, 0.054, 0.049, 0.041, 0.048, 0.041, 0.047, 0.040),
        "wavkan": (0.188, 0.174, 0.115, 0.105, 0.045, 0.035, 0.046, 0.037),
        "kae1": (0.058, 0.051, 0.038, 0.035, 0.031, 0.030, 0.031, 0.029),
        "kae2": (0.038, 0.027, 0.030, 0.026, 0.027, 0.023, 0.026, 0.022),
        "kae3": (0.034, 0.025, 0.029, 0.025, 0.027, 0.022, 0.026, 0.022),
    },
    "sp": {
        "ae": (0.092, 0.082, 0.078, 0.069, 0.058, 0.053, 0.061, 0.055),
        "kan": (0.086, 0.075, 0.067, 0.060, 0.050, 0.045, 0.050, 0.045),
        "fourierkan": (0.087, 0.080, 0.071, 0.065, 0.065, 0.059, 0.064, 0.059),
        "wavkan": (0.207, 0.199, 0.139, 0.127, 0.059, 0.051, 0.061, 0.052),
        "kae1": (0.085, 0.080, 0.063, 0.061, 0.047, 0.046, 0.048, 0.046),
        "kae2": (0.070, 0.061, 0.057, 0.054, 0.044, 0.040, 0.044, 0.040),
        "kae3": (0.068, 0.061, 0.057, 0.053, 0.044, 0.040, 0.044, 0.040),
    },
}


def paper_value(metric: str, model: str, dataset: str, latent_dim: int) -> Optional[float]:
    """The paper's value, or None where the paper has none (another dataset, latent size or model).

    Args:
        metric: a key of :data:`PAPER_TABLES` (``"recon_mse"``, ``"recall"``, ``"knn_acc"``, ``"gauss"``, ``"sp"``).
        model: a model key of the benchmark, e.g. ``"kae3"`` (``"kae3e"``, the same KAE with edge constants, gets
            the same value).
        dataset: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or ``"cifar100"``.
        latent_dim: 16 or 32.
    """
    column = PAPER_DATASET_COLUMNS.get(dataset)
    if column is None or latent_dim not in (16, 32):
        return None
    table = PAPER_TABLES.get(metric, {})
    model = _paper_key(model)
    if model not in table:
        return None
    return table[model][column + (0 if latent_dim == 16 else 1)]


def _paper_key(model: str) -> str:
    """The paper's row for a benchmark model: both KAE parametrisations (``kae3``, ``kae3e``) are the paper's KAE."""
    from .models import MODEL_SPECS

    spec = MODEL_SPECS.get(model)
    return spec.paper_key if spec is not None and spec.paper_key is not None else model
