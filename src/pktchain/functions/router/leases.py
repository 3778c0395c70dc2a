"""The router's flow leases: what it lets the node's fast path carry, and for how long.

When the router forwards a packet whose later packets may be treated the same
way (TCP without SYN, FIN or RST, UDP or ICMP echo, next hop resolved, not a
fragment, NAT result cacheable), it makes a :class:`CacheHint`: the flow as it
arrived, and everything its treatment depends on. :class:`LeaseTable` turns
hints into the SDK's flow leases (:class:`~pktchain.functions.sdk.FlowLease`),
one per flow and direction:

* a NAT flow gets its lease with its second packet: the first leaves a mark in
  the NAT session's own slot (``cache_out`` / ``cache_in``), so a one-packet
  session (a DNS query) costs no lease and no table entry, and the lease made
  on the second packet is handed over already traced (the node's own
  second-packet rule is then met);
* a routed flow without NAT gets its lease at once (the node's rule applies)
  and is forgotten after ``idle_timeout`` without fast-path traffic, since
  nothing else would end it;
* a lease is revoked when its flow's hint changes, when the router no longer
  honours the hint (its NAT session ended; a neighbour, interface or host
  changed the router's generation), and when the router changes by a control
  call;
* what the fast path carried (``lease.seen``) is handed back to the router,
  which keeps the NAT sessions of cached flows alive.

The table decides nothing about the router's state: the router passes in
whether a hint still holds and what touching a session gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pktchain.functions.sdk import FlowLease

if TYPE_CHECKING:
    from pktchain.functions.nat.result import FlowRewrite
    from pktchain.functions.nat.table import Session

__all__ = ["ROUTED_IDLE_TIMEOUT", "CacheHint", "FlowTuple", "LeaseTable"]

ROUTED_IDLE_TIMEOUT = 300.0
"""Seconds after which the lease of an idle routed flow without NAT is forgotten
(a NAT flow ends with its session)."""

FlowTuple = tuple[int, bytes, int, bytes, int]
"""(IP protocol, source address, source port, destination address, destination port)
of a packet as it arrived; the ports are the echo identifier for ICMP echo."""


@dataclass(frozen=True, slots=True)
class CacheHint:
    """How the router treated a forwarded packet whose flow may be cached (one direction).

    Keyed by ``(in_iface, flow)``. Two packets of a flow with equal hints were
    treated alike, so the lease made for the first covers the second.
    """

    in_iface: str
    flow: FlowTuple
    out_iface: str
    src_mac: bytes
    dst_mac: bytes
    mtu: int
    """The next-hop MTU: the largest packet (or GSO segment) the lease may carry."""
    rewrite: FlowRewrite | None
    """The NAT rewrite (``None``: plain routing)."""
    session: Session | None
    """The NAT session the flow belongs to (``None``: plain routing)."""
    outbound: bool
    """The NAT direction: inside to outside (or hairpin), or back."""
    generation: int
    """The router's generation when the hint was made: neighbour, interface and
    host changes bump it and make older hints invalid."""


class LeaseTable:
    """The router's leases by flow, each with the hint it was made from."""

    def __init__(self, idle_timeout: float = ROUTED_IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        # (in interface, flow) -> (hint, lease, [last seen]).
        self._leases: dict[tuple[str, FlowTuple], tuple[CacheHint, FlowLease, list[float]]] = {}

    def lease(self, hint: CacheHint, now: float) -> FlowLease | None:
        """The lease for a packet forwarded as ``hint`` says (None: not yet, see the module)."""
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
            marked = session.cache_out if hint.outbound else session.cache_in
            if marked is None and known is None:
                _mark(session, hint.outbound)
                return None
            lease.traced = True
            _mark(session, hint.outbound)
        self._leases[key] = (hint, lease, [now])
        return lease

    def sync(self, now: float, touch: Callable[[CacheHint, float], bool]) -> None:
        """Hand the router what the fast path carried since the last call.

        ``touch(hint, seen)`` accounts the flow's latest cached packet (a NAT
        session so touched stays alive); False revokes the lease. A routed flow
        without NAT idle for ``idle_timeout`` is forgotten.
        """
        idle: list[tuple[str, FlowTuple]] = []
        for key, (hint, lease, seen) in self._leases.items():
            if not lease.valid:
                continue
            if lease.seen > seen[0]:
                seen[0] = lease.seen
                if not touch(hint, lease.seen):
                    lease.revoke()
                    continue
            if hint.session is None and seen[0] < now - self.idle_timeout:
                idle.append(key)
        for key in idle:
            self._leases.pop(key)[1].revoke()

    def prune(self, honoured: Callable[[CacheHint], bool]) -> None:
        """Revoke and forget the leases whose hint the router no longer honours."""
        gone = [
            key
            for key, (hint, lease, _seen) in self._leases.items()
            if not lease.valid or not honoured(hint)
        ]
        for key in gone:
            self._leases.pop(key)[1].revoke()

    def __len__(self) -> int:
        return len(self._leases)


def _mark(session: Session, outbound: bool) -> None:
    """A packet of this direction of the session was forwarded with a hint."""
    if outbound:
        session.cache_out = True
    else:
        session.cache_in = True
