"""What the scripts that run bundles share: the ``python -m monai.bundle run`` call, MONAI ``MetricsSaver`` CSVs, the
parameter count of a bundle's network and generated README sections.

Used by ``run_main_job.py``, ``compare_unet.py`` and ``kae_denoising_results.py`` (``import _bundle_runs``: a script's
own folder is first on ``sys.path``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]

#: the repository root: bundle commands run from here, as the READMEs write them
REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "bundle_command", "run_bundle", "read_metrics", "read_raw_metrics", "count_parameters",
           "write_between_markers"]


def bundle_command(config_files: Sequence[PathLike], overrides: Sequence[str] = (),
                   args_file: Optional[PathLike] = None) -> List[str]:
    """The ``python -m monai.bundle run`` command line: one config file as it is, several as a JSON list.

    Args:
        config_files: config files, merged in order.
        overrides: further ``--key value`` arguments.
        args_file: a JSON file of overrides (``--args_file``).

    Raises:
        ValueError: no config file.
    """
    if not config_files:
        raise ValueError("`config_files` must name at least one config file.")
    files = [str(f) for f in config_files]
    config_arg = files[0] if len(files) == 1 else json.dumps(files)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg]
    if args_file is not None:
        cmd += ["--args_file", str(args_file)]
    return cmd + [str(o) for o in overrides]


def run_bundle(
    config_files: Sequence[PathLike],
    overrides: Sequence[str] = (),
    log: Optional[PathLike] = None,
    args: Optional[Mapping[str, Any]] = None,
    env: Optional[Mapping[str, str]] = None,
    echo: bool = False,
) -> Dict[str, float]:
    """Run ``python -m monai.bundle run`` from the repository root and time it.

    Args:
        config_files: config files, merged in order.
        overrides: further ``--key value`` arguments.
        log: file for the command's stdout and stderr; None lets them through to this process's.
        args: overrides written to ``<log stem>_args.json`` beside ``log`` and passed as ``--args_file`` (needs
            ``log``).
        env: environment of the command (default: this process's).
        echo: print the command (shell-quoted) before running it.

    Returns:
        ``{"wall_s": wall-clock seconds, "cpu_s": user + system CPU seconds of the command}``.

    Raises:
        ValueError: ``args`` without ``log``.
        RuntimeError: the command failed (the message names it and the log).
    """
    args_file = None
    if args is not None:
        if log is None:
            raise ValueError("`args` needs `log`: the args file is written beside it.")
        args_file = Path(log).with_name(Path(log).stem + "_args.json")
        args_file.write_text(json.dumps(dict(args), indent=2))
    cmd = bundle_command(config_files, overrides, args_file)
    if echo:
        print("\n$ " + shlex.join(cmd), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if log is None:
        proc = subprocess.run(cmd, cwd=REPO, env=None if env is None else dict(env))
    else:
        with open(log, "w") as out:
            proc = subprocess.run(cmd, cwd=REPO, env=None if env is None else dict(env), stdout=out,
                                  stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed (exit {proc.returncode})" + (f"; see {log}" if log else ""))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def _csv_rows(path: PathLike) -> List[List[str]]:
    text = Path(path).read_text()
    return [row for row in csv.reader(text.splitlines(), delimiter="\t" if "\t" in text else ",") if row]


def read_metrics(path: PathLike) -> Dict[str, float]:
    """``metrics.csv`` of MONAI's ``MetricsSaver``: ``name,value`` lines (comma- or tab-separated).

    Args:
        path: the CSV file.

    Returns:
        metric name -> value; rows whose value is not a number are left out.

    Raises:
        FileNotFoundError: no such file.
    """
    out = {}
    for row in _csv_rows(path):
        if len(row) >= 2:
            try:
                out[row[0]] = float(row[1])
            except ValueError:
                pass
    return out


def read_raw_metrics(path: PathLike) -> Dict[str, List[float]]:
    """A ``MetricsSaver`` ``*_raw.csv``: a header, then ``filename, class 0, class 1, ..., mean`` per case.

    Args:
        path: the CSV file.

    Returns:
        case file name (without folders) -> its values.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a value is not a number.
    """
    return {os.path.basename(row[0]): [float(v) for v in row[1:]] for row in _csv_rows(path)[1:]}


def count_parameters(config: Union[PathLike, Mapping[str, Any]], overrides: Optional[Mapping[str, Any]] = None,
                     key: str = "network_def") -> int:
    """Parameters of the network a bundle config defines (instantiated on the CPU, nothing trained).

    Args:
        config: a config file, or the config as a dict (give it ``"imports": ["$import monai_kan"]`` for the short
            names).
        overrides: config keys to set first, e.g. ``{"bundle_root": ..., "layer_type": "linear"}``.
        key: the config entry of the network.

    Raises:
        KeyError: ``key`` is not in the config.
    """
    from monai.bundle import ConfigParser

    if isinstance(config, Mapping):
        parser = ConfigParser(dict(config))
    else:
        parser = ConfigParser()
        parser.read_config(str(config))
    for name, value in (overrides or {}).items():
        parser[name] = value
    return sum(p.numel() for p in parser.get_parsed_content(key).parameters())


def write_between_markers(path: PathLike, start: str, end: str, body: str) -> None:
    """Replace what stands between the ``start`` and ``end`` marker lines of a file (a generated README section).

    Args:
        path: the file (e.g. a bundle's ``docs/README.md``).
        start: the opening marker, e.g. ``"<!-- comparison:start -->"``.
        end: the closing marker.
        body: the new text between them (on lines of its own).

    Raises:
        ValueError: the file lacks a marker.
    """
    path = Path(path)
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path} lacks the markers {start} ... {end}.")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    path.write_text(pattern.sub(lambda _: f"{start}\n{body}\n{end}", text, count=1))
