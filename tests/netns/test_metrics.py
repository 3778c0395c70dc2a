"""The node's /metrics with real traffic: counters move with what hosts send.

Each scrape's exposition is also checked by promtool (Debian's prometheus
package), the reference reader of the format.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pktchain.demo.sfc import build_demo_chain, sfc_topology, start_web_server
from pktchain.lab import Lab
from pktchain.node.client import ChainingClient
from pktchain.node.process import NodeProcess
from support.sfc_lab import fetch
from support.topologies import node_hosts

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


NodeLab = Callable[..., tuple[Lab, NodeProcess]]
Samples = dict[str, list[tuple[dict[str, str], float]]]
TOKEN = "metrics-test-token"


def scrape(node: NodeProcess, token: str | None = None) -> tuple[str, Samples]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(node.api_url() + "/metrics", headers=headers, timeout=10.0)
    assert response.status_code == 200, response.text
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return response.text, found


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for have, v in samples.get(name, []) if labels.items() <= have.items()]
    assert len(found) == 1, f"{name} {labels}: {samples.get(name)}"
    return found[0]


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/install-deps installs it (Debian prometheus)")
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_port_counters_grow_with_a_ping_and_scrapes_need_the_token(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    lab, node = node_lab(node_hosts("h1", "h2"), args=("--api-token-file", str(token)))
    refused = httpx.get(node.api_url() + "/metrics", timeout=10.0)
    assert refused.status_code == 401
    kinds = {port["name"]: port["kind"] for port in node.status()["ports"]}
    assert kinds["h1:eth0"] in {"tap", "veth"}  # the host NIC the node made
    h1 = {"port": "h1:eth0", "network": "default", "kind": kinds["h1:eth0"]}
    h2 = {"port": "h2:eth0", "network": "default", "kind": kinds["h2:eth0"]}
    _text, before = scrape(node, TOKEN)
    n = 40
    ping = lab.host("h1").run(["ping", "-c", str(n), "-i", "0.01", "-W", "2", "10.0.0.2"])
    assert ping.ok, ping.stderr
    text, after = scrape(node, TOKEN)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # n echo requests in on h1 and out on h2, n replies the other way (ARP besides).
    assert grew("pktchain_port_received_packets_total", **h1) >= n
    assert grew("pktchain_port_sent_packets_total", **h2) >= n
    assert grew("pktchain_port_received_packets_total", **h2) >= n
    assert grew("pktchain_port_sent_packets_total", **h1) >= n
    assert grew("pktchain_port_forwarded_packets_total", **h1) >= n
    assert grew("pktchain_port_received_bytes_total", **h1) >= n * 98  # 84-byte ping + Ethernet
    came_in = grew("pktchain_fastpath_hits_total") + grew("pktchain_fastpath_misses_total")
    assert came_in >= 2 * n
    assert value(after, "pktchain_mac_table_entries", network="default") >= 2
    assert value(after, "pktchain_port_rate_limit_holds_total", **h1) == 0
    info = value(after, "pktchain_port_info", **h1)
    assert info == 1
    assert value(after, "process_resident_memory_bytes") > 0
    # The scrape before this one is among the requests timed.
    assert (
        value(
            after,
            "pktchain_api_request_duration_seconds_count",
            method="GET",
            route="/metrics",
            status="200",
        )
        >= 1
    )
    assert value(after, "pktchain_api_request_duration_seconds_count", route="", status="401") >= 1
    promtool_check(text)


def test_chain_hops_count_the_packets_that_cross_them(node_lab: NodeLab, tmp_path: Path) -> None:
    lab, node = node_lab(sfc_topology("sfc", 3))
    start_web_server(lab.host("dest_vm"), tmp_path)
    build_demo_chain(ChainingClient(node.control))
    _text, before = scrape(node)
    assert "pktchain_hop_packets_total" not in before or all(
        v == 0 for _labels, v in before["pktchain_hop_packets_total"]
    )
    fetch(lab, 10)
    text, after = scrape(node)
    hops = after["pktchain_hop_packets_total"]
    forward = {labels["group"]: 0.0 for labels, _v in hops if labels["direction"] == "forward"}
    for labels, v in hops:
        if labels["direction"] == "forward":
            forward[labels["group"]] += v
            assert labels["chain"] == "PC1"
    # Ten requests of a few packets each crossed both groups of PC1.
    assert forward.keys() == {"PG1", "PG2"}
    assert forward["PG1"] >= 10 * 3 and forward["PG2"] >= 10 * 3
    octets = sum(v for labels, v in after["pktchain_hop_bytes_total"] if labels["group"] == "PG2")
    assert octets >= forward["PG2"] * 54
    assert value(after, "pktchain_steering_events_total", event="classified") >= 10
    assert value(after, "pktchain_steering_flow_limit") > 0
    promtool_check(text)
