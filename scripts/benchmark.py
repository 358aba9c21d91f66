#!/usr/bin/env python
"""Forward+backward time and bytes saved for backward: KANConv next to plain convolutions.

For each case, prints the median fwd+bwd time over ``--repeats`` runs (after ``--warmup`` runs), all measured in one
process with the variants interleaved round-robin (the machine is shared and noisy), and the bytes autograd keeps for backward (unique storages seen by ``saved_tensors_hooks``). The "FLOP
floor" is a plain convolution with ``(G + k + 1)`` times the input channels: the multiply-adds of the KAN formula.

    python scripts/benchmark.py                # both cases, all variants
    python scripts/benchmark.py --case 2d --repeats 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn as nn

from monai_kan.layers import KANConv, set_fused_kernels

CASES = {"2d": (2, 4, 32, 32, 64), "3d": (3, 2, 16, 16, 32)}  # spatial dims, batch, c_in, c_out, size


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for backward while running ``fn``."""
    storages = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter):
            st = t.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


def make_step(module: nn.Module, x: torch.Tensor):
    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()

    return step


def time_interleaved(steps, fused_flags, warmup: int, repeats: int):
    """Median seconds per step; the variants run round-robin so that load from other processes hits all alike."""
    times = [[] for _ in steps]
    for r in range(warmup + repeats):
        for i, (step, fused) in enumerate(zip(steps, fused_flags)):
            set_fused_kernels(fused)
            t0 = time.perf_counter()
            step()
            if r >= warmup:
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


class _PlainAutograd(nn.Module):
    """KANConv through its plain (TorchScript/export) path: autograd keeps the basis expansion, as efficient-kan and
    torch-conv-kan do."""

    def __init__(self, layer: KANConv):
        super().__init__()
        self.layer = layer
        layer._use_fast_path = lambda x: False  # instance override: force the reference path

    def forward(self, x):
        return self.layer(x)


def run_case(name: str, warmup: int, repeats: int, variants):
    dims, batch, c_in, c_out, size = CASES[name]
    torch.manual_seed(0)
    x = torch.randn(batch, c_in, *([size] * dims), requires_grad=True)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    kan = KANConv(dims, c_in, c_out, 3)
    width = c_in * (kan.n_basis + 1)
    floor = conv(width, c_out, 3, padding=1, bias=False)
    x_floor = torch.randn(batch, width, *([size] * dims), requires_grad=True)
    rows = []
    same = conv(c_in, c_out, 3, padding=1, bias=False)
    rows.append((f"torch Conv{dims}d {c_in}->{c_out}", same, x))
    rows.append((f"torch Conv{dims}d {width}->{c_out} (FLOP floor)", floor, x_floor))
    if "fused" in variants:
        rows.append(("KANConv, fused kernels (torch.compile)", kan, x))
    if "eager" in variants:
        rows.append(("KANConv, eager kernels", kan, x))
    if "autograd" in variants:
        rows.append(("KANConv through plain autograd (basis saved)", _PlainAutograd(KANConv(dims, c_in, c_out, 3)), x))

    fused_flags = ["fused" in label for label, _, _ in rows]
    medians = time_interleaved([make_step(m, inp) for _, m, inp in rows], fused_flags, warmup, repeats)
    results = []
    for (label, module, inp), fused, t in zip(rows, fused_flags, medians):
        set_fused_kernels(fused)
        results.append((label, t, saved_bytes(lambda: module(inp))))
    t_floor = results[1][1]
    b_plain = results[0][2]
    shape = "x".join(str(s) for s in x.shape)
    lines = [
        f"### {name.upper()}: input {shape}, {c_in}->{c_out}, kernel 3, G=5, k=3, SiLU base",
        "",
        "| variant | fwd+bwd median (ms) | x FLOP floor | saved for backward (MiB) | x plain conv |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, t, b in results:
        lines.append(f"| {label} | {t * 1e3:.1f} | {t / t_floor:.2f} | {b / 2**20:.1f} | {b / b_plain:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--variants", default="fused,eager,autograd",
                        help="comma-separated subset of fused, eager, autograd")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--output", default="", help="also write the tables to this markdown file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = set(args.variants.split(","))
    out = [
        "# KANConv benchmark",
        "",
        f"Generated by `python scripts/benchmark.py` on {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()}, median of {args.repeats} interleaved runs after "
        f"{args.warmup} warm-up runs.",
        "",
    ]
    print("\n".join(out), flush=True)
    for name in (CASES if args.case == "all" else [args.case]):
        lines = run_case(name, args.warmup, args.repeats, variants) + [""]
        print("\n".join(lines), flush=True)
        out += lines
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(out))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
