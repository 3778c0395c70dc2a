"""One messenger connection, server side, without I/O.

:class:`ServerConnection` takes the bytes a controller sent and ``now`` and
queues the bytes to send back, in the manner of h11 and aioquic: the server
module only moves bytes between it and a socket. Per request, in order:

1. the frame (its length at most ``max_request``; longer: a
   ``MessageTooLarge`` reply and the connection closes, since the stream can
   no longer be trusted to be in step);
2. JSON (one object, UTF-8, no duplicate keys);
3. the MAC, before anything in the message is looked at: a wrong one gets
   ``Unauthenticated`` and nothing else, and is counted;
4. the envelope (``id``, ``op``, ``args``, ``nonce``, ``time``, no other
   members), then freshness and the nonce (:class:`ReplayGuard`);
5. the operation and every argument (:func:`parse_command`);
6. the command, through the ``execute`` callback, which returns the result or
   raises :class:`MessengerError`.

Every failure but a framing one is answered and the connection stays usable.
"""

from __future__ import annotations

import collections
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from pktchain.messenger.ops import Command, Op, parse_command, parse_op
from pktchain.messenger.wire import (
    MAX_REPLY,
    MAX_REQUEST,
    ErrorType,
    FrameDecoder,
    FrameTooLargeError,
    MalformedMessageError,
    MessengerError,
    ReplayGuard,
    decode_json,
    encode_frame,
    sign,
    verify,
)

__all__ = ["REQUEST_MEMBERS", "Execute", "ServerConnection"]

log = logging.getLogger(__name__)

REQUEST_MEMBERS = frozenset({"id", "op", "args", "nonce", "time", "mac"})
ID_MAX = 128
NONCE_MIN = 8
NONCE_MAX = 128

Execute = Callable[[Op, Command], Any]
"""Runs a checked command; returns its result as JSON values or raises MessengerError."""


class ServerConnection:
    """The protocol state of one controller connection.

    ``secret`` None means insecure mode: ``mac`` is neither checked nor sent.
    ``counters`` (shared by the server's connections) counts requests, replies
    by outcome and ``unauthenticated`` requests.
    """

    def __init__(
        self,
        secret: bytes | None,
        guard: ReplayGuard,
        execute: Execute,
        *,
        counters: collections.Counter[str],
        max_request: int = MAX_REQUEST,
        max_reply: int = MAX_REPLY,
    ) -> None:
        self._secret = secret
        self._guard = guard
        self._execute = execute
        self.counters = counters
        self._decoder = FrameDecoder(max_request)
        self._max_reply = max_reply
        self._outgoing = bytearray()
        self.closing = False
        """Set after a framing violation: send what is queued, then close."""
        self.authenticated = False
        """Set once a request carried a good MAC (in insecure mode: once one was read):
        the controller has shown who it is."""

    @property
    def buffered(self) -> int:
        """Bytes held for a partial request."""
        return self._decoder.buffered

    def receive_data(self, data: bytes, now: float) -> None:
        """Handle bytes from the peer; replies are queued for :meth:`data_to_send`."""
        if self.closing:
            return
        too_large: FrameTooLargeError | None = None
        try:
            frames = self._decoder.feed(data)
        except FrameTooLargeError as exc:
            frames, too_large = exc.frames, exc
        for body in frames:
            self._handle(body, now)
        if too_large is not None:
            # After an oversized frame the stream is out of step: nothing
            # more can be read from it.
            self._reply_error(None, None, MessengerError(ErrorType.TOO_LARGE, str(too_large)))
            self.closing = True

    def data_to_send(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    # -- one request ---------------------------------------------------------
    def _handle(self, body: bytes, now: float) -> None:
        self.counters["requests"] += 1
        try:
            message = decode_json(body)
        except MalformedMessageError as exc:
            self._reply_error(None, None, MessengerError(ErrorType.MALFORMED, str(exc)))
            return
        if self._secret is not None and not verify(self._secret, message):
            self.counters["unauthenticated"] += 1
            log.warning("messenger: request with a wrong or missing mac")
            self._reply_error(None, None, MessengerError(ErrorType.UNAUTHENTICATED, "bad mac"))
            return
        self.authenticated = True
        request_id = message.get("id") if _valid_id(message.get("id")) else None
        nonce = message.get("nonce") if _valid_nonce(message.get("nonce")) else None
        try:
            op, command = self._check(message, now)
            result = self._execute(op, command)
        except MessengerError as exc:
            self._reply_error(request_id, nonce, exc)
            return
        self._reply(
            {"id": request_id, "nonce": nonce, "ok": True, "result": result},
            request_id,
            nonce,
        )

    def _check(self, message: dict[str, Any], now: float) -> tuple[Op, Command]:
        for key in message:
            if key not in REQUEST_MEMBERS:
                raise MessengerError(ErrorType.MALFORMED, "unknown member", key)
        for key in ("id", "nonce", "time", "op", "args"):
            if key not in message:
                raise MessengerError(ErrorType.MALFORMED, "missing", key)
        if not _valid_id(message["id"]):
            raise MessengerError(ErrorType.MALFORMED, f"a string of 1-{ID_MAX} characters", "id")
        if not _valid_nonce(message["nonce"]):
            raise MessengerError(
                ErrorType.MALFORMED, f"a string of {NONCE_MIN}-{NONCE_MAX} characters", "nonce"
            )
        sent = message["time"]
        if isinstance(sent, bool) or not isinstance(sent, int | float) or not math.isfinite(sent):
            raise MessengerError(ErrorType.MALFORMED, "a number of seconds since 1970", "time")
        if not isinstance(message["args"], dict):
            raise MessengerError(ErrorType.MALFORMED, "an object", "args")
        self._guard.check(message["nonce"], float(sent), now)
        op = parse_op(message["op"])
        return op, parse_command(op, message["args"])

    def _reply_error(self, request_id: str | None, nonce: str | None, exc: MessengerError) -> None:
        self._reply(
            {"id": request_id, "nonce": nonce, "ok": False, "error": exc.as_json()},
            request_id,
            nonce,
        )

    def _reply(self, reply: dict[str, Any], request_id: str | None, nonce: str | None) -> None:
        try:
            body = self._encode(reply)
        except ValueError as exc:
            log.error("messenger: result of request %r not sendable: %s", request_id, exc)
            error = MessengerError(ErrorType.INTERNAL, "the result could not be sent")
            reply = {"id": request_id, "nonce": nonce, "ok": False, "error": error.as_json()}
            body = self._encode(reply)
        outcome = "ok" if reply["ok"] else f"error.{reply['error']['type']}"
        self.counters[f"replies.{outcome}"] += 1
        self._outgoing += encode_frame(body)

    def _encode(self, reply: dict[str, Any]) -> bytes:
        if self._secret is not None:
            reply = {**reply, "mac": sign(self._secret, reply)}
        body = json.dumps(reply, separators=(",", ":"), allow_nan=False).encode("utf-8")
        if len(body) > self._max_reply:
            raise ValueError(f"reply of {len(body)} bytes, the maximum is {self._max_reply}")
        return body


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= ID_MAX


def _valid_nonce(value: object) -> bool:
    return isinstance(value, str) and NONCE_MIN <= len(value) <= NONCE_MAX
