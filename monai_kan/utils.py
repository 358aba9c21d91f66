"""Argument and input checks shared by the package's constructors and forwards, so that every one of them says
the same thing in the same words (the argument's name, what was expected and what came)."""

from __future__ import annotations

import torch

__all__ = ["check_positive_int", "check_floating_input"]


def check_positive_int(**values: object) -> None:
    """Check that every keyword value is an ``int`` (not a ``bool``) >= 1.

    Raises:
        ValueError: ``` `name` must be a positive integer, got value.``` for the first one that is not.
    """
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def check_floating_input(x: torch.Tensor, owner: str) -> None:
    """Check that ``x`` is a floating-point tensor (TorchScript-able: called from scripted forwards).

    Raises:
        TypeError: ``{owner} expected a floating-point input, got {dtype}.``
    """
    if not x.is_floating_point():
        raise TypeError(f"{owner} expected a floating-point input, got {x.dtype}.")
