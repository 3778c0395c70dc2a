"""Native functions in the node: sans-IO objects plugged in through virtual ports.

A native function (a built-in, a user's :class:`~pktchain.functions.sdk.Function`,
or the router) gets one `FunctionPort` per interface, each joined to a node
network like any host port. A frame the datapath switches or steers to a
function port is handed to the function at once (`Datapath._through_function`
calls `FunctionHost.handle`), and what the function sends is forwarded by the
datapath at once, as if its port had received it: a packet crosses a whole
chain of native functions within one call. That is what lets the datapath trace
the packet's journey and fuse it into one fast-path entry (see
`pktchain.node.dataplane.fastpath`) when every function on the way forwarded it with a
flow lease. What a function sends outside that call (from a timer, at start)
waits in its port's inbox until `pump` feeds it to the datapath.

Each kind of function is driven through a small adapter with one interface
(`FunctionDriver`): `SdkDriver` for SDK functions, `RouterDriver` for the
router, whose cache hints become flow leases.

A function that raises does not take the node down: the exception is counted
(`function-error` on the port) and logged once per kind, and the frame is lost.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from pktchain.functions.sdk import FlowLease, Function, Packet, Verdict, frames_out
from pktchain.node.dataplane.ports import DropReason, Port, PortKind
from pktchain.node.tun import VNET_HDR_LEN

if TYPE_CHECKING:
    from pathlib import Path

    from pktchain.functions.nat.table import Session
    from pktchain.functions.router.function import CacheHint, FlowTuple, Router
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


class SdkDriver:
    """Drives a :class:`~pktchain.functions.sdk.Function`."""

    def __init__(self, function: Function) -> None:
        self.function = function
        self.verdicts: Counter[str] = Counter()

    @property
    def flooded(self) -> bool:
        return self.function.FLOODED

    def handle(self, iface: str, frame: bytes, now: float) -> tuple[Outputs, FlowLease | None]:
        function = self.function
        packet = Packet(bytearray(frame), iface)
        result = function.process(packet, now)
        verdict = result.verdict
        self.verdicts[verdict.value] += 1
        outputs = frames_out(result.emit)
        if verdict is Verdict.FORWARD:
            out = result.iface or function.peer(iface)
            outputs.insert(0, (out, bytes(packet.buf)))
            return outputs, (result.lease if len(outputs) == 1 else None)
        if verdict is Verdict.PUNT:
            outputs.insert(0, (function.peer(iface), frame))
        return outputs, None

    def next_deadline(self) -> float | None:
        return self.function.next_deadline()

    def on_timer(self, now: float) -> Outputs:
        return frames_out(self.function.on_timer(now))

    def status(self) -> dict[str, Any]:
        status = self.function.status()
        status["verdicts"] = dict(self.verdicts)
        return status


ROUTED_IDLE_TIMEOUT = 300.0
"""Seconds after which the lease of an idle routed flow without NAT is forgotten
(a NAT flow ends with its session)."""


class RouterDriver:
    """Drives the router; its per-flow cache hints become flow leases.

    The node's fast path counts cached packets on the lease; before the router's
    timers run, the leases' last-seen times are handed to the router
    (:meth:`Router.touch`) so that NAT sessions carried by the fast path do not
    expire, and a lease whose hint the router no longer honours (its session
    ended, a neighbour or interface changed) is revoked.
    """

    def __init__(self, router: Router, idle_timeout: float = ROUTED_IDLE_TIMEOUT) -> None:
        self.router = router
        self.idle_timeout = idle_timeout
        # (in interface, flow) -> (hint, lease, [last seen]).
        self._leases: dict[tuple[str, FlowTuple], tuple[CacheHint, FlowLease, list[float]]] = {}
        self._generation = router.generation

    flooded = True
    """The router answers ARP: it must see broadcasts."""

    def handle(self, iface: str, frame: bytes, now: float) -> tuple[Outputs, FlowLease | None]:
        router = self.router
        result = router.process(iface, frame, now)
        if router.generation != self._generation:
            self.prune()
        hint = result.hint
        if hint is None or len(result.frames) != 1:
            return result.frames, None
        return result.frames, self._lease(hint, now)

    def _lease(self, hint: CacheHint, now: float) -> FlowLease | None:
        """The lease for a hinted flow.

        A NAT flow gets it with its second packet: the first leaves a mark in
        the NAT session's own slot, so a one-packet session (a DNS query) costs
        no lease and no index entry, and the lease made on the second packet is
        handed over already traced (the node's own second-packet rule, see
        fastpath.py, is then met). A routed flow without NAT gets its lease at
        once and the node's rule applies.
        """
        key = (hint.in_iface, hint.flow)
        known = self._leases.get(key)
        if known is not None and known[1].valid:
            if known[0] == hint:
                known[2][0] = now
                return known[1]
            known[1].revoke()  # the hint changed: a fresh lease for the same flow
        session = hint.session
        lease = FlowLease(mtu=hint.mtu)
        if session is not None:
            mark = session.cache_out if hint.outbound else session.cache_in
            if mark is None and known is None:
                _keep(session, hint.outbound, True)
                return None
            lease.traced = True
            _keep(session, hint.outbound, lease)
        self._leases[key] = (hint, lease, [now])
        return lease

    def next_deadline(self) -> float | None:
        return self.router.next_deadline()

    def on_timer(self, now: float) -> Outputs:
        self.sync(now)
        outputs = self.router.on_timer(now)
        self.prune()
        return outputs

    def sync(self, now: float) -> None:
        """Tell the router when the fast path last carried each cached flow.

        A NAT session so touched stays alive; a routed flow without one idle
        for `idle_timeout` is forgotten (nothing else would end it).
        """
        router = self.router
        idle: list[tuple[str, FlowTuple]] = []
        for key, (hint, lease, seen) in self._leases.items():
            if not lease.valid:
                continue
            if lease.seen > seen[0]:
                seen[0] = lease.seen
                if not router.touch(hint, lease.seen):
                    lease.revoke()
                    continue
            if hint.session is None and seen[0] < now - self.idle_timeout:
                idle.append(key)
        for key in idle:
            self._leases.pop(key)[1].revoke()

    def prune(self) -> None:
        """Revoke and forget the leases the router no longer honours."""
        router = self.router
        self._generation = router.generation
        gone = [
            key
            for key, (hint, lease, _seen) in self._leases.items()
            if not lease.valid or not router.hint_valid(hint)
        ]
        for key in gone:
            self._leases.pop(key)[1].revoke()

    def status(self) -> dict[str, Any]:
        return {"kind": "router", "counters": self.router.counters(), "leases": len(self._leases)}


def _keep(session: Session, outbound: bool, value: object) -> None:
    if outbound:
        session.cache_out = value
    else:
        session.cache_in = value


def _no_wire(frame: object) -> int:
    raise OSError(errno.EOPNOTSUPP, "a function port is written by the datapath's function call")


class FunctionPort(Port):
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
        from pktchain.pipe.formats import PcapEncoder, TimePrecision

        self.path = path
        self._encoder = PcapEncoder(precision=TimePrecision.NANO)
        self._file = path.open("wb")
        self._file.write(self._encoder.header())
        self._file.flush()
        self.frames = 0

    def write(self, frame: bytes) -> None:
        from pktchain.pipe.formats import Frame

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

    def handle(self, port: FunctionPort, frame: bytes) -> tuple[Outputs, FlowLease | None] | None:
        """The function's answer to `frame` arriving on `port`: the frames it
        sends and the flow lease it forwarded with; None if it raised (counted)."""
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

    def queue(self, outputs: Outputs) -> None:
        """Frames the function emits outside `handle`/`on_timer` (e.g. at start)."""
        self._queue(outputs)

    def status(self) -> dict[str, Any]:
        try:
            status = self.driver.status()
        except Exception as exc:  # a faulty function must not stop the node
            self._failed(None, exc)
            status = {}
        return {
            "name": self.name,
            "ports": {iface: port.name for iface, port in self.ports.items()},
            "pcap": {
                iface: {"path": str(s.path), "frames": s.frames} for iface, s in self.sinks.items()
            },
            "errors": dict(self.errors),
            **status,
        }

    def _queue(self, outputs: Outputs) -> None:
        for iface, frame in outputs:
            port = self.ports.get(iface)
            if port is None:
                self.sink(iface, frame)
                continue
            port.inbox.append(frame)

    def sink(self, iface: str, frame: bytes) -> None:
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
            log.exception("function %s raised %s", self.name, kind, exc_info=exc)
        self.errors[kind] += 1
        if port is not None:
            port.drops[DropReason.FUNCTION_ERROR.value] += 1


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
