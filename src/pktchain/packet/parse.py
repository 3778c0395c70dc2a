"""Parsing a frame into layer offsets without copying it: the per-packet entry point.

:func:`parse_frame` (Ethernet) and :func:`parse_ip` (a bare IP packet, as on a
TUN device or inside NSH) read the headers through the precompiled structs of
:mod:`pktchain.packet.headers` and return a :class:`FrameInfo`: the offset of
each layer in the caller's buffer, the EtherType, IP version, L4 protocol, the
addresses and ports of the flow, and, when the frame is truncated or
inconsistent, a :class:`Malformed` reason saying where. They never raise: a
malformed frame from the wire is a counted drop, not an exception (the node's
packet loop relies on this). Header checksums are not verified here (offloading
NICs leave them to be completed), and TCP options are not walked; the views and
:mod:`pktchain.packet.checksum` do both on demand.
"""

from __future__ import annotations

import struct
from enum import StrEnum
from typing import Final, NamedTuple

from pktchain.packet.address import Buffer
from pktchain.packet.headers import (
    ARP,
    ETHERNET,
    ICMP,
    IPV4,
    IPV6,
    IPV6_EXTENSION,
    IPV6_FRAGMENT,
    TCP,
    UDP,
    VLAN_TAG,
    EtherType,
    IcmpType,
    Icmpv6Type,
    IpProto,
)
from pktchain.packet.options import options_well_formed

__all__ = [
    "FLOW_END",
    "FLOW_START",
    "MAX_IPV6_EXTENSIONS",
    "MAX_VLAN_TAGS",
    "FrameInfo",
    "Malformed",
    "parse_frame",
    "parse_ip",
]

MAX_VLAN_TAGS = 4
"""Tags beyond this many (802.1ad allows two) are reported as :attr:`Malformed.VLAN_DEPTH`."""

MAX_IPV6_EXTENSIONS = 8
"""Extension headers beyond this many are reported as :attr:`Malformed.IPV6_EXT_CHAIN`."""


class Malformed(StrEnum):
    """Why a frame, or an encapsulation inside it, could not be parsed; stable names."""

    BAD_OFFSET = "bad-offset"
    TRUNCATED_ETHERNET = "truncated-ethernet"
    TRUNCATED_VLAN = "truncated-vlan"
    VLAN_DEPTH = "vlan-depth"
    TRUNCATED_ARP = "truncated-arp"
    ARP_FORMAT = "arp-format"  # not Ethernet/IPv4 ARP (RFC 826 hlen 6, plen 4)
    TRUNCATED_IP = "truncated-ip"
    BAD_IP_VERSION = "bad-ip-version"
    TRUNCATED_IPV4 = "truncated-ipv4"
    BAD_IHL = "bad-ihl"
    IPV4_TOTAL_LENGTH = "ipv4-total-length"
    IPV4_OPTIONS = "ipv4-options"
    TRUNCATED_IPV6 = "truncated-ipv6"
    TRUNCATED_IPV6_EXT = "truncated-ipv6-ext"
    IPV6_EXT_CHAIN = "ipv6-ext-chain"
    TRUNCATED_TCP = "truncated-tcp"
    TCP_DATA_OFFSET = "tcp-data-offset"
    TCP_OPTIONS = "tcp-options"
    TRUNCATED_UDP = "truncated-udp"
    UDP_LENGTH = "udp-length"
    TRUNCATED_ICMP = "truncated-icmp"
    TRUNCATED_ICMPV6 = "truncated-icmpv6"
    TRUNCATED_VXLAN_GPE = "truncated-vxlan-gpe"
    VXLAN_GPE_VERSION = "vxlan-gpe-version"
    TRUNCATED_NSH = "truncated-nsh"
    NSH_VERSION = "nsh-version"
    NSH_LENGTH = "nsh-length"
    NSH_MD_TYPE = "nsh-md-type"
    NSH_TLV = "nsh-tlv"
    UNSUPPORTED_NEXT_PROTOCOL = "unsupported-next-protocol"


