"""What `pktchain node --node NODE` takes from a cluster topology (pure: nothing runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pktchain.node.config import build_config, cluster_node, ports_from_topology
from support.paths import EXAMPLES

CLUSTER = EXAMPLES / "lab-cluster.yaml"


def test_a_node_takes_only_its_hosts_ports() -> None:
    ports = ports_from_topology(CLUSTER, node="n3")
    assert [port.name for port in ports] == ["sf3:in", "sf3:out", "server:eth0"]
    assert {port.netns for port in ports} == {"pc-cluster.sf3", "pc-cluster.server"}
    assert all(port.setup is not None and port.setup.node == "n3" for port in ports)
    (client,) = ports_from_topology(CLUSTER, lab_name="other", node="n1")
    assert (client.name, client.netns) == ("client:eth0", "pc-other.client")


def test_a_cluster_topology_needs_a_node() -> None:
    with pytest.raises(ValueError, match=r"nodes n1, n2, n3: run one of them with --node NODE"):
        ports_from_topology(CLUSTER)
    with pytest.raises(ValueError, match=r"--node n9: .* has no such node \(nodes: n1, n2, n3\)"):
        ports_from_topology(CLUSTER, node="n9")
    with pytest.raises(ValueError, match="declares no `nodes:`"):
        ports_from_topology(EXAMPLES / "lab-node.yaml", node="n1")
    with pytest.raises(ValueError, match="--node needs --topology"):
        build_config(name="n1", node="n1")


def test_build_config_with_a_node() -> None:
    config = build_config(name="n2", topology=CLUSTER, node="n2")
    assert [port.name for port in config.ports] == ["sf2:in", "sf2:out"]


def test_the_cluster_options_come_from_the_topology() -> None:
    node = cluster_node(CLUSTER, "n2")
    assert (node.name, node.netns) == ("n2", "pc-cluster.n2")
    assert node.etcd == ("http://10.250.0.254:2379",)
    assert node.underlay == ("10.250.0.2", 4790)
    # Without an API token the API stays on the node namespace's loopback.
    assert node.api == "127.0.0.1:9696"
    assert cluster_node(CLUSTER, "n2", api_token=True).api == "10.250.0.2:9696"
    assert cluster_node(CLUSTER, "n1", lab_name="x").netns == "pc-x.n1"


def test_a_lab_without_etcd_gives_no_etcd(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("lab: quiet\netcd: false\nnodes: {a: {}}\nhosts: {h: {}}\n")
    node = cluster_node(path, "a")
    assert node.etcd == ()
    assert node.underlay == ("10.250.0.1", 4790)
