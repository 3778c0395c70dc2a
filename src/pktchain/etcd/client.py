"""etcd's v3 API through its JSON gateway, over one or more endpoints.

`EtcdClient` speaks to etcd's grpc-gateway (``POST /v3/kv/range``,
``/v3/kv/txn``, ``/v3/lease/grant``, ``/v3/watch``, ...) with ``etcd3gw``'s
`Etcd3Client`, one per endpoint. The gateway's path prefix is ``/v3/`` from
etcd 3.4 on (3.3 served ``/v3beta/``, 3.2 ``/v3alpha/``); etcd3gw would find it
with a ``GET /version`` before its first call, so the client gives it
``api_path="/v3/"`` and saves that round trip. Keys and values are bytes
(base64 on the wire); revisions, lease ids and TTLs are ints (strings in the
gateway's JSON).

A call goes to the endpoint that answered last and, when that one cannot be
reached, to the next, in the order given: several URLs of one etcd cluster
give fail-over. Two kinds of failure come back:

- `EtcdUnreachableError`: no endpoint answered. The request was not carried out,
  except when a write timed out after it was sent (`ambiguous`): then etcd
  may have applied it, and only a later read can tell.
- `EtcdRequestError`: etcd answered and refused (a lease that expired, a
  transaction with too many operations), with etcd's gRPC `code` and message.

The watch is read here rather than through etcd3gw's ``Watcher``, which
drops the ``canceled`` and ``compact_revision`` fields of a watch response and
ends silently when the stream breaks: a watcher that must list again after a
compaction, and reconnect after a failure, needs both (`WatchStream`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import requests
import urllib3.exceptions
from etcd3gw import exceptions as gw

from pktchain.etcd.endpoints import DEFAULT_PORT, parse_endpoints

__all__ = [
    "API_PATH",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WATCH_TIMEOUT",
    "EtcdClient",
    "EtcdError",
    "EtcdRequestError",
    "EtcdUnreachableError",
    "Event",
    "EventType",
    "GrpcCode",
    "KeyValue",
    "Range",
    "TxnResult",
    "WatchResponse",
    "WatchStream",
    "compare_create_revision",
    "compare_mod_revision",
    "op_delete",
    "op_put",
    "op_range",
    "parse_endpoints",
]

log = logging.getLogger(__name__)

API_PATH = "/v3/"
"""The gateway's path prefix on etcd 3.4 and later."""

DEFAULT_TIMEOUT = 2.0
"""Seconds a call waits for an endpoint to connect, and then to answer."""

DEFAULT_WATCH_TIMEOUT = 30.0
"""Seconds a watch stream may stay silent before it is opened again: a watch
on keys that do not change gets no data, and a peer that vanished without
closing the connection (a cut cable) is noticed only this way."""


class GrpcCode(Enum):
    """The gRPC status codes etcd answers with (in the gateway's ``code`` field)."""

    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    FAILED_PRECONDITION = 9
    OUT_OF_RANGE = 11
    UNAVAILABLE = 14


# --- errors ------------------------------------------------------------------------------


class EtcdError(Exception):
    """etcd could not do what it was asked; `endpoints` are the URLs tried."""

    def __init__(self, message: str, endpoints: Sequence[str]) -> None:
        super().__init__(message)
        self.message = message
        self.endpoints = tuple(endpoints)


class EtcdUnreachableError(EtcdError):
    """No endpoint answered. `ambiguous`: a write was sent and timed out, so etcd
    may have applied it; otherwise nothing was done."""

    def __init__(
        self, endpoints: Sequence[str], reasons: Sequence[str], *, ambiguous: bool = False
    ):
        where = ", ".join(endpoints)
        why = "; ".join(reasons)
        super().__init__(f"etcd at {where} is unreachable ({why})", endpoints)
        self.reasons = tuple(reasons)
        self.ambiguous = ambiguous


class EtcdRequestError(EtcdError):
    """etcd refused the request: `code` is its gRPC status code (an int, see
    `GrpcCode`), `detail` its message, `status` the gateway's HTTP status."""

    def __init__(self, endpoint: str, status: int, code: int, detail: str) -> None:
        super().__init__(f"etcd at {endpoint} refused the request: {detail}", (endpoint,))
        self.status = status
        self.code = code
        self.detail = detail


