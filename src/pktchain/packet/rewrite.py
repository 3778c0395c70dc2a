"""In-place rewrites of a parsed frame that keep every checksum right.

The flow cache's fused actions (NAT, TTL, MAC rewrites) change a few fields
per packet; these functions do that on a writable buffer, updating the IPv4
header checksum and the L4 checksum incrementally (RFC 1624 eqn. 3) instead of
summing the packet again. With ``partial=True`` the frame came with
``VIRTIO_NET_HDR_F_NEEDS_CSUM``: its L4 checksum field holds the pseudo-header
seed, so an address change updates the seed and a port change needs nothing
(ports are summed when the checksum is completed). They take the
:class:`~pktchain.packet.parse.FrameInfo` of the frame and raise ValueError for
a call that does not fit it (a malformed frame, an IPv6 address for IPv4, a
port on a protocol without ports).

A non-first IP fragment has no L4 header, so only its IP header is updated;
NAT of fragmented datagrams needs the first fragment's translation remembered
for the later ones (the router's fragment tracking does that).
"""

from __future__ import annotations

import struct
from enum import Enum

from pktchain.packet.address import WritableBuffer
from pktchain.packet.checksum import (
    adjust_checksum,
    adjust_seed,
    update16,
    update32,
    update_seed32,
)
from pktchain.packet.headers import (
    ETHERNET,
    ICMP,
    IPV4,
    IPV6,
    L4_CHECKSUM_OFFSET,
    TCP,
    IcmpType,
    Icmpv6Type,
    IpProto,
)
from pktchain.packet.parse import FrameInfo

__all__ = ["Side", "decrement_ttl", "set_ip", "set_mac", "set_port"]


class Side(Enum):
    """Which end of a packet a rewrite applies to."""

    SRC = "src"
    DST = "dst"


_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_MAC_AT = {Side.SRC: ETHERNET.offset("src"), Side.DST: ETHERNET.offset("dst")}
_IPV4_AT = {Side.SRC: IPV4.offset("src"), Side.DST: IPV4.offset("dst")}
_IPV6_AT = {Side.SRC: IPV6.offset("src"), Side.DST: IPV6.offset("dst")}
_IPV4_CHECKSUM_AT = IPV4.offset("checksum")
_IPV4_TTL_AT = IPV4.offset("ttl")
# TTL is the high byte of the 16-bit word it shares with Protocol; the header
# checksum is updated for that word (RFC 1624 eqn. 3).
_TTL_ONE = 1 << 8 * (IPV4.offset("protocol") - _IPV4_TTL_AT)
_IPV6_HOP_LIMIT_AT = IPV6.offset("hop_limit")
_PORT_AT = {Side.SRC: TCP.offset("sport"), Side.DST: TCP.offset("dport")}  # same in UDP
_ICMP_ID_AT = ICMP.offset("identifier")  # same in ICMPv6
_ICMP_ECHO = frozenset((IcmpType.ECHO_REQUEST, IcmpType.ECHO_REPLY))
_ICMPV6_ECHO = frozenset((Icmpv6Type.ECHO_REQUEST, Icmpv6Type.ECHO_REPLY))
_TCP = int(IpProto.TCP)
_UDP = int(IpProto.UDP)
_ICMP = int(IpProto.ICMP)
_ICMPV6 = int(IpProto.ICMPV6)


def _require_ok(info: FrameInfo) -> None:
    if info.error is not None:
        raise ValueError(f"cannot rewrite a malformed frame ({info.error})")


def set_mac(buf: WritableBuffer, info: FrameInfo, side: Side, mac: bytes) -> None:
    """Set the Ethernet source or destination MAC (no checksum covers it)."""
    if info.l2 < 0 or len(mac) != 6:
        raise ValueError("set_mac needs an Ethernet frame and a 6-byte MAC")
    at = info.l2 + _MAC_AT[side]
    buf[at : at + 6] = mac


