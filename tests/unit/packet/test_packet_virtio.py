"""virtio_net_hdr: constants, parsing, and the NEEDS_CSUM header the node writes and completes."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pktchain.packet import (
    VIRTIO_NET_HDR_LEN,
    Ethernet,
    GsoType,
    Ipv4,
    Ipv6,
    Tcp,
    Udp,
    VirtioNetFlag,
    VirtioNetHdr,
    VirtioNetHdrView,
    Vlan,
    build,
    complete_checksum,
    l4_checksum_ok,
    needs_csum_header,
    parse_frame,
    parse_virtio_net_hdr,
    partial_checksum_seed,
    virtio,
)

EXAMPLES = settings(max_examples=100, deadline=None)


def test_constants_are_the_kernels() -> None:
    # include/uapi/linux/virtio_net.h
    assert (virtio.VIRTIO_NET_HDR_F_NEEDS_CSUM, virtio.VIRTIO_NET_HDR_F_DATA_VALID) == (1, 2)
    assert (virtio.VIRTIO_NET_HDR_GSO_NONE, virtio.VIRTIO_NET_HDR_GSO_TCPV4) == (0, 1)
    assert (virtio.VIRTIO_NET_HDR_GSO_UDP, virtio.VIRTIO_NET_HDR_GSO_TCPV6) == (3, 4)
    assert (virtio.VIRTIO_NET_HDR_GSO_UDP_L4, virtio.VIRTIO_NET_HDR_GSO_ECN) == (5, 0x80)
    assert VIRTIO_NET_HDR_LEN == 10


@EXAMPLES
@given(st.tuples(*(st.integers(0, 255),) * 2, *(st.integers(0, 0xFFFF),) * 4))
def test_header_round_trips_little_endian(fields: tuple[int, ...]) -> None:
    header = VirtioNetHdr(*fields)
    wire = header.pack()
    assert wire == struct.pack("<BBHHHH", *fields)
    assert parse_virtio_net_hdr(b"\xaa" + wire, 1) == header
    view = VirtioNetHdrView(wire)
    assert (
        view.flags,
        view.gso_type,
        view.hdr_len,
        view.gso_size,
        view.csum_start,
        view.csum_offset,
    ) == fields


def test_short_or_negative_offsets_give_none() -> None:
    assert parse_virtio_net_hdr(bytes(9)) is None
    assert parse_virtio_net_hdr(bytes(10), -1) is None
    assert parse_virtio_net_hdr(bytes(10)) == virtio.NO_OFFLOAD


def test_gso_type_and_flags() -> None:
    header = VirtioNetHdr(VirtioNetFlag.NEEDS_CSUM, GsoType.TCPV4 | 0x80, 54, 1448, 34, 16)
    assert header.needs_csum
    assert header.gso is GsoType.TCPV4
    assert VirtioNetHdr(gso_type=2).gso is None
    assert not virtio.NO_OFFLOAD.needs_csum


@EXAMPLES
@given(
    st.sampled_from(["tcp4", "udp4", "tcp6", "udp6"]),
    st.booleans(),
    st.binary(max_size=200),
)
def test_a_tap_frame_with_needs_csum_completes_to_the_full_checksum(
    kind: str, tagged: bool, payload: bytes
) -> None:
    """What the node reads from a TAP with IFF_VNET_HDR: header, then a frame with a seed."""
    ip = Ipv4("192.0.2.1", "192.0.2.2") if kind.endswith("4") else Ipv6("fd00::1", "fd00::2")
    tcp = kind.startswith("tcp")
    tags = [Vlan(5)] if tagged else []

    def frame_with(partial: bool) -> bytes:
        l4 = Tcp(40000, 80, partial=partial) if tcp else Udp(5353, 53, partial=partial)
        return build(Ethernet(), *tags, ip, l4, payload)

    frame = frame_with(partial=True)
    info = parse_frame(frame)
    header = needs_csum_header(info)
    assert header.csum_start == 14 + 4 * tagged + (20 if kind.endswith("4") else 40)
    assert header.csum_offset == (16 if kind.startswith("tcp") else 6)
    packet = bytearray(header.pack() + frame)
    read_back = parse_virtio_net_hdr(packet)
    assert read_back == header
    inner = parse_frame(packet, VIRTIO_NET_HDR_LEN)
    field = VIRTIO_NET_HDR_LEN + header.csum_start + header.csum_offset
    seed = struct.unpack_from("!H", packet, field)[0]
    assert seed == partial_checksum_seed(inner.src, inner.dst, inner.proto, inner.end - inner.l4)
    assert complete_checksum(packet, read_back, VIRTIO_NET_HDR_LEN)
    assert l4_checksum_ok(packet, inner)
    # The full checksum of the same frame (checked against scapy in test_packet_codec).
    full = frame_with(partial=False)
    completed = bytes(packet[VIRTIO_NET_HDR_LEN:])
    if completed != full:  # TCP only: 0 and 0xFFFF are the same one's complement checksum
        assert tcp
        at = header.csum_start + header.csum_offset
        assert {completed[at : at + 2], full[at : at + 2]} == {b"\0\0", b"\xff\xff"}
        assert completed[:at] + completed[at + 2 :] == full[:at] + full[at + 2 :]


def test_gso_header_covers_all_headers_and_no_offload_needs_nothing() -> None:
    frame = build(Ethernet(), Ipv4(), Tcp(options=b"\x01\x01\x01\x01"), bytes(3000))
    header = needs_csum_header(parse_frame(frame), GsoType.TCPV4, 1448)
    assert (header.hdr_len, header.gso_size, header.gso_type) == (14 + 20 + 24, 1448, 1)
    untouched = bytearray(frame)
    assert not complete_checksum(untouched, virtio.NO_OFFLOAD)
    assert untouched == frame
