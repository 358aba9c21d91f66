"""Argument and input checks shared by the package's constructors and forwards, so that every one of them says
the same thing in the same words (the argument's name, what was expected and what came)."""

from __future__ import annotations

import torch

__all__ = ["check_int", "check_positive_int", "check_floating_input", "check_spatial_input"]


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) ``>= minimum``.

    Raises:
        ValueError: ``` `name` must be a positive integer, got value.``` (or ``an integer >= minimum``).
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {kind}, got {value!r}.")
    return value


def check_positive_int(**values: object) -> None:
    """:func:`check_int` of every keyword value, each named by its keyword.

    Raises:
        ValueError: for the first value that is not a positive integer.
    """
    for name, value in values.items():
        check_int(name, value)


def check_floating_input(x: torch.Tensor, owner: str) -> None:
    """Check that ``x`` is a floating-point tensor (TorchScript-able: called from scripted forwards).

    Raises:
        TypeError: ``{owner} expected a floating-point input, got {dtype}.``
    """
    if not x.is_floating_point():
        raise TypeError(f"{owner} expected a floating-point input, got {x.dtype}.")


def check_spatial_input(x: torch.Tensor, spatial_dims: int, in_channels: int, owner: str) -> None:
    """Check that ``x`` is a floating-point ``(N, in_channels, *spatial)`` batch with ``spatial_dims`` spatial axes
    (TorchScript-able: called from scripted forwards).

    Raises:
        ValueError: ``{owner} expected input of shape (N, {in_channels}, <{spatial_dims} spatial dims>), got ...``.
        TypeError: not floating point (see :func:`check_floating_input`).
    """
    if x.dim() != spatial_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(
            f"{owner} expected input of shape (N, {in_channels}, <{spatial_dims} spatial dims>), got {list(x.shape)}."
        )
    check_floating_input(x, owner)
