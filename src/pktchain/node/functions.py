"""Native functions in the node: sans-IO objects plugged in through virtual ports.

A native function (the router, later any built-in or user function) speaks the
sans-IO contract of DESIGN.md: frames and `now` in, frames out, timers as
`next_deadline()` / `on_timer(now)`, no sockets, no clocks.  The node gives it
one `FunctionPort` per interface, each joined to a node network like any host
port: a frame the datapath sends to a function port is handed to the function
at once; what the function returns is queued on the named ports and read back
by the datapath as if those ports had received it, after the current batch.

A function that raises does not take the node down: the exception is counted
(`function-error` on the port) and logged once per kind, and the frame is lost.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from pktchain.node.ports import Port, PortKind
from pktchain.packet.address import Buffer

if TYPE_CHECKING:
    from pktchain.node.datapath import Datapath

log = logging.getLogger(__name__)

Outputs = list[tuple[str, bytes]]
"""Frames a function emits: (interface name, frame with its virtio-net header)."""

MAX_ROUNDS = 16
"""How many times one wake-up feeds function outputs back into the datapath:
a bound on frames bouncing between functions."""


class PortFunction(Protocol):
    """What the node needs of a native function."""

    def receive(self, iface: str, frame: bytes, now: float) -> Outputs: ...

    def next_deadline(self) -> float | None: ...

    def on_timer(self, now: float) -> Outputs: ...


class FunctionPort(Port):
    """One interface of a native function, seen by the datapath as a port."""

    __slots__ = ("iface", "inbox", "owner")

    def __init__(self, host: FunctionHost, iface: str, mac: str) -> None:
        self.inbox: deque[bytes] = deque()
        self.iface = iface
        super().__init__(
            name=f"{host.name}:{iface}",
            kind=PortKind.FUNCTION,
            fd=-1,
            recv=self._recv,
            send=self._send,
            sendv=self._sendv,
            netns=None,
            ifname=iface,
            host=host.name,
            mac=mac,
        )
        self.owner = host

    def _recv(self) -> bytes:
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.popleft()

    def _send(self, frame: Buffer) -> int:
        self.owner.deliver(self, bytes(frame))
        return len(frame)

    def _sendv(self, parts: Sequence[Buffer]) -> int:
        frame = b"".join(parts)
        self.owner.deliver(self, frame)
        return len(frame)

    def close(self) -> None:
        self.inbox.clear()


class FunctionHost:
    """Runs one native function: feeds it, queues its outputs, keeps its timer."""

    def __init__(self, name: str, function: PortFunction, clock: Callable[[], float]) -> None:
        self.name = name
        self.function = function
        self.clock = clock
        self.ports: dict[str, FunctionPort] = {}
        self.errors: Counter[str] = Counter()

    def add_port(self, iface: str, mac: str) -> FunctionPort:
        port = FunctionPort(self, iface, mac)
        self.ports[iface] = port
        return port

    def deliver(self, port: FunctionPort, frame: bytes) -> None:
        """A frame the datapath sent to `port`: the function's turn."""
        try:
            outputs = self.function.receive(port.iface, frame, self.clock())
        except Exception as exc:  # a faulty function must not stop the node
            self._failed(port, exc)
            return
        self._queue(outputs)

    def fire(self, now: float) -> None:
        try:
            outputs = self.function.on_timer(now)
        except Exception as exc:  # a faulty function must not stop the node
            self._failed(None, exc)
            return
        self._queue(outputs)

    def next_deadline(self) -> float | None:
        try:
            return self.function.next_deadline()
        except Exception as exc:  # a faulty function must not stop the node
            self._failed(None, exc)
            return None

    def pending(self) -> list[FunctionPort]:
        return [port for port in self.ports.values() if port.inbox]

    def queue(self, outputs: Outputs) -> None:
        """Frames the function emits outside `receive`/`on_timer` (e.g. at start)."""
        self._queue(outputs)

    def _queue(self, outputs: Outputs) -> None:
        for iface, frame in outputs:
            port = self.ports.get(iface)
            if port is None:
                self.errors["unknown-interface"] += 1
                continue
            port.inbox.append(frame)

    def _failed(self, port: FunctionPort | None, exc: Exception) -> None:
        kind = type(exc).__name__
        if not self.errors[kind]:
            log.exception("function %s raised %s", self.name, kind, exc_info=exc)
        self.errors[kind] += 1
        if port is not None:
            port.drops["function-error"] += 1


def pump(datapath: Datapath, hosts: Iterable[FunctionHost]) -> int:
    """Feed what functions emitted back into the datapath; returns frames fed.

    At most `MAX_ROUNDS` rounds: a function's output may reach another function
    (or itself), whose output is fed in the next round.
    """
    hosts = tuple(hosts)
    fed = 0
    for _round in range(MAX_ROUNDS):
        pending = [port for host in hosts for port in host.pending()]
        if not pending:
            break
        for port in pending:
            fed += datapath.drain(port)
    return fed
