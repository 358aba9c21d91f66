"""The KAE paper's evaluation protocol (Tables 2-5), run by ``scripts/kae_benchmark.py``.

Benchmark code, not part of the installed ``monai_kan`` package (``import monai_kan`` imports none of it); import it
from the repository root (``scripts/kae_benchmark.py`` and the tests put the root on ``sys.path``). Paper: Yu et al.,
*KAE: Kolmogorov-Arnold Auto-Encoder for Representation Learning*, arXiv:2501.00420.

* :mod:`.mnist` and :mod:`.synthetic`: the images (MNIST, Fashion-MNIST from files a registry package installs,
  generated blobs), in memory as :class:`ImageSplits`.
* :mod:`.models`: the compared autoencoders (:class:`~monai_kan.networks.KAE` layer types) and their grids.
* :mod:`.metrics`, :mod:`.protocol`: the paper's metrics, training, selection on validation data, evaluation.
* :mod:`.paper_tables`, :mod:`.report`: the paper's printed values and the markdown report beside ours.
"""

from .metrics import (
    add_gaussian_noise,
    add_salt_and_pepper_noise,
    batched_apply,
    class_balanced_subset,
    nearest_neighbor_accuracy,
    pairwise_sq_distances,
    recall_at_k,
    reconstruction_mse,
)
from .mnist import DATA_INSTALL_HINT, ImageSplits, load_fashion_mnist, load_mnist, read_idx
from .models import (
    EDGE_PAPER_MODELS,
    MLP_GRID,
    MODEL_SPECS,
    PAPER_GRID,
    PAPER_MODELS,
    ModelSpec,
    build_model,
    count_parameters,
)
from .paper_tables import PAPER_TABLES, paper_value
from .protocol import (
    AUTHORS_CONFIG,
    RECALL_SAMPLINGS,
    ProtocolConfig,
    evaluate_autoencoder,
    flatten_splits,
    make_optimizer,
    pending_tasks,
    run_protocol,
    select_configuration,
    train_autoencoder,
)
from .report import render_report
from .synthetic import make_blob_images

__all__ = [
    "DATA_INSTALL_HINT",
    "ImageSplits",
    "load_fashion_mnist",
    "load_mnist",
    "make_blob_images",
    "read_idx",
    "AUTHORS_CONFIG",
    "EDGE_PAPER_MODELS",
    "MLP_GRID",
    "MODEL_SPECS",
    "ModelSpec",
    "PAPER_GRID",
    "PAPER_MODELS",
    "PAPER_TABLES",
    "ProtocolConfig",
    "RECALL_SAMPLINGS",
    "add_gaussian_noise",
    "add_salt_and_pepper_noise",
    "batched_apply",
    "build_model",
    "class_balanced_subset",
    "count_parameters",
    "evaluate_autoencoder",
    "flatten_splits",
    "make_optimizer",
    "nearest_neighbor_accuracy",
    "pairwise_sq_distances",
    "paper_value",
    "pending_tasks",
    "recall_at_k",
    "reconstruction_mse",
    "render_report",
    "run_protocol",
    "select_configuration",
    "train_autoencoder",
]
