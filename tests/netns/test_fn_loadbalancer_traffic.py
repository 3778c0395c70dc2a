"""The load balancer on real traffic: curl to a VIP spreads over backends and survives one dying.

A client reaches ``VIP:80`` through the node's load balancer ``lb1``; three
backends each serve a page naming themselves. Two shapes: two-arm (the
client's network ``front`` on the ``frontend`` interface, the backends'
network ``back`` on ``backend``) and one-arm (everything in one network, both
interfaces on it). The load balancer answers ARP for the VIP and for its
``source_ip``, resolves the backends by ARP, and checks them with TCP SYNs it
sends itself; a backend whose server is stopped is taken out of the table by
those checks, after which every request succeeds on the others. A backend
drained through the REST API (a live reconfiguration) takes no new requests.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from pktchain.lab import Lab, wait_until
from pktchain.node.process import NodeProcess
from support.fn_lab import NO_IPV6, NodeLab, function_status, rest
from support.nat_lab import NO_LOOKUP_SERVER

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


VIP = "10.0.0.100"
CLIENT = "10.0.0.1"
BACKENDS = {"b1": "10.1.0.11", "b2": "10.1.0.12", "b3": "10.1.0.13"}
SOURCE = "10.1.0.5"
ONE_ARM = {"b1": "10.0.0.11", "b2": "10.0.0.12", "b3": "10.0.0.13"}
ONE_ARM_SOURCE = "10.0.0.5"
PADDING = 200_000


def topology(one_arm: bool) -> dict[str, Any]:
    backends = ONE_ARM if one_arm else BACKENDS

    def host(network: str, mac: str, address: str) -> dict[str, Any]:
        eth0 = {"attach": "node", "network": network, "mac": mac, "addresses": [f"{address}/24"]}
        return {"sysctls": NO_IPV6, "interfaces": {"eth0": eth0}}

    hosts = {"client": host("front", "02:00:00:00:00:01", CLIENT)}
    for n, (name, address) in enumerate(backends.items(), start=11):
        hosts[name] = host("front" if one_arm else "back", f"02:00:00:00:00:{n:02x}", address)
    return {"lab": "lb", "hosts": hosts}


def load_balancer(one_arm: bool) -> dict[str, Any]:
    backends = ONE_ARM if one_arm else BACKENDS
    return {
        "name": "lb1",
        "kind": "load-balancer",
        "network": "front" if one_arm else {"frontend": "front", "backend": "back"},
        "config": {
            "frontend_mac": "02:00:00:00:10:01",
            "backend_mac": "02:00:00:00:10:02",
            "source_ip": ONE_ARM_SOURCE if one_arm else SOURCE,
            "health": {"interval": 1.0, "timeout": 0.9, "rise": 2, "fall": 2},
            "services": [
                {
                    "vip": VIP,
                    "port": 80,
                    "backends": [{"ip": ip, "port": 80} for ip in backends.values()],
                }
            ],
        },
    }


def start(
    node_lab: NodeLab, tmp_path: Path, one_arm: bool
) -> tuple[Lab, NodeProcess, dict[str, subprocess.Popen[bytes]]]:
    """The lab, its node running lb1 (from a functions file), and each backend's web server."""
    path = tmp_path / "functions.yaml"
    path.write_text(yaml.safe_dump({"functions": [load_balancer(one_arm)]}, sort_keys=False))
    lab, node = node_lab(topology(one_arm), args=("--functions", str(path), "--api", "127.0.0.1:0"))
    servers = {}
    for name, address in (ONE_ARM if one_arm else BACKENDS).items():
        root = tmp_path / name
        root.mkdir()
        # The name, then enough bytes for the fast path to carry most of the page.
        (root / "index.html").write_text(f"{name}\n" + "." * PADDING)
        host = lab.host(name)
        servers[name] = host.popen(["python3", "-c", NO_LOOKUP_SERVER, address, "80"], cwd=root)
        host.wait_listening(80, timeout=10)
    wait_until(
        lambda: all_up(node),
        timeout=15,
        what="the load balancer's health checks to pass on every backend",
    )
    return lab, node, servers


def backends_of(node: NodeProcess) -> dict[str, dict[str, Any]]:
    (service,) = function_status(node, "lb1")["services"]
    return {row["ip"]: row for row in service["backends"]}


def all_up(node: NodeProcess) -> bool:
    return all(row["state"] == "up" for row in backends_of(node).values())


def fetch(lab: Lab, count: int) -> Counter[str]:
    """`count` requests to the VIP, each a new connection; which backend answered each."""
    answers: Counter[str] = Counter()
    for _ in range(count):
        result = lab.host("client").run(
            ["curl", "-sS", "--max-time", "5", f"http://{VIP}/index.html"], timeout=15
        )
        assert result.ok, result.stderr
        name, _, padding = result.stdout.partition("\n")
        assert len(padding) == PADDING
        answers[name] += 1
    return answers


@pytest.mark.parametrize("one_arm", [False, True], ids=["two-arm", "one-arm"])
def test_curl_spreads_over_the_backends_and_survives_one_dying(
    node_lab: NodeLab, tmp_path: Path, one_arm: bool
) -> None:
    lab, node, servers = start(node_lab, tmp_path, one_arm)
    answers = fetch(lab, 30)
    assert set(answers) == {"b1", "b2", "b3"}, answers
    status = function_status(node, "lb1")
    assert status["counters"]["connections-opened"] >= 30
    assert status["counters"]["leases-granted"] >= 30
    assert status["counters"]["health-checks-passed"] >= 6
    assert node.status()["fast_path"]["hits"] > 30  # leased connections left the slow path

    # b2's server stops: its port refuses, the checks take it out of the table.
    victim = ONE_ARM["b2"] if one_arm else BACKENDS["b2"]
    servers["b2"].terminate()
    servers["b2"].wait(timeout=10)
    wait_until(
        lambda: backends_of(node)[victim]["state"] == "down",
        timeout=10,
        what="the load balancer to mark b2 down",
    )
    answers = fetch(lab, 20)
    assert set(answers) <= {"b1", "b3"} and sum(answers.values()) == 20, answers
    rows = backends_of(node)
    assert rows[victim]["health"]["last_result"] == "refused"
    assert function_status(node, "lb1")["services"][0]["backends_in_table"] == 2


def test_draining_a_backend_live_sends_new_connections_elsewhere(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    lab, node, _ = start(node_lab, tmp_path, one_arm=False)
    config = load_balancer(one_arm=False)["config"]
    config["services"][0]["backends"][0]["draining"] = True  # b1
    code, body = rest(node, "PUT", "/v2.0/pktchain/functions/lb1", {"function": {"config": config}})
    assert code == 200, body
    assert backends_of(node)[BACKENDS["b1"]]["state"] == "draining"
    answers = fetch(lab, 20)
    assert set(answers) == {"b2", "b3"}, answers
