"""`pktchain node status` prints the port rate limits and the ports held."""

from __future__ import annotations

import io

from rich.console import Console

from pktchain.node.dataplane.limits import DEFAULT_PORT_LIMITS, PortLimits, Rate
from pktchain.node.report import port_limits_line, print_status


def status(limits: PortLimits, holds: int) -> dict[str, object]:
    port = {
        "name": "s:eth0",
        "kind": "tap",
        "mac": "02:00:00:00:01:66",
        "secured": True,
        "policed": True,
        "holds": holds,
        "rx_packets": 70000,
        "rx_bytes": 4200000,
        "tx_packets": 3,
        "tx_bytes": 180,
        "drops": {"rate-flood": 69000},
        "tx_errors": {},
    }
    return {
        "node": "n",
        "ports": [port],
        "port_limits": limits.status(),
        "switch": {
            "mac_entries": 1,
            "mac_aging": 300.0,
            "learned": 1,
            "moved": 0,
            "aged": 0,
            "floods": 1000,
        },
        "steering": {
            "chains": [],
            "flows": 0,
            "stats": {"classified": 0, "unclassified": 0, "repinned": 0, "expired": 0},
        },
    }


def test_the_limits_and_the_held_ports_are_one_line() -> None:
    limits = PortLimits(arp=Rate(50.0, 10), icmp_router=None)
    line = port_limits_line(limits.status(), status(limits, 12)["ports"])  # type: ignore[arg-type]
    assert line == (
        "arp 50/s burst 10; icmp router off; flood 1000/s burst 500; "
        "slow path 1000/s burst 500; held: s:eth0 12x"
    )


def test_status_prints_them_under_the_switch() -> None:
    out = io.StringIO()
    print_status(status(DEFAULT_PORT_LIMITS, 0), Console(file=out, width=200))  # type: ignore[arg-type]
    text = out.getvalue()
    assert "port limits: arp 100/s burst 200; icmp router 100/s burst 200;" in text
    assert "rate-flood=69000" in text and "held:" not in text


def test_a_packet_sockets_kernel_drops_show_with_the_drops_and_its_driver() -> None:
    report = status(DEFAULT_PORT_LIMITS, 0)
    port = report["ports"][0]  # type: ignore[index]
    port.update(kind="veth", rx_kernel_drops=42)
    out = io.StringIO()
    print_status(report, Console(file=out, width=200))  # type: ignore[arg-type]
    text = out.getvalue()
    assert "veth" in text and "rx-kernel=42" in text
