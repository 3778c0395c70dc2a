"""pktchain.packet against scapy, both ways: what one builds the other must read field for field.

Hypothesis draws frames as plain parameter records (Ethernet, 0-2 VLAN tags,
ARP / IPv4 with options / IPv6 with extension headers, TCP with options / UDP /
ICMP / ICMPv6, payload). Each record is built once with pktchain's builders
and checked through scapy's dissector, and once with scapy and checked through
pktchain's parser and views; offsets are checked against the header lengths
the record implies. NSH (MD type 1 and 2) over Ethernet and over VXLAN-GPE gets
the same treatment. Every prefix of such frames must parse without raising.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import reduce
from operator import truediv
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib import nsh as scapy_nsh
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption, TCPOptions, in4_chksum
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
    in6_chksum,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import checksum as scapy_checksum

from pktchain.packet import (
    Arp,
    ArpView,
    ContextTlv,
    Ethernet,
    EthernetView,
    EtherType,
    FrameInfo,
    Icmp,
    Icmpv6,
    Icmpv6View,
    IcmpView,
    IpProto,
    Ipv4,
    Ipv4View,
    Ipv6,
    Ipv6Extension,
    Ipv6Fragment,
    Ipv6View,
    Layer,
    Malformed,
    Nsh,
    NshMdType,
    NshView,
    Option,
    TcpFlag,
    TcpView,
    Udp,
    UdpView,
    Vlan,
    VlanTagView,
    VxlanGpe,
    VxlanGpeView,
    build,
    format_ip,
    format_mac,
    l4_checksum_ok,
    parse_context_tlvs,
    parse_frame,
    parse_inner,
    parse_ip,
    parse_nsh,
    parse_vxlan_gpe,
)
from pktchain.packet import Tcp as TcpLayer

# Explicit MACs: scapy would otherwise look up (and maybe ARP for) the destination.
MACS = {"dst": "02:00:00:00:00:02", "src": "02:00:00:00:00:01"}
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Eth:
    dst: bytes
    src: bytes


@dataclass(frozen=True)
class Tag:
    tpid: int
    vid: int
    pcp: int
    dei: bool


@dataclass(frozen=True)
class ArpRec:
    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes


@dataclass(frozen=True)
class V4:
    src: bytes
    dst: bytes
    ttl: int
    tos: int
    ident: int
    df: bool
    options: tuple[Option, ...]

    @property
    def options_length(self) -> int:
        raw = sum(1 if o.kind in (0, 1) else 2 + len(o.data) for o in self.options)
        return raw + -raw % 4


@dataclass(frozen=True)
class Ext:
    """An IPv6 extension header: padding bytes (options) or routing addresses, or a fragment."""

    kind: int
    pad: int = 0  # PadN data length for hop-by-hop / destination options (4 + 8k)
    addresses: tuple[bytes, ...] = ()  # routing type 0
    ident: int = 0  # fragment
    more: bool = False  # fragment

    @property
    def length(self) -> int:
        if self.kind == IpProto.FRAGMENT:
            return 8
        if self.kind == IpProto.ROUTING:
            return 8 + 16 * len(self.addresses)
        return 4 + self.pad


@dataclass(frozen=True)
class V6:
    src: bytes
    dst: bytes
    hlim: int
    tc: int
    fl: int
    exts: tuple[Ext, ...]


@dataclass(frozen=True)
class TcpRec:
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int
    options: tuple[Option, ...]

    @property
    def header_length(self) -> int:
        raw = sum(1 if o.kind in (0, 1) else 2 + len(o.data) for o in self.options)
        return 20 + raw + -raw % 4


@dataclass(frozen=True)
class UdpRec:
    sport: int
    dport: int


@dataclass(frozen=True)
class IcmpRec:
    type: int
    code: int
    ident: int
    seq: int


@dataclass(frozen=True)
class FrameRec:
    eth: Eth
    tags: tuple[Tag, ...]
    l3: ArpRec | V4 | V6
    l4: TcpRec | UdpRec | IcmpRec | None
    payload: bytes = field(default=b"")


# --------------------------------------------------------------------------- strategies

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
macs = st.binary(min_size=6, max_size=6)
ipv4s = st.binary(min_size=4, max_size=4)
ipv6s = st.binary(min_size=16, max_size=16)
tags = st.builds(
    Tag, st.sampled_from([0x8100, 0x88A8]), st.integers(0, 4095), st.integers(0, 7), st.booleans()
)


@st.composite
def tag_stacks(draw: st.DrawFn) -> tuple[Tag, ...]:
    """No tag, one 802.1Q tag, or an 802.1ad S-TAG over an 802.1Q C-TAG (QinQ)."""
    count = draw(st.integers(0, 2))
    drawn = [draw(tags) for _ in range(count)]
    if count == 1:
        return (Tag(0x8100, drawn[0].vid, drawn[0].pcp, drawn[0].dei),)
    if count == 2:
        outer, inner = drawn
        return (
            Tag(0x88A8, outer.vid, outer.pcp, outer.dei),
            Tag(0x8100, inner.vid, inner.pcp, inner.dei),
        )
    return ()


# IPv4 options scapy reads as a generic option or as Router Alert (RFC 2113).
ipv4_options = st.one_of(
    st.just(Option(1)),
    st.builds(lambda v: Option(148, struct.pack("!H", v)), u16),
    st.builds(Option, st.sampled_from([30, 94, 158, 222]), st.binary(max_size=6)),
)
# TCP options: scapy's known kinds with their natural sizes, and unknown kinds.
tcp_options = st.one_of(
    st.just(Option(1)),
    st.builds(lambda v: Option(2, struct.pack("!H", v)), u16),
    st.builds(lambda v: Option(3, struct.pack("!B", v)), st.integers(0, 14)),
    st.just(Option(4)),
    st.builds(lambda a, b: Option(8, struct.pack("!II", a, b)), u32, u32),
    st.builds(
        Option,
        st.integers(30, 253).filter(lambda k: k not in TCPOptions[0]),
        st.binary(max_size=8),
    ),
)


def _fits(options: list[Option], room: int) -> bool:
    raw = sum(1 if o.kind in (0, 1) else 2 + len(o.data) for o in options)
    return raw + -raw % 4 <= room


v4s = st.builds(
    V4,
    ipv4s,
    ipv4s,
    u8,
    u8,
    u16,
    st.booleans(),
    st.lists(ipv4_options, max_size=5).filter(lambda o: _fits(o, 40)).map(tuple),
)
exts = st.one_of(
    st.builds(
        Ext, st.sampled_from([IpProto.HOPOPT, IpProto.DSTOPTS]), pad=st.sampled_from([4, 12, 20])
    ),
    st.builds(Ext, st.just(IpProto.ROUTING), addresses=st.lists(ipv6s, max_size=2).map(tuple)),
    st.builds(Ext, st.just(IpProto.FRAGMENT), ident=u32, more=st.booleans()),
)
v6s = st.builds(
    V6, ipv6s, ipv6s, u8, u8, st.integers(0, 0xFFFFF), st.lists(exts, max_size=3).map(tuple)
)
arps = st.builds(ArpRec, st.sampled_from([1, 2]), macs, ipv4s, macs, ipv4s)
tcps = st.builds(
    TcpRec,
    u16,
    u16,
    u32,
    u32,
    u8,
    u16,
    u16,
    st.lists(tcp_options, max_size=6).filter(lambda o: _fits(o, 40)).map(tuple),
)
udps = st.builds(
    UdpRec,
    u16.filter(lambda p: p not in (4789, 4790, 6633, 8472, 48879)),
    u16.filter(lambda p: p not in (4789, 4790, 6633, 8472, 48879)),
)
icmp_echo = st.builds(IcmpRec, st.sampled_from([0, 8]), st.just(0), u16, u16)
icmpv6_echo = st.builds(IcmpRec, st.sampled_from([128, 129]), st.just(0), u16, u16)
payloads = st.binary(max_size=64)


@st.composite
def frames(draw: st.DrawFn, common: bool = False) -> FrameRec:
    """Any frame of the records above; ``common``: the untagged IPv4 TCP/UDP of most traffic."""
    eth = draw(st.builds(Eth, macs, macs))
    if common:
        l3 = draw(v4s.map(lambda v4: V4(v4.src, v4.dst, v4.ttl, v4.tos, v4.ident, v4.df, ())))
        return FrameRec(eth, (), l3, draw(st.one_of(tcps, udps)), draw(payloads))
    tag_stack = draw(tag_stacks())
    l3 = draw(st.one_of(v4s, v6s, arps))
    l4: TcpRec | UdpRec | IcmpRec | None
    if isinstance(l3, ArpRec):
        return FrameRec(eth, tag_stack, l3, None, b"")
    icmps = icmp_echo if isinstance(l3, V4) else icmpv6_echo
    l4 = draw(st.one_of(tcps, udps, icmps))
    return FrameRec(eth, tag_stack, l3, l4, draw(payloads))


# --------------------------------------------------------------------------- pktchain side


def _ext_layer(ext: Ext) -> Layer:
    if ext.kind == IpProto.FRAGMENT:
        return Ipv6Fragment(offset=0, more=ext.more, identification=ext.ident)
    if ext.kind == IpProto.ROUTING:
        return Ipv6Extension(IpProto.ROUTING, bytes(6) + b"".join(ext.addresses))
    return Ipv6Extension(ext.kind, bytes((1, ext.pad)) + bytes(ext.pad))


def pktchain_layers(rec: FrameRec) -> list[Layer | bytes]:
    layers: list[Layer | bytes] = [Ethernet(rec.eth.dst, rec.eth.src)]
    layers += [Vlan(t.vid, t.pcp, t.dei, tpid=t.tpid) for t in rec.tags]
    l3 = rec.l3
    if isinstance(l3, ArpRec):
        layers.append(Arp(l3.op, l3.sha, l3.spa, l3.tha, l3.tpa))
    elif isinstance(l3, V4):
        layers.append(
            Ipv4(
                l3.src,
                l3.dst,
                ttl=l3.ttl,
                tos=l3.tos,
                identification=l3.ident,
                df=l3.df,
                options=l3.options,
            )
        )
    else:
        layers.append(
            Ipv6(l3.src, l3.dst, hop_limit=l3.hlim, traffic_class=l3.tc, flow_label=l3.fl)
        )
        layers += [_ext_layer(e) for e in l3.exts]
    l4 = rec.l4
    if isinstance(l4, TcpRec):
        layers.append(
            TcpLayer(l4.sport, l4.dport, l4.seq, l4.ack, l4.flags, l4.window, l4.urgent, l4.options)
        )
    elif isinstance(l4, UdpRec):
        layers.append(Udp(l4.sport, l4.dport))
    elif isinstance(l4, IcmpRec):
        kind = Icmp if isinstance(l3, V4) else Icmpv6
        layers.append(kind(l4.type, l4.code, l4.ident, l4.seq))
    layers.append(rec.payload)
    return layers


# --------------------------------------------------------------------------- scapy side


def scapy_packet(rec: FrameRec) -> Packet:
    layers: list[Packet] = [Ether(dst=format_mac(rec.eth.dst), src=format_mac(rec.eth.src))]
    for t in rec.tags:
        kind = Dot1AD if t.tpid == 0x88A8 else Dot1Q
        layers.append(kind(prio=t.pcp, dei=int(t.dei), vlan=t.vid))
    l3 = rec.l3
    if isinstance(l3, ArpRec):
        layers.append(
            ARP(
                op=l3.op,
                hwsrc=format_mac(l3.sha),
                psrc=format_ip(l3.spa),
                hwdst=format_mac(l3.tha),
                pdst=format_ip(l3.tpa),
            )
        )
    elif isinstance(l3, V4):
        layers.append(
            IP(
                src=format_ip(l3.src),
                dst=format_ip(l3.dst),
                ttl=l3.ttl,
                tos=l3.tos,
                id=l3.ident,
                flags=2 if l3.df else 0,
                options=[IPOption(_option_bytes(o)) for o in l3.options],
            )
        )
    else:
        layers.append(
            IPv6(src=format_ip(l3.src), dst=format_ip(l3.dst), hlim=l3.hlim, tc=l3.tc, fl=l3.fl)
        )
        for e in l3.exts:
            if e.kind == IpProto.FRAGMENT:
                layers.append(IPv6ExtHdrFragment(offset=0, m=int(e.more), id=e.ident))
            elif e.kind == IpProto.ROUTING:
                layers.append(
                    IPv6ExtHdrRouting(
                        type=0, segleft=0, addresses=[format_ip(a) for a in e.addresses]
                    )
                )
            else:
                kind = IPv6ExtHdrHopByHop if e.kind == IpProto.HOPOPT else IPv6ExtHdrDestOpt
                layers.append(kind(options=[PadN(optdata=bytes(e.pad))]))
    l4 = rec.l4
    if isinstance(l4, TcpRec):
        layers.append(
            TCP(
                sport=l4.sport,
                dport=l4.dport,
                seq=l4.seq,
                ack=l4.ack,
                flags=l4.flags,
                window=l4.window,
                urgptr=l4.urgent,
                options=[_scapy_tcp_option(o) for o in l4.options],
            )
        )
    elif isinstance(l4, UdpRec):
        layers.append(UDP(sport=l4.sport, dport=l4.dport))
    elif isinstance(l4, IcmpRec) and isinstance(l3, V4):
        layers.append(ICMP(type=l4.type, code=l4.code, id=l4.ident, seq=l4.seq))
    elif isinstance(l4, IcmpRec):
        kind = ICMPv6EchoRequest if l4.type == 128 else ICMPv6EchoReply
        layers.append(kind(id=l4.ident, seq=l4.seq))
    if rec.payload:
        layers.append(Raw(rec.payload))
    return reduce(truediv, layers)


def _option_bytes(option: Option) -> bytes:
    if option.kind in (0, 1):
        return bytes((option.kind,))
    return bytes((option.kind, 2 + len(option.data))) + option.data


_TCP_KINDS = {name: (kind, fmt) for kind, (name, fmt) in TCPOptions[0].items()}


def _scapy_tcp_option(option: Option) -> tuple[Any, Any]:
    known = TCPOptions[0].get(option.kind)
    if known is None:
        return option.kind, option.data
    name, fmt = known
    if fmt is None:
        return name, b"" if option.kind not in (0, 1) else None
    values = struct.unpack(fmt, option.data)
    return name, values[0] if len(values) == 1 else values


def _from_scapy_tcp_option(name: Any, value: Any) -> Option:
    """scapy's decoded form of a TCP option back to kind and data bytes."""
    if isinstance(name, int):
        return Option(name, value)
    kind, fmt = _TCP_KINDS[name]
    if fmt is None or value is None:
        return Option(kind, value or b"")
    values = value if isinstance(value, tuple) else (value,)
    return Option(kind, struct.pack(fmt, *values))


