"""What each end of a tunnel counts: packets and bytes, drops by reason, closes by reason.

Every packet a tunnel end does not deliver is counted under a `DropReason`;
every connection it closes, under a `CloseReason` (wire.py). The counters are
logged as one JSON object on SIGUSR1 and at exit (docs/tunnel.md).
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum

from pktchain.tunnel.wire import CloseReason

__all__ = ["Count", "Counters", "DropReason"]


class Count(StrEnum):
    """Traffic and connection counters."""

    TUN_RX_PACKETS = "tun_rx_packets"
    """Packets read from the TUN device (sent by this host's kernel)."""
    TUN_RX_BYTES = "tun_rx_bytes"
    TUN_TX_PACKETS = "tun_tx_packets"
    """Packets written to the TUN device (handed to this host's kernel)."""
    TUN_TX_BYTES = "tun_tx_bytes"
    WIRE_RX_PACKETS = "wire_rx_packets"
    """Packets received from peers."""
    WIRE_RX_BYTES = "wire_rx_bytes"
    WIRE_TX_PACKETS = "wire_tx_packets"
    """Packets sent to peers (queued on a connection, or sent as a datagram)."""
    WIRE_TX_BYTES = "wire_tx_bytes"
    CONNECTIONS = "connections"
    """Connections accepted (server) or established (client)."""
    AUTHENTICATED = "authenticated"
    """Connections whose peer proved it holds the key (or all of them with --no-auth)."""
    RELAYED = "relayed"
    """Packets the server passed from one client to another."""
    ROUTES_MOVED = "routes_moved"
    """Inner addresses learned again behind another peer."""
    ROUTES_NOT_LEARNED = "routes_not_learned"
    """Inner addresses not learned because the route table was full."""
    KEEPALIVES = "keepalives"
    """Empty UDP datagrams received (a UDP client saying it is there)."""


class DropReason(StrEnum):
    """Why a packet was not delivered."""

    NO_ROUTE = "no-route"
    """The server knows no client behind the destination, and has several."""
    NOT_CONNECTED = "not-connected"
    """No peer to send to: the client is (re)connecting, or no client is there."""
    CONGESTED = "congested"
    """The connection's send buffer is full (its peer reads too slowly)."""
    MALFORMED = "malformed"
    """Not an IPv4 or IPv6 packet with a whole header."""
    TTL_EXPIRED = "ttl-expired"
    """Relayed between clients with a TTL or hop limit of 1 or 0 (RFC 1812 §5.3.1)."""
    LOOP = "loop"
    """A client sent a packet to an address behind itself."""
    TUN_WRITE_FAILED = "tun-write-failed"
    """The kernel refused the packet written to the TUN device."""
    SEND_FAILED = "send-failed"
    """The UDP socket refused the datagram."""
    OVERSIZED = "oversized"
    """A UDP datagram longer than the MTU."""
    TOO_MANY_PEERS = "too-many-peers"
    """A datagram from a new UDP peer when the peer table is full."""


class Counters:
    """The counters of one tunnel end."""

    __slots__ = ("closes", "counts", "drops")

    def __init__(self) -> None:
        self.counts: Counter[Count] = Counter()
        self.drops: Counter[DropReason] = Counter()
        self.closes: Counter[CloseReason] = Counter()

    def as_json(self) -> dict[str, dict[str, int]]:
        return {
            "counts": {str(k): v for k, v in sorted(self.counts.items())},
            "drops": {str(k): v for k, v in sorted(self.drops.items())},
            "closes": {str(k): v for k, v in sorted(self.closes.items())},
        }
