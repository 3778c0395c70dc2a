"""``pktchain nsh-fn`` on sockets: an NSH-aware function on an interface or a UDP port.

The function and its bookkeeping are the SDK's
(:class:`~pktchain.functions.sdk.nsh.NshDriver`); this module only moves
bytes, over one of the two transports of docs/nsh.md:

* :class:`EthernetPort`: NSH straight over Ethernet on an interface, an
  ``AF_PACKET`` socket bound to EtherType 0x894F alone, with
  ``PACKET_IGNORE_OUTGOING`` (it never reads back what it sent) and
  promiscuous mode (the node addresses frames to the function's port, whatever
  MAC the interface has). Each answer goes back to the MAC the frame came
  from, out of the other interface when the function has two (``--egress``),
  else out of the one it came in on.
* :class:`UdpPort`: VXLAN-GPE over UDP (port 4790 by default); each answer
  goes back to the address and port the datagram came from.

:class:`NshFunctionRunner` runs them on the process's one event loop
(:mod:`pktchain.eventloop`): a readable socket is drained in batches, SIGTERM
and SIGINT end the loop, SIGUSR1 writes the counters to the stats file, and so
does the end. An answer the kernel refuses (a frame too large for the link, a
full queue) is a counted drop (``send-emsgsize``...), never an exception.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pktchain.eventloop import EventLoop
from pktchain.functions.sdk.nsh import NshDriver
from pktchain.linux.packet import PACKET_IGNORE_OUTGOING, SOL_PACKET, set_promiscuous
from pktchain.linux.sockets import address_family, udp_socket
from pktchain.packet.headers import EtherType
from pktchain.pipe.iface import InterfaceError, open_packet_socket

__all__ = [
    "BATCH",
    "MAX_DATAGRAM",
    "EthernetPort",
    "NshFunctionRunner",
    "UdpPort",
    "send_failure",
    "udp_address",
    "write_stats",
]

BATCH = 64
"""Packets read from one socket before the loop looks at the others and at signals."""
MAX_DATAGRAM = 65535
"""The largest frame or datagram read: a UDP datagram's limit, and above any MTU."""
ETH_P_NSH = int(EtherType.NSH)


def send_failure(exc: OSError) -> str:
    """The drop reason of an answer the kernel refused: ``send-`` and the errno's name."""
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"send-{name.lower()}"


class EthernetPort:
    """An interface's AF_PACKET socket for NSH over Ethernet (EtherType 0x894F only)."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        sock = open_packet_socket(ifname, "receive NSH on it")
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.bind((ifname, ETH_P_NSH))
            set_promiscuous(sock, ifname)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise InterfaceError(exc.errno or errno.EIO, ifname, "receive NSH on it") from None
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self) -> bytes | None:
        """One frame, or None when none is waiting."""
        try:
            return self.sock.recv(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return None

    def send(self, frame: bytes) -> None:
        """Send one frame out of the interface; OSError if the kernel refuses it."""
        self.sock.send(frame)

    def close(self) -> None:
        self.sock.close()


class UdpPort:
    """A UDP socket for VXLAN-GPE; answers go back to each datagram's sender."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sock = udp_socket(address_family(host), bind=(host, port), fragment=True)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self) -> tuple[bytes, Any] | None:
        """One datagram and its sender, or None when none is waiting."""
        try:
            return self.sock.recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return None

    def send(self, datagram: bytes, address: Any) -> None:
        self.sock.sendto(datagram, address)

    def close(self) -> None:
        self.sock.close()


def write_stats(path: Path, stats: dict[str, Any]) -> None:
    """Write `stats` as JSON to `path` whole: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(stats, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(partial, path)


class NshFunctionRunner:
    """Runs an :class:`NshDriver` on its ports until a signal or ``count`` packets."""

    def __init__(
        self,
        driver: NshDriver,
        *,
        ethernet: list[EthernetPort] | None = None,
        udp: UdpPort | None = None,
        count: int | None = None,
        stats_path: Path | None = None,
        on_stats_error: Callable[[str], None] = lambda message: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver = driver
        self.ethernet = ethernet or []
        self.udp = udp
        self.count = count
        self.stats_path = stats_path
        self.on_stats_error = on_stats_error
        self.clock = clock
        self.stopped_by: str | None = None
        self.loop = EventLoop()

    def run(self) -> str | None:
        """Until SIGTERM/SIGINT ("SIGTERM"...) or ``count`` packets ("count"); the stats
        file is written at the end (and on each SIGUSR1)."""
        loop = self.loop
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop)
        loop.add_signal_handler(signal.SIGUSR1, lambda signum: self.write_stats())
        ports = self.ethernet
        for index, port in enumerate(ports):
            # Two interfaces: what comes in on one leaves by the other; one: by itself.
            out = ports[1 - index] if len(ports) == 2 else port
            loop.add_reader(port.fileno(), self._ethernet_reader(port, out))
        if self.udp is not None:
            loop.add_reader(self.udp.fileno(), self._udp_reader(self.udp))
        try:
            loop.run()
        finally:
            loop.close()
            self.write_stats()
        return self.stopped_by

    def stats(self) -> dict[str, Any]:
        stats = self.driver.stats()
        if self.stopped_by is not None:
            stats["stopped_by"] = self.stopped_by
        return stats

    def write_stats(self) -> None:
        if self.stats_path is None:
            return
        try:
            write_stats(self.stats_path, self.stats())
        except OSError as exc:
            self.on_stats_error(f"{self.stats_path}: {exc.strerror or exc}")

    def _stop(self, signum: int) -> None:
        self.stopped_by = signal.Signals(signum).name
        self.loop.stop()

    def _counted(self) -> bool:
        """Whether ``count`` packets have come in: then the loop stops."""
        if self.count is not None and self.driver.packets_in >= self.count:
            self.stopped_by = "count"
            self.loop.stop()
            return True
        return False

    def _ethernet_reader(self, port: EthernetPort, out: EthernetPort) -> Callable[[], None]:
        driver = self.driver
        receive = driver.receive_ethernet

        def read() -> None:
            now = self.clock()
            for _ in range(BATCH):
                frame = port.recv()
                if frame is None:
                    return
                answer = receive(frame, now)
                if answer is not None:
                    try:
                        out.send(answer)
                    except OSError as exc:
                        driver.lost(send_failure(exc), len(answer))
                if self._counted():
                    return

        return read

    def _udp_reader(self, port: UdpPort) -> Callable[[], None]:
        driver = self.driver
        receive = driver.receive_gpe

        def read() -> None:
            now = self.clock()
            for _ in range(BATCH):
                got = port.recv()
                if got is None:
                    return
                datagram, sender = got
                answer = receive(datagram, now)
                if answer is not None:
                    try:
                        port.send(answer, sender)
                    except OSError as exc:
                        driver.lost(send_failure(exc), len(answer))
                if self._counted():
                    return

        return read


def udp_address(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``HOST`` (the default port); ValueError saying why not."""
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"{text!r}: no host (use 0.0.0.0 for every address)")
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: the port is not 1-65535")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise ValueError(f"{text!r}: {host} is not an IP address") from None
    return host, port
