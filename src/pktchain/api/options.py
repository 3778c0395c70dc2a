"""The options of every command that serves the REST API: its token and its limits.

``pktchain node`` and ``pktchain api serve`` take them alike. The token is
best given in a file (``--api-token-file``, or ``$PKTCHAIN_API_TOKEN_FILE``)
or the environment (``$PKTCHAIN_API_TOKEN``); ``--api-token TOKEN`` still
works, with a warning, since every user of the machine can read it in the
process list. The limits are `pktchain.api.server.HttpLimits`.

Only `argparse` is imported at load time, so that the command line starts fast.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pktchain.api.server import HttpLimits

__all__ = ["TOKEN_ENV", "TOKEN_FILE_ENV", "add_api_server_options", "api_limits", "api_token"]

TOKEN_ENV = "PKTCHAIN_API_TOKEN"
TOKEN_FILE_ENV = "PKTCHAIN_API_TOKEN_FILE"

# The defaults of HttpLimits, repeated here so that --help needs no import.
_MAX_BODY = 1 << 20
_REQUEST_TIMEOUT = 10.0
_MAX_CONNECTIONS = 128


def add_api_server_options(parser: argparse.ArgumentParser) -> None:
    """``--api-token``, ``--api-token-file`` and the API's limits."""
    parser.add_argument(
        "--api-token-file",
        metavar="FILE",
        default=None,
        help="require X-Auth-Token: the token held in FILE on every API request "
        f"(default ${TOKEN_FILE_ENV}, else the token in ${TOKEN_ENV}); needed to serve "
        "on a non-loopback address",
    )
    parser.add_argument(
        "--api-token",
        metavar="TOKEN",
        default=None,
        help="the token itself (warned about: other users see it in the process list)",
    )
    parser.add_argument(
        "--api-max-body",
        metavar="BYTES",
        type=int,
        default=_MAX_BODY,
        help=f"largest request body; a larger one gets a 413 (default {_MAX_BODY})",
    )
    parser.add_argument(
        "--api-request-timeout",
        metavar="SECONDS",
        type=float,
        default=_REQUEST_TIMEOUT,
        help="time a client has to send a whole request, else a 408 and the connection is "
        f"closed (default {_REQUEST_TIMEOUT:g})",
    )
    parser.add_argument(
        "--api-max-connections",
        metavar="N",
        type=int,
        default=_MAX_CONNECTIONS,
        help=f"connections served at once; more get a 503 (default {_MAX_CONNECTIONS})",
    )


def api_token(args: argparse.Namespace) -> str | None:
    """The token from ``--api-token-file``, ``--api-token`` or the environment."""
    from pktchain.secretfile import secret_option

    return secret_option(
        value=args.api_token,
        file=args.api_token_file,
        option="--api-token",
        file_option="--api-token-file",
        env=TOKEN_ENV,
        file_env=TOKEN_FILE_ENV,
    )


def api_limits(args: argparse.Namespace) -> HttpLimits:
    """The limits the options ask for; UsageError naming a bad one."""
    from pktchain.api.server import HttpLimits
    from pktchain.errors import UsageError

    if args.api_max_body < 1:
        raise UsageError(f"--api-max-body {args.api_max_body}: must be at least 1")
    if not 0 < args.api_request_timeout <= 3600:
        raise UsageError(
            f"--api-request-timeout {args.api_request_timeout:g}: must be in (0, 3600] seconds"
        )
    if args.api_max_connections < 1:
        raise UsageError(f"--api-max-connections {args.api_max_connections}: must be at least 1")
    return HttpLimits(
        max_body=args.api_max_body,
        request_timeout=args.api_request_timeout,
        max_connections=args.api_max_connections,
    )
