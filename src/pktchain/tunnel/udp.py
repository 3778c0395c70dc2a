"""The UDP transport (``--transport udp``): one IP packet per datagram, no framing.

A datagram carries exactly one packet, so no length is needed and nothing can
break a stream: a datagram longer than the MTU is dropped and counted, and
the peer stays. An empty datagram is a keepalive: a client sends one at
start and every `KEEPALIVE_INTERVAL` seconds, so that the server knows where
it is before it has traffic (and a NAT on the way keeps its mapping).

The server knows its clients by their UDP address, and forgets one that has
been silent for `PEER_IDLE` seconds. There is no handshake on UDP: anyone who
can send to the port is a client, which is why the command line accepts UDP
only with --no-auth (docs/tunnel.md). The outer datagrams may be fragmented
(`IP_PMTUDISC_DONT`): a full-MTU inner packet plus 28 bytes of UDP/IP does
not fit an underlay of the same MTU. A smaller --mtu avoids fragments.
"""

from __future__ import annotations

import logging
import socket

from pktchain.eventloop import EventLoop, Timer
from pktchain.linux.sockets import udp_socket
from pktchain.tunnel.counters import Count, DropReason
from pktchain.tunnel.stream import TUN_BATCH, End, peer_name
from pktchain.tunnel.switch import Local, Switch

__all__ = ["KEEPALIVE_INTERVAL", "MAX_PEERS", "PEER_IDLE", "UdpClient", "UdpServer"]

log = logging.getLogger("pktchain.tunnel")

KEEPALIVE_INTERVAL = 10.0
PEER_IDLE = 60.0
MAX_PEERS = 1024

Address = tuple[str, int]


class UdpServer(End):
    """A server end on UDP: one socket, its peers by address, its TUN and its switch."""

    def __init__(
        self,
        loop: EventLoop,
        tun_fd: int,
        label: str,
        *,
        listen: tuple[str, int],
        family: socket.AddressFamily,
        mtu: int,
        own: bytes,
    ) -> None:
        super().__init__(loop, tun_fd, label)
        self.mtu = mtu
        self.switch: Switch[Address] = Switch(self.counters, own=(own,))
        self.last_seen: dict[Address, float] = {}
        self.sock = udp_socket(family, bind=listen, fragment=True)
        loop.set_reader(self.sock.fileno(), self._on_datagram)
        loop.set_reader(tun_fd, self._on_tun)
        self._timer: Timer = loop.call_later(PEER_IDLE / 2, self._expire)
        log.info("%s: listening on %s (UDP)", label, peer_name(listen))

    def _on_datagram(self) -> None:
        now = self.loop.now
        counters = self.counters
        for _ in range(TUN_BATCH):
            try:
                data, raw_address = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                # An ICMP error queued for an earlier send; the next datagram may be fine.
                log.debug("%s: receive: %s", self.label, exc.strerror)
                continue
            address: Address = (raw_address[0], raw_address[1])
            if address not in self.last_seen:
                if len(self.last_seen) >= MAX_PEERS:
                    counters.drops[DropReason.TOO_MANY_PEERS] += 1
                    continue
                self.switch.peer_up(address)
                log.info("%s: new peer %s", self.label, peer_name(address))
            self.last_seen[address] = now
            if not data:
                counters.counts[Count.KEEPALIVES] += 1
                continue
            if len(data) > self.mtu:
                counters.drops[DropReason.OVERSIZED] += 1
                log.debug("%s: %s: %d-byte datagram dropped", self.label, address, len(data))
                continue
            counters.counts[Count.WIRE_RX_PACKETS] += 1
            counters.counts[Count.WIRE_RX_BYTES] += len(data)
            target, out = self.switch.from_peer(data, address)
            if target is Local.TUN:
                self.write_tun(out)
            elif target is not None:
                self._send(out, target)

    def _on_tun(self) -> None:
        from_tun = self.switch.from_tun
        for packet in self.read_tun():
            target = from_tun(packet)
            if target is not None:
                self._send(packet, target)

    def _send(self, packet: bytes | bytearray, address: Address) -> None:
        try:
            self.sock.sendto(packet, address)
        except OSError:
            self.counters.drops[DropReason.SEND_FAILED] += 1
            return
        self.counters.counts[Count.WIRE_TX_PACKETS] += 1
        self.counters.counts[Count.WIRE_TX_BYTES] += len(packet)

    def _expire(self) -> None:
        now = self.loop.now
        for address, seen in list(self.last_seen.items()):
            if now - seen > PEER_IDLE:
                del self.last_seen[address]
                self.switch.peer_down(address)
                log.info(
                    "%s: peer %s silent for %g s, forgotten",
                    self.label,
                    peer_name(address),
                    PEER_IDLE,
                )
        self._timer = self.loop.call_later(PEER_IDLE / 2, self._expire)

    def close(self) -> None:
        self._timer.cancel()
        self.loop.forget(self.sock.fileno())
        self.sock.close()
        super().close()


class UdpClient(End):
    """A client end on UDP: a socket connected to the server, and keepalives."""

    def __init__(
        self,
        loop: EventLoop,
        tun_fd: int,
        label: str,
        *,
        remote: tuple[str, int],
        family: socket.AddressFamily,
        mtu: int,
    ) -> None:
        super().__init__(loop, tun_fd, label)
        self.mtu = mtu
        # Connected: the kernel passes up only the server's datagrams.
        self.sock = udp_socket(family, connect=remote, fragment=True)
        loop.set_reader(self.sock.fileno(), self._on_datagram)
        loop.set_reader(tun_fd, self._on_tun)
        self._timer: Timer | None = None
        self._keepalive()
        log.info("%s: sending to %s (UDP)", label, peer_name(remote))

    def _keepalive(self) -> None:
        try:
            self.sock.send(b"")
        except OSError as exc:
            log.debug("%s: keepalive: %s", self.label, exc.strerror)
        self._timer = self.loop.call_later(KEEPALIVE_INTERVAL, self._keepalive)

    def _on_datagram(self) -> None:
        counters = self.counters
        for _ in range(TUN_BATCH):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                # ECONNREFUSED: the server's port was closed (it is restarting).
                log.debug("%s: receive: %s", self.label, exc.strerror)
                continue
            if not data:
                counters.counts[Count.KEEPALIVES] += 1
                continue
            if len(data) > self.mtu:
                counters.drops[DropReason.OVERSIZED] += 1
                continue
            counters.counts[Count.WIRE_RX_PACKETS] += 1
            counters.counts[Count.WIRE_RX_BYTES] += len(data)
            self.write_tun(data)

    def _on_tun(self) -> None:
        counters = self.counters
        for packet in self.read_tun():
            try:
                self.sock.send(packet)
            except OSError:
                counters.drops[DropReason.SEND_FAILED] += 1
                continue
            counters.counts[Count.WIRE_TX_PACKETS] += 1
            counters.counts[Count.WIRE_TX_BYTES] += len(packet)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.loop.forget(self.sock.fileno())
        self.sock.close()
        super().close()
