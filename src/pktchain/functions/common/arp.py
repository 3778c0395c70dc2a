"""ARP for functions that own addresses: the responder and the neighbour cache (RFC 826).

Both are sans-IO: they decide and build frames, their owner sends them. An
:class:`ArpResponder` stands for one interface of a function that owns
addresses (the router, the load balancer): it sorts the ARP packets that
interface hears (:meth:`ArpResponder.hear`), answers the requests for its
addresses, RFC 5227 probes included, and builds the requests and
announcements its owner sends. A :class:`NeighborCache` holds the neighbours of
one interface: each :class:`Neighbor` is a next hop, resolved or being
resolved, with the packets waiting for it. The router keeps one cache per
interface, the load balancer one for its backend side.

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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container
from dataclasses import dataclass
from enum import Enum

from pktchain.packet.address import format_ip, format_mac
from pktchain.packet.headers import ETHERNET, ArpOp
from pktchain.packet.layers import Arp, Ethernet, build
from pktchain.packet.views import ArpView

__all__ = [
    "ARP_TRANSITIONS",
    "ArpAction",
    "ArpEntry",
    "ArpEvent",
    "ArpResponder",
    "Heard",
    "HeardArp",
    "Hold",
    "Merge",
    "Neighbor",
    "NeighborCache",
    "NeighborChange",
    "NeighborState",
    "Queued",
]

_INF = float("inf")


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
    """What the cache's owner does on a transition."""

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


class Queued:
    """A frame waiting for its next hop's MAC, and what an error about it needs."""

    __slots__ = ("frame", "in_iface", "original")

    def __init__(self, frame: bytearray, in_iface: str | None, original: bytes) -> None:
        self.frame = frame
        """The whole frame (vnet header included) ready but for its destination MAC."""
        self.in_iface = in_iface
        """Where the packet came in; None for the owner's own packets."""
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
        self.deadline = _INF
        self.tries = 0
        self.queue: deque[Queued] = deque()

    @property
    def usable(self) -> bool:
        """Whether packets may go to ``mac`` now (PROBE keeps using the old MAC)."""
        return self.mac is not None and self.state is not NeighborState.INCOMPLETE


class Hold(Enum):
    """What became of a frame given to :meth:`NeighborCache.hold`."""

    QUEUED = "queued"
    QUEUED_OVERFLOW = "queued-overflow"  # queued, the oldest waiting frame dropped
    REFUSED = "refused"  # the queue limit is 0


class Merge(Enum):
    """What an ARP packet from a neighbour did to the cache (:meth:`NeighborCache.confirm`)."""

    IGNORED = "ignored"  # unknown and not for us: RFC 826 adds nothing
    CONFIRMED = "confirmed"  # added, or refreshed with the MAC it had
    MAC_CHANGED = "mac-changed"  # a resolved neighbour now answers from another MAC
    PERMANENT_MISMATCH = "permanent-mismatch"  # a PERMANENT entry, another MAC claimed


@dataclass(slots=True)
class NeighborChange:
    """What the timers of a cache want done."""

    requests: list[bytes]
    """Addresses to send an ARP request for now."""
    failed: list[tuple[bytes, list[Queued]]]
    """Addresses given up after their retries, with the frames that waited for them."""
    forgotten: list[bytes]
    """Resolved addresses removed (unanswered verification, or no longer used)."""


