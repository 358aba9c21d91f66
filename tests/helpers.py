"""Helpers shared by the tests."""

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
import torch.nn as nn

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a fresh module (scripts are files, not an installed package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def error_chain(exc: BaseException) -> str:
    """Messages of an exception and its causes (config expressions wrap errors in RuntimeError)."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def saved_bytes(fn) -> int:
    """Bytes of the distinct non-parameter storages autograd saves for backward while running ``fn``."""
    seen = {}

    def pack(t):
        if not isinstance(t, nn.Parameter):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())
