"""The wire layout of every header pktchain reads or writes, each stated once.

Each :class:`~pktchain.packet.layout.Layout` below is the one place where a
header's fields, offsets and sizes are written down, next to the figure of the
RFC (or draft, or C header) it follows. Parsers, views, builders and rewrites
all work through these declarations. The protocol numbers used to move from one
header to the next are enums here too.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

from pktchain.packet.layout import Bits, Field, Layout

__all__ = [
    "ARP",
    "ETHERNET",
    "ICMP",
    "ICMPV6",
    "IPV4",
    "IPV6",
    "IPV6_EXTENSION",
    "IPV6_FRAGMENT",
    "L4_CHECKSUM_OFFSET",
    "NEIGHBOR_ADVERTISEMENT",
    "NSH",
    "NSH_CONTEXT_MD1",
    "NSH_MD2_TLV",
    "TCP",
    "UDP",
    "VIRTIO_NET_HDR",
    "VLAN_TAG",
    "VRRP",
    "VXLAN_GPE",
    "VXLAN_GPE_PORT",
    "ArpOp",
    "EtherType",
    "GpeNextProtocol",
    "IcmpType",
    "Icmpv6Type",
    "IpProto",
    "NshMdType",
    "NshNextProtocol",
    "TcpFlag",
    "VrrpType",
]


class EtherType(IntEnum):
    """EtherTypes pktchain handles (IEEE 802 numbers, IANA registry)."""

    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100  # IEEE 802.1Q customer tag (C-TAG)
    IPV6 = 0x86DD
    QINQ = 0x88A8  # IEEE 802.1ad service tag (S-TAG)
    NSH = 0x894F  # RFC 8300 §9.1
    QINQ_LEGACY = 0x9100  # pre-802.1ad S-TAG still sent by some switches


class IpProto(IntEnum):
    """IP protocol / IPv6 next-header numbers (IANA "Assigned Internet Protocol Numbers")."""

    HOPOPT = 0
    ICMP = 1
    IPIP = 4
    TCP = 6
    UDP = 17
    IPV6 = 41
    ROUTING = 43
    FRAGMENT = 44
    GRE = 47
    ESP = 50
    AH = 51
    ICMPV6 = 58
    NO_NEXT_HEADER = 59
    DSTOPTS = 60
    VRRP = 112  # RFC 5798 §5.1.1.4
    SCTP = 132


class ArpOp(IntEnum):
    """ARP operation codes (RFC 826)."""

    REQUEST = 1
    REPLY = 2


class IcmpType(IntEnum):
    """ICMP message types used by pktchain (RFC 792)."""

    ECHO_REPLY = 0
    DEST_UNREACHABLE = 3
    REDIRECT = 5
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12


class Icmpv6Type(IntEnum):
    """ICMPv6 message types used by pktchain (RFC 4443 §2.1, RFC 4861 §4)."""

    DEST_UNREACHABLE = 1
    PACKET_TOO_BIG = 2
    TIME_EXCEEDED = 3
    PARAMETER_PROBLEM = 4
    ECHO_REQUEST = 128
    ECHO_REPLY = 129
    MLD_QUERY = 130  # RFC 2710 §3
    MLD_REPORT = 131
    MLD_DONE = 132
    ROUTER_SOLICITATION = 133
    ROUTER_ADVERTISEMENT = 134
    NEIGHBOR_SOLICITATION = 135
    NEIGHBOR_ADVERTISEMENT = 136
    MLDV2_REPORT = 143  # RFC 3810 §5.2


class TcpFlag(IntFlag):
    """TCP control bits (RFC 9293 §3.1; CWR/ECE from RFC 3168 §6.1)."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


class NshMdType(IntEnum):
    """NSH metadata types (RFC 8300 §2.2, §11.2.4)."""

    RESERVED = 0x0
    FIXED = 0x1  # MD type 1: 16 bytes of fixed-length context (§2.4)
    VARIABLE = 0x2  # MD type 2: zero or more variable-length TLVs (§2.5)
    EXPERIMENTAL = 0xF


class NshNextProtocol(IntEnum):
    """What follows the NSH (RFC 8300 §2.2, IANA "NSH Next Protocol")."""

    IPV4 = 0x1
    IPV6 = 0x2
    ETHERNET = 0x3
    NSH = 0x4
    MPLS = 0x5


