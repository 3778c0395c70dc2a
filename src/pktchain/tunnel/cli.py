"""``pktchain tunnel``: TunConnector's command line, and what it adds.

The original's options keep their long and short names and defaults
(``-p -n -s -c -i -o -r -m -h``); the additions have long names only, but for
``-l`` (the prefix length the original hard-coded as /24). The key is read
from a file (``--key-file``, or ``$PKTCHAIN_TUNNEL_KEY_FILE``), never from
the command line, where other users could read it; ``--no-auth`` runs
without one, with the original's bytes on the wire. docs/tunnel.md.

Only `argparse` is imported at load time; the tunnel itself is imported by
the handler.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pktchain.errors import UsageError

KEY_FILE_ENV = "PKTCHAIN_TUNNEL_KEY_FILE"

# Every option's default, as text: the original's (its main.cpp) where it had
# the option, and /24, which it hard-coded.
DEFAULTS = {
    "server_interface": "tun0",
    "client_interface": "tun1",
    "server_ip": "192.168.0.2",
    "client_ip": "192.168.1.2",
    "prefix_length": "24",
    "inport": "55556",
    "outport": "55555",
    "remote_ip": "127.0.0.1",
    "listen_ip": "0.0.0.0",
    "mode": "both",
    "transport": "tcp",
    "mtu": "1500",
    "handshake_timeout": "5",
    "max_connections": "1024",
}


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tunnel",
        help="a TUN tunnel between machines (TunConnector-compatible)",
        description="Create TUN interfaces and join them to another machine's over TCP "
        "(or UDP): as a server for many clients, as a client, or both (docs/tunnel.md). "
        "Runs until SIGINT or SIGTERM, then removes its interfaces.",
    )
    d = DEFAULTS
    original = parser.add_argument_group("TunConnector's options")
    original.add_argument(
        "-p",
        "--serverinterface",
        metavar="X",
        default=d["server_interface"],
        help=f"TUN interface of the server end (default {d['server_interface']})",
    )
    original.add_argument(
        "-n",
        "--clientinterface",
        metavar="X",
        default=d["client_interface"],
        help=f"TUN interface of the client end (default {d['client_interface']})",
    )
    original.add_argument(
        "-s",
        "--serverip",
        metavar="X",
        default=d["server_ip"],
        help=f"address of the server end's interface (default {d['server_ip']})",
    )
    original.add_argument(
        "-c",
        "--clientip",
        metavar="X",
        default=d["client_ip"],
        help=f"address of the client end's interface (default {d['client_ip']})",
    )
    original.add_argument(
        "-i",
        "--inport",
        metavar="X",
        default=d["inport"],
        help=f"port the server end listens on (default {d['inport']})",
    )
    original.add_argument(
        "-o",
        "--outport",
        metavar="X",
        default=d["outport"],
        help=f"port the client end connects to (default {d['outport']})",
    )
    original.add_argument(
        "-r",
        "--remoteip",
        metavar="X",
        default=d["remote_ip"],
        help=f"address of the server the client end connects to (default {d['remote_ip']})",
    )
    original.add_argument(
        "-m",
        "--mode",
        metavar="{client,server,both}",
        default=d["mode"],
        help=f"which ends to run (default {d['mode']})",
    )
    added = parser.add_argument_group("pktchain's additions")
    added.add_argument(
        "-l",
        "--prefix-length",
        metavar="N",
        default=d["prefix_length"],
        help=f"prefix length of both interfaces' addresses (default {d['prefix_length']})",
    )
    added.add_argument(
        "--key-file",
        metavar="FILE",
        default=None,
        help=f"file holding the pre-shared key, at least 16 bytes (default ${KEY_FILE_ENV})",
    )
    added.add_argument(
        "--no-auth",
        action="store_true",
        help="no handshake: the original's unauthenticated wire, byte for byte",
    )
    added.add_argument(
        "--transport",
        metavar="{tcp,udp}",
        default=d["transport"],
        help=f"tcp: the original's framed stream; udp: one packet per datagram, "
        f"with --no-auth only (default {d['transport']})",
    )
    added.add_argument(
        "--mtu",
        metavar="N",
        default=d["mtu"],
        help=f"MTU of the interfaces; longer frames close the connection (default {d['mtu']})",
    )
    added.add_argument(
        "--listen",
        metavar="ADDR",
        default=d["listen_ip"],
        help=f"address the server end listens on (default {d['listen_ip']})",
    )
    added.add_argument(
        "--handshake-timeout",
        metavar="SECONDS",
        default=d["handshake_timeout"],
        help=f"time a TCP connection has to connect and authenticate, else it is closed "
        f"(default {d['handshake_timeout']})",
    )
    added.add_argument(
        "--max-connections",
        metavar="N",
        default=d["max_connections"],
        help=f"TCP connections the server end holds at once; more are refused "
        f"(default {d['max_connections']})",
    )
    parser.set_defaults(handler=_run)


def read_key(path: str) -> bytes:
    """The key in `path`, without a trailing newline (`pktchain.secretfile`)."""
    from pktchain.secretfile import read_secret_file

    return read_secret_file(path, "--key-file")


def _run(args: argparse.Namespace) -> int:
    from pktchain.tunnel.config import TunnelConfigError, tunnel_config
    from pktchain.tunnel.run import TunnelStartError, run

    # The environment's key file is the default only when a key is wanted.
    key_file = args.key_file if args.no_auth else args.key_file or os.environ.get(KEY_FILE_ENV)
    key = read_key(key_file) if key_file else None
    try:
        config = tunnel_config(
            mode=args.mode,
            transport=args.transport,
            server_interface=args.serverinterface,
            client_interface=args.clientinterface,
            server_ip=args.serverip,
            client_ip=args.clientip,
            prefix_length=args.prefix_length,
            inport=args.inport,
            outport=args.outport,
            remote_ip=args.remoteip,
            listen_ip=args.listen,
            mtu=args.mtu,
            key=key,
            no_auth=args.no_auth,
            handshake_timeout=args.handshake_timeout,
            max_connections=args.max_connections,
        )
    except TunnelConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        return run(config)
    except TunnelStartError as exc:
        print(f"pktchain tunnel: {exc}", file=sys.stderr)
        return 1
