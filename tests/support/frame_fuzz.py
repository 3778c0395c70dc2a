"""Frames for fuzzing: valid seeds of every header the codec knows, and their mutations.

Seeds are built with scapy (an independent encoder) for one set of
addresses (`Endpoints`): ARP, 802.1Q and 802.1ad tags, IPv4 with options and
fragments, IPv6 with every extension header the codec walks, ICMP and ICMPv6
(echo, errors quoting a packet, neighbour discovery, router advertisement,
MLD), TCP with options, UDP (DHCP, DNS, VXLAN-GPE with NSH of both MD
types), NSH over Ethernet and VRRPv3. Each seed comes with the map of its
header fields, taken from scapy by building the frame with each field at its
lowest and highest value and comparing the bytes: the bits that differ are
the field, wherever scapy puts it. So "set the IPv6 payload length to 0" or
"make the NSH length lie" needs no offset written here.

`Mutator` turns seeds into a deterministic stream of frames from one integer
seed: bit flips, truncation (mostly near a header's boundary), a field set to
a boundary value, a length or count field that lies, an IPv4 or TCP option
whose length lies, random bytes written over or appended, two seeds spliced,
and wholly random frames, one to three at a time; a share of the seeds goes
out unchanged, so that the valid paths are taken too.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from scapy.contrib.nsh import NSH, NSHTLV
from scapy.fields import FlagValue
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
    IPOption_Timestamp,
)
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
    RouterAlert,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.vrrp import VRRPv3
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw, raw

__all__ = [
    "MAX_FRAME",
    "Endpoints",
    "FieldMap",
    "Mutator",
    "Seed",
    "both",
    "build_seeds",
    "field_map",
    "ip_seeds",
    "keep_off",
    "nsh_datagrams",
    "nsh_inner",
    "seed_packets",
    "whole_outer_tag",
]

MAX_FRAME = 1514
"""The largest frame sent (an Ethernet frame of a 1500-byte MTU, without FCS)."""

VXLAN_GPE_PORT = 4790
_GPE_FLAGS = "Instance+NextProtocol"
_NSH_NEXT = 4  # VXLAN-GPE next protocol: NSH (RFC 8300 §3... draft-ietf-nvo3-vxlan-gpe)
_NSH_ETHERNET = 3  # NSH next protocol: Ethernet (RFC 8300 §2.2)
_PKTCHAIN_CLASS = 0xFFF6  # pktchain's context headers (docs/nsh.md): path 1, offload 2
_OTHER_CLASS = 0x0000


@dataclass(frozen=True)
class Endpoints:
    """The addresses the seeds are made with: a frame from `src` to `dst`."""

    src_mac: str = "02:00:00:00:00:01"
    dst_mac: str = "02:00:00:00:00:02"
    src_ip: str = "10.9.0.1"
    dst_ip: str = "10.9.0.2"
    src_ip6: str = "fd00:9::1"
    dst_ip6: str = "fd00:9::2"


@dataclass(frozen=True)
class FieldMap:
    """One header field of a seed: the bits `mask` covers in `frame[offset:offset+len(mask)]`."""

    layer: str
    name: str
    offset: int
    mask: int
    """The field's bits, as a big-endian integer over its bytes."""
    size: int
    """Bytes the mask spans."""
    width: int
    """Bits of the field."""
    shift: int
    """Where its lowest bit is in the integer of its bytes."""

    @property
    def is_length(self) -> bool:
        """A field that says how long or how many: where lying hurts most."""
        name = self.name.lower()
        return any(word in name for word in _LENGTH_WORDS)


_LENGTH_WORDS = ("len", "ihl", "dataofs", "count", "plen", "hlen", "frag", "numaddr", "mdtype")


@dataclass(frozen=True)
class Seed:
    """A valid frame, what it is, where its layers start and its header fields."""

    kind: str
    frame: bytes
    layers: tuple[int, ...] = ()
    fields: tuple[FieldMap, ...] = ()
    options: tuple[tuple[int, int], ...] = ()
    """Regions holding type-length-value options (IPv4, TCP): (start, end)."""
    lengths: tuple[FieldMap, ...] = field(default=(), repr=False)


def _width(fld: object) -> int | None:
    size = getattr(fld, "size", None)
    if isinstance(size, int) and size > 0:
        return size
    sz = getattr(fld, "sz", None)
    if isinstance(sz, int) and sz > 0:
        return sz * 8
    return None