class GpeNextProtocol(IntEnum):
    """What follows the VXLAN-GPE header (draft-ietf-nvo3-vxlan-gpe-13, "Next Protocol")."""

    IPV4 = 0x1
    IPV6 = 0x2
    ETHERNET = 0x3
    NSH = 0x4


class VrrpType(IntEnum):
    """VRRP packet types (RFC 5798 §5.2.2): the advertisement is the only one."""

    ADVERTISEMENT = 1


VXLAN_GPE_PORT = 4790
"""UDP destination port of VXLAN-GPE (IANA assignment, draft-ietf-nvo3-vxlan-gpe-13)."""


# Ethernet II (IEEE 802.3 §3.1.1, "Ethernet II" framing of RFC 894):
#   | Destination MAC (6) | Source MAC (6) | EtherType (2) |
ETHERNET = Layout(
    "Ethernet",
    "IEEE 802.3 §3.1.1 / RFC 894",
    [
        Field("dst", 0, "6s", "destination MAC"),
        Field("src", 6, "6s", "source MAC"),
        Field("ethertype", 12, "H", "EtherType of the next header (or a tag's TPID)"),
    ],
)

# IEEE 802.1Q §9.6 tag. The TPID (0x8100, or 0x88A8 for an 802.1ad S-TAG) is the
# EtherType field of the header before; the tag proper is the TCI and the
# EtherType of what follows:
#   | PCP (3) | DEI (1) | VID (12) | EtherType (16) |
VLAN_TAG = Layout(
    "802.1Q tag",
    "IEEE 802.1Q-2018 §9.6",
    [
        Field("tci", 0, "H", "tag control information"),
        Field("ethertype", 2, "H", "EtherType of the next header"),
    ],
    [
        Bits("pcp", "tci", 13, 3, "priority code point"),
        Bits("dei", "tci", 12, 1, "drop eligible indicator"),
        Bits("vid", "tci", 0, 12, "VLAN identifier"),
    ],
)

# ARP for IPv4 over Ethernet (RFC 826, "Packet format"):
#   | htype (2) | ptype (2) | hlen (1) | plen (1) | oper (2) |
#   | sha (6) | spa (4) | tha (6) | tpa (4) |
ARP = Layout(
    "ARP",
    "RFC 826 'Packet format' (Ethernet hardware, IPv4 protocol)",
    [
        Field("htype", 0, "H", "hardware type, 1 = Ethernet"),
        Field("ptype", 2, "H", "protocol type, 0x0800 = IPv4"),
        Field("hlen", 4, "B", "hardware address length, 6"),
        Field("plen", 5, "B", "protocol address length, 4"),
        Field("oper", 6, "H", "operation, see ArpOp"),
        Field("sha", 8, "6s", "sender hardware address"),
        Field("spa", 14, "4s", "sender protocol address"),
        Field("tha", 18, "6s", "target hardware address"),
        Field("tpa", 24, "4s", "target protocol address"),
    ],
)

# IPv4 (RFC 791 §3.1, figure 4 "Example Internet Datagram Header"; DSCP/ECN from
# RFC 2474 §3 and RFC 3168 §5):
#    0                   1                   2                   3
#    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#   |Version|  IHL  |    DSCP   |ECN|          Total Length         |
#   |         Identification        |Flags|      Fragment Offset    |
#   |  Time to Live |    Protocol   |         Header Checksum       |
#   |                       Source Address                          |
#   |                    Destination Address                        |
#   |                    Options (IHL > 5)                          |
IPV4 = Layout(
    "IPv4",
    "RFC 791 §3.1 figure 4",
    [
        Field("version_ihl", 0, "B"),
        Field("tos", 1, "B", "DSCP and ECN"),
        Field("total_length", 2, "H", "header and data, in bytes"),
        Field("identification", 4, "H"),
        Field("flags_fragment", 6, "H"),
        Field("ttl", 8, "B"),
        Field("protocol", 9, "B", "see IpProto"),
        Field("checksum", 10, "H", "RFC 1071 checksum of the header alone"),
        Field("src", 12, "4s"),
        Field("dst", 16, "4s"),
    ],
    [
        Bits("version", "version_ihl", 4, 4),
        Bits("ihl", "version_ihl", 0, 4, "header length in 32-bit words, >= 5"),
        Bits("dscp", "tos", 2, 6),
        Bits("ecn", "tos", 0, 2),
        Bits("reserved_flag", "flags_fragment", 15, 1, "must be 0"),
        Bits("df", "flags_fragment", 14, 1, "don't fragment"),
        Bits("mf", "flags_fragment", 13, 1, "more fragments"),
        Bits("fragment_offset", "flags_fragment", 0, 13, "in 8-byte units"),
    ],
)