def set_ip(
    buf: WritableBuffer, info: FrameInfo, side: Side, address: bytes, *, partial: bool = False
) -> None:
    """Set the IP source or destination address, updating IPv4 and L4 checksums."""
    _require_ok(info)
    l3, l4, proto = info.l3, info.l4, info.proto
    csum_at = l4 + L4_CHECKSUM_OFFSET[proto] if l4 >= 0 and proto in L4_CHECKSUM_OFFSET else -1
    if info.ip_version == 4 and len(address) == 4:
        at = l3 + _IPV4_AT[side]
        old = _U32.unpack_from(buf, at)[0]
        new = _U32.unpack(address)[0]
        _U32.pack_into(buf, at, new)
        header_sum = _U16.unpack_from(buf, l3 + _IPV4_CHECKSUM_AT)[0]
        _U16.pack_into(buf, l3 + _IPV4_CHECKSUM_AT, update32(header_sum, old, new))
        # RFC 792: the ICMP checksum has no pseudo-header, so addresses do not touch it.
        if csum_at < 0 or proto == _ICMP:
            return
        value = _U16.unpack_from(buf, csum_at)[0]
        if partial:
            value = update_seed32(value, old, new)
        elif proto == _UDP and value == 0:
            return  # RFC 768: no checksum was sent
        else:
            value = update32(value, old, new) or (0xFFFF if proto == _UDP else 0)
        _U16.pack_into(buf, csum_at, value)
    elif info.ip_version == 6 and len(address) == 16:
        at = l3 + _IPV6_AT[side]
        old_bytes = bytes(buf[at : at + 16])
        buf[at : at + 16] = address
        if csum_at < 0:
            return
        value = _U16.unpack_from(buf, csum_at)[0]
        if partial:
            value = adjust_seed(value, old_bytes, address)
        elif proto == _UDP and value == 0:
            return
        else:
            value = adjust_checksum(value, old_bytes, address) or (0xFFFF if proto == _UDP else 0)
        _U16.pack_into(buf, csum_at, value)
    else:
        raise ValueError(f"a {len(address)}-byte address does not fit this frame's IP header")


def set_port(
    buf: WritableBuffer, info: FrameInfo, side: Side, port: int, *, partial: bool = False
) -> None:
    """Set a TCP/UDP port, or the ICMP/ICMPv6 echo identifier (either side), and its checksum."""
    _require_ok(info)
    proto, l4 = info.proto, info.l4
    if l4 < 0 or not 0 <= port <= 0xFFFF:
        raise ValueError("set_port needs a frame with an L4 header and a port in 0..65535")
    if proto in (_TCP, _UDP):
        at = l4 + _PORT_AT[side]
    elif (proto == _ICMP and buf[l4] in _ICMP_ECHO) or (
        proto == _ICMPV6 and buf[l4] in _ICMPV6_ECHO
    ):
        at = l4 + _ICMP_ID_AT
    else:
        raise ValueError(f"protocol {proto} has no ports (ICMP: only echo has an identifier)")
    old = _U16.unpack_from(buf, at)[0]
    _U16.pack_into(buf, at, port)
    # Ports and the ICMP identifier are not in the pseudo-header: a partial
    # checksum picks them up when it is completed.
    if partial:
        return
    csum_at = l4 + L4_CHECKSUM_OFFSET[proto]
    value = _U16.unpack_from(buf, csum_at)[0]
    if proto == _UDP and value == 0:
        return
    _U16.pack_into(buf, csum_at, update16(value, old, port) or (0xFFFF if proto == _UDP else 0))


def decrement_ttl(buf: WritableBuffer, info: FrameInfo) -> int:
    """Decrement the IPv4 TTL (updating the header checksum) or the IPv6 hop limit.

    Returns the new value. A packet arriving with 0 or 1 must not be forwarded
    (RFC 1812 §5.3.1, RFC 8200 §3): it is left unchanged and 0 is returned, so
    the caller drops it and may answer with Time Exceeded.
    """
    l3 = info.l3
    if info.ip_version == 4 and info.error is None:
        word: int = _U16.unpack_from(buf, l3 + _IPV4_TTL_AT)[0]
        ttl = word // _TTL_ONE
        if ttl <= 1:
            return 0
        _U16.pack_into(buf, l3 + _IPV4_TTL_AT, word - _TTL_ONE)
        header_sum = _U16.unpack_from(buf, l3 + _IPV4_CHECKSUM_AT)[0]
        _U16.pack_into(buf, l3 + _IPV4_CHECKSUM_AT, update16(header_sum, word, word - _TTL_ONE))
        return ttl - 1
    if info.ip_version == 6 and info.error is None:
        hops = buf[l3 + _IPV6_HOP_LIMIT_AT]
        if hops <= 1:
            return 0
        buf[l3 + _IPV6_HOP_LIMIT_AT] = hops - 1
        return hops - 1
    raise ValueError("decrement_ttl needs a well-formed IP frame")
