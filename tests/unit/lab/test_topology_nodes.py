"""Cluster topologies: `nodes`, the underlay, the lab's etcd and the hosts' `node`
(pure: no namespaces are made)."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from pktchain.lab.errors import TopologyError
from pktchain.lab.topology import (
    DEFAULT_UNDERLAY_MTU,
    UNDERLAY_BRIDGE,
    Attachment,
    load_topology,
    parse_topology,
    topology_from_dict,
)
from support.paths import EXAMPLES

CLUSTER = textwrap.dedent(
    """\
    lab: demo
    nodes:
      n1: {}
      n2: {underlay: 10.250.0.12}
      n3:
    hosts:
      client:
        node: n1
        interfaces:
          eth0: {attach: node, addresses: [10.0.0.1/24]}
      sf:
        node: n2
        interfaces:
          in: {attach: node}
          out: {attach: node, addresses: [10.0.0.20/24]}
      server:
        node: n3
        interfaces:
          eth0: {attach: node, network: other, addresses: [10.0.0.2/24]}
        routes:
          - {to: default, via: 10.0.0.254}
    """
)


def issues_of(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(TopologyError) as caught:
        parse_topology(textwrap.dedent(text), source="t.yaml")
    return [(issue.line, issue.field, issue.message) for issue in caught.value.issues]


def fields_of(text: str) -> list[tuple[int | None, str]]:
    return [(line, field) for line, field, _ in issues_of(text)]


def test_nodes_get_namespaces_and_underlay_addresses_in_order() -> None:
    topology = parse_topology(CLUSTER)
    assert list(topology.nodes) == ["n1", "n2", "n3"]
    assert topology.underlay == ipaddress.ip_network("10.250.0.0/24")
    assert topology.underlay_mtu == DEFAULT_UNDERLAY_MTU == 9000
    n1, n2, n3 = topology.nodes.values()
    # Given addresses are kept; the others are taken in order from .1 up.
    assert [str(node.underlay) for node in (n1, n2, n3)] == [
        "10.250.0.1/24",
        "10.250.0.12/24",
        "10.250.0.2/24",
    ]
    assert [node.netns for node in (n1, n2, n3)] == ["pc-demo.n1", "pc-demo.n2", "pc-demo.n3"]
    assert (n1.ifname, n1.mtu, n1.fabric_port) == ("ul0", 9000, "n1-ul0")
    assert topology.node("n2") is n2
    with pytest.raises(KeyError, match="nodes: n1, n2, n3"):
        topology.node("n9")


def test_a_cluster_has_a_fabric_and_the_nodes_namespaces() -> None:
    topology = parse_topology(CLUSTER)
    assert topology.fabric_netns == "pc-demo.fabric"
    assert topology.netns_names == (
        "pc-demo.fabric",
        "pc-demo.client",
        "pc-demo.sf",
        "pc-demo.server",
        "pc-demo.n1",
        "pc-demo.n2",
        "pc-demo.n3",
    )


def test_the_lab_runs_etcd_at_the_underlays_last_address() -> None:
    etcd = parse_topology(CLUSTER).etcd
    assert etcd is not None
    assert etcd.name == "demo"
    assert str(etcd.address) == "10.250.0.254/24"
    assert etcd.client_url == "http://10.250.0.254:2379"
    assert etcd.peer_url == "http://10.250.0.254:2380"


def test_underlay_mtu_and_etcd_can_be_chosen() -> None:
    topology = parse_topology(
        textwrap.dedent(
            """\
            lab: small
            underlay: 192.168.77.0/29
            underlay_mtu: 1500
            etcd: {address: 192.168.77.1, client_port: 12379, peer_port: 12380}
            nodes: {a: {}, b: {}}
            hosts: {h: {node: a, interfaces: {eth0: {attach: node}}}}
            """
        )
    )
    assert [str(node.underlay) for node in topology.nodes.values()] == [
        "192.168.77.2/29",
        "192.168.77.3/29",
    ]
    assert {node.mtu for node in topology.nodes.values()} == {1500}
    assert topology.etcd is not None
    assert topology.etcd.client_url == "http://192.168.77.1:12379"
    assert topology.etcd.peer_url == "http://192.168.77.1:12380"


@pytest.mark.parametrize("off", ["false", "off", "no"])
def test_etcd_can_be_turned_off(off: str) -> None:
    topology = parse_topology(f"lab: x\nnodes: {{n1: {{}}}}\netcd: {off}\nhosts: {{h: {{}}}}\n")
    assert topology.etcd is None
    assert topology.fabric_netns == "pc-x.fabric"  # the underlay bridge is still there


def test_node_ports_of_one_node() -> None:
    topology = parse_topology(CLUSTER)
    assert [(p.host, p.interface.name, p.node) for p in topology.node_ports("n2")] == [
        ("sf", "in", "n2"),
        ("sf", "out", "n2"),
    ]
    (server,) = topology.node_ports("n3")
    assert server.interface.network == "other"
    assert [str(route) for route in server.routes] == ["default via 10.0.0.254 dev eth0"]
    assert len(topology.node_ports()) == 4
    assert topology.host("client").node == "n1"
    with pytest.raises(KeyError, match="no node 'n9'"):
        topology.node_ports("n9")


def test_a_node_is_a_host_with_one_interface_on_the_underlay() -> None:
    host = parse_topology(CLUSTER).node("n1").host
    (ul0,) = host.interfaces
    assert (host.name, host.netns) == ("n1", "pc-demo.n1")
    assert (ul0.name, ul0.attachment, ul0.bridge, ul0.mtu) == (
        "ul0",
        Attachment.BRIDGE,
        UNDERLAY_BRIDGE,
        9000,
    )
    assert ul0.addresses == (ipaddress.ip_interface("10.250.0.1/24"),)


def test_renaming_moves_the_nodes_and_etcd() -> None:
    renamed = parse_topology(CLUSTER).renamed("other")
    assert [node.netns for node in renamed.nodes.values()] == [
        "pc-other.n1",
        "pc-other.n2",
        "pc-other.n3",
    ]
    assert renamed.etcd is not None and renamed.etcd.name == "other"
    assert renamed.fabric_netns == "pc-other.fabric"
    assert parse_topology(CLUSTER, lab_name="other").nodes == renamed.nodes


def test_a_topology_without_nodes_is_unchanged() -> None:
    topology = parse_topology("lab: one\nhosts: {h: {interfaces: {eth0: {attach: node}}}}\n")
    assert dict(topology.nodes) == {}
    assert (topology.underlay, topology.etcd, topology.fabric_netns) == (None, None, None)
    assert topology.netns_names == ("pc-one.h",)
    assert topology.host("h").node is None


def test_a_dict_topology_with_nodes() -> None:
    topology = topology_from_dict(
        {
            "lab": "d",
            "nodes": {"n1": None, "n2": {"underlay": "10.250.0.9"}},
            "hosts": {"h": {"node": "n2", "interfaces": {"eth0": {"attach": "node"}}}},
        }
    )
    assert [str(n.underlay.ip) for n in topology.nodes.values()] == ["10.250.0.1", "10.250.0.9"]
    assert topology.node_ports("n1") == ()


def test_every_node_mistake_is_named_with_its_line() -> None:
    found = issues_of(
        """\
        lab: bad
        underlay: 10.250.0.0/24
        underlay_mtu: 10
        bridges: [lan0, underlay]
        nodes:
          client: {}
          fabric: {}
          Bad: {}
          n1: {underlay: 10.250.0.7, mtu: 1500}
          n2: {underlay: 10.250.0.7}
          n3: {underlay: 10.250.1.7}
          n4: {underlay: 10.250.0.255}
          n5: {underlay: 10.250.0.254}
          n6: {underlay: 10.250.0.8/16}
          n7: {underlay: nowhere}
          n8: [oops]
        hosts:
          client:
            interfaces:
              eth0: {attach: node}
          server:
            node: n9
            interfaces:
              eth0: {attach: node}
        """
    )
    assert [(line, field) for line, field, _ in found] == [
        (3, "underlay_mtu"),
        (4, "bridges"),
        (6, "nodes.client"),
        (7, "nodes.fabric"),
        (8, "nodes.Bad"),
        (9, "nodes.n1.mtu"),
        (10, "nodes.n2.underlay"),
        (11, "nodes.n3.underlay"),
        (12, "nodes.n4.underlay"),
        (13, "nodes.n5.underlay"),
        (14, "nodes.n6.underlay"),
        (15, "nodes.n7.underlay"),
        (16, "nodes.n8"),
        (18, "hosts.client.node"),
        (22, "hosts.server.node"),
    ]
    messages = dict(((line, field), message) for line, field, message in found)
    assert "reserved for the bridge joining the nodes" in messages[(4, "bridges")]
    assert "also a host" in messages[(6, "nodes.client")]
    assert "already the underlay address of node 'n1'" in messages[(10, "nodes.n2.underlay")]
    assert "not in the underlay 10.250.0.0/24" in messages[(11, "nodes.n3.underlay")]
    assert "broadcast" in messages[(12, "nodes.n4.underlay")]
    assert "the etcd address" in messages[(13, "nodes.n5.underlay")]
    assert "give the address alone" in messages[(14, "nodes.n6.underlay")]
    assert "expected a mapping" in messages[(16, "nodes.n8")]
    assert "names the node that makes them" in messages[(18, "hosts.client.node")]
    assert "no node named 'n9'" in messages[(22, "hosts.server.node")]


def test_underlay_and_etcd_mistakes_are_named_with_their_line() -> None:
    assert fields_of(
        """\
        lab: bad
        underlay: 10.250.0.1/24
        etcd: {address: 10.250.0.9, client_port: 2380, peer_port: 2380, tls: yes}
        nodes: {n1: {}}
        hosts: {h: {node: n1}}
        """
    ) == [(2, "underlay"), (3, "etcd.tls"), (3, "etcd.peer_port")]
    assert fields_of(
        """\
        lab: bad
        underlay: "fd00::/64"
        nodes: {n1: {}}
        hosts: {h: {node: n1}}
        """
    ) == [(2, "underlay")]
    assert fields_of(
        """\
        lab: bad
        underlay: 10.250.0.0/31
        etcd: maybe
        nodes: {}
        hosts: {h: {}}
        """
    ) == [(2, "underlay"), (3, "etcd"), (4, "nodes")]
    assert fields_of(
        """\
        lab: bad
        underlay: 10.250.0.0/24
        etcd: maybe
        nodes: {n1: {}}
        hosts: {h: {}}
        """
    ) == [(3, "etcd")]
    # etcd's default address is taken: the node given it is told so.
    assert fields_of(
        """\
        lab: bad
        etcd: {address: 10.250.0.300}
        nodes: {n1: {}}
        hosts: {h: {}}
        """
    ) == [(2, "etcd.address")]


def test_an_underlay_too_small_for_its_nodes() -> None:
    found = issues_of(
        """\
        lab: bad
        underlay: 10.250.0.0/30
        nodes: {n1: {}, n2: {}, n3: {}}
        hosts: {h: {}}
        """
    )
    # A /30 holds two addresses: the first node's and etcd's.
    assert [(line, field) for line, field, _ in found] == [(3, "nodes.n2"), (3, "nodes.n3")]
    assert "no address left for this node in 10.250.0.0/30" in found[0][2]


def test_cluster_keys_need_nodes() -> None:
    found = issues_of(
        """\
        lab: one
        underlay: 10.250.0.0/24
        underlay_mtu: 1500
        etcd: {}
        hosts:
          h:
            node: n1
            interfaces: {eth0: {attach: node}}
        """
    )
    assert [(line, field) for line, field, _ in found] == [
        (2, "underlay"),
        (3, "underlay_mtu"),
        (4, "etcd"),
        (7, "hosts.h.node"),
    ]
    assert all("only in a topology with `nodes:`" in message for _, _, message in found)


def test_a_host_without_node_ports_need_not_name_a_node() -> None:
    topology = parse_topology(
        textwrap.dedent(
            """\
            lab: mixed
            nodes: {n1: {}}
            hosts:
              a:
                node: n1
                interfaces: {eth0: {attach: node}, eth1: {attach: b.eth0}}
              b:
                interfaces: {eth0: {addresses: [10.1.0.2/24]}}
            """
        )
    )
    assert topology.host("b").node is None
    assert [p.host for p in topology.node_ports("n1")] == ["a"]


def test_the_cluster_example() -> None:
    topology = load_topology(EXAMPLES / "lab-cluster.yaml")
    assert list(topology.nodes) == ["n1", "n2", "n3"]
    assert {host.name: host.node for host in topology.hosts} == {
        "client": "n1",
        "sf2": "n2",
        "sf3": "n3",
        "server": "n3",
    }
    ports = topology.node_ports()
    assert {port.interface.network for port in ports} == {"default"}
    addresses = [a for port in ports for a in port.interface.addresses]
    assert all(a in ipaddress.ip_network("10.0.0.0/24") for a in addresses)
    assert topology.etcd is not None
    assert topology.etcd.client_url == "http://10.250.0.254:2379"
