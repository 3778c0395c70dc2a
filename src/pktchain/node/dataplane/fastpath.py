"""The node's fast path: one fused entry per flow, whatever the chain length.

The first packets of a flow take the slow path: the datapath switches and
steers them and hands them to native functions (the router, the built-ins,
user functions), which answer synchronously. While that happens the datapath
keeps a :class:`Trace` of the packet's journey: the port and frame it came in
on, the flow leases the functions forwarded it with, the steering flows and
hop counters it passed. When the packet finally leaves on a real port (a TAP or
AF_PACKET port) and every function on the way gave a lease that an earlier
packet already travelled under (a flow earns its entry with its second packet,
so one-packet flows cost no memory here), the datapath fuses the journey into a
:class:`FusedEntry` on the ingress port, keyed by the packet's 5-tuple.

The fused rewrite is not declared by the functions: it is derived by comparing
the frame as it came in with the frame as it left (destination and source MAC,
IP addresses, ports or ICMP identifier, TTL), and the checksum updates are
precomputed as constant one's complement deltas (RFC 1624 eqn. 3: for a flow,
the old and new values of every rewritten field are fixed, so ``~m + m'`` summed
over them is one number per checksum; a TTL decremented by ``k`` adds
``-(k << 8)``). Before an entry is installed it is applied to the first packet
and must reproduce, byte for byte, what the slow path sent; a function that
changed anything else (a payload, a DSCP mark) simply keeps its flow on the
slow path.

A later packet of the flow costs one parse, one dict lookup, a copy of its
headers with the fused rewrite, and one write of headers + untouched rest
(a 64 KB GSO segment is not copied). It goes to the slow path instead when it
is a TCP segment with SYN, FIN or RST (state machines must see them), an IP
fragment, a packet whose TTL would run out, one longer than a function's MTU
(GSO: a segment), one addressed to another MAC than the first packet, or, on
a secured port (portsec.py), one sent from another MAC than the first packet.

An entry goes when any lease it holds is revoked (a function's timeout,
reconfiguration or state change), when a steering flow it passed is removed,
when the steering plan changes, when its destination MAC moves to another
port, or when it has been idle for the node's flow idle timeout.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.node.dataplane.ports import ETH_DST, ETH_SRC, ETH_TYPE
from pktchain.packet.checksum import ones_sum
from pktchain.packet.headers import IPV4, IPV6, L4_CHECKSUM_OFFSET, VIRTIO_NET_HDR, IpProto
from pktchain.packet.parse import FrameInfo, parse_frame
from pktchain.packet.virtio import VIRTIO_NET_HDR_F_NEEDS_CSUM

if TYPE_CHECKING:
    from pktchain.functions.sdk import FlowLease
    from pktchain.node.dataplane.ports import SwitchPort
    from pktchain.node.dataplane.steering import ArrivalKey, Flow, HopCounters
    from pktchain.node.dataplane.switch import MacEntry
    from pktchain.node.dataplane.underlay import NshHeader

__all__ = ["FusedEntry", "Trace", "apply_fused", "fuse", "on_revoke_remove"]

K = TypeVar("K")

PUNT_TCP_FLAGS = 0x07  # FIN | SYN | RST (RFC 9293 §3.1)

_U16 = struct.Struct("!H")
_IPV4_TTL_AT = IPV4.offset("ttl")
_IPV4_CHECKSUM_AT = IPV4.offset("checksum")
_IPV4_ADDRS_AT = IPV4.offset("src")
IPV4_FLAGS_AT = IPV4.offset("flags_fragment")
IPV4_DF = 0x40  # RFC 791 §3.1: Don't Fragment, in the first byte of flags_fragment
_IPV6_HOPS_AT = IPV6.offset("hop_limit")
_IPV6_ADDRS_AT = IPV6.offset("src")
_TCP = int(IpProto.TCP)
_UDP = int(IpProto.UDP)
_ICMP = int(IpProto.ICMP)
_ICMPV6 = int(IpProto.ICMPV6)
_ICMP_ID_AT = 4  # RFC 792 echo: type, code, checksum, identifier
_VNET_FLAGS_AT = VIRTIO_NET_HDR.offset("flags")


def _fold(value: int) -> int:
    value = (value & 0xFFFF) + (value >> 16)
    return (value & 0xFFFF) + (value >> 16)


class Trace:
    """A packet's journey through native functions, recorded on the slow path."""

    __slots__ = (
        "arrival",
        "broken",
        "ended",
        "flows",
        "frame",
        "hops",
        "info",
        "leases",
        "mtu",
        "port",
        "revokers",
    )

    def __init__(
        self, port: SwitchPort, frame: bytes, info: FrameInfo, arrival: ArrivalKey | None = None
    ) -> None:
        self.port = port
        self.frame = frame
        self.info = info
        self.arrival = arrival
        """Set when the journey began with NSH from another node: the entry is
        then the steering's for that SPI, SI and flow (`Steering.arrival_fast`)."""
        self.leases: list[FlowLease] = []
        """The functions' leases: cached packets are counted on them."""
        self.revokers: list[FlowLease] = []
        """Leases that only end the entry (the steering flows'): nothing counted on them."""
        self.flows: list[Flow] = []
        self.hops: list[HopCounters] = []
        self.mtu = 0
        self.broken = ""
        """Why the journey cannot be fused ("" while it can)."""
        self.ended = False
        """The packet left on a real port (fused or not): the rest of its journey
        (other outputs of a function, other ports of a flood) is not traced."""

    def add_lease(self, lease: FlowLease) -> None:
        self.leases.append(lease)
        if lease.mtu and (not self.mtu or lease.mtu < self.mtu):
            self.mtu = lease.mtu


