"""Plain functions for checkpoint files: write atomically, read a network's ``state_dict`` from any of the usual
layouts, load it into a (possibly DataParallel/DDP-wrapped) network all-or-nothing, and refuse to go on without
trained weights. The ignite handlers of :mod:`monai_kan.handlers.checkpoint` and :mod:`monai_kan.visualize` use
these; nothing here depends on ignite.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

__all__ = ["atomic_save", "load_checkpoint", "load_network_state", "load_trained_model", "read_state_dict",
           "unwrap_model"]

logger = logging.getLogger(__name__)

_WRAPPER_PREFIX = "module."  # key prefix of a state dict saved from nn.DataParallel / DistributedDataParallel
STATE_DICT_KEYS = ("model", "network", "state_dict", "net")  # where MONAI/ignite/our checkpoints nest the network


def unwrap_model(network: nn.Module) -> nn.Module:
    """The module inside (nested) ``DistributedDataParallel``/``DataParallel`` wrappers, else ``network`` itself.

    Args:
        network: a module, possibly wrapped.
    """
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


def atomic_save(obj: Any, path: str, save_func: Callable = torch.save, **kwargs: Any) -> str:
    """``save_func(obj, path)`` through a temporary file in the same folder, ``fsync`` and ``os.replace``.

    The file at ``path`` is either the previous one or the complete new one, even if the process dies while writing.
    The folder is created if needed; the file gets mode 0644 (``tempfile``'s 0600 is why MONAI's ``CheckpointSaver``
    turns ignite's atomic mode off).

    Args:
        obj: object to save (typically a ``state_dict``).
        path: destination file.
        save_func: ``torch.save`` or a function with its signature (e.g. ``xm.save``).
        kwargs: passed to ``save_func``.

    Returns:
        ``path``.

    Raises:
        Exception: whatever ``save_func`` raises; the temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            save_func(obj, f, **kwargs)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what to pass instead.

    Args:
        path: a file written by ``torch.save``.
        map_location: ``torch.load`` map location. Defaults to ``"cpu"``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: ``path`` is a TorchScript export, or not loadable with ``weights_only=True``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist()):
                raise ValueError(f"{path} is a TorchScript export (compiled code, no state dict): pass the state "
                                 f"dict checkpoint instead (e.g. the bundle's models/model.pt).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # e.g. pickled objects outside torch's weights_only allow-list, a truncated file
        raise ValueError(f"{path} cannot be read as a checkpoint (torch.load with weights_only=True): {e}") from e


def read_state_dict(path: str, map_location: Any = "cpu") -> Mapping[str, Any]:
    """The network ``state_dict`` in a checkpoint file: a plain ``state_dict`` (``models/model.pt``), or one nested
    under ``"model"``, ``"network"``, ``"state_dict"`` or ``"net"`` (``checkpoint_last.pt``, MONAI/ignite files).

    ``module.`` prefixes of DataParallel/DDP are kept: :func:`load_network_state` removes as many as make the keys
    fit the network (a network may itself have a submodule named ``module``).

    Args:
        path: checkpoint file.
        map_location: ``torch.load`` map location. Defaults to ``"cpu"``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a TorchScript export, an unreadable file, or content that is not a state dict.
    """
    obj = load_checkpoint(path, map_location)
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        what = f"a dict with keys {sorted(map(str, obj))[:10]}" if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"{path} does not hold a network state dict (got {what}); expected a state dict, or one "
                         f"under {list(STATE_DICT_KEYS)}.")
    return obj


def _strip_wrapper_prefix(state: Mapping[str, Any], expected: Sequence[str]) -> Mapping[str, Any]:
    """``state`` without the ``module.`` prefixes of (nested) DataParallel/DDP wrappers: as many levels as make the
    most keys match ``expected`` (none if stripping matches no more of them). Stripped with PyTorch's
    ``consume_prefix_in_state_dict_if_present``, on a copy: the caller's mapping is left alone."""
    wanted, n = set(expected), len(_WRAPPER_PREFIX)
    keys, depth, best, best_depth = list(state), 0, len(wanted.intersection(state)), 0
    while keys and all(isinstance(k, str) and k.startswith(_WRAPPER_PREFIX) for k in keys):
        keys, depth = [k[n:] for k in keys], depth + 1
        if len(wanted.intersection(keys)) > best:
            best, best_depth = len(wanted.intersection(keys)), depth
    if best_depth == 0:
        return state
    stripped = OrderedDict(state)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:  # per-module versions used by some modules' loading code
        stripped._metadata = copy.copy(metadata)  # type: ignore[attr-defined]
    for _ in range(best_depth):
        consume_prefix_in_state_dict_if_present(stripped, _WRAPPER_PREFIX)
    return stripped


