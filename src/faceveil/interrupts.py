"""Stopping a batch cleanly: SIGINT and SIGTERM become :class:`Interrupted`, held over a file's finish.

:func:`stop_signals` turns the signals into :class:`Interrupted` while a batch runs; the
exception unwinds through the atomic writers, which remove their temporary files. Inside
:func:`deferred` (a file renamed to its final name and then reported) the handler only notes
the signal, and the stop is raised when the block ends, so an output that reached its final
name is always recorded in the manifest before the batch stops.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_state: dict = {"depth": 0, "pending": None}  # open deferred blocks; the first signal held meanwhile


class Interrupted(BaseException):
    """SIGINT or SIGTERM during a batch (a BaseException, like KeyboardInterrupt: nothing catches it by accident)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def _stop(signum: int, frame: object) -> None:
    if _state["depth"] > 0:  # a file being finished and reported completes first
        if _state["pending"] is None:
            _state["pending"] = signum
        return
    raise Interrupted(signum)


@contextmanager
def stop_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _deliver() -> None:
    if _state["depth"] == 0 and _state["pending"] is not None:
        signum, _state["pending"] = _state["pending"], None
        raise Interrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Run the block to its end; a stop signal that came meanwhile is raised after it."""
    _state["depth"] += 1
    try:
        yield
    except BaseException:
        _state["depth"] -= 1
        _deliver()  # a held stop wins over the block's own exception
        raise
    _state["depth"] -= 1
    _deliver()
