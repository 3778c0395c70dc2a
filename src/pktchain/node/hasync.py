"""The router state sync over TCP, on the node's event loop (docs/ha-sync.md).

:class:`SyncLink` runs one side of the sync protocol (a
:class:`~pktchain.functions.router.sync.SyncSender` on the master, a
:class:`~pktchain.functions.router.sync.SyncReceiver` on the backup) over one
TCP connection at a time, and only moves bytes: the protocol decides
everything else. Either side may listen or connect; the usual pair is the
master listening and the backup connecting::

    sender = SyncSender(router, secret)
    SyncLink(sender, loop=loop, listen=("10.9.0.1", SYNC_PORT)).start()

    receiver = SyncReceiver(router, secret)
    SyncLink(receiver, loop=loop, connect=("10.9.0.1", SYNC_PORT)).start()

Non-blocking throughout and driven by the loop: a readable socket hands its
bytes to ``on_bytes``, what the protocol queues is written (the rest when the
socket is writable again), and one loop timer follows the protocol's
``next_deadline``. A connecting link connects again after a failure or a
closed connection, after `Backoff` delays (0.1 s doubling to 5 s, back to
0.1 s once the peer has spoken); a listening link takes the newest connection,
closing the one before (a restarted peer reconnects at once; the protocol
refuses anything not authenticated, so a stranger can interrupt but not
inject). The connection is closed when the protocol asks (:attr:`wants_close`:
an unframeable stream or a silent peer), and a new one starts a new stream
with a whole snapshot.

Everything here runs in the loop's thread, where the router lives, as the
messenger's server does; ``now`` is the loop's clock, the one the router gets.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import socket
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from pktchain.eventloop import EventLoop, Timer
from pktchain.functions.router.sync import SyncEndpoint
from pktchain.functions.router.sync.wire import check_secret
from pktchain.linux.sockets import Keepalive, address_family, tcp_listener, tune_stream
from pktchain.logs import event
from pktchain.tunnel.client import Backoff

__all__ = [
    "SECRET_FILE_ENV",
    "SYNC_PORT",
    "Backoff",
    "LinkClosed",
    "SyncLink",
    "read_secret_file",
]

log = logging.getLogger(__name__)

SYNC_PORT = 7791
"""The default TCP port of the state sync (the messenger's is 7790)."""

SECRET_FILE_ENV = "PKTCHAIN_HASYNC_SECRET_FILE"
"""Where a command line takes the secret file from when none is given."""

_RECV_SIZE = 256 * 1024
_KEEPALIVE = Keepalive(idle=2, interval=1, count=3)


class LinkClosed(StrEnum):
    """Why a sync connection closed (counted as ``connections.closed.<value>``)."""

    BY_PEER = "by-peer"
    """The other end closed it: its process stopped, or stopped syncing."""
    RESET = "reset"
    """The other end's kernel reset it: the process holding it is gone."""
    ERROR = "error"
    """Another socket error (an unreachable peer, a timeout)."""
    PROTOCOL = "protocol"
    """The protocol asked: an unframeable stream, or a peer silent for its timeout."""
    UNREAD = "unread"
    """The peer did not read what was written (``max_pending``)."""
    REPLACED = "replaced"
    """A newer connection came to the listening side."""
    STOP = "stop"
    """:meth:`SyncLink.stop`."""


def read_secret_file(path: str | os.PathLike[str]) -> bytes:
    """The shared secret in ``path`` (surrounding whitespace stripped), at least 16 bytes.

    Raises ValueError naming the file and what is wrong."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"secret file {path}: {exc.strerror}") from exc
    try:
        return check_secret(secret)
    except ValueError as exc:
        raise ValueError(f"secret file {path}: {exc}") from None


def _address(sock: socket.socket) -> str:
    """``IP:PORT`` of the other end of a connected socket ("" if it is gone already)."""
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SyncLink:
    """One sync endpoint on one TCP connection at a time: ``listen`` or ``connect``.

    Counters: ``connections.opened``, ``connections.closed.<LinkClosed>``,
    ``connect.failed``, bytes in and out. ``max_pending`` bounds the bytes
    written but not yet taken by the kernel: past it the peer is not reading
    and the connection is closed. ``on_close`` is called (in the loop's thread)
    after each connection closed, with why: a backup may take
    :attr:`LinkClosed.BY_PEER` from its master as a sign that the master
    stopped.
    """

    def __init__(
        self,
        endpoint: SyncEndpoint,
        *,
        loop: EventLoop,
        listen: tuple[str, int] | None = None,
        connect: tuple[str, int] | None = None,
        backoff: Backoff | None = None,
        connect_timeout: float = 2.0,
        keepalive: Keepalive | None = _KEEPALIVE,
        max_pending: int = 64 * 1024 * 1024,
        on_close: Callable[[LinkClosed], None] | None = None,
    ) -> None:
        if (listen is None) == (connect is None):
            raise ValueError("listen, connect: give exactly one")
        for name, address in (("listen", listen), ("connect", connect)):
            if address is not None and not 0 <= address[1] <= 0xFFFF:
                raise ValueError(f"{name}: port {address[1]} is not in 0..65535")
        if connect is not None and connect[1] == 0:
            raise ValueError("connect: port 0")
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout: {connect_timeout!r} is not positive")
        self.endpoint = endpoint
        self.listen = listen
        self.connect = connect
        self.backoff = backoff or Backoff()
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.max_pending = max_pending
        self.on_close = on_close
        self._loop = loop
        self._counters: collections.Counter[str] = collections.Counter()
        self._listener: socket.socket | None = None
        self._dialing: socket.socket | None = None
        self._sock: socket.socket | None = None
        self._out = bytearray()
        self._heard = False
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        self._retry: Timer | None = None
        self._running = False
        self._peer = ""
        """The address of the other end of the connection open (or last open)."""

    @property
    def _side(self) -> str:
        return "listen" if self.listen is not None else "connect"

    # -- public --------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The port listened on (after :meth:`start`; port 0 picks a free one)."""
        return None if self._listener is None else int(self._listener.getsockname()[1])

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def start(self) -> None:
        """Listen, or start connecting; from the loop's thread or before it runs."""
        if self._running:
            raise RuntimeError("sync link already started")
        self._running = True
        if self.listen is not None:
            listener = tcp_listener(self.listen, 4)
            self._listener = listener
            self._loop.set_reader(listener.fileno(), self._accept)
            log.info("state sync listening on %s:%d", self.listen[0], self.port)
        else:
            self._dial()

    def stop(self) -> None:
        """Close the connection, any attempt and the listening socket."""
        self._running = False
        for timer in (self._retry, self._timer):
            if timer is not None:
                timer.cancel()
        self._retry = self._timer = None
        self._timer_at = None
        if self._sock is not None:
            self._close(LinkClosed.STOP)
        if self._dialing is not None:
            self._forget(self._dialing)
            self._dialing = None
        if self._listener is not None:
            self._forget(self._listener)
            self._listener = None

    # -- connections -----------------------------------------------------------------

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        while True:
            try:
                sock, address = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. EMFILE: keep the connection we have
                log.warning("state sync: accept failed: %s", exc)
                return
            if self._sock is not None:
                log.info("state sync: a new connection from %s replaces the one open", address)
                self._close(LinkClosed.REPLACED)
            self._open(sock)

    def _dial(self) -> None:
        self._retry = None
        if not self._running or self.connect is None:
            return
        try:
            sock = socket.socket(address_family(self.connect[0]), socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors: a later attempt may do
            self._failed(exc.strerror or str(exc))
            return
        sock.setblocking(False)
        status = sock.connect_ex(self.connect)
        if status not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed(os.strerror(status))
            return
        self._dialing = sock
        self._loop.set_writer(sock.fileno(), self._dialed)
        self._retry = self._loop.call_later(self.connect_timeout, self._dial_timeout)

    def _dialed(self) -> None:
        sock = self._dialing
        if sock is None:
            return
        self._dialing = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._loop.forget(sock.fileno())
        status = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if status:
            sock.close()
            self._failed(os.strerror(status))
            return
        self._open(sock)

    def _dial_timeout(self) -> None:
        self._retry = None
        if self._dialing is not None:
            self._forget(self._dialing)
            self._dialing = None
        self._failed(f"no answer within {self.connect_timeout:g} s")

    def _failed(self, why: str) -> None:
        self._counters["connect.failed"] += 1
        delay = self.backoff.next()
        log.info("state sync: cannot connect to %s: %s; again in %.1f s", self.connect, why, delay)
        self._retry = self._loop.call_later(delay, self._dial)

    def _open(self, sock: socket.socket) -> None:
        try:
            tune_stream(sock, self.keepalive)
        except OSError as exc:
            log.warning("state sync: cannot set up the connection: %s", exc)
            sock.close()
            if self.connect is not None:
                self._failed(exc.strerror or str(exc))
            return
        self._sock = sock
        self._out.clear()
        self._heard = False
        self._counters["connections.opened"] += 1
        peer = _address(sock)
        self._peer = peer
        log.info(
            "state sync: connected to %s",
            peer,
            extra=event("ha_sync_connected", peer=peer, side=self._side),
        )
        self._loop.set_reader(sock.fileno(), self._read)
        self.endpoint.connection_made(self._loop.now)
        self._service()

    def _close(self, reason: LinkClosed) -> None:
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        self._counters[f"connections.closed.{reason.value}"] += 1
        log.log(
            logging.INFO if reason in (LinkClosed.STOP, LinkClosed.REPLACED) else logging.WARNING,
            "state sync: connection to %s closed (%s)",
            self._peer,
            reason.value,
            extra=event("ha_sync_lost", peer=self._peer, side=self._side, reason=reason.value),
        )
        self._forget(sock)
        self._out.clear()
        self.endpoint.connection_lost(self._loop.now)
        self._arm()
        if self._running and self.connect is not None and self._retry is None:
            delay = self.backoff.next()
            self._retry = self._loop.call_later(delay, self._dial)
        if self.on_close is not None:
            self.on_close(reason)

    def _forget(self, sock: socket.socket) -> None:
        self._loop.forget(sock.fileno())
        sock.close()

    # -- bytes -----------------------------------------------------------------------

    def _read(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except ConnectionResetError:
            self._close(LinkClosed.RESET)
            return
        except OSError as exc:
            log.info("state sync: %s", exc)
            self._close(LinkClosed.ERROR)
            return
        if not data:
            self._close(LinkClosed.BY_PEER)
            return
        self._counters["bytes.in"] += len(data)
        if not self._heard:
            self._heard = True
            self.backoff.reset()
        self.endpoint.on_bytes(data, self._loop.now)
        self._service()

    def _write(self) -> None:
        sock = self._sock
        if sock is None:
            return
        if self._out:
            try:
                sent = sock.send(self._out)
            except BlockingIOError:
                sent = 0
            except (ConnectionResetError, BrokenPipeError):
                self._close(LinkClosed.RESET)
                return
            except OSError as exc:
                log.info("state sync: %s", exc)
                self._close(LinkClosed.ERROR)
                return
            del self._out[:sent]
            self._counters["bytes.out"] += sent
        self._loop.set_writer(sock.fileno(), self._write if self._out else None)
        if not self._out and self.endpoint.wants_close:
            self._close(LinkClosed.PROTOCOL)

    def _service(self) -> None:
        """Write what the endpoint queued, close if it asks, follow its deadline."""
        if self._sock is None:
            return
        self._out += self.endpoint.data_to_send()
        if len(self._out) > self.max_pending:
            log.warning("state sync: the peer does not read; closing")
            self._close(LinkClosed.UNREAD)
            return
        self._write()
        self._arm()

    def _arm(self) -> None:
        deadline = self.endpoint.next_deadline() if self._sock is not None else None
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_later(max(0.0, deadline - self._loop.now), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._sock is None:
            return
        self.endpoint.on_timer(self._loop.now)
        self._service()
