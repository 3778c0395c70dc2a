"""The tunnel's event loop: readers and writers over `selectors`, timers, signals.

A tunnel process is one loop and no threads. The node has a loop of its own
(`pktchain.node.loop`), but it only waits for descriptors to be readable: its
ports are TAP devices and datagram sockets, where a write goes through whole
or fails. A tunnel's TCP stream may take part of a write, and the rest must
wait until the socket is writable again; this loop adds writers, and leaves
out what the tunnel does not need (work handed in from other threads).

Signals arrive through `signal.set_wakeup_fd`, so that a SIGTERM wakes a
sleeping `select` at once; their handlers then run in the loop like any
callback. `now` is read once per wake-up.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Loop", "Timer"]

Callback = Callable[[], None]


@dataclass(order=True)
class Timer:
    deadline: float
    seq: int
    callback: Callback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        # fd → [reader, writer]; the selector's interest follows which are set.
        self._callbacks: dict[int, list[Callback | None]] = {}
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self._signal_handlers: dict[int, Callable[[int], None]] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._running = False
        self.now = time.monotonic()

    # -- descriptors ---------------------------------------------------------
    def set_reader(self, fd: int, callback: Callback | None) -> None:
        """Call `callback` whenever `fd` is readable (None: stop)."""
        self._watch(fd, 0, callback)

    def set_writer(self, fd: int, callback: Callback | None) -> None:
        """Call `callback` whenever `fd` is writable (None: stop)."""
        self._watch(fd, 1, callback)

    def forget(self, fd: int) -> None:
        """Stop watching `fd` at all; call before closing it."""
        callbacks = self._callbacks.pop(fd, None)
        if callbacks is not None:
            # Events already selected for this fd must not reach its old callbacks.
            callbacks[0] = callbacks[1] = None
            self._selector.unregister(fd)

    def _watch(self, fd: int, slot: int, callback: Callback | None) -> None:
        callbacks = self._callbacks.get(fd)
        was = 0 if callbacks is None else _events(callbacks)
        if callbacks is None:
            callbacks = self._callbacks[fd] = [None, None]
        callbacks[slot] = callback
        now = _events(callbacks)
        if now == was:
            return
        if not was:
            self._selector.register(fd, now, callbacks)
        elif not now:
            del self._callbacks[fd]
            self._selector.unregister(fd)
        else:
            self._selector.modify(fd, now, callbacks)

    # -- timers --------------------------------------------------------------
    def call_later(self, delay: float, callback: Callback) -> Timer:
        timer = Timer(time.monotonic() + delay, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    # -- signals -------------------------------------------------------------
    def add_signal_handler(self, signum: int, callback: Callable[[int], None]) -> None:
        if not self._signal_handlers:
            signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
            self.set_reader(self._wake_r.fileno(), self._dispatch_signals)
        self._signal_handlers[signum] = callback
        # The Python-level handler only has to exist; the byte written to the
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
        select = self._selector.select
        timers = self._timers
        monotonic = time.monotonic
        while self._running:
            timeout = None
            if timers:
                timeout = max(0.0, timers[0].deadline - monotonic())
            events = select(timeout)
            self.now = monotonic()
            for key, mask in events:
                callbacks: list[Callback | None] = key.data
                # A callback may have stopped watching (or closed) this fd or
                # another one: look again before each call.
                if mask & selectors.EVENT_READ and (reader := callbacks[0]) is not None:
                    reader()
                if mask & selectors.EVENT_WRITE and (writer := callbacks[1]) is not None:
                    writer()
            while timers and timers[0].deadline <= self.now:
                timer = heapq.heappop(timers)
                if not timer.cancelled:
                    timer.callback()

    def close(self) -> None:
        if self._signal_handlers:
            signal.set_wakeup_fd(-1)
            for signum in self._signal_handlers:
                signal.signal(signum, signal.SIG_DFL)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


def _events(callbacks: list[Callback | None]) -> int:
    return (selectors.EVENT_READ if callbacks[0] is not None else 0) | (
        selectors.EVENT_WRITE if callbacks[1] is not None else 0
    )
