"""The messenger server: controller connections served from one background thread.

`MessengerServer(router, secret).start()` binds, listens and returns; a thread
then runs a :mod:`selectors` loop over the listening socket and every
connection, moving bytes to and from each connection's
:class:`~pktchain.messenger.connection.ServerConnection`. Each checked command
runs through ``submit`` (the node's ``EventLoop.submit``), so the router is
only ever touched from the node's loop thread; `stop()` closes every socket and
joins the thread.

Why selectors and not asyncio: every request ends in ``submit``, which waits
for the node's loop, so requests are serialized there whatever the server
does; a second event loop in the process would only add a layer between the
sockets and that call. A selector loop states the bounds plainly: at most
``max_connections`` connections, at most one partial request
(``max_request`` bytes) and ``max_pending`` unsent reply bytes per
connection, and connections idle for ``idle_timeout`` seconds closed.

Without a secret the server refuses to be made, unless ``insecure=True``, and
then only on a loopback address: anyone who can reach the port could change
the router.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pktchain.api.server import is_loopback
from pktchain.messenger.connection import ServerConnection
from pktchain.messenger.ops import (
    ARGUMENTS,
    Command,
    InterfaceFactory,
    Op,
    RouterControl,
    RouterNicAdd,
    apply_command,
    router_interface_factory,
    to_json,
)
from pktchain.messenger.wire import (
    DEFAULT_PORT,
    MAX_REPLY,
    MAX_REQUEST,
    REPLAY_WINDOW,
    ErrorType,
    MessengerConfigError,
    MessengerError,
    ReplayGuard,
    check_secret,
)

__all__ = ["MessengerServer", "Submit"]

log = logging.getLogger(__name__)

Submit = Callable[[Callable[[], Any]], Any]
"""Runs a function where the router lives and returns its result or raises its exception."""

STOP_TIMEOUT = 10.0
_RECV_SIZE = 65536
_ROUTER_FIELD = re.compile(r"([A-Za-z_][^\s:]*): (.*)", re.DOTALL)
#: The router's names for fields the messenger calls otherwise.
_FIELD_ALIASES = {"address": "ip"}


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


@dataclass(eq=False)
class _Peer:
    sock: socket.socket
    address: str
    connection: ServerConnection
    last_active: float
    outgoing: bytearray = field(default_factory=bytearray)


class MessengerServer:
    """The messenger on `host`:`port` (port 0: any free port, see :attr:`port`)."""

    def __init__(
        self,
        handler: RouterControl,
        secret: bytes | None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        submit: Submit = _call,
        *,
        insecure: bool = False,
        make_interface: InterfaceFactory | None = None,
        idle_timeout: float = 300.0,
        max_connections: int = 64,
        max_request: int = MAX_REQUEST,
        max_pending: int = 4 * MAX_REPLY,
        replay_window: float = REPLAY_WINDOW,
    ) -> None:
        self._secret = check_secret(secret, insecure)
        if insecure and not is_loopback(host):
            raise MessengerConfigError(f"host: {host} is not loopback (insecure=True)")
        if not 0 <= port <= 65535:
            raise MessengerConfigError(f"port: {port} is not in 0..65535")
        if not idle_timeout > 0:
            raise MessengerConfigError(f"idle_timeout: {idle_timeout!r} is not positive")
        if max_connections < 1:
            raise MessengerConfigError(f"max_connections: {max_connections!r} is not positive")
        if max_request < 1:
            raise MessengerConfigError(f"max_request: {max_request!r} is not positive")
        self.handler = handler
        self.host = host
        self.port = port
        self._submit = submit
        self._make_interface = make_interface
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_request = max_request
        self.max_pending = max_pending
        try:
            self._guard = ReplayGuard(replay_window)
        except ValueError as exc:
            raise MessengerConfigError(f"replay_{exc}") from None
        self._counters: collections.Counter[str] = collections.Counter()
        self._peers: dict[int, _Peer] = {}
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- public --------------------------------------------------------------
    @property
    def counters(self) -> dict[str, int]:
        """Requests, replies by outcome, ``unauthenticated``, connections opened/closed."""
        return dict(self._counters)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._peers)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind and listen; returns once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("messenger server already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(min(self.max_connections, socket.SOMAXCONN))
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"pktchain-messenger-{self.port}", daemon=True
        )
        self._thread.start()
        log.info("messenger listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        """Close every connection and the listening socket; wait for the thread.

        Not to be called from the thread ``submit`` runs work in while a request
        is in flight: the server thread would wait for it.
        """
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        if self._wake_w is not None:
            # A full buffer means the thread is being woken anyway.
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("messenger server thread did not stop")
        self._thread = None

    def __enter__(self) -> MessengerServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the thread ------------------------------------------------------------
    def _run(self) -> None:
        selector = self._selector
        if selector is None:
            return
        try:
            while not self._stopping.is_set():
                for key, events in selector.select(self._select_timeout()):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._drain_wake()
                    else:
                        peer: _Peer = key.data
                        if events & selectors.EVENT_READ:
                            self._read(peer)
                        if events & selectors.EVENT_WRITE and peer.sock.fileno() in self._peers:
                            self._write(peer)
                self._close_idle()
        finally:
            self._shutdown()

    def _select_timeout(self) -> float:
        if not self._peers:
            return self.idle_timeout
        oldest = min(peer.last_active for peer in self._peers.values())
        return max(0.0, oldest + self.idle_timeout - time.monotonic())

    def _drain_wake(self) -> None:
        if self._wake_r is None:
            return
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        if self._listener is None or self._selector is None:
            return
        for _ in range(self.max_connections):
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. EMFILE: keep serving the connections we have
                log.warning("messenger: accept failed: %s", exc)
                return
            if len(self._peers) >= self.max_connections:
                self._counters["connections.refused"] += 1
                sock.close()
                continue
            sock.setblocking(False)
            connection = ServerConnection(
                self._secret,
                self._guard,
                self._execute,
                counters=self._counters,
                max_request=self.max_request,
            )
            peer = _Peer(sock, f"{address[0]}:{address[1]}", connection, time.monotonic())
            self._peers[sock.fileno()] = peer
            self._selector.register(sock, selectors.EVENT_READ, peer)
            self._counters["connections.opened"] += 1

    def _read(self, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            log.info("messenger: %s: %s", peer.address, exc)
            self._close(peer, "error")
            return
        if not data:
            self._close(peer, "by_peer")
            return
        peer.last_active = time.monotonic()
        peer.connection.receive_data(data, time.time())
        peer.outgoing += peer.connection.data_to_send()
        if len(peer.outgoing) > self.max_pending:
            log.warning("messenger: %s does not read its replies; closing", peer.address)
            self._close(peer, "unread")
            return
        self._write(peer)

    def _write(self, peer: _Peer) -> None:
        if peer.outgoing:
            try:
                sent = peer.sock.send(peer.outgoing)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                log.info("messenger: %s: %s", peer.address, exc)
                self._close(peer, "error")
                return
            del peer.outgoing[:sent]
        if not peer.outgoing and peer.connection.closing:
            self._close(peer, "protocol")
            return
        if self._selector is not None:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.outgoing else 0)
            self._selector.modify(peer.sock, events, peer)

    def _close_idle(self) -> None:
        limit = time.monotonic() - self.idle_timeout
        for peer in [p for p in self._peers.values() if p.last_active <= limit]:
            self._close(peer, "idle")

    def _close(self, peer: _Peer, reason: str) -> None:
        # Counted before the peer leaves the table: a reader on another thread
        # that sees the connection gone also sees why it went.
        self._counters[f"connections.closed.{reason}"] += 1
        self._peers.pop(peer.sock.fileno(), None)
        if self._selector is not None:
            self._selector.unregister(peer.sock)
        peer.sock.close()

    def _shutdown(self) -> None:
        for peer in list(self._peers.values()):
            self._close(peer, "stop")
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
        self._listener = self._wake_r = self._wake_w = None
        self._selector = None

    # -- commands ----------------------------------------------------------------
    def _execute(self, op: Op, command: Command) -> Any:
        make_interface = self._interface_factory if isinstance(command, RouterNicAdd) else _unused
        try:
            result = self._submit(lambda: apply_command(command, self.handler, make_interface))
        except MessengerError:
            raise
        except (ValueError, LookupError) as exc:
            raise _rejected(op, exc) from None
        except Exception:
            # A fault in the router or the loop must not end the server: the
            # controller is told, the log says what happened.
            log.exception("messenger: %s failed", op.value)
            raise MessengerError(ErrorType.INTERNAL, "the operation failed") from None
        try:
            return to_json(result)
        except ValueError:
            log.exception("messenger: result of %s not representable", op.value)
            raise MessengerError(ErrorType.INTERNAL, "the result could not be sent") from None

    def _interface_factory(self, nic: RouterNicAdd) -> object:
        if self._make_interface is None:
            self._make_interface = router_interface_factory()
        return self._make_interface(nic)


def _unused(nic: RouterNicAdd) -> object:
    raise RuntimeError("no interface is made for this operation")


def _rejected(op: Op, exc: ValueError | LookupError) -> MessengerError:
    """The router's refusal as a reply.

    The router names fields as ``field: message``, several joined by ``; ``,
    or lists them in ``errors`` (``RouterConfigError``), with paths such as
    ``interfaces['eth1'].address``. The first field is named, in the
    messenger's words where it has them (``args.ip``); every message is kept.
    """
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors):
        parts: list[str] = errors
    else:
        text = str(exc.args[0]) if exc.args else type(exc).__name__
        parts = text.split("; ")
    match = _ROUTER_FIELD.fullmatch(parts[0])
    if match is None:
        return MessengerError(ErrorType.REJECTED, "; ".join(parts))
    name, message = match.group(1), match.group(2)
    if "]." in name:  # a path into the router's configuration: its last step
        name = name.rsplit("].", 1)[1]
    name = _FIELD_ALIASES.get(name, name)
    if any(spec.name == name for spec in ARGUMENTS[op]):
        name = f"args.{name}"
    return MessengerError(ErrorType.REJECTED, "; ".join([message, *parts[1:]]), name)
