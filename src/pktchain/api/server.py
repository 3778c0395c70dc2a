"""Serving the API: uvicorn in a background thread, within stated limits.

`ApiServer(app).start()` binds the socket itself (so an address in use is an
`OSError` with its errno, raised by `start`), runs uvicorn on it in a daemon
thread and returns once the server accepts connections; `stop()` shuts it
down and waits for the thread. The API is for the machine it runs on unless
its application checks a token: binding anything but a loopback address
without one is refused before any socket is opened.

Every connection is held to `HttpLimits`, which uvicorn alone does not
enforce: a client must send each whole request, headers and body, within
``request_timeout`` seconds of starting it (of opening the connection, or of
the previous response), or it gets a 408 and the connection is closed, so
that clients sending a byte at a time cannot hold connections open; at most
``max_connections`` are open at once, and the next one gets a 503 and is
closed. Both are counted (`ApiServer.counters`) and logged. The size of a
request body (``max_body``) is capped by the application
(`create_app(max_body=limits.max_body)`, 413).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pktchain.linux.sockets import is_loopback, tcp_listener

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_PORT",
    "ApiServer",
    "ApiServerError",
    "HttpLimits",
    "is_loopback",
    "parse_listen",
]

log = logging.getLogger("pktchain.api")

DEFAULT_PORT = 9696
"""Neutron's port, where clients of networking-sfc look for the API."""

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

DEFAULT_MAX_BODY = 1 << 20
"""The largest request body, in bytes (1 MiB: thousands of resources in one bulk create)."""


@dataclass(frozen=True)
class HttpLimits:
    """What one client may take of the API's server."""

    max_body: int = DEFAULT_MAX_BODY
    """Bytes of a request body (enforced by the application: `create_app(max_body=)`)."""
    request_timeout: float = 10.0
    """Seconds to send a whole request (headers and body), from its first byte's turn."""
    max_connections: int = 128
    """Connections open at once; the next is answered 503 and closed."""
    keep_alive: int = 5
    """Seconds an idle connection is kept between requests."""

    def __post_init__(self) -> None:
        if self.max_body < 1:
            raise ValueError(f"max body {self.max_body!r}: must be at least 1 byte")
        if not self.request_timeout > 0:
            raise ValueError(f"request timeout {self.request_timeout!r}: must be positive")
        if self.max_connections < 1:
            raise ValueError(f"max connections {self.max_connections!r}: must be at least 1")
        if self.keep_alive < 1:
            raise ValueError(f"keep-alive {self.keep_alive!r}: must be at least 1 s")


def _raw_error(status: int, reason: str, type_: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with a Neutron error body, for a connection that is closing."""
    body = json.dumps({"NeutronError": {"type": type_, "message": message, "detail": ""}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _guarded_protocol(limits: HttpLimits, counters: Counter[str]) -> type[Any]:
    """uvicorn's h11 protocol, with the request deadline and the connection cap of `limits`."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    waiting = (h11.IDLE, h11.SEND_BODY)  # the client's states while a request is incomplete

    class GuardedH11Protocol(H11Protocol):
        _deadline: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # asyncio sets TCP_NODELAY only on sockets made with IPPROTO_TCP, not on
                # those accepted from a listener made with protocol 0: without it, a
                # response written in two parts waits for the client's delayed ACK (40 ms).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if len(self.connections) > limits.max_connections:
                counters["connections.refused"] += 1
                log.warning(
                    "API: %s refused: %d connections open already",
                    _peer(self.client),
                    limits.max_connections,
                )
                message = f"The server holds {limits.max_connections} connections already."
                transport.write(
                    _raw_error(503, "Service Unavailable", "HTTPServiceUnavailable", message)
                )
                transport.close()
                return
            counters["connections.opened"] += 1
            self._watch()

        def handle_events(self) -> None:
            super().handle_events()
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._unwatch()
            super().connection_lost(exc)

        def _watch(self) -> None:
            """Arm the deadline while a request is due or under way, disarm it once in."""
            if self.transport.is_closing():
                self._unwatch()
            elif self.conn.their_state in waiting:
                if self._deadline is None:
                    self._deadline = self.loop.call_later(
                        limits.request_timeout, self._request_timed_out
                    )
            else:
                self._unwatch()

        def _unwatch(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _request_timed_out(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            counters["requests.timed_out"] += 1
            log.warning(
                "API: %s sent no whole request within %g s; closing",
                _peer(self.client),
                limits.request_timeout,
            )
            if self.cycle is None or not self.cycle.response_started:
                message = f"The request was not received within {limits.request_timeout:g} s."
                self.transport.write(
                    _raw_error(408, "Request Timeout", "HTTPRequestTimeout", message)
                )
            self.transport.close()

    return GuardedH11Protocol


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


class ApiServerError(Exception):
    """The server cannot start as configured."""


def parse_listen(value: str, option: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT``; port 0: any free port) as (host, port);
    ValueError naming `option`."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{option} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9696")
    return host.strip("[]"), int(port)


def token_required(app: Any) -> bool:
    """Whether an application made by `create_app` checks ``X-Auth-Token``."""
    state = getattr(app, "state", None)
    return bool(getattr(state, "token_required", False))


class ApiServer:
    """The API served over HTTP on `host`:`port` (port 0: any free port)."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        limits: HttpLimits | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits or HttpLimits()
        # Every key from the start: read from other threads, the table never grows.
        self._counters: Counter[str] = Counter(
            dict.fromkeys(("connections.opened", "connections.refused", "requests.timed_out"), 0)
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def counters(self) -> dict[str, int]:
        """Connections opened and refused, requests timed out."""
        return dict(self._counters)

    @property
    def url(self) -> str:
        """The base URL clients use, without ``/v2.0``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind, start serving and return when the server is listening."""
        import uvicorn

        if self._thread is not None:
            raise ApiServerError("the API server is already running")
        if not is_loopback(self.host) and not token_required(self.app):
            raise ApiServerError(
                f"refusing to serve the API on {self.host}, which is not a loopback "
                "address, without a token: configure one (X-Auth-Token) or bind 127.0.0.1"
            )
        sock = tcp_listener((self.host, self.port), 128)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            http=_guarded_protocol(self.limits, self._counters),
            log_level="warning",
            # uvicorn's own handlers would print its lines in a format of their own:
            # without them, its loggers' records go where the process's others go.
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=self.limits.keep_alive,
        )
        server = uvicorn.Server(config)
        self._server = server

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as err:  # reported by start(); the thread must not die silently
                self._failure = err
            finally:
                sock.close()

        thread = threading.Thread(target=serve, name=f"pktchain-api:{self.port}", daemon=True)
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ApiServerError(
                    f"the API server did not start on {self.url}: {self._failure or 'timeout'}"
                )
            thread.join(0.01)

    def stop(self) -> None:
        """Stop serving and wait for the server thread (idempotent)."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join(STOP_TIMEOUT)
        self._thread = None
        self._server = None

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
