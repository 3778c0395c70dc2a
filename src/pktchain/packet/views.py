"""Typed, zero-copy views of one header inside a caller's buffer.

A view is a buffer and an offset; each property reads its field from the
buffer when asked (through the layout's compiled accessor) and, on a writable
buffer (``bytearray`` or a writable ``memoryview``), writes it back in place.
Setters change only the field: checksums are the caller's business, see
:mod:`pktchain.packet.rewrite` for rewrites that keep them right. Views assume
the header is all there, as :func:`~pktchain.packet.parse.parse_frame` checked;
reading past the end of the buffer raises ``struct.error``.
"""

from __future__ import annotations

from typing import Any, ClassVar, overload

from pktchain.packet.address import Buffer
from pktchain.packet.checksum import internet_checksum
from pktchain.packet.headers import (
    ARP,
    ETHERNET,
    ICMP,
    ICMPV6,
    IPV4,
    IPV6,
    NSH,
    NSH_CONTEXT_MD1,
    TCP,
    UDP,
    VIRTIO_NET_HDR,
    VLAN_TAG,
    VXLAN_GPE,
)
from pktchain.packet.layout import Accessor, Layout
from pktchain.packet.options import Option, parse_options

__all__ = [
    "ArpView",
    "EthernetView",
    "HeaderView",
    "IcmpView",
    "Icmpv6View",
    "Ipv4View",
    "Ipv6View",
    "NshView",
    "TcpView",
    "UdpView",
    "VirtioNetHdrView",
    "VlanTagView",
    "VxlanGpeView",
]


class HeaderView:
    """Base of all views: ``buf[offset:offset + layout.size]`` is the fixed header."""

    __slots__ = ("buf", "offset")
    layout: ClassVar[Layout]

    def __init__(self, buf: Buffer, offset: int = 0) -> None:
        self.buf = buf
        self.offset = offset

    def fields(self) -> dict[str, int | bytes]:
        """Every field and bit field by name, as declared in the layout."""
        return self.layout.unpack(self.buf, self.offset)

    @property
    def end(self) -> int:
        """Offset just past the fixed header."""
        return self.offset + self.layout.size

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={v.hex() if isinstance(v, bytes) else v}" for k, v in self.fields().items()
        )
        return f"{type(self).__name__}(@{self.offset}: {shown})"


class _FieldDescriptor:
    """Binds to the layout field of the same name as the attribute (or ``field``)."""

    __slots__ = ("_acc", "_field")

    def __init__(self, field: str | None = None) -> None:
        self._field = field

    def __set_name__(self, owner: type[HeaderView], name: str) -> None:
        self._acc: Accessor = owner.layout.accessor(self._field or name)


class UInt(_FieldDescriptor):
    """An unsigned integer field or bit field."""

    __slots__ = ()

    @overload
    def __get__(self, obj: None, owner: Any = None) -> UInt: ...
    @overload
    def __get__(self, obj: HeaderView, owner: Any = None) -> int: ...
    def __get__(self, obj: HeaderView | None, owner: Any = None) -> int | UInt:
        if obj is None:
            return self
        acc = self._acc
        value: int = acc.struct.unpack_from(obj.buf, obj.offset + acc.offset)[0]
        return (value & acc.mask) >> acc.shift

    def __set__(self, obj: HeaderView, value: int) -> None:
        self._acc.write(obj.buf, obj.offset, value)


class Flag(_FieldDescriptor):
    """A one-bit field, as a bool."""

    __slots__ = ()

    @overload
    def __get__(self, obj: None, owner: Any = None) -> Flag: ...
    @overload
    def __get__(self, obj: HeaderView, owner: Any = None) -> bool: ...
    def __get__(self, obj: HeaderView | None, owner: Any = None) -> bool | Flag:
        if obj is None:
            return self
        return bool(self._acc.read_int(obj.buf, obj.offset))

    def __set__(self, obj: HeaderView, value: bool) -> None:
        self._acc.write(obj.buf, obj.offset, int(value))


class Octets(_FieldDescriptor):
    """A fixed-length byte string (an address)."""

    __slots__ = ()

    @overload
    def __get__(self, obj: None, owner: Any = None) -> Octets: ...
    @overload
    def __get__(self, obj: HeaderView, owner: Any = None) -> bytes: ...
    def __get__(self, obj: HeaderView | None, owner: Any = None) -> bytes | Octets:
        if obj is None:
            return self
        return self._acc.read_bytes(obj.buf, obj.offset)

    def __set__(self, obj: HeaderView, value: bytes) -> None:
        self._acc.write(obj.buf, obj.offset, value)


class EthernetView(HeaderView):
    """Ethernet II header (layout :data:`~pktchain.packet.headers.ETHERNET`)."""

    __slots__ = ()
    layout = ETHERNET
    dst = Octets()
    src = Octets()
    ethertype = UInt()


class VlanTagView(HeaderView):
    """802.1Q/802.1ad tag at a ``FrameInfo.vlans`` offset (the TCI; the TPID is before it)."""

    __slots__ = ()
    layout = VLAN_TAG
    tci = UInt()
    pcp = UInt()
    dei = Flag()
    vid = UInt()
    ethertype = UInt()


