#!/usr/bin/env python
"""Check the CUDA path of the B-spline KAN layers against a float64 CPU reference, then time it.

1. Correctness: KANConv (1D/2D/3D, strides, groups, orders, base on/off, data-placed knots), KANLinear and a small
   KMUNet run on the device with the fused kernels (Triton through ``torch.compile``) and the eager ones, in
   float32, under fp16 and bf16 autocast, and cast to fp16/bf16; outputs and gradients are compared with the same
   layer in float64 on the CPU (relative L2 error, with a tolerance per precision).
2. Speed and memory: fwd+bwd median time and peak memory (``torch.cuda.max_memory_allocated``) of KANConv next to
   the FLOP floor (a plain convolution with ``(G + k + 1)`` times the input channels) and the plain convolution of
   the same channels, in float32 and under fp16 and bf16 autocast.

    python scripts/gpu_check.py            # exits 1 when a check fails
    python scripts/gpu_check.py --device cpu --skip-timing   # the same checks on the CPU (no Triton)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_kan.layers import KANConv, KANLinear, set_fused_kernels  # noqa: E402
from monai_kan.tools.grid import update_grid  # noqa: E402
from monai_kan.networks import KMUNet  # noqa: E402

# relative L2 tolerance of outputs and gradients against the float64 CPU reference
TOLERANCE = {"float32": 1e-4, "autocast float16": 1e-2, "autocast bfloat16": 4e-2, "float16": 1e-2,
             "bfloat16": 4e-2}


def _cases() -> List[Tuple[str, nn.Module, Tuple[int, ...], Optional[nn.Module]]]:
    """(name, module, input shape, twin): a network's low-precision tolerance is twice the error of its
    plain-convolution twin in the same mode (norms and upsampling round too), at least the table's."""
    torch.manual_seed(0)
    nonuniform = KANConv(2, 4, 6)
    update_grid(nonuniform, torch.randn(2, 4, 12, 12) * 0.7 + 0.2)  # data-placed knots: Cox-de Boor path
    return [
        ("KANConv 1D k=3 stride 2", KANConv(1, 3, 5, stride=2, bias=True), (2, 3, 17), None),
        ("KANConv 2D groups 2", KANConv(2, 4, 6, groups=2), (2, 4, 13, 11), None),
        ("KANConv 2D data-placed knots", nonuniform, (2, 4, 12, 12), None),
        ("KANConv 3D order 2 pure spline", KANConv(3, 3, 4, spline_order=2, base_activation=None), (1, 3, 9, 8, 7),
         None),
        ("KANConv 2D batch 0", KANConv(2, 3, 4), (0, 3, 8, 8), None),
        ("KANLinear", KANLinear(7, 5), (33, 7), None),
        ("KMUNet 2D", KMUNet(2, 1, 3, channels=(4, 8), strides=(2,)), (2, 1, 16, 16),
         KMUNet(2, 1, 3, channels=(4, 8), strides=(2,), conv_type="standard")),
    ]


