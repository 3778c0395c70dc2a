"""The configuration values functions share: direction, protocol names, MAC addresses."""

from __future__ import annotations

import pytest

from pktchain.functions.common.fields import (
    Direction,
    mac_error,
    ported_protocol,
    protocol_name,
    protocol_number,
)
from pktchain.functions.sdk import ConfigError, make_function
from pktchain.packet.headers import IpProto


def test_both_is_another_name_of_any() -> None:
    assert Direction("both") is Direction.ANY is Direction.BOTH
    assert [d.value for d in Direction] == ["ingress", "egress", "any"]
    with pytest.raises(ValueError):
        Direction("sideways")


@pytest.mark.parametrize("kind", ["mirror", "firewall", "rate-limiter"])
@pytest.mark.parametrize("word", ["any", "both"])
def test_every_function_with_a_direction_takes_any_and_both(kind: str, word: str) -> None:
    config: dict[str, object] = {
        "mirror": {"direction": word},
        "firewall": {"rules": [{"action": "accept", "direction": word}]},
        "rate-limiter": {"rate_pps": 10, "direction": word},
    }[kind]
    make_function(kind, config)  # raises ConfigError if the word were refused


def test_a_wrong_direction_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"direction: must be one of 'ingress', 'egress', 'any'"):
        make_function("rate-limiter", {"rate_pps": 10, "direction": "up"})


def test_protocols_by_name_and_number_both_ways() -> None:
    assert protocol_number("TCP") == 6
    assert protocol_number("ipv6-icmp") == protocol_number("icmpv6") == 58
    assert protocol_number(200) == 200
    assert protocol_number(None) is None
    assert protocol_name(58) == "icmpv6"
    assert protocol_name(17) == "udp"
    assert protocol_name(200) == "200"
    with pytest.raises(ValueError, match=r"protocol 256 is not in 0\.\.255"):
        protocol_number(256)
    with pytest.raises(ValueError, match=r"'tcpp' is not a protocol: use 0-255 or one of"):
        protocol_number("tcpp")


def test_a_port_forward_names_tcp_or_udp_only() -> None:
    assert ported_protocol("Udp") is IpProto.UDP
    assert ported_protocol("icmp") is None
    assert ported_protocol("nonsense") is None


def test_firewall_and_mirror_take_the_same_protocol_names() -> None:
    for name in ("sctp", "ipv6-icmp", "gre"):
        make_function("mirror", {"filter": {"protocol": name}})
        make_function("firewall", {"rules": [{"action": "accept", "protocol": name}]})
    for kind, config in (
        ("mirror", {"filter": {"protocol": "tcpp"}}),
        ("firewall", {"rules": [{"action": "accept", "protocol": "tcpp"}]}),
    ):
        with pytest.raises(ConfigError, match="'tcpp' is not a protocol"):
            make_function(kind, config)


def test_mac_checks() -> None:
    assert mac_error("02:00:00:00:00:01") is None
    assert mac_error(None) is None
    assert mac_error("02:00:00:00:00") == "not a MAC address: '02:00:00:00:00'"
    assert mac_error("01:00:5e:00:00:01") is None  # any address, unless unicast is asked
    assert mac_error("01:00:5e:00:00:01", unicast=True) == (
        "01:00:5e:00:00:01 is a multicast address; give a unicast MAC"
    )
    assert mac_error("00:00:00:00:00:00", unicast=True) == "the all-zero MAC is not an address"
