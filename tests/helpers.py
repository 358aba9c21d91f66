"""Helpers shared by the tests."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
import torch.nn as nn

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a fresh module (scripts are files, not an installed package); ``scripts/`` is on
    ``sys.path`` while it loads, as when it is run, so that it can import its siblings (``_bundle_runs``)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
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


def assert_matches_float64(y, params, reference, tol: float = 1e-4) -> None:
    """``y`` (computed from ``params``) and its gradients, for a random output gradient, equal ``reference`` run on
    float64 copies of ``params`` within ``tol`` (relative and absolute)."""
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, params, g)
    ref_params = [p.detach().double().requires_grad_() for p in params]
    ref = reference(*ref_params)
    ref_grads = torch.autograd.grad(ref, ref_params, g.double())
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


class ClassFromIntensity(nn.Module):
    """A stand-in segmentation network for evaluation tests: the image holds class ``c`` at intensity ``offset + c *
    step`` (after the bundle's intensity scaling), and the output is the one-hot of that class times ``scale``
    (logits), voxel by voxel. Fed an image that encodes the label, it predicts the label perfectly on whatever grid
    the preprocessing gives it."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, offset: float = 0.4, step: float = 0.2):
        super().__init__()
        self.num_classes, self.offset, self.step = num_classes, offset, step
        self.scale = nn.Parameter(torch.tensor(10.0))  # a state_dict for load_trained_model

    def forward(self, x):
        cls = torch.round((x[:, 0] - self.offset) / self.step).clamp(0, self.num_classes - 1).long()
        one_hot = torch.nn.functional.one_hot(cls, self.num_classes).movedim(-1, 1).to(x.dtype)
        return one_hot * self.scale
