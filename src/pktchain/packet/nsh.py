"""NSH (RFC 8300) and its VXLAN-GPE transport: parsing, building, in-place edits, pktchain's TLVs.

Between nodes and to out-of-process functions pktchain carries packets in NSH,
either straight over Ethernet (EtherType 0x894F) or over VXLAN-GPE (UDP 4790,
next protocol 4). :func:`parse_vxlan_gpe` and :func:`parse_nsh` validate those
headers and say where the next one starts; :func:`parse_inner` parses what the
next-protocol field names. Like :func:`~pktchain.packet.parse.parse_frame` they
never raise and report a :class:`~pktchain.packet.parse.Malformed` reason.

The dataplane builds and edits these headers per packet, so the builders
(:func:`build_nsh`, :func:`build_vxlan_gpe`, :func:`context_tlv`) and the
in-place editors (:func:`decrement_si`, :func:`decrement_nsh_ttl`,
:func:`set_service_path`, :func:`append_context_tlv`) are precompiled
``struct`` calls on the layouts of :mod:`pktchain.packet.headers`. pktchain's
own metadata, MD type 2 context headers of class :data:`PKTCHAIN_MD_CLASS`
(the path of a flow, its offload state), is encoded and decoded here too;
docs/nsh.md is the specification of all of it.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Sequence
from enum import IntEnum
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
from pktchain.packet.virtio import VIRTIO_NET_HDR_LEN, VirtioNetHdr, parse_virtio_net_hdr

__all__ = [
    "MAX_SPI",
    "NSH_MAX_LENGTH",
    "NSH_TTL",
    "OFFLOAD_TLV_LENGTH",
    "PKTCHAIN_MD_CLASS",
    "REVERSE_SPI",
    "SI_START",
    "TLV_MAX_VALUE",
    "ContextTlv",
    "GpeInfo",
    "NshInfo",
    "PktchainTlv",
    "append_context_tlv",
    "build_nsh",
    "build_vxlan_gpe",
    "context_tlv",
    "decrement_nsh_ttl",
    "decrement_si",
    "encode_context_tlvs",
    "final_si",
    "find_context_tlv",
    "offload_tlv",
    "parse_context_tlvs",
    "parse_inner",
    "parse_nsh",
    "parse_offload_tlv",
    "parse_path_tlv",
    "parse_vxlan_gpe",
    "path_tag",
    "path_tlv",
    "reverse_spi",
    "set_nsh_ttl",
    "set_service_path",
    "wants_offload_tlv",
]

NSH_MAX_LENGTH = 63 * 4
"""The 6-bit Length field counts 4-byte words (RFC 8300 §2.2): 252 bytes at most."""
NSH_TTL = 63
"""The TTL an NSH starts with: the largest the 6-bit field holds (RFC 8300 §2.2 suggests 63)."""
SI_START = 255
"""The service index at the start of a path; each service function takes one off (§2.3)."""
MAX_SPI = (1 << 24) - 1
"""The service path identifier is 24 bits (RFC 8300 §2.3)."""
REVERSE_SPI = 0x800000
"""pktchain's convention: the reverse path of a symmetric chain is its SPI with this bit set."""
TLV_MAX_VALUE = 127
"""A context header's 7-bit Length counts value bytes (RFC 8300 §2.5.1)."""
PKTCHAIN_MD_CLASS = 0xFFF6
"""The metadata class of pktchain's context headers: the first of the Experimental
range 0xFFF6-0xFFFE of the IANA "NSH MD Class" registry (RFC 8300 §11.2.4)."""
OFFLOAD_TLV_LENGTH = VIRTIO_NET_HDR_LEN
"""The offload TLV's value: one ``struct virtio_net_hdr`` (10 bytes, padded to 12)."""


