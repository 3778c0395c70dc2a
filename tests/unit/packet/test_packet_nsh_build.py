"""NSH and VXLAN-GPE builders, in-place editors and pktchain's context headers, read by scapy.

What :mod:`pktchain.packet.nsh` builds is decoded with scapy's NSH
(``scapy.contrib.nsh``) and VXLAN-GPE dissectors, the independent oracle;
hypothesis draws service paths, TTLs, MD type 1 contexts and MD type 2 TLV
lists and checks that build, parse and edit agree both with scapy and with
:func:`~pktchain.packet.nsh.parse_nsh`.
"""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.contrib import nsh as scapy_nsh
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from pktchain.packet import (
    MAX_SPI,
    NSH_MAX_LENGTH,
    PKTCHAIN_MD_CLASS,
    ContextTlv,
    GpeNextProtocol,
    NshMdType,
    NshNextProtocol,
    PktchainTlv,
    VirtioNetHdr,
    append_context_tlv,
    build_nsh,
    build_vxlan_gpe,
    context_tlv,
    decrement_nsh_ttl,
    decrement_si,
    encode_context_tlvs,
    final_si,
    find_context_tlv,
    offload_tlv,
    parse_context_tlvs,
    parse_nsh,
    parse_offload_tlv,
    parse_path_tlv,
    parse_vxlan_gpe,
    path_tag,
    path_tlv,
    reverse_spi,
    set_nsh_ttl,
    set_service_path,
    wants_offload_tlv,
)

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
INNER = bytes(
    Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02")
    / IP(src="10.0.0.1", dst="10.0.0.2")
    / TCP(sport=40000, dport=80, flags="S")
    / Raw(b"inner payload")
)
NSH_ETHER = bytes(Ether(**MACS, type=0x894F))

spis = st.integers(0, MAX_SPI)
sis = st.integers(0, 255)
ttls = st.integers(0, 63)
contexts = st.binary(min_size=16, max_size=16)
tlv_lists = st.lists(
    st.builds(
        ContextTlv,
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFF),
        st.binary(max_size=40),
    ),
    max_size=4,
)


def _scapy_over_ethernet(nsh: bytes) -> scapy_nsh.NSH:
    packet = Ether(NSH_ETHER + nsh + INNER)
    layer = packet[scapy_nsh.NSH]
    assert isinstance(layer, scapy_nsh.NSH)
    return layer


def _scapy_tlvs(layer: scapy_nsh.NSH) -> list[tuple[int, int, int, bytes]]:
    """(class, type, length, value bytes) of each TLV scapy found (value with its padding)."""
    return [
        (tlv.class_, tlv.type, tlv.length, b"".join(struct.pack("!I", m) for m in tlv.metadata))
        for tlv in layer.vlch or []
    ]


# --------------------------------------------------------------------------- build_nsh


@given(spis, sis, ttls, contexts)
def test_md1_built_is_read_by_scapy_and_pktchain(spi: int, si: int, ttl: int, ctx: bytes) -> None:
    nsh = build_nsh(spi, si, ttl=ttl, md_type=NshMdType.FIXED, context=ctx)
    assert len(nsh) == 24
    layer = _scapy_over_ethernet(nsh)
    assert (layer.ver, layer.oam, layer.ttl, layer.length, layer.mdtype) == (0, 0, ttl, 6, 1)
    assert (layer.spi, layer.si, layer.nextproto) == (spi, si, 3)
    assert layer.context_header == ctx
    assert bytes(layer.payload) == INNER
    info = parse_nsh(nsh + INNER)
    assert info.error is None
    assert (info.spi, info.si, info.ttl, info.md_type, info.inner) == (spi, si, ttl, 1, 24)