# --- values ------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    return base64.b64decode(str(text)) if text else b""


def _int(value: object) -> int:
    """An int64 of the gateway's JSON (a string), absent meaning 0 as in proto3."""
    return int(str(value)) if value not in (None, "") else 0


@dataclass(frozen=True)
class KeyValue:
    """A key as etcd holds it (``mvccpb.KeyValue``)."""

    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=_unb64(data.get("key")),
            value=_unb64(data.get("value")),
            create_revision=_int(data.get("create_revision")),
            mod_revision=_int(data.get("mod_revision")),
            version=_int(data.get("version")),
            lease=_int(data.get("lease")),
        )


class EventType(Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class Event:
    """One change seen by a watch; `kv.mod_revision` is the revision that made it."""

    type: EventType
    kv: KeyValue

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        # proto3 leaves out the default enum value: no "type" is a PUT.
        kind = EventType.DELETE if data.get("type") == "DELETE" else EventType.PUT
        return cls(kind, KeyValue.from_json(data.get("kv") or {}))


@dataclass(frozen=True)
class Range:
    """The keys a range found, and the store's revision they were read at."""

    revision: int
    kvs: tuple[KeyValue, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], revision: int | None = None) -> Range:
        if revision is None:
            revision = _int((data.get("header") or {}).get("revision"))
        return cls(revision, tuple(KeyValue.from_json(kv) for kv in data.get("kvs") or ()))


@dataclass(frozen=True)
class TxnResult:
    """A transaction's outcome: whether its comparisons held, the revision after
    it, and the responses of the branch that ran, in order."""

    revision: int
    succeeded: bool
    responses: tuple[Mapping[str, Any], ...]

    def range(self, index: int) -> Range:
        """The keys read by the branch's `index`-th operation, a range, at this revision."""
        found = self.responses[index].get("response_range")
        if found is None:
            raise ValueError(f"operation {index} of the transaction was not a range")
        return Range.from_json(found, self.revision)