def _shape(value: Any) -> Optional[Tuple[int, ...]]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _shape_mismatches(own: Mapping[str, Any], state: Mapping[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """``{key: (checkpoint shape, network shape)}`` for the tensors present in both with different shapes."""
    return {
        k: (_shape(state[k]), _shape(v))
        for k, v in own.items()
        if k in state and _shape(v) is not None and _shape(state[k]) is not None and _shape(state[k]) != _shape(v)
    }


def _listed(keys: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(k) for k in list(keys)[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_network_state(
    network: nn.Module, state: Mapping[str, Any], strict: bool = True, source: str = "the checkpoint"
) -> nn.Module:
    """``load_state_dict`` that accepts DataParallel/DDP checkpoints and changes nothing when the state does not fit.

    ``network`` may be wrapped in ``nn.DataParallel``/``DistributedDataParallel`` (the wrapped module is filled, as
    MONAI's ``monai.networks.utils.get_state_dict`` reads it) and ``state`` may come from a wrapped network (keys
    prefixed ``module.``, removed as by PyTorch's ``consume_prefix_in_state_dict_if_present``), in any combination.

    PyTorch's ``load_state_dict`` copies every tensor that fits before it raises for the ones that do not; here keys
    and shapes are checked first, so a failed load leaves the network unchanged. A shape that differs is tried on a
    copy of the network first, since a module's own loading code may adopt it (a KAN layer takes the grid size of a
    checkpoint saved after grid extension).

    Args:
        network: network to fill (wrappers are unwrapped).
        state: its ``state_dict``, possibly with ``module.`` prefixes.
        strict: require exactly the network's keys (as in ``load_state_dict``); shapes must always fit.
        source: what ``state`` is, for the error message (e.g. the checkpoint path).

    Returns:
        ``network``.

    Raises:
        ValueError: missing or unexpected keys (``strict``), or tensors whose shapes differ; the message names the
            keys, with the checkpoint's and the network's shapes. The network is then unchanged.
    """
    module = unwrap_model(network)
    own = module.state_dict()
    state = _strip_wrapper_prefix(state, list(own))
    problems: List[str] = []
    if strict:
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing:
            problems.append(f"missing in the checkpoint: {_listed(missing)}")
        if unexpected:
            problems.append(f"not in the network: {_listed(unexpected)}")
    mismatched = _shape_mismatches(own, state)
    trial_error = None
    if mismatched and not problems:
        try:
            trial = copy.deepcopy(module)
        except Exception:  # cannot try on a copy: every differing shape is an error
            trial = None
        if trial is not None:
            try:
                trial.load_state_dict(state, strict=strict)
                mismatched = {}
            except RuntimeError as e:
                after = trial.state_dict()  # shapes the module's loading code did not adopt
                mismatched = {k: v for k, v in mismatched.items() if _shape(after.get(k)) != v[0]}
                trial_error = None if mismatched else e
            del trial
    if mismatched:
        problems.append("shapes differ (checkpoint vs network): " + "; ".join(
            f"{k!r}: {list(ckpt)} vs {list(net)}" for k, (ckpt, net) in list(mismatched.items())[:10])
            + (f"; and {len(mismatched) - 10} more" if len(mismatched) > 10 else ""))
    elif trial_error is not None:
        problems.append(str(trial_error))
    if problems:
        raise ValueError(f"{source} does not fit the configured network (were the network settings changed since "
                         f"training?), nothing was loaded: " + "; ".join(problems) + ".")
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as e:  # not expected after the checks above
        raise ValueError(f"{source} does not fit the configured network: {e}") from e
    return network


def load_trained_model(
    network: nn.Module, ckpt_path: str, map_location: Any = None, strict: bool = True
) -> nn.Module:
    """Load trained weights into ``network``, refusing to go on without them.

    Reads the file with :func:`read_state_dict` (a plain ``state_dict`` such as ``models/model.pt``, or one nested in
    a training checkpoint such as ``checkpoint_last.pt``) and loads it with :func:`load_network_state` (plain or
    DataParallel/DDP on either side; a checkpoint that does not fit leaves ``network`` unchanged). Bundles call it in
    ``initialize`` of ``inference.json``, so a missing model stops the run before any data or output is touched.

    Args:
        network: network to fill (a DataParallel/DDP wrapper is unwrapped).
        ckpt_path: checkpoint file.
        map_location: ``torch.load`` map location. Defaults to the device of the network's parameters.
        strict: require exactly the network's keys. Defaults to True.

    Returns:
        ``network``.

    Raises:
        FileNotFoundError: no checkpoint (instead of silently predicting with random weights).
        ValueError: the file is not a state dict checkpoint (see :func:`read_state_dict`), or it does not fit the
            network (e.g. other channels or classes); the message names the keys and both shapes.
    """
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(
            f"no trained model at {ckpt_path}: inference with untrained (random) weights is refused. Train the bundle "
            f"first (python -m monai.bundle run --config_file <bundle>/configs/train.json) or point `ckpt_path` at "
            f"a trained model.pt."
        )
    if map_location is None:
        param = next(unwrap_model(network).parameters(), None)
        map_location = param.device if param is not None else "cpu"
    state = read_state_dict(ckpt_path, map_location)
    load_network_state(network, state, strict=strict, source=f"the checkpoint {ckpt_path}")
    logger.info(f"loaded trained weights from {ckpt_path}")
    return network
