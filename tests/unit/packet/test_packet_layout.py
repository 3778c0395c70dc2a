"""Declared layouts: declarations are checked, and pack, unpack and accessors agree."""

from __future__ import annotations

import ctypes
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktchain.packet import headers
from pktchain.packet.layout import Bits, Field, Layout
from pktchain.packet.views import Ipv4View, TcpView, VlanTagView

EXAMPLES = settings(max_examples=100, deadline=None)
LAYOUTS = [v for v in vars(headers).values() if isinstance(v, Layout)]


def test_every_header_is_declared_with_its_reference() -> None:
    names = {layout.name for layout in LAYOUTS}
    assert {
        "Ethernet",
        "802.1Q tag",
        "ARP",
        "IPv4",
        "IPv6",
        "ICMP",
        "ICMPv6",
        "TCP",
        "UDP",
        "VXLAN-GPE",
        "NSH",
        "NSH MD type 2 context TLV",
        "virtio_net_hdr",
    } <= names
    sizes = {layout.name: layout.size for layout in LAYOUTS}
    assert (sizes["Ethernet"], sizes["802.1Q tag"], sizes["ARP"], sizes["IPv4"]) == (14, 4, 28, 20)
    assert (sizes["IPv6"], sizes["TCP"], sizes["UDP"], sizes["ICMP"]) == (40, 20, 8, 8)
    assert (sizes["VXLAN-GPE"], sizes["NSH"], sizes["virtio_net_hdr"]) == (8, 8, 10)
    for layout in LAYOUTS:
        assert layout.reference


@st.composite
def layout_values(draw: st.DrawFn) -> tuple[Layout, dict[str, int | bytes]]:
    """A layout and a value for every leaf: each bit field, and each field without bit fields."""
    layout = draw(st.sampled_from(LAYOUTS))
    values: dict[str, int | bytes] = {}
    split = {
        layout.accessor(n).offset
        for n in layout.names
        if layout.accessor(n).shift or layout.accessor(n).mask != layout.accessor(n).full_mask
    }
    for name in layout.names:
        acc = layout.accessor(name)
        is_whole = acc.mask == acc.full_mask and acc.shift == 0
        if acc.is_bytes:
            values[name] = draw(st.binary(min_size=acc.size, max_size=acc.size))
        elif is_whole and acc.offset in split:
            continue  # set through its bit fields
        else:
            values[name] = draw(st.integers(0, acc.mask >> acc.shift))
    return layout, values


@EXAMPLES
@given(layout_values())
def test_pack_then_unpack_and_accessors_round_trip(
    case: tuple[Layout, dict[str, int | bytes]],
) -> None:
    layout, values = case
    wire = layout.pack(**values)
    assert len(wire) == layout.size
    decoded = layout.unpack(wire)
    assert {k: decoded[k] for k in values} == values
    # Writing each value through its accessor into a zeroed buffer gives the same bytes.
    buf = bytearray(layout.size + 3)
    for name, value in values.items():
        layout.accessor(name).write(buf, 3, value)
    assert bytes(buf[3:]) == wire
    assert layout.struct.unpack_from(buf, 3) == layout.struct.unpack(wire)


def test_bit_fields_sit_where_the_rfc_figures_put_them() -> None:
    # IPv4 version/IHL nibbles (RFC 791), DF and MF (RFC 791 §3.1 flags).
    wire = headers.IPV4.pack(version=4, ihl=5, df=1, fragment_offset=0x1ABC, ttl=9)
    assert wire[0] == 0x45
    assert wire[6:8] == struct.pack("!H", 0x4000 | 0x1ABC)
    # TCP data offset is the top nibble of byte 12, flags are byte 13 (RFC 9293 §3.1).
    wire = headers.TCP.pack(data_offset=6, flags=0x12)
    assert wire[12:14] == b"\x60\x12"
    # 802.1Q TCI: PCP 3 bits, DEI 1 bit, VID 12 bits.
    assert headers.VLAN_TAG.pack(pcp=5, dei=1, vid=0x123, ethertype=0x0800) == b"\xb1\x23\x08\x00"
    # NSH: Ver 2 | O 1 | U 1 | TTL 6 | Length 6 ; MD type low nibble of byte 2 (RFC 8300 §2.2).
    wire = headers.NSH.pack(oam=1, ttl=63, length=6, md_type=1, next_protocol=3, spi=0xABCDEF, si=9)
    assert wire == bytes.fromhex("2fc60103abcdef09")
    # VXLAN-GPE: flags R R Ver(2) I P B O.
    assert (
        headers.VXLAN_GPE.pack(i=1, p=1, next_protocol=4, vni=0x10203)[0:4] == b"\x0c\x00\x00\x04"
    )
    assert headers.VXLAN_GPE.pack(vni=0x10203)[4:] == b"\x01\x02\x03\x00"


