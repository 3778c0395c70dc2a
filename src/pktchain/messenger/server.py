"""The messenger server: controller connections served on an event loop.

`MessengerServer(router, secret, loop=loop).start()` binds, listens and
registers the listening socket with `loop` (a :class:`pktchain.eventloop.EventLoop`);
the loop then moves bytes between every connection's socket and its
:class:`~pktchain.messenger.connection.ServerConnection`. In the node, `loop`
is the node's own: each checked command runs in the loop's thread, where the
router lives, between two batches of packets, and no other thread is involved.
Without a loop (a test, a tool) the server runs one in a thread of its own
(:class:`pktchain.eventloop.LoopThread`), and ``submit`` may then hand each
command to wherever the router lives. `stop()` closes every socket (and
stops that thread).

The bounds are stated plainly: at most ``max_connections`` connections (the
next one is closed at once, counted as ``connections.refused`` and logged),
at most one partial request (``max_request`` bytes) and ``max_pending``
unsent reply bytes per connection, connections that have not sent an
authenticated request within ``handshake_timeout`` seconds of opening closed
(``connections.closed.handshake``), so that strangers cannot hold the
connections a controller needs, and connections idle for ``idle_timeout``
seconds closed.

Without a secret the server refuses to be made, unless ``insecure=True``, and
then only on a loopback address: anyone who can reach the port could change
the router.
"""

from __future__ import annotations

import collections
import functools
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pktchain.eventloop import EventLoop, LoopThread, Timer
from pktchain.linux.sockets import is_loopback, tcp_listener
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

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "MessengerServer",
    "Submit",
]

log = logging.getLogger(__name__)

Submit = Callable[[Callable[[], Any]], Any]
"""Runs a function where the router lives and returns its result or raises its exception."""

STOP_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 64
"""Connections served at once."""
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds a new connection has to send its first authenticated request."""
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
    opened: float
    outgoing: bytearray = field(default_factory=bytearray)


class MessengerServer:
    """The messenger on `host`:`port` (port 0: any free port, see :attr:`port`).

    With `loop`, `start` and `stop` are called from the loop's thread (or
    while it is not running), as for anything else registered with it.
    """

    def __init__(
        self,
        handler: RouterControl,
        secret: bytes | None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        submit: Submit = _call,
        *,
        loop: EventLoop | None = None,
        insecure: bool = False,
        make_interface: InterfaceFactory | None = None,
        idle_timeout: float = 300.0,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
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
        if not handshake_timeout > 0:
            raise MessengerConfigError(f"handshake_timeout: {handshake_timeout!r} is not positive")
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
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.max_request = max_request
        self.max_pending = max_pending
        try:
            self._guard = ReplayGuard(replay_window)
        except ValueError as exc:
            raise MessengerConfigError(f"replay_{exc}") from None
        self._counters: collections.Counter[str] = collections.Counter()
        self._peers: dict[int, _Peer] = {}
        self._given_loop = loop
        self._loop: EventLoop | None = None
        self._thread: LoopThread | None = None
        self._listener: socket.socket | None = None
        self._idle_timer: Timer | None = None
        self._handshake_timer: Timer | None = None

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
        return self._listener is not None and (self._thread is None or self._thread.running)

    def start(self) -> None:
        """Bind and listen; returns once connections are accepted."""
        if self._listener is not None:
            raise RuntimeError("messenger server already started")
        listener = tcp_listener((self.host, self.port), min(self.max_connections, socket.SOMAXCONN))
        self.port = listener.getsockname()[1]
        self._listener = listener
        loop = self._given_loop
        if loop is None:
            self._thread = LoopThread(f"pktchain-messenger-{self.port}")
            loop = self._thread.loop
        self._loop = loop
        loop.set_reader(listener.fileno(), self._accept)
        if self._thread is not None:
            self._thread.start()
        log.info("messenger listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        """Close every connection and the listening socket (and stop the server's thread).

        Without a loop given, not to be called from the thread ``submit`` runs
        work in while a request is in flight: the server's thread would wait for it.
        """
        if self._listener is None:
            return
        thread = self._thread
        if thread is not None and thread.running:
            thread.loop.submit(self._shutdown, STOP_TIMEOUT)
        else:
            self._shutdown()
        if thread is not None:
            thread.stop(STOP_TIMEOUT)
            self._thread = None
        self._loop = None

    def __enter__(self) -> MessengerServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- on the loop ---------------------------------------------------------------
    def _accept(self) -> None:
        if self._listener is None or self._loop is None:
            return
        loop = self._loop
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
                log.warning(
                    "messenger: %s:%s refused: %d connections open already",
                    address[0],
                    address[1],
                    self.max_connections,
                )
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
            peer = _Peer(sock, f"{address[0]}:{address[1]}", connection, loop.now, loop.now)
            self._peers[sock.fileno()] = peer
            loop.set_reader(sock.fileno(), functools.partial(self._read, peer))
            self._counters["connections.opened"] += 1
            if self._idle_timer is None:
                self._idle_timer = loop.call_later(self.idle_timeout, self._close_idle)
            if self._handshake_timer is None:
                self._handshake_timer = loop.call_later(
                    self.handshake_timeout, self._close_unauthenticated
                )

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
        if self._loop is not None:
            peer.last_active = self._loop.now
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
        if self._loop is not None:
            writer = functools.partial(self._write, peer) if peer.outgoing else None
            self._loop.set_writer(peer.sock.fileno(), writer)

    def _close_idle(self) -> None:
        """Close the connections idle for `idle_timeout`; wait for the next one to be."""
        self._idle_timer = None
        if self._loop is None:
            return
        now = self._loop.now
        for peer in [p for p in self._peers.values() if p.last_active <= now - self.idle_timeout]:
            self._close(peer, "idle")
        if self._peers:
            # Activity only moves a connection's deadline later: the oldest
            # one is the first that can expire.
            oldest = min(peer.last_active for peer in self._peers.values())
            delay = max(0.0, oldest + self.idle_timeout - now)
            self._idle_timer = self._loop.call_later(delay, self._close_idle)

    def _close_unauthenticated(self) -> None:
        """Close the connections that have not authenticated within `handshake_timeout`."""
        self._handshake_timer = None
        if self._loop is None:
            return
        now = self._loop.now
        waiting = [p for p in self._peers.values() if not p.connection.authenticated]
        for peer in waiting:
            if peer.opened <= now - self.handshake_timeout:
                log.warning(
                    "messenger: %s sent no authenticated request within %g s; closing",
                    peer.address,
                    self.handshake_timeout,
                )
                self._close(peer, "handshake")
        pending = [p.opened for p in self._peers.values() if not p.connection.authenticated]
        if pending:
            delay = max(0.0, min(pending) + self.handshake_timeout - now)
            self._handshake_timer = self._loop.call_later(delay, self._close_unauthenticated)

    def _close(self, peer: _Peer, reason: str) -> None:
        # Counted before the peer leaves the table: a reader on another thread
        # that sees the connection gone also sees why it went.
        self._counters[f"connections.closed.{reason}"] += 1
        fd = peer.sock.fileno()
        self._peers.pop(fd, None)
        if self._loop is not None:
            self._loop.forget(fd)
        peer.sock.close()

    def _shutdown(self) -> None:
        for peer in list(self._peers.values()):
            self._close(peer, "stop")
        for timer in (self._idle_timer, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._handshake_timer = None
        if self._listener is not None:
            if self._loop is not None:
                self._loop.forget(self._listener.fileno())
            self._listener.close()
            self._listener = None

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
