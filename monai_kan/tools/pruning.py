"""Edge pruning of B-spline KAN layers (Liu et al., arXiv:2404.19756, section 2.5.1), with physical shrinking where it
is exact.

An edge is scored by its mean absolute contribution on data, ``E_x |F_e(x)|``; for a convolution the edge is an
(input channel, output channel) pair and its contribution at an output position is the sum over kernel offsets,
``sum_o F_{o, c_in, c_out}(x[p + o])``, averaged in absolute value over all positions (zero-padded borders included).

What "removed" means, per layer:

* **physically removed**: input channels of a layer that no surviving edge reads are dropped (an ``index_select``
  feeds the smaller layer), output channels that no surviving edge writes are dropped (the wrapper writes their
  constant value, the bias or zero, back in place), and in an ``nn.Sequential`` chain ``KAN -> channel-wise
  modules -> KAN`` the first layer also stops computing channels the second one no longer reads. The layer is
  replaced by a :class:`PrunedKAN` around a smaller ``KANLinear``/``KANConv`` (``groups == 1`` only). The network
  still runs unchanged elsewhere and exports to TorchScript, but its state dict no longer matches the original
  architecture: save the whole module or a TorchScript export.
* **masked**: the remaining pruned edges (inside surviving channels) keep their storage; their parameters are set
  to zero and their gradients are zeroed by hooks (:func:`freeze_pruned_edges`), so they stay pruned when fine-tuned.
  In a low-rank layer (``rank``) an edge's own parameters are its mixing weights (``spline_weight``) and base weight;
  the shared functions of its input channel stay (other edges use them).

Under ``torch.distributed`` (initialized, more than one process) :func:`prune_kan` is a collective call: each rank
scores the edges on its own batch, the scores are averaged over all ranks' positions (weighted by their numbers),
and all ranks prune the same edges of identical replicas.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from monai_kan.layers.bspline_kan import BSplineKANBase
from monai_kan.layers.fused import expand_bspline
from monai_kan.tools.grid import _distributed, kan_layers, record_kan_inputs

__all__ = ["kan_edge_scores", "PrunedKAN", "PruneReport", "prune_kan", "freeze_pruned_edges", "pruned_edge_mask"]

# modules that act on every channel separately: a channel nobody reads downstream may be anything upstream
_CHANNELWISE = (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.SiLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Mish,
)


@torch.no_grad()
def kan_edge_scores(layer: BSplineKANBase, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Mean absolute contribution of every edge of ``layer`` on the input ``x`` (of this process only).

    Args:
        layer: ``KANLinear`` or ``KANConv``.
        x: an input of the layer, ``(..., in_features)`` or ``(N, C_in, *spatial)``.
        chunk: rows (linear) processed at a time; a convolution is processed one sample at a time.

    Returns:
        ``(out, in // groups)`` scores, in the units of the layer output.
    """
    total, count = _edge_score_sums(layer, x, chunk)
    return total / count


def _edge_score_sums(layer: BSplineKANBase, x: torch.Tensor, chunk: int = 4096) -> Tuple[torch.Tensor, int]:
    """``(sum over output positions of |contribution| per edge, number of positions)``."""
    w = layer.edge_weight()  # (O, Cg, b + n, *K)
    x = x.to(w.dtype)  # e.g. a float16 input recorded under autocast
    act = layer.base_activation
    if layer.channel_dim == -1:
        s = x.reshape(-1, layer.in_channels)
        total = x.new_zeros(w.shape[:2])
        for start in range(0, s.shape[0], chunk):
            xs = s[start : start + chunk].unsqueeze(-1).unsqueeze(-1)  # (m, C, 1, 1) as a 1x1 "image"
            e = expand_bspline(xs, layer.knots, layer.spline_order, layer.uniform_grid, None if act is None else act(xs))
            e = e.reshape(xs.shape[0], layer.in_channels, -1)  # (m, C, b + n)
            total += torch.einsum("mcb,ocb->moc", e, w).abs().sum(0)
        return total, s.shape[0]
    d, groups = layer.spatial_dims, layer.groups
    cg, og, nb = w.shape[1], w.shape[0] // groups, w.shape[2]
    padding = layer.padding
    total = x.new_zeros(w.shape[:2])
    positions = 0
    for xs in x.split(1):
        if layer.padding_mode != "zeros":
            xs = nn.functional.pad(xs, layer._pad_pairs, mode=layer.padding_mode)
            padding = [0] * d
        e = expand_bspline(xs, layer.knots, layer.spline_order, layer.uniform_grid, None if act is None else act(xs))
        for g in range(groups):
            eg = e[:, g * cg * nb : (g + 1) * cg * nb]
            # one output map per (input, output) pair: a grouped convolution with one group per input channel
            wg = w[g * og : (g + 1) * og].transpose(0, 1).reshape((cg * og, nb) + tuple(w.shape[3:]))
            y = torch.convolution(eg, wg, None, layer.stride, padding, layer.dilation, False, [0] * d, cg)
            positions = y[0, 0].numel()
            total[g * og : (g + 1) * og] += y.abs().flatten(2).sum(-1).reshape(cg, og).t()
    return total, x.shape[0] * positions


