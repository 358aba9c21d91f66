"""Helpers for MONAI bundle configs: finding the bundle's own folder, guarding outputs, picking options.

``bundle_root`` in model-zoo configs is ``"."``, so a bundle only works when run from its own folder. Here configs set
``"bundle_root": "$monai_kan.handlers.find_bundle_root('<bundle name>')"``, which finds the folder of the config
file being run, whether the command runs from the repository root, from the bundle folder or from Python.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np
from monai.utils import str2bool

__all__ = ["as_bool", "check_fresh_run", "check_output_dir", "choose", "find_bundle_root"]


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


def _root_of_config(path: Any) -> Optional[str]:
    """Bundle folder of a config file path (``<root>/configs/x.json`` -> ``<root>``)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).endswith((".json", ".yaml", ".yml")):
        return None
    parent = Path(path).resolve().parent
    return str(parent.parent if parent.name == "configs" else parent)


def _config_files_on_stack() -> List[str]:
    """Config files being parsed, from the calling frames (``ConfigWorkflow`` and ``monai.bundle`` functions)."""
    found: List[str] = []
    frame = inspect.currentframe()
    while frame is not None:
        local = frame.f_locals
        wf = local.get("self")
        # read the instance dict: ConfigWorkflow.__getattr__ resolves unknown names as config properties
        root = getattr(wf, "__dict__", {}).get("config_root_path") if wf is not None else None
        if isinstance(root, (str, os.PathLike)):
            found.append(str(Path(root) / "_.json"))
        for name in ("config_file", "config_file_"):
            value = local.get(name)
            values = value if isinstance(value, (list, tuple)) else [value]
            found.extend(str(v) for v in values if isinstance(v, (str, os.PathLike)))
        frame = frame.f_back
    return found


def _config_files_in_argv(argv: Sequence[str]) -> List[str]:
    """Values of ``--config_file`` on the command line (a path or a list literal of paths)."""
    out: List[str] = []
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        out.extend(v.strip(" '\"") for v in value.strip("[]").split(","))
    return out


def find_bundle_root(name: Optional[str] = None) -> str:
    """Absolute path of the bundle folder that holds the config being run.

    Looks, in order, at the config files being parsed (``ConfigWorkflow``, ``monai.bundle`` functions), at
    ``--config_file`` on the command line, at the current folder (if it has ``configs/``), and at
    ``bundles/<name>`` below the current folder.

    Args:
        name: the bundle's folder name, for the last fallback and to prefer the matching config when several are
            found.

    Raises:
        ValueError: no bundle folder found.
    """
    candidates = [_root_of_config(p) for p in _config_files_on_stack() + _config_files_in_argv(sys.argv)]
    roots = [r for r in candidates if r is not None and os.path.isdir(os.path.join(r, "configs"))]
    if name is not None:
        named = [r for r in roots if os.path.basename(r) == name]
        roots = named or roots
    if roots:
        return roots[0]
    cwd = os.getcwd()
    if os.path.isdir(os.path.join(cwd, "configs")) and (name is None or os.path.basename(cwd) == name):
        return cwd
    if name is not None and os.path.isdir(os.path.join(cwd, "bundles", name, "configs")):
        return os.path.join(cwd, "bundles", name)
    raise ValueError(
        f"cannot find the folder of bundle {name!r}: run with `--config_file <bundle>/configs/<file>.json`, or from "
        f"the bundle folder, or pass `--bundle_root <bundle folder>`."
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
