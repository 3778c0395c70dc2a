"""ICMP errors for the NAPT: the embedded packet, its translation, and errors the NAT sends.

An ICMP error (RFC 792; types 3, 11, 12) carries the IP header and at least
the first 8 bytes of the datagram that caused it. Translating the error means
translating that embedded packet the other way round (RFC 5508 §4.2): its
address and port or identifier are rewritten with the embedded IP header
checksum and, when the embedded transport checksum is present, that one too
(incrementally: RFC 5508 REQ-3c forbids validating it, and RFC 5508 REQ-3d's
ICMP extensions then never enter the computation). The outer ICMP checksum is
checked before anything is touched (REQ-3) and computed again afterwards.

The embedded datagram is truncated by design, so the codec's parser (which
checks lengths against the IP header) is not used on it; the views read it.
"""

from __future__ import annotations

import struct
from enum import StrEnum
from typing import NamedTuple

from pktchain.packet.address import Buffer, WritableBuffer
from pktchain.packet.checksum import internet_checksum, ones_sum, update16, update32
from pktchain.packet.headers import ICMP, IPV4, L4_CHECKSUM_OFFSET, IcmpType, IpProto
from pktchain.packet.layers import Icmp, Ipv4, build
from pktchain.packet.rewrite import Side
from pktchain.packet.views import IcmpView, Ipv4View

__all__ = [
    "ERROR_TYPES",
    "MAX_ERROR_SIZE",
    "Embedded",
    "Unusable",
    "build_icmp_error",
    "icmp_checksum_ok",
    "parse_embedded",
    "refresh_icmp_checksum",
    "rewrite_embedded",
]

ERROR_TYPES = frozenset(
    (IcmpType.DEST_UNREACHABLE, IcmpType.TIME_EXCEEDED, IcmpType.PARAMETER_PROBLEM)
)
"""The ICMP errors a NAT translates (RFC 5508 REQ-10a)."""

MAX_ERROR_SIZE = 576
"""An ICMP error the NAT sends stays within 576 bytes (RFC 1812 §4.3.2.3)."""

_ICMP_SIZE = ICMP.size
_ICMP_CHECKSUM_AT = ICMP.offset("checksum")
_ICMP_ID_AT = ICMP.offset("identifier")
_IPV4_SIZE = IPV4.size
_IPV4_CHECKSUM_AT = IPV4.offset("checksum")
_ADDRESS_AT = {Side.SRC: IPV4.offset("src"), Side.DST: IPV4.offset("dst")}
_PORT_AT = {Side.SRC: 0, Side.DST: 2}  # TCP and UDP both start with sport, dport
_MIN_L4 = 8  # RFC 792: "the first 64 bits of the original datagram's data"
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_TCP = int(IpProto.TCP)
_UDP = int(IpProto.UDP)
_ICMP = int(IpProto.ICMP)
_ECHO = frozenset((IcmpType.ECHO_REQUEST, IcmpType.ECHO_REPLY))


class Unusable(StrEnum):
    """Why the datagram quoted in an ICMP error cannot be used; the values are drop
    reasons of the functions that translate errors (the NAT's among them)."""

    MALFORMED = "embedded-malformed"
    CHECKSUM = "embedded-ip-checksum"  # RFC 5508 REQ-3a
    UNSUPPORTED = "unsupported-icmp"  # quotes something other than TCP, UDP or an echo


class Embedded(NamedTuple):
    """The datagram inside an ICMP error: offsets in the caller's buffer and its flow."""

    l3: int
    l4: int
    end: int
    proto: int
    src: bytes
    dst: bytes
    sport: int
    """TCP/UDP source port, or the identifier of an embedded echo message."""
    dport: int
    """TCP/UDP destination port, or the identifier of an embedded echo message."""


def icmp_checksum_ok(buf: Buffer, l4: int, end: int) -> bool:
    """Whether the ICMP message ``buf[l4:end]`` sums right (RFC 792, no pseudo-header)."""
    return ones_sum(memoryview(buf)[l4:end]) == 0xFFFF


