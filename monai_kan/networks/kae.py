"""Kolmogorov-Arnold Auto-Encoder (F. Yu et al., arXiv:2501.00420, section 3, and the
authors' experimental architecture)."""

from __future__ import annotations

import inspect
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn as nn

from monai_kan.layers.kae import KAELayer
from monai_kan.layers.kan_linear import KANLinear
from monai_kan.layers.metatensor import is_meta_tensor, plain_tensor, with_meta_of
from monai_kan.networks.fourier_kan import FourierKANLinear
from monai_kan.networks.wavelet_kan import WaveletKANLinear
from monai_kan.utils import check_floating_input, check_positive_int

__all__ = ["KAE", "AUTOENCODER_LAYERS", "register_autoencoder_layer"]


def _kae(in_features: int, out_features: int, order: int = 3, constant: str = "output") -> nn.Module:
    return KAELayer(in_features, out_features, order=order, constant=constant)


def _linear(in_features: int, out_features: int) -> nn.Module:
    return nn.Linear(in_features, out_features)


def _bspline_kan(in_features: int, out_features: int) -> nn.Module:
    return KANLinear(in_features, out_features)  # efficient-kan defaults: G = 5, k = 3, [-1, 1], SiLU base


def _fourier_kan(in_features: int, out_features: int) -> nn.Module:
    return FourierKANLinear(in_features, out_features)  # FourierKAN defaults of the KAE paper: grid 5, bias


def _wavelet_kan(in_features: int, out_features: int) -> nn.Module:
    return WaveletKANLinear(in_features, out_features)  # Mexican hat + batch norm, as the official Wav-KAN


#: layer builders ``(in_features, out_features, **options) -> nn.Module`` selectable by ``KAE(layer_type=...)``;
#: the options a builder accepts (``order``, ``constant`` for ``"kae"``) are the ones ``KAE`` may be given
AUTOENCODER_LAYERS: Dict[str, Callable[..., nn.Module]] = {
    "kae": _kae,
    "linear": _linear,
    "kan": _bspline_kan,
    "fourierkan": _fourier_kan,
    "wavkan": _wavelet_kan,
}


def register_autoencoder_layer(name: str, builder: Callable[..., nn.Module]) -> None:
    """Make ``builder(in_features, out_features, **options)`` available as ``KAE(layer_type=name)``.

    Args:
        name: the ``layer_type`` (case-insensitive).
        builder: callable returning the layer; keyword arguments it declares (e.g. ``order``) may then be passed
            to :class:`KAE`, which refuses the ones it does not declare.
    """
    AUTOENCODER_LAYERS[name.lower()] = builder


def _layer_options(layer_type: str, builder: Callable[..., nn.Module], **options) -> Dict[str, object]:
    """The options given (not None), checked against what ``builder`` accepts: an option the layer type would
    ignore is an error rather than a silent no-op."""
    given = {k: v for k, v in options.items() if v is not None}
    params = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unused = [k for k in given if k not in params and not takes_any]
    if unused:
        raise ValueError(
            f"{', '.join(f'`{k}`' for k in unused)} {'does' if len(unused) == 1 else 'do'} not apply to "
            f"layer_type={layer_type!r} (only to polynomial KAE layers, layer_type='kae'); leave "
            f"{'it' if len(unused) == 1 else 'them'} unset (None), got "
            + ", ".join(f"{k}={given[k]!r}" for k in unused) + "."
        )
    return given


class KAE(nn.Module):
    """Kolmogorov-Arnold Auto-Encoder: ``input -> [hidden ...] -> latent -> [hidden ...] -> input``.

    Every layer is a :class:`~monai_kan.layers.KAELayer` (learnable polynomial edges of order ``order``); as in the
    authors' code, a ReLU follows every encoder layer (the latent included) and every hidden decoder layer, and a
    sigmoid bounds the reconstruction to ``[0, 1]`` (inputs are expected in that range).

    Args:
        in_features: input size (e.g. 784 for flattened 28x28 images). Inputs of shape ``(N, *dims)`` with
            ``prod(dims) == in_features`` are flattened.
        latent_dim: size of the latent code.
        hidden_dims: sizes of hidden layers between input and latent (mirrored in the decoder). Defaults to ``()``,
            the paper's ``input-latent-input`` setting.
        order: polynomial order ``p`` of the KAE layers; ``None`` (default) gives 3. Only for ``layer_type="kae"``.
        layer_type: edge family of every layer: ``"kae"`` (default), ``"linear"`` (the standard AE), ``"kan"``
            (B-spline KAN), ``"fourierkan"``, ``"wavkan"``, or any name added with :func:`register_autoencoder_layer`.
        constant: parametrisation of the KAE layers' constant term, ``"output"`` or ``"edge"`` (the authors'; see
            :class:`~monai_kan.layers.KAELayer`); ``None`` (default) gives ``"output"``. Only for
            ``layer_type="kae"``.

    ``forward`` returns the reconstruction ``(N, in_features)``; ``encode`` the latent ``(N, latent_dim)``;
    ``decode`` maps a latent back to ``(N, in_features)``.

    Raises:
        ValueError: a size that is not a positive integer, an unknown ``layer_type``, or ``order``/``constant``
            given for a layer type that has no such option (instead of ignoring it).
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        hidden_dims: Sequence[int] = (),
        order: Optional[int] = None,
        layer_type: str = "kae",
        constant: Optional[str] = None,
    ) -> None:
        super().__init__()
        check_positive_int(in_features=in_features, latent_dim=latent_dim)
        if any(not isinstance(h, int) or h < 1 for h in hidden_dims):
            raise ValueError(f"`hidden_dims` must be positive integers, got {tuple(hidden_dims)!r}.")
        key = layer_type.lower()
        if key not in AUTOENCODER_LAYERS:
            raise ValueError(f"`layer_type` must be one of {sorted(AUTOENCODER_LAYERS)}, got {layer_type!r}.")
        build = AUTOENCODER_LAYERS[key]
        options = _layer_options(key, build, order=order, constant=constant)
        self.in_features = in_features
        self.latent_dim = latent_dim
        self.hidden_dims = tuple(hidden_dims)
        self.order = order if order is not None or key != "kae" else 3
        self.constant = constant if constant is not None or key != "kae" else "output"
        self.layer_type = key

        sizes = [in_features, *hidden_dims, latent_dim]
        encoder = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            encoder += [build(a, b, **options), nn.ReLU()]
        decoder = []
        rev = sizes[::-1]
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            decoder += [build(a, b, **options), nn.Sigmoid() if i == len(rev) - 2 else nn.ReLU()]
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"KAE expected a batch of shape (N, {self.in_features}) or (N, *dims), got {list(x.shape)}.")
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"KAE expected {self.in_features} features per sample, got {x.shape[1]} (input shape {list(x.shape)})."
            )
        check_floating_input(x, "KAE")
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, *dims)`` -> latent ``(N, latent_dim)``."""
        return self.encoder(self._flatten(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent ``(N, latent_dim)`` -> reconstruction ``(N, in_features)`` in ``[0, 1]``."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"KAE.decode expected a latent of shape (N, {self.latent_dim}), got {list(z.shape)}.")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and is_meta_tensor(x):
            return with_meta_of(self._forward(plain_tensor(x)), x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(self._flatten(x)))
