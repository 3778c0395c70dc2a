"""Checksums against scapy and against full recomputation: RFC 1071, RFC 1624, partial seeds."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, in4_chksum, in4_pseudoheader
from scapy.layers.inet6 import IPv6, in6_chksum, in6_pseudoheader
from scapy.layers.l2 import Ether
from scapy.utils import checksum as scapy_checksum

from pktchain.packet import (
    Ethernet,
    Ipv4,
    Ipv6,
    Side,
    Tcp,
    Udp,
    adjust_checksum,
    adjust_seed,
    build,
    complete_partial_checksum,
    format_ip,
    internet_checksum,
    l4_checksum,
    l4_checksum_ok,
    ones_sum,
    parse_frame,
    partial_checksum_seed,
    pseudo_header_sum,
    set_ip,
    set_port,
    update16,
    update32,
    update_seed16,
    update_seed32,
)

EXAMPLES = settings(max_examples=200, deadline=None)

ipv4s = st.binary(min_size=4, max_size=4)
ipv6s = st.binary(min_size=16, max_size=16)
u16 = st.integers(0, 0xFFFF)


@EXAMPLES
@given(st.binary(max_size=3000))
def test_internet_checksum_matches_scapy(data: bytes) -> None:
    assert internet_checksum(data) == scapy_checksum(data)


def test_internet_checksum_of_a_64k_gso_frame_matches_scapy() -> None:
    data = bytes(range(256)) * 256
    assert internet_checksum(data) == scapy_checksum(data)
    assert internet_checksum(data + b"\x7f") == scapy_checksum(data + b"\x7f")


def test_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (with end-around carry).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0xFFFF - 0xDDF2


@EXAMPLES
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_sums_compose_and_a_checksummed_buffer_sums_to_all_ones(a: bytes, b: bytes) -> None:
    if len(a) % 2:
        a += b"\0"
    assume(any(a + b))
    assert ones_sum(a + b) == ones_sum(b, ones_sum(a))
    with_checksum = a + struct.pack("!H", internet_checksum(a + b)) + b
    assert ones_sum(with_checksum) == 0xFFFF


@EXAMPLES
@given(ipv4s, ipv4s, st.sampled_from([6, 17]), u16)
def test_ipv4_pseudo_header_sum_matches_scapy(src: bytes, dst: bytes, proto: int, n: int) -> None:
    ip = IP(src=format_ip(src), dst=format_ip(dst))
    scapy_sum = ~scapy_checksum(in4_pseudoheader(proto, ip, n)) & 0xFFFF
    ours = pseudo_header_sum(src, dst, proto, n)
    assert ours == scapy_sum or {ours, scapy_sum} == {0, 0xFFFF}


@EXAMPLES
@given(ipv6s, ipv6s, st.sampled_from([6, 17, 58]), st.integers(0, 0x1FFFF))
def test_ipv6_pseudo_header_sum_matches_scapy(src: bytes, dst: bytes, nh: int, n: int) -> None:
    udp = IPv6(src=format_ip(src), dst=format_ip(dst)) / UDP()
    scapy_sum = ~scapy_checksum(bytes(in6_pseudoheader(nh, udp[UDP], n))) & 0xFFFF
    ours = pseudo_header_sum(src, dst, nh, n)
    assert ours == scapy_sum or {ours, scapy_sum} == {0, 0xFFFF}


@EXAMPLES
@given(ipv4s, ipv4s, u16, u16, st.binary(max_size=100))
def test_l4_checksum_matches_scapy_tcp_over_ipv4(
    src: bytes, dst: bytes, sport: int, dport: int, data: bytes
) -> None:
    pkt = IP(
        bytes(IP(src=format_ip(src), dst=format_ip(dst)) / TCP(sport=sport, dport=dport) / data)
    )
    segment = bytearray(bytes(pkt[TCP]))
    segment[16:18] = b"\0\0"
    assert l4_checksum(src, dst, 6, segment) == pkt[TCP].chksum


@EXAMPLES
@given(ipv6s, ipv6s, u16, u16, st.binary(max_size=100))
def test_l4_checksum_matches_scapy_udp_over_ipv6(
    src: bytes, dst: bytes, sport: int, dport: int, data: bytes
) -> None:
    raw = bytes(IPv6(src=format_ip(src), dst=format_ip(dst)) / UDP(sport=sport, dport=dport) / data)
    pkt = IPv6(raw)
    segment = bytearray(bytes(pkt[UDP]))
    segment[6:8] = b"\0\0"
    assert (l4_checksum(src, dst, 17, segment) or 0xFFFF) == pkt[UDP].chksum


# --------------------------------------------------------------------------- RFC 1624


@st.composite
def word_changes(draw: st.DrawFn, width: int) -> tuple[bytearray, int, bytes]:
    """Even-length data, the offset of a ``width``-byte field in it, and a new value."""
    words = draw(st.integers(width // 2, 40))
    data = bytearray(draw(st.binary(min_size=2 * words, max_size=2 * words)))
    at = 2 * draw(st.integers(0, words - width // 2))
    new = draw(st.binary(min_size=width, max_size=width))
    return data, at, new


def _changed(data: bytearray, at: int, new: bytes) -> bytearray:
    out = bytearray(data)
    out[at : at + len(new)] = new
    # RFC 1624 §3: only all-zero data has the +0 sum that eqn. 3 never yields.
    assume(any(out))
    return out


@EXAMPLES
@given(word_changes(2))
def test_update16_equals_full_recompute(change: tuple[bytearray, int, bytes]) -> None:
    data, at, new = change
    after = _changed(data, at, new)
    old_word, new_word = struct.unpack_from("!H", data, at)[0], struct.unpack("!H", new)[0]
    assert update16(internet_checksum(data), old_word, new_word) == internet_checksum(after)


@EXAMPLES
@given(word_changes(4))
def test_update32_equals_full_recompute(change: tuple[bytearray, int, bytes]) -> None:
    data, at, new = change
    after = _changed(data, at, new)
    old_word, new_word = struct.unpack_from("!I", data, at)[0], struct.unpack("!I", new)[0]
    assert update32(internet_checksum(data), old_word, new_word) == internet_checksum(after)


@EXAMPLES
@given(word_changes(16))
def test_adjust_checksum_equals_full_recompute(change: tuple[bytearray, int, bytes]) -> None:
    data, at, new = change
    after = _changed(data, at, new)
    old = bytes(data[at : at + 16])
    assert adjust_checksum(internet_checksum(data), old, new) == internet_checksum(after)


def test_rfc1624_example() -> None:
    # RFC 1624 §4: HC = 0xDD2F, field 0x5555 -> 0x3285 gives HC' = 0x0000.
    assert update16(0xDD2F, 0x5555, 0x3285) == 0x0000


@EXAMPLES
@given(ipv4s, ipv4s, ipv4s, st.sampled_from([6, 17]), u16)
def test_seed_updates_equal_a_fresh_seed(
    src: bytes, dst: bytes, new_src: bytes, proto: int, length: int
) -> None:
    seed = partial_checksum_seed(src, dst, proto, length)
    old, new = struct.unpack("!I", src)[0], struct.unpack("!I", new_src)[0]
    fresh = partial_checksum_seed(new_src, dst, proto, length)
    assume(fresh != 0)
    assert update_seed32(seed, old, new) == fresh
    assert adjust_seed(seed, src, new_src) == fresh
    hi_old, hi_new = old >> 16, new >> 16
    halfway = update_seed16(seed, hi_old, hi_new)
    assert update_seed16(halfway, old & 0xFFFF, new & 0xFFFF) == fresh


def test_adjust_rejects_fields_of_different_or_odd_length() -> None:
    with pytest.raises(ValueError, match="same even length"):
        adjust_checksum(0, b"\0\0", b"\0\0\0\0")
    with pytest.raises(ValueError, match="same even length"):
        adjust_seed(0, b"\0", b"\0")


# --------------------------------------------------------------------------- partial checksums


segments = st.sampled_from(["tcp4", "udp4", "tcp6", "udp6"])


Case = tuple[str, bytes, bytes, int, int, bytes]


def _partial_frame(case: Case) -> bytes:
    kind, src, dst, sport, dport, data = case
    ip = Ipv4(src, dst) if kind.endswith("4") else Ipv6(src, dst)
    l4 = (
        Tcp(sport, dport, partial=True)
        if kind.startswith("tcp")
        else Udp(sport, dport, partial=True)
    )
    return build(Ethernet(), ip, l4, data)


def _scapy_checksum_of(frame: bytes) -> int:
    """The TCP/UDP checksum scapy computes over ``frame``'s L4 bytes, whatever the field holds.

    scapy's own pseudo-header checksum routines run over the raw segment: letting
    scapy rebuild the packet instead would re-encode payloads it recognises by
    port (DNS on 53, DCE/RPC on 135, ...) and change the bytes summed.
    """
    pkt = Ether(frame)
    tcp = TCP in pkt
    upper = pkt[TCP] if tcp else pkt[UDP]
    if IP in pkt:  # untagged frames without IPv6 extension headers in these tests
        start, end = 14 + 4 * pkt[IP].ihl, 14 + pkt[IP].len
    else:
        start, end = 14 + 40, 14 + 40 + pkt[IPv6].plen
    segment = bytearray(frame[start:end])
    struct.pack_into("!H", segment, 16 if tcp else 6, 0)
    proto = 6 if tcp else 17
    if IP in pkt:
        value = in4_chksum(proto, pkt[IP], bytes(segment))
    else:
        value = in6_chksum(proto, upper, bytes(segment))
    return value if tcp else value or 0xFFFF  # RFC 768: UDP sends a computed 0 as all ones


@st.composite
def partial_cases(draw: st.DrawFn) -> Case:
    kind = draw(segments)
    addresses = ipv4s if kind.endswith("4") else ipv6s
    return (
        kind,
        draw(addresses),
        draw(addresses),
        draw(u16),
        draw(u16),
        draw(st.binary(max_size=300)),
    )


def _same_checksum(proto_is_tcp: bool, ours: int, scapy_value: int) -> bool:
    # complete_partial_checksum stores 0 as 0xFFFF like the kernel (CSUM_MANGLED_0);
    # for TCP the two are the same checksum, scapy writes 0.
    return ours == scapy_value or (proto_is_tcp and {ours, scapy_value} == {0, 0xFFFF})


@EXAMPLES
@given(partial_cases())
def test_partial_seed_completes_to_scapys_checksum(case: Case) -> None:
    kind, src, dst = case[:3]
    frame = bytearray(_partial_frame(case))
    info = parse_frame(frame)
    field = info.l4 + (16 if kind.startswith("tcp") else 6)
    proto = 6 if kind.startswith("tcp") else 17
    seed = struct.unpack_from("!H", frame, field)[0]
    assert seed == partial_checksum_seed(src, dst, proto, info.end - info.l4)
    # Linux writes ~csum_tcpudp_magic(...): the folded pseudo-header sum, not complemented.
    assert seed == pseudo_header_sum(src, dst, proto, info.end - info.l4)
    value = complete_partial_checksum(frame, info.l4, field - info.l4)
    assert struct.unpack_from("!H", frame, field)[0] == value
    assert _same_checksum(proto == 6, value, _scapy_checksum_of(bytes(frame)))
    assert l4_checksum_ok(frame, info)


@EXAMPLES
@given(partial_cases(), st.data())
def test_nat_on_a_partial_checksum_then_completion_matches_scapy(
    case: Case, data: st.DataObject
) -> None:
    """Rewrite addresses and ports of a NEEDS_CSUM frame, complete, compare with scapy."""
    kind = case[0]
    frame = bytearray(_partial_frame(case))
    info = parse_frame(frame)
    width = 4 if kind.endswith("4") else 16
    new_src = data.draw(st.binary(min_size=width, max_size=width), "new_src")
    new_dst = data.draw(st.binary(min_size=width, max_size=width), "new_dst")
    new_sport, new_dport = data.draw(u16, "new_sport"), data.draw(u16, "new_dport")
    seed_before = struct.unpack_from("!H", frame, info.l4 + (16 if kind.startswith("tcp") else 6))
    set_port(frame, info, Side.SRC, new_sport, partial=True)
    set_port(frame, info, Side.DST, new_dport, partial=True)
    field = info.l4 + (16 if kind.startswith("tcp") else 6)
    # Ports are not in the pseudo-header: the seed must not move.
    assert struct.unpack_from("!H", frame, field) == seed_before
    set_ip(frame, info, Side.SRC, new_src, partial=True)
    set_ip(frame, info, Side.DST, new_dst, partial=True)
    proto = 6 if kind.startswith("tcp") else 17
    fresh = partial_checksum_seed(new_src, new_dst, proto, info.end - info.l4)
    assume(fresh != 0)
    assert struct.unpack_from("!H", frame, field)[0] == fresh
    value = complete_partial_checksum(frame, info.l4, field - info.l4)
    pkt = Ether(bytes(frame))
    ip = pkt[IP] if IP in pkt else pkt[IPv6]
    assert (ip.src, ip.dst) == (format_ip(new_src), format_ip(new_dst))
    if IP in pkt:
        assert scapy_checksum(bytes(frame[info.l3 : info.l3 + 20])) == 0
    assert _same_checksum(proto == 6, value, _scapy_checksum_of(bytes(frame)))


def test_completion_stores_a_zero_checksum_as_all_ones() -> None:
    # Choose the last payload word so that the UDP sum is 0xFFFF: its checksum is 0.
    frame = bytearray(build(Ethernet(), Ipv4(), Udp(1, 2, partial=True), b"\0\0"))
    info = parse_frame(frame)
    total = ones_sum(memoryview(frame)[info.l4 :])
    struct.pack_into("!H", frame, info.end - 2, 0xFFFF - total)
    assert ones_sum(memoryview(frame)[info.l4 :]) == 0xFFFF
    assert complete_partial_checksum(frame, info.l4, 6) == 0xFFFF  # RFC 768, CSUM_MANGLED_0
    assert l4_checksum_ok(frame, info)


def test_completion_rejects_offsets_outside_the_frame() -> None:
    frame = bytearray(40)
    with pytest.raises(ValueError, match="outside"):
        complete_partial_checksum(frame, 30, 16)
    with pytest.raises(ValueError, match="outside"):
        complete_partial_checksum(frame, -1, 0)


def test_checksum_verification_catches_a_flipped_bit() -> None:
    frame = bytearray(build(Ethernet(), Ipv6(), Tcp(), b"data"))
    info = parse_frame(frame)
    assert l4_checksum_ok(frame, info)
    frame[-1] ^= 0x01
    assert not l4_checksum_ok(frame, info)
    no_checksum = build(Ethernet(), Ipv4(), Udp(checksum=0), b"x")
    assert l4_checksum_ok(no_checksum, parse_frame(no_checksum))  # RFC 768: none sent
