"""The options of every command that drives a node's REST API: ``--url`` and the token.

``pktchain port-pair`` (and the other resource commands), ``pktchain router``
and ``pktchain apply`` take them alike, with their defaults from the
environment, so that a shell that exports ``PKTCHAIN_URL`` and
``PKTCHAIN_TOKEN_FILE`` (or ``PKTCHAIN_TOKEN``) once reaches the same node
with every command. The token is best read from a file (``--token-file``);
``--token TOKEN`` still works, with a warning, since every user of the
machine can read it in the process list.

Only `argparse` and `os` are imported, so that the command line starts fast.
"""

from __future__ import annotations

import argparse
import os

__all__ = [
    "DEFAULT_URL",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "URL_ENV",
    "add_api_options",
    "client_token",
]

URL_ENV = "PKTCHAIN_URL"
TOKEN_ENV = "PKTCHAIN_TOKEN"
TOKEN_FILE_ENV = "PKTCHAIN_TOKEN_FILE"
DEFAULT_URL = "http://127.0.0.1:9696"
"""The node's API on this machine, on Neutron's port."""


def add_api_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--url``, ``--token-file`` and ``--token`` to `parser`; the defaults are
    the environment's (read by `client_token` for the token)."""
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"the node's API (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        default=None,
        help=f"send the token held in FILE as X-Auth-Token (default: ${TOKEN_FILE_ENV}, "
        f"else the token in ${TOKEN_ENV})",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        default=None,
        help="the token itself (warned about: other users see it in the process list)",
    )


def client_token(args: argparse.Namespace) -> str | None:
    """The token from ``--token-file``, ``--token`` or the environment, or None."""
    from pktchain.secretfile import secret_option

    return secret_option(
        value=args.token,
        file=args.token_file,
        option="--token",
        file_option="--token-file",
        env=TOKEN_ENV,
        file_env=TOKEN_FILE_ENV,
    )
