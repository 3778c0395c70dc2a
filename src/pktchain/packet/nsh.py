"""NSH (RFC 8300) and its VXLAN-GPE transport: parsing, MD type 2 context, inner packets.

Between nodes and to out-of-process functions pktchain carries packets in NSH,
either straight over Ethernet (EtherType 0x894F) or over VXLAN-GPE (UDP 4790,
next protocol 4). :func:`parse_vxlan_gpe` and :func:`parse_nsh` validate those
headers and say where the next one starts; :func:`parse_inner` parses what the
next-protocol field names. Like :func:`~pktchain.packet.parse.parse_frame` they
never raise and report a :class:`~pktchain.packet.parse.Malformed` reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from pktchain.packet.address import Buffer
from pktchain.packet.headers import (
    NSH,
    NSH_CONTEXT_MD1,
    NSH_MD2_TLV,
    VXLAN_GPE,
    GpeNextProtocol,
    NshMdType,
    NshNextProtocol,
)
from pktchain.packet.parse import FrameInfo, Malformed, parse_frame, parse_ip

__all__ = [
    "NSH_MAX_LENGTH",
    "ContextTlv",
    "GpeInfo",
    "NshInfo",
    "encode_context_tlvs",
    "parse_context_tlvs",
    "parse_inner",
    "parse_nsh",
    "parse_vxlan_gpe",
]

NSH_MAX_LENGTH = 63 * 4
"""The 6-bit Length field counts 4-byte words (RFC 8300 §2.2)."""

_new = tuple.__new__
_unpack_nsh = NSH.struct.unpack_from
_unpack_gpe = VXLAN_GPE.struct.unpack_from
_unpack_tlv = NSH_MD2_TLV.struct.unpack_from
_NSH_SIZE = NSH.size
_MD1_LENGTH = (NSH.size + NSH_CONTEXT_MD1.size) // 4  # RFC 8300 §2.2: Length is 0x6 for MD 1
_MD2_MIN_LENGTH = NSH.size // 4  # RFC 8300 §2.2: at least 0x2 for MD type 2
_TLV_SIZE = NSH_MD2_TLV.size
_GPE_SIZE = VXLAN_GPE.size
_MD_FIXED = int(NshMdType.FIXED)
_MD_VARIABLE = int(NshMdType.VARIABLE)
_MD_RESERVED = int(NshMdType.RESERVED)
_ETHERNET = int(NshNextProtocol.ETHERNET)
_GPE_P = VXLAN_GPE.accessor("p").mask
_GPE_VERSION = VXLAN_GPE.accessor("version").mask
_GPE_VNI_SHIFT = VXLAN_GPE.accessor("vni").shift
_NSH_VERSION = NSH.accessor("version").mask
_NSH_OAM = NSH.accessor("oam").mask
_NSH_TTL = NSH.accessor("ttl")
_NSH_LENGTH = NSH.accessor("length").mask
_NSH_MD_TYPE = NSH.accessor("md_type").mask
_NSH_SPI_SHIFT = NSH.accessor("spi").shift
_NSH_SI = NSH.accessor("si").mask
_TLV_LENGTH = NSH_MD2_TLV.accessor("length").mask
_TLV_UNASSIGNED = NSH_MD2_TLV.accessor("unassigned").mask


class GpeInfo(NamedTuple):
    """A parsed VXLAN-GPE header."""

    start: int
    flags: int
    """The flags byte (Ver, I, P, B, O)."""
    next_protocol: int
    """See GpeNextProtocol; Ethernet when the P bit is clear (plain VXLAN)."""
    vni: int
    inner: int
    """Offset of the encapsulated header, -1 on error."""
    error: Malformed | None


class NshInfo(NamedTuple):
    """A parsed NSH: base header, service path header, where the context and payload are."""

    start: int
    length: int
    """The whole NSH in bytes (Length field x 4)."""
    ttl: int
    oam: bool
    md_type: int
    next_protocol: int
    spi: int
    si: int
    context: int
    """Offset of the context headers (MD 1 fixed context, or MD 2 TLVs)."""
    inner: int
    """Offset of the packet carried after the NSH, -1 on error."""
    error: Malformed | None


class ContextTlv(NamedTuple):
    """One MD type 2 variable-length context header (RFC 8300 §2.5.1).

    ``value`` is at most 127 bytes (7-bit Length); :func:`encode_context_tlvs`
    checks the ranges.
    """

    md_class: int
    type: int
    value: bytes = b""
    unassigned: bool = False

    @property
    def wire_length(self) -> int:
        """Header plus value padded to 4 bytes."""
        return _TLV_SIZE + (len(self.value) + 3) // 4 * 4


def parse_vxlan_gpe(buf: Buffer, offset: int = 0) -> GpeInfo:
    """Parse the VXLAN-GPE header at ``offset`` (the UDP payload). Never raises."""
    if offset < 0 or len(buf) - offset < _GPE_SIZE:
        return _new(GpeInfo, (offset, 0, 0, 0, -1, Malformed.TRUNCATED_VXLAN_GPE))
    flags, _reserved, next_protocol, vni_reserved = _unpack_gpe(buf, offset)
    if not flags & _GPE_P:
        next_protocol = int(GpeNextProtocol.ETHERNET)
    if flags & _GPE_VERSION:
        return _new(
            GpeInfo,
            (
                offset,
                flags,
                next_protocol,
                vni_reserved >> _GPE_VNI_SHIFT,
                -1,
                Malformed.VXLAN_GPE_VERSION,
            ),
        )
    return _new(
        GpeInfo,
        (offset, flags, next_protocol, vni_reserved >> _GPE_VNI_SHIFT, offset + _GPE_SIZE, None),
    )


def parse_nsh(buf: Buffer, offset: int = 0) -> NshInfo:
    """Parse the NSH at ``offset``, checking Length against the MD type (RFC 8300 §2.2).

    MD type 0 is reserved and reported as malformed; MD type 2 context TLVs must
    exactly fill the Length; other MD types are skipped by Length (§2.2).
    Never raises.
    """
    size = len(buf)
    if offset < 0 or size - offset < _NSH_SIZE:
        return _new(NshInfo, (offset, 0, 0, False, 0, 0, 0, 0, -1, -1, Malformed.TRUNCATED_NSH))
    head, md_byte, next_protocol, service_path = _unpack_nsh(buf, offset)
    length = (head & _NSH_LENGTH) * 4
    md_type = md_byte & _NSH_MD_TYPE
    fields = (
        offset,
        length,
        (head & _NSH_TTL.mask) >> _NSH_TTL.shift,
        bool(head & _NSH_OAM),
        md_type,
        next_protocol,
        service_path >> _NSH_SPI_SHIFT,
        service_path & _NSH_SI,
        offset + _NSH_SIZE,
    )
    error: Malformed | None = None
    if head & _NSH_VERSION:
        error = Malformed.NSH_VERSION
    elif md_type == _MD_RESERVED:
        error = Malformed.NSH_MD_TYPE
    elif (md_type == _MD_FIXED and length != _MD1_LENGTH * 4) or length < _MD2_MIN_LENGTH * 4:
        error = Malformed.NSH_LENGTH
    elif length > size - offset:
        error = Malformed.TRUNCATED_NSH
    elif md_type == _MD_VARIABLE and length > _NSH_SIZE:
        _tlvs, error = parse_context_tlvs(buf, offset + _NSH_SIZE, offset + length)
    if error is not None:
        return _new(NshInfo, (*fields, -1, error))
    return _new(NshInfo, (*fields, offset + length, None))


def parse_context_tlvs(
    buf: Buffer, start: int, end: int
) -> tuple[tuple[ContextTlv, ...], Malformed | None]:
    """The MD type 2 TLVs in ``buf[start:end]``; they must fill it exactly (RFC 8300 §2.5.1).

    A receiver reads ``length`` value bytes and skips the padding to the next
    4-byte boundary. Never raises.
    """
    tlvs: list[ContextTlv] = []
    p = start
    end = min(end, len(buf))
    while p < end:
        if end - p < _TLV_SIZE:
            return tuple(tlvs), Malformed.NSH_TLV
        md_class, tlv_type, u_length = _unpack_tlv(buf, p)
        length = u_length & _TLV_LENGTH
        padded = (length + 3) // 4 * 4
        if padded > end - p - _TLV_SIZE:
            return tuple(tlvs), Malformed.NSH_TLV
        value = bytes(buf[p + _TLV_SIZE : p + _TLV_SIZE + length])
        tlvs.append(ContextTlv(md_class, tlv_type, value, bool(u_length & _TLV_UNASSIGNED)))
        p += _TLV_SIZE + padded
    return tuple(tlvs), None


def encode_context_tlvs(tlvs: Iterable[ContextTlv]) -> bytes:
    """The wire form of MD type 2 context headers, each value zero-padded to 4 bytes.

    Raises ValueError naming the field that is out of range.
    """
    out = bytearray()
    for tlv in tlvs:
        if len(tlv.value) > _TLV_LENGTH:
            raise ValueError(f"ContextTlv.value: at most 127 bytes, got {len(tlv.value)}")
        out += NSH_MD2_TLV.pack(
            md_class=tlv.md_class,
            type=tlv.type,
            unassigned=int(tlv.unassigned),
            length=len(tlv.value),
        )
        out += tlv.value + bytes(-len(tlv.value) % 4)
    return bytes(out)


def parse_inner(buf: Buffer, next_protocol: int, offset: int) -> FrameInfo:
    """Parse what an NSH or VXLAN-GPE next-protocol value says is at ``offset``.

    Both registries number IPv4 1, IPv6 2 and Ethernet 3. Anything else (NSH in
    NSH, MPLS) comes back with ``Malformed.UNSUPPORTED_NEXT_PROTOCOL``. Never raises.
    """
    if next_protocol == _ETHERNET:
        return parse_frame(buf, offset)
    if next_protocol in (NshNextProtocol.IPV4, NshNextProtocol.IPV6):
        info = parse_ip(buf, offset)
        expected = 4 if next_protocol == NshNextProtocol.IPV4 else 6
        if info.error is None and info.ip_version != expected:
            return info._replace(error=Malformed.BAD_IP_VERSION)
        return info
    return FrameInfo(
        offset,
        -1,
        (),
        0,
        offset,
        0,
        -1,
        -1,
        len(buf),
        b"",
        b"",
        -1,
        0,
        0,
        0,
        False,
        Malformed.UNSUPPORTED_NEXT_PROTOCOL,
    )
