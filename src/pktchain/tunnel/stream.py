"""What both ends share: the TUN side of an end, and one TCP connection's I/O.

`End` reads packets from its TUN device in batches and writes packets to it,
counting both and every failure. `StreamConnection` moves one TCP
connection's bytes through its `Session`: received bytes in, packets and
handshake replies out, with frames queued and sent in one `send` per batch.
When the socket takes only part of the queue, the rest waits for it to be
writable; past `MAX_PENDING` queued bytes, packets are dropped (counted as
congested) rather than buffered without bound, as a router's full queue
would drop them.

Nothing here raises past the loop: a socket error, a bad frame or a failed
handshake closes that connection, logged with its reason and counted.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Protocol

from pktchain.eventloop import EventLoop, Timer
from pktchain.linux.sockets import Keepalive, tune_stream
from pktchain.tunnel.counters import Count, Counters, DropReason
from pktchain.tunnel.session import Session
from pktchain.tunnel.wire import HEADER, CloseReason, Fault

__all__ = [
    "MAX_PENDING",
    "TUN_BATCH",
    "End",
    "StreamConnection",
    "StreamOwner",
    "configure_stream_socket",
    "peer_name",
]

log = logging.getLogger("pktchain.tunnel")

TUN_BATCH = 64
"""Packets read from a TUN device per wake-up, so that other descriptors get their turn."""
RECV_SIZE = 256 * 1024
MAX_PENDING = 1024 * 1024
"""Bytes queued on a connection beyond which packets to it are dropped."""

KEEPALIVE = Keepalive(idle=15, interval=5, count=3)
"""A client notices a server that vanished without closing (a reboot, a cut
link) after about 15 + 3 * 5 seconds, then reconnects."""

# Closes that are part of normal life; the others are logged as warnings.
_QUIET = frozenset((CloseReason.PEER_CLOSED, CloseReason.SHUTDOWN))


def peer_name(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def configure_stream_socket(sock: socket.socket) -> None:
    """Set up a tunnel connection's socket: non-blocking, no Nagle delay (frames
    are batched here, per wake-up) and `KEEPALIVE`."""
    tune_stream(sock, KEEPALIVE)


class End:
    """The TUN side of one tunnel end (server or client, over TCP or UDP)."""

    def __init__(self, loop: EventLoop, tun_fd: int, label: str) -> None:
        self.loop = loop
        self.tun_fd = tun_fd
        self.label = label
        self.counters = Counters()

    def read_tun(self) -> list[bytes]:
        """Up to `TUN_BATCH` packets waiting on the TUN device."""
        packets: list[bytes] = []
        counts = self.counters.counts
        for _ in range(TUN_BATCH):
            try:
                packet = os.read(self.tun_fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                # Not expected from a TUN device; say so and try again on the next wake-up.
                log.warning("%s: reading the TUN device failed: %s", self.label, exc.strerror)
                break
            counts[Count.TUN_RX_PACKETS] += 1
            counts[Count.TUN_RX_BYTES] += len(packet)
            packets.append(packet)
        return packets

    def write_tun(self, packet: bytes | bytearray) -> None:
        try:
            os.write(self.tun_fd, packet)
        except OSError as exc:
            # EINVAL for a packet the kernel cannot parse, EIO while the device is down.
            self.counters.drops[DropReason.TUN_WRITE_FAILED] += 1
            log.debug("%s: TUN write of %d bytes failed: %s", self.label, len(packet), exc)
            return
        self.counters.counts[Count.TUN_TX_PACKETS] += 1
        self.counters.counts[Count.TUN_TX_BYTES] += len(packet)

    def close(self) -> None:
        self.loop.forget(self.tun_fd)


class StreamOwner(Protocol):
    """The end a connection reports to."""

    label: str
    counters: Counters

    def connection_opened(self, connection: StreamConnection) -> None: ...

    def connection_packets(self, connection: StreamConnection, packets: list[bytes]) -> None: ...

    def connection_closed(self, connection: StreamConnection, fault: Fault) -> None: ...


class StreamConnection:
    """One connected TCP socket and its session, driven by the loop."""

    def __init__(
        self, loop: EventLoop, sock: socket.socket, session: Session, owner: StreamOwner, peer: str
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.owner = owner
        self.peer = peer
        self.closed = False
        self._out = bytearray()
        self._waiting = False  # for the socket to be writable
        self._timer: Timer | None = None
        self._counters = owner.counters

    def __repr__(self) -> str:
        return f"<StreamConnection {self.peer}>"

    def start(self) -> None:
        """Begin: watch the socket, send what the session starts with."""
        self.loop.set_reader(self.fd, self._on_readable)
        deadline = self.session.deadline()
        if deadline is not None:
            self._timer = self.loop.call_later(deadline - self.loop.now, self._on_timer)
        first = self.session.start()
        if first:
            self._out += first
            self.flush()
        if self.session.open and not self.closed:
            self.owner.connection_opened(self)

    def queue(self, packet: bytes | bytearray) -> None:
        """Queue one packet as a frame; `flush` sends what is queued."""
        if self.closed or not self.session.open:
            self._counters.drops[DropReason.NOT_CONNECTED] += 1
            return
        if len(self._out) > MAX_PENDING:
            self._counters.drops[DropReason.CONGESTED] += 1
            return
        self._out += HEADER.pack(len(packet))
        self._out += packet
        self._counters.counts[Count.WIRE_TX_PACKETS] += 1
        self._counters.counts[Count.WIRE_TX_BYTES] += len(packet)

    def flush(self) -> None:
        if self.closed or self._waiting or not self._out:
            return
        self._send()

    def close(self, fault: Fault) -> None:
        """Close the socket (once), log why, count it, tell the owner."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.loop.forget(self.fd)
        self.sock.close()
        self._out.clear()
        self._counters.closes[fault.reason] += 1
        level = logging.INFO if fault.reason in _QUIET else logging.WARNING
        log.log(level, "%s: %s: %s", self.owner.label, self.peer, fault.detail)
        self.owner.connection_closed(self, fault)

    def _send(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.close(_socket_fault(exc))
            return
        del self._out[:sent]
        waiting = bool(self._out)
        if waiting != self._waiting:
            self._waiting = waiting
            self.loop.set_writer(self.fd, self._send if waiting else None)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.close(_socket_fault(exc))
            return
        if not data:
            self.close(self.session.end_of_stream())
            return
        received = self.session.receive(data)
        if received.send:
            self._out += received.send
            self.flush()
        if received.opened and not self.closed:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.owner.connection_opened(self)
        if received.packets:
            counts = self._counters.counts
            counts[Count.WIRE_RX_PACKETS] += len(received.packets)
            counts[Count.WIRE_RX_BYTES] += sum(map(len, received.packets))
            self.owner.connection_packets(self, received.packets)
        if received.fault is not None:
            self.close(received.fault)

    def _on_timer(self) -> None:
        self._timer = None
        fault = self.session.on_timer(self.loop.now)
        if fault is not None:
            self.close(fault)


def _socket_fault(exc: OSError) -> Fault:
    name = errno.errorcode.get(exc.errno or 0, "")
    return Fault(CloseReason.SOCKET_ERROR, f"{exc.strerror or exc} ({name})" if name else str(exc))
