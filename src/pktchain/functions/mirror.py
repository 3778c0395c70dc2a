"""Port mirroring: a bump in the wire that forwards every packet and copies some to a third port.

:class:`Mirror` has the interfaces ``ingress`` and ``egress`` (traffic passes
between them untouched) and ``mirror``, on which it emits a copy of each packet
it selects: by the interface the packet came in on (``direction``), by an
optional 5-tuple filter, one in ``sample`` (systematic count-based sampling,
RFC 5475 §5.1), cut to ``snaplen`` bytes. Where ``mirror`` leads is the
driver's business: a node port joined to a network (the copies reach another
host's port, like a SPAN session), or a capture file the driver writes. On a
network, give ``destination_mac``: a copy carries the MACs of both ends of a
conversation, so a learning switch learns them on the mirror port and would
drop every later copy addressed back to that same port.

A packet it copies must come to it, so a flow whose packets are copied is
forwarded without a flow lease: it stays on the node's slow path. Every other
IP flow is forwarded with a lease, so the fast path carries it; the mirror
keeps those leases in a bounded table and revokes them all when its
configuration changes (a flow it let go may match the new filter), and one by
one when they have been idle for ``lease_idle`` seconds.

The mirror only observes: it forwards what it cannot parse too (counted as
``malformed``), so that a capture shows what later functions may drop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pktchain.functions.common.fields import PORTED, Direction, protocol_number
from pktchain.functions.common.fields import mac_error as _mac_error
from pktchain.functions.sdk import (
    FlowLease,
    FlowLeases,
    Function,
    Packet,
    Result,
    TableSize,
    drop,
    forward,
)
from pktchain.functions.sdk.schema import check
from pktchain.packet.address import mac_bytes
from pktchain.packet.checksum import complete_partial_checksum
from pktchain.packet.parse import FrameInfo
from pktchain.packet.virtio import VIRTIO_NET_HDR_LEN, parse_virtio_net_hdr

__all__ = ["Direction", "Mirror", "MirrorConfig", "MirrorFilter", "protocol_number"]

INGRESS = "ingress"
EGRESS = "egress"
MIRROR = "mirror"

MAX_SNAPLEN = 262144
"""libpcap's largest snapshot length; also bounds a 64 KB GSO frame."""


def _protocol_error(value: str | int | None) -> str | None:
    try:
        protocol_number(value)
    except ValueError as exc:
        return str(exc)
    return None


def _port(help_text: str) -> Any:
    return field(default=None, metadata=check(minimum=0, maximum=65535, help=help_text))


@dataclass(frozen=True, slots=True)
class MirrorFilter:
    """Which IP packets are copied; a field left out matches anything."""

    protocol: str | int | None = field(
        default=None,
        metadata=check(
            test=_protocol_error,
            help="IP protocol, by name (tcp, udp, icmp, icmpv6, sctp, gre, ...) or number (0-255)",
        ),
    )
    src: ipaddress.IPv4Network | ipaddress.IPv6Network | None = field(
        default=None,
        metadata=check(
            help="source prefix, CIDR (10.0.0.0/24, 2001:db8::/32); an address alone is a "
            "/32 or /128"
        ),
    )
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network | None = field(
        default=None, metadata=check(help="destination prefix, as src")
    )
    sport: int | None = _port("TCP or UDP source port; set, it excludes every other protocol")
    dport: int | None = _port("TCP or UDP destination port; set, it excludes every other protocol")
    both_ways: bool = field(
        default=True,
        metadata=check(
            help="also match a packet whose reversed 5-tuple matches, so that a filter "
            "written for requests (dport: 80) copies their answers too"
        ),
    )


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    """What the mirror copies, and how it keeps the flows it does not copy."""

    direction: Direction = field(
        default=Direction.BOTH,
        metadata=check(
            help="both, ingress (packets that came in on ingress, on their way to egress) "
            "or egress (the return traffic)"
        ),
    )
    filter: MirrorFilter | None = field(
        default=None,
        metadata=check(
            help="which IP packets are copied; none copies every frame (ARP and malformed "
            "frames included)"
        ),
    )
    snaplen: int = field(
        default=0,
        metadata=check(
            minimum=0,
            maximum=MAX_SNAPLEN,
            help="copy at most this many bytes of each frame; 0 copies whole frames",
        ),
    )
    sample: int = field(
        default=1,
        metadata=check(
            minimum=1,
            maximum=2**31 - 1,
            help="copy one selected packet in this many (the first, then every sample-th)",
        ),
    )
    destination_mac: str | None = field(
        default=None,
        metadata=check(
            test=_mac_error,
            help="address the copies to this MAC (a collector's, or ff:ff:ff:ff:ff:ff to "
            "flood them); none keeps each frame's own destination, as a capture file wants",
        ),
    )
    max_leases: int = field(
        default=65536,
        metadata=check(
            minimum=0,
            help="flows not copied that may be leased to the fast path at once; 0 leases none",
        ),
    )
    lease_idle: float = field(
        default=300.0,
        metadata=check(
            minimum=1.0, help="seconds after which an unused lease is revoked and forgotten"
        ),
    )