class FrameInfo(NamedTuple):
    """Where each layer of a frame is, and the flow fields read on the way.

    Offsets index the buffer given to the parser; -1 means the layer is absent
    or was not reached. When ``error`` is set the fields up to the failing layer
    are filled in and the rest keep their "absent" values.
    """

    start: int
    """Offset the parser started at."""
    l2: int
    """Ethernet header, or -1 for a bare IP packet."""
    vlans: tuple[int, ...]
    """Offset of each 802.1Q/802.1ad tag's TCI, outermost first (the TPID is just before)."""
    ethertype: int
    """EtherType after the tags (IPv4/IPv6 for a bare IP packet)."""
    l3: int
    """First byte after the L2 headers: IP, ARP, NSH or whatever ``ethertype`` names."""
    ip_version: int
    """4 or 6, 0 if not IP."""
    l4: int
    """L4 header; -1 for a non-first fragment or IPv6 "no next header"."""
    payload: int
    """First byte after the L4 header (after options); equals ``l4`` for unknown protocols."""
    end: int
    """End of the IP datagram (IPv4 total length / IPv6 payload length), or of the buffer."""
    src: bytes
    """IP source address (ARP: sender protocol address); b"" when absent."""
    dst: bytes
    """IP destination address (ARP: target protocol address); b"" when absent."""
    proto: int
    """IP protocol, after IPv6 extension headers; -1 if not IP."""
    sport: int
    """TCP/UDP source port; the identifier for ICMP/ICMPv6 echo; else 0."""
    dport: int
    """TCP/UDP destination port; the identifier for ICMP/ICMPv6 echo; else 0."""
    tcp_flags: int
    """TCP control bits (see TcpFlag), 0 for other protocols."""
    fragment: bool
    """Any IP fragment, first or not (RFC 791 MF/offset, RFC 8200 §4.5)."""
    error: Malformed | None
    """None when every layer parsed is consistent."""

    @property
    def ok(self) -> bool:
        """True when nothing was malformed."""
        return self.error is None

    @property
    def ip(self) -> bool:
        """True for IPv4 or IPv6."""
        return self.ip_version != 0


# The flow's 5-tuple (src, dst, proto, sport, dport) lies side by side in a
# FrameInfo, so ``info[FLOW_START:FLOW_END]`` is the key of the node's flow
# tables in one slice (see pktchain.packet.flow.FlowKey).  Literal values, so
# that type checkers know the slice's type; the check below keeps them true.
FLOW_START: Final = 9
FLOW_END: Final = 14
if FrameInfo._fields[FLOW_START:FLOW_END] != ("src", "dst", "proto", "sport", "dport"):
    raise ImportError("FrameInfo moved its flow fields: FLOW_START, FLOW_END")  # pragma: no cover

_new = tuple.__new__
_NO_TAGS: tuple[int, ...] = ()

_ETH_SIZE = ETHERNET.size
_ETHERTYPE_AT = ETHERNET.offset("ethertype")
_TAG_SIZE = VLAN_TAG.size
_TAG_ETHERTYPE_AT = VLAN_TAG.offset("ethertype")
_unpack_u16 = struct.Struct("!H").unpack_from
_TPIDS = frozenset((EtherType.VLAN, EtherType.QINQ, EtherType.QINQ_LEGACY))

_ETH_IPV4 = int(EtherType.IPV4)
_ETH_IPV6 = int(EtherType.IPV6)
_ETH_ARP = int(EtherType.ARP)

_ARP_SIZE = ARP.size
_unpack_arp = ARP.struct.unpack_from

_IPV4_SIZE = IPV4.size
_unpack_ipv4 = IPV4.struct.unpack_from
# The common case, an untagged IPv4 frame, in one call: the Ethernet EtherType
# followed by the IPv4 fixed header, both formats taken from their layouts.
_unpack_eth_ipv4 = struct.Struct(
    f"!{_ETHERTYPE_AT}x{ETHERNET.struct.format[-1]}{IPV4.struct.format[1:]}"
).unpack_from
_ETH_IPV4_SIZE = _ETH_SIZE + _IPV4_SIZE
_V4_VERSION = IPV4.accessor("version")
_V4_IHL = IPV4.accessor("ihl")
_IPV4_NO_OPTIONS = 4 << _V4_VERSION.shift | 5  # version 4, IHL 5 words
# RFC 791 §3.1: MF set or a fragment offset means a fragment; a non-zero offset
# means not the first one, which carries no L4 header.
_V4_FRAGMENT_OFFSET = IPV4.accessor("fragment_offset").mask
_V4_FRAGMENT = IPV4.accessor("mf").mask | _V4_FRAGMENT_OFFSET
_V6_VERSION_SHIFT = IPV6.accessor("version").shift
_V6_FRAGMENT_OFFSET_SHIFT = IPV6_FRAGMENT.accessor("fragment_offset").shift
_IPV6_SIZE = IPV6.size
_unpack_ipv6 = IPV6.struct.unpack_from
_unpack_ext = IPV6_EXTENSION.struct.unpack_from
_EXT_MIN = 8  # every IPv6 extension header is a multiple of 8 bytes (RFC 8200 §4)
_FRAG_SIZE = IPV6_FRAGMENT.size
_unpack_frag = IPV6_FRAGMENT.struct.unpack_from
_SKIPPED_EXTENSIONS = frozenset((IpProto.HOPOPT, IpProto.ROUTING, IpProto.DSTOPTS))
_FRAGMENT = int(IpProto.FRAGMENT)
_NO_NEXT_HEADER = int(IpProto.NO_NEXT_HEADER)

