"""Native functions in the node: sans-IO objects plugged in through virtual ports.

A native function (a built-in or a user's :class:`~pktchain.functions.sdk.Function`,
the router among them) gets one `FunctionPort` per interface, each joined to a node
network like any host port. A frame the datapath sends to a function port is
handed to the function at once, and what the function sends is processed by the
datapath at once, as if its port had received it: a packet crosses a whole
chain of native functions within one call. That is what lets the datapath trace
the packet's journey and fuse it into one fast-path entry (see
`pktchain.node.dataplane.fastpath`) when every function on the way forwarded it with a
flow lease.

Every function, the router included, is driven through `SdkDriver` (the
`FunctionDriver` interface), the node's side of the SDK's own driver
(`pktchain.functions.sdk.Driver`), which maps verdicts to outputs and does the
counting.

A function that raises does not take the node down: the SDK's driver counts the
lost frame as a `function-error` drop of the function and the exception by its
name, and logs the first of each kind; an exception out of any other driver is
counted here the same way (`function-error` on the port).
"""

from __future__ import annotations

import errno
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pktchain.functions.sdk import Driver, FlowLease, frames_out
from pktchain.node.dataplane.ports import Port, PortKind
from pktchain.node.tun import VNET_HDR_LEN
from pktchain.packet.address import Buffer

if TYPE_CHECKING:
    from pathlib import Path

    from pktchain.node.dataplane.datapath import Datapath

log = logging.getLogger(__name__)

Outputs = list[tuple[str, bytes]]
"""Frames a function emits: (interface name, frame with its virtio-net header)."""

MAX_ROUNDS = 16
"""How many times one wake-up feeds queued function outputs (timers, emits) back
into the datapath: a bound on frames bouncing between functions."""


class FunctionDriver(Protocol):
    """What the node needs of a native function, whatever its kind."""

    def handle(self, iface: str, frame: bytes, now: float) -> tuple[Outputs, FlowLease | None]:
        """Frames to send for one frame received, and the flow lease it was forwarded with."""
        ...

    def next_deadline(self) -> float | None: ...

    def on_timer(self, now: float) -> Outputs: ...

    def status(self) -> dict[str, Any]: ...

    @property
    def flooded(self) -> bool:
        """Whether broadcast and unknown-unicast frames reach the function's ports."""
        ...


class SdkDriver(Driver):
    """Drives a :class:`~pktchain.functions.sdk.Function` through the SDK's one driver.

    What leaves and what is counted is :class:`~pktchain.functions.sdk.Driver`'s;
    this puts its outputs in the node's form (every frame with its virtio-net
    header) and hands the datapath the flow lease only when the packet goes on
    alone: a journey that fans out cannot be fused.
    """

    @property
    def flooded(self) -> bool:
        return self.function.FLOODED

    def handle(self, iface: str, frame: bytes, now: float) -> tuple[Outputs, FlowLease | None]:
        out, sent, emit, lease = self.receive(iface, frame, now)
        outputs = frames_out(emit) if emit else []
        if out is None:
            return outputs, None
        outputs.insert(0, (out, bytes(sent)))
        return outputs, (lease if len(outputs) == 1 else None)

    def on_timer(self, now: float) -> Outputs:
        return frames_out(self.fire(now))

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["verdicts"] = self.verdicts
        status["errors"] = dict(self.errors)
        return status


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


class PcapSink:
    """A function interface that is a pcap file rather than a port (e.g. a mirror's copies).

    Frames are written as they come (virtio-net header left out), each record
    flushed so that ``tcpdump -r`` sees it at once.
    """

    def __init__(self, path: Path) -> None:
        from pktchain.packet.streams import PcapEncoder, TimePrecision

        self.path = path
        self._encoder = PcapEncoder(precision=TimePrecision.NANO)
        self._file = path.open("wb")
        self._file.write(self._encoder.header())
        self._file.flush()
        self.frames = 0

    def write(self, frame: bytes) -> None:
        from pktchain.packet.streams import Frame

        record = self._encoder.encode(Frame(frame[VNET_HDR_LEN:]), time.time_ns())
        self._file.write(record)
        self._file.flush()
        self.frames += 1

    def close(self) -> None:
        self._file.close()