# --------------------------------------------------------------------------- checks


def scapy_layers(pkt: Packet) -> list[Packet]:
    out = []
    layer: Packet | None = pkt
    while (
        layer is not None and not isinstance(layer, Raw | type(None)) and layer.name != "NoPayload"
    ):
        out.append(layer)
        layer = layer.payload if layer.payload else None
    return out


def check_with_scapy(rec: FrameRec, frame: bytes) -> None:
    """scapy dissects ``frame`` into exactly the headers and field values of ``rec``."""
    pkt = Ether(frame)
    layers = scapy_layers(pkt)
    eth, rest = layers[0], layers[1:]
    assert (eth.dst, eth.src) == (format_mac(rec.eth.dst), format_mac(rec.eth.src))
    for t in rec.tags:
        tag, rest = rest[0], rest[1:]
        assert isinstance(tag, Dot1AD if t.tpid == 0x88A8 else Dot1Q)
        assert (tag.vlan, tag.prio, tag.dei) == (t.vid, t.pcp, int(t.dei))
    l3, rest = rest[0], rest[1:]
    if isinstance(rec.l3, ArpRec):
        a = rec.l3
        assert isinstance(l3, ARP)
        assert (l3.hwtype, l3.ptype, l3.hwlen, l3.plen) == (1, 0x0800, 6, 4)
        assert (l3.op, l3.hwsrc, l3.psrc, l3.hwdst, l3.pdst) == (
            a.op,
            format_mac(a.sha),
            format_ip(a.spa),
            format_mac(a.tha),
            format_ip(a.tpa),
        )
        return
    ip_layer = l3
    if isinstance(rec.l3, V4):
        v4 = rec.l3
        assert isinstance(l3, IP)
        assert (l3.src, l3.dst, l3.ttl, l3.tos, l3.id, int(l3.flags), l3.frag) == (
            format_ip(v4.src),
            format_ip(v4.dst),
            v4.ttl,
            v4.tos,
            v4.ident,
            2 if v4.df else 0,
            0,
        )
        assert l3.ihl == 5 + v4.options_length // 4
        header = frame[l3_offset(rec) : l3_offset(rec) + l3.ihl * 4]
        assert scapy_checksum(header) == 0
        parsed = [bytes(o) for o in l3.options]
        expected = [_option_bytes(o) for o in v4.options]
        assert parsed[: len(expected)] == expected
        assert all(o == b"\x00" for o in parsed[len(expected) :])  # padding: End of List
        assert l3.len == len(frame) - l3_offset(rec)
    else:
        v6 = rec.l3
        assert isinstance(l3, IPv6)
        assert (l3.src, l3.dst, l3.hlim, l3.tc, l3.fl) == (
            format_ip(v6.src),
            format_ip(v6.dst),
            v6.hlim,
            v6.tc,
            v6.fl,
        )
        assert l3.plen == len(frame) - l3_offset(rec) - 40
        for e in v6.exts:
            ext, rest = rest[0], rest[1:]
            if e.kind == IpProto.FRAGMENT:
                assert isinstance(ext, IPv6ExtHdrFragment)
                assert (ext.offset, ext.m, ext.id) == (0, int(e.more), e.ident)
            elif e.kind == IpProto.ROUTING:
                assert isinstance(ext, IPv6ExtHdrRouting)
                assert ext.addresses == [format_ip(a) for a in e.addresses]
            else:
                kind = IPv6ExtHdrHopByHop if e.kind == IpProto.HOPOPT else IPv6ExtHdrDestOpt
                assert isinstance(ext, kind)
                assert ext.len == (e.length // 8) - 1
    l4 = rec.l4
    segment = frame[l4_offset(rec) :]
    if isinstance(l4, TcpRec):
        tcp = rest[0]
        assert isinstance(tcp, TCP)
        assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, int(tcp.flags), tcp.window, tcp.urgptr) == (
            l4.sport,
            l4.dport,
            l4.seq,
            l4.ack,
            l4.flags,
            l4.window,
            l4.urgent,
        )
        assert tcp.dataofs * 4 == l4.header_length
        decoded = [_from_scapy_tcp_option(n, v) for n, v in tcp.options]
        assert decoded[: len(l4.options)] == list(l4.options)
        assert all(o.kind == 0 for o in decoded[len(l4.options) :])
        # Payload bytes as scapy's data offset delimits them (not re-encoded: scapy
        # would dissect some ports' payloads as DNS, DCE/RPC, ... and rebuild them).
        assert segment[tcp.dataofs * 4 :] == rec.payload
    elif isinstance(l4, UdpRec):
        udp = rest[0]
        assert isinstance(udp, UDP)
        assert (udp.sport, udp.dport, udp.len) == (l4.sport, l4.dport, 8 + len(rec.payload))
        assert udp.chksum != 0
        assert segment[8 : udp.len] == rec.payload
    elif isinstance(l4, IcmpRec) and isinstance(rec.l3, V4):
        icmp = rest[0]
        assert isinstance(icmp, ICMP)
        assert (icmp.type, icmp.code, icmp.id, icmp.seq) == (l4.type, l4.code, l4.ident, l4.seq)
        assert scapy_checksum(segment) == 0
        return
    elif isinstance(l4, IcmpRec):
        echo = rest[0]
        assert isinstance(echo, ICMPv6EchoRequest if l4.type == 128 else ICMPv6EchoReply)
        assert (echo.id, echo.seq, echo.data) == (l4.ident, l4.seq, rec.payload)
    proto = {TcpRec: 6, UdpRec: 17, IcmpRec: 58}[type(l4)]
    upper = rest[0]
    if isinstance(rec.l3, V4):
        assert in4_chksum(proto, ip_layer, segment) == 0
    else:
        assert in6_chksum(proto, upper, segment) == 0


