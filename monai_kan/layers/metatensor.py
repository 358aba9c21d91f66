"""MONAI ``MetaTensor`` inputs at plain-tensor speed.

MONAI transforms return ``MetaTensor``s. Every torch operation on one goes through its ``__torch_function__``
(metadata bookkeeping in Python), and ``torch.compile``d kernels recompile for the subclass. Layers and networks of
this package therefore run on the plain tensor and attach the input's metadata to the result once, which is what
MONAI's own networks return for the same input (a ``MetaTensor`` carrying the input's meta, affine and
``is_batch``). The pattern, TorchScript-able::

    def forward(self, x):
        if not torch.jit.is_scripting() and is_meta_tensor(x):
            return with_meta_of(self._forward(plain_tensor(x)), x)
        return self._forward(x)
"""

import torch
from monai.data import MetaTensor

__all__ = ["is_meta_tensor", "plain_tensor", "with_meta_of"]


@torch.jit.unused
def is_meta_tensor(x: torch.Tensor) -> bool:
    """Whether ``x`` is a MONAI ``MetaTensor``."""
    return isinstance(x, MetaTensor)


@torch.jit.unused
def plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a plain ``torch.Tensor`` (same storage, same autograd history)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x


@torch.jit.unused
def with_meta_of(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` as a ``MetaTensor`` with a copy of the metadata of the ``MetaTensor`` ``x`` (autograd flows through)."""
    out = out.as_subclass(MetaTensor)
    out.copy_meta_from(x)
    return out
