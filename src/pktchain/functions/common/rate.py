"""Token buckets: at most `rate` events a second on average, `burst` at once.

One bucket polices one stream of events (ICMP errors a router sends, frames of
one class a port sends, new sessions of one host): each event takes a token
if there is one, and tokens come back at `rate` a second up to `burst`. The
bucket refills from the ``now`` of each call, so it needs no timer of its own;
``now`` is any monotonic clock in seconds and must not go backwards (a call
with an earlier ``now`` refills nothing).
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """At most ``rate`` events per second on average, ``burst`` back to back.

    A new bucket is full. ``rate`` must be more than 0 and ``burst`` at least
    1 (the callers' configurations check it and name the field).
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return int(self._burst)

    def take(self, now: float) -> bool:
        """Spend one token if there is one; refill first from the time elapsed."""
        last = self._last
        if last is None or now > last:
            if last is not None:
                tokens = self._tokens + (now - last) * self._rate
                self._tokens = tokens if tokens < self._burst else self._burst
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def tokens(self, now: float) -> float:
        """The tokens the bucket would hold at `now` (nothing is taken)."""
        if self._last is None or now <= self._last:
            return self._tokens
        return min(self._burst, self._tokens + (now - self._last) * self._rate)
