"""The ``pktchain apply`` subcommand.

Only `argparse` is imported at load time; the file reader, the planner and
the client are imported by the handler.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pktchain.client.options import add_api_options, client_token
from pktchain.errors import UsageError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "apply",
        help="bring chaining resources (and a lab) to what a file declares",
        description="Compare a declarative file with what the node's API holds (by name), "
        "show what is created (+), updated (~), replaced (±) and deleted (-), and apply it "
        "in dependency order. Format: docs/cli.md.",
    )
    parser.add_argument("-f", "--file", required=True, metavar="FILE", help="apply file (YAML)")
    parser.add_argument("--dry-run", action="store_true", help="show the changes, change nothing")
    parser.add_argument(
        "--prune",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="delete the resources the file does not declare (default: --no-prune)",
    )
    add_api_options(parser)
    parser.set_defaults(handler=_apply)


def _apply(args: argparse.Namespace) -> int:
    from pktchain.apply.run import apply_file
    from pktchain.apply.spec import ApplyFileError
    from pktchain.client.neutron import NeutronClient

    def error(line: str) -> None:
        print(f"pktchain apply: {line}", file=sys.stderr)

    try:
        return apply_file(
            args.file,
            NeutronClient(args.url, client_token(args)),
            dry_run=args.dry_run,
            prune=args.prune,
            error=error,
        )
    except ApplyFileError as exc:
        raise UsageError(str(exc)) from exc
