"""Keeping a copy of a key prefix current: list at a revision, watch from the next.

`PrefixWatch` runs one thread that lists the prefix (`on_reset` gets the keys
and the revision they were read at), then watches it from the next revision
(`on_events` gets each revision's events, in order: a transaction's events
arrive together, never split). When etcd has compacted the history the
watch would start from, the thread lists again and hands on the new list;
when the connection breaks, it opens the watch again from the revision after
the last one it handed on, retrying with a growing pause while etcd cannot
be reached (`on_connection` hears of each change between reachable and not).
So what the callbacks are told, taken in order, is every change of the
prefix, or a fresh list where the history is gone.

The callbacks do not run on the watch thread: each is handed to `post`, such
as `EventLoop.call_soon_threadsafe`, so that they run where the copy lives
(the node's loop thread). Without a `post` they run on the watch thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from functools import partial
from itertools import groupby

from pktchain.etcd.client import (
    DEFAULT_WATCH_TIMEOUT,
    EtcdClient,
    EtcdError,
    EtcdUnreachableError,
    Event,
    Range,
    WatchStream,
)
from pktchain.etcd.keys import prefix_end

__all__ = ["Post", "PrefixWatch"]

log = logging.getLogger(__name__)

Post = Callable[[Callable[[], None]], None]
"""Runs a callback where it belongs (`EventLoop.call_soon_threadsafe`)."""

RETRY_MIN = 0.1
RETRY_MAX = 2.0
"""Seconds between attempts to reach etcd: doubling from the first to the second."""


def _direct(callback: Callable[[], None]) -> None:
    callback()


class PrefixWatch:
    """Lists and watches every key under `prefix`, from a thread of its own.

    A caller that listed the prefix itself gives the revision it listed at
    (`listed_at`): the watch then starts at the next one and `on_reset` is
    first called only when a new list is needed.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: bytes,
        *,
        on_reset: Callable[[Range], None],
        on_events: Callable[[int, tuple[Event, ...]], None],
        on_connection: Callable[[bool], None] | None = None,
        post: Post | None = None,
        listed_at: int | None = None,
        timeout: float = DEFAULT_WATCH_TIMEOUT,
        name: str = "etcd-watch",
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._on_reset = on_reset
        self._on_events = on_events
        self._on_connection = on_connection
        self._post = post or _direct
        self._next = listed_at + 1 if listed_at is not None else 0
        self._timeout = timeout
        self._stopping = threading.Event()
        self._stream_lock = threading.Lock()
        self._stream: WatchStream | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.connected = True
        """Whether the last attempt to reach etcd succeeded (as last handed on)."""
        self.relists = 0
        """How many times the prefix was listed again after a compaction."""

    @property
    def revision(self) -> int:
        """The last revision handed on (listed, or seen in an event)."""
        return self._next - 1

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the watch and wait for its thread; callbacks already posted still run."""
        self._stopping.set()
        with self._stream_lock:
            stream = self._stream
        if stream is not None:
            stream.interrupt()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        pause = RETRY_MIN
        end = prefix_end(self.prefix)
        where = self.prefix.decode(errors="replace")
        while not self._stopping.is_set():
            try:
                if self._next == 0:
                    listed = self.client.range(self.prefix, end)
                    self._hand_on(partial(self._on_reset, listed))
                    self._next = listed.revision + 1
                self._follow(end)
                pause = RETRY_MIN
                continue  # a new list is needed, or the stream stayed quiet: go on at once
            except EtcdUnreachableError as exc:
                if self._stopping.is_set():
                    break
                if self.connected:
                    log.warning("watch of %s: %s; retrying", where, exc)
                self._connection(False)
            except EtcdError as exc:
                if self._stopping.is_set():
                    break
                log.warning("watch of %s: %s; retrying", where, exc)
            self._stopping.wait(pause)
            pause = min(pause * 2, RETRY_MAX)

    def _follow(self, end: bytes) -> None:
        """Hand on the watch's events until it breaks (EtcdError), stays quiet for
        the timeout, or needs a new list (then `_next` is 0)."""
        stream = self.client.watch(
            self.prefix, end, start_revision=self._next, timeout=self._timeout
        )
        with self._stream_lock:
            self._stream = stream
        try:
            if self._stopping.is_set():
                return
            self._connection(True)
            for response in stream:
                if response.compact_revision:
                    # The history from self._next is gone: list again.
                    log.info(
                        "watch of %s: revision %d was compacted (up to %d); listing again",
                        self.prefix.decode(errors="replace"),
                        self._next,
                        response.compact_revision,
                    )
                    self.relists += 1
                    self._next = 0
                    return
                if response.canceled:
                    reason = response.cancel_reason or "canceled by etcd"
                    raise EtcdError(f"watch canceled: {reason}", (stream.endpoint,))
                for revision, events in _by_revision(response.events):
                    self._hand_on(partial(self._on_events, revision, events))
                    self._next = revision + 1
        finally:
            with self._stream_lock:
                self._stream = None
            stream.close()
        if not stream.timed_out and not self._stopping.is_set():
            raise EtcdUnreachableError((stream.endpoint,), ["watch stream closed by etcd"])

    def _hand_on(self, callback: Callable[[], None]) -> None:
        if not self._stopping.is_set():
            self._post(callback)

    def _connection(self, up: bool) -> None:
        if up == self.connected:
            return
        self.connected = up
        if up:
            log.info("watch of %s: etcd reachable again", self.prefix.decode(errors="replace"))
        callback = self._on_connection
        if callback is not None:
            self._hand_on(lambda: callback(up))


def _by_revision(events: Iterable[Event]) -> Iterable[tuple[int, tuple[Event, ...]]]:
    """The events of one response, a tuple per revision (a response may hold several)."""
    for revision, group in groupby(events, key=lambda event: event.revision):
        yield revision, tuple(group)
