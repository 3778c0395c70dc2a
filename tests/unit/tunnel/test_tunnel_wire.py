"""The tunnel's framing without sockets: the original's 2-byte length + raw IP packet."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP
from scapy.packet import raw

from pktchain.tunnel.wire import MAX_LENGTH, CloseReason, FrameDecoder, encode_frame

PING = raw(IP(src="192.168.0.3", dst="192.168.0.2") / ICMP(id=7, seq=1) / (b"x" * 56))


def test_a_frame_is_the_length_big_endian_then_the_packet() -> None:
    # What TunConnector's open_tunnel writes: htons(nread), then the buffer.
    assert encode_frame(PING) == bytes([0, len(PING)]) + PING
    assert encode_frame(b"\x45" * 0x1234)[:2] == b"\x12\x34"


@pytest.mark.parametrize("size", [0, MAX_LENGTH + 1])
def test_encode_refuses_what_a_frame_cannot_carry(size: int) -> None:
    with pytest.raises(ValueError, match="1-65535"):
        encode_frame(bytes(size))


def test_decoder_returns_whole_packets_in_order() -> None:
    decoder = FrameDecoder(1500)
    stream = encode_frame(PING) + encode_frame(b"\x60" + bytes(39)) + encode_frame(PING)
    assert decoder.feed(stream) == [PING, b"\x60" + bytes(39), PING]
    assert decoder.fault is None
    assert decoder.buffered == 0


def test_decoder_keeps_an_unfinished_frame_until_its_end_arrives() -> None:
    decoder = FrameDecoder(1500)
    frame = encode_frame(PING)
    assert decoder.feed(frame[:1]) == []
    assert decoder.feed(frame[1:10]) == []
    assert decoder.buffered == 10
    assert decoder.feed(frame[10:] + frame[:3]) == [PING]
    assert decoder.buffered == 3


@settings(max_examples=200, deadline=None)
@given(
    packets=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
)
def test_any_split_of_the_stream_gives_the_same_packets(
    packets: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(p) for p in packets)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    decoder = FrameDecoder(300)
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out += decoder.feed(stream[start:end])
    assert out == packets
    assert decoder.fault is None and decoder.buffered == 0


def test_a_zero_length_frame_breaks_the_stream() -> None:
    decoder = FrameDecoder(1500)
    assert decoder.feed(encode_frame(PING) + b"\x00\x00" + encode_frame(PING)) == [PING]
    assert decoder.fault is not None
    assert decoder.fault.reason is CloseReason.ZERO_LENGTH_FRAME
    assert str(decoder.fault) == "zero-length frame"
    # Nothing after the fault is trusted.
    assert decoder.feed(encode_frame(PING)) == []


def test_a_frame_longer_than_the_mtu_breaks_the_stream_before_its_body_arrives() -> None:
    decoder = FrameDecoder(1500)
    assert decoder.feed(b"\x05\xdd") == []  # 1501: refused on the header alone
    assert decoder.fault is not None
    assert decoder.fault.reason is CloseReason.FRAME_TOO_LONG
    assert "1501 bytes" in decoder.fault.detail and "MTU (1500)" in decoder.fault.detail


def test_a_frame_of_exactly_the_mtu_passes() -> None:
    decoder = FrameDecoder(1500)
    assert decoder.feed(encode_frame(bytes(1500))) == [bytes(1500)]


@pytest.mark.parametrize("limit", [0, MAX_LENGTH + 1])
def test_decoder_limit_must_fit_the_header(limit: int) -> None:
    with pytest.raises(ValueError, match="max_length"):
        FrameDecoder(limit)