def l3_offset(rec: FrameRec) -> int:
    return 14 + 4 * len(rec.tags)


def l4_offset(rec: FrameRec) -> int:
    if isinstance(rec.l3, V4):
        return l3_offset(rec) + 20 + rec.l3.options_length
    if isinstance(rec.l3, V6):
        return l3_offset(rec) + 40 + sum(e.length for e in rec.l3.exts)
    return -1


def check_with_pktchain(rec: FrameRec, frame: bytes) -> FrameInfo:
    """pktchain parses ``frame`` into the offsets implied by ``rec`` and reads every field."""
    info = parse_frame(frame)
    assert info.error is None, info
    eth = EthernetView(frame, info.l2)
    assert (info.l2, eth.dst, eth.src) == (0, rec.eth.dst, rec.eth.src)
    assert info.vlans == tuple(14 + 4 * i for i in range(len(rec.tags)))
    tpids = [eth.ethertype, *(VlanTagView(frame, o).ethertype for o in info.vlans)]
    tpids = tpids[: len(info.vlans)]
    for offset, tpid, t in zip(info.vlans, tpids, rec.tags, strict=True):
        tag = VlanTagView(frame, offset)
        assert (tpid, tag.vid, tag.pcp, tag.dei) == (t.tpid, t.vid, t.pcp, t.dei)
    assert info.l3 == l3_offset(rec)
    l3 = rec.l3
    if isinstance(l3, ArpRec):
        arp = ArpView(frame, info.l3)
        assert info.ethertype == EtherType.ARP
        assert (arp.htype, arp.ptype, arp.hlen, arp.plen) == (1, 0x0800, 6, 4)
        assert (arp.oper, arp.sha, arp.spa, arp.tha, arp.tpa) == (
            l3.op,
            l3.sha,
            l3.spa,
            l3.tha,
            l3.tpa,
        )
        assert (info.src, info.dst, info.ip_version) == (l3.spa, l3.tpa, 0)
        return info
    assert (info.src, info.dst) == (l3.src, l3.dst)
    if isinstance(l3, V4):
        ip = Ipv4View(frame, info.l3)
        assert (info.ethertype, info.ip_version) == (EtherType.IPV4, 4)
        assert (ip.version, ip.ttl, ip.tos, ip.identification, ip.df, ip.mf) == (
            4,
            l3.ttl,
            l3.tos,
            l3.ident,
            l3.df,
            False,
        )
        assert (ip.src, ip.dst, ip.total_length) == (l3.src, l3.dst, len(frame) - info.l3)
        assert ip.checksum_ok()
        assert ip.compute_checksum() == ip.checksum
        options, ok = ip.options()
        assert ok
        assert options[: len(l3.options)] == l3.options
        assert all(o.kind == 0 for o in options[len(l3.options) :])
    else:
        ip6 = Ipv6View(frame, info.l3)
        assert (info.ethertype, info.ip_version) == (EtherType.IPV6, 6)
        assert (ip6.version, ip6.hop_limit, ip6.traffic_class, ip6.flow_label) == (
            6,
            l3.hlim,
            l3.tc,
            l3.fl,
        )
        assert ip6.payload_length == len(frame) - info.l3 - 40
        assert info.fragment == any(e.kind == IpProto.FRAGMENT for e in l3.exts)
    assert info.l4 == l4_offset(rec)
    assert info.end == len(frame)
    l4 = rec.l4
    if isinstance(l4, TcpRec):
        tcp = TcpView(frame, info.l4)
        assert info.proto == IpProto.TCP
        assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags, tcp.window, tcp.urgent) == (
            l4.sport,
            l4.dport,
            l4.seq,
            l4.ack,
            l4.flags,
            l4.window,
            l4.urgent,
        )
        assert (info.sport, info.dport, info.tcp_flags) == (l4.sport, l4.dport, l4.flags)
        assert tcp.header_length == l4.header_length == info.payload - info.l4
        options, ok = tcp.options()
        assert ok
        assert options[: len(l4.options)] == l4.options
    elif isinstance(l4, UdpRec):
        udp = UdpView(frame, info.l4)
        assert info.proto == IpProto.UDP
        assert (udp.sport, udp.dport, udp.length) == (l4.sport, l4.dport, 8 + len(rec.payload))
        assert (info.sport, info.dport, info.payload) == (l4.sport, l4.dport, info.l4 + 8)
    elif isinstance(l4, IcmpRec):
        view = IcmpView(frame, info.l4) if isinstance(l3, V4) else Icmpv6View(frame, info.l4)
        assert info.proto == (IpProto.ICMP if isinstance(l3, V4) else IpProto.ICMPV6)
        assert (view.type, view.code, view.identifier, view.sequence) == (
            l4.type,
            l4.code,
            l4.ident,
            l4.seq,
        )
        assert (info.sport, info.dport) == (l4.ident, l4.ident)
    assert frame[info.payload : info.end] == rec.payload
    assert l4_checksum_ok(frame, info)
    return info