class PktchainTlv(IntEnum):
    """The context header types of class :data:`PKTCHAIN_MD_CLASS` (docs/nsh.md).

    Types 0x80 and above are free for functions' own metadata in examples.
    """

    PATH = 0x01
    """The instance chosen at each hop: one 32-bit tag per hop, in hop order."""
    OFFLOAD = 0x02
    """The inner frame's ``virtio_net_hdr``: a GSO super-frame or a partial checksum."""
    EXAMPLE_FLOW_COUNT = 0x80
    """examples/nsh/nsh_flowcount.c: its count of the flow's packets (4 bytes)."""
    EXAMPLE_STAMP = 0x81
    """The stamp function: the name of the function that saw the packet (UTF-8)."""


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
_pack_nsh = NSH.struct.pack
_pack_gpe = VXLAN_GPE.struct.pack
_pack_tlv = NSH_MD2_TLV.struct.pack
_GPE_I = VXLAN_GPE.accessor("i").mask
_GPE_NEXT_MAX = VXLAN_GPE.accessor("next_protocol").mask
_NSH_HEAD = NSH.accessor("ver_oam_ttl_length")
_NSH_PATH = NSH.accessor("service_path")
_NSH_MD_BYTE = NSH.accessor("md_type_byte")
_HEAD_OFFSET = _NSH_HEAD.offset
_PATH_OFFSET = _NSH_PATH.offset
_MD_BYTE_OFFSET = _NSH_MD_BYTE.offset
_unpack_head = _NSH_HEAD.struct.unpack_from
_pack_head_into = _NSH_HEAD.struct.pack_into
_unpack_path = _NSH_PATH.struct.unpack_from
_pack_path_into = _NSH_PATH.struct.pack_into
_unpack_md_byte = _NSH_MD_BYTE.struct.unpack_from
_TTL_SHIFT = _NSH_TTL.shift
_TTL_MAX = _NSH_TTL.mask >> _NSH_TTL.shift
_SI_MAX = _NSH_SI
_MD1_CONTEXT = NSH_CONTEXT_MD1.size
_NEXT_MAX = NSH.accessor("next_protocol").mask
_TAG = struct.Struct("!I")
_TAG_SIZE = _TAG.size
_MAX_TAGS = TLV_MAX_VALUE // _TAG_SIZE
_OFFLOAD_PAD = bytes(-OFFLOAD_TLV_LENGTH % 4)


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


# --------------------------------------------------------------------------- building


def build_nsh(
    spi: int,
    si: int,
    *,
    ttl: int = NSH_TTL,
    md_type: int = NshMdType.VARIABLE,
    context: Buffer = b"",
    tlvs: Buffer = b"",
    next_protocol: int = NshNextProtocol.ETHERNET,
    oam: bool = False,
) -> bytes:
    """An NSH base header, service path header and context headers (RFC 8300 §2.2-§2.5).

    MD type 1 carries ``context``, the 16-byte fixed-length context header
    (empty: 16 zero bytes); MD type 2 carries ``tlvs``, context headers already
    encoded (:func:`context_tlv`, :func:`encode_context_tlvs`), a multiple of
    4 bytes. Length is computed. Raises ValueError naming the field that is
    out of range, or when the whole NSH would pass 252 bytes.
    """
    if md_type == _MD_FIXED:
        if tlvs:
            raise ValueError("build_nsh: tlvs: MD type 1 carries a fixed context, not TLVs")
        if not context:
            metadata = bytes(_MD1_CONTEXT)
        elif len(context) == _MD1_CONTEXT:
            metadata = bytes(context)
        else:
            raise ValueError(f"build_nsh: context: MD type 1 is 16 bytes, not {len(context)}")
    elif md_type == _MD_VARIABLE:
        if context:
            raise ValueError("build_nsh: context: MD type 2 carries TLVs, not a fixed context")
        if len(tlvs) % 4:
            raise ValueError(f"build_nsh: tlvs: {len(tlvs)} bytes, not a multiple of 4")
        metadata = bytes(tlvs)
    else:
        raise ValueError(f"build_nsh: md_type: {md_type!r}, expected 1 or 2")
    length = _NSH_SIZE + len(metadata)
    if length > NSH_MAX_LENGTH:
        raise ValueError(f"build_nsh: tlvs: the NSH would be {length} bytes, more than 252")
    if not 0 <= spi <= MAX_SPI:
        raise ValueError(f"build_nsh: spi: {spi!r} is not a 24-bit number")
    if not 0 <= si <= _SI_MAX:
        raise ValueError(f"build_nsh: si: {si!r} is not 0-255")
    if not 0 <= ttl <= _TTL_MAX:
        raise ValueError(f"build_nsh: ttl: {ttl!r} is not 0-63")
    if not 0 <= next_protocol <= _NEXT_MAX:
        raise ValueError(f"build_nsh: next_protocol: {next_protocol!r} is not 0-255")
    head = (ttl << _TTL_SHIFT) | (length >> 2) | (_NSH_OAM if oam else 0)
    return _pack_nsh(head, md_type, next_protocol, (spi << 8) | si) + metadata


