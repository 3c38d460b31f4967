"""Fail, rather than hang, past a deadline: a loader or command that opened a FIFO waits for a writer forever."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StillRunning(Exception):
    """Not an OSError (as TimeoutError is), which the loader would report as a problem of the file it read."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise `StillRunning` in the main thread once ``seconds`` have passed in the block (elsewhere: no limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise StillRunning(f"still running after {seconds} s: was a FIFO opened?")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
