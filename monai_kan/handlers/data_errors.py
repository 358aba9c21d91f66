"""Data errors end a bundle command with one line naming the file, and exit status 1.

A bundle run that meets bad data (a missing, truncated or unreadable file, a wrong channel count, label values out of
range, an image/label shape mismatch) raises a :class:`~monai_kan.data.msd.DatasetError` whose one-line message names
the file and what was expected. By the time it reaches the top of ``python -m monai.bundle run`` it is usually
wrapped, once or several times, by MONAI's ``RuntimeError("Failed to instantiate component ...")`` or
``RuntimeError("applying transform ...")``, and its line sits 40-100 lines above the last one. A DataLoader worker
re-raises only the text of its traceback, so the error's class is lost there and only its line remains.

:func:`exit_on_data_error`, the first step of every bundle's ``"initialize"``, installs a ``sys.excepthook`` that
finds the data error in the chain (:func:`data_error_message`), prints the usual traceback, then the data error's
line as the last line on stderr, and ends the process with status 1. Other errors are left to the previous hook.

Why ``os._exit``: after an uncaught exception the interpreter finalises with the CacheDataset's worker threads, the
DataLoader's (persistent) worker processes and the compile workers of ``torch.compile`` possibly still alive; that
can end in ``terminate called without an active exception`` and exit status 134, printed after our line. The hook
therefore flushes the logs and both streams, stops the DataLoader worker processes this process started, and leaves
with ``os._exit(1)``, which skips finalisation (nothing of a failed run is left to save: checkpoints are written
atomically after every epoch).

Config use (first in ``"initialize"``)::

    "initialize": ["$monai_kan.handlers.exit_on_data_error()", ...]
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import sys
from typing import Optional

from monai_kan.data.msd import DatasetError

__all__ = ["data_error_message", "exit_on_data_error"]

# a data error's line inside the re-raised text of a DataLoader worker ("monai_kan.data.msd.DatasetError: ...")
_LINE = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?(Dataset(?:NotFound|Read)?Error): (.+?)\s*$", re.MULTILINE)


def data_error_message(error: Optional[BaseException]) -> Optional[str]:
    """The one-line message of the data error behind ``error``, or ``None`` if there is none.

    Walks ``error`` and its causes (``__cause__``, else ``__context__``); the first
    :class:`~monai_kan.data.msd.DatasetError` gives ``"<class name>: <message>"``. Failing that, the messages of the
    chain are searched for such a line, which is how a DataLoader worker passes its error on (as text).

    Args:
        error: any exception (``None`` gives ``None``).
    """
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DatasetError):
            return f"{type(error).__name__}: {' '.join(str(error).split())}"
        chain.append(error)
        error = error.__cause__ or error.__context__
    for e in chain:
        match = _LINE.search(str(e))
        if match:
            return f"{match.group(1)}: {match.group(2)}"
    return None


def _stop_worker_processes() -> None:
    """Terminate the multiprocessing children of this process (DataLoader workers), waiting briefly for each."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout=2)


def exit_on_data_error(exit_code: int = 1) -> None:
    """Make an uncaught data error end the process with its one-line message last and ``exit_code``.

    Installs a ``sys.excepthook`` (once; calling again changes nothing). For an exception with a data error in its
    chain (:func:`data_error_message`) the hook prints the traceback through the previous hook, flushes the logs and
    stdout, stops this process's DataLoader worker processes, writes the data error's line to stderr, flushes it and
    calls ``os._exit(exit_code)`` (see the module docstring for why not ``sys.exit``). In an interactive interpreter
    it prints the line and does not exit. Every other exception goes to the previous hook unchanged.

    Used from Python (``ConfigWorkflow``, pytest) the hook is inert: exceptions that the caller catches never reach it.

    Args:
        exit_code: the exit status for data errors. Defaults to 1.
    """
    previous = sys.excepthook
    if getattr(previous, "_monai_kan_data_errors", False):
        return

    def hook(exc_type, exc, tb):
        message = data_error_message(exc)
        previous(exc_type, exc, tb)
        if message is None:
            return
        if hasattr(sys, "ps1") or sys.flags.interactive:
            sys.stderr.write(message + "\n")
            return
        logging.shutdown()  # flushes and closes every handler; os._exit skips the atexit call that would do it
        sys.stdout.flush()
        _stop_worker_processes()
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        os._exit(exit_code)

    hook._monai_kan_data_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