class FusedEntry:
    """What to do with a later packet of one flow arriving on one port."""

    __slots__ = (
        "addrs",
        "addrs_at",
        "bytes",
        "df",
        "dst_entry",
        "dst_mac",
        "flows",
        "hops",
        "identity",
        "ip_delta",
        "l4_csum_at",
        "l4_delta",
        "leases",
        "macs",
        "mtu",
        "nsh",
        "out",
        "packets",
        "ports",
        "ports_at",
        "seed_delta",
        "seen",
        "src_entry",
        "src_mac",
        "ttl",
        "ttl_at",
        "udp",
    )

    def __init__(self, out: SwitchPort, dst_mac: bytes, macs: bytes) -> None:
        self.out = out
        self.dst_mac = dst_mac
        """The destination MAC of the packets this entry is for."""
        self.macs = macs
        """New destination and source MAC (12 bytes)."""
        self.identity = False
        """Nothing to rewrite (a chain of bumps in the wire): send the frame as it came."""
        self.nsh: NshHeader | None = None
        """The NSH the frame goes to another node in (`out` is a `PeerPort`):
        the encapsulation is one more rewrite."""
        self.ttl = 0
        self.ttl_at = 0
        self.df = False
        """Only for IPv4 packets with DF set, as the one that made the entry: a
        function may treat a non-atomic datagram otherwise (a NAT gives it a
        new IP ID, RFC 7857 §10)."""
        self.addrs: bytes | None = None
        self.addrs_at = 0
        self.ip_delta = 0
        self.ports: bytes | None = None
        self.ports_at = 0
        self.l4_csum_at = -1
        self.l4_delta = 0
        self.seed_delta = 0
        self.udp = False
        self.mtu = 0
        self.leases: tuple[FlowLease, ...] = ()
        self.flows: tuple[Flow, ...] = ()
        self.hops: tuple[HopCounters, ...] = ()
        self.src_entry: MacEntry[SwitchPort] | None = None
        self.src_mac: bytes | None = None
        """On a secured port: the source MAC the first packet was checked with
        (the key holds its IP source); a later packet takes the entry only
        from that MAC.  None: any."""
        self.dst_entry: MacEntry[SwitchPort] | None = None
        self.seen = 0.0
        """When a packet last took this entry (it is forgotten after the idle timeout)."""
        self.packets = 0
        self.bytes = 0
        """Packets and bytes not yet credited to the leases, flows and hops
        (`Datapath.credit`, at the end of each batch)."""


def apply_fused(entry: FusedEntry, frame: bytes | bytearray, info: FrameInfo) -> bytearray:
    """The rewritten headers of `frame` (up to ``info.payload``); the rest is unchanged."""
    l3 = info.l3
    head = bytearray(frame[: info.payload])
    head[ETH_DST:ETH_TYPE] = entry.macs
    if entry.ttl:
        head[l3 + entry.ttl_at] -= entry.ttl
    addrs = entry.addrs
    if addrs is not None:
        at = l3 + entry.addrs_at
        head[at : at + len(addrs)] = addrs
    if entry.ip_delta:
        at = l3 + _IPV4_CHECKSUM_AT
        checksum = (head[at] << 8) | head[at + 1]
        checksum = ~_fold((~checksum & 0xFFFF) + entry.ip_delta) & 0xFFFF
        head[at] = checksum >> 8
        head[at + 1] = checksum & 0xFF
    ports = entry.ports
    if ports is not None:
        at = info.l4 + entry.ports_at
        head[at : at + len(ports)] = ports
    if entry.l4_csum_at >= 0:
        at = info.l4 + entry.l4_csum_at
        checksum = (head[at] << 8) | head[at + 1]
        if frame[_VNET_FLAGS_AT] & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            # The L4 checksum holds the pseudo-header seed: only the seed changes.
            checksum = _fold(checksum + entry.seed_delta)
        elif checksum or not entry.udp:
            checksum = ~_fold((~checksum & 0xFFFF) + entry.l4_delta) & 0xFFFF
            if not checksum and entry.udp:
                checksum = 0xFFFF  # RFC 768: 0 would mean "no checksum"
        head[at] = checksum >> 8
        head[at + 1] = checksum & 0xFF
    return head


