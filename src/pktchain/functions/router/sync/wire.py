"""The state sync's wire format: framed, sequenced, HMAC-authenticated messages.

One stream of frames each way over one TCP connection (docs/ha-sync.md). A
frame, all integers big-endian::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                length (bytes that follow this field)          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  version = 1  |     type      |          flags = 0            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       stream (64 bits)                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       seq (64 bits)                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                       payload ...                             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     mac: HMAC-SHA256 (RFC 2104) of everything above (32 bytes)|
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The MAC covers the length field too, so nothing a receiver reads is
unauthenticated but the length it needs to find the MAC. As with the
messenger (docs/messenger.md), the shared secret is at least 16 bytes and is
read from a file, never from a command line. :class:`FrameReader` checks the
length, then the MAC, before it looks at anything else; every refusal is a
:class:`Refusal`, never an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = [
    "HEADER",
    "LENGTH",
    "MAC_SIZE",
    "MAX_FRAME",
    "MIN_SECRET",
    "NONCE_SIZE",
    "SEQUENCED",
    "TO_BACKUP",
    "TO_MASTER",
    "VERSION",
    "FrameReader",
    "Message",
    "MessageType",
    "Refusal",
    "check_secret",
    "encode_message",
    "u32",
    "u64",
]

VERSION = 1
LENGTH = struct.Struct("!I")
HEADER = struct.Struct("!BBHQQ")
"""version, type, flags, stream, seq (after the length field)."""
MAC_SIZE = 32
NONCE_SIZE = 16
MIN_SECRET = 16
"""Shortest shared secret, in bytes (the messenger's rule)."""
MAX_FRAME = 256 * 1024
"""Default largest frame (after the length field) a reader accepts."""
_MIN_FRAME = HEADER.size + MAC_SIZE
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class MessageType(IntEnum):
    """What a message is; ``seq`` and the payload mean what each line says."""

    HELLO = 1
    """Backup → master: a new connection; payload: the backup's nonce. Asks for a stream."""
    START = 2
    """Master → backup, seq 1: a new stream and its snapshot begin; payload: the nonce
    of the HELLO (or RESYNC) it answers."""
    SNAPSHOT = 3
    """Master → backup, sequenced: records of the snapshot."""
    END = 4
    """Master → backup, sequenced: the snapshot is complete; payload: its record count
    (u32). What the backup held and the snapshot did not name is deleted."""
    CHANGES = 5
    """Master → backup, sequenced: changes since the snapshot (records and deletions)."""
    ALIVE = 6
    """Master → backup: nothing to send; seq: the last seq sent (a lost tail shows)."""
    ACK = 7
    """Backup → master: every message up to seq was received (cumulative)."""
    NACK = 8
    """Backup → master: messages seq to the payload's u64 are missing; resend them."""
    RESYNC = 9
    """Backup → master: start a new stream with a snapshot; payload: the backup's nonce."""


TO_BACKUP = frozenset(
    (
        MessageType.START,
        MessageType.SNAPSHOT,
        MessageType.END,
        MessageType.CHANGES,
        MessageType.ALIVE,
    )
)
TO_MASTER = frozenset((MessageType.HELLO, MessageType.ACK, MessageType.NACK, MessageType.RESYNC))
SEQUENCED = frozenset(
    (MessageType.START, MessageType.SNAPSHOT, MessageType.END, MessageType.CHANGES)
)
"""The messages that take a sequence number, are acknowledged and resent."""

_PAYLOAD_SIZE = {
    MessageType.HELLO: NONCE_SIZE,
    MessageType.START: NONCE_SIZE,
    MessageType.END: _U32.size,
    MessageType.ALIVE: 0,
    MessageType.ACK: 0,
    MessageType.NACK: _U64.size,
    MessageType.RESYNC: NONCE_SIZE,
}
"""Fixed payload sizes; SNAPSHOT and CHANGES carry records of any length."""


class Refusal(StrEnum):
    """Why a frame was refused; counted as ``refused-<value>``."""

    TOO_LARGE = "too-large"
    """The length field announced more than the maximum: the stream is out of step."""
    UNFRAMED = "unframed"
    """Bytes after a too-large frame, which nothing can frame any more."""
    TRUNCATED = "truncated"
    """A length too short for a header and a MAC."""
    BAD_MAC = "bad-mac"
    """Wrong secret, or altered on the way."""
    BAD_VERSION = "bad-version"
    UNKNOWN_TYPE = "unknown-type"
    WRONG_DIRECTION = "wrong-direction"
    """A type that this side sends, not receives (a frame reflected back)."""
    MALFORMED = "malformed"
    """Non-zero flags, a payload of the wrong size, a seq its type cannot have."""
    UNKNOWN_STREAM = "unknown-stream"
    """For a stream other than the current one (an old stream's, or before START)."""
    STALE_NONCE = "stale-nonce"
    """A START or RESYNC for a nonce other than this connection's."""
    OUT_OF_WINDOW = "out-of-window"
    """A seq too far ahead to hold, or an acknowledgement of what was never sent."""
    DUPLICATE = "duplicate"
    """A message received already (resent after a lost acknowledgement)."""
    TAKEN_OVER = "taken-over"
    """For a backup that took over: it applies no more of its former master's state."""


@dataclass(frozen=True, slots=True)
class Message:
    """A message as the protocol reads it (authenticated, version and type known)."""

    type: MessageType
    stream: int
    seq: int
    payload: bytes = b""

    @property
    def nonce(self) -> bytes:
        """HELLO, START, RESYNC: the nonce."""
        return self.payload

    @property
    def count(self) -> int:
        """END: the snapshot's record count."""
        return int(_U32.unpack(self.payload)[0])

    @property
    def last(self) -> int:
        """NACK: the last missing seq."""
        return int(_U64.unpack(self.payload)[0])


def u32(value: int) -> bytes:
    """An END payload."""
    return _U32.pack(value)


def u64(value: int) -> bytes:
    """A NACK payload."""
    return _U64.pack(value)


def check_secret(secret: object) -> bytes:
    """The shared secret, checked; raises ValueError naming what is wrong."""
    if not isinstance(secret, bytes):
        raise ValueError(f"secret: {type(secret).__name__} is not bytes")
    if len(secret) < MIN_SECRET:
        raise ValueError(f"secret: {len(secret)} bytes, at least {MIN_SECRET} needed")
    return secret


def encode_message(secret: bytes, message: Message) -> bytes:
    """The frame of ``message``, MAC included."""
    body = HEADER.pack(VERSION, int(message.type), 0, message.stream, message.seq) + message.payload
    head = LENGTH.pack(len(body) + MAC_SIZE)
    mac = hmac.new(secret, head + body, hashlib.sha256).digest()
    return head + body + mac


class FrameReader:
    """Cuts a byte stream into authenticated messages; holds at most one partial frame.

    :meth:`feed` gives, in order, each message or the :class:`Refusal` of a
    frame. A length over ``maximum`` is refused before its body is read, and
    the reader is then :attr:`broken`: no later byte can be framed, and the
    connection should close (a new one starts a new stream).
    """

    def __init__(self, secret: bytes, maximum: int = MAX_FRAME) -> None:
        self._secret = check_secret(secret)
        if maximum < _MIN_FRAME:
            raise ValueError(f"maximum: {maximum} is below the smallest frame, {_MIN_FRAME}")
        self.maximum = maximum
        self._buffer = bytearray()
        self.broken = False

    @property
    def buffered(self) -> int:
        """Bytes held for a partial frame."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget any partial frame and the broken state (a new connection)."""
        self._buffer.clear()
        self.broken = False

    def feed(self, data: bytes) -> list[Message | Refusal]:
        if self.broken:
            return [Refusal.UNFRAMED] if data else []
        buffer = self._buffer
        buffer += data
        out: list[Message | Refusal] = []
        at = 0
        while len(buffer) - at >= LENGTH.size:
            (length,) = LENGTH.unpack_from(buffer, at)
            if length > self.maximum:
                out.append(Refusal.TOO_LARGE)
                self.broken = True
                buffer.clear()
                return out
            end = at + LENGTH.size + length
            if len(buffer) < end:
                break
            if length < _MIN_FRAME:
                out.append(Refusal.TRUNCATED)
            else:
                out.append(self._read(bytes(buffer[at:end])))
            at = end
        del buffer[:at]
        return out

    def _read(self, frame: bytes) -> Message | Refusal:
        signed, mac = frame[:-MAC_SIZE], frame[-MAC_SIZE:]
        expected = hmac.new(self._secret, signed, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            return Refusal.BAD_MAC
        version, kind, flags, stream, seq = HEADER.unpack_from(signed, LENGTH.size)
        if version != VERSION:
            return Refusal.BAD_VERSION
        try:
            message_type = MessageType(kind)
        except ValueError:
            return Refusal.UNKNOWN_TYPE
        payload = signed[LENGTH.size + HEADER.size :]
        size = _PAYLOAD_SIZE.get(message_type)
        if flags or (size is not None and len(payload) != size):
            return Refusal.MALFORMED
        if message_type in SEQUENCED and (seq == 0 or stream == 0):
            return Refusal.MALFORMED
        return Message(message_type, stream, seq, payload)
