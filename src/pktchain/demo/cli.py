"""`pktchain demo NAME`: run a demo; exit 0 only when every step worked."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run a self-checking demo on real hosts")
    sub = parser.add_subparsers(dest="demo", metavar="DEMO", required=True)
    switch = sub.add_parser(
        "switch",
        help="three hosts on a pktchain switch: ping, HTTP, iperf3, counters",
    )
    switch.add_argument("--json", action="store_true", help="print the results as JSON")
    switch.add_argument(
        "--iperf-seconds", type=float, default=3.0, help="length of the iperf3 run (default 3)"
    )
    switch.set_defaults(handler=_switch)
    sfc = sub.add_parser(
        "sfc",
        help="the networking-sfc demo: HTTP steered through service VMs, live changes",
    )
    sfc.add_argument("--json", action="store_true", help="print the per-step counters as JSON")
    sfc.add_argument(
        "--window", type=float, default=2.5, help="seconds of traffic measured per step"
    )
    sfc.add_argument(
        "--hold",
        action="store_true",
        help="after the walk-through, keep the demo up with HTTP flowing (to look at its "
        "dashboard) until Ctrl-C or SIGTERM",
    )
    sfc.set_defaults(handler=_sfc)
    router = sub.add_parser(
        "router",
        help="the virtual-routers thesis's router: NAT, ping, traceroute, port forwarding, tables",
    )
    router.add_argument("--json", action="store_true", help="print the results as JSON")
    router.set_defaults(handler=_router)
    cluster = sub.add_parser(
        "cluster",
        help="one chain across three nodes: NSH over VXLAN-GPE, replies on the same "
        "instances, a node killed",
    )
    cluster.add_argument("--json", action="store_true", help="print the results as JSON")
    cluster.add_argument(
        "--pcap",
        metavar="DIR",
        type=Path,
        help="leave a capture of each node's underlay interface in DIR (n1-ul0.pcap, ...)",
    )
    cluster.add_argument(
        "--iperf-seconds", type=float, default=3.0, help="length of each iperf3 run (default 3)"
    )
    cluster.add_argument(
        "--iperf-bitrate",
        metavar="RATE",
        help="iperf3's target bitrate (-b), e.g. 100M (default: unlimited; 50M with --pcap, "
        "to keep the captures small)",
    )
    cluster.add_argument(
        "--nsh-function",
        metavar="PATH",
        type=Path,
        help="the nsh-flowcount binary (default: build/nsh-flowcount, $PATH, or built "
        "from examples/nsh)",
    )
    cluster.set_defaults(handler=_cluster)
    ha = sub.add_parser(
        "ha",
        help="a router pair loses its master: VRRP, NAT state in sync, no TCP connection lost",
    )
    ha.add_argument("--json", action="store_true", help="print the results as JSON")
    ha.add_argument(
        "--advert-interval",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="VRRP advertisement interval (default 0.1)",
    )
    ha.add_argument(
        "--max-outage-ms",
        type=float,
        default=300.0,
        help="the longest outage a switch may cause (default 300)",
    )
    ha.set_defaults(handler=_ha)


def _switch(args: argparse.Namespace) -> int:
    from pktchain.demo.switch import run_switch_demo

    return run_switch_demo(json_output=args.json, iperf_seconds=args.iperf_seconds)


def _sfc(args: argparse.Namespace) -> int:
    from pktchain.demo.sfc import run_sfc_demo

    return run_sfc_demo(json_output=args.json, window=args.window, hold=args.hold)


def _router(args: argparse.Namespace) -> int:
    from pktchain.demo.router import run_router_demo

    return run_router_demo(json_output=args.json)


def _cluster(args: argparse.Namespace) -> int:
    from pktchain.demo.cluster import run_cluster_demo

    if args.iperf_seconds <= 0:
        from pktchain.errors import UsageError

        raise UsageError(f"--iperf-seconds must be positive, got {args.iperf_seconds:g}")
    return run_cluster_demo(
        json_output=args.json,
        pcap_dir=args.pcap,
        iperf_seconds=args.iperf_seconds,
        iperf_bitrate=args.iperf_bitrate,
        nsh_function=args.nsh_function,
    )


def _ha(args: argparse.Namespace) -> int:
    from pktchain.demo.ha import run_ha_demo

    return run_ha_demo(
        json_output=args.json,
        advert_interval=args.advert_interval,
        max_outage_ms=args.max_outage_ms,
    )
