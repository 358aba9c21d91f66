#!/usr/bin/env python
"""Forward+backward time and bytes saved for backward: KANConv and KMUNet next to plain convolutions, as users run
them (float32 and bfloat16 autocast, MetaTensor inputs, ``torch.compile(net)``).

Every table is measured in one process with its variants interleaved round-robin (the machine is shared and
noisy): median fwd+bwd time over ``--repeats`` runs after ``--warmup`` runs, and the bytes autograd keeps for
backward (distinct non-parameter storages seen by ``saved_tensors_hooks``).

* ``layer``: KANConv against the *FLOP floor*, a plain convolution with ``(G + k + 1)`` times the input channels
  (the multiply-adds of the KAN formula), each in float32 and under autocast.
* ``network``: a KMUNet 3D training step (``--net-size``^3 input, channels 16-128, ``num_res_units=2``) against
  the same topology with plain convolutions (``conv_type="standard"``) and MONAI's ``UNet`` with the same channels.
* ``metatensor``: a KMUNet 2D training step (8x1x96x96) with a ``MetaTensor`` input against the plain tensor.
* ``compile``: the same 2D step with ``torch.compile(net)`` against the eager network.

    python scripts/benchmark.py                              # everything, CPU
    python scripts/benchmark.py --tables layer --repeats 5
    python scripts/benchmark.py --device cuda --amp-dtype float16
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.networks.nets import UNet

from monai_kan.layers import KANConv, set_fused_kernels
from monai_kan.networks import KMUNet

CASES = {"2d": (2, 4, 32, 32, 64), "3d": (3, 2, 16, 16, 32)}  # spatial dims, batch, c_in, c_out, size
TABLES = ("layer", "network", "metatensor", "compile")


class Variant:
    """One row: a training step (zero grads, forward, backward) run under its own settings."""

    def __init__(self, label: str, module: nn.Module, inputs: torch.Tensor, fused: bool = True, amp: bool = False):
        self.label, self.module, self.inputs, self.fused, self.amp = label, module, inputs, fused, amp

    def forward(self, args) -> torch.Tensor:
        """The module's output under this row's kernel and autocast settings (``args``: the command line)."""
        set_fused_kernels(self.fused)
        with torch.autocast(args.device.type, dtype=args.amp_dtype, enabled=self.amp):
            return self.module(self.inputs)

    def step(self, args) -> None:
        """One training step: zero grads, forward, backward (``args``: the command line)."""
        self.module.zero_grad(set_to_none=True)
        self.inputs.grad = None
        self.forward(args).float().square().mean().backward()
        if args.device.type == "cuda":
            torch.cuda.synchronize()

    def saved_bytes(self, args) -> int:
        """Bytes of the distinct non-parameter storages autograd saves in one forward (``args``: the command line)."""
        storages = {}

        def pack(t):
            if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter):
                st = t.untyped_storage()
                storages[st.data_ptr()] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = self.forward(args)
        del out
        return sum(storages.values())


def measure(variants: Sequence[Variant], args) -> List[Tuple[float, int]]:
    """(median seconds per step, bytes saved for backward) of each variant, the variants interleaved.

    Args:
        variants: the rows of one table.
        args: the parsed command line (``warmup``, ``repeats``, ``device``, autocast settings).
    """
    times: List[List[float]] = [[] for _ in variants]
    for r in range(args.warmup + args.repeats):
        for i, v in enumerate(variants):
            t0 = time.perf_counter()
            v.step(args)
            if r >= args.warmup:
                times[i].append(time.perf_counter() - t0)
    return [(statistics.median(t), v.saved_bytes(args)) for t, v in zip(times, variants)]


def table(title: str, columns: str, rows: List[str]) -> List[str]:
    """Markdown lines of a table: ``### title``, the ``columns`` header line, its rule and ``rows``.

    Args:
        title: heading.
        columns: header line, ``| a | b |``; the first column is left-aligned, the others right-aligned.
        rows: table lines.
    """
    return [f"### {title}", "", columns, "|" + "---|" + "---:|" * (columns.count("|") - 2)] + rows + [""]


def layer_tables(args) -> List[str]:
    """KANConv against the FLOP floor and the plain convolution, per case (markdown lines).

    Args:
        args: the parsed command line.
    """
    out = []
    for name in (CASES if args.case == "all" else [args.case]):
        dims, batch, c_in, c_out, size = CASES[name]
        torch.manual_seed(0)
        dev = args.device
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        kan = KANConv(dims, c_in, c_out, 3).to(dev)
        width = c_in * (kan.n_basis + 1)
        x = torch.randn(batch, c_in, *([size] * dims), device=dev, requires_grad=True)
        x_floor = torch.randn(batch, width, *([size] * dims), device=dev, requires_grad=True)
        same = conv(c_in, c_out, 3, padding=1, bias=False).to(dev)
        floor = conv(width, c_out, 3, padding=1, bias=False).to(dev)
        plain = KANConv(dims, c_in, c_out, 3).to(dev)
        plain._use_fast_path = lambda inp: False  # instance override: autograd through the basis, as other KANs
        rows = []
        for amp in (False, True):
            tag = f"autocast {str(args.amp_dtype).replace('torch.', '')}" if amp else "float32"
            variants = [
                Variant(f"torch Conv{dims}d {c_in}->{c_out}", same, x, amp=amp),
                Variant(f"torch Conv{dims}d {width}->{c_out} (FLOP floor)", floor, x_floor, amp=amp),
                Variant("KANConv, fused kernels (torch.compile)", kan, x, fused=True, amp=amp),
            ]
            if "eager" in args.variants:
                variants.append(Variant("KANConv, eager kernels", kan, x, fused=False, amp=amp))
            if "autograd" in args.variants:
                variants.append(Variant("KANConv through plain autograd (basis saved)", plain, x, fused=False, amp=amp))
            results = measure(variants, args)
            t_floor, b_plain = results[1][0], results[0][1]
            for v, (t, b) in zip(variants, results):
                rows.append(f"| {tag} | {v.label} | {t * 1e3:.1f} | {t / t_floor:.2f} | {b / 2**20:.1f} | "
                            f"{b / b_plain:.2f} |")
        shape = "x".join(str(s) for s in x.shape)
        out += table(f"KANConv {name.upper()}: input {shape}, {c_in}->{c_out}, kernel 3, G=5, k=3, SiLU base",
                     "| precision | variant | fwd+bwd median (ms) | x FLOP floor | saved for backward (MiB) | "
                     "x plain conv |", rows)
    return out


def network_table(args) -> List[str]:
    """KMUNet 3D training step against its plain-convolution twin and MONAI's UNet (markdown lines).

    Args:
        args: the parsed command line.
    """
    torch.manual_seed(0)
    dev, size = args.device, args.net_size
    common = dict(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                  num_res_units=2)
    nets = [
        ("KMUNet (KAN convolutions)", KMUNet(**common)),
        ("KMUNet conv_type='standard' (same topology, plain convs)", KMUNet(**common, conv_type="standard")),
        ("MONAI UNet (same channels)", UNet(**common)),
    ]
    x = torch.randn(1, 1, size, size, size, device=dev, requires_grad=True)
    rows = []
    for amp in (False, True):
        tag = f"autocast {str(args.amp_dtype).replace('torch.', '')}" if amp else "float32"
        variants = [Variant(label, net.to(dev), x, amp=amp) for label, net in nets]
        results = measure(variants, args)
        t_twin, b_twin = results[1]
        for (label, net), (t, b) in zip(nets, results):
            params = sum(p.numel() for p in net.parameters())
            rows.append(f"| {tag} | {label} | {params / 1e6:.2f} | {t * 1e3:.0f} | {t / t_twin:.2f} | "
                        f"{b / 2**20:.0f} | {b / b_twin:.2f} |")
    return table(f"3D training step: input 1x1x{size}^3, channels 16-128, strides 2, num_res_units=2",
                 "| precision | network | parameters (M) | step median (ms) | x plain-conv twin | "
                 "saved for backward (MiB) | x twin |", rows)


def _kmunet_2d(args) -> Tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = KMUNet(2, 1, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2)).to(args.device)
    return net, torch.randn(8, 1, 96, 96, device=args.device)


def metatensor_table(args) -> List[str]:
    """KMUNet 2D training step with a MetaTensor input against a plain tensor (markdown lines).

    Args:
        args: the parsed command line.
    """
    net, x = _kmunet_2d(args)
    meta = MetaTensor(x.clone(), affine=torch.diag(torch.tensor([0.8, 0.8, 1.0, 1.0], dtype=torch.float64)))
    variants = [Variant("torch.Tensor input", net, x.requires_grad_(True)),
                Variant("monai.data.MetaTensor input", net, meta.requires_grad_(True))]
    (t_plain, _), (t_meta, _) = measure(variants, args)
    rows = [f"| {variants[0].label} | {t_plain * 1e3:.0f} | 1.00 |",
            f"| {variants[1].label} | {t_meta * 1e3:.0f} | {t_meta / t_plain:.3f} |"]
    return table("KMUNet 2D training step (8x1x96x96, channels 16-128) with a MetaTensor input",
                 "| input | step median (ms) | x plain tensor |", rows)


def compile_table(args) -> List[str]:
    """KMUNet 2D training step under ``torch.compile(net)`` against the eager network (markdown lines).

    Args:
        args: the parsed command line.
    """
    net, x = _kmunet_2d(args)
    compiled = torch.compile(net)
    x.requires_grad_(True)
    t0 = time.perf_counter()
    Variant("", compiled, x).step(args)
    first = time.perf_counter() - t0
    variants = [Variant("eager network, fused KAN kernels", net, x),
                Variant("torch.compile(net)", compiled, x)]
    (t_eager, _), (t_comp, _) = measure(variants, args)
    rows = [f"| {variants[0].label} | {t_eager * 1e3:.0f} | 1.00 |",
            f"| {variants[1].label} (first step with compilation: {first:.0f} s) | {t_comp * 1e3:.0f} | "
            f"{t_comp / t_eager:.2f} |"]
    return table("KMUNet 2D training step (8x1x96x96, channels 16-128) under torch.compile",
                 "| network | step median (ms) | x eager |", rows)


def main() -> None:
    """Command-line entry point: measure the chosen tables and print (or write) them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated subset of {', '.join(TABLES)}")
    parser.add_argument("--case", choices=[*CASES, "all"], default="all", help="layer table case")
    parser.add_argument("--variants", default="eager,autograd",
                        help="extra KANConv rows of the layer table: comma-separated subset of eager, autograd")
    parser.add_argument("--net-size", type=int, default=64, help="edge of the 3D network input (voxels)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--output", default="", help="also write the tables to this markdown file")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    args.amp_dtype = getattr(torch, args.amp_dtype)
    tables = [t for t in args.tables.split(",") if t]
    unknown = set(tables) - set(TABLES)
    if unknown:
        parser.error(f"--tables expects a subset of {TABLES}, got {sorted(unknown)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else platform.machine()
    out = [
        "# KAN benchmark",
        "",
        f"Generated by `python scripts/benchmark.py` on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, "
        f"{args.device.type} ({device}), {torch.get_num_threads()} threads, median of {args.repeats} interleaved "
        f"runs after {args.warmup} warm-up runs.",
        "",
    ]
    print("\n".join(out), flush=True)
    makers: dict = {"layer": layer_tables, "network": network_table, "metatensor": metatensor_table,
                    "compile": compile_table}
    for name in tables:
        lines: List[str] = makers[name](args)
        print("\n".join(lines), flush=True)
        out += lines
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(out))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
