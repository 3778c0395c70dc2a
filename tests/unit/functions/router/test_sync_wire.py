"""The state sync's records and frames: round trips, and every refusal counted, never raised."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktchain.functions.common.tcp import TcpSessionState
from pktchain.functions.nat.table import SessionRecord
from pktchain.functions.router.hosts import HostState
from pktchain.functions.router.sync.records import (
    MAX_RECORD,
    Change,
    Deletion,
    ForwardRecord,
    HostRecord,
    RecordKind,
    RecordProblem,
    decode_changes,
    encode_changes,
)
from pktchain.functions.router.sync.wire import (
    HEADER,
    LENGTH,
    MAX_FRAME,
    FrameReader,
    Message,
    MessageType,
    Refusal,
    check_secret,
    encode_message,
    u64,
)

SECRET = b"0123456789abcdef0123456789abcdef"
ADDRESS = st.binary(min_size=4, max_size=4)
PORT = st.integers(1, 0xFFFF)
NAME = st.text(max_size=40).filter(lambda text: len(text.encode()) <= 255)

sessions = st.one_of(
    st.builds(
        SessionRecord,
        st.just(6),
        ADDRESS,
        PORT,
        ADDRESS,
        PORT,
        PORT,
        st.sampled_from(TcpSessionState),
    ),
    st.builds(SessionRecord, st.just(17), ADDRESS, PORT, ADDRESS, PORT, PORT, st.none()),
    st.builds(
        SessionRecord,
        st.just(1),
        ADDRESS,
        st.integers(0, 0xFFFF),
        ADDRESS,
        st.just(0),
        st.integers(0, 0xFFFF),
        st.none(),
    ),
)
hosts = st.builds(
    HostRecord,
    ADDRESS,
    st.binary(min_size=6, max_size=6).map(lambda mac: bytes((mac[0] & 0xFE,)) + mac[1:]),
    NAME.filter(bool),
    NAME,
    st.sampled_from(HostState),
    st.none() | PORT,
)
forwards = st.builds(ForwardRecord, st.sampled_from((6, 17)), PORT, ADDRESS, PORT, st.booleans())
deletions = st.one_of(
    st.builds(lambda r: Deletion(RecordKind.SESSION, r.key), sessions),
    st.builds(lambda r: Deletion(RecordKind.HOST, r.key), hosts),
    st.builds(lambda r: Deletion(RecordKind.FORWARD, r.key), forwards),
)
changes = st.lists(st.one_of(sessions, hosts, forwards, deletions), max_size=30)


@given(changes)
def test_records_round_trip(batch: list[Change]) -> None:
    data = encode_changes(batch)
    decoded, problems = decode_changes(data)
    assert decoded == batch and not problems


def test_a_session_is_nineteen_bytes_and_a_host_at_most_max_record() -> None:
    record = SessionRecord(6, b"\n\0\0\5", 1, b"\1\1\1\1", 2, 3, TcpSessionState.ESTABLISHED)
    assert len(encode_changes([record])) == 19
    host = HostRecord(b"\n\0\0\5", b"\2" * 6, "x" * 255, "y" * 255, HostState.STATIC, 9)
    assert len(encode_changes([host])) == MAX_RECORD


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_decode_without_raising(data: bytes) -> None:
    decoded, problems = decode_changes(data)
    assert len(decoded) + sum(problems.values()) <= len(data)


def test_bad_records_are_skipped_and_named() -> None:
    good = SessionRecord(17, b"\n\0\0\5", 1, b"\1\1\1\1", 2, 3, None)

    def record(kind: int, body: bytes) -> bytes:
        return struct.pack("!BH", kind, len(body)) + body

    session = struct.Struct("!B4sH4sHHB")
    data = b"".join(
        (
            record(99, b"future"),  # a kind a newer sender has
            record(5, session.pack(47, b"\n\0\0\5", 1, b"\1\1\1\1", 2, 3, 0)),  # GRE
            record(5, session.pack(17, b"\n\0\0\5", 0, b"\1\1\1\1", 2, 3, 0)),  # port 0
            record(5, session.pack(6, b"\n\0\0\5", 1, b"\1\1\1\1", 2, 3, 0)),  # TCP, no state
            record(5, session.pack(17, b"\n\0\0\5", 1, b"\1\1\1\1", 2, 3, 0) + b"x"),
            record(1, struct.pack("!4s6sBH", b"\n\0\0\5", b"\3" + b"\0" * 5, 1, 0) + b"\1a\0"),
            record(1, struct.pack("!4s6sBH", b"\n\0\0\5", b"\2" * 6, 1, 0) + b"\2\xff\xfe\0"),
            encode_changes([good]),
            b"\5\0\x40",  # a record cut short: the rest cannot be framed
        )
    )
    decoded, problems = decode_changes(data)
    assert decoded == [good]
    assert problems == {
        RecordProblem.UNKNOWN_KIND: 1,
        RecordProblem.PROTOCOL: 1,
        RecordProblem.PORT: 1,
        RecordProblem.STATE: 1,
        RecordProblem.LENGTH: 1,
        RecordProblem.MAC: 1,
        RecordProblem.TEXT: 1,
        RecordProblem.TRUNCATED: 1,
    }


# -- frames ----------------------------------------------------------------------------


def test_frames_round_trip_in_any_cut() -> None:
    messages = [
        Message(MessageType.HELLO, 0, 0, b"n" * 16),
        Message(MessageType.CHANGES, 7, 3, b"records"),
        Message(MessageType.NACK, 7, 2, u64(9)),
    ]
    stream = b"".join(encode_message(SECRET, m) for m in messages)
    for cut in range(1, len(stream)):
        reader = FrameReader(SECRET)
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert got == messages and reader.buffered == 0
    assert messages[2].last == 9


def test_wrong_secret_and_altered_frames_are_refused() -> None:
    frame = encode_message(SECRET, Message(MessageType.CHANGES, 7, 3, b"records"))
    assert FrameReader(b"another secret of 32 bytes......").feed(frame) == [Refusal.BAD_MAC]
    for at in (2, 5, 9, len(frame) - 40, len(frame) - 1):  # length, type, stream, body, mac
        altered = bytearray(frame)
        altered[at] ^= 1
        reader = FrameReader(SECRET)
        got = reader.feed(bytes(altered))
        # A changed length may leave the frame incomplete; all else fails the MAC.
        assert got in ([Refusal.BAD_MAC], [], [Refusal.TRUNCATED]), at


def sign(body: bytes) -> bytes:
    head = LENGTH.pack(len(body) + 32)
    return head + body + hmac.new(SECRET, head + body, hashlib.sha256).digest()


def test_authentic_but_wrong_frames_are_refused_by_name() -> None:
    reader = FrameReader(SECRET)
    frames = [
        sign(HEADER.pack(2, 5, 0, 7, 1)),  # version 2
        sign(HEADER.pack(1, 77, 0, 7, 1)),  # type 77
        sign(HEADER.pack(1, 5, 1, 7, 1)),  # flags
        sign(HEADER.pack(1, 7, 0, 7, 1) + b"x"),  # ACK with a payload
        sign(HEADER.pack(1, 5, 0, 7, 0)),  # CHANGES without a seq
        sign(HEADER.pack(1, 1, 0, 0, 0) + b"short"),  # HELLO with a short nonce
        LENGTH.pack(10) + b"0123456789",  # too short for a header and a MAC
    ]
    assert reader.feed(b"".join(frames)) == [
        Refusal.BAD_VERSION,
        Refusal.UNKNOWN_TYPE,
        Refusal.MALFORMED,
        Refusal.MALFORMED,
        Refusal.MALFORMED,
        Refusal.MALFORMED,
        Refusal.TRUNCATED,
    ]
    assert not reader.broken


def test_an_oversized_frame_is_refused_before_its_body_and_breaks_the_stream() -> None:
    reader = FrameReader(SECRET, maximum=4096)
    good = encode_message(SECRET, Message(MessageType.ALIVE, 7, 3))
    assert reader.feed(good + LENGTH.pack(4097)) == [
        Message(MessageType.ALIVE, 7, 3),
        Refusal.TOO_LARGE,
    ]
    assert reader.broken and reader.buffered == 0
    assert reader.feed(good) == [Refusal.UNFRAMED]
    reader.reset()
    assert reader.feed(good) == [Message(MessageType.ALIVE, 7, 3)]
    assert FrameReader(SECRET).maximum == MAX_FRAME


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_garbage_never_raises(chunks: list[bytes]) -> None:
    reader = FrameReader(SECRET, maximum=1024)
    for chunk in chunks:
        for item in reader.feed(chunk):
            assert isinstance(item, Refusal)  # nothing unsigned passes
    assert reader.buffered <= 4 + 1024


def test_secrets_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        check_secret(b"short")
    with pytest.raises(ValueError, match="not bytes"):
        check_secret("0123456789abcdef0123")