# IPv6 fixed header (RFC 8200 §3):
#   |Version| Traffic Class |           Flow Label                  |
#   |         Payload Length        |  Next Header  |   Hop Limit   |
#   |                Source Address (16)  |  Destination Address (16)
IPV6 = Layout(
    "IPv6",
    "RFC 8200 §3",
    [
        Field("version_class_flow", 0, "I"),
        Field("payload_length", 4, "H", "bytes after the fixed header, extensions included"),
        Field("next_header", 6, "B", "see IpProto"),
        Field("hop_limit", 7, "B"),
        Field("src", 8, "16s"),
        Field("dst", 24, "16s"),
    ],
    [
        Bits("version", "version_class_flow", 28, 4),
        Bits("traffic_class", "version_class_flow", 20, 8),
        Bits("flow_label", "version_class_flow", 0, 20),
    ],
)

# The first two bytes shared by Hop-by-Hop Options (RFC 8200 §4.3), Routing
# (§4.4) and Destination Options (§4.6) headers; the header is
# 8 * (hdr_ext_len + 1) bytes long.
IPV6_EXTENSION = Layout(
    "IPv6 extension header",
    "RFC 8200 §4.3, §4.4, §4.6",
    [
        Field("next_header", 0, "B"),
        Field("hdr_ext_len", 1, "B", "length in 8-byte units, not counting the first 8"),
    ],
)

# IPv6 Fragment header (RFC 8200 §4.5), always 8 bytes:
#   | Next Header | Reserved | Fragment Offset (13) |Res|M| | Identification (32) |
IPV6_FRAGMENT = Layout(
    "IPv6 fragment header",
    "RFC 8200 §4.5",
    [
        Field("next_header", 0, "B"),
        Field("reserved", 1, "B"),
        Field("offset_flags", 2, "H"),
        Field("identification", 4, "I"),
    ],
    [
        Bits("fragment_offset", "offset_flags", 3, 13, "in 8-byte units"),
        Bits("res", "offset_flags", 1, 2),
        Bits("m", "offset_flags", 0, 1, "more fragments"),
    ],
)

# ICMP (RFC 792): type, code, checksum, then four bytes whose meaning depends on
# the type; echo and echo reply ("Echo or Echo Reply Message") carry an
# identifier and a sequence number there, which is how they are declared.
ICMP = Layout(
    "ICMP",
    "RFC 792 'Echo or Echo Reply Message'",
    [
        Field("type", 0, "B", "see IcmpType"),
        Field("code", 1, "B"),
        Field("checksum", 2, "H", "RFC 1071 checksum of the whole ICMP message"),
        Field("identifier", 4, "H", "echo: identifier; other types: first half of rest"),
        Field("sequence", 6, "H", "echo: sequence number; other types: second half"),
    ],
)

# ICMPv6 (RFC 4443 §2.1, echo in §4.1/§4.2). Same shape as ICMP; the checksum
# also covers the IPv6 pseudo-header (RFC 4443 §2.3, RFC 8200 §8.1).
ICMPV6 = Layout(
    "ICMPv6",
    "RFC 4443 §2.1, §4.1",
    [
        Field("type", 0, "B", "see Icmpv6Type"),
        Field("code", 1, "B"),
        Field("checksum", 2, "H"),
        Field("identifier", 4, "H", "echo: identifier; other types: first half of body"),
        Field("sequence", 6, "H", "echo: sequence number; other types: second half"),
    ],
)

