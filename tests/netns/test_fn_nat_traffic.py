"""The NAT function in a service chain, on real traffic: h1 (inside) -> [firewall, nat] -> h2.

h1 (10.0.0.1) sits in node network ``inside`` with the firewall and the NAT's
ingress; h2 (198.51.100.2) in ``outside`` with the NAT's egress. A symmetric
chain steers every IPv4 packet from h1 to h2 through the firewall (stateful:
h1 opens, only answers come back) and the NAT (external address
198.51.100.1), and the replies back. What the user configures is what
docs/sfc.md ("Functions that translate") says: h1 reaches h2's MAC (ARP does
not cross node networks, so a static neighbour here), and h2 sends to the
external address at the NAT's egress MAC (nobody answers ARP for it).

Real clients judge it: ping, curl, iperf3 and a UDP socket that must hear
ICMP port unreachable; tcpdump in h2 (decoded by scapy) shows only the
external address, and the NAT's session count matches the connections made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP

from pktchain.lab import Lab
from pktchain.node.client import ChainingClient
from pktchain.node.control import request
from pktchain.node.process import NodeProcess
from support.fn_lab import (
    H1_MAC,
    H2_MAC,
    NO_IPV6,
    PAGE,
    NodeLab,
    capture,
    chain,
    function_status,
    plug,
)

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath

H1, H2, EXTERNAL = "10.0.0.1", "198.51.100.2", "198.51.100.1"

TOPOLOGY: dict[str, Any] = {
    "lab": "natchain",
    "hosts": {
        "h1": {
            "sysctls": NO_IPV6,
            "interfaces": {
                "eth0": {
                    "attach": "node",
                    "network": "inside",
                    "mac": H1_MAC,
                    "addresses": [f"{H1}/24"],
                }
            },
            "routes": [{"to": "198.51.100.0/24", "dev": "eth0"}],
        },
        "h2": {
            "sysctls": NO_IPV6,
            "interfaces": {
                "eth0": {
                    "attach": "node",
                    "network": "outside",
                    "mac": H2_MAC,
                    "addresses": [f"{H2}/24"],
                }
            },
        },
    },
}

FIREWALL: dict[str, Any] = {
    "name": "fw1",
    "kind": "firewall",
    "network": "inside",
    "config": {
        "default": "drop",
        "rules": [
            {"action": "accept", "state": ["established", "related"]},
            {"action": "accept", "direction": "ingress", "state": ["new"]},
        ],
    },
}
NAT: dict[str, Any] = {
    "name": "nat1",
    "kind": "nat",
    "network": {"ingress": "inside", "egress": "outside"},
    "config": {"external_address": EXTERNAL, "internal_networks": ["10.0.0.0/24"]},
}

UDP_REFUSED = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.connect(("198.51.100.2", 9))
for _ in range(5):
    s.send(b"anyone?")
    try:
        s.recv(100)
        print("answered")
        break
    except ConnectionRefusedError:
        print("refused")
        break
    except TimeoutError:
        continue
else:
    print("timeout")
"""


def neighbour(lab: Lab, host: str, address: str, mac: str) -> None:
    """A permanent neighbour entry in `host` (what the user configures, docs/sfc.md)."""
    argv = ["ip", "neigh", "replace", address, "lladdr", mac, "dev", "eth0", "nud", "permanent"]
    lab.host(host).run(argv, check=True)


def port_mac(node: NodeProcess, name: str) -> str:
    for port in node.status()["ports"]:
        if port["name"] == name:
            return str(port["mac"])
    raise KeyError(name)


@pytest.fixture
def natchain(node_lab: NodeLab, tmp_path: Path) -> tuple[Lab, NodeProcess]:
    lab, node = node_lab(TOPOLOGY)
    plug(node, FIREWALL)
    plug(node, NAT)
    chain(ChainingClient(node.control), ["fw1", "nat1"])
    neighbour(lab, "h1", H2, H2_MAC)
    neighbour(lab, "h2", EXTERNAL, port_mac(node, "nat1:egress"))
    www = tmp_path / "www"
    www.mkdir()
    (www / PAGE).write_bytes(bytes(range(256)) * 40)
    lab.host("h2").popen(["python3", "-m", "http.server", "80", "--bind", H2], cwd=www)
    lab.host("h2").popen(["iperf3", "-s", "-1", "-B", H2])
    lab.host("h2").wait_listening(80, timeout=10)
    lab.host("h2").wait_listening(5201, timeout=10)
    return lab, node


def translated_flows(node: NodeProcess) -> list[dict[str, Any]]:
    """The node's steered flows that the NAT translated (`pktchain node flows`)."""
    rows = request(node.control, "flows")["flows"]
    return [row for row in rows if row["chain"] and row["translated"]]


def test_hosts_behind_a_nat_in_a_chain_reach_the_outside_and_hear_back(
    natchain: tuple[Lab, NodeProcess], tmp_path: Path
) -> None:
    lab, node = natchain
    h1 = lab.host("h1")
    with capture(lab.host("h2"), "eth0", tmp_path / "h2.pcap", "ip") as seen:
        ping = h1.run(["ping", "-c", "4", "-i", "0.2", "-W", "2", H2], timeout=20)
        assert ping.ok and " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
        got = h1.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
                f"http://{H2}/{PAGE}",
            ],
            timeout=20,
        )
        assert got.ok and got.stdout.split() == ["200", str(256 * 40)], got.stderr
        iperf = h1.run(
            ["iperf3", "-c", H2, "-t", "2", "--connect-timeout", "3000", "-J"], timeout=30
        )
        assert iperf.ok, iperf.stdout[-500:]
        assert json.loads(iperf.stdout)["end"]["sum_received"]["bytes"] > 1_000_000
        refused = h1.run(["python3", "-c", UDP_REFUSED], timeout=20)
        assert refused.stdout.split() == ["refused"], refused.stdout + refused.stderr

    # h2 saw only the external address: the inside address never left the chain.
    sources = {packet[IP].src for packet in seen if IP in packet}
    assert sources == {EXTERNAL, H2}
    assert any(ICMP in p and p[ICMP].type == 3 and p[IP].dst == EXTERNAL for p in seen)

    # One NAT session per connection: the ping, curl's, iperf3's two, the UDP socket's.
    nat = function_status(node, "nat1")
    assert nat["session_count"] == 5, nat
    flows = translated_flows(node)
    assert len(flows) == nat["session_count"]
    assert all(row["translated"][0]["src"] == EXTERNAL for row in flows)
    assert all(row["path"] == ["pp-fw1", "pp-nat1"] for row in flows)
    # Replies came back through the firewall, as answers of what h1 opened, and
    # the port unreachable as an error about one of them.
    counters = function_status(node, "fw1")["counters"]
    assert counters["drop-policy"] == 0, counters
    assert counters["state-related"] >= 1, counters
    status = node.status()
    assert status["steering"]["stats"]["translated"] >= 5
    assert status["fast_path"]["hits"] > 0  # iperf3's stream took the fused entry