@given(spis, sis, ttls, tlv_lists)
def test_md2_built_is_read_by_scapy_and_pktchain(
    spi: int, si: int, ttl: int, tlvs: list[ContextTlv]
) -> None:
    encoded = encode_context_tlvs(tlvs)
    nsh = build_nsh(spi, si, ttl=ttl, tlvs=encoded)
    assert len(nsh) == 8 + len(encoded)
    layer = _scapy_over_ethernet(nsh)
    assert (layer.ver, layer.ttl, layer.length * 4, layer.mdtype) == (0, ttl, len(nsh), 2)
    assert (layer.spi, layer.si, layer.nextproto) == (spi, si, 3)
    assert [(c, t, n) for c, t, n, _ in _scapy_tlvs(layer)] == [
        (tlv.md_class, tlv.type, len(tlv.value)) for tlv in tlvs
    ]
    for (_c, _t, n, value), tlv in zip(_scapy_tlvs(layer), tlvs, strict=True):
        assert value[:n] == tlv.value
    assert bytes(layer.payload) == INNER
    info = parse_nsh(nsh + INNER)
    assert info.error is None
    assert parse_context_tlvs(nsh, info.context, info.inner) == (tuple(tlvs), None)


def test_md1_without_context_carries_zeros_and_oam_sets_the_o_bit() -> None:
    nsh = build_nsh(7, 255, md_type=NshMdType.FIXED, oam=True)
    layer = _scapy_over_ethernet(nsh)
    assert (layer.oam, layer.context_header, layer.ttl) == (1, bytes(16), 63)


def test_next_protocol_ipv4_is_dissected_as_ip() -> None:
    ip = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
    nsh = build_nsh(1, 255, next_protocol=NshNextProtocol.IPV4)
    packet = Ether(NSH_ETHER + nsh + ip)
    assert packet[scapy_nsh.NSH].nextproto == 1
    assert packet[IP].dst == "10.0.0.2"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"spi": MAX_SPI + 1, "si": 1}, "spi"),
        ({"spi": -1, "si": 1}, "spi"),
        ({"spi": 1, "si": 256}, "si"),
        ({"spi": 1, "si": 1, "ttl": 64}, "ttl"),
        ({"spi": 1, "si": 1, "md_type": 1, "context": b"short"}, "context"),
        ({"spi": 1, "si": 1, "md_type": 1, "tlvs": bytes(4)}, "tlvs"),
        ({"spi": 1, "si": 1, "context": bytes(16)}, "context"),
        ({"spi": 1, "si": 1, "tlvs": bytes(6)}, "tlvs"),
        ({"spi": 1, "si": 1, "tlvs": bytes(248)}, "tlvs"),
        ({"spi": 1, "si": 1, "md_type": 0}, "md_type"),
        ({"spi": 1, "si": 1, "next_protocol": 256}, "next_protocol"),
    ],
)
def test_build_nsh_names_the_field_out_of_range(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=rf"build_nsh: {field}:"):
        build_nsh(**kwargs)  # type: ignore[arg-type]


def test_the_largest_nsh_is_252_bytes() -> None:
    nsh = build_nsh(1, 255, tlvs=bytes(NSH_MAX_LENGTH - 8))
    assert len(nsh) == 252
    assert parse_nsh(nsh).length == 252


# --------------------------------------------------------------------------- VXLAN-GPE


@given(st.integers(0, MAX_SPI), spis, sis, tlv_lists)
def test_nsh_over_vxlan_gpe_is_read_by_scapy(
    vni: int, spi: int, si: int, tlvs: list[ContextTlv]
) -> None:
    gpe = build_vxlan_gpe(vni=vni)
    assert len(gpe) == 8
    nsh = build_nsh(spi, si, tlvs=encode_context_tlvs(tlvs))
    udp = UDP(sport=50000, dport=4790) / Raw(gpe + nsh + INNER)
    packet = IP(bytes(IP(src="192.0.2.1", dst="192.0.2.2") / udp))
    vxlan = packet[VXLAN]
    # I (0x08) and P (0x04), nothing else (draft-ietf-nvo3-vxlan-gpe-13 §3.1)
    assert (int(vxlan.flags), vxlan.NextProtocol, vxlan.vni) == (0x0C, 4, vni)
    layer = packet[scapy_nsh.NSH]
    assert (layer.spi, layer.si, layer.mdtype) == (spi, si, 2)
    assert bytes(layer.payload) == INNER
    info = parse_vxlan_gpe(gpe)
    assert (info.error, info.next_protocol, info.vni, info.inner) == (None, 4, vni, 8)


def test_switched_frames_ride_vxlan_gpe_as_ethernet_with_the_network_as_vni() -> None:
    gpe = build_vxlan_gpe(GpeNextProtocol.ETHERNET, vni=42)
    packet = IP(bytes(IP(dst="192.0.2.2") / UDP(sport=1, dport=4790) / Raw(gpe + INNER)))
    assert (packet[VXLAN].NextProtocol, packet[VXLAN].vni) == (3, 42)
    assert packet[VXLAN].payload[TCP].dport == 80