_ADDRESS_EXTREMES: dict[int, tuple[object, object]] = {
    6: ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"),
    4: ("0.0.0.0", "255.255.255.255"),
    16: ("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
}


def _set_and_build(packet: Packet, index: int, name: str, value: object) -> bytes | None:
    copy = packet.copy()
    layer = copy.getlayer(index)
    if layer is None:
        return None
    try:
        layer.setfieldval(name, value)
        return raw(copy)
    except (ValueError, TypeError, struct.error, OverflowError, AttributeError, IndexError):
        return None


def _extremes_mask(
    packet: Packet, index: int, name: str, extremes: tuple[object, object], size: int
) -> tuple[int, int, int] | None:
    """The field's bytes and bits: those that differ between its lowest and highest value."""
    low = _set_and_build(packet, index, name, extremes[0])
    high = _set_and_build(packet, index, name, extremes[1])
    if low is None or high is None or len(low) != size or len(high) != size:
        return None
    diff = [i for i in range(size) if low[i] != high[i]]
    if not diff:
        return None
    start, end = diff[0], diff[-1] + 1
    return (
        start,
        end,
        int.from_bytes(low[start:end], "big") ^ int.from_bytes(high[start:end], "big"),
    )


def _flip_mask(
    packet: Packet, index: int, name: str, value: int, *, width: int, frame: bytes
) -> tuple[int, int, int] | None:
    """The field's bits from one of its bits flipped, for a field whose extremes
    change the frame's length (a length that scapy follows, such as ARP's hlen)."""
    for bit in range(width):
        built = _set_and_build(packet, index, name, value ^ (1 << bit))
        if built is None or len(built) != len(frame):
            continue
        diff = [i for i in range(len(frame)) if built[i] != frame[i]]
        if len(diff) != 1:
            continue
        flipped = (built[diff[0]] ^ frame[diff[0]]).bit_length() - 1
        lowest = (len(frame) - 1 - diff[0]) * 8 + flipped - bit  # from the frame's end
        if lowest < 0:
            continue
        top = lowest + width
        start = len(frame) - (top + 7) // 8
        end = len(frame) - lowest // 8
        mask = ((1 << width) - 1) << (lowest - (len(frame) - end) * 8)
        return start, end, mask
    return None


def field_map(
    frame: bytes, first: type[Packet] = Ether
) -> tuple[tuple[int, ...], tuple[FieldMap, ...]]:
    """The layers' start offsets and the header fields of `frame`, found by scapy.

    The frame is dissected, then built again with each integer or address
    field at its lowest and at its highest value: the bits that differ
    between the two builds are the field's.  Fields scapy cannot set that
    way (lists, options) are left out; `Seed.options` covers option regions.
    """
    try:
        packet = first(frame)
        if raw(packet) != frame:
            return (), ()
    except (ValueError, TypeError, struct.error):
        return (), ()  # not something scapy can take apart and build again
    layers: list[int] = []
    fields: list[FieldMap] = []
    for index, layer in enumerate(packet.iterpayloads()):
        if isinstance(layer, Raw) or type(layer).__name__ == "Padding":
            break
        layers.append(len(frame) - len(raw(layer)))
        for fld in layer.fields_desc:
            name = fld.name
            value = layer.getfieldval(name)
            if isinstance(value, FlagValue):
                value = int(value)
            width = _width(fld)
            extremes: tuple[object, object] | None = None
            if isinstance(value, int) and width is not None and width <= 64:
                extremes = (0, (1 << width) - 1)
            elif isinstance(value, str) and isinstance(getattr(fld, "sz", None), int):
                extremes = _ADDRESS_EXTREMES.get(fld.sz)
            if extremes is None:
                continue
            found = _extremes_mask(packet, index, name, extremes, len(frame))
            if found is None and isinstance(value, int) and width is not None:
                found = _flip_mask(packet, index, name, value, width=width, frame=frame)
            if found is None:
                continue
            start, end, mask = found
            shift = (mask & -mask).bit_length() - 1
            bits = mask.bit_count()
            if mask >> shift != (1 << bits) - 1:
                continue  # not one run of bits: scapy laid it out in a way not handled here
            fields.append(
                FieldMap(type(layer).__name__, name, start, mask, end - start, bits, shift)
            )
    return tuple(layers), tuple(fields)


def _option_regions(frame: bytes, first: type[Packet]) -> tuple[tuple[int, int], ...]:
    """Where the IPv4 and TCP options of `frame` are (a well-formed frame)."""
    packet = first(frame)
    regions = []
    for layer in packet.iterpayloads():
        if isinstance(layer, IP) and layer.ihl and layer.ihl > 5:
            start = len(frame) - len(raw(layer)) + 20
            regions.append((start, start + (layer.ihl - 5) * 4))
        elif isinstance(layer, TCP) and layer.dataofs and layer.dataofs > 5:
            start = len(frame) - len(raw(layer)) + 20
            regions.append((start, start + (layer.dataofs - 5) * 4))
    return tuple(regions)


def _nsh_fields(frame: bytes, first: type[Packet]) -> list[FieldMap]:
    """NSH fields whose other values change what scapy builds, so that
    `field_map` cannot find them: MD Type (RFC 8300 §2.2: the low 4 bits of
    the third byte), and the Length of each MD type 2 context header (§2.5.1:
    the low 7 bits of its fourth byte)."""
    fields = []
    for layer in first(frame).iterpayloads():
        if isinstance(layer, NSH):
            start = len(frame) - len(raw(layer))
            fields.append(FieldMap("NSH", "mdtype", start + 2, 0x0F, 1, 4, 0))
        if isinstance(layer, NSH) and layer.mdtype == 2:
            at = len(frame) - len(raw(layer)) + 8
            end = at + (layer.length - 2) * 4
            while at + 4 <= end:
                fields.append(FieldMap("NSHTLV", "length", at + 3, 0x7F, 1, 7, 0))
                at += 4 + ((frame[at + 3] & 0x7F) + 3) // 4 * 4
    return fields


def _seed(kind: str, packet: Packet) -> Seed:
    frame = raw(packet)
    first = type(packet)
    layers, fields = field_map(frame, first)
    fields += tuple(_nsh_fields(frame, first))
    lengths = tuple(f for f in fields if f.is_length)
    return Seed(kind, frame, layers, fields, _option_regions(frame, first), lengths)


def _nsh_md1(spi: int, si: int, inner: Packet, *, ttl: int = 63, oam: int = 0) -> Packet:
    return (
        NSH(
            mdtype=1,
            nextproto=_NSH_ETHERNET,
            spi=spi,
            si=si,
            ttl=ttl,
            oam=oam,
            context_header=bytes(range(16)),
        )
        / inner
    )


def _nsh_md2(spi: int, si: int, inner: Packet, tlvs: Sequence[tuple[int, int, bytes]]) -> Packet:
    # RFC 8300 §2.5.1: Length counts the value's bytes, padding to 4 excluded.
    padded = [(cls, kind, value, value + bytes(-len(value) % 4)) for cls, kind, value in tlvs]
    vlch = [
        NSHTLV(
            class_=cls,
            type=kind,
            length=len(value),
            metadata=list(struct.unpack(f"!{len(whole) // 4}I", whole)),
        )
        for cls, kind, value, whole in padded
    ]
    return NSH(mdtype=2, nextproto=_NSH_ETHERNET, spi=spi, si=si, ttl=63, vlch=vlch) / inner


def nsh_datagrams(ends: Endpoints, vni: int) -> list[Seed]:
    """VXLAN-GPE datagrams (UDP payloads) of the underlay, as seeds: NSH of MD
    types 1 and 2 carrying frames switched (SPI 0, network `vni`) and chained,
    with pktchain's path and offload context headers and another class's, and
    a hello."""
    inner = [
        Ether(src=ends.src_mac, dst=ends.dst_mac)
        / IP(src=ends.src_ip, dst=ends.dst_ip, id=1)
        / UDP(sport=4000, dport=53)
        / Raw(b"q" * 20),
        Ether(src=ends.src_mac, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=ends.src_mac, psrc=ends.src_ip, pdst=ends.dst_ip),
        Ether(src=ends.src_mac, dst=ends.dst_mac)
        / IPv6(src=ends.src_ip6, dst=ends.dst_ip6)
        / ICMPv6EchoRequest(id=7, seq=1),
        Ether(src=ends.src_mac, dst=ends.dst_mac)
        / IP(src=ends.src_ip, dst=ends.dst_ip, id=2)
        / TCP(sport=40000, dport=80, flags="S", options=[("MSS", 1460)]),
    ]
    gpe = VXLAN(flags=_GPE_FLAGS, NextProtocol=_NSH_NEXT, vni=vni)
    out: list[tuple[str, Packet]] = []
    # A virtio-net header asking for the checksum at 34 + 6 (little-endian, as
    # the kernel writes it), and two hops' tags.
    offload = bytes([1, 0]) + struct.pack("<HHHH", 0, 0, 34, 6)
    path = struct.pack("!II", 0x01020304, 0x05060708)
    for n, frame in enumerate(inner):
        out.append((f"nsh-md1-switched-{n}", gpe / _nsh_md1(0, 255, frame)))
        out.append((f"nsh-md1-chained-{n}", gpe / _nsh_md1(1 + n, 254, frame)))
        tlvs = [(_PKTCHAIN_CLASS, 1, path), (_PKTCHAIN_CLASS, 2, offload)]
        out.append((f"nsh-md2-switched-{n}", gpe / _nsh_md2(0, 255, frame, tlvs)))
        out.append((f"nsh-md2-chained-{n}", gpe / _nsh_md2(1 + n, 255, frame, tlvs)))
        other = [(_OTHER_CLASS, 7, bytes(8))]
        out.append((f"nsh-md2-other-class-{n}", gpe / _nsh_md2(0, 255, frame, other)))
    hello_inner = Ether(src="02:50:00:00:00:01", dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / Raw(
        b"pktchain hello x".ljust(46, b"\0")
    )
    out.append(("nsh-hello", gpe / _nsh_md1(0, 255, hello_inner, oam=1)))
    return [_seed(kind, packet) for kind, packet in out]


def build_seeds(ends: Endpoints, *, extra: Sequence[tuple[str, Packet]] = ()) -> list[Seed]:
    """Valid frames of every kind the codec parses, from `ends.src` to `ends.dst`."""
    return [_seed(kind, packet) for kind, packet in seed_packets(ends, extra=extra)]


def ip_seeds(ends: Endpoints) -> list[Seed]:
    """The IPv4 and IPv6 packets of `build_seeds`, without their Ethernet header
    (what a TUN device carries)."""
    return [
        _seed(kind, packet.payload)
        for kind, packet in seed_packets(ends)
        if isinstance(packet.payload, (IP, IPv6))
    ]


def seed_packets(
    ends: Endpoints, *, extra: Sequence[tuple[str, Packet]] = ()
) -> list[tuple[str, Packet]]:
    """The packets of `build_seeds`, as scapy packets."""
    eth = Ether(src=ends.src_mac, dst=ends.dst_mac)
    bcast = Ether(src=ends.src_mac, dst="ff:ff:ff:ff:ff:ff")
    v4 = IP(src=ends.src_ip, dst=ends.dst_ip, id=0x1234, ttl=64)
    v6 = IPv6(src=ends.src_ip6, dst=ends.dst_ip6, hlim=64)
    quoted = IP(src=ends.dst_ip, dst=ends.src_ip, id=9) / UDP(sport=53, dport=4000) / Raw(b"x" * 8)
    tcp_options = [
        ("MSS", 1460),
        ("SAckOK", b""),
        ("Timestamp", (1, 0)),
        ("NOP", None),
        ("WScale", 7),
    ]
    gpe = VXLAN(flags=_GPE_FLAGS, NextProtocol=_NSH_NEXT, vni=0x1234)
    inner = eth / v4 / UDP(sport=1, dport=2) / Raw(b"i" * 18)
    packets: list[tuple[str, Packet]] = [
        ("arp-request", bcast / ARP(op=1, hwsrc=ends.src_mac, psrc=ends.src_ip, pdst=ends.dst_ip)),
        (
            "arp-reply",
            eth
            / ARP(op=2, hwsrc=ends.src_mac, psrc=ends.src_ip, hwdst=ends.dst_mac, pdst=ends.dst_ip),
        ),
        ("arp-probe", bcast / ARP(op=1, hwsrc=ends.src_mac, psrc="0.0.0.0", pdst=ends.src_ip)),
        ("vlan-udp", eth / Dot1Q(vlan=10, prio=3) / v4 / UDP(sport=5000, dport=5001) / Raw(b"v")),
        (
            "qinq-tcp",
            eth / Dot1AD(vlan=100) / Dot1Q(vlan=20) / v4 / TCP(sport=1000, dport=80, flags="S"),
        ),
        ("ipv4-udp", eth / v4 / UDP(sport=4000, dport=53) / DNS(id=1, qd=DNSQR(qname="a.test"))),
        ("ipv4-tcp-syn", eth / v4 / TCP(sport=40000, dport=80, flags="S", options=tcp_options)),
        (
            "ipv4-tcp-data",
            eth
            / v4
            / TCP(sport=40000, dport=80, flags="PA", seq=1, ack=1)
            / Raw(b"GET / HTTP/1.0"),
        ),
        ("ipv4-tcp-fin", eth / v4 / TCP(sport=40000, dport=80, flags="FA", seq=9, ack=9)),
        ("ipv4-tcp-rst", eth / v4 / TCP(sport=40000, dport=80, flags="R", seq=9)),
        (
            "ipv4-options",
            eth
            / IP(
                src=ends.src_ip,
                dst=ends.dst_ip,
                id=7,
                options=[IPOption_RR(routers=["0.0.0.0"] * 2), IPOption_NOP(), IPOption_NOP()],
            )
            / UDP(sport=4000, dport=4001)
            / Raw(b"o" * 8),
        ),
        (
            "ipv4-options-ra-ts",
            eth
            / IP(
                src=ends.src_ip,
                dst=ends.dst_ip,
                id=8,
                options=[IPOption_Router_Alert(), IPOption_Timestamp(flg=0, timestamp=[0])],
            )
            / ICMP(type=8, id=1, seq=1),
        ),
        (
            "ipv4-fragment-first",
            eth
            / IP(src=ends.src_ip, dst=ends.dst_ip, id=77, flags="MF", frag=0)
            / UDP(sport=4000, dport=4002, len=1008)
            / Raw(b"f" * 40),
        ),
        (
            "ipv4-fragment-later",
            eth
            / IP(src=ends.src_ip, dst=ends.dst_ip, id=77, flags=0, frag=6, proto=17)
            / Raw(b"g" * 48),
        ),
        ("icmp-echo", eth / v4 / ICMP(type=8, id=0x4242, seq=1) / Raw(b"ping" * 8)),
        ("icmp-echo-reply", eth / v4 / ICMP(type=0, id=0x4242, seq=1) / Raw(b"pong")),
        ("icmp-unreachable", eth / v4 / ICMP(type=3, code=3) / quoted),
        ("icmp-time-exceeded", eth / v4 / ICMP(type=11, code=0) / quoted),
        ("icmp-frag-needed", eth / v4 / ICMP(type=3, code=4, nexthopmtu=1400) / quoted),
        (
            "dhcp-discover",
            bcast
            / IP(src="0.0.0.0", dst="255.255.255.255", id=3)
            / UDP(sport=68, dport=67)
            / BOOTP(chaddr=bytes.fromhex(ends.src_mac.replace(":", "")), xid=1)
            / DHCP(options=[("message-type", "discover"), "end"]),
        ),
        (
            "dhcp-offer",
            eth
            / IP(src=ends.src_ip, dst=ends.dst_ip, id=4)
            / UDP(sport=67, dport=68)
            / BOOTP(op=2, xid=1, yiaddr=ends.dst_ip)
            / DHCP(options=[("message-type", "offer"), "end"]),
        ),
        (
            "vrrp",
            Ether(src="00:00:5e:00:01:01", dst="01:00:5e:00:00:12")
            / IP(src=ends.src_ip, dst="224.0.0.18", ttl=255, id=5)
            / VRRPv3(vrid=1, priority=100, ipcount=1, addrlist=[ends.dst_ip]),
        ),
        ("ipv6-udp", eth / v6 / UDP(sport=4000, dport=53) / Raw(b"six")),
        ("ipv6-tcp", eth / v6 / TCP(sport=40000, dport=443, flags="S", options=tcp_options)),
        ("ipv6-echo", eth / v6 / ICMPv6EchoRequest(id=0x77, seq=1, data=b"ping6")),
        ("ipv6-echo-reply", eth / v6 / ICMPv6EchoReply(id=0x77, seq=1)),
        (
            "ipv6-hop-by-hop",
            eth / v6 / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / UDP(sport=1, dport=2),
        ),
        (
            "ipv6-dest-routing",
            eth
            / v6
            / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")])
            / IPv6ExtHdrRouting(addresses=[ends.dst_ip6])
            / TCP(sport=3, dport=4, flags="S"),
        ),
        (
            "ipv6-fragment-first",
            eth / v6 / IPv6ExtHdrFragment(id=5, m=1, offset=0) / UDP(sport=5, dport=6, len=2000),
        ),
        (
            "ipv6-fragment-later",
            eth / v6 / IPv6ExtHdrFragment(id=5, m=0, offset=100, nh=17) / Raw(b"h" * 24),
        ),
        (
            "ipv6-long-chain",
            eth
            / v6
            / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / UDP(sport=7, dport=8),
        ),
        (
            "ipv6-ns",
            Ether(src=ends.src_mac, dst="33:33:ff:00:00:02")
            / IPv6(src=ends.src_ip6, dst="ff02::1:ff00:2", hlim=255)
            / ICMPv6ND_NS(tgt=ends.dst_ip6)
            / ICMPv6NDOptSrcLLAddr(lladdr=ends.src_mac),
        ),
        (
            "ipv6-ns-dad",
            Ether(src=ends.src_mac, dst="33:33:ff:00:00:01")
            / IPv6(src="::", dst="ff02::1:ff00:1", hlim=255)
            / ICMPv6ND_NS(tgt=ends.src_ip6),
        ),
        (
            "ipv6-na",
            eth
            / IPv6(src=ends.src_ip6, dst=ends.dst_ip6, hlim=255)
            / ICMPv6ND_NA(tgt=ends.src_ip6, R=0, S=1, O=1)
            / ICMPv6NDOptDstLLAddr(lladdr=ends.src_mac),
        ),
        (
            "ipv6-ra",
            Ether(src=ends.src_mac, dst="33:33:00:00:00:01")
            / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
            / ICMPv6ND_RA()
            / ICMPv6NDOptPrefixInfo(prefix="fd00:9::", prefixlen=64),
        ),
        (
            "ipv6-mld",
            Ether(src=ends.src_mac, dst="33:33:00:00:00:16")
            / IPv6(src="::", dst="ff02::16", hlim=1)
            / IPv6ExtHdrHopByHop(options=[RouterAlert()])
            / ICMPv6MLReport2(),
        ),
        (
            "ipv6-unreachable",
            eth
            / v6
            / ICMPv6DestUnreach(code=4)
            / IPv6(src=ends.dst_ip6, dst=ends.src_ip6)
            / UDP(sport=53, dport=4000),
        ),
        (
            "ipv6-too-big",
            eth
            / v6
            / ICMPv6PacketTooBig(mtu=1280)
            / IPv6(src=ends.dst_ip6, dst=ends.src_ip6)
            / TCP(sport=80, dport=40000),
        ),
        (
            "vxlan-gpe-nsh-md1",
            eth / v4 / UDP(sport=40000, dport=VXLAN_GPE_PORT) / gpe / _nsh_md1(1, 255, inner),
        ),
        (
            "vxlan-gpe-nsh-md2",
            eth
            / v4
            / UDP(sport=40001, dport=VXLAN_GPE_PORT)
            / gpe
            / _nsh_md2(2, 254, inner, [(_PKTCHAIN_CLASS, 1, bytes(8))]),
        ),
        ("nsh-ethernet-md1", Ether(src=ends.src_mac, dst=ends.dst_mac) / _nsh_md1(3, 255, inner)),
        (
            "nsh-ethernet-md2",
            Ether(src=ends.src_mac, dst=ends.dst_mac)
            / _nsh_md2(4, 255, inner, [(_PKTCHAIN_CLASS, 2, bytes(12))]),
        ),
        ("ethertype-other", eth / Raw(b"\x88\xb5" + b"local experiment".ljust(46, b"."))),
        (
            "lldp-multicast",
            Ether(src=ends.src_mac, dst="01:80:c2:00:00:0e", type=0x88CC)
            / Raw(b"\x02\x07\x04" + bytes(43)),
        ),
        *extra,
    ]
    return packets


# -- mutations ----------------------------------------------------------------

Mutation = Callable[[random.Random, bytearray, Seed], bytearray]


def _bit_flips(rng: random.Random, frame: bytearray, _seed: Seed) -> bytearray:
    if not frame:
        return frame
    # Mostly in the headers (the first 96 bytes), sometimes anywhere.
    limit = min(len(frame), 96) if rng.random() < 0.8 else len(frame)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        at = rng.randrange(limit)
        frame[at] ^= 1 << rng.randrange(8)
    return frame


def _truncate(rng: random.Random, frame: bytearray, seed: Seed) -> bytearray:
    if seed.layers and rng.random() < 0.7:
        # Near a header's boundary: where the codec decides "cut short".
        cut = rng.choice(seed.layers) + rng.randint(-2, 24)
    else:
        cut = rng.randrange(len(frame) + 1)
    return frame[: max(0, min(cut, len(frame)))]


def _boundary(rng: random.Random, width: int, old: int) -> int:
    top = (1 << width) - 1
    choices = (0, 1, top, top - 1, top >> 1, (top >> 1) + 1, old + 1, old - 1, old ^ 1)
    value = rng.choice(choices) if rng.random() < 0.85 else rng.randrange(top + 1)
    return value & top


def _set_field(frame: bytearray, fld: FieldMap, value: int) -> None:
    end = fld.offset + fld.size
    if end > len(frame):
        return
    current = int.from_bytes(frame[fld.offset : end], "big")
    current = (current & ~fld.mask) | ((value << fld.shift) & fld.mask)
    frame[fld.offset : end] = current.to_bytes(fld.size, "big")


def _get_field(frame: bytearray, fld: FieldMap) -> int:
    return (
        int.from_bytes(frame[fld.offset : fld.offset + fld.size], "big") & fld.mask
    ) >> fld.shift


def _field_value(rng: random.Random, frame: bytearray, seed: Seed) -> bytearray:
    if seed.fields:
        fld = rng.choice(seed.fields)
        _set_field(frame, fld, _boundary(rng, fld.width, _get_field(frame, fld)))
    return frame


def _length_lie(rng: random.Random, frame: bytearray, seed: Seed) -> bytearray:
    if not seed.lengths:
        return _field_value(rng, frame, seed)
    fld = rng.choice(seed.lengths)
    old = _get_field(frame, fld)
    delta = rng.choice((1, 2, 3, 4, 8, 20, 40, 256))
    value = old + delta if rng.random() < 0.5 else old - delta
    if rng.random() < 0.3:
        value = _boundary(rng, fld.width, old)
    _set_field(frame, fld, value & ((1 << fld.width) - 1))
    return frame


def _option_lie(rng: random.Random, frame: bytearray, seed: Seed) -> bytearray:
    """An IPv4 or TCP option whose length byte lies (0, 1, past the end, ...)."""
    if not seed.options:
        return _length_lie(rng, frame, seed)
    start, end = rng.choice(seed.options)
    at = start
    lengths = []
    while at < min(end, len(frame)):
        kind = frame[at]
        if kind in (0, 1):  # end of list, no-operation: one byte (RFC 791, RFC 9293)
            at += 1
            continue
        if at + 1 >= len(frame):
            break
        lengths.append(at + 1)
        at += max(frame[at + 1], 2)
    if lengths:
        where = rng.choice(lengths)
        lies = (0, 1, 2, 3, 255, end - where + 2, end - where + 1, frame[where] + 1)
        frame[where] = rng.choice(lies) & 0xFF
    elif start < min(end, len(frame)):
        frame[rng.randrange(start, min(end, len(frame)))] = rng.randrange(256)
    return frame


def _random_bytes(rng: random.Random, frame: bytearray, _seed: Seed) -> bytearray:
    choice = rng.random()
    if choice < 0.5 and frame:
        at = rng.randrange(len(frame))
        span = rng.randint(1, 16)
        frame[at : at + span] = rng.randbytes(min(span, len(frame) - at))
    elif choice < 0.8:
        frame += rng.randbytes(rng.choice((1, 4, 8, 60, 500)))
    else:
        at = rng.randrange(len(frame) + 1)
        frame[at:at] = rng.randbytes(rng.randint(1, 12))
    return frame


class Mutator:
    """A deterministic stream of mutated frames from `seeds`, from one integer seed.

    `frames(n)` gives the next `n` frames; two mutators made with the same
    seeds and `seed` give the same frames.  `min_size` pads short frames with
    zeros (a wire takes nothing shorter than an Ethernet header), and `fit`
    adjusts each frame last; `valid_share` is the share of seeds given
    unchanged.
    """

    MUTATIONS: tuple[tuple[str, Mutation, int], ...] = (
        ("bit-flip", _bit_flips, 22),
        ("truncate", _truncate, 12),
        ("field-boundary", _field_value, 18),
        ("length-lie", _length_lie, 18),
        ("option-lie", _option_lie, 6),
        ("random-bytes", _random_bytes, 12),
    )

    def __init__(
        self,
        seeds: Sequence[Seed],
        seed: int,
        *,
        valid_share: float = 0.1,
        random_share: float = 0.04,
        splice_share: float = 0.04,
        min_size: int = 0,
        max_size: int = MAX_FRAME,
        fit: Callable[[bytes], bytes] | None = None,
    ) -> None:
        if not seeds:
            raise ValueError("a mutator needs at least one seed frame")
        self.seeds = list(seeds)
        self.rng = random.Random(seed)
        self.valid_share = valid_share
        self.random_share = random_share
        self.splice_share = splice_share
        self.min_size = min_size
        self.max_size = max_size
        self.fit = fit
        names, functions, weights = zip(*self.MUTATIONS, strict=True)
        self._names: tuple[str, ...] = names
        self._functions: tuple[Mutation, ...] = functions
        self._cumulative = list(_accumulate(weights))
        self.counts: dict[str, int] = {}
        """Frames made, by how (the last mutation applied)."""

    def _count(self, how: str) -> None:
        self.counts[how] = self.counts.get(how, 0) + 1

    def one(self) -> bytes:
        rng = self.rng
        seed = rng.choice(self.seeds)
        draw = rng.random()
        if draw < self.valid_share:
            frame = bytearray(seed.frame)
            self._count("valid")
        elif draw < self.valid_share + self.random_share:
            frame = bytearray(rng.randbytes(rng.randint(self.min_size, 128)))
            if rng.random() < 0.5:
                frame[: min(12, len(frame))] = seed.frame[: min(12, len(frame))]
            self._count("random-frame")
        elif draw < self.valid_share + self.random_share + self.splice_share:
            other = rng.choice(self.seeds)
            cut = rng.randrange(1, len(seed.frame))
            frame = bytearray(seed.frame[:cut] + other.frame[rng.randrange(len(other.frame)) :])
            self._count("splice")
        else:
            frame = bytearray(seed.frame)
            how = ""
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                index = _pick(rng, self._cumulative)
                frame = self._functions[index](rng, frame, seed)
                how = self._names[index]
            self._count(how)
        if len(frame) < self.min_size:
            frame += bytes(self.min_size - len(frame))
        made = bytes(frame[: self.max_size])
        return made if self.fit is None else self.fit(made)

    def frames(self, n: int) -> list[bytes]:
        return [self.one() for _ in range(n)]

    def stream(self, batch: int) -> Iterator[list[bytes]]:
        while True:
            yield self.frames(batch)


_VLAN_TPIDS = (b"\x81\x00", b"\x88\xa8")
_TAGGED_MIN = 14 + 6
"""Linux drops a received frame whose outer 802.1Q or 802.1ad tag and the
EtherType after it are not whole (skb_vlan_untag), before any packet socket
sees it."""


def whole_outer_tag(frame: bytes) -> bytes:
    """`frame`, padded with zeros if its outer VLAN tag is cut short: as it must
    be to reach a packet socket on a real interface (`_TAGGED_MIN`)."""
    if len(frame) < _TAGGED_MIN and frame[12:14] in _VLAN_TPIDS:
        return frame + bytes(_TAGGED_MIN - len(frame))
    return frame


def keep_off(
    macs: Sequence[str], instead: str, *, at: Callable[[bytes], int] | None = None
) -> Callable[[bytes], bytes]:
    """A `fit` that gives a frame whose source MAC is one of `macs` the source
    `instead`: a campaign's frames do not pose as its legitimate hosts. `at`
    says where the Ethernet header starts (the inner frame of a datagram)."""
    kept = {bytes.fromhex(mac.replace(":", "")) for mac in macs}
    replacement = bytes.fromhex(instead.replace(":", ""))

    def fit(frame: bytes) -> bytes:
        start = 0 if at is None else at(frame)
        if frame[start + 6 : start + 12] in kept:
            return frame[: start + 6] + replacement + frame[start + 12 :]
        return frame

    return fit


def nsh_inner(datagram: bytes) -> int:
    """Where the inner frame of a VXLAN-GPE / NSH datagram starts, by its NSH Length."""
    return 8 + (datagram[9] & 0x3F) * 4 if len(datagram) > 9 else len(datagram)


def both(*fits: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """The `fit` that applies `fits` in order."""

    def fit(frame: bytes) -> bytes:
        for one in fits:
            frame = one(frame)
        return frame

    return fit


def _accumulate(weights: Sequence[int]) -> Iterator[int]:
    total = 0
    for weight in weights:
        total += weight
        yield total


def _pick(rng: random.Random, cumulative: Sequence[int]) -> int:
    draw = rng.randrange(cumulative[-1])
    for index, bound in enumerate(cumulative):
        if draw < bound:
            return index
    return len(cumulative) - 1  # pragma: no cover - draw < the last bound