# --------------------------------------------------------------------------- the two directions


@EXAMPLES
@given(frames())
def test_pktchain_builds_scapy_reads(rec: FrameRec) -> None:
    frame = build(*pktchain_layers(rec))
    check_with_scapy(rec, frame)


@EXAMPLES
@given(frames())
def test_scapy_builds_pktchain_reads(rec: FrameRec) -> None:
    frame = bytes(scapy_packet(rec))
    check_with_pktchain(rec, frame)


@EXAMPLES
@given(frames(common=True))
def test_common_frames_read_the_same_as_the_general_path(rec: FrameRec) -> None:
    """Untagged IPv4 TCP/UDP takes a shortcut in parse_frame; parse_ip walks the general path."""
    frame = bytes(scapy_packet(rec))
    info = check_with_pktchain(rec, frame)
    general = parse_ip(frame, 14)
    assert info == general._replace(start=0, l2=0)


@EXAMPLES
@given(frames())
def test_both_builders_agree_byte_for_byte(rec: FrameRec) -> None:
    assert build(*pktchain_layers(rec)) == bytes(scapy_packet(rec))


@EXAMPLES
@given(frames())
def test_parse_accepts_a_memoryview_of_a_bytearray_and_an_offset(rec: FrameRec) -> None:
    frame = build(*pktchain_layers(rec))
    padded = memoryview(bytearray(b"\xee" * 10 + frame))
    direct = parse_frame(frame)
    shifted = parse_frame(padded, 10)
    offsets = ("start", "l2", "l3", "l4", "payload", "end")
    moved = direct._replace(
        vlans=tuple(o + 10 for o in direct.vlans),
        **{name: getattr(direct, name) + 10 for name in offsets if getattr(direct, name) >= 0},
    )
    assert shifted == moved


