"""The server end over TCP: many clients, routed between by inner address.

The server listens on ``--inport`` (the original's default, 55556) and keeps
every client it accepts; each connection runs a `Session` (the handshake,
unless --no-auth, then frames). Packets from clients and from the server's
TUN go where `Switch` says. Connections are bounded in number
(``max_connections``, default `MAX_CONNECTIONS`: the next one is closed at
once, counted as ``too-many-connections`` and logged) and each must finish
its handshake within ``handshake_timeout`` seconds (default
`pktchain.tunnel.session.HANDSHAKE_TIMEOUT`), or it is closed and counted as
``handshake-timeout``.
"""

from __future__ import annotations

import logging
import socket

from pktchain.eventloop import EventLoop
from pktchain.linux.sockets import tcp_listener
from pktchain.tunnel.auth import Role
from pktchain.tunnel.counters import Count
from pktchain.tunnel.session import HANDSHAKE_TIMEOUT, Session
from pktchain.tunnel.stream import (
    End,
    StreamConnection,
    configure_stream_socket,
    peer_name,
)
from pktchain.tunnel.switch import Local, Switch
from pktchain.tunnel.wire import CloseReason, Fault

__all__ = ["MAX_CONNECTIONS", "TcpServer"]

log = logging.getLogger("pktchain.tunnel")

MAX_CONNECTIONS = 1024
"""Connections a server end holds at once unless told otherwise."""
ACCEPT_BATCH = 16
LISTEN_BACKLOG = 128


class TcpServer(End):
    """A server end: a listening socket, its connections, its TUN and its switch."""

    def __init__(
        self,
        loop: EventLoop,
        tun_fd: int,
        label: str,
        *,
        listen: tuple[str, int],
        family: socket.AddressFamily,
        key: bytes | None,
        mtu: int,
        own: bytes,
        max_connections: int = MAX_CONNECTIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(loop, tun_fd, label)
        self.key = key
        self.mtu = mtu
        self.own = own
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.switch: Switch[StreamConnection] = Switch(self.counters, own=(own,))
        self.connections: set[StreamConnection] = set()
        self.listener = tcp_listener(listen, LISTEN_BACKLOG, family)
        loop.set_reader(self.listener.fileno(), self._on_accept)
        loop.set_reader(tun_fd, self._on_tun)
        log.info("%s: listening on %s", label, peer_name(listen))

    def _on_accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                # EMFILE and the like: say so; the client will try again.
                log.warning("%s: accept failed: %s", self.label, exc.strerror)
                return
            peer = peer_name(address)
            if len(self.connections) >= self.max_connections:
                sock.close()
                self.counters.closes[CloseReason.TOO_MANY_CONNECTIONS] += 1
                log.warning(
                    "%s: %s: refused, %d connections already",
                    self.label,
                    peer,
                    self.max_connections,
                )
                continue
            configure_stream_socket(sock)
            session = Session(
                Role.SERVER,
                key=self.key,
                mtu=self.mtu,
                now=self.loop.now,
                addresses=(self.own,),
                timeout=self.handshake_timeout,
            )
            connection = StreamConnection(self.loop, sock, session, self, f"client {peer}")
            self.connections.add(connection)
            self.counters.counts[Count.CONNECTIONS] += 1
            log.info("%s: %s connected", self.label, connection.peer)
            connection.start()

    def connection_opened(self, connection: StreamConnection) -> None:
        self.counters.counts[Count.AUTHENTICATED] += 1
        announced = connection.session.peer_addresses
        self.switch.peer_up(connection, announced)
        how = "authenticated" if self.key is not None else "without authentication (--no-auth)"
        log.info("%s: %s is up, %s", self.label, connection.peer, how)

    def connection_packets(self, connection: StreamConnection, packets: list[bytes]) -> None:
        touched: set[StreamConnection] = set()
        from_peer = self.switch.from_peer
        for packet in packets:
            target, out = from_peer(packet, connection)
            if target is Local.TUN:
                self.write_tun(out)
            elif target is not None:
                target.queue(out)
                touched.add(target)
        for target in touched:
            target.flush()

    def connection_closed(self, connection: StreamConnection, fault: Fault) -> None:
        self.connections.discard(connection)
        self.switch.peer_down(connection)

    def _on_tun(self) -> None:
        touched: set[StreamConnection] = set()
        from_tun = self.switch.from_tun
        for packet in self.read_tun():
            target = from_tun(packet)
            if target is not None:
                target.queue(packet)
                touched.add(target)
        for target in touched:
            target.flush()

    def close(self) -> None:
        for connection in list(self.connections):
            connection.close(Fault(CloseReason.SHUTDOWN, "closed: the server is exiting"))
        self.loop.forget(self.listener.fileno())
        self.listener.close()
        super().close()
