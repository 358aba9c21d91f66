"""The autoencoders compared in the KAE paper (Yu et al., arXiv:2501.00420), plus a tuned MLP autoencoder, and
their hyper-parameter grids.

The baselines are :class:`~monai_kan.networks.KAE` layer types (``"linear"``, ``"kan"``: B-spline KAN of Liu et al.,
*KAN: Kolmogorov-Arnold Networks*, arXiv:2404.19756; ``"fourierkan"``; ``"wavkan"``: Bozorgasl & Chen, *Wav-KAN*,
arXiv:2405.12832; ``"kae"``), registered with the network itself.

KAE comes in both parametrisations of :class:`~monai_kan.layers.KAELayer`'s constant term: ``kae1``..``kae3``
(``constant="output"``: one bias per output) and ``kae1e``..``kae3e`` (``constant="edge"``: one learnable order-0
coefficient per edge plus the bias, as the authors' code stores eq. 3). Both compute the same functions; they train
differently (see the layer's docstring).
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

import torch.nn as nn

from monai_kan.networks.kae import KAE

__all__ = [
    "ModelSpec",
    "MODEL_SPECS",
    "PAPER_MODELS",
    "EDGE_PAPER_MODELS",
    "PAPER_GRID",
    "MLP_GRID",
    "build_model",
    "count_parameters",
]


class ModelSpec(NamedTuple):
    """One model of the comparison.

    Attributes:
        key: command-line name.
        label: name in the paper's tables.
        layer_type: ``KAE(layer_type=...)``.
        order: KAE polynomial order (ignored by the other layer types).
        grid: hyper-parameter configurations, each a dict with ``lr``, ``weight_decay`` and, for the MLP,
            ``hidden`` (width of the hidden layer on each side).
        constant: the KAE layers' constant term, ``"output"`` or ``"edge"`` (``None`` for the other layer types).
        paper_key: the model of the paper's tables this one is compared with (``None``: the paper has none).
    """

    key: str
    label: str
    layer_type: str
    order: int
    grid: Tuple[Dict[str, float], ...]
    constant: Optional[str] = None
    paper_key: Optional[str] = None


#: the paper's grid: Adam, learning rate x weight decay, best configuration reported
PAPER_GRID: Tuple[Dict[str, float], ...] = tuple(
    {"lr": lr, "weight_decay": wd} for lr in (1e-4, 1e-5) for wd in (1e-4, 1e-5)
)
#: the extra MLP baseline gets its own, wider grid (learning rate x hidden width): it is the "tuned" baseline
MLP_GRID: Tuple[Dict[str, float], ...] = tuple(
    {"lr": lr, "weight_decay": 1e-5, "hidden": h} for lr in (1e-3, 1e-4) for h in (64, 256)
)

MODEL_SPECS: Dict[str, ModelSpec] = {
    s.key: s
    for s in (
        ModelSpec("ae", "AE", "linear", 1, PAPER_GRID, paper_key="ae"),
        ModelSpec("kan", "KAN", "kan", 1, PAPER_GRID, paper_key="kan"),
        ModelSpec("fourierkan", "FourierKAN", "fourierkan", 1, PAPER_GRID, paper_key="fourierkan"),
        ModelSpec("wavkan", "WavKAN", "wavkan", 1, PAPER_GRID, paper_key="wavkan"),
        ModelSpec("kae1", "KAE (p=1)", "kae", 1, PAPER_GRID, "output", "kae1"),
        ModelSpec("kae2", "KAE (p=2)", "kae", 2, PAPER_GRID, "output", "kae2"),
        ModelSpec("kae3", "KAE (p=3)", "kae", 3, PAPER_GRID, "output", "kae3"),
        ModelSpec("kae1e", "KAE (p=1, edge constants)", "kae", 1, PAPER_GRID, "edge", "kae1"),
        ModelSpec("kae2e", "KAE (p=2, edge constants)", "kae", 2, PAPER_GRID, "edge", "kae2"),
        ModelSpec("kae3e", "KAE (p=3, edge constants)", "kae", 3, PAPER_GRID, "edge", "kae3"),
        ModelSpec("mlp", "MLP-AE (1 hidden, tuned)", "linear", 1, MLP_GRID),
    )
}
#: the seven models of the paper's tables, in their order (KAE with one bias per output)
PAPER_MODELS: List[str] = ["ae", "kan", "fourierkan", "wavkan", "kae1", "kae2", "kae3"]
#: the same seven with KAE in the authors' parametrisation (one constant per edge)
EDGE_PAPER_MODELS: List[str] = ["ae", "kan", "fourierkan", "wavkan", "kae1e", "kae2e", "kae3e"]


def build_model(key: str, in_features: int, latent_dim: int, config: Dict[str, float]) -> KAE:
    """The autoencoder ``key`` (see :data:`MODEL_SPECS`) for ``in_features`` inputs and a ``latent_dim`` code.

    Args:
        key: model name, e.g. ``"kae3"``.
        in_features: input size (784 for 28x28 images).
        latent_dim: code size ``d``.
        config: one entry of the model's grid (only ``hidden`` matters here).

    Raises:
        ValueError: ``key`` is not in :data:`MODEL_SPECS`.
    """
    if key not in MODEL_SPECS:
        raise ValueError(f"`key` must be one of {sorted(MODEL_SPECS)}, got {key!r}.")
    spec = MODEL_SPECS[key]
    hidden = (int(config["hidden"]),) if "hidden" in config else ()
    kae = spec.layer_type == "kae"
    return KAE(in_features, latent_dim, hidden_dims=hidden, order=spec.order if kae else None,
               layer_type=spec.layer_type, constant=spec.constant if kae else None)


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters (batch-norm running statistics are buffers and not counted).

    Args:
        model: any module.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
