"""The load balancer's neighbour cache: backend MACs learned by ARP, frames held until then.

The life cycle is the router's (:mod:`pktchain.functions.router_arp`, whose
state table :data:`~pktchain.functions.router_arp.ARP_TRANSITIONS` and
:class:`~pktchain.functions.router_arp.Neighbor` entries this cache drives):
RFC 826 resolution with the timeouts and queueing of RFC 1122 §2.3.2.1-2.3.2.2.
An address is resolved on its first use; up to ``queue_limit`` frames wait for
it (the oldest is dropped first, §2.3.2.2 keeps the latest); an unanswered
address is retried ``retries`` times ``retry_interval`` apart and then given
up, its frames dropped. A resolved MAC is verified again after ``timeout``
(REACHABLE -> PROBE) while still used. Backends with a configured MAC are
PERMANENT entries.

The cache is bookkeeping only: it says which requests to send and which frames
to release, the load balancer builds and emits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pktchain.functions.router_arp import (
    ARP_TRANSITIONS,
    ArpAction,
    ArpEvent,
    Neighbor,
    NeighborState,
    Queued,
)

__all__ = ["Hold", "NeighborCache", "NeighborChange", "NeighborState"]

_INF = float("inf")


class Hold(Enum):
    """What became of a frame given to :meth:`NeighborCache.hold`."""

    QUEUED = "queued"
    QUEUED_REQUEST = "queued-request"  # queued, and a first request is due now
    QUEUED_OVERFLOW = "queued-overflow"  # queued, the oldest waiting frame dropped
    REFUSED = "refused"  # queue_limit is 0


@dataclass(slots=True)
class NeighborChange:
    """What the timers of the cache want done."""

    requests: list[bytes]
    """Addresses to send an ARP request for now."""
    failed: list[tuple[bytes, int]]
    """Addresses given up after their retries, with the count of frames dropped."""
    forgotten: list[bytes]
    """Resolved addresses removed (unanswered verification, or no longer used)."""


class NeighborCache:
    """Neighbours of one interface, keyed by IPv4 address (4 bytes)."""

    def __init__(
        self, *, timeout: float, retry_interval: float, retries: int, queue_limit: int
    ) -> None:
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

    def set_static(self, ip: bytes, mac: bytes) -> bool:
        """Make ``ip`` a PERMANENT entry; True when the MAC to use changed."""
        neighbor = self.entries.get(ip)
        before = neighbor.mac if neighbor is not None and neighbor.usable else None
        fresh = Neighbor("", ip, NeighborState.PERMANENT, mac)
        if neighbor is not None:
            fresh.queue = neighbor.queue  # released by the caller through release()
        self.entries[ip] = fresh
        return before is not None and before != mac

    def clear_static(self, ip: bytes) -> bool:
        """Forget a PERMANENT entry (the address is resolved by ARP from now on)."""
        neighbor = self.entries.get(ip)
        if neighbor is None or neighbor.state is not NeighborState.PERMANENT:
            return False
        del self.entries[ip]
        return True

    def hold(self, ip: bytes, frame: bytes, iface: str, now: float) -> Hold:
        """Keep ``frame`` until ``ip`` is resolved; start resolving it if nobody is."""
        neighbor = self.entries.get(ip)
        request = False
        if neighbor is None:
            neighbor = Neighbor(iface, ip, NeighborState.INCOMPLETE, None)
            neighbor.tries = 1
            neighbor.deadline = now + self.retry_interval
            self.entries[ip] = neighbor
            request = True
        if self.queue_limit == 0:
            return Hold.REFUSED
        overflow = len(neighbor.queue) >= self.queue_limit
        if overflow:
            neighbor.queue.popleft()
        neighbor.queue.append(Queued(bytearray(frame), iface, b""))
        if overflow:
            return Hold.QUEUED_OVERFLOW
        return Hold.QUEUED_REQUEST if request else Hold.QUEUED

    def requested(self, ip: bytes) -> bool:
        """Whether ``ip`` is being resolved (a request is out)."""
        neighbor = self.entries.get(ip)
        return neighbor is not None and neighbor.state is NeighborState.INCOMPLETE

    def confirm(self, ip: bytes, mac: bytes, now: float, *, create: bool) -> tuple[bool, bool]:
        """RFC 826 "merge" of a sender: (known, MAC changed); frames wait in :meth:`release`.

        An entry is updated if it exists and created only when ``create`` (the
        ARP packet was for us), so a gratuitous ARP refreshes but never adds.
        """
        neighbor = self.entries.get(ip)
        if neighbor is None:
            if not create:
                return False, False
            neighbor = Neighbor("", ip, NeighborState.INCOMPLETE, None)
            self.entries[ip] = neighbor
        if neighbor.state is NeighborState.PERMANENT:
            return True, False
        next_state, _action = ARP_TRANSITIONS[neighbor.state, ArpEvent.CONFIRMED]
        changed = neighbor.mac is not None and neighbor.mac != mac
        neighbor.mac = mac
        neighbor.state = next_state or NeighborState.REACHABLE
        neighbor.tries = 0
        neighbor.deadline = now + self.timeout
        return True, changed

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

    def on_timer(self, now: float, used: set[bytes]) -> NeighborChange:
        """Retries, expiry and verification due at ``now``; ``used``: addresses still needed."""
        change = NeighborChange([], [], [])
        for neighbor in [n for n in self.entries.values() if n.deadline <= now]:
            state = neighbor.state
            if state is NeighborState.REACHABLE:
                if neighbor.ip not in used:
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
                    change.failed.append((neighbor.ip, len(neighbor.queue)))
                else:
                    change.forgotten.append(neighbor.ip)
                continue
            neighbor.state = next_state
            if action is ArpAction.SEND_REQUEST:
                neighbor.tries = 1 if event is ArpEvent.EXPIRED else neighbor.tries + 1
                neighbor.deadline = now + self.retry_interval
                change.requests.append(neighbor.ip)
        return change