# --------------------------------------------------------------------------- NSH / VXLAN-GPE

context_tlvs = st.builds(ContextTlv, u16, u8, st.binary(max_size=12), st.booleans())


@dataclass(frozen=True)
class NshRec:
    spi: int
    si: int
    ttl: int
    oam: bool
    context: bytes  # MD type 1
    tlvs: tuple[ContextTlv, ...]  # MD type 2 when md_type == 2
    md_type: int


nshs = st.builds(
    NshRec,
    st.integers(0, 0xFFFFFF),
    u8,
    st.integers(0, 63),
    st.booleans(),
    st.binary(min_size=16, max_size=16),
    st.lists(context_tlvs, max_size=4).map(tuple),
    st.sampled_from([NshMdType.FIXED, NshMdType.VARIABLE]),
)
inner_kinds = st.sampled_from(["ethernet", "ipv4", "ipv6"])


# Inner ports that scapy binds to no protocol, so that it leaves the payload as raw bytes.
def _inner_pktchain(kind: str, payload: bytes) -> list[Layer | bytes]:
    if kind == "ethernet":
        return [
            Ethernet("02:00:00:00:00:0b", "02:00:00:00:00:0a"),
            Ipv4("192.0.2.1", "192.0.2.2"),
            Udp(51000, 52000),
            payload,
        ]
    if kind == "ipv4":
        return [Ipv4("192.0.2.1", "198.51.100.7"), TcpLayer(51234, 50080), payload]
    return [Ipv6("2001:db8::1", "2001:db8::2"), Udp(50000, 50053), payload]


def _inner_scapy(kind: str, payload: bytes) -> Packet:
    if kind == "ethernet":
        return (
            Ether(dst="02:00:00:00:00:0b", src="02:00:00:00:00:0a")
            / IP(src="192.0.2.1", dst="192.0.2.2", id=0)
            / UDP(sport=51000, dport=52000)
            / payload
        )
    if kind == "ipv4":
        return (
            IP(src="192.0.2.1", dst="198.51.100.7", id=0)
            / TCP(sport=51234, dport=50080, flags="S", window=65535)
            / payload
        )
    return IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=50000, dport=50053) / payload


def _nsh_layer(rec: NshRec) -> Nsh:
    if rec.md_type == NshMdType.FIXED:
        return Nsh(rec.spi, rec.si, rec.ttl, context=rec.context, oam=rec.oam)
    return Nsh(rec.spi, rec.si, rec.ttl, tlvs=rec.tlvs, md_type=NshMdType.VARIABLE, oam=rec.oam)


def _scapy_nsh(rec: NshRec) -> Packet:
    common = {"spi": rec.spi, "si": rec.si, "ttl": rec.ttl, "oam": int(rec.oam)}
    if rec.md_type == NshMdType.FIXED:
        return scapy_nsh.NSH(mdtype=1, context_header=rec.context, **common)
    vlch = [
        scapy_nsh.NSHTLV(
            class_=t.md_class,
            type=t.type,
            reserved=int(t.unassigned),
            length=len(t.value),
            metadata=list(
                struct.unpack(
                    f"!{len(t.value) // 4 + (len(t.value) % 4 > 0)}I",
                    t.value + bytes(-len(t.value) % 4),
                )
            ),
        )
        for t in rec.tlvs
    ]
    return scapy_nsh.NSH(mdtype=2, vlch=vlch, **common)


