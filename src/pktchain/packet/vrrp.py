"""VRRP version 3 for IPv4 (RFC 5798): advertisements built and parsed, with the wire checks.

A VRRP router tells the link it is alive by sending advertisements: a small
message (:data:`~pktchain.packet.headers.VRRP`) straight in IP, protocol 112,
TTL 255, to the multicast group 224.0.0.18 (or, as keepalived's
``unicast_peer`` does, to each peer's address), from the virtual router MAC
``00:00:5e:00:01:{VRID}`` (§7.3). :func:`advertisement_frame` builds the whole
frame as pktchain's drivers carry it (a zero ``virtio_net_hdr``, then
Ethernet); :func:`parse_advertisement` reads a received IPv4 packet and makes
the checks of §7.1 that need nothing but the packet: TTL, version, type,
completeness, checksum. The checks that need the configuration (the VRID, the
addresses, the peers) belong to the state machine
(:mod:`pktchain.functions.router.vrrp`). Like the frame parser it never
raises: a bad packet comes back with a :class:`VrrpError` reason.

The checksum covers the VRRP message and the IPv4 pseudo-header (source,
destination, zero, protocol 112, VRRP length), §5.2.8; this is what keepalived
sends and what scapy's ``VRRPv3`` computes over IPv4.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple

from pktchain.packet.address import Buffer
from pktchain.packet.checksum import internet_checksum, ones_sum, pseudo_header_sum
from pktchain.packet.headers import IPV4, VRRP, EtherType, IpProto, VrrpType
from pktchain.packet.layers import Ethernet, Ipv4, Vrrp, build
from pktchain.packet.parse import parse_ip
from pktchain.packet.virtio import VIRTIO_NET_HDR_LEN

__all__ = [
    "MAX_ADDRESSES",
    "MAX_ADVER_INT",
    "VRRP_MULTICAST",
    "VRRP_MULTICAST_MAC",
    "VRRP_TTL",
    "VRRP_VERSION",
    "Advertisement",
    "VrrpError",
    "advertisement_frame",
    "advertisement_packet",
    "parse_advertisement",
    "virtual_mac",
]

VRRP_VERSION = 3
"""The version this module speaks (§5.2.1)."""
VRRP_TTL = 255
"""Sent with, and required on receipt (§5.1.1.3): a packet from off the link has less."""
VRRP_MULTICAST = bytes((224, 0, 0, 18))
"""The IPv4 group of VRRP (§5.1.1.2), link-local scope: never forwarded."""
VRRP_MULTICAST_MAC = bytes.fromhex("01005e000012")
"""224.0.0.18 mapped to Ethernet (RFC 1112 §6.4: 01:00:5e and the group's low 23 bits)."""
MAX_ADVER_INT = (1 << 12) - 1
"""Max Adver Int is 12 bits of centiseconds (§5.2.7): 40.95 seconds at most."""
MAX_ADDRESSES = 255
"""Count IPvX Addr is one byte (§5.2.5)."""

_VIRTUAL_MAC_PREFIX = bytes.fromhex("00005e0001")  # §7.3, IPv4 case
_BROADCAST_MAC = b"\xff" * 6
_ZERO_VNET = bytes(VIRTIO_NET_HDR_LEN)
_VRRP = int(IpProto.VRRP)
_HEADER = VRRP.size
_ADDRESS = 4
_unpack_vrrp = VRRP.struct.unpack_from
_VERSION = VRRP.accessor("version")
_TYPE = VRRP.accessor("type")
_INTERVAL = VRRP.accessor("max_adver_int")
_TTL_AT = IPV4.offset("ttl")
_IHL = IPV4.accessor("ihl")


class VrrpError(StrEnum):
    """Why a received packet is not a sound VRRPv3 advertisement (stable counter names)."""

    IP_MALFORMED = "ip-malformed"
    """Not a well-formed IPv4 packet (the frame parser's reason says more)."""
    IP_CHECKSUM = "ip-checksum"
    """The IPv4 header checksum is wrong (RFC 1812 §5.2.2)."""
    NOT_VRRP = "not-vrrp"
    """IPv4, but not protocol 112."""
    FRAGMENT = "fragment"
    """An IP fragment: an advertisement is at most 1,048 bytes and is never fragmented."""
    TTL = "ttl"
    """IP TTL not 255 (§5.1.1.3, §7.1)."""
    TRUNCATED = "truncated"
    """Shorter than the fixed header and the addresses it counts (§7.1)."""
    VERSION = "version"
    """VRRP version not 3 (§7.1)."""
    TYPE = "type"
    """Not an advertisement, the only type there is (§5.2.2)."""
    LENGTH = "length"
    """Longer than the fixed header and the addresses it counts."""
    CHECKSUM = "checksum"
    """The VRRP checksum over the message and pseudo-header is wrong (§5.2.8, §7.1)."""


class Advertisement(NamedTuple):
    """A parsed advertisement (an IPv4 VRRP packet), sound when ``error`` is None.

    Fields not reached before the error keep -1 (numbers) or empty values; the
    VRID is filled in as soon as the fixed header is there, so that a bad
    packet can be counted against the virtual router it names.
    """

    src: bytes
    """IPv4 source: the sender's primary address, compared in elections (§6.4.3)."""
    dst: bytes
    ttl: int
    version: int
    type: int
    vrid: int
    priority: int
    address_count: int
    """Count IPvX Addr."""
    max_adver_int: int
    """Centiseconds (§5.2.7)."""
    checksum: int
    addresses: tuple[bytes, ...]
    error: VrrpError | None

    @property
    def ok(self) -> bool:
        """True when every check of the packet alone passed."""
        return self.error is None


_NOTHING = Advertisement(b"", b"", -1, -1, -1, -1, -1, -1, -1, -1, (), None)


def virtual_mac(vrid: int) -> bytes:
    """The virtual router MAC of ``vrid`` for IPv4: ``00:00:5e:00:01:{VRID}`` (§7.3)."""
    if not 1 <= vrid <= 255:
        raise ValueError(f"vrid: {vrid!r} is not in 1..255")
    return _VIRTUAL_MAC_PREFIX + bytes((vrid,))


def advertisement_packet(
    vrid: int,
    priority: int,
    max_adver_int: int,
    addresses: Sequence[bytes],
    *,
    source: bytes,
    destination: bytes = VRRP_MULTICAST,
) -> bytes:
    """The IPv4 packet of one advertisement (§5.1, §7.2), checksums filled in.

    ``max_adver_int`` is in centiseconds; ``addresses``, ``source`` and
    ``destination`` are 4-byte IPv4 addresses. TTL 255, protocol 112, DF set
    and ID 0 (an atomic datagram, RFC 6864 §4.1). Raises ValueError naming the
    argument that does not fit its field.
    """
    if not addresses or len(addresses) > MAX_ADDRESSES:
        raise ValueError(f"addresses: {len(addresses)} given, 1..{MAX_ADDRESSES} fit")
    if any(len(a) != _ADDRESS for a in (*addresses, source, destination)):
        raise ValueError("addresses, source and destination must be 4-byte IPv4 addresses")
    if not 0 <= max_adver_int <= MAX_ADVER_INT:
        raise ValueError(f"max_adver_int: {max_adver_int} is not in 0..{MAX_ADVER_INT}")
    if not 0 <= priority <= 255:
        raise ValueError(f"priority: {priority} is not in 0..255")
    virtual_mac(vrid)  # checks the VRID
    return build(
        Ipv4(src=source, dst=destination, ttl=VRRP_TTL, df=True),
        Vrrp(vrid=vrid, priority=priority, max_adver_int=max_adver_int, addresses=addresses),
    )


def advertisement_frame(
    vrid: int,
    priority: int,
    max_adver_int: int,
    addresses: Sequence[bytes],
    *,
    source: bytes,
    destination: bytes = VRRP_MULTICAST,
    eth_dst: bytes | None = None,
) -> bytes:
    """One advertisement as a frame: a zero ``virtio_net_hdr``, Ethernet, IPv4, VRRP.

    The Ethernet source is the virtual router MAC (§7.2). The Ethernet
    destination is ``eth_dst`` when given, else 01:00:5e:00:00:12 for the
    multicast group and all zeros for a unicast ``destination`` (whoever sends
    it resolves the peer's MAC and writes it there). Arguments as
    :func:`advertisement_packet`.
    """
    packet = advertisement_packet(
        vrid, priority, max_adver_int, addresses, source=source, destination=destination
    )
    if eth_dst is None:
        eth_dst = VRRP_MULTICAST_MAC if destination == VRRP_MULTICAST else bytes(6)
    ethernet = Ethernet(dst=eth_dst, src=virtual_mac(vrid), type=EtherType.IPV4)
    return _ZERO_VNET + build(ethernet, packet)


def parse_advertisement(buf: Buffer, offset: int = 0) -> Advertisement:
    """Parse and check the IPv4 packet at ``buf[offset]`` as a VRRPv3 advertisement.

    The checks, in the order of §7.1: a sound IPv4 header (checksum included)
    carrying protocol 112, not fragmented; TTL 255; VRRP version 3; type
    advertisement; the whole message there (fixed part and every address
    counted, nothing more); the checksum. The first that fails is ``error``.
    Never raises.
    """
    info = parse_ip(buf, offset)
    if info.error is not None or info.ip_version != 4:
        return _NOTHING._replace(src=info.src, dst=info.dst, error=VrrpError.IP_MALFORMED)
    l3, end = info.l3, info.end
    src, dst = info.src, info.dst
    if info.proto != _VRRP:
        return _NOTHING._replace(src=src, dst=dst, error=VrrpError.NOT_VRRP)
    header_length = _IHL.read_int(buf, l3) * 4
    if ones_sum(memoryview(buf)[l3 : l3 + header_length]) != 0xFFFF:
        return _NOTHING._replace(src=src, dst=dst, error=VrrpError.IP_CHECKSUM)
    if info.fragment:
        return _NOTHING._replace(src=src, dst=dst, error=VrrpError.FRAGMENT)
    ttl = buf[l3 + _TTL_AT]
    seen = _NOTHING._replace(src=src, dst=dst, ttl=ttl)
    start = l3 + header_length
    length = end - start
    if length < _HEADER:
        short = VrrpError.TTL if ttl != VRRP_TTL else VrrpError.TRUNCATED
        return seen._replace(error=short)
    version_type, vrid, priority, count, reserved_interval, checksum = _unpack_vrrp(buf, start)
    seen = seen._replace(
        version=version_type >> _VERSION.shift,
        type=version_type & _TYPE.mask,
        vrid=vrid,
        priority=priority,
        address_count=count,
        max_adver_int=reserved_interval & _INTERVAL.mask,
        checksum=checksum,
    )
    error: VrrpError | None = None
    if ttl != VRRP_TTL:
        error = VrrpError.TTL
    elif seen.version != VRRP_VERSION:
        error = VrrpError.VERSION
    elif seen.type != VrrpType.ADVERTISEMENT:
        error = VrrpError.TYPE
    elif length < _HEADER + _ADDRESS * count:
        error = VrrpError.TRUNCATED
    elif length > _HEADER + _ADDRESS * count:
        error = VrrpError.LENGTH
    elif internet_checksum(memoryview(buf)[start:end], pseudo_header_sum(src, dst, _VRRP, length)):
        error = VrrpError.CHECKSUM
    if error is not None:
        return seen._replace(error=error)
    first = start + _HEADER
    addresses = tuple(
        bytes(buf[first + i : first + i + _ADDRESS]) for i in range(0, _ADDRESS * count, _ADDRESS)
    )
    return seen._replace(addresses=addresses)
