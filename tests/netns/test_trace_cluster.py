"""A dry run that continues on the next node of a cluster.

Two nodes on an underlay with the lab's etcd: n1 holds the client, n2 the
server and `fw2`, a native firewall (n2's functions file) that is the chain's
only port pair. Both nodes serve their REST API on their underlay address with
one token. A trace from the client on n1 shows n1's stages, the datagram that
leaves for n2 with its NSH (SPI, SI), then n2's stages (each hop says which
node recorded it): the arrival, the firewall, the server's port.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from pktchain.lab import Lab, wait_until
from pktchain.linux.netns import entered
from pktchain.node.control import request
from pktchain.node.process import NodeProcess
from support.trace import run_trace, trace

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
TOPOLOGY: dict[str, Any] = {
    "nodes": {"n1": {}, "n2": {}},
    "hosts": {
        "client": {
            "node": "n1",
            "interfaces": {
                "eth0": {"attach": "node", "mac": CLIENT_MAC, "addresses": [f"{CLIENT}/24"]}
            },
        },
        "server": {
            "node": "n2",
            "interfaces": {
                "eth0": {"attach": "node", "mac": SERVER_MAC, "addresses": [f"{SERVER}/24"]}
            },
        },
    },
}
FIREWALL: dict[str, Any] = {
    "default": "accept",
    "rules": [{"name": "no-telnet", "action": "drop", "protocol": "tcp", "dport": [23]}],
}


@dataclass
class Cluster:
    lab: Lab
    nodes: dict[str, NodeProcess]
    token: str
    chain: dict[str, Any]


def sfc(node: NodeProcess, action: str, collection: str, **params: Any) -> dict[str, Any]:
    reply = request(node.control, "sfc", action=action, collection=collection, **params)
    assert reply.get("ok"), reply
    return reply


def build_chain(node: NodeProcess) -> dict[str, Any]:
    """client -> fw2 (on n2) -> server, for every packet from the client to the server."""
    ports = {p["name"]: p["id"] for p in sfc(node, "list", "ports")["resources"]}
    pair = sfc(
        node,
        "create",
        "port_pairs",
        body={"name": "FW2", "ingress": ports["fw2:ingress"], "egress": ports["fw2:egress"]},
    )["resource"]
    group = sfc(node, "create", "port_pair_groups", body={"name": "PG", "port_pairs": [pair["id"]]})
    classifier = sfc(
        node,
        "create",
        "flow_classifiers",
        body={
            "name": "FC",
            "logical_source_port": ports["client:eth0"],
            "logical_destination_port": ports["server:eth0"],
        },
    )["resource"]
    chain = sfc(
        node,
        "create",
        "port_chains",
        body={
            "name": "PC",
            "port_pair_groups": [group["resource"]["id"]],
            "flow_classifiers": [classifier["id"]],
        },
    )["resource"]
    return dict(chain)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("tracecluster")
    topology = tmp / "topology.yaml"
    topology.write_text(json.dumps(TOPOLOGY))
    token = secrets.token_hex(16)
    token_file = tmp / "api-token"
    token_file.touch(mode=0o600)
    token_file.write_text(token)
    functions = tmp / "fw2.yaml"
    functions.write_text(
        yaml.safe_dump(
            {
                "functions": [
                    {"name": "fw2", "kind": "firewall", "network": "default", "config": FIREWALL}
                ]
            }
        )
    )
    lab = Lab.up(topology, name=f"ctr{int(time.time() * 1000) % 100000}")
    nodes: dict[str, NodeProcess] = {}
    try:
        etcd = lab.topology.etcd.client_url if lab.topology.etcd else None
        for name in ("n1", "n2"):
            args = ["--api-token-file", str(token_file)]
            if name == "n2":
                args += ["--functions", str(functions)]
            nodes[name] = NodeProcess(
                f"{lab.name}-{name}",
                topology=topology,
                lab_name=lab.name,
                node=name,
                etcd=etcd,
                api=f"{lab.topology.node(name).underlay.ip}:0",
                args=tuple(args),
                log_path=tmp / f"{name}.log",
            )
            nodes[name].spawn()
        for node in nodes.values():
            node.wait_ready(30)

        def everyone_heard() -> bool:
            for name, node in nodes.items():
                status = node.status()["cluster"] or {}
                peers = (status.get("peers") or {}).get("peers", {})
                other = "n2" if name == "n1" else "n1"
                if not peers.get(f"{lab.name}-{other}", peers.get(other, {})).get("alive"):
                    return False
            return True

        wait_until(everyone_heard, timeout=30, what="n1 and n2 hearing each other")
        chain = build_chain(nodes["n1"])
        wait_until(
            lambda: bool(nodes["n2"].status()["steering"]["chains"]),
            timeout=10,
            what="n2 steering the chain",
        )
        # n1 puts fw2 in its plan once it knows its ports and n2 is a live peer.
        client = lab.host("client")

        def through_the_firewall() -> bool:
            client.run(["ping", "-c", "1", "-W", "1", SERVER], timeout=5)
            return any(flow["path"] == ["FW2"] for flow in nodes["n1"].flows())

        wait_until(through_the_firewall, timeout=15, what="n1 steering through fw2 on n2")
        yield Cluster(lab, nodes, token, chain)
    finally:
        for node in nodes.values():
            node.stop()
        lab.down()


def functions_state(node: NodeProcess) -> Any:
    return {
        function["name"]: (function.get("tables"), function.get("counters"))
        for function in node.functions()
    }


def flows_of(node: NodeProcess, sport: int) -> list[dict[str, Any]]:
    return [flow for flow in node.flows() if flow["sport"] == sport]


def by_node(result: dict[str, Any], node: NodeProcess) -> list[dict[str, Any]]:
    return [hop for hop in result["hops"] if hop["node"] == node.name and not hop.get("copy")]


def test_a_dry_run_continues_on_the_node_of_the_chain_s_function(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    before = (functions_state(n2), flows_of(n1, 40000), flows_of(n2, 40000))
    result = trace(n1, "--from", "client:eth0", "proto=tcp", f"dst={SERVER}", "dport=80")
    after = (functions_state(n2), flows_of(n1, 40000), flows_of(n2, 40000))
    assert after == before, "a dry run changed a node"
    assert not before[1] and not before[2]

    # Every hop says which node recorded it: n1's, then n2's.
    nodes = [hop["node"] for hop in result["hops"]]
    assert nodes == sorted(nodes, key=[n1.name, n2.name].index)
    first, second = by_node(result, n1), by_node(result, n2)
    assert [hop["stage"] for hop in first] == [
        "ingress",
        "fast-path",
        "port-security",
        "rate-limits",
        "steering",
        "egress",
    ]
    steering, leaving = first[4], first[5]
    assert steering["decision"] == "classified"
    assert steering["groups"][0]["chosen"] == "FW2"
    spi = cluster.chain["chain_id"]
    assert steering["entry"]["nsh"] == {"spi": spi, "si": 255}
    assert steering["entry"]["next"] == f"{n2.name}/default"
    # Out on the underlay, in NSH: the chain's path, its first hop.
    assert leaving["kind"] == "underlay"
    assert leaving["node_to"] == n2.name
    underlay = cluster.lab.topology.node("n2").underlay.ip
    assert leaving["address"] == f"{underlay}:4790"
    assert (leaving["nsh"]["spi"], leaving["nsh"]["si"]) == (spi, 255)
    assert leaving["nsh"]["switched"] is False
    assert leaving["nsh"]["ttl"] == 63
    assert leaving["frame"]["ip.dst"] == SERVER
    assert "arrival" not in leaving

    assert [hop["stage"] for hop in second] == [
        "ingress",
        "steering",
        "function",
        "steering",
        "egress",
        "fast-path-install",
    ]
    arrived, joined, firewall, pinned, egress, _install = second
    assert arrived["kind"] == "underlay"
    assert arrived["port"] == f"{n1.name}/default"
    assert arrived["nsh"]["spi"] == spi and arrived["nsh"]["si"] == 255
    assert arrived["nsh"]["tags"] == leaving["nsh"]["tags"]
    assert joined["decision"] == "joined"
    assert joined["nsh"] == {"spi": spi, "si": 255}
    assert joined["entry"]["path"] == ["FW2"]
    assert joined["entry"]["next"] == "fw2:ingress"
    assert (firewall["function"], firewall["kind"], firewall["verdict"]) == (
        "fw2",
        "firewall",
        "forward",
    )
    assert firewall["state"] == {"connections": 1}
    assert pinned["port"] == "fw2:egress" and pinned["entry"]["next"] == "switch"
    assert (egress["port"], egress["host"]) == ("server:eth0", "server")
    assert egress["frame"]["ip.dst"] == SERVER
    assert (result["result"], result["egress"], result["reason"]) == (
        "delivered",
        "server:eth0",
        None,
    )
    # Each node's times count from its own first stage.
    assert arrived["us"] < leaving["us"]


def test_a_drop_on_the_next_node_is_the_trace_s_end(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    before = functions_state(n2)
    result = trace(n1, "--from", "client:eth0", f"dst={SERVER}", "dport=23")
    assert functions_state(n2) == before
    (firewall,) = [hop for hop in result["hops"] if hop["stage"] == "function"]
    assert firewall["node"] == n2.name
    assert (firewall["verdict"], firewall["reason"]) == ("drop", "drop-rule")
    assert (result["result"], result["egress"]) == ("dropped", None)
    assert result["reason"] == "fw2: drop-rule"
    assert not [hop for hop in by_node(result, n2) if hop["stage"] == "egress"]
    # The text form names the node of every stage.
    done = run_trace(n1, "--from", "client:eth0", f"dst={SERVER}", "dport=23")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"[{n2.name}] function fw2 (firewall) in on ingress: drop" in text
    assert f"[{n1.name}] egress" in text
    assert "result: dropped: fw2: drop-rule" in text


def test_the_next_node_is_asked_with_the_api_token(cluster: Cluster) -> None:
    """n2's API refuses a trace without the token: n1's part went on with it."""
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    url = n2.api_url() + "/v2.0/pktchain/trace"
    body = {"from": "server:eth0", "fields": [f"dst={CLIENT}"]}
    with entered(cluster.lab.node("n1").netns), httpx.Client(timeout=10) as client:
        refused = client.post(url, json=body)
        answered = client.post(url, json=body, headers={"X-Auth-Token": cluster.token})
    assert refused.status_code == 401
    assert answered.status_code == 200, answered.text
    # The server's answer to the client is not chained: switched to n1 over the
    # underlay, and n2 asked n1 (with the token) for the rest.
    answer = answered.json()["trace"]
    assert answer["hops"][0]["node"] == n2.name
    leaving = next(hop for hop in answer["hops"] if hop.get("kind") == "underlay")
    assert (leaving["node"], leaving["node_to"]) == (n2.name, n1.name)
    assert leaving["nsh"]["switched"] is True
    assert (answer["result"], answer["egress"]) == ("delivered", "client:eth0")
    assert answer["hops"][-1]["node"] == n1.name
    result = trace(n1, "--from", "client:eth0", "proto=udp", f"dst={SERVER}", "dport=53")
    assert result["hops"][-1]["node"] == n2.name
    assert "did not answer" not in str(result["reason"])


def test_a_packet_flooded_on_the_next_node_is_shown_leaving_and_not_followed(
    cluster: Cluster,
) -> None:
    """A broadcast through the chain: n2 floods it after fw2, to the server and to n1."""
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    result = trace(
        n1, "--from", "client:eth0", "eth.dst=ff:ff:ff:ff:ff:ff", "proto=udp",
        "dst=10.0.0.255", "dport=9",
    )  # fmt: skip
    flood = next(hop for hop in result["hops"] if hop["stage"] == "flood")
    assert (flood["node"], flood["port"], flood["why"]) == (
        n2.name,
        "fw2:egress",
        "broadcast or multicast",
    )
    assert result["result"] == "delivered"
    assert sorted(result["egresses"]) == sorted([f"{n1.name}/default", "server:eth0"])
    back = next(
        hop for hop in by_node(result, n2) if hop["stage"] == "egress" and hop["kind"] == "underlay"
    )
    assert back["node_to"] == n1.name and back["nsh"]["switched"] is True
    assert result["hops"][-1]["node"] == n2.name  # n1 was not asked for the copy it gets
    assert not any("arrival" in hop for hop in result["hops"])