@dataclass(frozen=True)
class WatchResponse:
    """One message of a watch stream (``WatchResponse``)."""

    revision: int
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    events: tuple[Event, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WatchResponse:
        return cls(
            revision=_int((data.get("header") or {}).get("revision")),
            created=bool(data.get("created")),
            canceled=bool(data.get("canceled")),
            compact_revision=_int(data.get("compact_revision")),
            cancel_reason=str(data.get("cancel_reason") or ""),
            events=tuple(Event.from_json(event) for event in data.get("events") or ()),
        )


# --- transaction parts -------------------------------------------------------------------


def compare_mod_revision(key: bytes, revision: int) -> dict[str, Any]:
    """The key was last changed at `revision` (0: the key does not exist)."""
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": revision}


def compare_create_revision(key: bytes, revision: int) -> dict[str, Any]:
    """The key was created at `revision` (0: the key does not exist)."""
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": revision}


def op_put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def op_delete(key: bytes) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def op_range(key: bytes, range_end: bytes | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"key": _b64(key)}
    if range_end is not None:
        found["range_end"] = _b64(range_end)
    return {"request_range": found}


# --- endpoints ---------------------------------------------------------------------------


class _Endpoint:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.url = url
        self.client = etcd3gw.Etcd3Client(
            host=parts.hostname or "",
            port=parts.port or DEFAULT_PORT,
            protocol=parts.scheme,
            timeout=timeout,
            api_path=API_PATH,
        )


def _refusal(endpoint: str, exc: gw.Etcd3Exception, status: int) -> EtcdRequestError:
    """etcd's JSON error body ``{"error", "message", "code"}`` as an EtcdRequestError."""
    text = exc.detail_text or str(exc)
    code = 0
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        text = str(body.get("message") or body.get("error") or text)
        code = _int(body.get("code"))
    return EtcdRequestError(endpoint, status, code, text.strip())


# --- the client --------------------------------------------------------------------------


class EtcdClient:
    """etcd's v3 API over `endpoints` (URLs of one etcd cluster), with fail-over.

    Safe to use from several threads: each call takes one of the endpoint's
    pooled connections (requests' session), and a watch stream has a session
    of its own.
    """

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT):
        if not timeout > 0:
            raise ValueError(f"etcd timeout must be positive, got {timeout}")
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = timeout
        self._endpoints = [_Endpoint(url, timeout) for url in self.endpoints]
        self._current = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EtcdClient({','.join(self.endpoints)})"

    # --- calls ----------------------------------------------------------------------------

    def call(self, path: str, body: Mapping[str, Any], *, write: bool = False) -> dict[str, Any]:
        """POST `body` to the gateway's `path` (``kv/range``, ...) and return its JSON.

        The endpoints are tried in turn from the one that answered last. A
        `write` that timed out after it was sent is not sent again elsewhere:
        `EtcdUnreachableError` with ``ambiguous=True``.
        """
        with self._lock:
            first = self._current
        reasons: list[str] = []
        for step in range(len(self._endpoints)):
            index = (first + step) % len(self._endpoints)
            endpoint = self._endpoints[index]
            try:
                result = endpoint.client.post(endpoint.client.get_url(path), json=dict(body))
            except gw.ConnectionTimeoutError as exc:
                connecting = isinstance(exc.__context__, requests.exceptions.ConnectTimeout)
                if write and not connecting:
                    reason = f"{endpoint.url}: no answer within {self.timeout:g} s"
                    raise EtcdUnreachableError(self.endpoints, [reason], ambiguous=True) from exc
                reasons.append(f"{endpoint.url}: timed out")
                continue
            except gw.ConnectionFailedError as exc:
                # etcd3gw raises this for a failed connection and for a 503 (no leader).
                reasons.append(f"{endpoint.url}: {_short(exc)}")
                continue
            except gw.InternalServerError as exc:
                raise _refusal(endpoint.url, exc, 500) from exc
            except gw.Etcd3Exception as exc:
                raise _refusal(endpoint.url, exc, 400) from exc
            if not isinstance(result, dict):
                raise EtcdRequestError(endpoint.url, 200, 0, f"unexpected answer {result!r}")
            if index != first:
                log.info("etcd: now using %s", endpoint.url)
                with self._lock:
                    self._current = index
            return result
        raise EtcdUnreachableError(self.endpoints, reasons)

    def range(self, key: bytes, range_end: bytes | None = None) -> Range:
        """The key, or the keys in [key, range_end), and the revision they were read at."""
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        return Range.from_json(self.call("kv/range", body))

    def txn(
        self,
        compare: Sequence[Mapping[str, Any]],
        success: Sequence[Mapping[str, Any]],
        failure: Sequence[Mapping[str, Any]] = (),
    ) -> TxnResult:
        """If every comparison holds, do `success`, else `failure`: atomically, as one revision."""
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        result = self.call("kv/txn", body, write=True)
        return TxnResult(
            revision=_int((result.get("header") or {}).get("revision")),
            succeeded=bool(result.get("succeeded")),
            responses=tuple(result.get("responses") or ()),
        )

    def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Set the key; returns the revision of the change."""
        result = self.call("kv/put", op_put(key, value, lease)["request_put"], write=True)
        return _int((result.get("header") or {}).get("revision"))

    def delete(self, key: bytes, range_end: bytes | None = None) -> int:
        """Delete the key (or the range); returns how many keys were deleted."""
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        return _int(self.call("kv/deleterange", body, write=True).get("deleted"))

    def compact(self, revision: int) -> None:
        """Forget every key's history before `revision` (physically, before returning)."""
        self.call("kv/compaction", {"revision": revision, "physical": True}, write=True)

    # --- leases -------------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease of `ttl` seconds: its id and the TTL etcd granted, which is
        larger when `ttl` is below etcd's minimum (about 1.5 times its election
        timeout: 2 s with etcd's defaults)."""
        result = self.call("lease/grant", {"TTL": ttl, "ID": 0}, write=True)
        if result.get("error"):
            raise EtcdRequestError(self.endpoints[0], 200, 0, str(result["error"]))
        return _int(result.get("ID")), _int(result.get("TTL"))

    def lease_keepalive(self, lease: int) -> int:
        """Renew the lease; returns its TTL, 0 when it has expired (and its keys are gone)."""
        result = self.call("lease/keepalive", {"ID": str(lease)})
        inner = result.get("result") or {}
        return max(0, _int(inner.get("TTL")))

    def lease_revoke(self, lease: int) -> None:
        """End the lease now, deleting its keys; a lease already gone is no error."""
        try:
            self.call("kv/lease/revoke", {"ID": str(lease)}, write=True)
        except EtcdRequestError as exc:
            if exc.code != GrpcCode.NOT_FOUND.value:
                raise

    # --- watching ------------------------------------------------------------------------

    def watch(
        self,
        key: bytes,
        range_end: bytes | None = None,
        *,
        start_revision: int = 0,
        timeout: float = DEFAULT_WATCH_TIMEOUT,
    ) -> WatchStream:
        """A stream of the changes to the key (or the range) from `start_revision`
        (0: from now). The stream ends, with `EtcdUnreachableError`, when the
        connection breaks or stays silent for `timeout` seconds."""
        create: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            create["range_end"] = _b64(range_end)
        if start_revision:
            create["start_revision"] = start_revision
        with self._lock:
            first = self._current
        reasons: list[str] = []
        for step in range(len(self._endpoints)):
            endpoint = self._endpoints[(first + step) % len(self._endpoints)]
            session = requests.Session()
            try:
                response = session.post(
                    endpoint.client.get_url("watch"),
                    json={"create_request": create},
                    stream=True,
                    timeout=(self.timeout, timeout),
                )
            except requests.RequestException as exc:
                session.close()
                reasons.append(f"{endpoint.url}: {_short(exc)}")
                continue
            if response.status_code != 200:
                text = response.text
                response.close()
                session.close()
                if response.status_code == 503:
                    reasons.append(f"{endpoint.url}: {text.strip()}")
                    continue
                raise _refusal(endpoint.url, gw.Etcd3Exception(text), response.status_code)
            return WatchStream(endpoint.url, session, response)
        raise EtcdUnreachableError(self.endpoints, reasons)


