"""The virtual router on real hosts: NAT out, forwards in, TTL and ICMP, tables.

An inside host (10.0.0.0/24, default route via the router) and an outside host
(198.51.100.0/24, the router's upstream gateway) sit in two node networks; the
router runs in the node with its NAT on the outside interface.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pktchain.lab import Lab
from pktchain.node.client import ChainingClient
from pktchain.node.process import NodeProcess
from support.fn_lab import chain
from support.nat_lab import INSIDE, OUTSIDE, ROUTER, ROUTER_OUT, TOPOLOGY, curl, serve

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


def test_inside_host_reaches_the_outside_through_nat(routed: tuple[Lab, NodeProcess]) -> None:
    lab, node = routed
    assert curl(lab.host("inside"), f"http://{OUTSIDE}/") == "web on outside\n"
    assert lab.host("inside").run(["ping", "-c", "3", "-i", "0.2", "-W", "2", OUTSIDE]).ok
    router = node.router()
    tcp = [m for m in router["nat"] if m["proto"] == "tcp" and not m["static"]]
    assert tcp and all(m["external_address"] == ROUTER_OUT for m in tcp)
    assert router["counters"]["nat-translated-outbound"] > 0


@pytest.mark.parametrize("mode", [[], ["-I"]], ids=["udp", "icmp"])
def test_traceroute_shows_the_router_as_a_hop(
    routed: tuple[Lab, NodeProcess], mode: list[str]
) -> None:
    lab, node = routed
    # One probe at a time: sixteen at once (traceroute's default) as the very
    # first traffic would overflow the router's queue for the unresolved
    # gateway, which keeps only the latest packets (RFC 1122 §2.3.2.2).
    argv = ["traceroute", "-n", "-N", "1", "-w", "2", "-q", "1", "-m", "4", *mode, OUTSIDE]
    result = lab.host("inside").run(argv, timeout=60)
    assert result.ok, result.stderr
    hops = [line.split()[1] for line in result.stdout.splitlines()[1:]]
    assert hops == ["10.0.0.1", OUTSIDE], node.router()["counters"]


def test_the_outside_reaches_inside_services_by_admin_and_automatic_forwards(
    routed: tuple[Lab, NodeProcess], tmp_path: Path
) -> None:
    lab, node = routed
    outside = lab.host("outside")
    assert curl(outside, f"http://{ROUTER_OUT}:8080/") == "web on inside\n"
    # The inside host is tracked; its automatic port leads to its port 22.
    serve(lab.host("inside"), tmp_path / "ssh", INSIDE, 22, "service on 22\n")
    (host,) = node.router()["hosts"]
    assert host["ip"] == INSIDE and 49152 <= host["forward_port"] <= 65534
    assert curl(outside, f"http://{ROUTER_OUT}:{host['forward_port']}/") == "service on 22\n"
    # Nothing else inside is reachable from outside.
    closed = outside.run(["curl", "-sS", "--max-time", "2", f"http://{ROUTER_OUT}:8081/"])
    assert not closed.ok


def test_router_tables_from_the_command_line(routed: tuple[Lab, NodeProcess]) -> None:
    lab, node = routed
    assert curl(lab.host("inside"), f"http://{OUTSIDE}/") == "web on outside\n"
    base = [sys.executable, "-m", "pktchain", "node", "router", "--control", str(node.control)]
    table = subprocess.run(base, capture_output=True, text=True, timeout=30, check=True).stdout
    assert "NAT table" in table and INSIDE in table and "8080" in table
    data = json.loads(
        subprocess.run(
            [*base, "--json"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    )
    assert {f["external_port"] for f in data["port_forwards"]} >= {8080}
    assert [i["name"] for i in data["interfaces"]] == ["inside", "outside"]


@pytest.mark.slow
def test_demo_router_passes_and_reports_json() -> None:
    argv = [sys.executable, "-m", "pktchain", "demo", "router", "--json"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 0, report
    assert all(step["ok"] for step in report["steps"])
    hops = [s["data"]["hops"] for s in report["steps"] if "hops" in s["data"]]
    assert hops == [["10.0.0.1", "198.51.100.20"]] * 2
    assert {m["external_port"] for m in report["router"]["nat"] if m["static"]} >= {8080}


def test_established_flows_take_the_fast_path_and_keep_their_nat_session(
    routed: tuple[Lab, NodeProcess],
) -> None:
    """Only a flow's first packets and its TCP SYN/FIN/RST reach the router."""
    lab, node = routed
    server = lab.host("outside").popen(["iperf3", "-s", "-1", "-B", OUTSIDE])
    lab.host("outside").wait_listening(5201, timeout=10)
    try:
        result = lab.host("inside").run(
            ["iperf3", "-c", OUTSIDE, "-t", "2", "--connect-timeout", "3000", "-J"], timeout=30
        )
    finally:
        server.wait(timeout=10)
    assert result.ok, result.stderr
    report = json.loads(result.stdout)
    segments = report["end"]["sum_received"]["bytes"] // 65536  # at least this many frames crossed
    fast = node.status()["fast_path"]
    translated = node.router()["counters"]["nat-translated-outbound"]
    assert fast["installed"] >= 2  # the data connection, both directions
    assert fast["hits"] > segments // 2, (fast, translated)
    assert translated < fast["hits"] // 10, (fast, translated)
    # The NAT still knows the connections the fast path carried.
    assert any(m["proto"] == "tcp" and m["sessions"] for m in node.router()["nat"])


def test_native_functions_chained_on_the_routers_interface(
    node_lab: Callable[..., tuple[Lab, NodeProcess]], tmp_path: Path
) -> None:
    """A firewall steered on what the router sends outside: the router's ports are
    ports like any other, so chains of native functions start at them."""
    router_file = tmp_path / "router.yaml"
    router_file.write_text(yaml.safe_dump(ROUTER))
    functions = tmp_path / "functions.yaml"
    rules = [{"action": "reject", "protocol": "tcp", "dport": 8081}]
    functions.write_text(
        yaml.safe_dump(
            {
                "functions": [
                    {
                        "name": "fw",
                        "kind": "firewall",
                        "network": "outside",
                        "config": {"default": "accept", "rules": rules},
                    }
                ]
            }
        )
    )
    lab, node = node_lab(
        TOPOLOGY, args=("--router", str(router_file), "--functions", str(functions))
    )
    for port in (80, 8081):
        serve(lab.host("outside"), tmp_path / f"web{port}", OUTSIDE, port, f"port {port}\n")
    chain(
        ChainingClient(node.control),
        ["fw"],
        name="egress-filter",
        source="router:outside",
        destination="outside:eth0",
        protocol="tcp",
    )
    inside = lab.host("inside")
    assert curl(inside, f"http://{OUTSIDE}/") == "port 80\n"
    refused = inside.run(["curl", "-sS", "--max-time", "5", f"http://{OUTSIDE}:8081/"])
    assert refused.returncode == 7, refused.stderr  # connection refused: the firewall's RST
    fw = next(f for f in node.functions() if f["name"] == "fw")
    assert fw["counters"]["reject-tcp-reset"] >= 1, fw["counters"]
    assert fw["counters"]["accepted"] > 0
