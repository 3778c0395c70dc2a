"""The event loop of pktchain's processes: epoll over descriptors, timers and signals.

One loop per process: the node runs its ports, control socket and messenger
on it, the tunnel its ends. It is deliberately small (asyncio's per-callback
machinery costs more than a packet does): readers are plain callbacks run
when their descriptor is readable, writers when it is writable (a TCP stream
that took part of a write), timers live in a heap, and signals arrive through
`signal.set_wakeup_fd` so that a SIGTERM wakes a sleeping `epoll.poll`. `now`
is read once per wake-up and shared by everything that runs in it.

Everything the loop owns is touched only from the loop's thread: callers
register descriptors and timers from that thread, or before the loop runs.
Another thread (the REST API's) hands work in with `submit(fn)`, which runs
`fn` in the loop and waits for its result. `LoopThread` runs a loop in a
thread of its own, for a server used outside such a process (a test, a tool).

It sits at the bottom of the layers, beside `pktchain.errors`, because the
node, the tunnel and the messenger all run on it; it uses the standard
library only.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

_OUT = select.EPOLLOUT


@dataclass(order=True)
class Timer:
    deadline: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    interval: float | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Callable[[], None]] = {}
        self._writers: dict[int, Callable[[], None]] = {}
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self._signal_handlers: dict[int, Callable[[int], None]] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._running = False
        self.now = time.monotonic()
        # Work handed in by other threads, and the socket pair that wakes the
        # loop for it (apart from the signals' one, whose bytes are signal numbers).
        self._calls: deque[Callable[[], None]] = deque()
        self._call_r, self._call_w = socket.socketpair()
        self._call_r.setblocking(False)
        self._call_w.setblocking(False)
        self.add_reader(self._call_r.fileno(), self._run_calls)
        self._thread: int | None = None

    # -- descriptors ---------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.set_reader(fd, callback)

    def remove_reader(self, fd: int) -> None:
        self.set_reader(fd, None)

    def set_reader(self, fd: int, callback: Callable[[], None] | None) -> None:
        """Call `callback` whenever `fd` is readable (None: stop)."""
        self._watch(fd, self._readers, callback)

    def set_writer(self, fd: int, callback: Callable[[], None] | None) -> None:
        """Call `callback` whenever `fd` is writable (None: stop)."""
        self._watch(fd, self._writers, callback)

    def forget(self, fd: int) -> None:
        """Stop watching `fd` at all; call before closing it."""
        self.set_reader(fd, None)
        self.set_writer(fd, None)

    def _watch(
        self, fd: int, table: dict[int, Callable[[], None]], callback: Callable[[], None] | None
    ) -> None:
        was = self._interest(fd)
        if callback is None:
            table.pop(fd, None)
        else:
            table[fd] = callback
        now = self._interest(fd)
        if now == was:
            return
        if not was:
            self._epoll.register(fd, now)
        elif not now:
            self._epoll.unregister(fd)
        else:
            self._epoll.modify(fd, now)

    def _interest(self, fd: int) -> int:
        return (select.EPOLLIN if fd in self._readers else 0) | (
            select.EPOLLOUT if fd in self._writers else 0
        )

    # -- timers --------------------------------------------------------------
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def call_every(self, interval: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + interval, next(self._seq), callback, interval)
        heapq.heappush(self._timers, timer)
        return timer

    # -- other threads -------------------------------------------------------
    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        self._calls.append(callback)
        with contextlib.suppress(BlockingIOError):  # full: the loop is already woken
            self._call_w.send(b"\0")

    def run_or_post(self, fn: Callable[[], None]) -> None:
        """Run `fn` now if this is the loop's thread (or the loop has not
        started), else have the loop run it soon."""
        if self._thread is None or self._thread == threading.get_ident():
            fn()
        else:
            self.call_soon_threadsafe(fn)

    def submit(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run `fn` in the loop's thread; return its result or raise its exception.

        Called before the loop runs, the work waits for it to start.
        """
        if self._thread == threading.get_ident():
            return fn()
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed back to the calling thread
                future.set_exception(exc)

        self.call_soon_threadsafe(run)
        return future.result(timeout)

    def _run_calls(self) -> None:
        try:
            while self._call_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._calls:
            self._calls.popleft()()

    # -- signals -------------------------------------------------------------
    def add_signal_handler(self, signum: int, callback: Callable[[int], None]) -> None:
        if not self._signal_handlers:
            signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
            self.add_reader(self._wake_r.fileno(), self._dispatch_signals)
        self._signal_handlers[signum] = callback
        # The Python-level handler only needs to exist; the byte written to the
        # wake-up fd is what the loop acts on.
        signal.signal(signum, lambda _s, _f: None)

    def _dispatch_signals(self) -> None:
        try:
            data = self._wake_r.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            handler = self._signal_handlers.get(signum)
            if handler is not None:
                handler(signum)

    # -- running -------------------------------------------------------------
    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        self._running = True
        self._thread = threading.get_ident()
        poll = self._epoll.poll
        readers = self._readers
        writers = self._writers
        timers = self._timers
        monotonic = time.monotonic
        while self._running:
            timeout = -1.0
            if timers:
                timeout = max(0.0, timers[0].deadline - monotonic())
            events = poll(timeout)
            self.now = monotonic()
            for fd, mask in events:
                # A callback may have stopped watching (or closed) this fd or
                # another one: look each one up again before calling it.
                if mask != _OUT:  # readable, or an error/hang-up the reader must see
                    callback = readers.get(fd)
                    if callback is not None:
                        callback()
                if mask & _OUT:
                    callback = writers.get(fd)
                    if callback is not None:
                        callback()
            if timers and timers[0].deadline <= self.now:
                self._run_timers()

    def _run_timers(self) -> None:
        now = self.now
        while self._timers and self._timers[0].deadline <= now:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            timer.callback()
            if timer.interval is not None and not timer.cancelled:
                timer.deadline = now + timer.interval
                timer.seq = next(self._seq)
                heapq.heappush(self._timers, timer)

    def close(self) -> None:
        if self._signal_handlers:
            signal.set_wakeup_fd(-1)
            for signum in self._signal_handlers:
                signal.signal(signum, signal.SIG_DFL)
        self._epoll.close()
        for sock in (self._wake_r, self._wake_w, self._call_r, self._call_w):
            sock.close()


class LoopThread:
    """An `EventLoop` run by a daemon thread of its own, for a server outside a node.

    Register descriptors and timers with `loop` before `start()`, and through
    `loop.submit` afterwards. `stop()` stops the loop, waits for the thread and
    closes the loop's descriptors.
    """

    def __init__(self, name: str) -> None:
        self.loop = EventLoop()
        self._thread = threading.Thread(target=self.loop.run, name=name, daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name}: the loop did not stop")
        self.loop.close()

    def __enter__(self) -> LoopThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