class NeighborCache:
    """The neighbours of one interface, keyed by IPv4 address (4 bytes).

    Resolution follows the module's state table: an address is resolved on
    first use (:meth:`resolve`), up to ``queue_limit`` frames wait for it
    (:meth:`hold`; the oldest is dropped first, RFC 1122 §2.3.2.2 keeps the
    latest), an unanswered address is retried ``retries`` times
    ``retry_interval`` apart and then given up with its frames, and a resolved
    MAC is verified again after ``timeout`` (REACHABLE -> PROBE).
    """

    def __init__(
        self, iface: str, *, timeout: float, retry_interval: float, retries: int, queue_limit: int
    ) -> None:
        self.iface = iface
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.retries = retries
        self.queue_limit = queue_limit
        self.entries: dict[bytes, Neighbor] = {}

    def mac(self, ip: bytes) -> bytes | None:
        """The MAC to send to ``ip`` now, or None when it is not resolved."""
        neighbor = self.entries.get(ip)
        if neighbor is None or not neighbor.usable:
            return None
        return neighbor.mac

    def resolve(self, ip: bytes, now: float) -> bool:
        """Start resolving ``ip`` unless it is known; True when a first request is due now."""
        if ip in self.entries:
            return False
        neighbor = self.entries[ip] = Neighbor(self.iface, ip, NeighborState.INCOMPLETE, None)
        neighbor.tries = 1
        neighbor.deadline = now + self.retry_interval
        return True

    def hold(self, ip: bytes, frame: bytearray, in_iface: str | None, quote: bytes = b"") -> Hold:
        """Keep ``frame`` until ``ip`` (being resolved: see :meth:`resolve`) answers.

        ``in_iface`` and ``quote`` are what an ICMP error about the frame needs
        if resolution fails (where it came in, the packet as it arrived).
        """
        neighbor = self.entries.get(ip)
        if neighbor is None or self.queue_limit == 0:
            return Hold.REFUSED
        overflow = len(neighbor.queue) >= self.queue_limit
        if overflow:
            neighbor.queue.popleft()
        neighbor.queue.append(Queued(frame, in_iface, quote))
        return Hold.QUEUED_OVERFLOW if overflow else Hold.QUEUED

    def requested(self, ip: bytes) -> bool:
        """Whether ``ip`` is being resolved (a request is out)."""
        neighbor = self.entries.get(ip)
        return neighbor is not None and neighbor.state is NeighborState.INCOMPLETE

    def confirm(self, ip: bytes, mac: bytes, now: float, *, create: bool) -> Merge:
        """RFC 826 "merge" of an ARP sender; the frames it frees wait in :meth:`release`.

        An entry is updated if it exists and created only when ``create`` (the
        ARP packet was for us), so a gratuitous ARP refreshes but never adds.
        """
        neighbor = self.entries.get(ip)
        if neighbor is None:
            if not create:
                return Merge.IGNORED
            neighbor = self.entries[ip] = Neighbor(self.iface, ip, NeighborState.INCOMPLETE, None)
        if neighbor.state is NeighborState.PERMANENT:
            return Merge.CONFIRMED if mac == neighbor.mac else Merge.PERMANENT_MISMATCH
        next_state, _action = ARP_TRANSITIONS[neighbor.state, ArpEvent.CONFIRMED]
        changed = neighbor.mac is not None and neighbor.mac != mac
        neighbor.mac = mac
        neighbor.state = next_state or NeighborState.REACHABLE
        neighbor.tries = 0
        neighbor.deadline = now + self.timeout
        return Merge.MAC_CHANGED if changed else Merge.CONFIRMED

    def set_static(self, ip: bytes, mac: bytes) -> bool:
        """Make ``ip`` a PERMANENT entry; True when the MAC to use changed.

        Frames waiting for it stay queued until :meth:`release`.
        """
        neighbor = self.entries.get(ip)
        before = neighbor.mac if neighbor is not None and neighbor.usable else None
        fresh = Neighbor(self.iface, ip, NeighborState.PERMANENT, mac)
        if neighbor is not None:
            fresh.queue = neighbor.queue
        self.entries[ip] = fresh
        return before is not None and before != mac

    def clear_static(self, ip: bytes) -> bool:
        """Forget a PERMANENT entry (the address is resolved by ARP from now on)."""
        neighbor = self.entries.get(ip)
        if neighbor is None or neighbor.state is not NeighborState.PERMANENT:
            return False
        del self.entries[ip]
        return True

    def forget(self, ip: bytes) -> Neighbor | None:
        """Remove ``ip`` whatever its state; the entry, with any frames still waiting."""
        return self.entries.pop(ip, None)

    def release(self, ip: bytes) -> list[Queued]:
        """The frames waiting for ``ip`` if it is resolved now (and no longer held)."""
        neighbor = self.entries.get(ip)
        if neighbor is None or not neighbor.usable or not neighbor.queue:
            return []
        frames = list(neighbor.queue)
        neighbor.queue.clear()
        return frames

    def next_deadline(self) -> float:
        return min((n.deadline for n in self.entries.values()), default=_INF)

    def on_timer(self, now: float, used: Container[bytes] | None = None) -> NeighborChange:
        """Retries, expiry and verification due at ``now``.

        ``used``: the addresses still needed; a resolved one that is not is
        forgotten when its timeout runs out instead of verified (None: all are).
        """
        change = NeighborChange([], [], [])
        for neighbor in [n for n in self.entries.values() if n.deadline <= now]:
            state = neighbor.state
            if state is NeighborState.REACHABLE:
                if used is not None and neighbor.ip not in used:
                    del self.entries[neighbor.ip]
                    change.forgotten.append(neighbor.ip)
                    continue
                event = ArpEvent.EXPIRED
            elif neighbor.tries < self.retries:
                event = ArpEvent.RETRY_DUE
            else:
                event = ArpEvent.RETRIES_EXHAUSTED
            row = ARP_TRANSITIONS.get((state, event))
            if row is None:
                neighbor.deadline = _INF
                continue
            next_state, action = row
            if next_state is None:
                del self.entries[neighbor.ip]
                if action is ArpAction.FAIL_QUEUE:
                    change.failed.append((neighbor.ip, list(neighbor.queue)))
                else:
                    change.forgotten.append(neighbor.ip)
                continue
            neighbor.state = next_state
            if action is ArpAction.SEND_REQUEST:
                neighbor.tries = 1 if event is ArpEvent.EXPIRED else neighbor.tries + 1
                neighbor.deadline = now + self.retry_interval
                change.requests.append(neighbor.ip)
        return change

    def rows(self) -> list[ArpEntry]:
        """The cache as listed to people and the API, by address."""
        return [
            ArpEntry(
                n.iface,
                format_ip(n.ip),
                None if n.mac is None else format_mac(n.mac),
                n.state,
                None if n.deadline == _INF else n.deadline,
                len(n.queue),
            )
            for n in sorted(self.entries.values(), key=lambda n: n.ip)
        ]


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