def _outputs_and_grads(module: nn.Module, x: torch.Tensor, mode: str) -> List[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    amp = mode.startswith("autocast")
    dtype = getattr(torch, mode.split()[-1]) if mode != "float32" else torch.float32
    with torch.autocast(x.device.type, dtype=dtype, enabled=amp):
        y = module(x if amp or mode == "float32" else x.to(dtype))
    y.float().square().sum().backward()
    return [y.detach()] + [t.grad.detach() for t in [x, *module.parameters()] if t.grad is not None]


def _rel(a: torch.Tensor, b: torch.Tensor, floor: float) -> float:
    """Relative L2 error; ``floor`` bounds the denominator (gradients that vanish in exact arithmetic, e.g. the bias
    of a convolution followed by instance norm, are compared against the scale of the other gradients)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if b.numel() == 0:
        return 0.0 if a.numel() == 0 else float("inf")
    return float((a - b).norm() / max(float(b.norm()), floor, 1e-30))


def _error(module: nn.Module, x: torch.Tensor, mode: str, device: torch.device) -> float:
    """Worst relative error of the output and every gradient of ``module`` run on ``device`` in ``mode``, against
    the same module in float64 on the CPU."""
    ref = _outputs_and_grads(copy.deepcopy(module).double(), x.double(), "float32")
    dev_module = copy.deepcopy(module).to(device)
    if mode in ("float16", "bfloat16"):
        dev_module = dev_module.to(getattr(torch, mode))
    got = _outputs_and_grads(dev_module, x.to(device), mode)
    if len(got) != len(ref):
        return float("inf")
    floor = 1e-3 * max(float(r.norm()) for r in ref)
    return max(_rel(g, r, floor) for g, r in zip(got, ref))


def check_against_cpu_reference(
    device: torch.device, verbose: bool = False, kernels: Tuple[str, ...] = ("fused", "eager")
) -> Dict[str, Tuple[float, float]]:
    """Worst relative error per (case, mode, kernels) against float64 on the CPU, with its tolerance. TF32 is
    turned off meanwhile: the check is of this package's kernels, not of the GPU's float32 convolutions.

    Args:
        device: where the checked layers run.
        verbose: print one line per check.
        kernels: ``"fused"`` and/or ``"eager"``.

    Returns:
        ``"<case> | <mode> | <kernels>"`` -> ``(relative error, tolerance)``.
    """
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    worst: Dict[str, Tuple[float, float]] = {}
    for name, module, shape, twin in _cases():
        x = torch.randn(shape)
        for mode, tol in TOLERANCE.items():
            if twin is not None:
                tol = max(tol, 2 * _error(twin, x, mode, device))
            for fused in [k == "fused" for k in kernels]:
                set_fused_kernels(fused)
                err = _error(module, x, mode, device)
                key = f"{name} | {mode} | {'fused' if fused else 'eager'}"
                worst[key] = (err, tol)
                if verbose:
                    print(f"{'ok  ' if err < tol else 'FAIL'} {key}: rel. error {err:.2e} (tolerance {tol:.1e})")
    set_fused_kernels(True)
    torch.backends.cudnn.allow_tf32 = True  # torch's defaults
    return worst


def _time(step, device: torch.device, warmup: int = 3, repeats: int = 10) -> Tuple[float, float]:
    """(median seconds, peak bytes) of ``step``."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def timing(device: torch.device) -> None:
    """Print fwd+bwd median time and peak memory of KANConv, the FLOP floor and the plain convolution.

    Args:
        device: where to run.
    """
    for dims, batch, c, size in ((2, 8, 32, 128), (3, 2, 32, 64)):
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        kan = KANConv(dims, c, c).to(device)
        width = c * (kan.n_basis + 1)
        floor = conv(width, c, 3, padding=1, bias=False).to(device)
        same = conv(c, c, 3, padding=1, bias=False).to(device)
        x = torch.randn(batch, c, *([size] * dims), device=device, requires_grad=True)
        x_floor = torch.randn(batch, width, *([size] * dims), device=device, requires_grad=True)
        print(f"\nKANConv {dims}D {'x'.join(map(str, x.shape))}, {c}->{c}: fwd+bwd median, peak memory")
        print("| precision | variant | ms | x FLOP floor | peak MiB |")
        print("|---|---|---:|---:|---:|")
        for mode, dtype in (("float32", None), ("autocast float16", torch.float16),
                            ("autocast bfloat16", torch.bfloat16)):
            rows = []
            for label, module, inp in ((f"Conv{dims}d {c}->{c}", same, x), (f"Conv{dims}d {width}->{c} (floor)",
                                                                            floor, x_floor), ("KANConv", kan, x)):
                def step(module=module, inp=inp):
                    module.zero_grad(set_to_none=True)
                    inp.grad = None
                    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                        y = module(inp)
                    y.float().square().mean().backward()

                rows.append((label, *_time(step, device)))
            t_floor = rows[1][1]
            for label, t, peak in rows:
                print(f"| {mode} | {label} | {t * 1e3:.2f} | {t / t_floor:.2f} | {peak / 2**20:.0f} |")


def main() -> int:
    """Command-line entry point; returns 1 when a check fails, else 0."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (run with --device cpu for the CPU path)")
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {device} ({name})")
    worst = check_against_cpu_reference(device, verbose=True)
    failed = [k for k, (err, tol) in worst.items() if not err < tol]
    print(f"\n{len(worst) - len(failed)} passed, {len(failed)} failed")
    if not args.skip_timing:
        timing(device)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
