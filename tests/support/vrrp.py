"""VRRP instances wired to each other in memory, with a fake clock: a link without a network.

Holds no tests. A :class:`Link` joins :class:`~pktchain.functions.router.vrrp.VrrpInstance`
objects as if they shared one Ethernet segment: every advertisement one of them
sends is handed at once to the others (multicast), or to the one whose source
address is its ``next_hop`` (unicast), as the IPv4 packet inside the frame.
The clock moves only through :meth:`Link.run_until`, from one timer deadline
(or delivery) to the next, so every run is exact and instant. With a ``delay``
an advertisement reaches the others that many seconds after it was sent, so
that two routers can both become master before hearing each other. A router
can die (it neither sends nor hears nor fires timers) and come back.

:class:`SocketRouter` runs an instance on a real packet socket instead, with
the real clock, to talk to other VRRP implementations (keepalived).
"""

from __future__ import annotations

import heapq
import itertools
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from pktchain.functions.router.vrrp import (
    FrameKind,
    SendFrame,
    StateChanged,
    VrrpAction,
    VrrpConfig,
    VrrpInstance,
    VrrpState,
)

VNET = 10
IP_AT = VNET + 14  # the IPv4 header after the virtio-net header and Ethernet
MAX_DELIVERIES = 10_000  # per call: a loop of answers would be a bug, not a hang


def instance(**settings: Any) -> VrrpInstance:
    """An instance on eth0 with VRID 7 and virtual address 10.0.0.254, unless told."""
    values: dict[str, Any] = {
        "vrid": 7,
        "interface": "eth0",
        "virtual_addresses": (IPv4Address("10.0.0.254"),),
        "source_address": IPv4Address("10.0.0.1"),
    }
    values.update(settings)
    return VrrpInstance(VrrpConfig(**values))


@dataclass
class Sent:
    """A frame a router sent, when."""

    at: float
    sender: VrrpInstance
    action: SendFrame


