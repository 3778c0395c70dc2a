"""The node's router file: what it builds, and every mistake with its line."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from pktchain.functions.nat.config import Filtering
from pktchain.node.router_file import RouterFileError, parse_router

GOOD = textwrap.dedent(
    """\
    name: edge
    interfaces:
      inside:  {network: lan, mac: "02:00:00:00:01:01", address: 10.0.0.1/24}
      outside: {network: wan, mac: "02:00:00:00:02:01", address: 198.51.100.2/24,
                external: true, gateway: 198.51.100.1}
    nat:
      udp_filtering: endpoint-independent
    port_forwards:
      - {proto: tcp, external_port: 8080, inside_ip: 10.0.0.5, inside_port: 80}
    auto_forward_service_port: 2222
    """
)


def test_a_router_file_builds_the_router_and_its_networks() -> None:
    spec = parse_router(GOOD)
    assert spec.name == "edge"
    assert spec.networks == {"inside": "lan", "outside": "wan"}
    config = spec.config
    assert config.upstream_gateway == ipaddress.IPv4Address("198.51.100.1")
    assert config.auto_forward_service_port == 2222
    nat = config.nat
    assert nat is not None
    assert nat.external_address == "198.51.100.2"  # the external interface's, by default
    assert tuple(nat.internal_networks) == ("10.0.0.0/24",)
    assert nat.udp_filtering is Filtering.ENDPOINT_INDEPENDENT
    (rule,) = spec.port_forwards
    assert (rule.proto, rule.external_port, rule.inside_ip, rule.inside_port) == (
        "tcp",
        8080,
        "10.0.0.5",
        80,
    )


def test_every_mistake_is_reported_with_its_line() -> None:
    bad = textwrap.dedent(
        """\
        name: edge
        colour: blue
        interfaces:
          inside: {network: lan, mac: "02:00:00:00:01:01", address: 10.0.0.1}
          outside: {network: wan, mac: "02:00:00:00:02:01", address: 10.1.0.1/24, speed: 10}
        nat:
          frobnicate: 3
        """
    )
    with pytest.raises(RouterFileError) as caught:
        parse_router(bad, source="r.yaml")
    found = {(issue.line, issue.field) for issue in caught.value.issues}
    assert (2, "colour") in found
    assert (5, "interfaces.outside.speed") in found
    assert (7, "nat.frobnicate") in found
    assert all(issue.source == "r.yaml" for issue in caught.value.issues)


def test_a_router_config_error_names_the_field() -> None:
    bad = GOOD.replace("address: 10.0.0.1/24", "address: 10.0.0.0/24")
    with pytest.raises(RouterFileError, match="network or broadcast"):
        parse_router(bad)


def test_settings_take_their_declared_types() -> None:
    spec = parse_router(GOOD.replace("external: true", "external: yes") + "arp_retries: 5\n")
    assert spec.config.arp_retries == 5
    with pytest.raises(RouterFileError, match="arp_retries: expected an integer"):
        parse_router(GOOD + "arp_retries: many\n")
    with pytest.raises(RouterFileError, match="expected true or false"):
        parse_router(GOOD.replace("external: true", "external: perhaps"))


def test_a_file_without_interfaces_is_refused() -> None:
    with pytest.raises(RouterFileError, match="interfaces"):
        parse_router("name: edge\n")
