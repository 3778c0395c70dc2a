"""`pktchain router`: the node's router over the REST API.

    pktchain router show [--json]
    pktchain router do port_forward_add proto=tcp external_port=8080 \
        inside_ip=10.0.0.5 inside_port=80

`do` takes the messenger's operations and arguments (docs/messenger.md), sent
to ``POST /v2.0/pktchain/router/OP``; the node checks and applies them exactly
as it does for the messenger.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pktchain.client.options import add_api_options, client_token


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_api_options(common)
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    parser = subparsers.add_parser("router", help="the node's virtual router (REST API)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", parents=[common], help="interfaces, hosts, NAT, forwards")
    show.set_defaults(handler=_show)
    do = actions.add_parser("do", parents=[common], help="one router operation")
    do.add_argument("op", help="router_nic_add, host_nic_add, port_forward_add, ...")
    do.add_argument("args", nargs="*", metavar="KEY=VALUE")
    do.set_defaults(handler=_do)


def _show(args: argparse.Namespace) -> int:
    reply = _call(args, "GET", "/v2.0/pktchain/router")
    if reply is None:
        return 1
    if args.json:
        print(json.dumps(reply["router"], indent=2))
        return 0
    from pktchain.node.report import print_router, terminal_console

    print_router(reply["router"], terminal_console())
    return 0


def _do(args: argparse.Namespace) -> int:
    from pktchain.messenger.cli import parse_assignments

    body = parse_assignments(args.op, args.args)
    reply = _call(args, "POST", f"/v2.0/pktchain/router/{args.op}", body)
    if reply is None:
        return 1
    print(json.dumps(reply["result"], indent=None if not args.json else 2))
    return 0


def _call(args: argparse.Namespace, method: str, path: str, body: object = None) -> Any:
    from pktchain.client.neutron import ClientError, NeutronClient

    try:
        return NeutronClient(args.url, client_token(args)).call(method, path, body)
    except ClientError as exc:
        print(f"pktchain router {args.action}: {exc}", file=sys.stderr)
        return None