def _nsh_length(rec: NshRec) -> int:
    if rec.md_type == NshMdType.FIXED:
        return 24
    return 8 + sum(4 + len(t.value) + -len(t.value) % 4 for t in rec.tlvs)


def _check_scapy_nsh(rec: NshRec, nsh: Packet, kind: str, payload: bytes) -> None:
    assert isinstance(nsh, scapy_nsh.NSH)
    assert (nsh.ver, nsh.oam, nsh.ttl, nsh.mdtype, nsh.spi, nsh.si) == (
        0,
        int(rec.oam),
        rec.ttl,
        rec.md_type,
        rec.spi,
        rec.si,
    )
    assert nsh.length * 4 == _nsh_length(rec)
    assert nsh.nextproto == {"ipv4": 1, "ipv6": 2, "ethernet": 3}[kind]
    if rec.md_type == NshMdType.FIXED:
        assert nsh.context_header == rec.context
    else:
        got = [
            (
                t.class_,
                t.type,
                bool(t.reserved),
                t.length,
                b"".join(struct.pack("!I", m) for m in t.metadata),
            )
            for t in nsh.vlch or []
        ]
        want = [
            (t.md_class, t.type, t.unassigned, len(t.value), t.value + bytes(-len(t.value) % 4))
            for t in rec.tlvs
        ]
        assert got == want
    assert bytes(nsh.payload) == bytes(_inner_scapy(kind, payload))


def _check_pktchain_nsh(rec: NshRec, frame: bytes, offset: int, kind: str, payload: bytes) -> None:
    info = parse_nsh(frame, offset)
    assert info.error is None, info
    view = NshView(frame, offset)
    assert (info.spi, info.si, info.ttl, info.oam, info.md_type) == (
        rec.spi,
        rec.si,
        rec.ttl,
        rec.oam,
        rec.md_type,
    )
    assert (view.spi, view.si, view.ttl, view.oam, view.md_type, view.version) == (
        rec.spi,
        rec.si,
        rec.ttl,
        rec.oam,
        rec.md_type,
        0,
    )
    assert info.length == view.header_length == _nsh_length(rec)
    assert info.inner == offset + _nsh_length(rec)
    if rec.md_type == NshMdType.FIXED:
        assert view.context == rec.context
    else:
        tlvs, error = parse_context_tlvs(frame, info.context, info.inner)
        assert (tlvs, error) == (rec.tlvs, None)
    inner = parse_inner(frame, info.next_protocol, info.inner)
    assert inner.error is None, inner
    assert frame[inner.payload : inner.end] == payload
    assert l4_checksum_ok(frame, inner)
    assert bytes(frame[info.inner :]) == bytes(_inner_scapy(kind, payload))


@EXAMPLES
@given(nshs, inner_kinds, payloads)
def test_nsh_over_ethernet_pktchain_builds_scapy_reads(
    rec: NshRec, kind: str, payload: bytes
) -> None:
    frame = build(Ethernet(), _nsh_layer(rec), *_inner_pktchain(kind, payload))
    pkt = Ether(frame)
    assert pkt.type == 0x894F
    _check_scapy_nsh(rec, pkt.payload, kind, payload)


@EXAMPLES
@given(nshs, inner_kinds, payloads)
def test_nsh_over_ethernet_scapy_builds_pktchain_reads(
    rec: NshRec, kind: str, payload: bytes
) -> None:
    frame = bytes(Ether(**MACS) / _scapy_nsh(rec) / _inner_scapy(kind, payload))
    info = parse_frame(frame)
    assert (info.error, info.ethertype, info.l3) == (None, EtherType.NSH, 14)
    _check_pktchain_nsh(rec, frame, info.l3, kind, payload)


@dataclass(frozen=True)
class GpeRec:
    vni: int
    b: bool
    o: bool


# Source ports from the dynamic range, as VXLAN-GPE senders hash them (RFC 7348 §5);
# scapy would dissect a well-known source port (88, 53, ...) as that protocol instead.
source_ports = st.integers(49152, 65535)
gpes = st.builds(GpeRec, st.integers(0, 0xFFFFFF), st.booleans(), st.booleans())


@EXAMPLES
@given(gpes, nshs, inner_kinds, payloads, source_ports)
def test_nsh_over_vxlan_gpe_pktchain_builds_scapy_reads(
    gpe: GpeRec, rec: NshRec, kind: str, payload: bytes, sport: int
) -> None:
    frame = build(
        Ethernet(),
        Ipv4(),
        Udp(sport, 4790),
        VxlanGpe(gpe.vni, b=gpe.b, o=gpe.o),
        _nsh_layer(rec),
        *_inner_pktchain(kind, payload),
    )
    pkt = Ether(frame)
    vxlan = pkt[VXLAN]
    # flags: I (0x08) and P (0x04) set, B 0x02, O 0x01 (draft-ietf-nvo3-vxlan-gpe)
    assert int(vxlan.flags) == 0x0C | (0x02 if gpe.b else 0) | (0x01 if gpe.o else 0)
    assert (vxlan.NextProtocol, vxlan.vni) == (4, gpe.vni)
    assert in4_chksum(17, pkt[IP], bytes(pkt[UDP])) == 0
    # scapy binds NSH under VXLAN only for flags exactly 0x0C; read it directly otherwise.
    nsh = vxlan.payload if int(vxlan.flags) == 0x0C else scapy_nsh.NSH(bytes(vxlan.payload))
    _check_scapy_nsh(rec, nsh, kind, payload)


@EXAMPLES
@given(gpes, nshs, inner_kinds, payloads, source_ports)
def test_nsh_over_vxlan_gpe_scapy_builds_pktchain_reads(
    gpe: GpeRec, rec: NshRec, kind: str, payload: bytes, sport: int
) -> None:
    flags = 0x0C | (0x02 if gpe.b else 0) | (0x01 if gpe.o else 0)
    frame = bytes(
        Ether(**MACS)
        / IP()
        / UDP(sport=sport, dport=4790)
        / VXLAN(flags=flags, NextProtocol=4, vni=gpe.vni)
        / _scapy_nsh(rec)
        / _inner_scapy(kind, payload)
    )
    outer = parse_frame(frame)
    assert (outer.error, outer.dport) == (None, 4790)
    gpe_info = parse_vxlan_gpe(frame, outer.payload)
    view = VxlanGpeView(frame, outer.payload)
    assert (gpe_info.error, gpe_info.vni, gpe_info.next_protocol, gpe_info.flags) == (
        None,
        gpe.vni,
        4,
        flags,
    )
    assert (view.i, view.p, view.b, view.o, view.version, view.vni) == (
        True,
        True,
        gpe.b,
        gpe.o,
        0,
        gpe.vni,
    )
    _check_pktchain_nsh(rec, frame, gpe_info.inner, kind, payload)


