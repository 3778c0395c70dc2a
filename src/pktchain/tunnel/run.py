"""Running a tunnel process: create its ends, run the loop, clean up on the way out.

`run(config)` creates the TUN device of each end the mode asks for, starts
the server and/or client on the chosen transport, and runs the loop until
SIGINT or SIGTERM. On the way out it closes every connection and socket and
then the TUN devices, which the kernel removes with them. SIGUSR1 prints the
counters of every end as one JSON line on stderr (as ``dd`` prints its
statistics); they are also logged at exit.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
from contextlib import ExitStack

from pktchain.eventloop import EventLoop
from pktchain.tunnel.client import TcpClient
from pktchain.tunnel.config import Transport, TunnelConfig
from pktchain.tunnel.device import Tun
from pktchain.tunnel.server import TcpServer
from pktchain.tunnel.stream import End
from pktchain.tunnel.udp import UdpClient, UdpServer

__all__ = ["TunnelStartError", "counters_json", "run"]

log = logging.getLogger("pktchain.tunnel")


class TunnelStartError(Exception):
    """An end could not be set up (TUN device, bind, connect); the message says which."""


def _family(version: int) -> socket.AddressFamily:
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def counters_json(ends: list[End]) -> str:
    """Every end's counters as one JSON object, keyed by the end's label."""
    return json.dumps({end.label: end.counters.as_json() for end in ends}, sort_keys=True)


def run(config: TunnelConfig) -> int:
    """Run the tunnel until SIGINT or SIGTERM; raises TunnelStartError if it cannot start."""
    loop = EventLoop()
    ends: list[End] = []
    with ExitStack() as cleanup:
        cleanup.callback(loop.close)
        try:
            _start(config, loop, ends, cleanup)
        except OSError as exc:  # TunError: its message names the device
            raise TunnelStartError(exc.strerror or str(exc)) from exc

        def on_stop(signum: int) -> None:
            log.info("%s received, exiting", signal.Signals(signum).name)
            loop.stop()

        def on_usr1(_signum: int) -> None:
            print(f"pktchain tunnel: counters {counters_json(ends)}", file=sys.stderr, flush=True)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_stop)
        loop.add_signal_handler(signal.SIGUSR1, on_usr1)
        loop.run()
    # After the ends are closed, so that their last closes are counted too.
    log.info("counters %s", counters_json(ends))
    return 0


def _start(config: TunnelConfig, loop: EventLoop, ends: list[End], cleanup: ExitStack) -> None:
    """Create the ends; each is registered with `cleanup` (closed in reverse order)."""

    def add(end: End) -> None:
        ends.append(end)
        cleanup.callback(end.close)

    udp = config.transport is Transport.UDP
    if config.server is not None:
        s = config.server
        tun = Tun.create(s.interface, s.address, config.mtu)
        cleanup.callback(tun.close)
        label = f"server {s.interface}"
        listen = (str(s.listen), s.port)
        family = _family(s.listen.version)
        own = s.address.ip.packed
        try:
            if udp:
                add(
                    UdpServer(
                        loop, tun.fd, label, listen=listen, family=family, mtu=config.mtu, own=own
                    )
                )
            else:
                add(
                    TcpServer(
                        loop,
                        tun.fd,
                        label,
                        listen=listen,
                        family=family,
                        key=config.key,
                        mtu=config.mtu,
                        own=own,
                        max_connections=config.max_connections,
                        handshake_timeout=config.handshake_timeout,
                    )
                )
        except OSError as exc:
            raise TunnelStartError(
                f"{label}: cannot listen on {listen[0]} port {s.port}: {exc.strerror}"
            ) from exc
    if config.client is not None:
        c = config.client
        tun = Tun.create(c.interface, c.address, config.mtu)
        cleanup.callback(tun.close)
        label = f"client {c.interface}"
        remote = (str(c.remote), c.port)
        family = _family(c.remote.version)
        try:
            if udp:
                add(UdpClient(loop, tun.fd, label, remote=remote, family=family, mtu=config.mtu))
            else:
                add(
                    TcpClient(
                        loop,
                        tun.fd,
                        label,
                        remote=remote,
                        family=family,
                        key=config.key,
                        mtu=config.mtu,
                        own=c.address.ip.packed,
                        handshake_timeout=config.handshake_timeout,
                    )
                )
        except OSError as exc:
            raise TunnelStartError(
                f"{label}: cannot send to {remote[0]} port {c.port}: {exc.strerror}"
            ) from exc