_TCP = int(IpProto.TCP)
_UDP = int(IpProto.UDP)
_ICMP = int(IpProto.ICMP)
_ICMPV6 = int(IpProto.ICMPV6)
_TCP_SIZE = TCP.size
# Ports and the data-offset/flags word in one call; the layout fixes their places.
_unpack_tcp = struct.Struct(f"!HH{TCP.offset('offset_flags') - 4}xH").unpack_from
_TCP_DATA_OFFSET_SHIFT = TCP.accessor("data_offset").shift
_TCP_FLAGS = TCP.accessor("flags").mask
_UDP_SIZE = UDP.size
_unpack_udp = struct.Struct("!HHH").unpack_from  # sport, dport, length: UDP's first 3 fields
_ICMP_SIZE = ICMP.size  # ICMP and ICMPv6 share the 8-byte layout
_unpack_icmp = struct.Struct(f"!B{ICMP.offset('identifier') - 1}xH").unpack_from
_ICMP_ECHO = frozenset((IcmpType.ECHO_REQUEST, IcmpType.ECHO_REPLY))
_ICMPV6_ECHO = frozenset((Icmpv6Type.ECHO_REQUEST, Icmpv6Type.ECHO_REPLY))


def _fail(
    error: Malformed,
    start: int,
    *,
    l2: int = -1,
    vlans: tuple[int, ...] = _NO_TAGS,
    ethertype: int = 0,
    l3: int = -1,
    ip_version: int = 0,
    l4: int = -1,
    end: int = 0,
    src: bytes = b"",
    dst: bytes = b"",
    proto: int = -1,
    fragment: bool = False,
) -> FrameInfo:
    fields = (start, l2, vlans, ethertype, l3, ip_version, l4, -1, end, src, dst, proto, 0, 0, 0)
    return _new(FrameInfo, (*fields, fragment, error))


def _contiguous_bytes(buf: memoryview) -> Buffer:
    """``buf`` as a buffer whose len() and offsets count bytes."""
    if buf.c_contiguous:
        return buf.cast("B")
    return buf.tobytes()