# -- answering for owned addresses -------------------------------------------------

_BROADCAST_MAC = b"\xff" * 6
_ZERO_MAC = bytes(6)
_ZERO_IP = bytes(4)
_ARP_OPERATIONS = (int(ArpOp.REQUEST), int(ArpOp.REPLY))
_ARP_AT = ETHERNET.size


class Heard(Enum):
    """What an ARP packet heard on an interface of a function is, checked in this order."""

    BAD_OPERATION = "bad-operation"  # neither a request nor a reply
    OWN = "own"  # sent from one of the function's own MACs
    BAD_SENDER = "bad-sender"  # a group or all-zero sender MAC names no station
    PROBE = "probe"  # sender address 0.0.0.0 (RFC 5227 §2.1.1): nothing to learn
    CONFLICT = "conflict"  # someone claims one of the function's addresses
    NEIGHBOR = "neighbor"  # a neighbour's request or reply: RFC 826 "merge" applies


@dataclass(frozen=True, slots=True)
class HeardArp:
    """One ARP packet, sorted by :meth:`ArpResponder.hear`."""

    kind: Heard
    request: bool
    sha: bytes
    spa: bytes
    tpa: bytes
    for_us: bool
    """Its target is an address the interface answers for."""

    @property
    def answer_due(self) -> bool:
        """A request (or probe) for one of the interface's addresses: answer it."""
        return self.request and self.for_us and self.kind in (Heard.PROBE, Heard.NEIGHBOR)


@dataclass(frozen=True, slots=True)
class ArpResponder:
    """ARP on one interface of a function that owns addresses (RFC 826, RFC 5227).

    ``mac`` is the interface's own; ``answers`` the addresses it answers for;
    ``owned`` every address of the function (a packet claiming one is a
    conflict, whichever interface hears it); ``macs`` every MAC of the function
    (its own packets, heard back through a network it joins twice).
    """

    mac: bytes
    answers: Container[bytes]
    owned: Container[bytes]
    macs: Container[bytes] = ()

    def hear(self, frame: bytes | bytearray, l3: int) -> HeardArp:
        """Sort the ARP packet at ``frame[l3:]`` (parsed as ARP for IPv4 over Ethernet)."""
        arp = ArpView(frame, l3)
        op, sha, spa, tpa = arp.oper, arp.sha, arp.spa, arp.tpa
        if op not in _ARP_OPERATIONS:
            kind = Heard.BAD_OPERATION
        elif sha == self.mac or sha in self.macs:
            kind = Heard.OWN
        elif sha[0] & 1 or sha == _ZERO_MAC:
            kind = Heard.BAD_SENDER
        elif spa == _ZERO_IP:
            kind = Heard.PROBE
        elif spa in self.owned:
            kind = Heard.CONFLICT
        else:
            kind = Heard.NEIGHBOR
        return HeardArp(kind, op == ArpOp.REQUEST, sha, spa, tpa, tpa in self.answers)

    def reply(self, heard: HeardArp) -> bytes:
        """The reply to a request for one of the interface's addresses, sent to its sender."""
        return self._frame(ArpOp.REPLY, heard.sha, heard.tpa, heard.sha, heard.spa)

    def request(self, source: bytes, target: bytes) -> bytes:
        """A broadcast request for ``target``, sent from the interface's address ``source``."""
        return self._frame(ArpOp.REQUEST, _BROADCAST_MAC, source, _ZERO_MAC, target)

    def announcement(self, address: bytes) -> bytes:
        """RFC 5227 §3 announcement of ``address``: hosts update entries that point elsewhere."""
        return self._frame(ArpOp.REQUEST, _BROADCAST_MAC, address, _ZERO_MAC, address)

    def _frame(self, op: ArpOp, eth_dst: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
        return build(
            Ethernet(dst=eth_dst, src=self.mac),
            Arp(op=op, sha=self.mac, spa=spa, tha=tha, tpa=tpa),
        )
