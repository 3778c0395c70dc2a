"""In-place rewrites (NAT, TTL, MAC) keep every checksum as scapy would compute it."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, in4_chksum
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.layers.l2 import Ether
from scapy.utils import checksum as scapy_checksum

from pktchain.packet import (
    Ethernet,
    FrameInfo,
    Icmp,
    IcmpType,
    Icmpv6,
    Ipv4,
    Ipv6,
    Ipv6Fragment,
    Layer,
    Side,
    Tcp,
    Udp,
    Vlan,
    build,
    decrement_ttl,
    format_ip,
    l4_checksum_ok,
    parse_frame,
    set_ip,
    set_mac,
    set_port,
)

EXAMPLES = settings(max_examples=150, deadline=None)
u16 = st.integers(0, 0xFFFF)
kinds = st.sampled_from(["tcp", "udp", "icmp"])


@st.composite
def ip_frames(draw: st.DrawFn) -> tuple[bytearray, int]:
    """A valid IPv4 or IPv6 frame, maybe tagged, with TCP, UDP or ICMP echo; and its version."""
    version = draw(st.sampled_from([4, 6]))
    width = 4 if version == 4 else 16
    src, dst = (draw(st.binary(min_size=width, max_size=width)) for _ in range(2))
    ttl = draw(st.integers(0, 255))
    ip: Layer = Ipv4(src, dst, ttl=ttl) if version == 4 else Ipv6(src, dst, hop_limit=ttl)
    kind = draw(kinds)
    sport, dport = draw(u16), draw(u16)
    l4: Layer
    if kind == "tcp":
        l4 = Tcp(sport, dport, seq=draw(st.integers(0, 2**32 - 1)))
    elif kind == "udp":
        l4 = Udp(sport, dport)
    else:
        l4 = Icmp(identifier=sport) if version == 4 else Icmpv6(identifier=sport)
    tags = [Vlan(draw(st.integers(0, 4095)))] if draw(st.booleans()) else []
    payload = draw(st.binary(max_size=80))
    return bytearray(build(Ethernet(), *tags, ip, l4, payload)), version


def assert_checksums_right(frame: bytearray, info: FrameInfo) -> None:
    """scapy's checksum routine says the IPv4 header and the L4 checksum are right."""
    pkt = Ether(bytes(frame))
    segment = bytes(frame[info.l4 : info.end])
    if IP in pkt:
        assert scapy_checksum(bytes(frame[info.l3 : info.l3 + 20])) == 0
        if info.proto == 1:
            assert scapy_checksum(segment) == 0
        else:
            assert in4_chksum(info.proto, pkt[IP], segment) == 0
    else:
        upper = pkt[IPv6].payload
        assert in6_chksum(info.proto, upper, segment) == 0
    assert l4_checksum_ok(frame, info)


@EXAMPLES
@given(ip_frames(), st.data())
def test_set_ip_keeps_checksums_right(case: tuple[bytearray, int], data: st.DataObject) -> None:
    frame, version = case
    info = parse_frame(frame)
    width = 4 if version == 4 else 16
    new_src = data.draw(st.binary(min_size=width, max_size=width))
    new_dst = data.draw(st.binary(min_size=width, max_size=width))
    set_ip(frame, info, Side.SRC, new_src)
    set_ip(frame, info, Side.DST, new_dst)
    after = parse_frame(frame)
    assert (after.src, after.dst) == (new_src, new_dst)
    assert_checksums_right(frame, after)


@EXAMPLES
@given(ip_frames(), u16, u16)
def test_set_port_keeps_checksums_right(
    case: tuple[bytearray, int], sport: int, dport: int
) -> None:
    frame, _ = case
    info = parse_frame(frame)
    set_port(frame, info, Side.SRC, sport)
    set_port(frame, info, Side.DST, dport)
    after = parse_frame(frame)
    if info.proto in (1, 58):
        # ICMP echo has one identifier: both "ports" are it, the last write wins.
        assert (after.sport, after.dport) == (dport, dport)
    else:
        assert (after.sport, after.dport) == (sport, dport)
    assert_checksums_right(frame, after)


@EXAMPLES
@given(ip_frames())
def test_decrement_ttl(case: tuple[bytearray, int]) -> None:
    frame, version = case
    info = parse_frame(frame)
    before = bytes(frame)
    ttl = frame[info.l3 + (8 if version == 4 else 7)]
    result = decrement_ttl(frame, info)
    if ttl <= 1:
        # RFC 1812 §5.3.1: not forwarded; the packet is left as it was.
        assert result == 0
        assert bytes(frame) == before
        return
    assert result == ttl - 1
    pkt = Ether(bytes(frame))
    assert (pkt[IP].ttl if version == 4 else pkt[IPv6].hlim) == ttl - 1
    assert_checksums_right(frame, parse_frame(frame))


def test_udp_without_checksum_stays_without() -> None:
    frame = bytearray(build(Ethernet(), Ipv4(), Udp(1, 2, checksum=0), b"abc"))
    info = parse_frame(frame)
    set_ip(frame, info, Side.DST, bytes([192, 0, 2, 9]))
    set_port(frame, info, Side.DST, 99)
    assert struct.unpack_from("!H", frame, info.l4 + 6)[0] == 0
    assert scapy_checksum(bytes(frame[info.l3 : info.l3 + 20])) == 0
    assert IP(bytes(frame[info.l3 :])).dst == "192.0.2.9"


def test_set_mac_and_errors() -> None:
    frame = bytearray(build(Ethernet(), Ipv4(), Udp()))
    info = parse_frame(frame)
    set_mac(frame, info, Side.DST, bytes.fromhex("0a0b0c0d0e0f"))
    set_mac(frame, info, Side.SRC, bytes.fromhex("020000000009"))
    assert Ether(bytes(frame)).dst == "0a:0b:0c:0d:0e:0f"
    assert Ether(bytes(frame)).src == "02:00:00:00:00:09"
    with pytest.raises(ValueError, match="does not fit"):
        set_ip(frame, info, Side.SRC, bytes(16))
    with pytest.raises(ValueError, match="6-byte MAC"):
        set_mac(frame, info, Side.SRC, b"\0")
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        set_port(frame, info, Side.SRC, 70000)
    broken = parse_frame(frame[:30])
    with pytest.raises(ValueError, match="malformed"):
        set_ip(frame, broken, Side.SRC, bytes(4))
    unreachable = bytearray(build(Ethernet(), Ipv4(), Icmp(IcmpType.DEST_UNREACHABLE), bytes(28)))
    with pytest.raises(ValueError, match="no ports"):
        set_port(unreachable, parse_frame(unreachable), Side.SRC, 1)


def test_a_non_first_fragment_gets_its_ip_header_rewritten_only() -> None:
    frame = bytearray(build(Ethernet(), Ipv6(), Ipv6Fragment(offset=8, next_header=17), bytes(16)))
    info = parse_frame(frame)
    payload_before = bytes(frame[-16:])
    set_ip(frame, info, Side.SRC, bytes(15) + b"\x07")
    assert parse_frame(frame).src == bytes(15) + b"\x07"
    assert bytes(frame[-16:]) == payload_before
    v4 = bytearray(build(Ethernet(), Ipv4(fragment_offset=2, proto=6), bytes(16)))
    v4_info = parse_frame(v4)
    set_ip(v4, v4_info, Side.DST, bytes([203, 0, 113, 5]))
    assert scapy_checksum(bytes(v4[14:34])) == 0
    assert format_ip(parse_frame(v4).dst) == "203.0.113.5"
