"""The router's neighbour cache (ARP, RFC 826) and its host table, each with its state table.

Both are sans-IO bookkeeping: they decide, the router builds and sends the
frames. A :class:`Neighbor` is a next hop on one interface, resolved or being
resolved, with the packets waiting for it. A :class:`Host` is a machine seen
on (or announced for) an internal subnet: the seed's "host tracking", with the
automatic forwarding port the router gave it.

Neighbour states, RFC 826 with the timeouts and queueing of RFC 1122
§2.3.2.1-2.3.2.2 (the names follow the IPv6 neighbour cache of RFC 4861 §7.3.2,
which describes the same life cycle):

==========  ==================  ==========  =====================================
state       event               next state  action
==========  ==================  ==========  =====================================
INCOMPLETE  CONFIRMED           REACHABLE   send the queued packets
INCOMPLETE  RETRY_DUE           INCOMPLETE  send another request (≤ 1/s, §2.3.2.1)
INCOMPLETE  RETRIES_EXHAUSTED   (removed)   host unreachable for each queued packet
REACHABLE   CONFIRMED           REACHABLE   restart the timeout; a new MAC replaces
REACHABLE   EXPIRED             PROBE       keep using the MAC, send a request
PROBE       CONFIRMED           REACHABLE   restart the timeout
PROBE       RETRY_DUE           PROBE       send another request
PROBE       RETRIES_EXHAUSTED   (removed)   forget the neighbour (§2.3.2.1 timeout)
PERMANENT   any                 PERMANENT   none (announced by the controller)
==========  ==================  ==========  =====================================

Host states (host tracking; learned hosts age out, announced ones stay):

========  ==================  ========  ================================
state     event               next      action
========  ==================  ========  ================================
ACTIVE    SEEN                ACTIVE    restart the aging timer
ACTIVE    EXPIRED             PROBING   send an ARP request to the host
PROBING   SEEN                ACTIVE    restart the aging timer
PROBING   RETRY_DUE           PROBING   send another request
PROBING   RETRIES_EXHAUSTED   (gone)    release its forwarding port
STATIC    any                 STATIC    none (until the controller removes it)
========  ==================  ========  ================================
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from pktchain.packet.address import format_ip, format_mac

__all__ = [
    "ARP_TRANSITIONS",
    "HOST_TRANSITIONS",
    "ArpAction",
    "ArpEntry",
    "ArpEvent",
    "Host",
    "HostAction",
    "HostEntry",
    "HostEvent",
    "HostState",
    "Neighbor",
    "NeighborState",
    "Queued",
]


class NeighborState(Enum):
    """Where a neighbour cache entry is in its life (see the module's table)."""

    INCOMPLETE = "incomplete"
    REACHABLE = "reachable"
    PROBE = "probe"
    PERMANENT = "permanent"


class ArpEvent(Enum):
    """What happens to a neighbour entry."""

    CONFIRMED = "confirmed"  # an ARP reply or request from the neighbour
    EXPIRED = "expired"  # the reachable timeout ran out
    RETRY_DUE = "retry-due"  # a request went unanswered, tries are left
    RETRIES_EXHAUSTED = "retries-exhausted"


class ArpAction(Enum):
    """What the router does on a transition."""

    NONE = "none"
    FLUSH_QUEUE = "flush-queue"
    REFRESH = "refresh"
    SEND_REQUEST = "send-request"
    FAIL_QUEUE = "fail-queue"
    FORGET = "forget"


_N = NeighborState
_E = ArpEvent
_A = ArpAction
ARP_TRANSITIONS: dict[tuple[NeighborState, ArpEvent], tuple[NeighborState | None, ArpAction]] = {
    (_N.INCOMPLETE, _E.CONFIRMED): (_N.REACHABLE, _A.FLUSH_QUEUE),
    (_N.INCOMPLETE, _E.RETRY_DUE): (_N.INCOMPLETE, _A.SEND_REQUEST),
    (_N.INCOMPLETE, _E.RETRIES_EXHAUSTED): (None, _A.FAIL_QUEUE),
    (_N.REACHABLE, _E.CONFIRMED): (_N.REACHABLE, _A.REFRESH),
    (_N.REACHABLE, _E.EXPIRED): (_N.PROBE, _A.SEND_REQUEST),
    (_N.PROBE, _E.CONFIRMED): (_N.REACHABLE, _A.REFRESH),
    (_N.PROBE, _E.RETRY_DUE): (_N.PROBE, _A.SEND_REQUEST),
    (_N.PROBE, _E.RETRIES_EXHAUSTED): (None, _A.FORGET),
}
"""(state, event) -> (next state or None for removal, action). PERMANENT has no rows."""


class HostState(Enum):
    """Where a tracked host is in its life (see the module's table)."""

    ACTIVE = "active"
    PROBING = "probing"
    STATIC = "static"


class HostEvent(Enum):
    """What happens to a tracked host."""

    SEEN = "seen"
    EXPIRED = "expired"
    RETRY_DUE = "retry-due"
    RETRIES_EXHAUSTED = "retries-exhausted"


class HostAction(Enum):
    """What the router does on a host transition."""

    REFRESH = "refresh"
    SEND_REQUEST = "send-request"
    REMOVE = "remove"


HOST_TRANSITIONS: dict[tuple[HostState, HostEvent], tuple[HostState | None, HostAction]] = {
    (HostState.ACTIVE, HostEvent.SEEN): (HostState.ACTIVE, HostAction.REFRESH),
    (HostState.ACTIVE, HostEvent.EXPIRED): (HostState.PROBING, HostAction.SEND_REQUEST),
    (HostState.PROBING, HostEvent.SEEN): (HostState.ACTIVE, HostAction.REFRESH),
    (HostState.PROBING, HostEvent.RETRY_DUE): (HostState.PROBING, HostAction.SEND_REQUEST),
    (HostState.PROBING, HostEvent.RETRIES_EXHAUSTED): (None, HostAction.REMOVE),
}
"""(state, event) -> (next state or None for removal, action). STATIC has no rows."""


class Queued:
    """A frame waiting for its next hop's MAC, and what an error about it needs."""

    __slots__ = ("frame", "in_iface", "original")

    def __init__(self, frame: bytearray, in_iface: str | None, original: bytes) -> None:
        self.frame = frame
        """The whole frame (vnet header included) ready but for its destination MAC."""
        self.in_iface = in_iface
        """Where the packet came in; None for the router's own packets."""
        self.original = original
        """The IP packet as it arrived (before NAT), quoted by host unreachable."""


class Neighbor:
    """One neighbour cache entry: an IPv4 address on one interface."""

    __slots__ = ("deadline", "iface", "ip", "mac", "queue", "state", "tries")

    def __init__(self, iface: str, ip: bytes, state: NeighborState, mac: bytes | None) -> None:
        self.iface = iface
        self.ip = ip
        self.state = state
        self.mac = mac
        self.deadline = float("inf")
        self.tries = 0
        self.queue: deque[Queued] = deque()

    @property
    def usable(self) -> bool:
        """Whether packets may go to ``mac`` now (PROBE keeps using the old MAC)."""
        return self.mac is not None and self.state is not NeighborState.INCOMPLETE


class Host:
    """A host the router tracks on an internal subnet."""

    __slots__ = (
        "deadline",
        "first_seen",
        "forward_port",
        "iface",
        "ip",
        "last_seen",
        "mac",
        "network_id",
        "state",
        "tries",
    )

    def __init__(  # noqa: PLR0917 - one constructor call site
        self, mac: bytes, ip: bytes, iface: str, network_id: str, now: float, state: HostState
    ) -> None:
        self.mac = mac
        self.ip = ip
        self.iface = iface
        self.network_id = network_id
        self.first_seen = now
        self.last_seen = now
        self.state = state
        self.deadline = float("inf")
        self.tries = 0
        self.forward_port: int | None = None

    def entry(self) -> HostEntry:
        """The row of the host table."""
        return HostEntry(
            format_mac(self.mac),
            format_ip(self.ip),
            self.iface,
            self.network_id,
            self.first_seen,
            self.last_seen,
            self.forward_port,
            self.state,
        )


@dataclass(frozen=True, slots=True)
class HostEntry:
    """A row of the host table as listed to people and the API."""

    mac: str
    ip: str
    interface: str
    network_id: str
    first_seen: float
    last_seen: float
    forward_port: int | None
    """The automatic forwarding port (TCP, external address) leading to the host's
    service port; None when automatic forwarding is off or no port was free."""
    state: HostState


@dataclass(frozen=True, slots=True)
class ArpEntry:
    """A row of the neighbour cache as listed to people and the API."""

    interface: str
    ip: str
    mac: str | None
    state: NeighborState
    deadline: float | None
    """When the entry next changes state (None: never)."""
    queued: int