def test_vxlan_gpe_without_p_bit_carries_ethernet() -> None:
    frame = bytes(VXLAN(flags=0x08, vni=77) / Ether(**MACS) / IP() / UDP())
    info = parse_vxlan_gpe(frame)
    assert (info.next_protocol, info.vni, info.inner) == (3, 77, 8)
    assert parse_inner(frame, info.next_protocol, info.inner).error is None


# --------------------------------------------------------------------------- never raise


def _prefix_reasons(frame: bytes) -> list[FrameInfo]:
    return [parse_frame(frame[:n]) for n in range(len(frame))]


@settings(max_examples=60, deadline=None)
@given(frames())
def test_every_prefix_parses_without_raising_and_says_why(rec: FrameRec) -> None:
    frame = build(*pktchain_layers(rec))
    assert parse_frame(frame).error is None
    for n, info in enumerate(_prefix_reasons(frame)):
        # Every strict prefix cuts a length field short (Ethernet, tag, ARP, IP
        # total length): each must be reported, none may pass as well formed.
        assert isinstance(info.error, Malformed), (n, info)
        assert info.error.name.startswith(("TRUNCATED_",)) or info.error in (
            Malformed.IPV4_TOTAL_LENGTH,
        ), (n, info)


@settings(max_examples=60, deadline=None)
@given(nshs, inner_kinds, payloads)
def test_every_prefix_of_nsh_over_vxlan_gpe_parses_without_raising(
    rec: NshRec, kind: str, payload: bytes
) -> None:
    frame = build(
        Ipv4(), Udp(4790, 4790), VxlanGpe(), _nsh_layer(rec), *_inner_pktchain(kind, payload)
    )
    for n in range(len(frame) + 1):
        cut = frame[:n]
        outer = parse_ip(cut)
        gpe = parse_vxlan_gpe(cut, 28)
        nsh = parse_nsh(cut, 36)
        inner = parse_inner(cut, nsh.next_protocol, 36 + nsh.length)
        if n < len(frame):
            assert outer.error is Malformed.TRUNCATED_IPV4 or n < 20
        else:
            assert (outer.error, gpe.error, nsh.error, inner.error) == (None, None, None, None)
        if n < 36:
            assert gpe.error is Malformed.TRUNCATED_VXLAN_GPE or n >= 36
        if n < 36 + _nsh_length(rec):
            assert nsh.error is Malformed.TRUNCATED_NSH


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(-4, 210))
def test_random_bytes_never_raise(data: bytes, offset: int) -> None:
    for parse in (parse_frame, parse_ip):
        info = parse(data, offset)
        assert info.error is None or isinstance(info.error, Malformed)
        assert info.end <= max(len(data), 0)
    for parse_tunnel in (parse_nsh, parse_vxlan_gpe):
        result = parse_tunnel(data, offset)
        assert result.error is None or isinstance(result.error, Malformed)
    parse_context_tlvs(data, max(offset, 0), len(data))


@settings(max_examples=200, deadline=None)
@given(frames(), st.data())
def test_lying_length_fields_never_raise(rec: FrameRec, data: st.DataObject) -> None:
    """Overwrite any 1-2 bytes of a valid frame (lengths, IHL, offsets) with anything."""
    frame = bytearray(build(*pktchain_layers(rec)))
    at = data.draw(st.integers(0, len(frame) - 1))
    frame[at] = data.draw(u8)
    if at + 1 < len(frame):
        frame[at + 1] = data.draw(u8)
    info = parse_frame(frame)
    assert info.error is None or isinstance(info.error, Malformed)
    if info.error is None and info.l4 >= 0:
        assert info.l3 <= info.l4 <= info.payload <= info.end <= len(frame)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", Malformed.TRUNCATED_ETHERNET),
        (bytes(13), Malformed.TRUNCATED_ETHERNET),
        (bytes(12) + b"\x81\x00" + b"\x00", Malformed.TRUNCATED_VLAN),
        (bytes(12) + b"\x81\x00\x00\x01" * 5 + b"\x08\x00", Malformed.VLAN_DEPTH),
        (bytes(12) + b"\x08\x06" + bytes(27), Malformed.TRUNCATED_ARP),
        (bytes(12) + b"\x08\x06" + b"\x00\x06" + bytes(26), Malformed.ARP_FORMAT),
        (bytes(12) + b"\x08\x00" + bytes(19), Malformed.TRUNCATED_IPV4),
        (bytes(12) + b"\x08\x00" + b"\x65" + bytes(19), Malformed.BAD_IP_VERSION),
        (bytes(12) + b"\x08\x00" + b"\x44" + bytes(19), Malformed.BAD_IHL),
        (bytes(12) + b"\x08\x00" + b"\x45\x00\x00\x10" + bytes(16), Malformed.IPV4_TOTAL_LENGTH),
        (bytes(12) + b"\x08\x00" + b"\x45\x00\x00\x30" + bytes(16), Malformed.TRUNCATED_IPV4),
        (
            bytes(12) + b"\x08\x00" + b"\x46\x00\x00\x18" + bytes(16) + b"\x07\x09\x00\x00",
            Malformed.IPV4_OPTIONS,
        ),
        (bytes(12) + b"\x86\xdd" + bytes(39), Malformed.TRUNCATED_IPV6),
    ],
)
def test_named_reasons(frame: bytes, reason: Malformed) -> None:
    assert parse_frame(frame).error is reason


