"""Serving the API: uvicorn in a background thread.

`ApiServer(app).start()` binds the socket itself (so an address in use is an
`OSError` with its errno, raised by `start`), runs uvicorn on it in a daemon
thread and returns once the server accepts connections; `stop()` shuts it
down and waits for the thread. The API is for the machine it runs on unless
its application checks a token: binding anything but a loopback address
without one is refused before any socket is opened.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pktchain.linux.sockets import is_loopback, tcp_listener

__all__ = ["DEFAULT_PORT", "ApiServer", "ApiServerError", "is_loopback", "parse_listen"]

DEFAULT_PORT = 9696
"""Neutron's port, where clients of networking-sfc look for the API."""

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


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

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

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
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=5
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