def parse_frame(buf: Buffer, offset: int = 0) -> FrameInfo:
    """Parse the Ethernet frame starting at ``buf[offset]`` (after any virtio_net_hdr).

    Walks Ethernet II, any stack of 802.1Q / 802.1ad tags, then IPv4 (with
    options), IPv6 (skipping hop-by-hop, routing, fragment and destination
    options headers) or ARP, then TCP, UDP, ICMP or ICMPv6. Any other EtherType
    (NSH included) stops at ``l3``. Never raises.
    """
    size = len(buf)
    if type(buf) is memoryview and (buf.nbytes != size or not buf.c_contiguous):
        buf = _contiguous_bytes(buf)
        size = len(buf)
    if offset < 0 or offset > size:
        return _fail(Malformed.BAD_OFFSET, offset)
    if size - offset >= _ETH_IPV4_SIZE:
        # Fast path: an untagged IPv4 TCP or UDP frame without IP options, that
        # is consistent. Anything else, valid or not, takes the general path.
        ethertype, version_ihl, _tos, total, _id, flags_frag, _ttl, proto, _sum, src, dst = (
            _unpack_eth_ipv4(buf, offset)
        )
        l3 = offset + _ETH_SIZE
        if (
            ethertype == _ETH_IPV4
            and version_ihl == _IPV4_NO_OPTIONS
            and _IPV4_SIZE <= total <= size - l3
            and not flags_frag & _V4_FRAGMENT
        ):
            l4 = l3 + _IPV4_SIZE
            end = l3 + total
            if proto == _TCP and end - l4 >= _TCP_SIZE:
                sport, dport, offset_flags = _unpack_tcp(buf, l4)
                header = (offset_flags >> _TCP_DATA_OFFSET_SHIFT) * 4
                if _TCP_SIZE <= header <= end - l4:
                    return _new(
                        FrameInfo,
                        (
                            offset,
                            offset,
                            _NO_TAGS,
                            _ETH_IPV4,
                            l3,
                            4,
                            l4,
                            l4 + header,
                            end,
                            src,
                            dst,
                            proto,
                            sport,
                            dport,
                            offset_flags & _TCP_FLAGS,
                            False,
                            None,
                        ),
                    )
            elif proto == _UDP and end - l4 >= _UDP_SIZE:
                sport, dport, length = _unpack_udp(buf, l4)
                if _UDP_SIZE <= length <= end - l4:
                    return _new(
                        FrameInfo,
                        (
                            offset,
                            offset,
                            _NO_TAGS,
                            _ETH_IPV4,
                            l3,
                            4,
                            l4,
                            l4 + _UDP_SIZE,
                            end,
                            src,
                            dst,
                            proto,
                            sport,
                            dport,
                            0,
                            False,
                            None,
                        ),
                    )
    elif size - offset < _ETH_SIZE:
        return _fail(Malformed.TRUNCATED_ETHERNET, offset, l2=offset, end=size)
    ethertype = _unpack_u16(buf, offset + _ETHERTYPE_AT)[0]
    p = offset + _ETH_SIZE
    vlans = _NO_TAGS
    if ethertype in _TPIDS:
        tags: list[int] = []
        while ethertype in _TPIDS:
            if len(tags) == MAX_VLAN_TAGS:
                return _fail(Malformed.VLAN_DEPTH, offset, l2=offset, vlans=tuple(tags), end=size)
            if size - p < _TAG_SIZE:
                return _fail(
                    Malformed.TRUNCATED_VLAN, offset, l2=offset, vlans=tuple(tags), end=size
                )
            tags.append(p)
            ethertype = _unpack_u16(buf, p + _TAG_ETHERTYPE_AT)[0]
            p += _TAG_SIZE
        vlans = tuple(tags)
    if ethertype == _ETH_IPV4:
        return _ipv4(buf, offset, offset, vlans, p, size)
    if ethertype == _ETH_IPV6:
        return _ipv6(buf, offset, offset, vlans, p, size)
    if ethertype == _ETH_ARP:
        return _arp(buf, offset, vlans, p, size)
    fields = (offset, offset, vlans, ethertype, p, 0, -1, -1, size, b"", b"", -1, 0, 0, 0)
    return _new(FrameInfo, (*fields, False, None))


def parse_ip(buf: Buffer, offset: int = 0) -> FrameInfo:
    """Parse the bare IPv4 or IPv6 packet at ``buf[offset]`` (by its version nibble).

    ``l2`` is -1 and ``ethertype`` is the one the packet would have. Never raises.
    """
    size = len(buf)
    if type(buf) is memoryview and (buf.nbytes != size or not buf.c_contiguous):
        buf = _contiguous_bytes(buf)
        size = len(buf)
    if offset < 0 or offset > size:
        return _fail(Malformed.BAD_OFFSET, offset)
    if offset == size:
        return _fail(Malformed.TRUNCATED_IP, offset, l3=offset, end=size)
    version = buf[offset] >> _V4_VERSION.shift  # IPv6 keeps it in the same nibble
    if version == 4:
        return _ipv4(buf, offset, -1, _NO_TAGS, offset, size)
    if version == 6:
        return _ipv6(buf, offset, -1, _NO_TAGS, offset, size)
    return _fail(Malformed.BAD_IP_VERSION, offset, l3=offset, end=size)


def _arp(buf: Buffer, start: int, vlans: tuple[int, ...], p: int, size: int) -> FrameInfo:
    if size - p < _ARP_SIZE:
        return _fail(
            Malformed.TRUNCATED_ARP,
            start,
            l2=start,
            vlans=vlans,
            ethertype=_ETH_ARP,
            l3=p,
            end=size,
        )
    htype, ptype, hlen, plen, _oper, _sha, spa, _tha, tpa = _unpack_arp(buf, p)
    if htype != 1 or ptype != _ETH_IPV4 or hlen != 6 or plen != 4:
        return _fail(
            Malformed.ARP_FORMAT, start, l2=start, vlans=vlans, ethertype=_ETH_ARP, l3=p, end=size
        )
    fields = (start, start, vlans, _ETH_ARP, p, 0, -1, -1, p + _ARP_SIZE, spa, tpa, -1, 0, 0, 0)
    return _new(FrameInfo, (*fields, False, None))