class ArpView(HeaderView):
    """ARP for IPv4 over Ethernet."""

    __slots__ = ()
    layout = ARP
    htype = UInt()
    ptype = UInt()
    hlen = UInt()
    plen = UInt()
    oper = UInt()
    sha = Octets()
    spa = Octets()
    tha = Octets()
    tpa = Octets()


class Ipv4View(HeaderView):
    """IPv4 header, options included."""

    __slots__ = ()
    layout = IPV4
    version = UInt()
    ihl = UInt()
    tos = UInt()
    dscp = UInt()
    ecn = UInt()
    total_length = UInt()
    identification = UInt()
    flags_fragment = UInt()
    df = Flag()
    mf = Flag()
    fragment_offset = UInt()
    ttl = UInt()
    protocol = UInt()
    checksum = UInt()
    src = Octets()
    dst = Octets()

    @property
    def header_length(self) -> int:
        """IHL in bytes."""
        return self.ihl * 4

    def options(self) -> tuple[tuple[Option, ...], bool]:
        """The options (RFC 791 §3.1) and whether they are well formed."""
        return parse_options(self.buf, self.offset + IPV4.size, self.offset + self.header_length)

    def compute_checksum(self) -> int:
        """The header checksum the header should carry (RFC 791 §3.1, RFC 1071)."""
        header = memoryview(self.buf)[self.offset : self.offset + self.header_length]
        # Adding the complement of the stored value cancels it (RFC 1624 §3), as if zeroed.
        return internet_checksum(header, ~self.checksum & 0xFFFF)

    def checksum_ok(self) -> bool:
        """Whether the header sums to 0xFFFF, its checksum included."""
        header = memoryview(self.buf)[self.offset : self.offset + self.header_length]
        return internet_checksum(header) == 0

    def fix_checksum(self) -> None:
        """Store the right header checksum."""
        self.checksum = 0
        self.checksum = internet_checksum(
            memoryview(self.buf)[self.offset : self.offset + self.header_length]
        )


class Ipv6View(HeaderView):
    """IPv6 fixed header."""

    __slots__ = ()
    layout = IPV6
    version = UInt()
    traffic_class = UInt()
    flow_label = UInt()
    payload_length = UInt()
    next_header = UInt()
    hop_limit = UInt()
    src = Octets()
    dst = Octets()


class IcmpView(HeaderView):
    """ICMP header; ``identifier``/``sequence`` are meaningful for echo and echo reply."""

    __slots__ = ()
    layout = ICMP
    type = UInt()
    code = UInt()
    checksum = UInt()
    identifier = UInt()
    sequence = UInt()


class Icmpv6View(HeaderView):
    """ICMPv6 header; ``identifier``/``sequence`` are meaningful for echo and echo reply."""

    __slots__ = ()
    layout = ICMPV6
    type = UInt()
    code = UInt()
    checksum = UInt()
    identifier = UInt()
    sequence = UInt()


class TcpView(HeaderView):
    """TCP header, options included."""

    __slots__ = ()
    layout = TCP
    sport = UInt()
    dport = UInt()
    seq = UInt()
    ack = UInt()
    data_offset = UInt()
    reserved = UInt()
    flags = UInt()
    window = UInt()
    checksum = UInt()
    urgent = UInt()

    @property
    def header_length(self) -> int:
        """Data offset in bytes."""
        return self.data_offset * 4

    def options(self) -> tuple[tuple[Option, ...], bool]:
        """The options (RFC 9293 §3.2) and whether they are well formed."""
        return parse_options(self.buf, self.offset + TCP.size, self.offset + self.header_length)


class UdpView(HeaderView):
    """UDP header."""

    __slots__ = ()
    layout = UDP
    sport = UInt()
    dport = UInt()
    length = UInt()
    checksum = UInt()


class VxlanGpeView(HeaderView):
    """VXLAN-GPE header."""

    __slots__ = ()
    layout = VXLAN_GPE
    flags = UInt()
    version = UInt()
    i = Flag()
    p = Flag()
    b = Flag()
    o = Flag()
    next_protocol = UInt()
    vni = UInt()


class NshView(HeaderView):
    """NSH base and service path headers; the context headers follow."""

    __slots__ = ()
    layout = NSH
    version = UInt()
    oam = Flag()
    ttl = UInt()
    length = UInt()
    md_type = UInt()
    next_protocol = UInt()
    service_path = UInt()
    spi = UInt()
    si = UInt()

    @property
    def header_length(self) -> int:
        """The whole NSH, context headers included, in bytes."""
        return self.length * 4

    @property
    def context(self) -> bytes:
        """The MD type 1 fixed-length context header (RFC 8300 §2.4)."""
        return NSH_CONTEXT_MD1.accessor("context").read_bytes(self.buf, self.end)

    @context.setter
    def context(self, value: bytes) -> None:
        NSH_CONTEXT_MD1.accessor("context").write(self.buf, self.end, value)


class VirtioNetHdrView(HeaderView):
    """``struct virtio_net_hdr`` in place (little-endian)."""

    __slots__ = ()
    layout = VIRTIO_NET_HDR
    flags = UInt()
    gso_type = UInt()
    hdr_len = UInt()
    gso_size = UInt()
    csum_start = UInt()
    csum_offset = UInt()