def test_build_vxlan_gpe_refuses_out_of_range() -> None:
    with pytest.raises(ValueError, match="vni"):
        build_vxlan_gpe(vni=1 << 24)
    with pytest.raises(ValueError, match="next_protocol"):
        build_vxlan_gpe(256)


# --------------------------------------------------------------------------- pktchain's TLVs


@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=31))
def test_path_tlv_round_trips_and_scapy_reads_the_tags(tags: list[int]) -> None:
    tlv = path_tlv(tags)
    (found,), error = parse_context_tlvs(tlv, 0, len(tlv))
    assert error is None
    assert (found.md_class, found.type) == (PKTCHAIN_MD_CLASS, PktchainTlv.PATH)
    assert parse_path_tlv(found.value) == tuple(tags)
    layer = _scapy_over_ethernet(build_nsh(1, 255, tlvs=tlv))
    ((md_class, tlv_type, length, _),) = _scapy_tlvs(layer)
    assert (md_class, tlv_type, length) == (0xFFF6, 0x01, 4 * len(tags))
    assert list(layer.vlch[0].metadata) == tags


def test_path_tlv_limits() -> None:
    with pytest.raises(ValueError, match="at most 31"):
        path_tlv(range(32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32-bit"):
        path_tlv([1 << 32])
    assert parse_path_tlv(b"\0\0\0") is None
    assert parse_path_tlv(b"") == ()


def test_path_tag_is_the_first_four_bytes_of_the_port_pair_uuid() -> None:
    pair = "6f6b2f5a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
    assert path_tag(pair) == 0x6F6B2F5A
    assert path_tag(uuid.UUID(pair)) == 0x6F6B2F5A
    with pytest.raises(ValueError):
        path_tag("not-a-uuid")


@given(st.builds(VirtioNetHdr, *(st.integers(0, 255),) * 2, *(st.integers(0, 0xFFFF),) * 4))
def test_offload_tlv_carries_the_virtio_header_padded_to_12(header: VirtioNetHdr) -> None:
    tlv = offload_tlv(header.pack())
    assert len(tlv) == 16
    (found,), error = parse_context_tlvs(tlv, 0, len(tlv))
    assert error is None
    assert (found.md_class, found.type, len(found.value)) == (0xFFF6, 0x02, 10)
    assert parse_offload_tlv(found.value) == header
    assert tlv[14:] == b"\0\0"
    layer = _scapy_over_ethernet(build_nsh(1, 255, tlvs=tlv))
    assert _scapy_tlvs(layer)[0][:3] == (0xFFF6, 0x02, 10)


def test_offload_tlv_checks_and_when_it_is_wanted() -> None:
    with pytest.raises(ValueError, match="10 bytes"):
        offload_tlv(bytes(12))
    assert parse_offload_tlv(bytes(9)) is None
    assert not wants_offload_tlv(VirtioNetHdr().pack())
    assert not wants_offload_tlv(VirtioNetHdr(flags=2).pack())  # DATA_VALID only
    assert wants_offload_tlv(VirtioNetHdr(flags=1, csum_start=34, csum_offset=16).pack())
    assert wants_offload_tlv(VirtioNetHdr(gso_type=1, gso_size=1448).pack())


def test_context_tlv_checks_its_fields() -> None:
    assert context_tlv(0xFFF6, 0x80, b"\0\0\0\x05") == bytes.fromhex("fff68004 00000005")
    assert context_tlv(1, 2, b"ab") == bytes.fromhex("00010202 61620000")
    for args, field in (((1 << 16, 0), "md_class"), ((0, 256), "type")):
        with pytest.raises(ValueError, match=field):
            context_tlv(*args)
    with pytest.raises(ValueError, match="127"):
        context_tlv(0, 0, bytes(128))


def test_spi_and_si_conventions() -> None:
    assert reverse_spi(5) == 0x800005
    assert final_si(3) == 252


# --------------------------------------------------------------------------- in-place edits


@given(spis, st.integers(1, 255), contexts)
def test_decrement_si_in_place(spi: int, si: int, ctx: bytes) -> None:
    frame = bytearray(NSH_ETHER + build_nsh(spi, si, md_type=1, context=ctx) + INNER)
    assert decrement_si(frame, 14) == si - 1
    layer = Ether(bytes(frame))[scapy_nsh.NSH]
    assert (layer.spi, layer.si, layer.context_header) == (spi, si - 1, ctx)
    assert bytes(layer.payload) == INNER


def test_decrement_si_at_zero_leaves_the_packet() -> None:
    nsh = bytearray(build_nsh(9, 0))
    before = bytes(nsh)
    assert decrement_si(nsh) == -1
    assert nsh == before


@given(st.integers(0, 63))
def test_nsh_ttl_edits(ttl: int) -> None:
    nsh = bytearray(build_nsh(3, 200, ttl=ttl, tlvs=path_tlv([1, 2])))
    got = decrement_nsh_ttl(nsh)
    if ttl <= 1:
        assert got == 0
        assert parse_nsh(nsh).ttl == ttl
    else:
        assert got == ttl - 1
        assert _scapy_over_ethernet(bytes(nsh)).ttl == ttl - 1
    set_nsh_ttl(nsh, 0, 17)
    info = parse_nsh(nsh)
    assert (info.ttl, info.spi, info.si, info.length, info.error) == (17, 3, 200, 20, None)
    with pytest.raises(ValueError, match="ttl"):
        set_nsh_ttl(nsh, 0, 64)


def test_set_service_path_reclassifies() -> None:
    nsh = bytearray(build_nsh(3, 200, ttl=20))
    set_service_path(nsh, 0, reverse_spi(3), 255)
    layer = _scapy_over_ethernet(bytes(nsh))
    assert (layer.spi, layer.si, layer.ttl) == (0x800003, 255, 20)
    with pytest.raises(ValueError):
        set_service_path(nsh, 0, 1 << 24, 0)


@given(tlv_lists, st.binary(min_size=0, max_size=40))
def test_append_context_tlv_grows_the_nsh_and_keeps_the_inner_frame(
    tlvs: list[ContextTlv], value: bytes
) -> None:
    encoded = encode_context_tlvs(tlvs)
    frame = bytearray(NSH_ETHER + build_nsh(1, 254, tlvs=encoded) + INNER)
    added = context_tlv(0xFFF6, 0x80, value)
    fits = 8 + len(encoded) + len(added) <= 252
    assert append_context_tlv(frame, 14, added) is fits
    layer = Ether(bytes(frame))[scapy_nsh.NSH]
    expected = [(t.md_class, t.type, len(t.value)) for t in tlvs]
    if fits:
        expected.append((0xFFF6, 0x80, len(value)))
    assert [(c, t, n) for c, t, n, _ in _scapy_tlvs(layer)] == expected
    assert bytes(layer.payload) == INNER
    info = parse_nsh(frame, 14)
    assert info.error is None
    start, length = find_context_tlv(frame, info, 0xFFF6, 0x80)
    if fits and not any((t.md_class, t.type) == (0xFFF6, 0x80) for t in tlvs):
        assert bytes(frame[start : start + length]) == value


def test_append_context_tlv_refusals() -> None:
    md1 = bytearray(build_nsh(1, 1, md_type=1))
    assert append_context_tlv(md1, 0, context_tlv(1, 1)) is False
    full = bytearray(build_nsh(1, 1, tlvs=bytes(244)))
    assert append_context_tlv(full, 0, context_tlv(1, 1)) is False
    assert len(full) == 252
    with pytest.raises(ValueError, match="append_context_tlv"):
        append_context_tlv(bytearray(build_nsh(1, 1)), 0, b"\0\0\0\0\0")


def test_find_context_tlv_misses() -> None:
    nsh = build_nsh(1, 1, tlvs=path_tlv([7]))
    info = parse_nsh(nsh)
    assert find_context_tlv(nsh, info, 0xFFF6, PktchainTlv.OFFLOAD) == (-1, 0)
    start, length = find_context_tlv(nsh, info, 0xFFF6, PktchainTlv.PATH)
    assert parse_path_tlv(nsh[start : start + length]) == (7,)
    md1 = build_nsh(1, 1, md_type=1)
    assert find_context_tlv(md1, parse_nsh(md1), 0xFFF6, 1) == (-1, 0)
