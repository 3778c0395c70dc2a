"""`pktchain demo NAME`: run a demo; exit 0 only when every step worked."""

from __future__ import annotations

import argparse
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


def _switch(args: argparse.Namespace) -> int:
    from pktchain.demo.switch import run_switch_demo

    return run_switch_demo(json_output=args.json, iperf_seconds=args.iperf_seconds)