def _ipv4(  # noqa: PLR0917 - positional: per-packet path
    buf: Buffer, start: int, l2: int, vlans: tuple[int, ...], p: int, size: int
) -> FrameInfo:
    if size - p < _IPV4_SIZE:
        return _fail(
            Malformed.TRUNCATED_IPV4,
            start,
            l2=l2,
            vlans=vlans,
            ethertype=_ETH_IPV4,
            l3=p,
            ip_version=4,
            end=size,
        )
    version_ihl, _tos, total, _id, flags_frag, _ttl, proto, _sum, src, dst = _unpack_ipv4(buf, p)
    error: Malformed | None = None
    hlen = (version_ihl & _V4_IHL.mask) * 4
    if version_ihl >> _V4_VERSION.shift != 4:
        error = Malformed.BAD_IP_VERSION
    elif hlen < _IPV4_SIZE:
        error = Malformed.BAD_IHL
    elif total < hlen:
        error = Malformed.IPV4_TOTAL_LENGTH
    elif total > size - p:
        error = Malformed.TRUNCATED_IPV4
    elif hlen > _IPV4_SIZE and not options_well_formed(buf, p + _IPV4_SIZE, p + hlen):
        error = Malformed.IPV4_OPTIONS
    fragment = (flags_frag & _V4_FRAGMENT) != 0
    if error is not None:
        return _fail(
            error,
            start,
            l2=l2,
            vlans=vlans,
            ethertype=_ETH_IPV4,
            l3=p,
            ip_version=4,
            end=min(size, p + total),
            src=src,
            dst=dst,
            proto=proto,
            fragment=fragment,
        )
    end = p + total
    if flags_frag & _V4_FRAGMENT_OFFSET:
        fields = (start, l2, vlans, _ETH_IPV4, p, 4, -1, -1, end, src, dst, proto, 0, 0, 0)
        return _new(FrameInfo, (*fields, True, None))
    return _l4(buf, start, l2, vlans, _ETH_IPV4, p, 4, proto, p + hlen, end, src, dst, fragment)


def _ipv6(  # noqa: PLR0917 - positional: per-packet path
    buf: Buffer, start: int, l2: int, vlans: tuple[int, ...], p: int, size: int
) -> FrameInfo:
    if size - p < _IPV6_SIZE:
        return _fail(
            Malformed.TRUNCATED_IPV6,
            start,
            l2=l2,
            vlans=vlans,
            ethertype=_ETH_IPV6,
            l3=p,
            ip_version=6,
            end=size,
        )
    version_class_flow, payload_length, next_header, _hops, src, dst = _unpack_ipv6(buf, p)
    if version_class_flow >> _V6_VERSION_SHIFT != 6:
        return _fail(
            Malformed.BAD_IP_VERSION,
            start,
            l2=l2,
            vlans=vlans,
            ethertype=_ETH_IPV6,
            l3=p,
            ip_version=6,
            end=size,
            src=src,
            dst=dst,
        )
    end = p + _IPV6_SIZE + payload_length
    if end > size:
        return _fail(
            Malformed.TRUNCATED_IPV6,
            start,
            l2=l2,
            vlans=vlans,
            ethertype=_ETH_IPV6,
            l3=p,
            ip_version=6,
            end=size,
            src=src,
            dst=dst,
            proto=next_header,
        )
    q = p + _IPV6_SIZE
    fragment = False
    # RFC 8200 §4.1: walk the chain of extension headers to the upper-layer header.
    for _ in range(MAX_IPV6_EXTENSIONS + 1):
        if next_header in _SKIPPED_EXTENSIONS:
            if end - q < _EXT_MIN:
                break
            next_header, ext_len = _unpack_ext(buf, q)
            q += (ext_len + 1) * 8
            if q > end:
                break
        elif next_header == _FRAGMENT:
            if end - q < _FRAG_SIZE:
                break
            next_header, _res, offset_flags, _ident = _unpack_frag(buf, q)
            q += _FRAG_SIZE
            fragment = True
            if (
                offset_flags >> _V6_FRAGMENT_OFFSET_SHIFT
            ):  # not the first fragment: no upper-layer header here
                fields = (start, l2, vlans, _ETH_IPV6, p, 6, -1, -1, end, src, dst, next_header)
                return _new(FrameInfo, (*fields, 0, 0, 0, True, None))
        elif next_header == _NO_NEXT_HEADER:
            fields = (start, l2, vlans, _ETH_IPV6, p, 6, -1, -1, end, src, dst, next_header)
            return _new(FrameInfo, (*fields, 0, 0, 0, fragment, None))
        else:
            return _l4(
                buf, start, l2, vlans, _ETH_IPV6, p, 6, next_header, q, end, src, dst, fragment
            )
    else:
        return _fail(
            Malformed.IPV6_EXT_CHAIN,
            start,
            l2=l2,
            vlans=vlans,
            ethertype=_ETH_IPV6,
            l3=p,
            ip_version=6,
            end=end,
            src=src,
            dst=dst,
            proto=next_header,
            fragment=fragment,
        )
    return _fail(
        Malformed.TRUNCATED_IPV6_EXT,
        start,
        l2=l2,
        vlans=vlans,
        ethertype=_ETH_IPV6,
        l3=p,
        ip_version=6,
        end=end,
        src=src,
        dst=dst,
        proto=next_header,
        fragment=fragment,
    )


