"""Native functions in the node: sans-IO objects plugged in through virtual ports.

A native function (a built-in or a user's :class:`~pktchain.functions.sdk.Function`,
the router among them) gets one `FunctionPort` per interface, each joined to a node
network like any host port. A frame the datapath switches or steers to a
function port is handed to the function at once (`Datapath._through_function`
calls `FunctionHost.handle`), and what the function sends is forwarded by the
datapath at once, as if its port had received it: a packet crosses a whole
chain of native functions within one call. That is what lets the datapath trace
the packet's journey and fuse it into one fast-path entry (see
`pktchain.node.dataplane.fastpath`) when every function on the way forwarded it with a
flow lease. What a function sends outside that call (from a timer, at start)
waits in its port's inbox until `pump` feeds it to the datapath.

Every function, the router included, is driven through `SdkDriver` (the
`FunctionDriver` interface), the node's side of the SDK's own driver
(`pktchain.functions.sdk.Driver`), which maps verdicts to outputs and does the
counting.

The datapath copies a frame once for each function it hands it to, into a
bytearray the function owns (its packet's buffer, rewritten in place); a
packet the function forwards comes back as that bytearray, which the datapath
hands on to the next function without copying it again.

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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from pktchain.functions.sdk import Driver, FlowLease, frames_out
from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.logs import event
from pktchain.node.dataplane.ports import DropReason, PortKind, SwitchPort

if TYPE_CHECKING:
    from pathlib import Path


log = logging.getLogger(__name__)

Outputs = list[tuple[str, bytes]]
"""Frames a function emits: (interface name, frame with its virtio-net header)."""

Answer = list[tuple[str, bytes | bytearray]]
"""Frames a function sends for one frame it was handed: (interface name, frame
with its virtio-net header). A bytearray is the buffer the function was handed,
going on: the datapath's again, to rewrite in place and hand on."""

MAX_ROUNDS = 16
"""How many times one wake-up feeds queued function outputs (timers, emits) back
into the datapath: a bound on frames bouncing between functions."""


class FunctionDriver(Protocol):
    """What the node needs of a native function, whatever its kind."""

    def handle(self, iface: str, frame: bytearray, now: float) -> tuple[Answer, FlowLease | None]:
        """Frames to send for one frame received, and the flow lease it was forwarded with.

        `frame` is the function's from now on (the datapath made it for this
        call and keeps no reference): no need to copy it before rewriting it.
        """
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

    The frame the datapath hands over becomes the packet's buffer as it is
    (`Driver.receive_owned`), and a packet that goes on leaves as that same
    bytearray: the datapath's one copy of a frame is the only one.
    """

    @property
    def flooded(self) -> bool:
        return self.function.FLOODED

    def handle(self, iface: str, frame: bytearray, now: float) -> tuple[Answer, FlowLease | None]:
        out, sent, emit, lease = self.receive_owned(iface, frame, now)
        outputs: Answer = [] if out is None else [(out, sent)]
        if emit:
            outputs.extend(frames_out(emit))
            return outputs, None  # a journey that fans out is not fused
        return outputs, lease

    def on_timer(self, now: float) -> Outputs:
        return frames_out(self.fire(now))

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["verdicts"] = self.verdicts
        status["errors"] = dict(self.errors)
        return status


def _no_wire(frame: object) -> int:
    raise OSError(errno.EOPNOTSUPP, "a function port is written by the datapath's function call")


class FunctionPort(SwitchPort):
    """One interface of a native function, seen by the datapath as a port.

    It has no wire: the datapath hands frames for it to the function itself
    (`Datapath._through_function`), so `send` refuses (a counted transmit
    error, should anything try). `recv` gives what the function sent outside
    a call (its `inbox`, fed by `pump`).
    """

    __slots__ = ("iface", "inbox", "owner")

    def __init__(self, host: FunctionHost, iface: str, mac: str) -> None:
        self.inbox: deque[bytes] = deque()
        self.iface = iface
        super().__init__(
            name=f"{host.name}:{iface}",
            kind=PortKind.FUNCTION,
            fd=-1,
            recv=self._recv,
            send=_no_wire,
            sendv=_no_wire,
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

    def write(self, frame: bytes | bytearray) -> None:
        from pktchain.packet.streams import Frame

        record = self._encoder.encode(Frame(bytes(frame[VNET_HDR_LEN:])), time.time_ns())
        self._file.write(record)
        self._file.flush()
        self.frames += 1

    def close(self) -> None:
        self._file.close()


class FunctionHost:
    """Runs one native function: feeds it, sends what it answers, keeps its timer."""

    def __init__(self, name: str, driver: FunctionDriver, clock: Callable[[], float]) -> None:
        self.name = name
        self.driver = driver
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

    def handle(
        self, port: FunctionPort, frame: bytearray
    ) -> tuple[Answer, FlowLease | None] | None:
        """The function's answer to `frame` arriving on `port`: the frames it
        sends and the flow lease it forwarded with; None if it raised (counted).

        `frame` is handed over: the caller neither reads nor reuses it after.
        """
        try:
            return self.driver.handle(port.iface, frame, self.clock())
        except Exception as exc:  # a faulty function must not stop the node
            self._failed(port, exc)
            return None

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

    def queue(self, outputs: Outputs) -> None:
        """Frames the function sent outside `handle` and `fire` (a control call), to go
        out with the next pump."""
        self._queue(outputs)

    def _queue(self, outputs: Outputs) -> None:
        for iface, frame in outputs:
            port = self.ports.get(iface)
            if port is None:
                self.sink(iface, frame)
                continue
            port.inbox.append(frame)

    def sink(self, iface: str, frame: bytes | bytearray) -> None:
        """A frame the function sent on `iface`, which is not a port: written to
        its pcap file, or counted as sent to an unknown interface."""
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
            log.exception(
                "function %s raised %s",
                self.name,
                kind,
                exc_info=exc,
                extra=event("function_error", function=self.name, exception=kind),
            )
        self.errors[kind] += 1
        if port is not None:
            port.drops[DropReason.FUNCTION_ERROR.value] += 1


class Drains(Protocol):
    """What `pump` feeds: the datapath, which reads a port's queued frames."""

    def drain(self, port: FunctionPort) -> int: ...


def pump(datapath: Drains, hosts: Iterable[FunctionHost]) -> int:
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
