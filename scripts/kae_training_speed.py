"""Same-process time of one training of a KAE-protocol model (784-16-784 autoencoder, Adam, batch 256) with one of
our fast paths against the path it replaced:

- ``--path kan_linear``: the KAN model, ``KANLinear``'s lean eager path against the custom op (kernel-1 convolution);
- ``--path wavkan``: the WavKAN model, the hand-written C++ Mexican-hat edge kernels against the torch.compile ones.

Both paths train the same model from the same initialisation on the same rows; the runs alternate (previous, new,
previous, new, ...) after a warm-up of each, so a change in the machine's load hits both alike. Prints the median
wall and CPU time per training of each path, their ratios, and the largest difference of the trained weights.

Examples::

    OMP_NUM_THREADS=1 python scripts/kae_training_speed.py --path kan_linear --rows 60000 --epochs 1 --repeats 3
    OMP_NUM_THREADS=1 python scripts/kae_training_speed.py --path wavkan --rows 5120 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.kae_protocol.models import build_model  # noqa: E402
from benchmarks.kae_protocol.protocol import train_autoencoder  # noqa: E402
from monai_kan.layers import KANLinear  # noqa: E402
from monai_kan.networks import wavelet_kan  # noqa: E402


@contextlib.contextmanager
def _patched(owner, name: str, replacement: Callable) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


#: path -> (protocol model, names of the previous and the new path, context manager that selects the previous path)
PATHS: Dict[str, Tuple[str, Tuple[str, str], Callable[[], contextlib.AbstractContextManager]]] = {
    "kan_linear": ("kan", ("custom op", "lean"),
                   lambda: _patched(KANLinear, "_use_lean_path", lambda self, rows: False)),
    "wavkan": ("wavkan", ("torch.compile kernels", "C++ kernels"),
               lambda: _patched(wavelet_kan, "_use_cpp_kernel", lambda *a: False)),
}


def train_once(path: str, x: torch.Tensor, epochs: int, batch_size: int, new: bool):
    """(wall s, CPU s, trained model) of one training from seed 0 on the previous or the new path."""
    model_key, _, previous = PATHS[path]
    with contextlib.nullcontext() if new else previous():
        torch.manual_seed(0)
        model = build_model(model_key, x.shape[1], 16, {})
        t0, c0 = time.perf_counter(), time.process_time()
        train_autoencoder(model, x, 1e-4, 1e-5, epochs, batch_size)
        return time.perf_counter() - t0, time.process_time() - c0, model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True, choices=sorted(PATHS))
    parser.add_argument("--rows", type=int, default=12800, help="training rows (protocol: 60,000)")
    parser.add_argument("--epochs", type=int, default=1, help="protocol: 10")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.rand(args.rows, 784, generator=torch.Generator().manual_seed(0))
    names = dict(zip((False, True), PATHS[args.path][1]))
    for new in (False, True):  # warm-up: compilation and allocator
        train_once(args.path, x[: args.batch_size * 4], 1, args.batch_size, new)
    times: Dict[bool, list] = {False: [], True: []}
    models = {}
    for _ in range(args.repeats):
        for new in (False, True):
            wall, cpu, models[new] = train_once(args.path, x, args.epochs, args.batch_size, new)
            times[new].append((wall, cpu))
    steps = args.epochs * -(-args.rows // args.batch_size)
    print(f"{args.path} ({PATHS[args.path][0]} model): {args.rows} rows x {args.epochs} epoch(s) = {steps} steps, "
          f"batch {args.batch_size}, {args.threads} thread(s), {args.repeats} timed runs per path; load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    med = {}
    for new in (False, True):
        med[new] = tuple(statistics.median(t[i] for t in times[new]) for i in (0, 1))
        wall, cpu = med[new]
        print(f"  {names[new]:<22} median wall {wall:7.2f} s, CPU {cpu:7.2f} s per run "
              f"({1e3 * cpu / steps:.1f} CPU-ms/step)")
    print(f"  previous / new: wall {med[False][0] / med[True][0]:.2f}, CPU {med[False][1] / med[True][1]:.2f}")
    diff = max((a - b).abs().max().item() for a, b in zip(models[False].state_dict().values(),
                                                         models[True].state_dict().values())
               if a.is_floating_point())
    print(f"  largest difference of the trained weights: {diff:.2e}")


if __name__ == "__main__":
    main()
