"""Same-process CPU time of the KAE protocol's WavKAN training (784-16-784 ``WaveletKANLinear`` layers with batch
norm, Adam, batch 256): hand-written C++ edge kernels against the previous torch.compile kernels.

Both paths train the same model from the same initialisation on the same rows; runs alternate (previous, new,
previous, new, ...) after a warm-up of each, so a change in the machine's load hits both alike. Prints the median
wall and CPU time per training of each path, their ratio, and the largest difference of the trained weights.

Example::

    OMP_NUM_THREADS=1 python scripts/kae_baseline_speed.py --rows 5120 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.kae_protocol.models import build_model  # noqa: E402
from benchmarks.kae_protocol.protocol import train_autoencoder  # noqa: E402
from monai_kan.networks import wavelet_kan  # noqa: E402

_USE_CPP = wavelet_kan._use_cpp_kernel


def train_once(x: torch.Tensor, epochs: int, batch_size: int, new: bool):
    wavelet_kan._use_cpp_kernel = _USE_CPP if new else (lambda *a: False)
    try:
        torch.manual_seed(0)
        model = build_model("wavkan", x.shape[1], 16, {})
        t0, c0 = time.perf_counter(), time.process_time()
        train_autoencoder(model, x, 1e-4, 1e-5, epochs, batch_size)
        return time.perf_counter() - t0, time.process_time() - c0, model
    finally:
        wavelet_kan._use_cpp_kernel = _USE_CPP


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5120, help="training rows (protocol: 60,000)")
    parser.add_argument("--epochs", type=int, default=1, help="protocol: 10")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.rand(args.rows, 784, generator=torch.Generator().manual_seed(0))
    names = {False: "previous (torch.compile kernels)", True: "new (C++ kernels)"}
    for new in (False, True):  # warm-up: compilation and allocator
        train_once(x[: args.batch_size * 4], 1, args.batch_size, new)
    times = {False: [], True: []}
    models = {}
    for _ in range(args.repeats):
        for new in (False, True):
            wall, cpu, models[new] = train_once(x, args.epochs, args.batch_size, new)
            times[new].append((wall, cpu))
    steps = args.epochs * -(-args.rows // args.batch_size)
    print(f"wavkan: {args.rows} rows x {args.epochs} epoch(s) = {steps} steps, batch {args.batch_size}, "
          f"{args.threads} thread(s), {args.repeats} timed runs per path; load average "
          f"{', '.join(f'{v:.2f}' for v in __import__('os').getloadavg())}")
    med = {}
    for new in (False, True):
        wall = statistics.median(t[0] for t in times[new])
        cpu = statistics.median(t[1] for t in times[new])
        med[new] = cpu
        print(f"  {names[new]:34s} median wall {wall:7.2f} s  CPU {cpu:7.2f} s  ({1e3 * cpu / steps:.1f} CPU-ms/step)")
    print(f"  CPU ratio previous / new: {med[False] / med[True]:.2f}")
    diff = max((a - b).abs().max().item() for a, b in zip(models[False].state_dict().values(),
                                                         models[True].state_dict().values())
               if a.is_floating_point())
    print(f"  largest difference of the trained weights: {diff:.2e}")


if __name__ == "__main__":
    main()
