"""Wall time of one training of the KAE protocol's KAN autoencoder (784-16-784, B-spline ``KANLinear`` layers, Adam,
batch 256) with ``KANLinear``'s lean path against the custom-op (kernel-1 convolution) path, in one process.

Both paths train the same model from the same initialisation on the same rows; the runs alternate (reference, lean,
reference, lean, ...) after a warm-up of each, so a change in the machine's load hits both alike. Prints the median
wall and CPU time per training of each path and their ratio, and the largest difference of the trained weights.

Examples::

    python scripts/kan_linear_speed.py                          # 5 runs each of 1 epoch over 12,800 rows
    python scripts/kan_linear_speed.py --rows 60000 --epochs 10 --repeats 3   # whole protocol trainings
    python scripts/kan_linear_speed.py --model wavkan           # another model of the protocol, lean path only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.kae_protocol.models import MODEL_SPECS, build_model  # noqa: E402
from benchmarks.kae_protocol.protocol import train_autoencoder  # noqa: E402
from monai_kan.layers import KANLinear  # noqa: E402

_LEAN = KANLinear._use_lean_path


def _reference_path(self, rows):  # the custom op of KANConv, as before the lean path
    return False


def train_once(model_key: str, x: torch.Tensor, epochs: int, batch_size: int, lean: bool):
    """(wall s, CPU s, trained model) of one training from seed 0."""
    KANLinear._use_lean_path = _LEAN if lean else _reference_path
    try:
        torch.manual_seed(0)
        model = build_model(model_key, x.shape[1], 16, {})
        t0, c0 = time.perf_counter(), time.process_time()
        train_autoencoder(model, x, 1e-4, 1e-5, epochs, batch_size)
        return time.perf_counter() - t0, time.process_time() - c0, model
    finally:
        KANLinear._use_lean_path = _LEAN


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="kan", choices=sorted(MODEL_SPECS))
    parser.add_argument("--rows", type=int, default=12800, help="training rows (protocol: 60,000)")
    parser.add_argument("--epochs", type=int, default=1, help="protocol: 10")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each path")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.rand(args.rows, 784, generator=torch.Generator().manual_seed(0))
    paths = (False, True) if args.model == "kan" else (True,)
    names = {False: "reference (custom op)", True: "lean"}
    warm = args.batch_size * 8
    for lean in paths:  # warm-up: compilation and allocator
        train_once(args.model, x[:warm], 1, args.batch_size, lean)
    times = {lean: [] for lean in paths}
    models = {}
    for _ in range(args.repeats):
        for lean in paths:
            wall, cpu, models[lean] = train_once(args.model, x, args.epochs, args.batch_size, lean)
            times[lean].append((wall, cpu))
    steps = args.epochs * -(-args.rows // args.batch_size)
    per_training = 10 * -(-60000 // args.batch_size) / steps  # protocol training: 60,000 rows x 10 epochs
    print(f"model {args.model}: {args.rows} rows x {args.epochs} epoch(s), batch {args.batch_size}, "
          f"{args.threads} thread(s), {args.repeats} timed runs per path; load average "
          f"{', '.join(f'{v:.2f}' for v in __import__('os').getloadavg())}")
    med = {}
    for lean in paths:
        wall = statistics.median(t[0] for t in times[lean])
        cpu = statistics.median(t[1] for t in times[lean])
        med[lean] = wall
        print(f"  {names[lean]:<22} median wall {wall:.2f} s, CPU {cpu:.2f} s per run "
              f"({1e3 * wall / steps:.1f} ms/step; one protocol training ~{wall * per_training:.0f} s wall)")
    if len(paths) == 2:
        print(f"  ratio reference / lean (wall): {med[False] / med[True]:.2f}")
        diff = max((a - b).abs().max().item() for a, b in zip(models[False].parameters(), models[True].parameters()))
        print(f"  largest difference of the trained parameters: {diff:.2e}")


if __name__ == "__main__":
    main()
