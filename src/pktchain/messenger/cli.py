"""``pktchain messenger send OP key=value...``: one request to a router's messenger.

Values are given as the operation declares them (docs/messenger.md):
integers for ports and the MTU, ``true``/``false`` for flags, text for the
rest. The result is printed as JSON; a refusal is printed as one line with
its type and field, exit status 1. The secret is read from a file
(``--secret-file``, or ``$PKTCHAIN_MESSENGER_SECRET_FILE``), never from the
command line, where other users could read it.

Only `argparse` is imported at load time; the client is imported by the handler.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pktchain.errors import UsageError

SECRET_FILE_ENV = "PKTCHAIN_MESSENGER_SECRET_FILE"
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "messenger",
        help="talk to a router's messenger (the cloud controller's channel)",
        description="Talk to a router's messenger (docs/messenger.md).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    send = actions.add_parser(
        "send",
        help="send one operation and print its result",
        description="Send one operation and print its result as JSON (docs/messenger.md).",
    )
    send.add_argument("op", metavar="OP", help="router_nic_add, host_nic_add, hosts, ...")
    send.add_argument("args", metavar="KEY=VALUE", nargs="*", help="the operation's arguments")
    send.add_argument("--host", default="127.0.0.1", help="the messenger's address")
    send.add_argument("--port", type=int, default=None, help="the messenger's port (7790)")
    send.add_argument(
        "--secret-file",
        default=os.environ.get(SECRET_FILE_ENV),
        help=f"file holding the shared secret (default: ${SECRET_FILE_ENV})",
    )
    send.add_argument(
        "--insecure", action="store_true", help="send without a MAC (server in insecure mode)"
    )
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (10)")
    send.set_defaults(handler=_send)


def parse_assignments(op: str, assignments: list[str]) -> dict[str, Any]:
    """``key=value`` words as the arguments of ``op``, typed as it declares them."""
    from pktchain.messenger.ops import ARGUMENTS, ArgKind, Op

    try:
        kinds = {spec.name: spec.kind for spec in ARGUMENTS[Op(op)]}
    except ValueError:
        kinds = {}  # an unknown op: the server names it
    args: dict[str, Any] = {}
    for word in assignments:
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise UsageError(f"{word!r} is not KEY=VALUE")
        if key in args:
            raise UsageError(f"{key} given twice")
        kind = kinds.get(key)
        value: Any = text
        if kind in (ArgKind.PORT, ArgKind.MTU, ArgKind.VRID, ArgKind.PRIORITY):
            try:
                value = int(text, 10)
            except ValueError:
                value = text  # the server says why, naming the field
        elif kind is ArgKind.SECONDS:
            try:
                value = float(text)
            except ValueError:
                value = text
        elif kind is ArgKind.BOOL and text.lower() in _TRUE | _FALSE:
            value = text.lower() in _TRUE
        args[key] = value
    return args


def read_secret(path: str) -> bytes:
    """The secret in ``path``, without a trailing newline (`pktchain.secretfile`)."""
    from pktchain.secretfile import read_secret_file

    return read_secret_file(path, "--secret-file")


def _send(args: argparse.Namespace) -> int:
    import json

    from pktchain.messenger.client import MessengerClient
    from pktchain.messenger.wire import (
        DEFAULT_PORT,
        MessengerConfigError,
        MessengerError,
        MessengerProtocolError,
    )

    call_args = parse_assignments(args.op, args.args)
    if args.insecure and args.secret_file:
        raise UsageError("--insecure and --secret-file exclude each other")
    if not args.insecure and not args.secret_file:
        raise UsageError(f"--secret-file (or ${SECRET_FILE_ENV}) is required, or --insecure")
    secret = None if args.insecure else read_secret(args.secret_file)
    port = DEFAULT_PORT if args.port is None else args.port
    try:
        client = MessengerClient(
            args.host, port, secret, insecure=args.insecure, timeout=args.timeout
        )
    except MessengerConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        with client:
            result = client.call(args.op, **call_args)
    except MessengerError as exc:
        print(f"pktchain messenger: {exc}", file=sys.stderr)
        return 1
    except MessengerProtocolError as exc:
        print(f"pktchain messenger: {args.host}:{port}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pktchain messenger: {args.host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0
