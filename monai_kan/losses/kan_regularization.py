"""Sparsity and smoothness regularisation of B-spline KAN networks (Liu et al., arXiv:2404.19756, section 2.5.1),
and a wrapper that adds it to any loss.

Per layer, with ``|F_e|`` the magnitude of edge ``e`` (for a convolution: an input-output channel pair, summed over
kernel offsets):

* L1: ``sum_e |F_e|`` (``reduction="sum"``, the paper) or its mean over edges (``"mean"``);
* entropy: ``-sum_e p_e log p_e`` with ``p_e = |F_e| / sum_e |F_e|`` (low when few edges carry the layer);
* smoothness: squared second differences of the effective control points, ``sum_b (c_{b+1} - 2 c_b + c_{b-1})^2``
  per edge (a P-spline penalty: it vanishes on straight lines), summed or averaged over edges.

The paper's ``|F_e| = E_x |F_e(x)|`` needs every edge's output on the batch, which a convolution never forms. Here it
is replaced by its upper bound from the triangle inequality (B-splines are non-negative)::

    E_x |F_e(x)| <= |w_e| E_x |act(x)| + sum_b |c_{e,b}| E_x[B_b(x)]

which only needs per-channel means of the basis functions on the layer input: those are recorded by a forward
pre-hook on every KAN layer (``data_aware=True``, a subsample of the inputs, no gradient), or, before any forward or
with ``data_aware=False``, taken for inputs uniform over each channel's grid interior.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from monai_kan.basis.bspline import bspline_basis
from monai_kan.layers.bspline_kan import BSplineKANBase, sample_rows

__all__ = ["KANRegularization", "KANRegularizedLoss", "kan_edge_magnitudes"]


def _interior_stats(layer: BSplineKANBase, n: int = 64):
    """``E|act(x)|`` ``(C,)`` and ``E[B_b(x)]`` ``(C, n_basis)`` for ``x`` uniform over each grid interior."""
    return _stats(layer, layer.grid_interior(n).to(layer.knots))


@torch.no_grad()
def _stats(layer: BSplineKANBase, x: torch.Tensor):
    """``(E|act(x)|, E[B(x)])`` per channel from ``x`` of shape ``(M, C)``."""
    basis = bspline_basis(x, layer.knots, layer.spline_order).mean(0)  # (C, n_basis)
    act = layer.base_activation(x).abs().mean(0) if layer.base_activation is not None else x.new_zeros(x.shape[1])
    return act, basis


def kan_edge_magnitudes(
    layer: BSplineKANBase, act_mean: Optional[torch.Tensor] = None, basis_mean: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Differentiable magnitudes ``(out, in // groups)`` of every edge (channel pair for a convolution): the upper
    bound ``|w| E|act(x)| + sum_b |c_b| E[B_b(x)]`` of ``E|F(x)|``, summed over kernel offsets.

    Args:
        layer: ``KANLinear`` or ``KANConv``.
        act_mean: ``(in,)`` mean of ``|base_activation(x)|`` per input channel.
        basis_mean: ``(in, n_basis)`` mean of each basis function per input channel.
            Both default to inputs uniform over each channel's grid interior.
    """
    if act_mean is None or basis_mean is None or basis_mean.shape[-1] != layer.n_basis:
        act_mean, basis_mean = _interior_stats(layer)
    out, cin_g, groups = layer.spline_weight.shape[0], layer.spline_weight.shape[1], layer.groups
    # input channel of edge (o, j) in a grouped layer: (o // (out / groups)) * (in / groups) + j
    chan = (torch.arange(out, device=act_mean.device)[:, None] // (out // groups)) * cin_g + torch.arange(
        cin_g, device=act_mean.device)
    extra = layer.spline_weight.dim() - 3  # kernel dims
    bm = basis_mean[chan].reshape((out, cin_g) + (1,) * extra + (layer.n_basis,)).to(layer.spline_weight)
    mag = (layer.coefficients().abs() * bm).sum(-1)  # (out, in / g, *K)
    if layer.base_weight is not None:
        mag = mag + layer.base_weight.abs() * act_mean[chan].reshape((out, cin_g) + (1,) * extra).to(mag)
    return mag.reshape(out, cin_g, -1).sum(-1)


