"""Bounded polling: wait for a condition instead of sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable

from pktchain.lab.errors import WaitTimeoutError


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.01,
    what: str = "condition",
) -> None:
    """Return as soon as `condition()` is true; raise `WaitTimeoutError` after `timeout` s.

    The interval doubles from `interval` up to 0.1 s, so that fast conditions
    return in milliseconds and slow ones do not spin.
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        if condition():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeoutError(f"{what}: not true after {timeout:g} s")
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.1)