# Neighbor Advertisement (RFC 4861 §4.4): how an IPv6 node says which link-layer
# address its `target` address is at (the ARP reply of IPv6); options follow.
NEIGHBOR_ADVERTISEMENT = Layout(
    "Neighbor Advertisement",
    "RFC 4861 §4.4",
    [
        Field("type", 0, "B", "136"),
        Field("code", 1, "B"),
        Field("checksum", 2, "H"),
        Field("flags", 4, "I", "R (router), S (solicited), O (override), then reserved"),
        Field("target", 8, "16s", "the address the advertisement is about"),
    ],
)

# TCP (RFC 9293 §3.1 figure 1):
#   |          Source Port          |       Destination Port        |
#   |                        Sequence Number                        |
#   |                    Acknowledgment Number                      |
#   |  Data |       |C|E|U|A|P|R|S|F|                               |
#   | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
#   |           Checksum            |         Urgent Pointer        |
#   |                    Options (Data Offset > 5)                  |
TCP = Layout(
    "TCP",
    "RFC 9293 §3.1 figure 1",
    [
        Field("sport", 0, "H"),
        Field("dport", 2, "H"),
        Field("seq", 4, "I"),
        Field("ack", 8, "I"),
        Field("offset_flags", 12, "H"),
        Field("window", 14, "H"),
        Field("checksum", 16, "H", "covers the pseudo-header (RFC 9293 §3.1)"),
        Field("urgent", 18, "H"),
    ],
    [
        Bits("data_offset", "offset_flags", 12, 4, "header length in 32-bit words, >= 5"),
        Bits("reserved", "offset_flags", 8, 4),
        Bits("flags", "offset_flags", 0, 8, "see TcpFlag"),
    ],
)

# UDP (RFC 768): | Source Port | Destination Port | Length | Checksum |
UDP = Layout(
    "UDP",
    "RFC 768",
    [
        Field("sport", 0, "H"),
        Field("dport", 2, "H"),
        Field("length", 4, "H", "header and data, in bytes"),
        Field("checksum", 6, "H", "0 = none (IPv4 only, RFC 768; RFC 8200 §8.1)"),
    ],
)

# VXLAN-GPE (draft-ietf-nvo3-vxlan-gpe-13, figure "VXLAN-GPE Header"):
#   |R|R|Ver|I|P|B|O|       Reserved                |Next Protocol  |
#   |                VXLAN Network Identifier (VNI) |   Reserved    |
VXLAN_GPE = Layout(
    "VXLAN-GPE",
    "draft-ietf-nvo3-vxlan-gpe-13 'VXLAN-GPE Header'",
    [
        Field("flags", 0, "B"),
        Field("reserved1", 1, "H"),
        Field("next_protocol", 3, "B", "see GpeNextProtocol; valid when P is set"),
        Field("vni_reserved", 4, "I"),
    ],
    [
        Bits("version", "flags", 4, 2, "must be 0"),
        Bits("i", "flags", 3, 1, "instance bit: the VNI is valid (must be set)"),
        Bits("p", "flags", 2, 1, "next-protocol bit: Next Protocol is present"),
        Bits("b", "flags", 1, 1, "BUM traffic bit"),
        Bits("o", "flags", 0, 1, "OAM bit"),
        Bits("vni", "vni_reserved", 8, 24),
    ],
)

# NSH base header and service path header (RFC 8300 §2.2, §2.3):
#    0                   1                   2                   3
#    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#   |Ver|O|U|    TTL    |   Length  |U|U|U|U|MD Type| Next Protocol |
#   |          Service Path Identifier (SPI)        | Service Index |
NSH = Layout(
    "NSH",
    "RFC 8300 §2.2 figure 2, §2.3 figure 3",
    [
        Field("ver_oam_ttl_length", 0, "H"),
        Field("md_type_byte", 2, "B"),
        Field("next_protocol", 3, "B", "see NshNextProtocol"),
        Field("service_path", 4, "I"),
    ],
    [
        Bits("version", "ver_oam_ttl_length", 14, 2, "must be 0"),
        Bits("oam", "ver_oam_ttl_length", 13, 1, "O bit: an OAM packet (§2.2)"),
        Bits("unassigned", "ver_oam_ttl_length", 12, 1),
        Bits("ttl", "ver_oam_ttl_length", 6, 6, "decremented by each SFF (§2.2)"),
        Bits("length", "ver_oam_ttl_length", 0, 6, "whole NSH in 4-byte words"),
        Bits("md_type", "md_type_byte", 0, 4, "see NshMdType"),
        Bits("spi", "service_path", 8, 24, "service path identifier"),
        Bits("si", "service_path", 0, 8, "service index"),
    ],
)