def build_vxlan_gpe(next_protocol: int = GpeNextProtocol.NSH, vni: int = 0) -> bytes:
    """A VXLAN-GPE header with I and P set (draft-ietf-nvo3-vxlan-gpe-13 §3.1).

    pktchain sends chained traffic with next protocol NSH and VNI 0, and plain
    switched frames with next protocol Ethernet and the network's id as VNI.
    Raises ValueError for a VNI beyond 24 bits or a next protocol beyond a byte.
    """
    if not 0 <= vni <= MAX_SPI:
        raise ValueError(f"build_vxlan_gpe: vni: {vni!r} is not a 24-bit number")
    if not 0 <= next_protocol <= _GPE_NEXT_MAX:
        raise ValueError(f"build_vxlan_gpe: next_protocol: {next_protocol!r} is not 0-255")
    return _pack_gpe(_GPE_I | _GPE_P, 0, next_protocol, vni << _GPE_VNI_SHIFT)


def context_tlv(md_class: int, tlv_type: int, value: Buffer = b"") -> bytes:
    """One MD type 2 context header: class, type, Length, then the value zero-padded to 4 bytes.

    Raises ValueError for a class beyond 16 bits, a type beyond 8, or a value
    longer than 127 bytes (RFC 8300 §2.5.1).
    """
    if not 0 <= md_class <= 0xFFFF:
        raise ValueError(f"context_tlv: md_class: {md_class!r} is not a 16-bit number")
    if not 0 <= tlv_type <= 0xFF:
        raise ValueError(f"context_tlv: type: {tlv_type!r} is not 0-255")
    size = len(value)
    if size > TLV_MAX_VALUE:
        raise ValueError(f"context_tlv: value: at most 127 bytes, got {size}")
    return _pack_tlv(md_class, tlv_type, size) + bytes(value) + bytes(-size % 4)


def path_tlv(tags: Sequence[int]) -> bytes:
    """pktchain's path context header: the chosen instance of each hop, one 32-bit tag each.

    At most 31 hops fit in a context header's 127 bytes. Raises ValueError for
    more, or for a tag that is not a 32-bit number.
    """
    if len(tags) > _MAX_TAGS:
        raise ValueError(f"path_tlv: {len(tags)} hops, at most {_MAX_TAGS} fit")
    try:
        value = struct.pack(f"!{len(tags)}I", *tags)
    except struct.error:
        raise ValueError(f"path_tlv: tags: {list(tags)!r} are not all 32-bit numbers") from None
    return _pack_tlv(PKTCHAIN_MD_CLASS, PktchainTlv.PATH, len(value)) + value


def parse_path_tlv(value: Buffer) -> tuple[int, ...] | None:
    """The hop tags of a path context header's value; None when it is not whole tags."""
    size = len(value)
    if size % _TAG_SIZE:
        return None
    tags: tuple[int, ...] = struct.unpack_from(f"!{size // _TAG_SIZE}I", value)
    return tags


def path_tag(port_pair_id: str | uuid.UUID) -> int:
    """The tag that names a port pair in a path context header: the first 4 bytes of its UUID.

    Raises ValueError for a string that is not a UUID.
    """
    if isinstance(port_pair_id, str):
        port_pair_id = uuid.UUID(port_pair_id)
    tag: int = _TAG.unpack_from(port_pair_id.bytes)[0]
    return tag


def offload_tlv(vnet_header: Buffer) -> bytes:
    """pktchain's offload context header: the inner frame's 10-byte ``virtio_net_hdr``
    as the kernel gave it (little-endian on x86), padded to 12 bytes.

    Raises ValueError for anything but 10 bytes.
    """
    if len(vnet_header) != OFFLOAD_TLV_LENGTH:
        raise ValueError(f"offload_tlv: a virtio_net_hdr is 10 bytes, not {len(vnet_header)}")
    return (
        _pack_tlv(PKTCHAIN_MD_CLASS, PktchainTlv.OFFLOAD, OFFLOAD_TLV_LENGTH)
        + bytes(vnet_header)
        + _OFFLOAD_PAD
    )


def parse_offload_tlv(value: Buffer) -> VirtioNetHdr | None:
    """The ``virtio_net_hdr`` of an offload context header's value; None unless 10 bytes."""
    if len(value) != OFFLOAD_TLV_LENGTH:
        return None
    return parse_virtio_net_hdr(value)


def wants_offload_tlv(vnet_header: Buffer) -> bool:
    """Whether a frame with this ``virtio_net_hdr`` travels with an offload context header:
    it is a GSO super-frame, or its checksum is partial (``NEEDS_CSUM``). A frame
    whose checksum is only known good (``DATA_VALID``) needs none."""
    header = parse_virtio_net_hdr(vnet_header)
    return header is not None and bool(header.needs_csum or header.gso_type)


def reverse_spi(spi: int) -> int:
    """The SPI of the reverse path of a symmetric chain whose forward path is ``spi``."""
    return spi | REVERSE_SPI


