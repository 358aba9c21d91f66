"""Test-wide settings.

KAN layers use torch.compile-fused kernels by default; compiling costs seconds per new graph, so the suite runs the
eager kernels (identical maths) except in tests that turn fusion on explicitly (tests/test_fused.py).
"""

import os

os.environ.setdefault("MONAI_KAN_FUSED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")
