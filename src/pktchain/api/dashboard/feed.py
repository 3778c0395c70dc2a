"""The dashboard's live stream: one reading of the node a tick, for every page open.

A `Dashboard` is what a node hands the API: `live`, which reads the node's
live state where it lives (the node runs it in its loop's thread, as its
metrics collector does), the node's `EventFeed`, and the tick. `LiveFeed`
serves it to the pages: while at least one page follows the stream, a ticker
task on the server's asyncio loop reads the live state once per tick, in a
worker thread (so the server answers other requests meanwhile), encodes it
once, and wakes every follower; with no follower it does not run, so a node
nobody watches does no work for the dashboard. Nothing here touches the
packet path: the node's counters are read as they are.

Each follower is a server-sent events stream (``text/event-stream``; the
page reads it with ``fetch`` so that the token goes in a header, see
docs/dashboard.md). It receives, in order:

- ``hello``: ``{"node", "interval", "queue"}`` once;
- ``topology``: the chains as `chain_graphs` draws them, first and whenever
  they change;
- ``live``: the live state, each tick (a follower that falls behind gets the
  latest tick, never a backlog of old ones);
- ``event``: each node event (a log event, as ``--log-format json`` writes
  it), the last ones kept first, then as they are logged;
- ``dropped``: ``{"dropped", "total"}`` before the events that follow a
  loss, when the follower's queue of events (``queue`` long) overflowed and
  its oldest events made room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from pktchain.api.dashboard.topology import chain_graphs
from pktchain.logs import EventFeed, EventSubscription
from pktchain.sfc.state import SfcState

__all__ = ["DEFAULT_INTERVAL", "DEFAULT_QUEUE", "Dashboard", "LiveFeed", "sse"]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 1.0
"""Seconds between two readings of the live state."""
DEFAULT_QUEUE = 256
"""Events a follower's queue holds before the oldest make room."""


@dataclass
class Dashboard:
    """What the API serves the dashboard from (a node makes one: `Node.dashboard`)."""

    live: Callable[[], dict[str, Any]]
    """The live state, read where it lives (it may block for a while)."""
    events: EventFeed | None = None
    node: str = ""
    interval: float = DEFAULT_INTERVAL
    queue: int = DEFAULT_QUEUE

    def __post_init__(self) -> None:
        if not 0.05 <= self.interval <= 60:
            raise ValueError(f"dashboard interval {self.interval!r}: expected 0.05 to 60 s")
        if self.queue < 1:
            raise ValueError(f"dashboard queue {self.queue!r}: must be at least 1 event")


def sse(kind: str, data: str) -> str:
    """One server-sent event: its type and its data (JSON text, on one line)."""
    return f"event: {kind}\ndata: {data}\n\n"


class _Follower:
    """One open stream: woken (from any thread) when there is something to send."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready = asyncio.Event()
        self.tick = 0
        self.topology = ""

    def wake(self) -> None:
        # A closed loop (the server stopped) has nobody left to read.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.ready.set)


class LiveFeed:
    """The ticker and the streams of one `Dashboard` (see the module)."""

    def __init__(self, dashboard: Dashboard, state: Callable[[], SfcState]) -> None:
        self.dashboard = dashboard
        self._state = state
        self._followers: set[_Follower] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker_wake: asyncio.Event | None = None
        self._closed = False
        self._tick = 0
        self._live = "{}"
        self._topology = "[]"
        self.readings = 0
        """Times the live state was read (one per tick while anyone follows)."""

    @property
    def followers(self) -> int:
        return len(self._followers)

    def topology(self) -> list[dict[str, Any]]:
        return chain_graphs(self._state())

    async def read(self) -> dict[str, Any]:
        """The live state now, read in a worker thread; ``{"error": ...}`` if it could
        not be read."""
        try:
            live = await run_in_threadpool(self.dashboard.live)
        except TimeoutError:
            return {"error": "the node did not answer in time"}
        except Exception as exc:  # a reading that fails must not end every stream
            log.exception("dashboard: reading the node's live state failed")
            return {"error": f"{type(exc).__name__}: {exc}"}
        self.readings += 1
        return live

    async def stream(self) -> AsyncIterator[str]:
        """One follower's server-sent events, until it goes or the feed closes."""
        loop = asyncio.get_running_loop()
        follower = _Follower(loop)
        events = self.dashboard.events
        subscription: EventSubscription | None = None
        if events is not None:
            subscription = events.subscribe(follower.wake, self.dashboard.queue)
        self._followers.add(follower)
        if self._start_ticker(loop):
            follower.tick = self._tick  # a reading from before is stale: wait for the next
        try:
            hello = {
                "node": self.dashboard.node,
                "interval": self.dashboard.interval,
                "queue": self.dashboard.queue,
            }
            yield sse("hello", json.dumps(hello))
            follower.ready.set()  # the kept events, and the last tick if there is one
            while not self._closed:
                await follower.ready.wait()
                follower.ready.clear()
                if self._closed:
                    break
                if follower.tick != self._tick:
                    follower.tick = self._tick
                    if follower.topology != self._topology:
                        follower.topology = self._topology
                        yield sse("topology", self._topology)
                    yield sse("live", self._live)
                if subscription is not None:
                    lines, dropped = subscription.take()
                    if dropped:
                        lost = {"dropped": dropped, "total": subscription.dropped_total}
                        yield sse("dropped", json.dumps(lost))
                    for line in lines:
                        yield sse("event", json.dumps(line))
        finally:
            self._followers.discard(follower)
            if events is not None and subscription is not None:
                events.unsubscribe(subscription)

    def close(self) -> None:
        """End every stream and the ticker (from any thread): a server that stops does
        not wait for pages that would follow it for ever."""
        self._closed = True
        for follower in list(self._followers):
            follower.wake()
        loop, wake = self._loop, self._ticker_wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the server's loop is closed already
                loop.call_soon_threadsafe(wake.set)

    def _start_ticker(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start the ticker unless it runs; whether it was started."""
        if self._ticker is not None and not self._ticker.done():
            return False
        self._loop = loop
        self._ticker_wake = asyncio.Event()
        self._ticker = loop.create_task(self._run_ticker(self._ticker_wake))
        return True

    async def _run_ticker(self, wake: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        interval = self.dashboard.interval
        while self._followers and not self._closed:
            started = loop.time()
            live = await self.read()
            self._topology = json.dumps(self.topology())
            self._live = json.dumps(live)
            self._tick += 1
            for follower in list(self._followers):
                follower.ready.set()
            pause = max(0.0, interval - (loop.time() - started))
            with contextlib.suppress(TimeoutError):  # the tick's time came: read again
                await asyncio.wait_for(wake.wait(), pause)