class _Prefix:
    """An address prefix compiled for a test on raw address bytes."""

    __slots__ = ("length", "mask", "network")

    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self.length = 4 if network.version == 4 else 16
        self.network = int(network.network_address)
        self.mask = int(network.netmask)

    def __call__(self, address: bytes) -> bool:
        return len(address) == self.length and int.from_bytes(address) & self.mask == self.network


class _Match:
    """A :class:`MirrorFilter` compiled for the per-packet test."""

    __slots__ = ("both_ways", "dport", "dst", "proto", "sport", "src")

    def __init__(self, spec: MirrorFilter) -> None:
        self.proto = protocol_number(spec.protocol)
        self.src = None if spec.src is None else _Prefix(spec.src)
        self.dst = None if spec.dst is None else _Prefix(spec.dst)
        self.sport = spec.sport
        self.dport = spec.dport
        self.both_ways = spec.both_ways

    def __call__(self, info: FrameInfo) -> bool:
        if info.error is not None or not info.ip_version:
            return False
        if self.proto is not None and info.proto != self.proto:
            return False
        if self._one_way(info.src, info.dst, info.sport, info.dport, info.proto):
            return True
        return self.both_ways and self._one_way(
            info.dst, info.src, info.dport, info.sport, info.proto
        )

    def _one_way(self, src: bytes, dst: bytes, sport: int, dport: int, proto: int) -> bool:
        if self.src is not None and not self.src(src):
            return False
        if self.dst is not None and not self.dst(dst):
            return False
        if self.sport is None and self.dport is None:
            return True
        # FrameInfo puts the ICMP echo identifier in the ports: only TCP and UDP
        # have ports to match (a non-first fragment has none, so it never does).
        return (
            proto in PORTED
            and (self.sport is None or sport == self.sport)
            and (self.dport is None or dport == self.dport)
        )


_LeaseKey = tuple[str, tuple[bytes, bytes, int, int, int]]


