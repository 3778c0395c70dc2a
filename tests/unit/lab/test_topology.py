"""Parsing and validation of lab topologies (pure: no namespaces are made)."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from pktchain.lab.errors import TopologyError
from pktchain.lab.topology import (
    Attachment,
    HostNic,
    InterfaceRef,
    Route,
    fabric_netns_name,
    lab_of_netns,
    load_topology,
    netns_name,
    node_host_spec,
    parse_route,
    parse_topology,
    read_lab_name,
    topology_from_dict,
)
from support.paths import EXAMPLES

ROUTED = textwrap.dedent(
    """\
    lab: demo
    bridges: [lan0]
    hosts:
      client:
        interfaces:
          eth0:
            attach: router.eth0
            mac: 12:30:00:00:00:02
            addresses: [10.0.1.2/24, "fd00:1::2/64"]
        routes:
          - {to: default, via: 10.0.1.1}
          - {to: default, via: "fd00:1::1", metric: 10}
      router:
        sysctls:
          net.ipv4.ip_forward: 1
          net.ipv6.conf.n0.forwarding: 1
        interfaces:
          eth0: {addresses: [10.0.1.1/24, "fd00:1::1/64"]}
          eth1: {attach: lan0, addresses: [10.0.2.1/24], mtu: 9000}
          n0: {attach: node, addresses: [10.9.0.1/24]}
        routes:
          - {to: 10.8.0.0/16, via: 10.9.0.254}
          - {to: 0.0.0.0/0, dev: eth1}
      server:
        interfaces:
          eth0: {attach: lan0, addresses: [10.0.2.2/24]}
        commands:
          - python3 -m http.server 8080 --bind '10.0.2.2'
          - [sleep, 100]
    """
)


def issues_of(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(TopologyError) as caught:
        parse_topology(text, source="t.yaml")
    return [(issue.line, issue.field) for issue in caught.value.issues]


def test_hosts_get_namespaces_named_after_the_lab() -> None:
    topology = parse_topology(ROUTED)
    assert topology.name == "demo"
    assert [host.netns for host in topology.hosts] == [
        "pc-demo.client",
        "pc-demo.router",
        "pc-demo.server",
    ]
    assert topology.fabric_netns == "pc-demo.fabric"
    assert topology.netns_names[0] == "pc-demo.fabric"
    assert topology.netns_of("server") == "pc-demo.server"


def test_attachments_are_resolved_both_ways() -> None:
    topology = parse_topology(ROUTED)
    client_eth0 = topology.host("client").interface("eth0")
    router_eth0 = topology.host("router").interface("eth0")
    assert client_eth0.attachment is Attachment.VETH
    assert client_eth0.peer == InterfaceRef("router", "eth0")
    assert router_eth0.attachment is Attachment.VETH
    assert router_eth0.peer == InterfaceRef("client", "eth0")
    assert list(topology.veth_pairs()) == [
        (InterfaceRef("client", "eth0"), InterfaceRef("router", "eth0"))
    ]
    assert topology.host("server").interface("eth0").bridge == "lan0"
    assert topology.host("router").interface("n0").attachment is Attachment.NODE


def test_interface_settings_keep_their_types() -> None:
    topology = parse_topology(ROUTED)
    eth0 = topology.host("client").interface("eth0")
    # 12:30:00:00:00:02 is a YAML 1.1 sexagesimal integer; it must stay a MAC.
    assert eth0.mac == "12:30:00:00:00:02"
    assert eth0.addresses == (
        ipaddress.ip_interface("10.0.1.2/24"),
        ipaddress.ip_interface("fd00:1::2/64"),
    )
    assert topology.host("router").interface("eth1").mtu == 9000


def test_routes_get_their_device_and_family() -> None:
    client = parse_topology(ROUTED).host("client")
    assert client.routes == (
        Route(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.0.1.1"), "eth0"),
        Route(ipaddress.ip_network("::/0"), ipaddress.ip_address("fd00:1::1"), "eth0", 10),
    )
    assert all(route.is_default for route in client.routes)
    assert str(client.routes[1]) == "default via fd00:1::1 dev eth0 metric 10"


def test_node_ports_keep_what_the_node_applies() -> None:
    topology = parse_topology(ROUTED)
    (port,) = topology.node_ports()
    assert (port.host, port.netns, port.interface.name) == ("router", "pc-demo.router", "n0")
    assert port.interface.addresses == (ipaddress.ip_interface("10.9.0.1/24"),)
    assert [str(route) for route in port.routes] == ["10.8.0.0/16 via 10.9.0.254 dev n0"]
    assert port.sysctls == (("net.ipv6.conf.n0.forwarding", "1"),)
    router = topology.host("router")
    assert [str(route) for route in router.lab_routes] == ["default dev eth1"]
    assert router.host_sysctls == (("net.ipv4.ip_forward", "1"),)
    assert router.interface_sysctls == ()


def test_commands_are_argument_lists() -> None:
    server = parse_topology(ROUTED).host("server")
    assert server.commands == (
        ("python3", "-m", "http.server", "8080", "--bind", "10.0.2.2"),
        ("sleep", "100"),
    )


def test_a_node_host_spec_is_a_host_with_one_node_port_and_its_default_route() -> None:
    topology = topology_from_dict(
        {
            "lab": "x",
            "hosts": {
                "a": node_host_spec("blue", "02:00:00:00:00:0a", "10.0.0.10/24", "10.0.0.1"),
                "b": node_host_spec("blue", "02:00:00:00:00:0b", "10.0.0.11/24"),
            },
        }
    )
    a, b = topology.hosts
    (eth0,) = a.interfaces
    assert (eth0.name, eth0.attachment, eth0.network, eth0.mac) == (
        "eth0",
        Attachment.NODE,
        "blue",
        "02:00:00:00:00:0a",
    )
    assert eth0.addresses == (ipaddress.ip_interface("10.0.0.10/24"),)
    (route,) = a.routes
    assert (str(route.to), str(route.via), route.dev) == ("0.0.0.0/0", "10.0.0.1", "eth0")
    assert b.routes == ()


def test_bridge_ports_have_short_unique_names() -> None:
    topology = topology_from_dict(
        {
            "lab": "x",
            "bridges": ["br0"],
            "hosts": {
                "a-very-long-host-name": {"interfaces": {"eth0": {"attach": "br0"}}},
                "b": {"interfaces": {"eth0": {"attach": "br0"}}},
                "b-eth0": {"interfaces": {"x": {"attach": "br0"}}},
            },
        }
    )
    names = [port.port for port in topology.bridge_ports]
    assert names[1] == "b-eth0"
    assert len(set(names)) == 3
    assert all(len(name) <= 15 for name in names)


def test_every_error_is_reported_at_once_with_its_line() -> None:
    text = textwrap.dedent(
        """\
        lab: Demo
        bridge: [x]
        hosts:
          client:
            interfaces:
              eth0:
                attach: router.eth9
                addresses: [10.0.1.2, "fd00:1::2/64"]
                mac: 01:00:00:00:00:01
                mtu: 20
            routes:
              - {to: default}
          fabric: {}
          router:
            sysctls:
              kernel.pid_max: 1
            interfaces:
              eth1: {attach: lan0, speed: 10}
            commands:
              - "echo 'unbalanced"
        """
    )
    assert issues_of(text) == [
        (1, "lab"),
        (2, "bridge"),
        (7, "hosts.client.interfaces.eth0.attach"),
        (8, "hosts.client.interfaces.eth0.addresses[0]"),
        (9, "hosts.client.interfaces.eth0.mac"),
        (10, "hosts.client.interfaces.eth0.mtu"),
        (12, "hosts.client.routes[0].to"),
        (12, "hosts.client.routes[0]"),
        (13, "hosts.fabric"),
        (16, "hosts.router.sysctls.kernel.pid_max"),
        (18, "hosts.router.interfaces.eth1.speed"),
        (18, "hosts.router.interfaces.eth1.attach"),
        (20, "hosts.router.commands[0]"),
    ]


def test_error_message_names_file_line_and_field() -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology(
            "lab: x\nhosts:\n  h1:\n    interfaces:\n      eth0: {mtu: 9}\n", source="t.yaml"
        )
    message = str(caught.value)
    assert message.startswith("2 errors in t.yaml:")
    assert "t.yaml:5: hosts.h1.interfaces.eth0.mtu: expected an integer from 68 to 65535" in message
    assert "t.yaml:5: hosts.h1.interfaces.eth0.attach: missing" in message


def test_duplicate_keys_are_errors() -> None:
    text = "lab: x\nhosts:\n  h1: {}\n  h1: {}\n"
    assert issues_of(text) == [(4, "hosts.h1")]


def test_invalid_yaml_reports_its_line() -> None:
    with pytest.raises(TopologyError) as caught:
        parse_topology("lab: x\nhosts:\n  h1: [\n", source="t.yaml")
    (issue,) = caught.value.issues
    assert issue.line is not None and issue.line >= 3
    assert "invalid YAML" in issue.message


@pytest.mark.parametrize(
    ("hosts", "field", "words"),
    [
        (
            {"a": {"interfaces": {"e": {"attach": "a.e"}}}},
            "hosts.a.interfaces.e.attach",
            "itself",
        ),
        (
            {
                "a": {"interfaces": {"e": {"attach": "c.e"}}},
                "b": {"interfaces": {"e": {"attach": "c.e"}}},
                "c": {"interfaces": {"e": {}}},
            },
            "hosts.b.interfaces.e.attach",
            "already attached to a.e",
        ),
        (
            {
                "a": {"interfaces": {"e": {"attach": "b.e"}}},
                "b": {"interfaces": {"e": {"attach": "node"}}},
            },
            "hosts.a.interfaces.e.attach",
            "attached to 'node'",
        ),
        (
            {
                "a": {"interfaces": {"e": {"attach": "b.e"}}},
                "b": {"interfaces": {"e": {"attach": "c.e"}}},
                "c": {"interfaces": {"e": {}}},
            },
            "hosts.b.interfaces.e.attach",
            "attaches to it",
        ),
        (
            {"a": {"interfaces": {"e": {"attach": "nowhere"}}}},
            "hosts.a.interfaces.e.attach",
            "not a bridge",
        ),
        (
            {"a": {"interfaces": {"e": {"addresses": ["10.0.0.1/24"]}}}},
            "hosts.a.interfaces.e.attach",
            "missing",
        ),
        (
            {"a": {"interfaces": {"lo": {}}}},
            "hosts.a.interfaces.lo",
            "always up",
        ),
        (
            {"a": {"interfaces": {"averyveryverylongname": {"attach": "node"}}}},
            "hosts.a.interfaces.averyveryverylongname",
            "1-15",
        ),
        (
            {
                "a": {
                    "interfaces": {"e": {"attach": "node", "addresses": ["10.0.0.1/24"]}},
                    "routes": [{"to": "default", "via": "fd00::1"}],
                }
            },
            "hosts.a.routes[0].via",
            "in no subnet",
        ),
        (
            {
                "a": {
                    "interfaces": {"e": {"attach": "node", "addresses": ["10.0.0.1/24"]}},
                    "routes": [{"to": "10.1.0.0/16", "via": "10.0.0.9", "dev": "x"}],
                }
            },
            "hosts.a.routes[0].dev",
            "no interface 'x'",
        ),
    ],
)
def test_attachment_and_route_mistakes(hosts: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(TopologyError) as caught:
        topology_from_dict({"lab": "x", "hosts": hosts})
    matching = [issue for issue in caught.value.issues if issue.field == field]
    assert matching, caught.value
    assert words in matching[0].message
    assert matching[0].line is None
    assert str(matching[0]).startswith("<dict>: ")


def test_a_missing_name_and_hosts_are_reported() -> None:
    with pytest.raises(TopologyError) as caught:
        topology_from_dict({})
    assert [issue.field for issue in caught.value.issues] == ["lab", "hosts"]


def test_lab_name_can_be_given_instead() -> None:
    topology = topology_from_dict({"hosts": {"h": {}}}, lab_name="given")
    assert topology.host("h").netns == "pc-given.h"


def test_renamed_moves_every_namespace() -> None:
    topology = parse_topology(ROUTED).renamed("other")
    assert topology.netns_names == (
        "pc-other.fabric",
        "pc-other.client",
        "pc-other.router",
        "pc-other.server",
    )
    assert topology.node_ports()[0].netns == "pc-other.router"
    with pytest.raises(TopologyError):
        topology.renamed("Not valid")


def test_namespace_names_tell_labs_apart() -> None:
    # Lab "a" with host "b-c" and lab "a-b" with host "c" must not collide.
    assert netns_name("a", "b-c") != netns_name("a-b", "c")
    assert lab_of_netns(netns_name("a-b", "c")) == "a-b"
    assert lab_of_netns(fabric_netns_name("a")) == "a"
    assert lab_of_netns("pc-nodot") is None
    assert lab_of_netns("other.ns") is None


def test_parse_route_takes_the_yaml_form() -> None:
    assert parse_route({"to": "default", "via": "10.0.0.1"}) == Route(
        ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.0.0.1")
    )
    assert parse_route({"to": "fd00:2::/64", "dev": "eth1", "metric": 5}).dev == "eth1"
    with pytest.raises(TopologyError) as caught:
        parse_route({"to": "10.0.0.0/8", "via": "fd00::1"})
    assert "is not IPv4" in str(caught.value)


def test_read_lab_name_ignores_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("lab: keep\nhosts: 3\n")
    assert read_lab_name(path) == "keep"
    with pytest.raises(TopologyError, match=r"broken\.yaml"):
        load_topology(path)


def test_unreadable_file_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read"):
        load_topology(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("lab-*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    topology = load_topology(path)
    assert topology.hosts


def test_node_ports_join_the_network_they_name() -> None:
    text = textwrap.dedent(
        """\
        lab: nets
        hosts:
          a:
            interfaces:
              eth0: {attach: node, network: inside}
          b:
            interfaces:
              eth0: {attach: node}
        """
    )
    ports = {port.host: port.interface.network for port in parse_topology(text).node_ports()}
    assert ports == {"a": "inside", "b": "default"}


def test_network_mistakes_are_named_with_their_line() -> None:
    text = textwrap.dedent(
        """\
        lab: nets
        hosts:
          a:
            interfaces:
              eth0: {attach: node, network: "Bad Name"}
              eth1: {attach: b.eth0, network: inside}
          b:
            interfaces:
              eth0: {}
        """
    )
    assert issues_of(text) == [
        (5, "hosts.a.interfaces.eth0.network"),
        (6, "hosts.a.interfaces.eth1.network"),
    ]


def test_a_node_port_may_be_declared_without_port_security() -> None:
    text = textwrap.dedent(
        """\
        lab: secured
        hosts:
          appliance:
            interfaces:
              eth0: {attach: node, addresses: [10.0.0.2/24], port_security: false}
          host:
            interfaces:
              eth0: {attach: node, addresses: [10.0.0.3/24]}
        """
    )
    ports = {p.host: p.interface.port_security for p in parse_topology(text).node_ports()}
    assert ports == {"appliance": False, "host": True}


def test_port_security_mistakes_are_named_with_their_line() -> None:
    text = textwrap.dedent(
        """\
        lab: secured
        hosts:
          a:
            interfaces:
              eth0: {attach: node, port_security: maybe}
              eth1: {attach: b.eth0, port_security: false}
          b:
            interfaces:
              eth0: {}
        """
    )
    assert issues_of(text) == [
        (5, "hosts.a.interfaces.eth0.port_security"),
        (6, "hosts.a.interfaces.eth1.port_security"),
    ]


def test_the_host_nic_kind_comes_from_the_interface_then_the_topology() -> None:
    text = textwrap.dedent(
        """\
        lab: nics
        host_nic: veth
        hosts:
          a:
            interfaces:
              eth0: {attach: node, nic: tap}
          b:
            interfaces:
              eth0: {attach: node}
        """
    )
    topology = parse_topology(text)
    assert topology.host_nic is HostNic.VETH
    assert {p.host: p.nic for p in topology.node_ports()} == {
        "a": HostNic.TAP,
        "b": HostNic.VETH,
    }
    plain = parse_topology(text.replace("host_nic: veth\n", ""))
    assert {p.host: p.nic for p in plain.node_ports()} == {"a": HostNic.TAP, "b": None}


def test_host_nic_mistakes_are_named_with_their_line() -> None:
    text = textwrap.dedent(
        """\
        lab: nics
        host_nic: virtio
        hosts:
          a:
            interfaces:
              eth0: {attach: node, nic: VETH}
              eth1: {attach: b.eth0, nic: veth}
              eth2: {attach: node, nic: macvlan}
          b:
            interfaces:
              eth0: {}
        """
    )
    assert issues_of(text) == [
        (2, "host_nic"),
        (7, "hosts.a.interfaces.eth1.nic"),
        (8, "hosts.a.interfaces.eth2.nic"),
    ]
