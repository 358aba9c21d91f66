"""Test-wide settings.

KAN layers use torch.compile-fused kernels by default; compiling costs seconds per new graph, so the suite runs the
eager kernels (identical maths) except in tests that turn fusion on explicitly (tests/test_fused.py).
"""

import os

import pytest

os.environ.setdefault("MONAI_KAN_FUSED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def fused_on():
    """The fused kernels on for one test (the suite's default is off), restored afterwards."""
    from monai_kan.layers.fused import fused_kernels_enabled, set_fused_kernels

    before = fused_kernels_enabled()
    set_fused_kernels(True)
    yield
    set_fused_kernels(before)