def _delta(old: bytes, new: bytes) -> int:
    """One's complement sum of ``~old + new`` over 16-bit words (RFC 1624 eqn. 3)."""
    return _fold(ones_sum(new) + (~ones_sum(old) & 0xFFFF))


def fuse(
    trace: Trace,
    out: SwitchPort,
    final: bytes,
    *,
    dst_entry: MacEntry[SwitchPort] | None,
    src_entry: MacEntry[SwitchPort] | None,
    nsh: NshHeader | None = None,
) -> FusedEntry | str:
    """The fused entry for `trace` ending with `final` sent on `out`, or why there is none."""
    first, info = trace.frame, trace.info
    after = parse_frame(final, VNET_HDR_LEN)
    if after.error is not None or (
        after.ip_version,
        after.proto,
        after.l3,
        after.l4,
        after.payload,
        after.end,
    ) != (info.ip_version, info.proto, info.l3, info.l4, info.payload, info.end):
        return "layout-changed"
    if len(final) != len(first) or final[:ETH_DST] != first[:ETH_DST]:
        return "length-changed"
    entry = FusedEntry(out, first[ETH_DST:ETH_SRC], final[ETH_DST:ETH_TYPE])
    l3, l4, proto = info.l3, info.l4, info.proto
    if info.ip_version == 4:
        ttl_at, addrs_at, addr_len = _IPV4_TTL_AT, _IPV4_ADDRS_AT, 8
    else:
        ttl_at, addrs_at, addr_len = _IPV6_HOPS_AT, _IPV6_ADDRS_AT, 32
    ttl = first[l3 + ttl_at] - final[l3 + ttl_at]
    if ttl < 0:
        return "ttl-raised"
    entry.ttl, entry.ttl_at = ttl, ttl_at
    entry.df = info.ip_version == 4 and bool(first[l3 + IPV4_FLAGS_AT] & IPV4_DF)
    old_addrs = first[l3 + addrs_at : l3 + addrs_at + addr_len]
    new_addrs = final[l3 + addrs_at : l3 + addrs_at + addr_len]
    if new_addrs != old_addrs:
        entry.addrs, entry.addrs_at = new_addrs, addrs_at
    if info.ip_version == 4:
        # The TTL shares a 16-bit word with the protocol; the delta covers both.
        old_ip = first[l3 + ttl_at : l3 + ttl_at + 2] + old_addrs
        new_ip = final[l3 + ttl_at : l3 + ttl_at + 2] + new_addrs
        entry.ip_delta = _delta(old_ip, new_ip) if old_ip != new_ip else 0
    old_ports = new_ports = b""
    if proto in (_TCP, _UDP):
        entry.ports_at = 0
        old_ports, new_ports = first[l4 : l4 + 4], final[l4 : l4 + 4]
    elif proto in (_ICMP, _ICMPV6):
        entry.ports_at = _ICMP_ID_AT
        old_ports = first[l4 + _ICMP_ID_AT : l4 + _ICMP_ID_AT + 2]
        new_ports = final[l4 + _ICMP_ID_AT : l4 + _ICMP_ID_AT + 2]
    if new_ports != old_ports:
        entry.ports = new_ports
    if proto in L4_CHECKSUM_OFFSET and (entry.addrs is not None or entry.ports is not None):
        entry.l4_csum_at = L4_CHECKSUM_OFFSET[proto]
        entry.udp = proto == _UDP
        pseudo = proto != _ICMP  # RFC 792: no pseudo-header for ICMP
        entry.l4_delta = _delta(
            (old_addrs if pseudo else b"") + old_ports, (new_addrs if pseudo else b"") + new_ports
        )
        entry.seed_delta = _delta(old_addrs, new_addrs) if pseudo else 0
    entry.mtu = trace.mtu
    # A path's hops share one steering flow (and its lease): count each once.
    entry.leases = tuple(dict.fromkeys(trace.leases))
    entry.flows = tuple(dict.fromkeys(trace.flows))
    entry.hops = tuple(trace.hops)
    entry.dst_entry = dst_entry
    entry.src_entry = src_entry
    rebuilt = bytes(apply_fused(entry, first, info)) + first[info.payload :]
    if rebuilt != final:
        return "rewrite-not-fusable"
    entry.identity = final == first
    entry.nsh = nsh
    return entry


def on_revoke_remove(table: dict[K, FusedEntry], key: K, entry: FusedEntry) -> Callable[[], None]:
    """A hook that removes `entry` from `table` if it is still there."""

    def remove() -> None:
        if table.get(key) is entry:
            del table[key]

    return remove