_REASONS = (
    ("Connection refused", "connection refused"),
    ("timed out", "timed out"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
    ("Name or service not known", "unknown host"),
    ("Temporary failure in name resolution", "unknown host"),
    ("Connection reset", "connection reset"),
    ("Response ended prematurely", "connection closed"),
    ("Remote end closed", "connection closed"),
)


def _short(exc: BaseException) -> str:
    """What went wrong, in a few words, out of a requests/urllib3 error's long text."""
    text = exc.detail_text if isinstance(exc, gw.Etcd3Exception) and exc.detail_text else str(exc)
    for marker, reason in _REASONS:
        if marker in text:
            return reason
    return text.strip()[:200] or type(exc).__name__


class WatchStream:
    """The messages of one watch, as they arrive.

    The iteration ends quietly when the stream stayed silent for the watch's
    timeout (`timed_out` is then true), and with `EtcdUnreachableError` when the
    connection broke.
    """

    def __init__(self, endpoint: str, session: requests.Session, response: requests.Response):
        self.endpoint = endpoint
        self.timed_out = False
        self._session = session
        self._response = response
        self._closed = False

    def __iter__(self) -> Iterator[WatchResponse]:
        buffer = b""
        try:
            for chunk in self._response.iter_content(chunk_size=None):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield self._parse(line)
        except (requests.RequestException, OSError) as exc:
            if self._closed:
                return
            if isinstance(exc, requests.ConnectionError) and any(
                isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args
            ):
                self.timed_out = True
                return
            raise EtcdUnreachableError((self.endpoint,), [f"watch stream: {_short(exc)}"]) from exc
        if buffer.strip() and not self._closed:
            yield self._parse(buffer)

    def _parse(self, line: bytes) -> WatchResponse:
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise EtcdRequestError(
                self.endpoint, 200, 0, f"watch stream sent {line[:80]!r}"
            ) from exc
        if not isinstance(message, dict):
            raise EtcdRequestError(self.endpoint, 200, 0, f"watch stream sent {line[:80]!r}")
        error = message.get("error")
        if isinstance(error, dict):
            raise EtcdRequestError(
                self.endpoint,
                _int(error.get("http_code")),
                _int(error.get("grpc_code")),
                str(error.get("message", "")),
            )
        return WatchResponse.from_json(message.get("result") or {})

    def interrupt(self) -> None:
        """End the stream from another thread: the thread reading it stops at once
        (and closes it)."""
        self._closed = True
        # Closing a socket does not wake a thread blocked reading it; shutting it down does.
        connection = getattr(self._response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """End the stream and release its connection; from the thread that reads it
        (another thread calls `interrupt`)."""
        self.interrupt()
        self._response.close()
        self._session.close()
