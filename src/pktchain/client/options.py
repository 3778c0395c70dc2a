"""The options of every command that drives a node's REST API: ``--url`` and ``--token``.

``pktchain port-pair`` (and the other resource commands), ``pktchain router``
and ``pktchain apply`` take them alike, with their defaults from the
environment, so that a shell that exports ``PKTCHAIN_URL`` and
``PKTCHAIN_TOKEN`` once reaches the same node with every command.

Only `argparse` and `os` are imported, so that the command line starts fast.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["DEFAULT_URL", "TOKEN_ENV", "URL_ENV", "add_api_options"]

URL_ENV = "PKTCHAIN_URL"
TOKEN_ENV = "PKTCHAIN_TOKEN"
DEFAULT_URL = "http://127.0.0.1:9696"
"""The node's API on this machine, on Neutron's port."""


def add_api_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--url`` and ``--token`` to `parser`, their defaults from the environment."""
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"the node's API (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"sent as X-Auth-Token (default: ${TOKEN_ENV})",
    )
