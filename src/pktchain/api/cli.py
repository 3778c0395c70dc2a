"""`pktchain api serve`: the REST API of a cluster, from etcd, without a node."""

from __future__ import annotations

import argparse
from typing import Any

from pktchain.api.options import add_api_server_options


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "api",
        help="serve a cluster's REST API from etcd (no node)",
        description="Serve the networking-sfc REST API of a cluster whose state is in etcd, "
        "in a process that runs no node (docs/cluster.md).",
    )
    sub = parser.add_subparsers(dest="api_command", metavar="SUBCOMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the API until SIGINT/SIGTERM",
        description="Serve the API of the cluster kept in etcd until SIGINT/SIGTERM. Changes "
        "are written to etcd and every node follows them; a node's own routes (status, "
        "flows, functions, router) answer 404 here.",
    )
    serve.add_argument(
        "--etcd",
        required=True,
        metavar="URL[,URL...]",
        help="client URLs of the etcd cluster holding the state (tried in turn)",
    )
    serve.add_argument(
        "--cluster",
        default=None,
        metavar="NAME",
        help="the cluster's name: its keys are under /pktchain/NAME/ (default: pktchain)",
    )
    serve.add_argument(
        "--listen",
        default="127.0.0.1:9696",
        metavar="HOST:PORT",
        help="where to serve (default 127.0.0.1:9696; port 0: any free port)",
    )
    add_api_server_options(serve)
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import logging
    import signal

    from pktchain.api.cluster import ClusterApi
    from pktchain.api.options import api_limits, api_token
    from pktchain.api.server import ApiServerError, parse_listen
    from pktchain.errors import UsageError
    from pktchain.etcd.client import EtcdClient, EtcdError
    from pktchain.etcd.keys import DEFAULT_CLUSTER, check_segment
    from pktchain.eventloop import EventLoop
    from pktchain.sfc.errors import SfcError

    if args.verbose == 0:
        logging.getLogger("pktchain").setLevel(logging.INFO)
    token, limits = api_token(args), api_limits(args)
    try:
        host, port = parse_listen(args.listen)
        cluster = check_segment("--cluster", args.cluster or DEFAULT_CLUSTER)
        client = EtcdClient(args.etcd)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    loop = EventLoop()
    api = ClusterApi(
        client, loop, cluster=cluster, host=host, port=port, token=token, limits=limits
    )
    try:
        api.start()
    except (OSError, SfcError, EtcdError, ApiServerError) as exc:
        loop.close()
        raise UsageError(f"the API of cluster {cluster} could not start: {exc}") from exc
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda _signum: loop.stop())
    logging.getLogger("pktchain.api").info(
        "cluster %s: REST API on %s/v2.0 (etcd %s)", cluster, api.url, ",".join(client.endpoints)
    )
    try:
        loop.run()
    finally:
        api.close()
        loop.close()
    return 0
