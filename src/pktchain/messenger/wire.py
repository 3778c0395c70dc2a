"""The messenger's wire format: frames, the canonical encoding, MACs and replay.

Everything here is pure (no sockets, no clocks: the caller passes ``now``), so
the server, the client and the tests share one statement of the format.

Frame (both directions)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                  length (unsigned, big-endian)                |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |            length bytes: one JSON object in UTF-8 ...         |

A request is ``{"id", "op", "args", "nonce", "time", "mac"}``; a reply is
``{"id", "nonce", "ok", "result" | "error", "mac"}``. ``mac`` is the lowercase
hex HMAC-SHA256 (RFC 2104) under the shared secret of :func:`canonical` of the
message without its ``mac`` member. docs/messenger.md states the whole schema.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import math
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_PORT",
    "HEADER",
    "MAX_REPLY",
    "MAX_REQUEST",
    "MIN_SECRET",
    "REPLAY_WINDOW",
    "ErrorType",
    "FrameDecoder",
    "FrameTooLargeError",
    "MalformedMessageError",
    "MessengerConfigError",
    "MessengerError",
    "MessengerProtocolError",
    "ReplayGuard",
    "canonical",
    "check_secret",
    "decode_json",
    "encode_frame",
    "sign",
    "verify",
]

DEFAULT_PORT = 7790
"""The TCP port of POX's messenger, which the virtual-routers thesis's router listened on."""

HEADER = struct.Struct("!I")
"""The 4-byte big-endian length in front of every message."""

MAX_REQUEST = 64 * 1024
"""Largest request body (bytes of JSON) a server accepts."""

MAX_REPLY = 1024 * 1024
"""Largest reply body a server sends and a client accepts (a host table can be long)."""

REPLAY_WINDOW = 30.0
"""A request's ``time`` must be within this many seconds of the server's clock."""

MIN_SECRET = 16
"""Shortest shared secret, in bytes, that a server or client accepts."""

MAC_NAME = "mac"


class ErrorType(StrEnum):
    """The ``error.type`` of a failed reply."""

    UNAUTHENTICATED = "Unauthenticated"
    """Missing or wrong ``mac``; the reply says nothing more."""
    REPLAYED = "Replayed"
    """``time`` outside the window, or a ``nonce`` already seen."""
    MALFORMED = "MalformedMessage"
    """Not a JSON object, or an envelope member (id, op, args, ...) of the wrong type."""
    UNKNOWN_OP = "UnknownOp"
    """``op`` names no operation."""
    INVALID_ARGUMENT = "InvalidArgument"
    """An argument is missing, unknown, or has a wrong type or value."""
    REJECTED = "Rejected"
    """The router refused the operation (conflict, unknown NIC, ...); nothing changed."""
    TOO_LARGE = "MessageTooLarge"
    """The frame announced more than the maximum size; the connection is closed."""
    BUSY = "Busy"
    """The server cannot take the request now (replay memory full); retry later."""
    INTERNAL = "InternalError"
    """The server failed; nothing is said about why."""


class MessengerError(Exception):
    """A failed reply: its ``error`` member as an exception.

    Raised by the validation code on the server (and turned into a reply) and
    by :meth:`MessengerClient.call` on the client (from the reply).
    """

    def __init__(self, type: ErrorType | str, message: str, field: str | None = None) -> None:
        self.type = type
        self.message = message
        self.field = field
        super().__init__(f"{type}: {field}: {message}" if field else f"{type}: {message}")

    def as_json(self) -> dict[str, Any]:
        return {"type": str(self.type), "message": self.message, "field": self.field}


class MessengerProtocolError(Exception):
    """The peer broke the protocol: a reply that is not authentic, not for our
    request, not JSON or too large, or a connection closed mid-exchange."""


class FrameTooLargeError(ValueError):
    """A frame header announced more than the decoder's maximum."""

    def __init__(self, length: int, maximum: int, frames: list[bytes]) -> None:
        self.length = length
        self.maximum = maximum
        self.frames = frames
        """The complete frames that came before the oversized one."""
        super().__init__(f"message of {length} bytes, the maximum is {maximum}")


class MalformedMessageError(ValueError):
    """A frame body that is not one JSON object (bad UTF-8, syntax, NaN, duplicate key)."""


class MessengerConfigError(ValueError):
    """A server or client made with settings it cannot work with; names the setting."""


