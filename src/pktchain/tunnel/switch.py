"""The server's routing between its clients and its own TUN, by inner destination.

The server keeps one table: inner IP address → the peer (a TCP connection, or
a UDP client's address) behind which it lives. Entries come from two places:
the addresses a client announces in its authenticated hello, and the source
address of every packet a peer sends (learned as a switch learns MACs, so
that an unauthenticated client, or a subnet behind a client, is found too).
A later entry for the same address wins: a client that reconnects takes its
addresses to the new connection at once.

Where a packet goes:

- from the TUN: to the peer its destination is learned behind; with a single
  peer, to that peer whatever the destination (the original tool's
  point-to-point behaviour); otherwise dropped (no route).
- from a peer: to the peer its destination is learned behind, as a router hop
  (TTL / hop limit decremented, RFC 1812 §5.3.1, RFC 8200 §3); if none, to the
  server's TUN, and the server's kernel delivers, forwards or drops it.

Sans-IO and generic over the peer type; every drop is counted in `counters`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from enum import Enum
from typing import Generic, TypeVar

from pktchain.packet.parse import parse_ip
from pktchain.packet.rewrite import decrement_ttl
from pktchain.tunnel.counters import Count, Counters, DropReason

__all__ = ["MAX_ROUTES", "Local", "Switch", "learnable"]

P = TypeVar("P", bound=Hashable)

MAX_ROUTES = 65536
"""Inner addresses the server remembers at most; more are not learned (counted)."""

_V4_UNSPECIFIED = bytes(4)
_V4_BROADCAST = b"\xff" * 4
_V6_UNSPECIFIED = bytes(16)
_V4_MULTICAST_FIRST = range(224, 240)  # 224.0.0.0/4, RFC 5771
_V6_MULTICAST_FIRST = 0xFF  # ff00::/8, RFC 4291 §2.7


class Local(Enum):
    """The server's own TUN, as a destination."""

    TUN = "tun"


def learnable(address: bytes) -> bool:
    """True for a unicast address a peer may stand for (not unspecified, multicast
    or broadcast): only these enter the route table."""
    if len(address) == 4:
        return (
            address not in (_V4_UNSPECIFIED, _V4_BROADCAST)
            and address[0] not in _V4_MULTICAST_FIRST
        )
    if len(address) == 16:
        return address != _V6_UNSPECIFIED and address[0] != _V6_MULTICAST_FIRST
    return False


class Switch(Generic[P]):
    """The route table of one server end, and its forwarding decisions."""

    def __init__(
        self, counters: Counters, *, own: Iterable[bytes] = (), max_routes: int = MAX_ROUTES
    ) -> None:
        self.counters = counters
        self.routes: dict[bytes, P] = {}
        """Inner address (4 or 16 bytes) → the peer it is behind."""
        self.peers: set[P] = set()
        self._own = frozenset(own)
        self._max_routes = max_routes

    def peer_up(self, peer: P, addresses: Iterable[bytes] = ()) -> None:
        """`peer` may now be sent to; `addresses` are behind it (announced)."""
        self.peers.add(peer)
        for address in addresses:
            self._learn(address, peer)

    def peer_down(self, peer: P) -> None:
        """`peer` is gone: forget it and every address behind it."""
        self.peers.discard(peer)
        for address in [a for a, p in self.routes.items() if p == peer]:
            del self.routes[address]

    def from_tun(self, packet: bytes) -> P | None:
        """The peer to send a packet from the TUN to, or None (dropped, counted)."""
        peers = self.peers
        if len(peers) == 1:
            # One client: everything goes to it, like the original's single connection.
            for only in peers:
                return only
        if not peers:
            self.counters.drops[DropReason.NOT_CONNECTED] += 1
            return None
        info = parse_ip(packet)
        if not info.dst:
            self.counters.drops[DropReason.MALFORMED] += 1
            return None
        peer = self.routes.get(info.dst)
        if peer is None:
            self.counters.drops[DropReason.NO_ROUTE] += 1
        return peer

    def from_peer(self, packet: bytes, peer: P) -> tuple[P | Local | None, bytes | bytearray]:
        """Where a packet from `peer` goes (None: dropped, counted), and the packet
        to send there (a copy with the TTL decremented when relayed to a peer)."""
        info = parse_ip(packet)
        if not info.dst:
            self.counters.drops[DropReason.MALFORMED] += 1
            return None, packet
        source = info.src
        if self.routes.get(source) != peer:
            self._learn(source, peer)
        target = self.routes.get(info.dst)
        if target is None:
            return Local.TUN, packet
        if target == peer:
            self.counters.drops[DropReason.LOOP] += 1
            return None, packet
        if info.error is not None:
            self.counters.drops[DropReason.MALFORMED] += 1
            return None, packet
        relayed = bytearray(packet)
        if decrement_ttl(relayed, info) == 0:
            self.counters.drops[DropReason.TTL_EXPIRED] += 1
            return None, packet
        self.counters.counts[Count.RELAYED] += 1
        return target, relayed

    def _learn(self, address: bytes, peer: P) -> None:
        if address in self._own or not learnable(address):
            return
        previous = self.routes.get(address)
        if previous is None and len(self.routes) >= self._max_routes:
            self.counters.counts[Count.ROUTES_NOT_LEARNED] += 1
            return
        if previous is not None:
            self.counters.counts[Count.ROUTES_MOVED] += 1
        self.routes[address] = peer