class _CVirtioNetHdr(ctypes.LittleEndianStructure):
    """struct virtio_net_hdr as linux/virtio_net.h spells it, for an independent layout check."""

    _pack_ = 1
    _fields_ = (
        ("flags", ctypes.c_uint8),
        ("gso_type", ctypes.c_uint8),
        ("hdr_len", ctypes.c_uint16),
        ("gso_size", ctypes.c_uint16),
        ("csum_start", ctypes.c_uint16),
        ("csum_offset", ctypes.c_uint16),
    )


def test_virtio_net_hdr_layout_matches_the_c_struct() -> None:
    assert ctypes.sizeof(_CVirtioNetHdr) == headers.VIRTIO_NET_HDR.size
    for name, _ in _CVirtioNetHdr._fields_:
        assert getattr(_CVirtioNetHdr, name).offset == headers.VIRTIO_NET_HDR.offset(name)
    c = _CVirtioNetHdr(1, 0x81, 66, 1448, 34, 16)
    assert bytes(c) == headers.VIRTIO_NET_HDR.pack(
        flags=1, gso_type=0x81, hdr_len=66, gso_size=1448, csum_start=34, csum_offset=16
    )


def test_declarations_that_do_not_add_up_are_refused() -> None:
    with pytest.raises(ValueError, match="offset 3, expected 2"):
        Layout("bad", "test", [Field("a", 0, "H"), Field("b", 3, "B")])
    with pytest.raises(ValueError, match="declared twice"):
        Layout("bad", "test", [Field("a", 0, "B"), Field("a", 1, "B")])
    with pytest.raises(ValueError, match="does not fit"):
        Layout("bad", "test", [Field("a", 0, "B")], [Bits("x", "a", 6, 3)])
    with pytest.raises(ValueError, match="no integer field"):
        Layout("bad", "test", [Field("a", 0, "4s")], [Bits("x", "a", 0, 1)])
    with pytest.raises(ValueError, match="has no field"):
        headers.UDP.pack(nonsense=1)
    with pytest.raises(ValueError, match=r"UDP\.sport"):
        headers.UDP.pack(sport=1 << 16)
    with pytest.raises(KeyError, match="has no field"):
        headers.UDP.accessor("nonsense")


def test_views_write_in_place_and_refuse_values_that_do_not_fit() -> None:
    frame = bytearray(headers.IPV4.pack(version=4, ihl=5, ttl=64, total_length=20))
    ip = Ipv4View(frame)
    ip.ttl = 3
    ip.df = True
    ip.src = bytes([192, 0, 2, 1])
    ip.fix_checksum()
    assert (ip.ttl, ip.df, ip.mf, ip.src, ip.version, ip.ihl) == (
        3,
        True,
        False,
        b"\xc0\0\2\1",
        4,
        5,
    )
    assert ip.checksum_ok()
    assert "Ipv4View(@0" in repr(ip)
    with pytest.raises(ValueError, match="does not fit"):
        ip.ttl = 256
    with pytest.raises(ValueError, match="expected 4 bytes"):
        ip.dst = b"\0"
    tag = VlanTagView(bytearray(4))
    tag.vid = 4095
    tag.pcp = 7
    assert (tag.tci, tag.dei) == (0xEFFF, False)
    tcp = TcpView(bytearray(headers.TCP.pack(data_offset=5)))
    tcp.flags = 0x18
    assert (tcp.flags, tcp.data_offset, tcp.header_length) == (0x18, 5, 20)
    with pytest.raises(TypeError):
        Ipv4View(bytes(20)).ttl = 1  # a bytes buffer is read-only


def test_package_names_resolve_to_their_modules() -> None:
    """Every public name of pktchain.packet loads lazily from the module that defines it."""
    import importlib

    import pktchain.packet as package

    sources = package._SOURCES
    assert set(sources) == set(package.__all__)
    for name in package.__all__:
        module = importlib.import_module(sources[name])
        assert getattr(package, name) is getattr(module, name)
    assert dir(package) == sorted(package.__all__)
    with pytest.raises(AttributeError, match="no attribute"):
        _ = package.nonsense