class Mirror(Function[MirrorConfig]):
    """Forwards between ``ingress`` and ``egress``; copies selected packets to ``mirror``.

    The copies are emitted frames (``Result.emit``) on the ``mirror`` interface:
    the function writes nothing itself. A copy of a frame whose checksum was
    left to offload (``NEEDS_CSUM``) has its checksum completed, so that a
    capture shows it right; a GSO frame is copied as the one large frame it is,
    as a capture on the host would show it. Frames that arrive on ``mirror``
    are dropped (``mirror-input``).
    """

    KIND = "mirror"
    Config = MirrorConfig
    LIVE = True
    INTERFACES = (INGRESS, EGRESS, MIRROR)
    COUNTERS: ClassVar[Mapping[str, str]] = {
        "forwarded": "packets forwarded between ingress and egress",
        "copied": "copies emitted on mirror",
        "copied-bytes": "bytes of those copies (after snaplen)",
        "not-sampled": "selected packets that sampling did not copy",
        "truncated": "copies cut to snaplen",
        "checksum-not-completed": "partial-checksum frames whose offsets lie outside the "
        "frame (copied as they came)",
        "malformed": "frames that do not parse (forwarded all the same)",
        "leased": "leases given to flows that are not copied",
        "lease-table-full": "leases not given because max_leases were out",
        "leases-expired": "leases revoked after lease_idle unused",
        "mirror-input": "frames dropped because they came in on mirror",
        "unknown-interface": "frames on an interface it does not have, refused by the driver",
    }

    def __init__(self, config: MirrorConfig | None = None) -> None:
        super().__init__(config)
        self._compile()

    def _compile(self) -> None:
        config = self.config
        spec = config.filter
        self._match = None if spec is None else _Match(spec)
        direction = config.direction
        self._copied_ifaces = frozenset(
            (INGRESS, EGRESS) if direction is Direction.ANY else (direction.value,)
        )
        self._countdown = 0  # selected packets to let go before the next copy
        mac = config.destination_mac
        self._destination = None if mac is None else mac_bytes(mac)
        self._leases = FlowLeases(config.max_leases, idle=config.lease_idle)

    def peer(self, iface: str) -> str:
        """``ingress`` and ``egress`` forward to each other; ``mirror`` only emits."""
        if iface == INGRESS:
            return EGRESS
        if iface == EGRESS:
            return INGRESS
        raise ValueError(f"mirror: {iface!r} has no peer (only ingress and egress forward)")

    def process(self, packet: Packet, now: float) -> Result:
        iface = packet.iface
        if iface == MIRROR:
            return drop("mirror-input")
        out = EGRESS if iface == INGRESS else INGRESS
        info = packet.info
        counters = self.counters
        counters["forwarded"] += 1
        if info.error is not None:
            counters["malformed"] += 1
        match = self._match
        if iface in self._copied_ifaces and (match is None or match(info)):
            return forward(out, emit=self._copy(packet))
        return forward(out, lease=self._lease(iface, info, now))

    def _copy(self, packet: Packet) -> list[tuple[str, bytes]]:
        """The copy of a selected packet, if sampling keeps this one."""
        counters = self.counters
        if self._countdown:
            self._countdown -= 1
            counters["not-sampled"] += 1
            return []
        self._countdown = self.config.sample - 1
        copy = bytearray(packet.buf[VIRTIO_NET_HDR_LEN:])
        header = parse_virtio_net_hdr(packet.buf)
        if header is not None and header.needs_csum:
            try:
                complete_partial_checksum(copy, header.csum_start, header.csum_offset)
            except ValueError:
                # Offsets outside the frame: copy it as it came (a capture shows why).
                counters["checksum-not-completed"] += 1
        if self._destination is not None and len(copy) >= 6:
            copy[0:6] = self._destination
        snaplen = self.config.snaplen
        if snaplen and len(copy) > snaplen:
            del copy[snaplen:]
            counters["truncated"] += 1
        counters["copied"] += 1
        counters["copied-bytes"] += len(copy)
        return [(MIRROR, bytes(copy))]

    def _lease(self, iface: str, info: FrameInfo, now: float) -> FlowLease | None:
        """A lease for a flow the mirror does not copy (reused while it is valid)."""
        if info.error is not None or not info.ip_version or info.fragment:
            return None
        key: _LeaseKey = (iface, (info.src, info.dst, info.proto, info.sport, info.dport))
        leases = self._leases
        if key not in leases and leases.full:
            self.counters["lease-table-full"] += 1
            return None
        known = leases.get(key)
        lease = leases.lease(key, now)
        if lease is not known:
            self.counters["leased"] += 1
        return lease

    def next_deadline(self) -> float | None:
        return self._leases.next_deadline()

    def on_timer(self, now: float) -> list[tuple[str, bytes]]:
        """Revoke and forget leases unused for ``lease_idle`` seconds."""
        self.counters["leases-expired"] += self._leases.expire(now)
        return []

    def apply_config(self, config: MirrorConfig) -> None:
        """Take a new configuration: every lease goes, the flows come back to be judged."""
        self.revoke_all()
        self.config = config
        self._compile()

    def revoke_all(self) -> None:
        """Send every leased flow back through the mirror."""
        self._leases.revoke_all()

    def tables(self) -> dict[str, TableSize]:
        return {"leases": TableSize(len(self._leases), self.config.max_leases)}

    def status(self) -> dict[str, Any]:
        status = super().status()
        config = self.config
        status["direction"] = config.direction.value
        status["filtered"] = config.filter is not None
        status["sample"] = config.sample
        status["snaplen"] = config.snaplen
        status["leases"] = len(self._leases)
        return status