@torch.no_grad()
def _all_rank_scores(layer: BSplineKANBase, x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Edge scores over the positions of all ranks (a collective call; ``x=None``: this rank has none), identical
    on every rank, or ``None`` when no rank has any."""
    if x is None:
        total, count = layer.spline_weight.new_zeros(layer.spline_weight.shape[:2], dtype=torch.float64), 0
    else:
        total, count = _edge_score_sums(layer, x)
    sums = torch.cat([total.double().flatten(), total.new_tensor([count], dtype=torch.float64)])
    dist.all_reduce(sums)
    dist.broadcast(sums, 0)  # bitwise the same reduction everywhere, whatever the backend's summation order
    if float(sums[-1]) == 0:
        return None
    return (sums[:-1] / sums[-1]).reshape(total.shape).to(layer.spline_weight.dtype)


def pruned_edge_mask(layer: BSplineKANBase) -> torch.Tensor:
    """``(out, in // groups)`` True for edges whose parameters are all exactly zero (pruned)."""
    def is_zero(p: torch.Tensor) -> torch.Tensor:
        return p.detach().reshape(p.shape[0], p.shape[1], -1).abs().sum(-1) == 0

    zero = is_zero(layer.spline_weight)
    if layer.spline_scaler is not None:
        zero = zero | is_zero(layer.spline_scaler)
    if layer.base_weight is not None:
        zero = zero & is_zero(layer.base_weight)
    return zero


def freeze_pruned_edges(net: nn.Module) -> int:
    """Zero the gradients of pruned (all-zero) edges in every KAN layer of ``net``, so that fine-tuning keeps
    them pruned. Hooks are not saved with a checkpoint: call again after loading one.

    Returns:
        The number of frozen edges.
    """
    frozen = 0
    for _, layer in kan_layers(net):
        mask = pruned_edge_mask(layer)
        frozen += int(mask.sum())
        for p in (layer.spline_weight, layer.spline_scaler, layer.base_weight):
            if p is None:
                continue
            old = getattr(p, "_kan_prune_hook", None)
            if old is not None:
                old.remove()
            if bool(mask.any()) and p.requires_grad:
                keep = (~mask).to(p.dtype).reshape(mask.shape + (1,) * (p.dim() - 2))
                p._kan_prune_hook = p.register_hook(lambda g, keep=keep: g * keep.to(g.device))
            else:
                p._kan_prune_hook = None
    return frozen


class PrunedKAN(nn.Module):
    """A KAN layer shrunk to its surviving input and output channels, with the original interface.

    Args:
        inner: the smaller ``KANLinear``/``KANConv``.
        in_index: ``(C_in',)`` original input channels that ``inner`` reads.
        out_index: ``(C_out',)`` original output channels that ``inner`` computes.
        out_channels: original number of output channels.
        fill: ``(out_channels,)`` value of the dropped output channels (the original bias, or zero).
        channel_dim: 1 for a convolution, -1 for a linear layer.
    """

    def __init__(
        self, inner: nn.Module, in_index: torch.Tensor, out_index: torch.Tensor, out_channels: int,
        fill: torch.Tensor, channel_dim: int,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("in_index", in_index.long())
        self.register_buffer("out_index", out_index.long())
        self.register_buffer("fill", fill.detach().clone())
        self.out_channels = int(out_channels)
        self.channel_dim = int(channel_dim)
        self.scatter_outputs = bool(len(out_index) != out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x.index_select(self.channel_dim, self.in_index))
        if self.scatter_outputs:
            y = y.movedim(self.channel_dim, -1)
            shape = list(y.shape[:-1]) + [self.out_channels]
            out = self.fill.to(y.dtype).expand(shape).index_copy(-1, self.out_index, y)
            y = out.movedim(-1, self.channel_dim)
        return y

    def extra_repr(self) -> str:
        return f"in_index={self.in_index.tolist()}, out_index={self.out_index.tolist()}, out_channels={self.out_channels}"


@dataclass
class PruneReport:
    """What :func:`prune_kan` did.

    Attributes:
        layers: per layer ``{"edges", "pruned_edges", "in_channels_dropped", "out_channels_dropped"}``.
        params_before: parameters of the network before pruning.
        params_after: parameters of the pruned network (storage actually held).
        params_masked: parameters still stored but zeroed and frozen (masked edges in surviving channels).
        metric_before, metric_after: ``metric(net)`` before and after, if a metric was given.
        output_change: relative L2 change of the network output on the scoring batch.
    """

    layers: Dict[str, Dict[str, int]] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    params_masked: int = 0
    metric_before: Optional[float] = None
    metric_after: Optional[float] = None
    output_change: Optional[float] = None

    @property
    def params_removed(self) -> int:
        """Parameters physically removed (no longer stored)."""
        return self.params_before - self.params_after

    def __str__(self) -> str:
        edges = sum(v["edges"] for v in self.layers.values())
        pruned = sum(v["pruned_edges"] for v in self.layers.values())
        lines = [
            f"pruned {pruned}/{edges} KAN edges in {len(self.layers)} layers",
            f"parameters: {self.params_before} -> {self.params_after} stored "
            f"({self.params_removed} physically removed, {self.params_masked} more zeroed and frozen)",
        ]
        if self.metric_before is not None:
            lines.append(f"metric: {self.metric_before:.4f} -> {self.metric_after:.4f}")
        if self.output_change is not None:
            lines.append(f"relative output change on the scoring batch: {self.output_change:.3g}")
        for name, v in self.layers.items():
            lines.append(f"  {name}: {v['pruned_edges']}/{v['edges']} edges, dropped {v['in_channels_dropped']} "
                         f"input / {v['out_channels_dropped']} output channels")
        return "\n".join(lines)


def _numel(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _flat_sequential(seq: nn.Sequential) -> List[Tuple[str, nn.Module]]:
    """Modules of ``seq`` in call order, nested plain ``nn.Sequential`` children expanded (qualified names)."""
    out: List[Tuple[str, nn.Module]] = []
    for name, m in seq.named_children():
        if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
            out += [(f"{name}.{n}", c) for n, c in _flat_sequential(m)]
        else:
            out.append((name, m))
    return out


def _unused_outputs(net: nn.Module, keep: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """For ``A -> channel-wise modules -> B`` inside an ``nn.Sequential``: A's output channels that B never reads."""
    unused: Dict[str, torch.Tensor] = {}
    for prefix, seq in net.named_modules():
        if not (isinstance(seq, nn.Sequential) and type(seq).forward is nn.Sequential.forward):
            continue
        chain = _flat_sequential(seq)
        for i, (name_a, a) in enumerate(chain):
            if not isinstance(a, BSplineKANBase):
                continue
            for name_b, b in chain[i + 1 :]:
                if isinstance(b, BSplineKANBase):
                    qual = lambda n: f"{prefix}.{n}" if prefix else n
                    if b.groups == 1 and a.out_channels == b.in_channels and qual(name_b) in keep:
                        unused[qual(name_a)] = ~keep[qual(name_b)].any(0)
                    break
                if not isinstance(b, _CHANNELWISE):
                    break
    return unused


@torch.no_grad()
def _slice_layer(layer: BSplineKANBase, in_idx: torch.Tensor, out_idx: torch.Tensor) -> BSplineKANBase:
    """A copy of ``layer`` restricted to the given input and output channels (``groups == 1``)."""
    new = copy.deepcopy(layer)
    for name in ("spline_weight", "spline_scaler", "base_weight"):
        p = getattr(layer, name)
        if p is not None:
            setattr(new, name, nn.Parameter(p[out_idx][:, in_idx].clone(), requires_grad=p.requires_grad))
    if layer.bias is not None:
        new.bias = nn.Parameter(layer.bias[out_idx].clone(), requires_grad=layer.bias.requires_grad)
    if layer.shared_spline_weight is not None:  # low-rank: the shared functions belong to the input channels
        shared = layer.shared_spline_weight
        new.shared_spline_weight = nn.Parameter(shared[in_idx].clone(), requires_grad=shared.requires_grad)
    new.knots = layer.knots[in_idx].clone()
    new.in_channels, new.out_channels = len(in_idx), len(out_idx)
    return new


def _set_module(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, child, module)


@torch.no_grad()
def prune_kan(
    net: nn.Module,
    batch,
    threshold: float = 1e-2,
    relative: bool = True,
    shrink: bool = True,
    metric: Optional[Callable[[nn.Module], float]] = None,
    inplace: bool = False,
    distributed: Optional[bool] = None,
) -> Tuple[nn.Module, PruneReport]:
    """Prune the weak edges of every B-spline KAN layer of ``net``.

    Args:
        net: the network.
        batch: network input used to score the edges (one forward pass in eval mode).
        threshold: edges scoring below this are pruned.
        relative: compare ``score / max score of the layer`` (True) or the raw score, in output units (False).
        shrink: physically remove channels without surviving edges (see the module docstring); False only masks.
        metric: optional ``metric(model) -> float`` (e.g. validation Dice) evaluated before and after.
        inplace: modify ``net`` itself instead of a copy.
        distributed: ``None``: when ``torch.distributed`` is initialized with more than one process, this is a
            collective call (every rank calls it with its own ``batch``): the edge scores are the mean absolute
            contributions over all ranks' positions, so every rank prunes the same edges and replicas stay
            identical. ``False``: score on the local ``batch`` only. ``True``: as ``None``, but raise if no process
            group is initialized. ``metric`` and ``output_change`` stay per rank.

    Returns:
        ``(pruned network, PruneReport)``. The best edge of each layer always survives. Fine-tune with a new
        optimizer: the state of an existing one (e.g. Adam moments) would move the masked edges off zero although
        their gradients are zeroed.

    Raises:
        ValueError: when ``threshold < 0``, or ``net`` is or contains a ``DistributedDataParallel`` wrapper and
            the pruning would replace parameters (anything but ``inplace=True, shrink=False``).

    A ``DistributedDataParallel`` wrapper cannot follow a copy or shrunk layers: prune the wrapped module and wrap
    the result again, on every rank (masking in place, ``inplace=True, shrink=False``, keeps the parameters and may
    be applied to the wrapper itself)::

        pruned, report = prune_kan(ddp.module, images, threshold=0.05)
        ddp = DistributedDataParallel(pruned, ...)  # and a new optimizer over pruned.parameters()

    Example::

        pruned, report = prune_kan(net, val_images, threshold=0.05, metric=lambda m: dice(m))
        print(report)
        torch.jit.script(pruned.eval()).save("pruned.ts")
    """
    if threshold < 0:
        raise ValueError(f"`threshold` must be >= 0, got {threshold}.")
    if (shrink or not inplace) and any(isinstance(m, DistributedDataParallel) for m in net.modules()):
        raise ValueError(
            "pruning a copy or shrinking layers replaces parameters, which a DistributedDataParallel wrapper does "
            "not follow: prune `ddp.module` and wrap the result again, or mask in place (inplace=True, shrink=False)."
        )
    sync = _distributed(distributed)
    report = PruneReport(params_before=_numel(net))
    if metric is not None:
        report.metric_before = float(metric(net))
    was_training = net.training
    net.eval()
    y0 = net(batch)
    model = net if inplace else copy.deepcopy(net)
    inputs = record_kan_inputs(model, batch)
    layers = dict(kan_layers(model))
    keep: Dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        x = inputs.get(name)
        if sync:  # every rank visits every layer in module order: the collectives pair up
            scores = _all_rank_scores(layer, x)
            if scores is None:
                continue
        elif x is None:
            continue
        else:
            scores = kan_edge_scores(layer, x)
        ref = scores.max().clamp_min(1e-30) if relative else 1.0
        k = scores / ref >= threshold
        k.view(-1)[scores.argmax()] = True
        keep[name] = k
        mask = (~k).to(layer.spline_weight.dtype)
        for p in (layer.spline_weight, layer.base_weight):
            if p is not None:
                p.mul_(1 - mask.reshape(mask.shape + (1,) * (p.dim() - 2)))
        report.layers[name] = {"edges": k.numel(), "pruned_edges": int((~k).sum()),
                               "in_channels_dropped": 0, "out_channels_dropped": 0}
    if shrink:
        unused = _unused_outputs(model, keep)
        for name, k in keep.items():
            layer = layers[name]
            if layer.groups != 1:
                continue
            in_keep, out_keep = k.any(0), k.any(1)
            if name in unused:  # the next layer ignores these outputs: whatever they hold is irrelevant
                out_keep = out_keep & ~unused[name]
                out_keep[k.float().sum(1).argmax()] |= not bool(out_keep.any())
            if bool(in_keep.all()) and bool(out_keep.all()):
                continue
            in_idx, out_idx = in_keep.nonzero().flatten(), out_keep.nonzero().flatten()
            fill = layer.bias.detach() if layer.bias is not None else layer.spline_weight.new_zeros(layer.out_channels)
            inner = _slice_layer(layer, in_idx, out_idx)
            _set_module(model, name, PrunedKAN(inner, in_idx, out_idx, layer.out_channels, fill, layer.channel_dim))
            report.layers[name]["in_channels_dropped"] = int((~in_keep).sum())
            report.layers[name]["out_channels_dropped"] = int((~out_keep).sum())
    freeze_pruned_edges(model)
    for _, layer in kan_layers(model):
        mask = pruned_edge_mask(layer)
        per_edge = sum(p[0, 0].numel() for p in (layer.spline_weight, layer.spline_scaler, layer.base_weight)
                       if p is not None)
        report.params_masked += int(mask.sum()) * per_edge
    report.params_after = _numel(model)
    y1 = model(batch)
    report.output_change = float((y1 - y0).norm() / y0.norm().clamp_min(1e-30))
    net.train(was_training)
    model.train(was_training)
    if metric is not None:
        report.metric_after = float(metric(model))
    return model, report
