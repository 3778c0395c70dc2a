"""How pktchain sets up its TCP and UDP sockets: listeners, streams, datagrams.

The servers (the messenger, the tunnel's ends) all listen the same way
(:func:`tcp_listener`); a TCP connection that carries packets is set up once
(:func:`tune_stream`: no Nagle delay, TCP keepalive); a UDP socket that
carries whole packets may have its datagrams fragmented on the way
(:func:`udp_socket`). Every socket made here is non-blocking, for an event
loop, and is closed again if its setup fails: the ``OSError`` propagates with
its errno.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Keepalive",
    "address_family",
    "is_loopback",
    "receive_buffer",
    "tcp_listener",
    "tune_stream",
    "udp_drops",
    "udp_socket",
]

Address = tuple[str, int]

# linux/in.h and linux/in6.h: let the kernel fragment what is too large for
# the path, instead of failing the send with EMSGSIZE.
IP_MTU_DISCOVER = 10
IPV6_MTU_DISCOVER = 23
PMTUDISC_DONT = 0
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # asm-generic/socket.h


@dataclass(frozen=True)
class Keepalive:
    """TCP keepalive (tcp(7)): after `idle` silent seconds, a probe every `interval`
    seconds; `count` unanswered probes reset the connection."""

    idle: int
    interval: int
    count: int


def address_family(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 address (it has a colon), AF_INET otherwise."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def is_loopback(host: str) -> bool:
    """Whether `host` (an address, or ``localhost``) is on the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tcp_listener(
    address: Address, backlog: int, family: socket.AddressFamily | None = None
) -> socket.socket:
    """A non-blocking TCP socket listening on `address` (port 0: any free port).

    ``SO_REUSEADDR``: a restarted server binds again at once, whatever
    TIME_WAIT its connections left. The family is the address's unless given.
    """
    sock = socket.socket(family or address_family(address[0]), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def tune_stream(sock: socket.socket, keepalive: Keepalive | None = None) -> None:
    """Make a TCP socket that carries packets non-blocking, without Nagle's delay
    (every segment holds packets someone waits for; batching is the caller's),
    and with `keepalive` if given, so that a peer that vanished without closing
    (a reboot, a cut link) is noticed."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if keepalive is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive.idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, keepalive.interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, keepalive.count)


def udp_socket(
    family: socket.AddressFamily,
    *,
    bind: Address | None = None,
    connect: Address | None = None,
    fragment: bool = False,
) -> socket.socket:
    """A non-blocking UDP socket, bound to `bind` and/or connected to `connect`.

    A connected socket is handed only the datagrams of its peer. With
    `fragment`, datagrams larger than the path MTU are fragmented by the
    kernel (``IP_PMTUDISC_DONT``) rather than refused with EMSGSIZE.
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if fragment:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_DONT)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC_DONT)
        if bind is not None:
            sock.bind(bind)
        if connect is not None:
            sock.connect(connect)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def receive_buffer(sock: socket.socket, size: int) -> None:
    """Give `sock` `size` bytes of receive buffer: past ``net.core.rmem_max``
    where the process may (``SO_RCVBUFFORCE``, CAP_NET_ADMIN), else as much as
    rmem_max allows (``SO_RCVBUF``)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def udp_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on UDP socket `sock` (its receive buffer was
    full): the ``drops`` column of /proc/net/udp or udp6, found by the socket's
    inode in the calling thread's namespace; None if it is not listed."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    table = "udp6" if sock.family == socket.AF_INET6 else "udp"
    try:
        lines = Path(f"/proc/thread-self/net/{table}").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        if len(fields) >= 13 and fields[9] == inode:
            return int(fields[-1])
    return None