def check_secret(secret: bytes | None, insecure: bool) -> bytes | None:
    """The secret to use (None in insecure mode); raises MessengerConfigError."""
    if secret is not None and not isinstance(secret, bytes):
        raise MessengerConfigError(f"secret: {type(secret).__name__} is not bytes")
    if insecure:
        if secret:
            raise MessengerConfigError("secret: given together with insecure=True")
        return None
    if not secret:
        raise MessengerConfigError("secret: required (or insecure=True, on loopback only)")
    if len(secret) < MIN_SECRET:
        raise MessengerConfigError(f"secret: {len(secret)} bytes, at least {MIN_SECRET} needed")
    return secret


def encode_frame(body: bytes) -> bytes:
    """``body`` with its length header."""
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Cuts a byte stream into frame bodies; holds at most one partial frame.

    :meth:`feed` raises :class:`FrameTooLargeError` as soon as a header announces
    more than ``maximum`` bytes, before the body arrives: a peer cannot make the
    decoder buffer more than ``HEADER.size + maximum`` bytes.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self.maximum:
                raise FrameTooLargeError(length, self.maximum, frames)
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[HEADER.size : end]))
            del self._buffer[:end]
        return frames


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A MAC covers one reading of the message: two values for one key would
    # let a verifier and an applier read different messages.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise MalformedMessageError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise MalformedMessageError(f"{name} is not a JSON number")


def decode_json(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body``; raises :class:`MalformedMessageError` otherwise."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise MalformedMessageError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise MalformedMessageError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    except RecursionError:
        raise MalformedMessageError("nested too deeply") from None
    if not isinstance(value, dict):
        raise MalformedMessageError(f"a message is a JSON object, got {type(value).__name__}")
    return value


def canonical(message: dict[str, Any]) -> bytes:
    """The bytes a MAC covers: ``message`` without ``mac``, as compact JSON.

    Keys sorted by code point at every level, no whitespace between tokens,
    non-ASCII characters as ``\\uXXXX`` escapes, integers in decimal and
    floats in their shortest round-trip form (what ``json.dumps`` and
    ECMAScript ``JSON.stringify`` write), NaN and infinities refused.
    """
    body = {key: value for key, value in message.items() if key != MAC_NAME}
    try:
        text = json.dumps(
            body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except ValueError as exc:
        raise MalformedMessageError(str(exc)) from None
    return text.encode("ascii")


def sign(secret: bytes, message: dict[str, Any]) -> str:
    """The ``mac`` of ``message`` (lowercase hex HMAC-SHA256 of its canonical form)."""
    return hmac.new(secret, canonical(message), hashlib.sha256).hexdigest()


def verify(secret: bytes, message: dict[str, Any]) -> bool:
    """Whether ``message["mac"]`` is the MAC of the rest of ``message``."""
    mac = message.get(MAC_NAME)
    if not isinstance(mac, str):
        return False
    try:
        expected = sign(secret, message)
    except MalformedMessageError:
        return False
    # compare_digest needs ASCII str; a non-ASCII mac is simply wrong.
    if not mac.isascii():
        return False
    return hmac.compare_digest(mac, expected)


@dataclass
class _Seen:
    expiry: float
    nonce: str

    def __lt__(self, other: _Seen) -> bool:
        return self.expiry < other.expiry


class ReplayGuard:
    """Refuses stale requests and nonces seen within the window.

    A request is fresh when ``|now - time| <= window``. Its nonce is then
    remembered until ``time + window``: after that the same request is stale
    anyway, so memory holds only the nonces that could still be replayed. At
    most ``capacity`` nonces are held; past that new requests are refused
    (:attr:`ErrorType.BUSY`) rather than forgetting one that is still live.
    """

    def __init__(self, window: float = REPLAY_WINDOW, capacity: int = 65536) -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window: {window!r} is not a positive number of seconds")
        if capacity < 1:
            raise ValueError(f"capacity: {capacity!r} is not a positive count")
        self.window = window
        self.capacity = capacity
        self._nonces: dict[str, float] = {}
        self._expiries: list[_Seen] = []

    def __len__(self) -> int:
        return len(self._nonces)

    def check(self, nonce: str, sent: float, now: float) -> None:
        """Record ``nonce``; raise :class:`MessengerError` for a stale or replayed request."""
        self._expire(now)
        if abs(now - sent) > self.window:
            raise MessengerError(
                ErrorType.REPLAYED,
                f"{sent!r} is more than {self.window:g} s from the server's clock",
                "time",
            )
        if nonce in self._nonces:
            raise MessengerError(ErrorType.REPLAYED, "nonce already used", "nonce")
        if len(self._nonces) >= self.capacity:
            raise MessengerError(ErrorType.BUSY, "too many requests in the replay window")
        expiry = sent + self.window
        self._nonces[nonce] = expiry
        heapq.heappush(self._expiries, _Seen(expiry, nonce))

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0].expiry < now:
            seen = heapq.heappop(self._expiries)
            del self._nonces[seen.nonce]