def final_si(hops: int) -> int:
    """The service index of a packet that has been through all ``hops`` of its path."""
    return SI_START - hops


# --------------------------------------------------------------------------- in-place editing


def find_context_tlv(buf: Buffer, nsh: NshInfo, md_class: int, tlv_type: int) -> tuple[int, int]:
    """Where the value of the first context header of that class and type is: (offset, length).

    ``nsh`` is the :func:`parse_nsh` result for ``buf`` (its TLVs were checked
    then). (-1, 0) when there is none, or the NSH is not MD type 2. Never raises.
    """
    if nsh.error is not None or nsh.md_type != _MD_VARIABLE:
        return -1, 0
    p = nsh.context
    end = nsh.inner
    while end - p >= _TLV_SIZE:
        found_class, found_type, u_length = _unpack_tlv(buf, p)
        length = u_length & _TLV_LENGTH
        if found_class == md_class and found_type == tlv_type:
            return p + _TLV_SIZE, length
        p += _TLV_SIZE + (length + 3) // 4 * 4
    return -1, 0


def decrement_si(buf: Buffer, offset: int = 0) -> int:
    """Take one off the service index of the NSH at ``offset``, in place; the new SI.

    -1 when the SI was already 0 (the buffer is left as it was): the packet has
    no next hop (RFC 8300 §2.3). ``buf`` must be writable.
    """
    where = offset + _PATH_OFFSET
    path: int = _unpack_path(buf, where)[0]
    if not path & _SI_MAX:
        return -1
    _pack_path_into(buf, where, path - 1)
    return (path - 1) & _SI_MAX


def set_service_path(buf: Buffer, offset: int, spi: int, si: int) -> None:
    """Write the SPI and SI of the NSH at ``offset`` in place (reclassification).

    Raises ValueError for an SPI beyond 24 bits or an SI beyond 0-255.
    """
    if not 0 <= spi <= MAX_SPI or not 0 <= si <= _SI_MAX:
        raise ValueError(f"set_service_path: spi {spi!r} / si {si!r} out of range")
    _pack_path_into(buf, offset + _PATH_OFFSET, (spi << 8) | si)


def decrement_nsh_ttl(buf: Buffer, offset: int = 0) -> int:
    """Take one off the TTL of the NSH at ``offset``, in place, as an SFF does; the new TTL.

    0 means the TTL ran out: the packet must be discarded (RFC 8300 §2.2), and
    the buffer is left as it was. ``buf`` must be writable.
    """
    where = offset + _HEAD_OFFSET
    head: int = _unpack_head(buf, where)[0]
    ttl = (head & _NSH_TTL.mask) >> _TTL_SHIFT
    if ttl <= 1:
        return 0
    _pack_head_into(buf, where, head - (1 << _TTL_SHIFT))
    return ttl - 1


def set_nsh_ttl(buf: Buffer, offset: int, ttl: int) -> None:
    """Write the TTL of the NSH at ``offset`` in place; ValueError beyond 0-63."""
    if not 0 <= ttl <= _TTL_MAX:
        raise ValueError(f"set_nsh_ttl: ttl: {ttl!r} is not 0-63")
    where = offset + _HEAD_OFFSET
    head: int = _unpack_head(buf, where)[0]
    _pack_head_into(buf, where, (head & ~_NSH_TTL.mask) | (ttl << _TTL_SHIFT))


def append_context_tlv(buf: bytearray, offset: int, tlv: Buffer) -> bool:
    """Insert an encoded context header after the last one of the MD type 2 NSH at
    ``offset``, and grow its Length; what follows the NSH moves along.

    False, with ``buf`` unchanged, when the NSH is not MD type 2 or would pass
    252 bytes. Raises ValueError for a ``tlv`` that is not whole 4-byte words
    (the caller's mistake, not the packet's). Headers before the NSH that hold
    a length (IP, UDP) are the caller's to update.
    """
    size = len(tlv)
    if size % 4 or size < _TLV_SIZE:
        raise ValueError(f"append_context_tlv: tlv: {size} bytes, not an encoded context header")
    where = offset + _HEAD_OFFSET
    head: int = _unpack_head(buf, where)[0]
    md_type = _unpack_md_byte(buf, offset + _MD_BYTE_OFFSET)[0] & _NSH_MD_TYPE
    length = (head & _NSH_LENGTH) * 4
    if md_type != _MD_VARIABLE or length + size > NSH_MAX_LENGTH:
        return False
    end = offset + length
    buf[end:end] = tlv
    _pack_head_into(buf, where, (head & ~_NSH_LENGTH) | ((length + size) >> 2))
    return True
