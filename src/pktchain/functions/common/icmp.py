"""ICMP the router sends: which errors it may send (RFC 1812 §4.3.2), their rate, and builders.

* :func:`error_allowed` applies RFC 1812 §4.3.2.7: no ICMP error about an ICMP
  error, about a datagram sent to a broadcast or multicast address (IP or
  link layer), about a fragment other than the first, or about a datagram
  whose source does not name one host.
* :class:`TokenBucket` (from :mod:`~pktchain.functions.common.rate`) is the
  rate limit of RFC 1812 §4.3.2.8.
* :func:`icmp_error` quotes the offending datagram as RFC 1812 §4.3.2.3 asks
  (as much as fits in 576 bytes); Fragmentation Needed carries the next-hop
  MTU (RFC 1191 §4). :func:`echo_reply` answers an echo (RFC 1812 §4.3.3.6).
"""

from __future__ import annotations

from enum import Enum

from pktchain.functions.common.rate import TokenBucket
from pktchain.packet.address import Buffer
from pktchain.packet.headers import ICMP, IPV4, IcmpType, IpProto
from pktchain.packet.layers import Icmp, Ipv4, build
from pktchain.packet.views import IcmpView, Ipv4View

__all__ = [
    "ICMP_ERROR_TYPES",
    "MAX_QUOTE",
    "IcmpError",
    "TokenBucket",
    "echo_reply",
    "error_allowed",
    "icmp_error",
    "unique_host_address",
]

MAX_QUOTE = 576 - IPV4.size - ICMP.size
"""Bytes of the offending datagram an error quotes (RFC 1812 §4.3.2.3: the error
stays within 576 bytes)."""

ICMP_ERROR_TYPES = frozenset(
    (
        IcmpType.DEST_UNREACHABLE,
        4,  # source quench (RFC 792; deprecated by RFC 6633, still an error)
        IcmpType.REDIRECT,
        IcmpType.TIME_EXCEEDED,
        IcmpType.PARAMETER_PROBLEM,
    )
)
"""ICMP types that are errors (RFC 1812 §4.3.2.7 "an ICMP error message")."""

_ICMP = int(IpProto.ICMP)
_TTL = 64  # RFC 1812 §4.2.2.9: a default TTL for the router's own datagrams


class IcmpError(Enum):
    """The ICMP errors the router sends: (type, code) of RFC 792 / RFC 1812 §5.2.7.1."""

    NET_UNREACHABLE = (3, 0)
    HOST_UNREACHABLE = (3, 1)
    PROTOCOL_UNREACHABLE = (3, 2)
    PORT_UNREACHABLE = (3, 3)
    FRAGMENTATION_NEEDED = (3, 4)
    TTL_EXCEEDED = (11, 0)

    @property
    def counter(self) -> str:
        """The counter name of errors of this kind sent."""
        return "icmp-out-" + self.name.lower().replace("_", "-")


def unique_host_address(address: bytes) -> bool:
    """Whether an IPv4 source names one host (RFC 1812 §4.3.2.7, §5.3.7).

    Not 0.0.0.0/8, 127/8, multicast (224/4), reserved (240/4) or the limited
    broadcast address. Subnet broadcast addresses are the caller's to check.
    """
    first = address[0]
    return first not in (0, 127) and first < 224


def error_allowed(packet: Buffer, l3: int, end: int, *, link_broadcast: bool) -> bool:
    """Whether RFC 1812 §4.3.2.7 lets the router send an error about ``packet[l3:end]``."""
    if link_broadcast or end - l3 < IPV4.size:
        return False
    ip = Ipv4View(packet, l3)
    if ip.fragment_offset:
        return False  # only the first fragment may cause an error
    if not unique_host_address(ip.src) or not unique_host_address(ip.dst):
        return False  # covers multicast and 255.255.255.255 destinations too
    l4 = l3 + ip.header_length
    if ip.protocol == _ICMP:
        return end - l4 >= 1 and packet[l4] not in ICMP_ERROR_TYPES
    return True


def icmp_error(
    packet: Buffer, l3: int, end: int, kind: IcmpError, *, source: bytes, mtu: int = 0
) -> bytes:
    """The IPv4 datagram of an error from ``source`` about ``packet[l3:end]``, to its source.

    ``mtu`` is the next-hop MTU of Fragmentation Needed (RFC 1191 §4: the low 16
    bits of the second word; the high 16 stay zero).
    """
    original = Ipv4View(packet, l3)
    quoted = bytes(memoryview(packet)[l3 : min(end, l3 + MAX_QUOTE)])
    icmp_type, code = kind.value
    rest = mtu if kind is IcmpError.FRAGMENTATION_NEEDED else 0
    return build(
        Ipv4(src=source, dst=original.src, ttl=_TTL),
        Icmp(type=icmp_type, code=code, identifier=0, sequence=rest),
        quoted,
    )


def echo_reply(packet: Buffer, l3: int, l4: int, end: int) -> bytes:
    """The echo reply (RFC 792) to the echo request at ``packet[l3:end]``.

    From the address the request was sent to, with its identifier, sequence
    number and data (RFC 1812 §4.3.3.6; RFC 1122 §3.2.2.6).
    """
    ip = Ipv4View(packet, l3)
    request = IcmpView(packet, l4)
    data = bytes(memoryview(packet)[l4 + ICMP.size : end])
    return build(
        Ipv4(src=ip.dst, dst=ip.src, ttl=_TTL, tos=ip.tos),
        Icmp(
            type=IcmpType.ECHO_REPLY,
            code=0,
            identifier=request.identifier,
            sequence=request.sequence,
        ),
        data,
    )
