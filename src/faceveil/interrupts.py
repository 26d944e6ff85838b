"""Hold SIGINT and SIGTERM over a step that must finish whole: a file written and recorded.

:func:`faceveil.batch.stop_signals` turns the signals into :class:`faceveil.batch.Interrupted`;
inside :func:`deferred` its handler only notes the signal (:func:`hold`), and the stop is raised
when the block ends, so an output that reached its final name is always reported (and so
recorded in the manifest) before the batch stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

_state: dict = {"depth": 0, "pending": None}


def hold(handler: Callable[[int, object], None], signum: int) -> bool:
    """For a signal handler: True when the signal is held until the current :func:`deferred` block ends."""
    if _state["depth"] <= 0:
        return False
    if _state["pending"] is None:
        _state["pending"] = (handler, signum)
    return True


def _deliver() -> None:
    if _state["depth"] == 0 and _state["pending"] is not None:
        handler, signum = _state["pending"]
        _state["pending"] = None
        handler(signum, None)  # raises the batch's stop


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
