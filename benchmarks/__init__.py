"""Benchmarks of monai-kan that are not part of the installed package (``pyproject.toml`` installs ``monai_kan``
only): run them from a checkout of the repository.

* :mod:`benchmarks.kae_protocol`: the KAE paper's evaluation protocol (``python scripts/kae_benchmark.py``).
"""