def _l4(  # noqa: PLR0917 - positional: per-packet path
    buf: Buffer,
    start: int,
    l2: int,
    vlans: tuple[int, ...],
    ethertype: int,
    l3: int,
    version: int,
    proto: int,
    l4: int,
    end: int,
    src: bytes,
    dst: bytes,
    fragment: bool,
) -> FrameInfo:
    available = end - l4
    error: Malformed
    if proto == _TCP:
        if available < _TCP_SIZE:
            error = Malformed.TRUNCATED_TCP
        else:
            sport, dport, offset_flags = _unpack_tcp(buf, l4)
            header = (offset_flags >> _TCP_DATA_OFFSET_SHIFT) * 4
            if header < _TCP_SIZE or header > available:
                error = Malformed.TCP_DATA_OFFSET
            else:
                return _new(
                    FrameInfo,
                    (
                        start,
                        l2,
                        vlans,
                        ethertype,
                        l3,
                        version,
                        l4,
                        l4 + header,
                        end,
                        src,
                        dst,
                        proto,
                        sport,
                        dport,
                        offset_flags & _TCP_FLAGS,
                        fragment,
                        None,
                    ),
                )
    elif proto == _UDP:
        if available < _UDP_SIZE:
            error = Malformed.TRUNCATED_UDP
        else:
            sport, dport, length = _unpack_udp(buf, l4)
            # RFC 768: the length covers header and data; bytes past it are padding.
            # A first fragment holds only part of the datagram the length covers.
            if length < _UDP_SIZE or (length > available and not fragment):
                error = Malformed.UDP_LENGTH
            else:
                return _new(
                    FrameInfo,
                    (
                        start,
                        l2,
                        vlans,
                        ethertype,
                        l3,
                        version,
                        l4,
                        l4 + _UDP_SIZE,
                        end,
                        src,
                        dst,
                        proto,
                        sport,
                        dport,
                        0,
                        fragment,
                        None,
                    ),
                )
    elif (proto == _ICMP and version == 4) or (proto == _ICMPV6 and version == 6):
        if available < _ICMP_SIZE:
            error = Malformed.TRUNCATED_ICMP if version == 4 else Malformed.TRUNCATED_ICMPV6
        else:
            icmp_type, ident = _unpack_icmp(buf, l4)
            if icmp_type not in (_ICMP_ECHO if version == 4 else _ICMPV6_ECHO):
                ident = 0
            return _new(
                FrameInfo,
                (
                    start,
                    l2,
                    vlans,
                    ethertype,
                    l3,
                    version,
                    l4,
                    l4 + _ICMP_SIZE,
                    end,
                    src,
                    dst,
                    proto,
                    ident,
                    ident,
                    0,
                    fragment,
                    None,
                ),
            )
    else:
        fields = (start, l2, vlans, ethertype, l3, version, l4, l4, end, src, dst, proto, 0, 0, 0)
        return _new(FrameInfo, (*fields, fragment, None))
    return _fail(
        error,
        start,
        l2=l2,
        vlans=vlans,
        ethertype=ethertype,
        l3=l3,
        ip_version=version,
        l4=l4,
        end=end,
        src=src,
        dst=dst,
        proto=proto,
        fragment=fragment,
    )
