"""An 802.1Q tag the kernel took aside is put back into the frame, vnet header moved with it."""

from __future__ import annotations

import struct

from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.node.dataplane.ports import with_vlan_tag
from pktchain.packet.headers import VIRTIO_NET_HDR
from pktchain.packet.parse import parse_frame

HEADER = struct.Struct("<BBHHHH")  # struct virtio_net_hdr
MACS = bytes.fromhex("020000000002020000000001")
IPV4_UDP = bytes.fromhex(
    "0800"
    "4500001c00010000401100000a0000010a000002"  # IPv4, 28 bytes, UDP, checksum not checked
    "00050006000800000000"
)


def test_the_tag_goes_after_the_source_and_the_offsets_follow() -> None:
    vnet = HEADER.pack(1, 0, 0, 0, 14 + 20, 6)  # NEEDS_CSUM: UDP checksum at 34 + 6
    frame = vnet + MACS + IPV4_UDP
    tagged = with_vlan_tag(frame, 0x200A)
    assert tagged[VNET_HDR_LEN:] == MACS + b"\x81\x00\x20\x0a" + IPV4_UDP
    flags, _gso, hdr_len, _size, start, offset = HEADER.unpack_from(tagged)
    assert (flags, hdr_len, start, offset) == (1, 0, 38, 6)
    info = parse_frame(tagged, VNET_HDR_LEN)
    assert info.error is None and len(info.vlans) == 1
    assert info.l3 == VNET_HDR_LEN + 18


def test_a_gso_frames_header_length_grows_with_the_tag_and_an_8021ad_tpid_is_kept() -> None:
    vnet = HEADER.pack(1, 1, 54, 1448, 34, 16)
    tagged = with_vlan_tag(vnet + MACS + IPV4_UDP, 7, 0x88A8)
    assert HEADER.unpack_from(tagged)[2] == 58
    assert HEADER.unpack_from(tagged)[4] == 38
    assert tagged[VNET_HDR_LEN + 12 : VNET_HDR_LEN + 16] == b"\x88\xa8\x00\x07"


def test_the_header_declared_here_is_the_virtio_net_header() -> None:
    assert HEADER.size == VIRTIO_NET_HDR.size == VNET_HDR_LEN


def test_a_frame_without_a_partial_checksum_keeps_its_header() -> None:
    vnet = bytes(VNET_HDR_LEN)
    assert with_vlan_tag(vnet + MACS + IPV4_UDP, 1)[:VNET_HDR_LEN] == vnet
