"""TunConnector's wire format: a TCP stream of length-prefixed raw IP packets.

Every frame, in both directions, is what the original tool writes in its
``open_tunnel`` loop: the length of the packet as a 16-bit big-endian number
(``htons(nread)``), then the packet as read from a TUN device opened with
``IFF_TUN | IFF_NO_PI`` (no packet-information header)::

     0                   1                   2
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 ...
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-
    |   length (unsigned, 16 bits)  |  length bytes: one IPv4 or IPv6 packet
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-

There is nothing else: no version, no type, no padding. A frame announcing 0
bytes, or more than the MTU of the receiving end, breaks the stream: the
receiver cannot tell where the next frame starts with confidence, so it closes
the connection and says why (`CloseReason`).

`FrameDecoder` is sans-IO: it is fed the bytes a socket returned and gives
back whole packets, or the fault that ended the stream.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from pktchain.packet.address import Buffer

__all__ = [
    "HEADER",
    "MAX_LENGTH",
    "CloseReason",
    "Fault",
    "FrameDecoder",
    "encode_frame",
]

HEADER = struct.Struct("!H")
"""The 2-byte big-endian length in front of every packet."""

MAX_LENGTH = 0xFFFF
"""The largest length the header can carry."""


class CloseReason(StrEnum):
    """Why a tunnel connection was closed: logged with a detail, and counted.

    The values are the counter names (``closes`` in the counters).
    """

    ZERO_LENGTH_FRAME = "zero-length-frame"
    """A frame header announced 0 bytes (wire.py)."""
    FRAME_TOO_LONG = "frame-too-long"
    """A frame header announced more bytes than the MTU (wire.py)."""
    NOT_A_HANDSHAKE = "not-a-handshake"
    """The first bytes were not a tunnel hello: a peer without a key (auth.py)."""
    BAD_VERSION = "bad-version"
    """The peer speaks another version of the handshake (auth.py)."""
    BAD_ROLE = "bad-role"
    """The peer has the same role: two clients or two servers (auth.py)."""
    BAD_HELLO = "bad-hello"
    """The hello is malformed: too many addresses, or an invalid one (auth.py)."""
    WRONG_KEY = "wrong-key"
    """The peer's proof did not verify: it holds another key, or none (auth.py)."""
    HANDSHAKE_TIMEOUT = "handshake-timeout"
    """Connecting or authenticating took longer than the limit."""
    PEER_CLOSED = "peer-closed"
    """The peer closed the connection between frames."""
    PEER_CLOSED_IN_HANDSHAKE = "peer-closed-in-handshake"
    """The peer closed before the handshake was over (a refusal, usually)."""
    PEER_CLOSED_MID_FRAME = "peer-closed-mid-frame"
    """The peer closed with part of a frame sent."""
    TOO_MANY_CONNECTIONS = "too-many-connections"
    """The server already has as many connections as it takes."""
    SOCKET_ERROR = "socket-error"
    """The socket failed (connection reset, refused, unreachable...)."""
    SHUTDOWN = "shutdown"
    """This end is exiting."""


@dataclass(frozen=True)
class Fault:
    """The reason a connection ends, and what to log about it."""

    reason: CloseReason
    detail: str

    def __str__(self) -> str:
        return self.detail


def encode_frame(packet: Buffer) -> bytes:
    """The frame carrying `packet`; ValueError if it is empty or longer than 65535 bytes."""
    length = len(packet)
    if length == 0 or length > MAX_LENGTH:
        raise ValueError(f"a frame carries 1-{MAX_LENGTH} bytes, not {length}")
    return HEADER.pack(length) + bytes(packet)


class FrameDecoder:
    """Split a byte stream into packets; stop at the first frame that breaks it.

    ``feed(data)`` returns the packets completed by `data`, in order. When a
    header announces 0 bytes or more than `max_length`, the packets before it
    are still returned, `fault` is set, and later calls return nothing: the
    stream is unusable from that point and the connection must be closed.
    """

    __slots__ = ("_buffer", "fault", "max_length")

    def __init__(self, max_length: int) -> None:
        if not 1 <= max_length <= MAX_LENGTH:
            raise ValueError(f"max_length must be 1-{MAX_LENGTH}, not {max_length}")
        self.max_length = max_length
        self.fault: Fault | None = None
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame held back (0 between frames)."""
        return len(self._buffer)

    def feed(self, data: Buffer) -> list[bytes]:
        if self.fault is not None:
            return []
        buffer = self._buffer
        buffer += data
        packets: list[bytes] = []
        unpack = HEADER.unpack_from
        header = HEADER.size
        limit = self.max_length
        end = len(buffer)
        position = 0
        while end - position >= header:
            (length,) = unpack(buffer, position)
            if length == 0 or length > limit:
                self.fault = _bad_length(length, limit)
                buffer.clear()
                return packets
            start = position + header
            if end - start < length:
                break
            packets.append(bytes(buffer[start : start + length]))
            position = start + length
        del buffer[:position]
        return packets


def _bad_length(length: int, limit: int) -> Fault:
    if length == 0:
        return Fault(CloseReason.ZERO_LENGTH_FRAME, "zero-length frame")
    return Fault(
        CloseReason.FRAME_TOO_LONG, f"frame of {length} bytes is longer than the MTU ({limit})"
    )