class FunctionHost:
    """Runs one native function: feeds it, sends what it answers, keeps its timer."""

    def __init__(
        self, name: str, driver: FunctionDriver, datapath: Datapath, clock: Callable[[], float]
    ) -> None:
        self.name = name
        self.driver = driver
        self.datapath = datapath
        self.clock = clock
        self.ports: dict[str, FunctionPort] = {}
        self.sinks: dict[str, PcapSink] = {}
        """Interfaces written to pcap files instead of joining a network."""
        self.errors: Counter[str] = Counter()

    def add_port(self, iface: str, mac: str) -> FunctionPort:
        port = FunctionPort(self, iface, mac)
        port.flooded = self.driver.flooded
        self.ports[iface] = port
        return port

    def deliver(self, port: FunctionPort, frame: bytes) -> None:
        """A frame the datapath sent to `port`: the function's turn, then its outputs'."""
        datapath = self.datapath
        datapath.delivered += 1
        trace = datapath.trace
        try:
            outputs, lease = self.driver.handle(port.iface, frame, self.clock())
        except Exception as exc:  # a faulty function must not stop the node
            self._failed(port, exc)
            if trace is not None:
                trace.broken = "function-error"
            return
        if trace is not None:
            if lease is not None and lease.valid and len(outputs) == 1:
                trace.add_lease(lease)
            else:
                trace.broken = "function-not-cached" if len(outputs) == 1 else "function-fanout"
        for iface, out in outputs:
            out_port = self.ports.get(iface)
            if out_port is None:
                self._sink(iface, out)
                continue
            datapath.inject(out_port, out)

    def fire(self, now: float) -> None:
        try:
            outputs = self.driver.on_timer(now)
        except Exception as exc:  # a faulty function must not stop the node
            self._failed(None, exc)
            return
        self._queue(outputs)

    def next_deadline(self) -> float | None:
        try:
            return self.driver.next_deadline()
        except Exception as exc:  # a faulty function must not stop the node
            self._failed(None, exc)
            return None

    def pending(self) -> list[FunctionPort]:
        return [port for port in self.ports.values() if port.inbox]

    def queue(self, outputs: Outputs) -> None:
        """Frames the function emits outside `handle`/`on_timer` (e.g. at start)."""
        self._queue(outputs)

    def status(self) -> dict[str, Any]:
        try:
            status = self.driver.status()
        except Exception as exc:  # a faulty function must not stop the node
            self._failed(None, exc)
            status = {}
        errors = self.errors + Counter(status.pop("errors", {}))  # the driver's, and the host's
        return {
            "name": self.name,
            "ports": {iface: port.name for iface, port in self.ports.items()},
            "pcap": {
                iface: {"path": str(s.path), "frames": s.frames} for iface, s in self.sinks.items()
            },
            "errors": dict(errors),
            **status,
        }

    def _queue(self, outputs: Outputs) -> None:
        for iface, frame in outputs:
            port = self.ports.get(iface)
            if port is None:
                self._sink(iface, frame)
                continue
            port.inbox.append(frame)

    def _sink(self, iface: str, frame: bytes) -> None:
        sink = self.sinks.get(iface)
        if sink is None:
            self.errors["unknown-interface"] += 1
            return
        try:
            sink.write(frame)
        except OSError as exc:
            self.errors["pcap-" + (errno.errorcode.get(exc.errno or 0, "error")).lower()] += 1

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()

    def _failed(self, port: FunctionPort | None, exc: Exception) -> None:
        kind = type(exc).__name__
        if not self.errors[kind]:
            log.exception("function %s raised %s", self.name, kind, exc_info=exc)
        self.errors[kind] += 1
        if port is not None:
            port.drops["function-error"] += 1


def pump(datapath: Datapath, hosts: Iterable[FunctionHost]) -> int:
    """Feed what functions queued (timers, emits) into the datapath; returns frames fed.

    At most `MAX_ROUNDS` rounds: a function's output may reach another function
    (or itself), whose queued output is fed in the next round.
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
