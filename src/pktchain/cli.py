"""The `pktchain` command line.

Each subsystem registers its own subcommands through a `register(subparsers)`
function in its `cli` module; those modules import only `argparse` at load time
and import the subsystem itself inside the handler, so that `pktchain --help`
and the lean commands start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pktchain import __version__
from pktchain.errors import UsageError

__all__ = ["LEAN_COMMANDS", "UsageError", "build_parser", "main"]


def _register_pipe(subparsers: Any) -> None:
    from pktchain.pipe import cli as pipe_cli

    pipe_cli.register(subparsers)


def _register_fn(subparsers: Any) -> None:
    from pktchain.pipe import fn_cli

    fn_cli.register(subparsers)


def _register_nsh_fn(subparsers: Any) -> None:
    from pktchain.pipe import nsh_fn_cli

    nsh_fn_cli.register(subparsers)


LEAN_COMMANDS: dict[str, Callable[[Any], None]] = {
    "pipe": _register_pipe,
    "fn": _register_fn,
    "nsh-fn": _register_nsh_fn,
}
"""Commands that must start in a few tens of milliseconds (a packet pipe, a function
filter or an NSH-aware function handles its first frame within 0.1 s of exec): given one
of them, `main` builds its parser alone, without importing every other subsystem's
command line (about 20 ms), and sets up logging only if asked to (-v)."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with `only` (a key of LEAN_COMMANDS) of that one."""
    parser = argparse.ArgumentParser(
        prog="pktchain",
        description="Chain network functions over real traffic on Linux.",
    )
    parser.add_argument("--version", action="version", version=f"pktchain {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if only is not None:
        LEAN_COMMANDS[only](subparsers)
        return parser
    from pktchain.api import cli as api_cli
    from pktchain.apply import cli as apply_cli
    from pktchain.client import cli as client_cli
    from pktchain.client import router_cli
    from pktchain.demo import cli as demo_cli
    from pktchain.lab import cli as lab_cli
    from pktchain.messenger import cli as messenger_cli
    from pktchain.node import cli as node_cli
    from pktchain.tunnel import cli as tunnel_cli

    lab_cli.register(subparsers)
    node_cli.register(subparsers)
    demo_cli.register(subparsers)
    client_cli.register(subparsers)
    apply_cli.register(subparsers)
    api_cli.register(subparsers)
    messenger_cli.register(subparsers)
    router_cli.register(subparsers)
    _register_pipe(subparsers)
    _register_fn(subparsers)
    _register_nsh_fn(subparsers)
    tunnel_cli.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = next((word for word in words if not word.startswith("-")), None)
    lean = command if command in LEAN_COMMANDS else None
    parser = build_parser(lean)
    args = parser.parse_args(words)
    if lean is None or args.verbose:
        _configure_logging(args.verbose)
    handler = args.handler
    try:
        status: int = handler(args)
    except UsageError as exc:
        print(f"pktchain: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


def _configure_logging(verbosity: int) -> None:
    import logging

    from pktchain.logs import TEXT_FORMAT

    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format=TEXT_FORMAT)
