"""The client end over TCP: one connection to the server, made again when lost.

The client connects to ``--remoteip`` on ``--outport`` and runs a `Session`
(the handshake, unless --no-auth, then frames). When the connection fails or
ends, for any reason, it tries again after a delay that starts at
`Backoff.initial` and doubles up to `Backoff.maximum`, and starts over from
the shortest once a session opens: a restarted server is found again within
seconds, and an absent one is not hammered. While there is no open session,
packets from the TUN are dropped (counted as not connected), as a link that is
down would drop them.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from dataclasses import dataclass, field

from pktchain.eventloop import EventLoop, Timer
from pktchain.tunnel.auth import Role
from pktchain.tunnel.counters import Count, DropReason
from pktchain.tunnel.session import HANDSHAKE_TIMEOUT, Session
from pktchain.tunnel.stream import End, StreamConnection, configure_stream_socket, peer_name
from pktchain.tunnel.wire import CloseReason, Fault

__all__ = ["Backoff", "TcpClient"]

log = logging.getLogger("pktchain.tunnel")


@dataclass
class Backoff:
    """Delays between connection attempts: `initial`, doubling, at most `maximum`."""

    initial: float = 0.1
    maximum: float = 5.0
    _next: float = field(init=False, default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(
                f"backoff needs 0 < initial <= maximum, not {self.initial}, {self.maximum}"
            )
        self._next = self.initial

    def next(self) -> float:
        """The delay before the next attempt (and double the one after it)."""
        delay = self._next
        self._next = min(delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class TcpClient(End):
    """A client end: its TUN and, most of the time, one connection to the server."""

    def __init__(
        self,
        loop: EventLoop,
        tun_fd: int,
        label: str,
        *,
        remote: tuple[str, int],
        family: socket.AddressFamily,
        key: bytes | None,
        mtu: int,
        own: bytes,
        backoff: Backoff | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(loop, tun_fd, label)
        self.remote = remote
        self.server = f"server {peer_name(remote)}"
        self.family = family
        self.key = key
        self.mtu = mtu
        self.own = own
        self.backoff = backoff or Backoff()
        self.handshake_timeout = handshake_timeout
        self.connection: StreamConnection | None = None
        self._connecting: socket.socket | None = None
        self._timer: Timer | None = None
        self._failing = False  # the last attempt failed: later failures are logged quietly
        self._closing = False
        loop.set_reader(tun_fd, self._on_tun)
        self._connect()

    # -- connecting ------------------------------------------------------------
    def _connect(self) -> None:
        self._timer = None
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors or memory: a later attempt may do
            self._retry(exc.strerror or str(exc))
            return
        configure_stream_socket(sock)
        status = sock.connect_ex(self.remote)
        if status not in (0, errno.EINPROGRESS):
            sock.close()
            self._retry(os.strerror(status))
            return
        self._connecting = sock
        self.loop.set_writer(sock.fileno(), self._on_connect)
        self._timer = self.loop.call_later(self.handshake_timeout, self._on_connect_timeout)

    def _on_connect(self) -> None:
        sock = self._take_connecting()
        status = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if status:
            sock.close()
            self._retry(os.strerror(status))
            return
        session = Session(
            Role.CLIENT,
            key=self.key,
            mtu=self.mtu,
            now=self.loop.now,
            addresses=(self.own,),
            timeout=self.handshake_timeout,
        )
        self.connection = StreamConnection(self.loop, sock, session, self, self.server)
        self.counters.counts[Count.CONNECTIONS] += 1
        log.info("%s: connected to %s", self.label, self.server)
        self.connection.start()

    def _on_connect_timeout(self) -> None:
        self._timer = None
        self._take_connecting().close()
        self._retry(f"no answer within {self.handshake_timeout:g} s")

    def _take_connecting(self) -> socket.socket:
        sock = self._connecting
        if sock is None:  # pragma: no cover - both callbacks are cancelled together
            raise RuntimeError("no connection attempt in progress")
        self._connecting = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.loop.forget(sock.fileno())
        return sock

    def _retry(self, why: str) -> None:
        self.counters.closes[CloseReason.SOCKET_ERROR] += 1
        delay = self.backoff.next()
        level = logging.INFO if self._failing else logging.WARNING
        self._failing = True
        log.log(
            level,
            "%s: cannot connect to %s: %s; again in %.1f s",
            self.label,
            self.server,
            why,
            delay,
        )
        self._timer = self.loop.call_later(delay, self._connect)

    # -- the connection ----------------------------------------------------------
    def connection_opened(self, connection: StreamConnection) -> None:
        self.backoff.reset()
        self._failing = False
        self.counters.counts[Count.AUTHENTICATED] += 1
        how = "authenticated" if self.key is not None else "without authentication (--no-auth)"
        log.info("%s: tunnel to %s is up, %s", self.label, self.server, how)

    def connection_packets(self, connection: StreamConnection, packets: list[bytes]) -> None:
        for packet in packets:
            self.write_tun(packet)

    def connection_closed(self, connection: StreamConnection, fault: Fault) -> None:
        self.connection = None
        if self._closing:
            return
        delay = self.backoff.next()
        log.info("%s: connecting again in %.1f s", self.label, delay)
        self._timer = self.loop.call_later(delay, self._connect)

    def _on_tun(self) -> None:
        packets = self.read_tun()
        connection = self.connection
        if connection is None or not connection.session.open:
            self.counters.drops[DropReason.NOT_CONNECTED] += len(packets)
            return
        for packet in packets:
            connection.queue(packet)
        connection.flush()

    def close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._connecting is not None:
            self._take_connecting().close()
        if self.connection is not None:
            self.connection.close(Fault(CloseReason.SHUTDOWN, "closed: the client is exiting"))
        super().close()
