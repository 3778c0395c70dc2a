"""`pktchain node`: run a node in the foreground, or ask a running one for its status."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pktchain.node.dataplane.limits import PortLimits

from pktchain.api.options import add_api_server_options
from pktchain.linux.sched import DEFAULT_LOOP_PRIORITY, parse_priority

# The messenger's defaults (pktchain.messenger.server), here so that --help imports nothing.
DEFAULT_MESSENGER_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_MESSENGER_MAX_CONNECTIONS = 64
# The steering's flow table size (pktchain.node.dataplane.steering), likewise.
DEFAULT_MAX_FLOWS = 262_144


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "node",
        help="run a pktchain node (foreground) or query one",
        description="Run a pktchain node in the foreground until SIGINT/SIGTERM. "
        "Ports come from a lab topology (--topology: every interface with "
        "'attach: node'; with --node, those of that node's hosts) and/or from "
        "--tap / --veth / --af-packet.",
    )
    _add_name(parser, default=None, default_help="pktchain, or NODE with --node")
    parser.add_argument("-t", "--topology", metavar="FILE", help="lab topology YAML")
    parser.add_argument(
        "--lab", metavar="NAME", help="lab name to use instead of the topology's own"
    )
    parser.add_argument(
        "--node",
        metavar="NODE",
        help="run node NODE of a cluster topology (one with `nodes:`): the process "
        "enters the node's namespace pc-<lab>.NODE first, takes only the ports of the "
        "hosts with `node: NODE`, and takes --etcd (the lab's etcd) and --underlay "
        "(the node's underlay address, port 4790) from the topology unless given "
        "(--state or --no-state: no etcd)",
    )
    parser.add_argument(
        "--tap",
        action="append",
        default=[],
        metavar="NETNS:IFNAME[=NETWORK][@ADDRESS/LEN,...]",
        help="create TAP IFNAME in namespace NETNS as a port of NETWORK, with these "
        "addresses (a port with addresses is secured: it sends only as itself) (repeatable)",
    )
    parser.add_argument(
        "--veth",
        action="append",
        default=[],
        metavar="NETNS:IFNAME[=NETWORK][@ADDRESS/LEN,...]",
        help="as --tap, but the NIC is a veth pair: IFNAME in namespace NETNS, its other "
        "end in the node's namespace, read through AF_PACKET (repeatable)",
    )
    parser.add_argument(
        "--host-nic",
        choices=("tap", "veth"),
        default=None,
        help="what the node makes as the topology's host NICs where the topology does "
        "not say (its `host_nic`, an interface's `nic`): a TAP or a veth pair "
        "(default $PKTCHAIN_HOST_NIC; else veth where the kernel fast path can run, "
        "and tap where it cannot or with --no-kernel-fastpath)",
    )
    parser.add_argument(
        "--af-packet",
        action="append",
        default=[],
        metavar="[NETNS:]IFNAME[=NETWORK]",
        help="attach an existing interface through AF_PACKET (repeatable)",
    )
    parser.add_argument(
        "--router", metavar="FILE", help="run the virtual router described in FILE (YAML)"
    )
    parser.add_argument(
        "--messenger",
        metavar="HOST:PORT",
        help="serve the router's messenger (JSON over TCP, HMAC-authenticated) here",
    )
    parser.add_argument(
        "--messenger-secret-file",
        metavar="FILE",
        default=os.environ.get("PKTCHAIN_MESSENGER_SECRET_FILE"),
        help="the messenger's shared secret (default $PKTCHAIN_MESSENGER_SECRET_FILE)",
    )
    parser.add_argument(
        "--ha-listen",
        metavar="IP[:PORT]",
        help="a router pair's state sync: serve the router's state here while master "
        "(port 7791 by default; docs/ha.md)",
    )
    parser.add_argument(
        "--ha-peer",
        metavar="IP[:PORT]",
        help="a router pair's state sync: the other router's --ha-listen, followed while backup",
    )
    parser.add_argument(
        "--ha-secret-file",
        metavar="FILE",
        default=os.environ.get("PKTCHAIN_HASYNC_SECRET_FILE"),
        help="the state sync's shared secret, 16 bytes or more "
        "(default $PKTCHAIN_HASYNC_SECRET_FILE)",
    )
    parser.add_argument(
        "--messenger-handshake-timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_MESSENGER_HANDSHAKE_TIMEOUT,
        help="time a messenger connection has to send its first authenticated request, "
        f"else it is closed (default {DEFAULT_MESSENGER_HANDSHAKE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--messenger-max-connections",
        metavar="N",
        type=int,
        default=DEFAULT_MESSENGER_MAX_CONNECTIONS,
        help="messenger connections served at once; more are refused "
        f"(default {DEFAULT_MESSENGER_MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--mac-aging", type=float, default=None, metavar="SECONDS", help="MAC aging time"
    )
    parser.add_argument(
        "--max-flows",
        type=int,
        default=None,
        metavar="N",
        help=f"flows the steering's flow table holds; beyond, the oldest makes room "
        f"(default {DEFAULT_MAX_FLOWS:,})",
    )
    state = parser.add_mutually_exclusive_group()
    state.add_argument(
        "--state",
        metavar="PATH",
        help="SQLite file keeping the chaining resources (default /var/lib/pktchain/NAME.db)",
    )
    state.add_argument(
        "--no-state", action="store_true", help="keep the chaining resources in memory only"
    )
    api = parser.add_mutually_exclusive_group()
    api.add_argument(
        "--api",
        metavar="HOST:PORT",
        default=None,
        help="serve the REST API here (default 127.0.0.1:9696; port 0: any free port). "
        "With --node and an API token, the default is the node's underlay address, "
        "port 9696, so that the other namespaces on the underlay reach it; without a "
        "token, 127.0.0.1:9696 inside the node's namespace",
    )
    api.add_argument("--no-api", action="store_true", help="serve no REST API")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text: readable lines (default); json: one JSON object per line, with "
        "time, level, logger, message and an event's name and fields (docs/node.md, Logs)",
    )
    add_api_server_options(parser)
    parser.add_argument(
        "--no-frame-check",
        action="store_true",
        help="forward frames without checking their IPv4/IPv6/ARP headers",
    )
    parser.add_argument(
        "--no-kernel-fastpath",
        action="store_true",
        help="carry established flows between veth ports in Python, not in the kernel's "
        "tc program (docs/kernel-fastpath.md)",
    )
    parser.add_argument(
        "--loop-priority",
        metavar="N|off",
        type=_loop_priority,
        default=DEFAULT_LOOP_PRIORITY,
        help="run the packet loop's thread under SCHED_FIFO at this priority (1 to 99; "
        f"default {DEFAULT_LOOP_PRIORITY}), so that a frame does not wait for busy processes "
        "to give up the CPU; off: time-sharing (docs/node.md, The packet loop's priority)",
    )
    parser.add_argument(
        "--functions",
        metavar="FILE",
        help="native functions to run (YAML: name, kind, network, config; docs/functions.md)",
    )
    _add_port_limits(parser)
    cluster = parser.add_argument_group("cluster (docs/cluster.md)")
    cluster.add_argument(
        "--etcd",
        metavar="URL[,URL...]",
        help="join a cluster: keep the chaining resources and the node registry in this etcd "
        "(client URLs of one etcd cluster, tried in turn); no --state then",
    )
    cluster.add_argument(
        "--cluster",
        metavar="NAME",
        help="the cluster's name: its keys are under /pktchain/NAME/ (default: pktchain)",
    )
    cluster.add_argument(
        "--lease-ttl",
        type=float,
        metavar="SECONDS",
        help="how long the registry keeps a node that died (default 3; whole seconds, "
        "at least etcd's minimum, 2 with its defaults)",
    )
    cluster.add_argument(
        "--underlay",
        metavar="IP[:PORT]",
        help="this node's address (and UDP port, default 4790) for NSH over VXLAN-GPE "
        "between nodes, published in the registry",
    )
    parser.set_defaults(handler=_run)

    sub = parser.add_subparsers(dest="node_command", metavar="SUBCOMMAND")
    functions = sub.add_parser("functions", help="print a running node's native functions")
    _add_name(functions)
    functions.add_argument("--json", action="store_true", help="machine-readable output")
    functions.set_defaults(handler=_functions)
    router = sub.add_parser("router", help="print a running node's router tables")
    _add_name(router)
    router.add_argument("--json", action="store_true", help="machine-readable output")
    router.set_defaults(handler=_router)
    status = sub.add_parser("status", help="print a running node's ports and counters")
    _add_name(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)
    flows = sub.add_parser("flows", help="print a running node's flow table")
    _add_name(flows)
    flows.add_argument("--limit", type=int, default=1000, help="at most this many flows")
    flows.add_argument("--json", action="store_true", help="machine-readable output")
    flows.set_defaults(handler=_flows)


# The defaults of pktchain.node.dataplane.limits.DEFAULT_PORT_LIMITS, for --help
# without importing the dataplane (a test checks that they agree).
PORT_LIMIT_HELP = {
    "arp": ("ARP packets", 100, 200),
    "icmp": ("ICMP packets to the router's own addresses", 100, 200),
    "flood": ("frames the switch floods (broadcast, multicast, unknown unicast)", 1000, 500),
    "slow-path": (
        "frames the switch hands to the node's router or load balancer (first packets, "
        "SYN/FIN/RST, ARP, ICMP)",
        1000,
        500,
    ),
}


def _loop_priority(text: str) -> int | None:
    try:
        return parse_priority(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_port_limits(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "port rate limits",
        "what each host port may send per second of the frames that cost the node "
        "work (token buckets; over the limit: dropped and counted as rate-NAME on the "
        "port; docs/node.md)",
    )
    for name, (what, rate, burst) in PORT_LIMIT_HELP.items():
        group.add_argument(
            f"--port-{name}-rate",
            metavar="PPS",
            help=f"{what} a host port may send per second on average, or off (default {rate})",
        )
        group.add_argument(
            f"--port-{name}-burst",
            metavar="N",
            type=int,
            help=f"... and back to back (default {burst}; with a rate: twice the rate)",
        )


def port_limits_of(args: argparse.Namespace) -> PortLimits:
    """The `PortLimits` the ``--port-NAME-rate`` / ``--port-NAME-burst`` options give
    (ValueError naming the option)."""
    from pktchain.node.config import PORT_LIMIT_OPTIONS, port_limits

    def given(name: str, what: str) -> Any:
        return getattr(args, f"port_{name.replace('-', '_')}_{what}")

    return port_limits(
        {name: given(name, "rate") for name in PORT_LIMIT_OPTIONS},
        {name: given(name, "burst") for name in PORT_LIMIT_OPTIONS},
    )


def _add_name(
    parser: argparse.ArgumentParser,
    *,
    default: str | None = "pktchain",
    default_help: str = "pktchain",
) -> None:
    parser.add_argument(
        "-n", "--name", default=default, help=f"node name (default: {default_help})"
    )
    parser.add_argument("--control", metavar="PATH", help="control socket path")


def _run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from pktchain.api.options import api_limits, api_token
    from pktchain.api.server import ApiServerError
    from pktchain.cluster.record import ClusterError
    from pktchain.errors import UsageError
    from pktchain.lab import LabError
    from pktchain.logs import use_format
    from pktchain.node.config import build_config
    from pktchain.node.daemon import Node
    from pktchain.sfc.errors import SfcError
    from pktchain.sfc.store import default_path

    if args.verbose == 0:
        logging.getLogger("pktchain").setLevel(logging.INFO)
    use_format(args.log_format)
    # Before --node, whose default API address depends on whether there is a token.
    args.api_token = api_token(args)
    limits = api_limits(args)
    if args.node is not None:
        # Before anything opens a socket: the whole process moves.
        _enter_node(args)
    if args.etcd is not None and (args.state is not None or args.no_state):
        raise UsageError(
            "--state and --no-state do not apply with --etcd: the chaining resources are "
            "kept in etcd"
        )
    if args.etcd is None:
        for option, value in (("--cluster", args.cluster), ("--lease-ttl", args.lease_ttl)):
            if value is not None:
                raise UsageError(f"{option} needs --etcd")
    if args.name is None:
        args.name = "pktchain"
    if args.api is None:
        args.api = DEFAULT_API
    if args.etcd is not None or args.no_state:
        state = None
    else:
        state = Path(args.state or default_path(args.name))
    try:
        config = build_config(
            name=args.name,
            topology=Path(args.topology) if args.topology else None,
            lab_name=args.lab,
            node=args.node,
            taps=args.tap,
            veths=args.veth,
            host_nic=args.host_nic,
            af_packets=args.af_packet,
            mac_aging=args.mac_aging,
            max_flows=args.max_flows,
            check_frames=not args.no_frame_check,
            kernel_fastpath=not args.no_kernel_fastpath,
            loop_priority=args.loop_priority,
            control=Path(args.control) if args.control else None,
            state=state,
            api=None if args.no_api else args.api,
            api_token=args.api_token,
            api_limits=limits,
            router=Path(args.router) if args.router else None,
            messenger=args.messenger,
            messenger_secret=_read_secret(args.messenger_secret_file),
            messenger_handshake_timeout=args.messenger_handshake_timeout,
            messenger_max_connections=args.messenger_max_connections,
            functions=Path(args.functions) if args.functions else None,
            etcd=args.etcd,
            cluster=args.cluster,
            lease_ttl=args.lease_ttl,
            underlay=args.underlay,
            ha_listen=args.ha_listen,
            ha_peer=args.ha_peer,
            ha_secret=_ha_secret(args.ha_secret_file),
            port_limits=port_limits_of(args),
        )
    except (ValueError, LabError) as exc:
        raise UsageError(str(exc)) from exc
    node = Node(config)
    failures: tuple[type[Exception], ...] = (
        OSError,
        ValueError,
        LabError,
        SfcError,
        ApiServerError,
        ClusterError,
    )
    if config.etcd:
        from pktchain.etcd.client import EtcdError

        failures = (*failures, EtcdError)
    try:
        node.start()
    except failures as exc:
        raise UsageError(f"node {args.name} could not start: {exc}") from exc
    node.run()
    return 0


DEFAULT_API = "127.0.0.1:9696"


def _enter_node(args: argparse.Namespace) -> None:
    """``--node NODE``: move this process into the node's namespace, and take the
    options the cluster needs from the topology (those given explicitly win)."""
    import threading
    from pathlib import Path

    from pktchain.errors import UsageError
    from pktchain.lab import LabError
    from pktchain.linux.netns import NetnsError, enter
    from pktchain.node.config import cluster_node

    if not args.topology:
        raise UsageError("--node needs --topology FILE, a topology with `nodes:`")
    try:
        node = cluster_node(
            Path(args.topology), args.node, lab_name=args.lab, api_token=bool(args.api_token)
        )
    except (ValueError, LabError) as exc:
        raise UsageError(str(exc)) from exc
    if threading.active_count() > 1:
        # setns(2) moves the calling thread only; threads already running
        # would stay behind.
        raise UsageError("--node: the process must enter the node's namespace before any thread")
    try:
        enter(node.netns)
    except NetnsError as exc:
        raise UsageError(f"{exc}; is the lab up? (pktchain lab up {args.topology})") from exc
    if args.etcd is None and node.etcd and args.state is None and not args.no_state:
        args.etcd = list(node.etcd)
    if args.underlay is None:
        args.underlay = node.underlay
    if args.name is None:
        args.name = node.name
    if args.api is None and not args.no_api:
        args.api = node.api


def _ask(
    args: argparse.Namespace, op: str, *, request_timeout: float = 5.0, **params: Any
) -> dict[str, Any]:
    """One request to the node named on the command line; errors become one line."""
    from pathlib import Path

    from pktchain.errors import UsageError
    from pktchain.node.control import ControlError, control_path, send_request

    path = Path(args.control) if args.control else control_path(args.name)
    try:
        reply = send_request(path, {"op": op, **params}, request_timeout)
    except ControlError as exc:
        raise UsageError(str(exc)) from exc
    if not reply.get("ok"):
        raise UsageError(f"node {args.name}: {reply.get('error')}")
    return reply


def _status(args: argparse.Namespace) -> int:
    import json

    reply = _ask(args, "status")
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    from pktchain.node.report import print_status

    print_status(reply)
    return 0


def _flows(args: argparse.Namespace) -> int:
    import json

    reply = _ask(args, "flows", limit=args.limit)
    if args.json:
        print(json.dumps(reply["flows"], indent=2))
        return 0
    from pktchain.node.report import flow_table, terminal_console

    terminal_console().print(flow_table(reply["flows"]))
    return 0


def _functions(args: argparse.Namespace) -> int:
    import json

    reply = _ask(args, "functions")
    if args.json:
        print(json.dumps(reply["functions"], indent=2))
        return 0
    from pktchain.node.report import print_functions, terminal_console

    print_functions(reply["functions"], terminal_console())
    return 0


def _router(args: argparse.Namespace) -> int:
    import json

    reply = _ask(args, "router")
    if args.json:
        print(json.dumps(reply["router"], indent=2))
        return 0
    from pktchain.node.report import print_router, terminal_console

    print_router(reply["router"], terminal_console())
    return 0


def _ha_secret(path: str | None) -> bytes | None:
    from pktchain.errors import UsageError
    from pktchain.node.hasync import read_secret_file

    if path is None:
        return None
    try:
        return read_secret_file(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--ha-secret-file {path}: {exc}") from exc


def _read_secret(path: str | None) -> bytes | None:
    from pktchain.secretfile import read_secret_file

    return None if path is None else read_secret_file(path, "--messenger-secret-file")
