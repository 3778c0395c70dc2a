"""The node carries established flows between veth ports in the kernel.

h1 and h2 are attached by veth pairs and chained through a stateful firewall
(support.fn_lab): the firewall leases each flow, the node fuses its journey,
and with the kernel fast path (the default) the fused entries go into the tc
program's map, which then carries the flow's packets host to host without the
node reading them. Real programs drive it (iperf3, ping); the hosts' own
interface counters are the oracle of what was sent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from pktchain.lab import Lab, wait_until
from pktchain.node.client import ChainingClient, request
from pktchain.node.process import NodeProcess
from support.fn_lab import H2, NodeLab, chain, function_status, ping, plug, rest, serve, topology

STATEFUL = [
    {"action": "accept", "state": ["established", "related"]},
    {"action": "drop", "state": ["invalid"]},
    {"action": "accept", "direction": "ingress", "state": ["new"]},
]
FIREWALL = {"name": "fw1", "kind": "firewall", "network": "default", "config": {"rules": STATEFUL}}


def start(node_lab: NodeLab, tmp_path: Path, *args: str) -> tuple[Lab, NodeProcess]:
    spec = topology({})
    spec["host_nic"] = "veth"
    lab, node = node_lab(spec, args=args)
    plug(node, FIREWALL)
    chain(ChainingClient(node.control), ["fw1"])
    serve(lab, tmp_path, 1000)
    return lab, node


def sent(lab: Lab, host: str) -> int:
    """Frames the host's eth0 sent, by its own count."""
    with IPRoute(netns=lab.host(host).netns) as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname="eth0")[0])[0]
        return int(link.get_attr("IFLA_STATS64")["tx_packets"])


def iperf(lab: Lab, seconds: int = 3) -> dict[str, Any]:
    lab.host("h2").popen(["iperf3", "-s", "-1", "-p", "5201"])
    lab.host("h2").wait_listening(5201, timeout=10)
    result = lab.host("h1").run(
        ["iperf3", "-c", H2, "-p", "5201", "-t", str(seconds), "-J"], timeout=30 + seconds
    )
    assert result.ok, result.stderr
    received: dict[str, Any] = json.loads(result.stdout)["end"]["sum_received"]
    return received


def kernel(node: NodeProcess) -> dict[str, Any]:
    status: dict[str, Any] = node.status()["fast_path"]["kernel"]
    return status


def test_established_flows_ride_the_kernel_and_leave_it_when_revoked(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    lab, node = start(node_lab, tmp_path)
    assert kernel(node)["active"] and kernel(node)["ports"] == 2
    ping(lab, 3)
    received = iperf(lab, 3)
    assert received["bits_per_second"] > 1e9, received
    status = node.status()
    carried = status["fast_path"]["kernel"]
    # The flow's entries (both directions of the TCP flow, the ping's) are in the map.
    assert carried["entries"] >= 2, json.dumps(status["fast_path"])
    ports = {p["name"]: p for p in status["ports"]}
    # A port counts what it received either way: read by the node, or carried.
    received = ports["h1:eth0"]["rx_packets"] + ports["h2:eth0"]["rx_packets"]
    read = received - carried["hits"]
    # Most packets never reached the node: the kernel carried them.
    assert carried["hits"] > 5 * read, (carried, read)
    assert status["fast_path"]["hits"] >= carried["hits"]  # both fast paths'
    # Every frame the hosts sent was read by the node once or carried by the
    # kernel, never both (the packet socket would have seen the carried ones).
    wait_until(
        lambda: (
            sent(lab, "h1") + sent(lab, "h2")
            == sum(p["rx_packets"] for p in node.status()["ports"] if p["kind"] == "veth")
        ),
        timeout=5,
        what="the hosts' frames, each counted once",
    )
    # ... and sent on by the other port (what the kernel carried included).
    ports = {p["name"]: p for p in node.status()["ports"]}
    assert ports["h2:eth0"]["tx_packets"] >= ports["h1:eth0"]["forwarded"] - 10, ports
    with urllib.request.urlopen(node.api_url() + "/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    assert "pktchain_fastpath_kernel_active 1.0" in metrics
    assert "pktchain_fastpath_kernel_hits_total" in metrics
    leases = function_status(node, "fw1")["counters"]["leases-granted"]
    assert leases >= 2

    # The chain goes: the flows' entries leave the kernel, traffic still flows.
    code, body = rest(node, "GET", "/v2.0/sfc/port_chains")
    assert code == 200, body
    for port_chain in body["port_chains"]:
        code, _ = rest(node, "DELETE", f"/v2.0/sfc/port_chains/{port_chain['id']}")
        assert code == 204
    wait_until(lambda: kernel(node)["entries"] == 0, timeout=5, what="the kernel's entries gone")
    ping(lab, 2)
    assert iperf(lab, 1)["bits_per_second"] > 1e8


def test_without_the_kernel_fast_path_python_carries_the_flow(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    lab, node = start(node_lab, tmp_path, "--no-kernel-fastpath")
    state = kernel(node)
    assert not state["active"] and "--no-kernel-fastpath" in state["reason"]
    ping(lab, 3)
    iperf(lab, 2)
    status = node.status()
    assert status["fast_path"]["hits"] > 100
    assert status["fast_path"]["kernel"]["hits"] == 0
    reply = request(node.control, "status")
    assert reply["fast_path"]["kernel"]["entries"] == 0


def test_frames_the_punt_queue_had_no_room_for_are_counted_as_kernel_drops(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    lab, node = start(node_lab, tmp_path)
    assert kernel(node)["active"]
    ping(lab, 2)
    before = {p["name"]: p for p in node.status()["ports"]}["h1:eth0"]
    sent_before = sent(lab, "h1")
    # The node stops reading; new flows (each datagram its own port pair, so no
    # entry carries them) go to the port's punt TAP, whose queue overflows.
    flood = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for n in range(3000):\n"
        f"    s.sendto(b'x' * 32, ('{H2}', 20000 + n % 20000))\n"
    )
    os.kill(node.pid, signal.SIGSTOP)
    try:
        lab.host("h1").run([sys.executable, "-c", flood], check=True, timeout=30)
    finally:
        os.kill(node.pid, signal.SIGCONT)
    flooded = sent(lab, "h1") - sent_before
    assert flooded >= 3000

    def accounted() -> bool:
        after = {p["name"]: p for p in node.status()["ports"]}["h1:eth0"]
        return (
            after["rx_packets"]
            - before["rx_packets"]
            + (after["rx_kernel_drops"] - before["rx_kernel_drops"])
            == sent(lab, "h1") - sent_before
        )

    wait_until(accounted, timeout=10, what="every frame h1 sent read or counted as dropped")
    after = {p["name"]: p for p in node.status()["ports"]}["h1:eth0"]
    assert after["rx_kernel_drops"] - before["rx_kernel_drops"] > 0, after
    ping(lab, 2)  # the port still works
