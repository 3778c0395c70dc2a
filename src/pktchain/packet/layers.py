"""Building frames from declared layers: correct lengths and checksums unless overridden.

Each layer is a frozen dataclass naming its header's fields; :func:`build`
encodes a stack of them from the inside out, so that each header knows its
payload. Type fields left as ``None`` are derived from the layer that follows
(an :class:`Ethernet` before an :class:`Ipv4` gets EtherType 0x0800, an
:class:`Ipv4` before a :class:`Udp` gets protocol 17, a :class:`VxlanGpe` before
an :class:`Nsh` gets next protocol 4); lengths and checksums left as ``None``
are computed (TCP, UDP and ICMPv6 over the pseudo-header of the nearest IP
layer before them). Any of them can be given explicitly, wrong on purpose::

    frame = build(
        Ethernet(dst="02:00:00:00:00:02", src="02:00:00:00:00:01"),
        Ipv4(src="10.0.0.1", dst="10.0.0.2"),
        Udp(sport=5000, dport=53),
        b"payload",
    )

``bytes`` anywhere in the stack are copied as they are. Every encoder writes
through the layouts of :mod:`pktchain.packet.headers`. Builders are for tests,
tools and the slow path; they raise ValueError naming the field that is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pktchain.packet.address import IpLike, MacLike, ip_bytes, mac_bytes
from pktchain.packet.checksum import internet_checksum, l4_checksum, partial_checksum_seed
from pktchain.packet.headers import (
    ARP,
    ETHERNET,
    ICMP,
    ICMPV6,
    IPV4,
    IPV6,
    IPV6_EXTENSION,
    IPV6_FRAGMENT,
    NSH,
    NSH_CONTEXT_MD1,
    TCP,
    UDP,
    VLAN_TAG,
    VRRP,
    VXLAN_GPE,
    ArpOp,
    EtherType,
    IcmpType,
    Icmpv6Type,
    IpProto,
    NshMdType,
    NshNextProtocol,
    TcpFlag,
    VrrpType,
)
from pktchain.packet.nsh import ContextTlv, encode_context_tlvs
from pktchain.packet.options import Option, encode_options

__all__ = [
    "Arp",
    "Ethernet",
    "Icmp",
    "Icmpv6",
    "Ipv4",
    "Ipv6",
    "Ipv6Extension",
    "Ipv6Fragment",
    "Layer",
    "Nsh",
    "Tcp",
    "Udp",
    "Vlan",
    "Vrrp",
    "VxlanGpe",
    "build",
]


class Layer:
    """A header in a :func:`build` stack.

    The three ``*_code`` methods say what the header before this one puts in its
    type field to announce it (None: it cannot be announced that way).
    """

    __slots__ = ()

    def ethertype_code(self) -> int | None:
        """EtherType announcing this layer."""
        return None

    def ip_proto_code(self) -> int | None:
        """IP protocol / IPv6 next header announcing this layer."""
        return None

    def next_protocol_code(self) -> int | None:
        """NSH / VXLAN-GPE next protocol announcing this layer (same values in both)."""
        return None

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        """This header followed by ``payload``.

        ``after`` is the next layer of the stack (None if only bytes follow) and
        ``ip`` the nearest IP layer before this one.
        """
        raise NotImplementedError


def _derived(value: int | None, code: int | None, field: str) -> int:
    if value is not None:
        return value
    if code is None:
        raise ValueError(f"{field}: cannot be derived from the layer after it; give it")
    return code


@dataclass(frozen=True)
class Ethernet(Layer):
    """Ethernet II header."""

    dst: MacLike = "02:00:00:00:00:02"
    src: MacLike = "02:00:00:00:00:01"
    type: int | None = None

    def next_protocol_code(self) -> int:
        return NshNextProtocol.ETHERNET

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        ethertype = _derived(self.type, after.ethertype_code() if after else None, "Ethernet.type")
        header = ETHERNET.pack(
            dst=mac_bytes(self.dst), src=mac_bytes(self.src), ethertype=ethertype
        )
        return header + payload


@dataclass(frozen=True)
class Vlan(Layer):
    """An 802.1Q tag (``tpid`` 0x8100) or 802.1ad service tag (``tpid`` 0x88A8)."""

    vid: int = 1
    pcp: int = 0
    dei: bool = False
    type: int | None = None
    tpid: int = EtherType.VLAN

    def ethertype_code(self) -> int:
        return self.tpid

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        ethertype = _derived(self.type, after.ethertype_code() if after else None, "Vlan.type")
        tag = VLAN_TAG.pack(vid=self.vid, pcp=self.pcp, dei=int(self.dei), ethertype=ethertype)
        return tag + payload


@dataclass(frozen=True)
class Arp(Layer):
    """ARP request or reply for IPv4 over Ethernet (RFC 826)."""

    op: int = ArpOp.REQUEST
    sha: MacLike = "02:00:00:00:00:01"
    spa: IpLike = "0.0.0.0"
    tha: MacLike = "00:00:00:00:00:00"
    tpa: IpLike = "0.0.0.0"

    def ethertype_code(self) -> int:
        return EtherType.ARP

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        header = ARP.pack(
            htype=1,
            ptype=EtherType.IPV4,
            hlen=6,
            plen=4,
            oper=self.op,
            sha=mac_bytes(self.sha),
            spa=ip_bytes(self.spa),
            tha=mac_bytes(self.tha),
            tpa=ip_bytes(self.tpa),
        )
        return header + payload


@dataclass(frozen=True)
class Ipv4(Layer):
    """IPv4 header; ``options`` are encoded and padded (RFC 791 §3.1)."""

    src: IpLike = "10.0.0.1"
    dst: IpLike = "10.0.0.2"
    ttl: int = 64
    tos: int = 0
    identification: int = 0
    df: bool = False
    mf: bool = False
    fragment_offset: int = 0
    proto: int | None = None
    options: Sequence[Option] | bytes = ()
    ihl: int | None = None
    total_length: int | None = None
    checksum: int | None = None

    def ethertype_code(self) -> int:
        return EtherType.IPV4

    def ip_proto_code(self) -> int:
        return IpProto.IPIP

    def next_protocol_code(self) -> int:
        return NshNextProtocol.IPV4

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        options = self.options if isinstance(self.options, bytes) else encode_options(self.options)
        if len(options) % 4 or len(options) > 40:
            raise ValueError(f"Ipv4.options: {len(options)} bytes, need a multiple of 4 up to 40")
        header_length = IPV4.size + len(options)
        fields: dict[str, int | bytes] = {
            "version": 4,
            "ihl": header_length // 4 if self.ihl is None else self.ihl,
            "tos": self.tos,
            "total_length": (
                header_length + len(payload) if self.total_length is None else self.total_length
            ),
            "identification": self.identification,
            "df": int(self.df),
            "mf": int(self.mf),
            "fragment_offset": self.fragment_offset,
            "ttl": self.ttl,
            "protocol": _derived(
                self.proto, after.ip_proto_code() if after else None, "Ipv4.proto"
            ),
            "src": ip_bytes(self.src),
            "dst": ip_bytes(self.dst),
        }
        header = IPV4.pack(**fields) + options
        checksum = internet_checksum(header) if self.checksum is None else self.checksum
        return IPV4.pack(**fields, checksum=checksum) + options + payload


@dataclass(frozen=True)
class Ipv6(Layer):
    """IPv6 fixed header (RFC 8200 §3)."""

    src: IpLike = "fd00::1"
    dst: IpLike = "fd00::2"
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0
    next_header: int | None = None
    payload_length: int | None = None

    def ethertype_code(self) -> int:
        return EtherType.IPV6

    def ip_proto_code(self) -> int:
        return IpProto.IPV6

    def next_protocol_code(self) -> int:
        return NshNextProtocol.IPV6

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        header = IPV6.pack(
            version=6,
            traffic_class=self.traffic_class,
            flow_label=self.flow_label,
            payload_length=len(payload) if self.payload_length is None else self.payload_length,
            next_header=_derived(
                self.next_header, after.ip_proto_code() if after else None, "Ipv6.next_header"
            ),
            hop_limit=self.hop_limit,
            src=ip_bytes(self.src),
            dst=ip_bytes(self.dst),
        )
        return header + payload


_PADN_4 = b"\x01\x04\x00\x00\x00\x00"  # a PadN option filling a minimal header (RFC 8200 §4.2)


@dataclass(frozen=True)
class Ipv6Extension(Layer):
    """Hop-by-hop options, routing or destination options header (RFC 8200 §4.3-4.6).

    ``data`` is everything after the first two bytes; with them it must fill a
    multiple of 8 bytes. The default is one PadN option.
    """

    kind: int = IpProto.DSTOPTS
    data: bytes = _PADN_4
    next_header: int | None = None

    def ip_proto_code(self) -> int:
        return self.kind

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        length = 2 + len(self.data)
        if length % 8:
            raise ValueError(f"Ipv6Extension.data: header is {length} bytes, not a multiple of 8")
        next_header = _derived(
            self.next_header, after.ip_proto_code() if after else None, "Ipv6Extension.next_header"
        )
        header = IPV6_EXTENSION.pack(next_header=next_header, hdr_ext_len=length // 8 - 1)
        return header + self.data + payload


@dataclass(frozen=True)
class Ipv6Fragment(Layer):
    """IPv6 fragment header (RFC 8200 §4.5); ``offset`` in 8-byte units."""

    offset: int = 0
    more: bool = False
    identification: int = 0
    next_header: int | None = None

    def ip_proto_code(self) -> int:
        return IpProto.FRAGMENT

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        header = IPV6_FRAGMENT.pack(
            next_header=_derived(
                self.next_header,
                after.ip_proto_code() if after else None,
                "Ipv6Fragment.next_header",
            ),
            fragment_offset=self.offset,
            m=int(self.more),
            identification=self.identification,
        )
        return header + payload


def _pseudo_ip(ip: Ipv4 | Ipv6 | None, field: str) -> tuple[bytes, bytes]:
    if ip is None:
        raise ValueError(f"{field}: no IP layer before it to take the pseudo-header from")
    return ip_bytes(ip.src), ip_bytes(ip.dst)


@dataclass(frozen=True)
class Icmp(Layer):
    """ICMP message (RFC 792); ``identifier``/``sequence`` fill bytes 4-7."""

    type: int = IcmpType.ECHO_REQUEST
    code: int = 0
    identifier: int = 0
    sequence: int = 0
    checksum: int | None = None

    def ip_proto_code(self) -> int:
        return IpProto.ICMP

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        fields = {
            "type": self.type,
            "code": self.code,
            "identifier": self.identifier,
            "sequence": self.sequence,
        }
        checksum = self.checksum
        if checksum is None:
            checksum = internet_checksum(ICMP.pack(**fields) + payload)
        return ICMP.pack(**fields, checksum=checksum) + payload


@dataclass(frozen=True)
class Icmpv6(Layer):
    """ICMPv6 message (RFC 4443); the checksum covers the IPv6 pseudo-header (§2.3)."""

    type: int = Icmpv6Type.ECHO_REQUEST
    code: int = 0
    identifier: int = 0
    sequence: int = 0
    checksum: int | None = None

    def ip_proto_code(self) -> int:
        return IpProto.ICMPV6

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        fields = {
            "type": self.type,
            "code": self.code,
            "identifier": self.identifier,
            "sequence": self.sequence,
        }
        checksum = self.checksum
        if checksum is None:
            src, dst = _pseudo_ip(ip, "Icmpv6.checksum")
            checksum = l4_checksum(src, dst, IpProto.ICMPV6, ICMPV6.pack(**fields) + payload)
        return ICMPV6.pack(**fields, checksum=checksum) + payload


@dataclass(frozen=True)
class Tcp(Layer):
    """TCP segment header; ``partial`` stores the NEEDS_CSUM seed instead of a checksum."""

    sport: int = 1024
    dport: int = 80
    seq: int = 0
    ack: int = 0
    flags: int = TcpFlag.SYN
    window: int = 65535
    urgent: int = 0
    options: Sequence[Option] | bytes = ()
    data_offset: int | None = None
    reserved: int = 0
    checksum: int | None = None
    partial: bool = False

    def ip_proto_code(self) -> int:
        return IpProto.TCP

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        options = self.options if isinstance(self.options, bytes) else encode_options(self.options)
        if len(options) % 4 or len(options) > 40:
            raise ValueError(f"Tcp.options: {len(options)} bytes, need a multiple of 4 up to 40")
        fields: dict[str, int | bytes] = {
            "sport": self.sport,
            "dport": self.dport,
            "seq": self.seq,
            "ack": self.ack,
            "data_offset": (
                (TCP.size + len(options)) // 4 if self.data_offset is None else self.data_offset
            ),
            "reserved": self.reserved,
            "flags": int(self.flags),
            "window": self.window,
            "urgent": self.urgent,
        }
        checksum = self.checksum
        if checksum is None:
            src, dst = _pseudo_ip(ip, "Tcp.checksum")
            segment = TCP.pack(**fields) + options + payload
            if self.partial:
                checksum = partial_checksum_seed(src, dst, IpProto.TCP, len(segment))
            else:
                checksum = l4_checksum(src, dst, IpProto.TCP, segment)
        return TCP.pack(**fields, checksum=checksum) + options + payload


@dataclass(frozen=True)
class Udp(Layer):
    """UDP header; ``checksum=0`` sends none (IPv4 only, RFC 768); ``partial`` stores the seed."""

    sport: int = 1024
    dport: int = 53
    length: int | None = None
    checksum: int | None = None
    partial: bool = False

    def ip_proto_code(self) -> int:
        return IpProto.UDP

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        fields = {
            "sport": self.sport,
            "dport": self.dport,
            "length": UDP.size + len(payload) if self.length is None else self.length,
        }
        checksum = self.checksum
        if checksum is None:
            src, dst = _pseudo_ip(ip, "Udp.checksum")
            segment = UDP.pack(**fields) + payload
            if self.partial:
                checksum = partial_checksum_seed(src, dst, IpProto.UDP, len(segment))
            else:
                # RFC 768: a computed 0 is sent as all ones; 0 means "no checksum".
                checksum = l4_checksum(src, dst, IpProto.UDP, segment) or 0xFFFF
        return UDP.pack(**fields, checksum=checksum) + payload


@dataclass(frozen=True)
class Vrrp(Layer):
    """VRRP version 3 advertisement (RFC 5798 §5.1, §5.2) with its IPv4 or IPv6 addresses.

    ``count`` defaults to the number of ``addresses``; the checksum covers the
    message and the pseudo-header of the IP layer before it (§5.2.8), with
    next header / protocol 112.
    """

    vrid: int = 1
    priority: int = 100
    max_adver_int: int = 100
    addresses: Sequence[IpLike] = ("10.0.0.254",)
    version: int = 3
    type: int = VrrpType.ADVERTISEMENT
    count: int | None = None
    reserved: int = 0
    checksum: int | None = None

    def ip_proto_code(self) -> int:
        return IpProto.VRRP

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        fields = {
            "version": self.version,
            "type": self.type,
            "vrid": self.vrid,
            "priority": self.priority,
            "count": len(self.addresses) if self.count is None else self.count,
            "reserved": self.reserved,
            "max_adver_int": self.max_adver_int,
        }
        body = b"".join(ip_bytes(a) for a in self.addresses) + payload
        checksum = self.checksum
        if checksum is None:
            src, dst = _pseudo_ip(ip, "Vrrp.checksum")
            checksum = l4_checksum(src, dst, IpProto.VRRP, VRRP.pack(**fields) + body)
        return VRRP.pack(**fields, checksum=checksum) + body


@dataclass(frozen=True)
class VxlanGpe(Layer):
    """VXLAN-GPE header (draft-ietf-nvo3-vxlan-gpe); put it after ``Udp(dport=4790)``."""

    vni: int = 0
    next_protocol: int | None = None
    i: bool = True
    p: bool = True
    b: bool = False
    o: bool = False
    version: int = 0

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        header = VXLAN_GPE.pack(
            version=self.version,
            i=int(self.i),
            p=int(self.p),
            b=int(self.b),
            o=int(self.o),
            next_protocol=_derived(
                self.next_protocol,
                after.next_protocol_code() if after else None,
                "VxlanGpe.next_protocol",
            ),
            vni=self.vni,
        )
        return header + payload


@dataclass(frozen=True)
class Nsh(Layer):
    """NSH (RFC 8300): MD type 1 with a 16-byte ``context``, or MD type 2 with ``tlvs``.

    ``md_type`` defaults to 2 when ``tlvs`` are given, else 1; ``length`` (in
    4-byte words) defaults to what the context headers need.
    """

    spi: int = 1
    si: int = 255
    ttl: int = 63
    context: bytes = bytes(NSH_CONTEXT_MD1.size)
    tlvs: Sequence[ContextTlv] = ()
    md_type: int | None = None
    next_protocol: int | None = None
    oam: bool = False
    length: int | None = None
    version: int = 0

    def ethertype_code(self) -> int:
        return EtherType.NSH

    def next_protocol_code(self) -> int:
        return NshNextProtocol.NSH

    def encode(self, payload: bytes, after: Layer | None, ip: Ipv4 | Ipv6 | None) -> bytes:
        md_type = self.md_type
        if md_type is None:
            md_type = NshMdType.VARIABLE if self.tlvs else NshMdType.FIXED
        if md_type == NshMdType.FIXED:
            if len(self.context) != NSH_CONTEXT_MD1.size:
                raise ValueError(
                    f"Nsh.context: MD type 1 context is 16 bytes, not {len(self.context)}"
                )
            context = self.context
        else:
            context = encode_context_tlvs(self.tlvs)
        words = (NSH.size + len(context)) // 4
        header = NSH.pack(
            version=self.version,
            oam=int(self.oam),
            ttl=self.ttl,
            length=words if self.length is None else self.length,
            md_type=md_type,
            next_protocol=_derived(
                self.next_protocol,
                after.next_protocol_code() if after else None,
                "Nsh.next_protocol",
            ),
            spi=self.spi,
            si=self.si,
        )
        return header + context + payload


def build(*layers: Layer | bytes) -> bytes:
    """Encode a stack of layers (outermost first) and raw bytes into one frame."""
    stack = list(layers)
    out = b""
    for i in range(len(stack) - 1, -1, -1):
        item = stack[i]
        if isinstance(item, bytes | bytearray):
            out = bytes(item) + out
            continue
        after = next((x for x in stack[i + 1 :] if isinstance(x, Layer)), None)
        ip = next((x for x in reversed(stack[:i]) if isinstance(x, Ipv4 | Ipv6)), None)
        out = item.encode(out, after, ip)
    return out
