"""The node's local control socket: one JSON request, one JSON reply.

A Unix stream socket (by default `/run/pktchain/node-<name>.sock`, root only)
through which `pktchain node status` and tests ask a running node about its
ports and counters.  A request is one line of JSON (`{"op": "status"}`); the
reply is one line of JSON.  Requests are bounded in size and a client that
sends nothing is dropped after a timeout, so the packet loop never waits on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pktchain.eventloop import EventLoop

log = logging.getLogger(__name__)

RUN_DIR = Path("/run/pktchain")
MAX_REQUEST = 64 * 1024
CLIENT_TIMEOUT = 2.0

Reply = dict[str, Any]


class Deferred:
    """A reply that comes later (a trace waits for its packets, or for a forked dry run).

    A request handler returns one and calls `done` when the reply is ready;
    the control socket sends it then, and a thread may `wait` for it.
    """

    def __init__(self) -> None:
        self.reply: Reply | None = None
        self._event = threading.Event()
        self._callbacks: list[Callable[[Reply], None]] = []

    def done(self, reply: Reply) -> None:
        if self.reply is not None:
            return
        self.reply = reply
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(reply)

    def then(self, callback: Callable[[Reply], None]) -> None:
        """Call `callback` with the reply (at once if it is ready)."""
        if self.reply is not None:
            callback(self.reply)
        else:
            self._callbacks.append(callback)

    def wait(self, timeout: float) -> Reply:
        """The reply, waiting for it up to `timeout` seconds (TimeoutError then)."""
        if not self._event.wait(timeout):
            raise TimeoutError(f"no reply within {timeout:g} s")
        if self.reply is None:  # pragma: no cover - set before the event
            raise TimeoutError("no reply")
        return self.reply


RequestHandler = Callable[[dict[str, Any]], "Reply | Deferred"]


def control_path(node_name: str) -> Path:
    return RUN_DIR / f"node-{node_name}.sock"


class ControlError(Exception):
    """The node could not be asked (not running, bad reply)."""


class ControlServer:
    def __init__(self, path: Path, loop: EventLoop, handler: RequestHandler) -> None:
        self.path = path
        self._loop = loop
        self._handler = handler
        self._sock: socket.socket | None = None
        self._clients: dict[int, tuple[socket.socket, bytearray, float]] = {}

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.path.exists():
            if _is_listening(self.path):
                raise ControlError(f"a node is already serving {self.path}")
            self.path.unlink()  # left by a node that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        sock.listen(16)
        sock.setblocking(False)
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._accept)
        self._loop.call_every(1.0, self._expire_clients)

    def close(self) -> None:
        for conn, _buf, _since in list(self._clients.values()):
            self._drop(conn)
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _accept(self) -> None:
        if self._sock is None:
            return
        try:
            conn, _addr = self._sock.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._clients[conn.fileno()] = (conn, bytearray(), self._loop.now)
        self._loop.add_reader(conn.fileno(), lambda: self._read(conn))

    def _read(self, conn: socket.socket) -> None:
        _conn, buf, _since = self._clients[conn.fileno()]
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        buf += data
        if b"\n" not in buf:
            if len(buf) > MAX_REQUEST:
                self._reply(conn, {"ok": False, "error": "request too large"})
            return
        line = bytes(buf[: buf.index(b"\n")])
        try:
            request = json.loads(line)
        except ValueError as exc:
            self._reply(conn, {"ok": False, "error": f"request is not JSON: {exc}"})
            return
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            self._reply(conn, {"ok": False, "error": 'request must be {"op": "..."}'})
            return
        answer = self._handler(request)
        if isinstance(answer, Deferred):
            # Out of the reading clients (and their timeout) until the reply is ready.
            self._clients.pop(conn.fileno(), None)
            self._loop.remove_reader(conn.fileno())
            answer.then(lambda reply: self._reply(conn, reply))
            return
        self._reply(conn, answer)

    def _reply(self, conn: socket.socket, reply: Reply) -> None:
        data = json.dumps(reply).encode() + b"\n"
        try:
            conn.settimeout(CLIENT_TIMEOUT)
            conn.sendall(data)
        except OSError as exc:
            log.info("control client went away: %s", exc)
        self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        if self._clients.pop(conn.fileno(), None) is not None:
            self._loop.remove_reader(conn.fileno())
        conn.close()

    def _expire_clients(self) -> None:
        limit = self._loop.now - CLIENT_TIMEOUT
        for conn, _buf, since in list(self._clients.values()):
            if since < limit:
                self._drop(conn)


def _is_listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def request(path: Path, op: str, timeout: float = 5.0, **params: Any) -> Reply:
    """Send one request to the node at `path` and return its reply."""
    return send_request(path, {"op": op, **params}, timeout)


def send_request(path: Path, body: dict[str, Any], timeout: float = 5.0) -> Reply:
    """Send `body` (with its ``op``) to the node at `path` and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(f"no node is running at {path}") from exc
        sock.sendall(json.dumps(body).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ControlError(f"node at {path} sent a reply that is not JSON") from exc
    if not isinstance(reply, dict):
        raise ControlError(f"node at {path} sent an unexpected reply")
    return reply