@pytest.mark.parametrize(
    ("layers", "reason"),
    [
        ([Ipv4(), TcpLayer(data_offset=4)], Malformed.TCP_DATA_OFFSET),
        ([Ipv4(), TcpLayer(data_offset=15)], Malformed.TCP_DATA_OFFSET),
        ([Ipv4(total_length=30, proto=6), b"\0" * 10], Malformed.TRUNCATED_TCP),
        ([Ipv4(), Udp(length=7)], Malformed.UDP_LENGTH),
        ([Ipv4(), Udp(length=9)], Malformed.UDP_LENGTH),
        ([Ipv4(proto=17), b"\0" * 7], Malformed.TRUNCATED_UDP),
        ([Ipv4(proto=1), b"\0" * 7], Malformed.TRUNCATED_ICMP),
        ([Ipv6(next_header=58), b"\0" * 7], Malformed.TRUNCATED_ICMPV6),
        ([Ipv6(payload_length=100), Udp()], Malformed.TRUNCATED_IPV6),
        ([Ipv6(next_header=0), b"\x11\x05" + bytes(6)], Malformed.TRUNCATED_IPV6_EXT),
        ([Ipv6(), *[Ipv6Extension()] * 9, Udp()], Malformed.IPV6_EXT_CHAIN),
    ],
)
def test_named_reasons_of_inner_layers(layers: list[Layer | bytes], reason: Malformed) -> None:
    frame = build(Ethernet(), *layers)
    info = parse_frame(frame)
    assert info.error is reason
    assert info.l3 == 14


def test_non_first_fragments_have_no_l4_but_keep_addresses() -> None:
    v4 = parse_frame(build(Ethernet(), Ipv4(fragment_offset=3, proto=17), b"\0" * 16))
    assert (v4.error, v4.fragment, v4.l4, v4.proto, v4.sport) == (None, True, -1, 17, 0)
    assert v4.src == bytes([10, 0, 0, 1])
    v6 = parse_frame(build(Ethernet(), Ipv6(), Ipv6Fragment(offset=5, next_header=6), bytes(20)))
    assert (v6.error, v6.fragment, v6.l4, v6.proto) == (None, True, -1, 6)
    first = parse_frame(build(Ethernet(), Ipv4(mf=True), Udp(7, 9), b"x"))
    assert (first.fragment, first.sport, first.dport) == (True, 7, 9)


def test_bare_ip_and_other_ethertypes() -> None:
    packet = build(Ipv6(), Udp(1, 2), b"hi")
    info = parse_ip(packet)
    assert (info.error, info.l2, info.l3, info.ethertype, info.sport) == (None, -1, 0, 0x86DD, 1)
    other = parse_frame(build(Ethernet(type=0x88CC), b"lldp"))
    assert (other.error, other.ethertype, other.l3, other.ip_version) == (None, 0x88CC, 14, 0)
    assert parse_ip(b"").error is Malformed.TRUNCATED_IP
    assert parse_frame(b"x" * 20, 21).error is Malformed.BAD_OFFSET
    assert parse_frame(b"x" * 20, -1).error is Malformed.BAD_OFFSET


def test_nsh_inconsistencies_are_named() -> None:
    good = build(Nsh(context=bytes(16)), Ipv4(), Udp())
    assert parse_nsh(good).error is None
    wrong_length = bytearray(good)
    wrong_length[1] = (wrong_length[1] & 0xC0) | 5  # MD type 1 must say 6 words
    assert parse_nsh(wrong_length).error is Malformed.NSH_LENGTH
    version = bytearray(good)
    version[0] |= 0x40
    assert parse_nsh(version).error is Malformed.NSH_VERSION
    reserved = bytearray(good)
    reserved[2] &= 0xF0
    assert parse_nsh(reserved).error is Malformed.NSH_MD_TYPE
    md2 = build(Nsh(tlvs=[ContextTlv(1, 2, b"abcdef")]), Ipv4(), Udp())
    assert parse_nsh(md2).error is None
    overrun = bytearray(md2)
    overrun[11] = 13  # value length 13 pads to 16: past the NSH Length
    assert parse_nsh(overrun).error is Malformed.NSH_TLV
    assert parse_nsh(good[:23]).error is Malformed.TRUNCATED_NSH
    assert parse_inner(good, 5, 24).error is Malformed.UNSUPPORTED_NEXT_PROTOCOL
    assert parse_inner(good, 2, 24).error is Malformed.BAD_IP_VERSION


def test_nsh_next_protocol_and_ethertype_are_derived() -> None:
    frame = build(Ethernet(), Nsh(spi=42, si=7), Ethernet(), Ipv6(), Udp())
    assert EthernetView(frame).ethertype == EtherType.NSH
    nsh = parse_nsh(frame, 14)
    assert (nsh.spi, nsh.si, nsh.next_protocol, nsh.md_type, nsh.length) == (42, 7, 3, 1, 24)
    with pytest.raises(ValueError, match=r"Nsh\.next_protocol"):
        build(Nsh(), b"payload")


def test_builder_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"Ethernet\.type"):
        build(Ethernet(), b"x")
    with pytest.raises(ValueError, match=r"Tcp\.checksum"):
        build(TcpLayer())
    with pytest.raises(ValueError, match=r"Ipv4\.options"):
        build(Ipv4(options=b"\x01"), Udp())
    with pytest.raises(ValueError, match=r"IPv4\.ttl"):
        build(Ipv4(ttl=256), Udp())
    with pytest.raises(ValueError, match=r"ContextTlv\.value"):
        build(Nsh(tlvs=[ContextTlv(1, 1, bytes(128))]), Ipv4(), Udp())


def test_tcp_flags_reach_the_parse_result() -> None:
    frame = build(Ethernet(), Ipv4(), TcpLayer(flags=TcpFlag.SYN | TcpFlag.ACK))
    assert TcpFlag(parse_frame(frame).tcp_flags) == TcpFlag.SYN | TcpFlag.ACK


def test_memoryviews_of_any_shape_count_bytes() -> None:
    frame = build(Ethernet(), Ipv4(), Udp(7, 9), b"even")
    expected = parse_frame(frame)
    assert expected.error is None
    assert parse_frame(memoryview(frame).cast("H")) == expected
    spread = bytearray(2 * len(frame))
    spread[::2] = frame
    assert parse_frame(memoryview(spread)[::2]) == expected  # not contiguous
    assert parse_ip(memoryview(frame).cast("H"), 14) == expected._replace(start=14, l2=-1)