@dataclass
class Link:
    """Instances on one segment (see the module docstring)."""

    routers: list[VrrpInstance]
    delay: float = 0.0
    now: float = 0.0
    dead: set[int] = field(default_factory=set)
    sent: list[Sent] = field(default_factory=list)
    changes: list[tuple[float, VrrpInstance, StateChanged]] = field(default_factory=list)
    actions: list[tuple[float, VrrpInstance, VrrpAction]] = field(default_factory=list)
    pending: list[tuple[float, int, VrrpInstance, bytes]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def alive(self, router: VrrpInstance) -> bool:
        return id(router) not in self.dead

    def start(self, router: VrrpInstance) -> None:
        self.deliver(router, router.start(self.now))

    def shutdown(self, router: VrrpInstance) -> None:
        self.deliver(router, router.shutdown(self.now))

    def kill(self, router: VrrpInstance) -> None:
        """The router stops dead: no priority 0, no more frames or timers."""
        self.dead.add(id(router))

    def revive(self, router: VrrpInstance) -> None:
        self.dead.discard(id(router))

    def track(self, router: VrrpInstance, name: str, ok: bool) -> None:
        self.deliver(router, router.track(name, ok, self.now))

    def deliver(self, sender: VrrpInstance, actions: list[VrrpAction]) -> None:
        """Record what ``sender`` did and hand its advertisements to the others."""
        queue: deque[tuple[VrrpInstance, VrrpAction]] = deque((sender, a) for a in actions)
        handed = 0
        while queue:
            source, action = queue.popleft()
            self.actions.append((self.now, source, action))
            if isinstance(action, StateChanged):
                self.changes.append((self.now, source, action))
            if not isinstance(action, SendFrame):
                continue
            self.sent.append(Sent(self.now, source, action))
            if action.kind is not FrameKind.ADVERTISEMENT or not self.alive(source):
                continue
            for router in self.routers:
                if router is source or not self.alive(router):
                    continue
                source_address = router.config.source_address
                if action.next_hop is not None and (
                    source_address is None or action.next_hop != source_address.packed
                ):
                    continue
                if self.delay:
                    at = self.now + self.delay
                    heapq.heappush(self.pending, (at, next(self._order), router, action.frame))
                    continue
                handed += 1
                if handed > MAX_DELIVERIES:
                    raise AssertionError("advertisements keep answering each other")
                answers = router.receive(action.frame, self.now, IP_AT)
                queue.extend((router, a) for a in answers)

    def run_until(self, until: float) -> None:
        """Fire every timer and delivery due up to ``until``, in time order, and leave the
        clock there."""
        for _ in range(MAX_DELIVERIES):
            deadlines = [
                d
                for r in self.routers
                if self.alive(r) and (d := r.next_deadline()) is not None and d <= until
            ]
            arrival = self.pending[0][0] if self.pending else None
            if (
                arrival is not None
                and arrival <= until
                and (not deadlines or arrival <= min(deadlines))
            ):
                self.now = max(self.now, arrival)
                _, _, router, frame = heapq.heappop(self.pending)
                if self.alive(router):
                    self.deliver(router, router.receive(frame, self.now, IP_AT))
                continue
            if not deadlines:
                break
            self.now = max(self.now, min(deadlines))
            for router in self.routers:
                if self.alive(router):
                    self.deliver(router, router.on_timer(self.now))
        else:
            raise AssertionError("timers keep firing without the clock moving")
        self.now = until

    def masters(self) -> list[VrrpInstance]:
        """The live routers in Master state."""
        return [r for r in self.routers if self.alive(r) and r.state is VrrpState.MASTER]

    def became_master(self, router: VrrpInstance) -> list[float]:
        """When ``router`` became master, in order."""
        return [
            at
            for at, who, change in self.changes
            if who is router and change.new is VrrpState.MASTER
        ]

    def adverts(self, sender: VrrpInstance) -> list[Sent]:
        """The advertisements ``sender`` sent."""
        return [
            s for s in self.sent if s.sender is sender and s.action.kind is FrameKind.ADVERTISEMENT
        ]


class SocketRouter:
    """An instance run on a packet socket with the real clock: a stand-in for its host.

    ``sock`` is an ``AF_PACKET`` raw socket bound to one interface (plain Ethernet
    frames, no virtio-net header); received VRRP frames go to the instance, and the
    frames it sends go out on the socket. Everything it did is kept in ``actions``
    with its time.
    """

    def __init__(self, router: VrrpInstance, sock: socket.socket) -> None:
        self.router = router
        self.sock = sock
        self.actions: list[tuple[float, VrrpAction]] = []
        sock.setblocking(False)

    def start(self) -> None:
        self._carry_out(self.router.start(time.monotonic()))

    def shutdown(self) -> None:
        self._carry_out(self.router.shutdown(time.monotonic()))

    def run(self, until: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Receive, fire timers and send until ``until()`` holds; AssertionError after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not until():
            now = time.monotonic()
            if now >= deadline:
                raise AssertionError(f"{what}: not true after {timeout:g} s")
            wake = min(deadline, now + 0.05)
            timer = self.router.next_deadline()
            if timer is not None:
                wake = min(wake, timer)
            readable, _, _ = select.select([self.sock], [], [], max(0.0, wake - now))
            if readable:
                self._drain()
            self._carry_out(self.router.on_timer(time.monotonic()))

    def _drain(self) -> None:
        for _ in range(1000):
            try:
                frame = self.sock.recv(65535)
            except BlockingIOError:
                return
            if frame[12:14] == b"\x08\x00" and len(frame) > 23 and frame[23] == 112:
                self._carry_out(self.router.receive(frame, time.monotonic(), 14))

    def _carry_out(self, actions: list[VrrpAction]) -> None:
        now = time.monotonic()
        for action in actions:
            self.actions.append((now, action))
            if isinstance(action, SendFrame):
                self.sock.send(action.frame[VNET:])

    def became_master(self) -> list[float]:
        return [
            at
            for at, a in self.actions
            if isinstance(a, StateChanged) and a.new is VrrpState.MASTER
        ]