# NSH MD type 1 fixed-length context header (RFC 8300 §2.4): 16 opaque bytes
# after the service path header. The NSH Length is then 6 words.
NSH_CONTEXT_MD1 = Layout(
    "NSH MD type 1 context",
    "RFC 8300 §2.4 figure 4",
    [Field("context", 0, "16s")],
)

# NSH MD type 2 variable-length context header (RFC 8300 §2.5.1 figure 6); the
# value follows, padded to a multiple of 4 bytes:
#   |          Metadata Class       |      Type     |U|    Length   |
NSH_MD2_TLV = Layout(
    "NSH MD type 2 context TLV",
    "RFC 8300 §2.5.1 figure 6",
    [
        Field("md_class", 0, "H"),
        Field("type", 2, "B"),
        Field("u_length", 3, "B"),
    ],
    [
        Bits("unassigned", "u_length", 7, 1),
        Bits("length", "u_length", 0, 7, "value length in bytes, before padding"),
    ],
)

# VRRP version 3 (RFC 5798 §5.1, figure "IPv4 Field Descriptions"; fields §5.2),
# carried straight in IP (protocol 112), followed by "Count IPvX Addr" addresses
# (4 bytes each for IPv4):
#    0                   1                   2                   3
#    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#   |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
#   |(rsvd) |     Max Adver Int     |          Checksum             |
#   |                      IPvX Address(es)                         |
VRRP = Layout(
    "VRRPv3",
    "RFC 5798 §5.1 figure 'IPv4 Field Descriptions', §5.2",
    [
        Field("version_type", 0, "B"),
        Field("vrid", 1, "B", "virtual router identifier, 1..255 (§5.2.3)"),
        Field("priority", 2, "B", "255 address owner, 1..254 backups, 0 master stopping (§5.2.4)"),
        Field("count", 3, "B", "number of addresses that follow, at least 1 (§5.2.5)"),
        Field("reserved_interval", 4, "H"),
        Field("checksum", 6, "H", "covers the message and the IP pseudo-header (§5.2.8)"),
    ],
    [
        Bits("version", "version_type", 4, 4, "3 (§5.2.1)"),
        Bits("type", "version_type", 0, 4, "see VrrpType (§5.2.2)"),
        Bits("reserved", "reserved_interval", 12, 4, "zero on transmission, ignored (§5.2.6)"),
        Bits("max_adver_int", "reserved_interval", 0, 12, "in centiseconds (§5.2.7)"),
    ],
)

# struct virtio_net_hdr (include/uapi/linux/virtio_net.h; virtio spec v1.2
# §5.1.6), the 10-byte little-endian header that IFF_VNET_HDR (TAP) and
# PACKET_VNET_HDR (AF_PACKET) put before each frame.
VIRTIO_NET_HDR = Layout(
    "virtio_net_hdr",
    "linux/virtio_net.h struct virtio_net_hdr",
    [
        Field("flags", 0, "B", "VIRTIO_NET_HDR_F_*"),
        Field("gso_type", 1, "B", "VIRTIO_NET_HDR_GSO_*, ECN bit included"),
        Field("hdr_len", 2, "H", "length of the headers to copy into each segment"),
        Field("gso_size", 4, "H", "segment payload size (MSS)"),
        Field("csum_start", 6, "H", "where checksumming starts, from the frame start"),
        Field("csum_offset", 8, "H", "checksum field position, from csum_start"),
    ],
    byte_order="<",
)

L4_CHECKSUM_OFFSET: dict[int, int] = {
    IpProto.TCP: TCP.offset("checksum"),
    IpProto.UDP: UDP.offset("checksum"),
    IpProto.ICMP: ICMP.offset("checksum"),
    IpProto.ICMPV6: ICMPV6.offset("checksum"),
}
"""Where each L4 protocol keeps its checksum, from the start of its header."""
