"""The cluster part of `pktchain node status`."""

from __future__ import annotations

from rich.console import Console

from pktchain.node.report import cluster_table

CLUSTER = {
    "name": "pktchain",
    "etcd": ["http://10.250.0.254:2379"],
    "connected": True,
    "revision": 42,
    "underlay": "10.250.0.1:4790",
    "peers": {
        "address": "10.250.0.1:4790",
        "peers": {
            "n2": {"address": "10.250.0.2:4790", "alive": True, "silent": 0.05},
            "n3": {"address": "10.250.0.3:4790", "alive": False, "silent": 1.5},
        },
        "drops": {},
    },
    "nodes": ["n1", "n2", "n3", "n4"],
    "ports_down": {"n2": ["a", "b"]},
}


def rendered(cluster: dict[str, object], me: str) -> list[str]:
    console = Console(width=120, record=True)
    console.print(cluster_table(cluster, me))
    return console.export_text().splitlines()


def test_each_node_with_its_underlay_state_and_ports_down() -> None:
    lines = rendered(CLUSTER, "n1")
    assert "etcd revision 42, connected" in lines[0]
    row = {line.split()[1]: line for line in lines if line.startswith("│ n")}
    assert "10.250.0.1:4790" in row["n1"] and "this node" in row["n1"]
    assert "alive" in row["n2"] and row["n2"].split("│")[4].strip() == "2"
    assert "silent 1.5 s" in row["n3"]
    assert "no underlay" in row["n4"]


def test_a_node_cut_from_etcd_says_so() -> None:
    lines = rendered({**CLUSTER, "connected": False}, "n1")
    assert "NOT connected" in lines[0]
