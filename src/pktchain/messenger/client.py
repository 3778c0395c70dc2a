"""A blocking messenger client, for controllers written in Python and the CLI.

``MessengerClient(host, port, secret).call("host_nic_add", mac=..., ip=...)``
signs the request, sends it on one TCP connection kept open between calls,
checks that the reply is authentic and answers this very request (same ``id``
and ``nonce``), and returns its ``result`` or raises
:class:`~pktchain.messenger.wire.MessengerError` with the reply's type, message
and field. A reply that breaks the protocol raises
:class:`~pktchain.messenger.wire.MessengerProtocolError` and closes the
connection; the next call opens a new one.
"""

from __future__ import annotations

import itertools
import secrets
import socket
import time
from typing import Any

from pktchain.messenger.ops import Op
from pktchain.messenger.wire import (
    DEFAULT_PORT,
    HEADER,
    MAX_REPLY,
    ErrorType,
    MalformedMessageError,
    MessengerError,
    MessengerProtocolError,
    check_secret,
    decode_json,
    encode_frame,
    sign,
    verify,
)

__all__ = ["MessengerClient", "make_request"]


def make_request(
    secret: bytes | None,
    op: Op | str,
    args: dict[str, Any],
    *,
    request_id: str,
    nonce: str | None = None,
    sent: float | None = None,
) -> dict[str, Any]:
    """A request as it goes on the wire (``mac`` omitted without a secret)."""
    request: dict[str, Any] = {
        "id": request_id,
        "op": str(op),
        "args": args,
        "nonce": nonce if nonce is not None else secrets.token_hex(16),
        "time": sent if sent is not None else time.time(),
    }
    if secret is not None:
        request["mac"] = sign(secret, request)
    return request


class MessengerClient:
    """One controller's connection to a messenger server."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        secret: bytes | None = None,
        *,
        insecure: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self._secret = check_secret(secret, insecure)
        self.host = host
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> MessengerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, op: Op | str, /, **args: Any) -> Any:
        """Run ``op`` with ``args`` on the router; its result as JSON values."""
        import json

        request = make_request(self._secret, op, args, request_id=str(next(self._ids)))
        body = json.dumps(request, separators=(",", ":"), allow_nan=False).encode("utf-8")
        reply = self._exchange(encode_frame(body))
        if self._secret is not None and not verify(self._secret, reply):
            self.close()
            error = reply.get("error")
            # Believing an unauthenticated "Unauthenticated" costs nothing: it
            # only makes the call fail, which anyone on the path could do anyway.
            if isinstance(error, dict) and error.get("type") == ErrorType.UNAUTHENTICATED:
                raise MessengerError(ErrorType.UNAUTHENTICATED, "bad mac (is the secret right?)")
            raise MessengerProtocolError("reply not authenticated (wrong secret?)")
        if reply.get("nonce") != request["nonce"] or reply.get("id") != request["id"]:
            error = reply.get("error")
            # The server answers without id/nonce when it could not read them,
            # e.g. our mac was wrong: report that error rather than a mismatch.
            if reply.get("id") is None and reply.get("ok") is False and isinstance(error, dict):
                raise _error(error)
            self.close()
            raise MessengerProtocolError("reply is not for this request")
        if reply.get("ok") is True and "result" in reply:
            return reply["result"]
        error = reply.get("error")
        if reply.get("ok") is False and isinstance(error, dict):
            raise _error(error)
        self.close()
        raise MessengerProtocolError("reply has neither a result nor an error")

    def _exchange(self, frame: bytes) -> dict[str, Any]:
        sock = self._connect()
        try:
            sock.sendall(frame)
            (length,) = HEADER.unpack(self._receive(sock, HEADER.size))
            if length > MAX_REPLY:
                raise MessengerProtocolError(f"reply of {length} bytes, maximum {MAX_REPLY}")
            return decode_json(self._receive(sock, length))
        except MalformedMessageError as exc:
            self.close()
            raise MessengerProtocolError(f"reply: {exc}") from None
        except (OSError, MessengerProtocolError):
            self.close()
            raise

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        return self._sock

    @staticmethod
    def _receive(sock: socket.socket, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise MessengerProtocolError("connection closed by the server")
            data += chunk
        return bytes(data)


def _error(error: dict[str, Any]) -> MessengerError:
    kind = str(error.get("type", ErrorType.INTERNAL))
    try:
        error_type: ErrorType | str = ErrorType(kind)
    except ValueError:
        error_type = kind
    field = error.get("field")
    return MessengerError(
        error_type, str(error.get("message", "")), field if isinstance(field, str) else None
    )