class KANRegularization(nn.Module):
    """L1 + entropy sparsity and control-point smoothness penalty over every B-spline KAN layer of a network.

    Args:
        network: the network whose ``KANLinear``/``KANConv`` layers are regularised (not registered as a
            submodule: the regulariser adds no parameters or state).
        l1_weight: weight of the L1 term (``mu_1`` times ``lambda`` in Liu et al., arXiv:2404.19756, eq. 2.20).
            Defaults to 1e-3.
        entropy_weight: weight of the entropy term (``mu_2`` times ``lambda``). Defaults to 2e-3.
        smoothness_weight: weight of the second-difference penalty. Defaults to 1e-3.
        reduction: ``"mean"`` (default) averages the L1 and smoothness terms over edges and all terms over layers,
            so the weights do not depend on the network size; ``"sum"`` sums them (the paper).
        data_aware: record per-channel input statistics with forward pre-hooks (see the module docstring).
        max_samples: input positions per layer used for the statistics (random subset).

    ``forward()`` returns the scalar penalty; the last terms are in ``self.last_terms`` for logging.
    Call :meth:`remove` to detach the hooks.

    Raises:
        ValueError: an unknown ``reduction``, a negative weight, or a ``network`` without B-spline KAN layers.
    """

    def __init__(
        self,
        network: nn.Module,
        l1_weight: float = 1e-3,
        entropy_weight: float = 2e-3,
        smoothness_weight: float = 1e-3,
        reduction: str = "mean",
        data_aware: bool = True,
        max_samples: int = 4096,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"`reduction` must be 'mean' or 'sum', got {reduction!r}.")
        for name, value in (("l1_weight", l1_weight), ("entropy_weight", entropy_weight),
                            ("smoothness_weight", smoothness_weight)):
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0, got {value}.")
        if not any(isinstance(m, BSplineKANBase) for m in network.modules()):
            raise ValueError("`network` has no B-spline KAN layers (KANLinear/KANConv) to regularise.")
        self._net = (network,)  # a tuple: not registered, so the loss holds no copy of the network's state
        self.l1_weight, self.entropy_weight, self.smoothness_weight = l1_weight, entropy_weight, smoothness_weight
        self.reduction = reduction
        self.max_samples = int(max_samples)
        self.last_terms: Dict[str, float] = {}
        self._stats: Dict[int, tuple] = {}
        self._handles = []
        if data_aware:
            for m in network.modules():
                if isinstance(m, BSplineKANBase):
                    self._handles.append(m.register_forward_pre_hook(self._record))

    def _layers(self):
        return [m for m in self._net[0].modules() if isinstance(m, BSplineKANBase)]

    def _record(self, layer: BSplineKANBase, args) -> None:
        x = layer.channel_values(args[0])
        if x.shape[0] > self.max_samples:
            x = x[sample_rows(x.shape[0], self.max_samples, x.device)]
        self._stats[id(layer)] = _stats(layer, x)

    def remove(self) -> None:
        """Remove the statistics hooks from the network."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def forward(self) -> torch.Tensor:
        l1 = ent = smooth = None
        layers = self._layers()
        for layer in layers:
            act_mean, basis_mean = self._stats.get(id(layer), (None, None))
            mag = kan_edge_magnitudes(layer, act_mean, basis_mean)
            total = mag.sum()
            p = mag / total.clamp_min(1e-12)
            h = -(p * torch.log(p.clamp_min(1e-12))).sum()
            coef = layer.coefficients()
            d2 = coef[..., 2:] - 2 * coef[..., 1:-1] + coef[..., :-2] if coef.shape[-1] > 2 else coef[..., :0]
            sm = d2.square().sum(-1)
            if self.reduction == "mean":
                total, sm = mag.mean(), sm.mean()
            else:
                sm = sm.sum()
            l1 = total if l1 is None else l1 + total
            ent = h if ent is None else ent + h
            smooth = sm if smooth is None else smooth + sm
        if l1 is None:
            raise ValueError("`network` has no B-spline KAN layers (KANLinear/KANConv) to regularise.")
        if self.reduction == "mean":
            l1, ent, smooth = l1 / len(layers), ent / len(layers), smooth / len(layers)
        self.last_terms = {"l1": float(l1.detach()), "entropy": float(ent.detach()), "smoothness": float(smooth.detach())}
        return self.l1_weight * l1 + self.entropy_weight * ent + self.smoothness_weight * smooth


class KANRegularizedLoss(nn.Module):
    """``loss(input, target) + KANRegularization(network)()``: adds the KAN penalty to any (MONAI) loss.

    Args:
        loss: the task loss, e.g. ``monai.losses.DiceCELoss``.
        network: the KAN network being trained.
        kwargs: :class:`KANRegularization` arguments (``l1_weight``, ``entropy_weight``, ``smoothness_weight``,
            ``reduction``, ``data_aware``, ``max_samples``).

    The penalty uses the statistics of the network's latest forward pass, which in a training iteration is the one
    that produced ``input``. Bundle config::

        "loss_base": {"_target_": "DiceCELoss", "to_onehot_y": true, "softmax": true},
        "loss": {"_target_": "monai_kan.losses.KANRegularizedLoss", "loss": "@loss_base", "network": "@network",
                 "l1_weight": 0.001, "entropy_weight": 0.002, "smoothness_weight": 0.001}

    Raises:
        ValueError: as :class:`KANRegularization`.
    """

    def __init__(self, loss: Callable, network: nn.Module, **kwargs) -> None:
        super().__init__()
        self.loss = loss
        self.regularization = KANRegularization(network, **kwargs)

    def forward(self, input: torch.Tensor, target: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.loss(input, target, *args, **kwargs) + self.regularization()
