"""Helpers for MONAI bundle configs: the bundle's default folder, boolean flags, guards against replacing the
outputs of an earlier run, named choices.

``bundle_root`` in model-zoo configs is ``"."``, so a bundle only works when run from its own folder. Here configs set
``"bundle_root": "$monai_kan.handlers.default_bundle_root('<bundle name>')"``: the bundle folder when the command
runs from it or from the repository root; ``--bundle_root`` overrides it.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from monai.utils import str2bool

__all__ = ["as_bool", "check_fresh_run", "check_output_dir", "choose", "default_bundle_root"]


_TRUE = ("true", "t", "yes", "y", "1")  # monai.utils.str2bool's spellings, matched case-insensitively
_FALSE = ("false", "f", "no", "n", "0")


def as_bool(value: Any, name: str = "value") -> bool:
    """A boolean flag from a bundle config or the command line.

    ``python -m monai.bundle run --amp false`` passes the *string* ``"false"`` (the command line parser only turns
    ``True``/``False`` into booleans) and ``bool("false")`` is True, so every boolean config id is read through this
    function where it is consumed, e.g. ``"amp": "$monai_kan.handlers.as_bool(@amp, 'amp')"``. Strings are parsed by
    :py:func:`monai.utils.str2bool`; the error names the config id.

    Args:
        value: a bool (also numpy), the integers 0 and 1, or one of ``true/false, t/f, yes/no, y/n, 1/0`` in any case.
        name: the config id (or argument) holding the value, for the error message.

    Raises:
        ValueError: anything else, naming ``name`` and the value.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        try:
            return str2bool(value.strip(), raise_exc=True)
        except ValueError:
            pass
    raise ValueError(
        f"`{name}` must be true or false, got {value!r} (accepted: {', '.join(_TRUE)} or {', '.join(_FALSE)}, in any "
        f"case, e.g. `--{name} false`)."
    )


def default_bundle_root(name: str) -> str:
    """The default ``bundle_root`` of the bundle ``name``: its folder, found from the current folder only.

    Model-zoo configs set ``"bundle_root": "."``, so they work only from the bundle folder. The bundles here set
    ``"bundle_root": "$monai_kan.handlers.default_bundle_root('<name>')"``, which is, in this order:

    1. the current folder, if it is the bundle folder (it has ``configs/`` and is named ``name``);
    2. ``bundles/<name>`` below the current folder (the command runs from the repository root).

    ``--bundle_root <folder>`` on the command line (or ``bundle_root=...`` for ``ConfigWorkflow``, or
    ``parser["bundle_root"] = ...`` for ``ConfigParser``) replaces this expression, as any config id: Python code
    that runs a bundle from elsewhere passes it explicitly.

    Args:
        name: the bundle's folder name, e.g. ``"kmunet_3d_segmentation"``.

    Returns:
        the absolute path of the bundle folder.

    Raises:
        ValueError: neither folder is a bundle folder named ``name``; the message says to pass ``--bundle_root``.
    """
    cwd = os.getcwd()
    if os.path.basename(cwd) == name and os.path.isdir(os.path.join(cwd, "configs")):
        return cwd
    below = os.path.join(cwd, "bundles", name)
    if os.path.isdir(os.path.join(below, "configs")):
        return below
    raise ValueError(
        f"cannot tell the folder of bundle {name!r} from the current folder {cwd}: run the command from the bundle "
        f"folder or from the repository root (which holds bundles/{name}), or pass `--bundle_root <bundle folder>` "
        f"(`bundle_root=...` from Python)."
    )


def check_fresh_run(
    ckpt_dir: str,
    resume: bool = False,
    overwrite: bool = False,
    filenames: Sequence[str] = ("model.pt", "checkpoint_last.pt"),
) -> None:
    """Refuse to start a new training run over the checkpoints of an earlier one, unless told what to do.

    Args:
        ckpt_dir: checkpoint folder.
        resume: the run resumes the earlier one (then the files are expected); read by :func:`as_bool`.
        overwrite: the run starts over and may replace the files; read by :func:`as_bool`.
        filenames: files that mark an earlier run.

    Raises:
        FileExistsError: earlier checkpoints and neither ``resume`` nor ``overwrite``.
        ValueError: both ``resume`` and ``overwrite``, or a value that is not a boolean.
    """
    resume, overwrite = as_bool(resume, "resume"), as_bool(overwrite, "overwrite")
    if resume and overwrite:
        raise ValueError("`resume` and `overwrite` exclude each other: resume continues the earlier run, overwrite "
                         "starts a new one over it.")
    if resume or overwrite:
        return
    found = [os.path.join(ckpt_dir, f) for f in filenames if os.path.exists(os.path.join(ckpt_dir, f))]
    if found:
        raise FileExistsError(
            f"{ckpt_dir} already holds checkpoints of an earlier run ({', '.join(found)}): pass `--resume true` to "
            f"continue it, `--overwrite true` to start over (replacing them), or another `--ckpt_dir`."
        )


def check_output_dir(output_dir: str, overwrite: bool = False) -> str:
    """Make sure a run does not silently replace the outputs of an earlier one.

    Args:
        output_dir: folder the run writes into (created if missing).
        overwrite: allow a non-empty folder (files of the same name are then replaced); read by :func:`as_bool`.

    Returns:
        ``output_dir``.

    Raises:
        FileExistsError: ``output_dir`` is not empty and ``overwrite`` is False.
        ValueError: ``overwrite`` is not a boolean (see :func:`as_bool`).
    """
    overwrite = as_bool(overwrite, "overwrite")  # checked even when the folder is empty: a typo is an error
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        shown = sorted(os.listdir(output_dir))[:5]
        raise FileExistsError(
            f"{output_dir} already holds outputs of an earlier run ({shown}...): pass `--overwrite true` to replace "
            f"them or choose another `--output_dir`."
        )
    os.makedirs(output_dir, exist_ok=True)
    return output_dir


def choose(options: Mapping[str, Any], name: str, what: str = "option") -> Any:
    """``options[name]`` with a clear error listing the valid names (used for ``loss_name`` overrides).

    Args:
        options: named choices.
        name: the chosen name.
        what: what is being chosen, for the message.

    Raises:
        ValueError: unknown name.
    """
    if name not in options:
        raise ValueError(f"`{what}` must be one of {sorted(options)}, got {name!r}.")
    return options[name]