def parse_embedded(buf: Buffer, l4: int, end: int) -> Embedded | Unusable:
    """The datagram embedded in the ICMP error at ``buf[l4:end]``, or why it is unusable."""
    l3 = l4 + _ICMP_SIZE
    if end - l3 < _IPV4_SIZE:
        return Unusable.MALFORMED
    ip = Ipv4View(buf, l3)
    hlen = ip.header_length  # RFC 5508 REQ-3b: step over any IP options
    if ip.version != 4 or hlen < _IPV4_SIZE or end - l3 < hlen + _MIN_L4:
        return Unusable.MALFORMED
    if not ip.checksum_ok():  # RFC 5508 REQ-3a
        return Unusable.CHECKSUM
    if ip.fragment_offset:
        return Unusable.MALFORMED  # a later fragment names no ports
    proto = ip.protocol
    inner = l3 + hlen
    if proto in (_TCP, _UDP):
        sport, dport = _U16.unpack_from(buf, inner)[0], _U16.unpack_from(buf, inner + 2)[0]
    elif proto == _ICMP and buf[inner] in _ECHO:
        sport = dport = IcmpView(buf, inner).identifier
    else:
        return Unusable.UNSUPPORTED
    return Embedded(l3, inner, end, proto, ip.src, ip.dst, sport, dport)


def rewrite_embedded(
    buf: WritableBuffer, embedded: Embedded, side: Side, address: bytes, port: int
) -> None:
    """Set the embedded source or destination address and port (or echo identifier).

    Keeps the embedded IP header checksum right, and the embedded transport
    checksum when the bytes that hold it are present (TCP's is at byte 16, so
    often cut off; a zero UDP checksum means none, RFC 768).
    """
    l3, l4, end, proto = embedded.l3, embedded.l4, embedded.end, embedded.proto
    at = l3 + _ADDRESS_AT[side]
    old_address = _U32.unpack_from(buf, at)[0]
    new_address = _U32.unpack(address)[0]
    _U32.pack_into(buf, at, new_address)
    header_sum = _U16.unpack_from(buf, l3 + _IPV4_CHECKSUM_AT)[0]
    _U16.pack_into(buf, l3 + _IPV4_CHECKSUM_AT, update32(header_sum, old_address, new_address))
    port_at = l4 + (_ICMP_ID_AT if proto == _ICMP else _PORT_AT[side])
    old_port = _U16.unpack_from(buf, port_at)[0]
    _U16.pack_into(buf, port_at, port)
    csum_at = l4 + L4_CHECKSUM_OFFSET[proto]
    if csum_at + 2 > end:
        return
    value = _U16.unpack_from(buf, csum_at)[0]
    if proto == _UDP and value == 0:
        return
    if proto != _ICMP:  # TCP and UDP sum the pseudo-header, addresses included
        value = update32(value, old_address, new_address)
    value = update16(value, old_port, port)
    if proto == _UDP and value == 0:
        value = 0xFFFF
    _U16.pack_into(buf, csum_at, value)


def refresh_icmp_checksum(buf: WritableBuffer, l4: int, end: int) -> None:
    """Compute the ICMP checksum of ``buf[l4:end]`` again after its body changed."""
    _U16.pack_into(buf, l4 + _ICMP_CHECKSUM_AT, 0)
    _U16.pack_into(buf, l4 + _ICMP_CHECKSUM_AT, internet_checksum(memoryview(buf)[l4:end]))


def build_icmp_error(
    packet: Buffer, l3: int, end: int, *, icmp_type: int, code: int, source: bytes
) -> bytes:
    """An ICMP error from ``source`` about the IPv4 datagram at ``packet[l3:end]``.

    Sent to the datagram's source, quoting as much of it as fits in 576 bytes
    (RFC 1812 §4.3.2.3; RFC 792 asks for the header and 8 bytes at least).
    """
    original = Ipv4View(packet, l3)
    quoted = bytes(memoryview(packet)[l3 : min(end, l3 + MAX_ERROR_SIZE - _IPV4_SIZE - _ICMP_SIZE)])
    return build(Ipv4(src=source, dst=original.src), Icmp(type=icmp_type, code=code), quoted)
