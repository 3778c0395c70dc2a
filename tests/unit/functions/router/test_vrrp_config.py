"""VRRP instance settings: keepalived's units read from YAML-like mappings, every mistake named."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from pktchain.errors import ConfigError
from pktchain.functions.router.vrrp import (
    Tracker,
    TrackKind,
    VrrpConfig,
    VrrpConfigError,
    VrrpInstance,
    vrrp_config,
    vrrp_configs,
)

BASE: dict[str, Any] = {
    "vrid": 51,
    "interface": "wan",
    "virtual_addresses": ["203.0.113.10"],
}


def fields_of(exc: pytest.ExceptionInfo[VrrpConfigError]) -> list[str]:
    return [e.field for e in exc.value.errors]


def test_defaults_are_rfc_5798_section_6_1() -> None:
    config = vrrp_config(BASE)
    assert (config.priority, config.advert_interval_cs, config.preempt) == (100, 100, True)
    assert (config.accept, config.preempt_delay, config.unicast_peers) == (False, 0.0, ())
    assert config.virtual_addresses == (IPv4Address("203.0.113.10"),)
    assert config.name == "wan/51" and not config.owner
    assert config.advert_interval == 1.0


def test_a_whole_instance_in_keepalived_units() -> None:
    config = vrrp_config(
        {
            **BASE,
            "name": "VI_1",
            "priority": 150,
            "advert_interval": 0.1,
            "preempt": True,
            "preempt_delay": 30,
            "accept": True,
            "unicast_peers": ["203.0.113.3"],
            "source_address": "203.0.113.2",
            "virtual_addresses": ["203.0.113.10/24", "203.0.113.11"],
            "track": [{"interface": "lan", "weight": 60}, {"gateway": "203.0.113.1", "weight": 20}],
            "track_floor": 10,
            "track_owner": False,
            "strict_addresses": True,
        }
    )
    assert config.advert_interval_cs == 10
    assert config.virtual_addresses == (IPv4Address("203.0.113.10"), IPv4Address("203.0.113.11"))
    assert config.source_address == IPv4Address("203.0.113.2")
    assert config.track == (
        Tracker(TrackKind.INTERFACE, "lan", 60),
        Tracker(TrackKind.GATEWAY, "203.0.113.1", 20),
    )
    assert [t.name for t in config.track] == ["lan", "203.0.113.1"]
    assert (config.name, config.preempt_delay, config.track_floor) == ("VI_1", 30, 10)


@pytest.mark.parametrize(
    ("seconds", "centiseconds"), [(0.01, 1), (1, 100), (2.5, 250), (40.95, 4095)]
)
def test_the_advertisement_interval_is_seconds_kept_in_centiseconds(
    seconds: float, centiseconds: int
) -> None:
    assert vrrp_config({**BASE, "advert_interval": seconds}).advert_interval_cs == centiseconds


@pytest.mark.parametrize("seconds", [0, 0.005, 0.015, 41, 40.96, -1, "1", True, float("nan")])
def test_an_interval_outside_0_01_to_40_95_is_named(seconds: object) -> None:
    with pytest.raises(VrrpConfigError) as exc:
        vrrp_config({**BASE, "advert_interval": seconds})
    assert fields_of(exc) == ["advert_interval"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("vrid", 0),
        ("vrid", 256),
        ("vrid", "7"),
        ("priority", 0),
        ("priority", 256),
        ("priority", True),
        ("preempt", "yes"),
        ("accept", 1),
        ("preempt_delay", -1),
        ("preempt_delay", 1001),
        ("track_floor", 0),
        ("track_floor", 255),
        ("interface", ""),
        ("source_address", "not-an-address"),
        ("source_address", "224.0.0.18"),
        ("name", 5),
    ],
)
def test_each_wrong_value_names_its_field(key: str, value: object) -> None:
    with pytest.raises(VrrpConfigError) as exc:
        vrrp_config({**BASE, key: value})
    assert fields_of(exc) == [key]
    assert key in str(exc.value)


@pytest.mark.parametrize(
    ("addresses", "field"),
    [
        ([], "virtual_addresses"),
        ("203.0.113.10", "virtual_addresses"),
        (["203.0.113.10", "203.0.113.10"], "virtual_addresses"),
        (["203.0.113.10", "nope"], "virtual_addresses[1]"),
        (["224.0.0.18"], "virtual_addresses[0]"),
        (["127.0.0.1"], "virtual_addresses[0]"),
        (["0.0.0.0"], "virtual_addresses[0]"),
        (["2001:db8::1"], "virtual_addresses[0]"),
        ([f"10.0.{i // 250}.{i % 250 + 1}" for i in range(256)], "virtual_addresses"),
    ],
)
def test_virtual_addresses_are_1_to_255_unicast_ipv4(addresses: object, field: str) -> None:
    with pytest.raises(VrrpConfigError) as exc:
        vrrp_config({**BASE, "virtual_addresses": addresses})
    assert fields_of(exc) == [field]


def test_unicast_peers_are_hosts_other_than_ourselves() -> None:
    with pytest.raises(VrrpConfigError) as exc:
        vrrp_config(
            {
                **BASE,
                "source_address": "203.0.113.2",
                "unicast_peers": ["203.0.113.2", "255.255.255.255", "x", "203.0.113.9"] * 1
                + ["203.0.113.9"],
            }
        )
    assert fields_of(exc) == [
        "unicast_peers[0]",
        "unicast_peers[1]",
        "unicast_peers[2]",
        "unicast_peers",
    ]


@pytest.mark.parametrize(
    ("track", "field"),
    [
        ("lan", "track"),
        (["lan"], "track[0]"),
        ([{"weight": 10}], "track[0]"),
        ([{"interface": "lan", "gateway": "10.0.0.1", "weight": 10}], "track[0]"),
        ([{"interface": "lan"}], "track[0].weight"),
        ([{"interface": "lan", "weight": 0}], "track[0].weight"),
        ([{"interface": "lan", "weight": 255}], "track[0].weight"),
        ([{"interface": "lan", "weight": 10, "delay": 3}], "track[0].delay"),
        ([{"interface": 5, "weight": 10}], "track[0].interface"),
        ([{"gateway": "nowhere", "weight": 10}], "track[0].gateway"),
        ([{"interface": "lan", "weight": 5}, {"interface": "lan", "weight": 6}], "track[1]"),
    ],
)
def test_trackers_name_an_interface_or_a_gateway_with_a_weight(track: object, field: str) -> None:
    with pytest.raises(VrrpConfigError) as exc:
        vrrp_config({**BASE, "track": track})
    assert field in fields_of(exc)


def test_unknown_and_missing_fields_are_all_reported_at_once() -> None:
    with pytest.raises(VrrpConfigError) as exc:
        vrrp_config({"virtual_router_id": 5, "priority": 300}, where="vrrp[2]")
    assert fields_of(exc) == [
        "vrrp[2].virtual_router_id",
        "vrrp[2].vrid",
        "vrrp[2].interface",
        "vrrp[2].virtual_addresses",
        "vrrp[2].priority",
    ]
    assert isinstance(exc.value, ConfigError) and isinstance(exc.value, ValueError)
    with pytest.raises(VrrpConfigError) as exc:
        vrrp_config({**BASE, "priority": 300, "vrid": 0}, where="vrrp[0]")
    assert fields_of(exc) == ["vrrp[0].vrid", "vrrp[0].priority"]
    with pytest.raises(VrrpConfigError) as exc:
        vrrp_config(
            {**BASE, "advert_interval": 0, "virtual_addresses": ["x"], "track": [{}]}, where="v"
        )
    assert sorted(fields_of(exc)) == ["v.advert_interval", "v.track[0]", "v.virtual_addresses[0]"]


def test_the_floor_may_not_be_above_the_priority() -> None:
    with pytest.raises(VrrpConfigError) as exc:
        vrrp_config({**BASE, "priority": 50, "track_floor": 60})
    assert fields_of(exc) == ["track_floor"]


def test_several_instances_differ_in_interface_or_vrid() -> None:
    configs = vrrp_configs(
        [
            BASE,
            {**BASE, "vrid": 52},
            {**BASE, "interface": "lan", "virtual_addresses": ["10.0.0.1"]},
        ]
    )
    assert [(c.interface, c.vrid) for c in configs] == [("wan", 51), ("wan", 52), ("lan", 51)]
    with pytest.raises(VrrpConfigError) as exc:
        vrrp_configs(
            [BASE, {**BASE, "priority": 0}, {**BASE}, {**BASE, "vrid": 9, "name": "wan/51"}]
        )
    assert fields_of(exc) == ["vrrp[1].priority", "vrrp[2].vrid", "vrrp[3].name"]
    with pytest.raises(VrrpConfigError, match="expected a list"):
        vrrp_configs({"vrid": 1})
    with pytest.raises(VrrpConfigError, match="expected a mapping"):
        vrrp_configs([5])


def test_the_dataclass_checks_itself_and_takes_text() -> None:
    config = VrrpConfig(
        vrid=1,
        interface="eth0",
        virtual_addresses=("10.0.0.254",),  # type: ignore[arg-type]
        source_address="10.0.0.1",  # type: ignore[arg-type]
        unicast_peers=["10.0.0.2"],  # type: ignore[arg-type]
    )
    assert config.virtual_addresses == (IPv4Address("10.0.0.254"),)
    assert config.unicast_peers == (IPv4Address("10.0.0.2"),)
    assert config.source_address == IPv4Address("10.0.0.1")
    with pytest.raises(VrrpConfigError) as exc:
        VrrpConfig(vrid=1, interface="eth0", virtual_addresses=(), advert_interval_cs=0)
    assert fields_of(exc) == ["virtual_addresses", "advert_interval"]


def test_running_an_instance_needs_its_source_address() -> None:
    config = vrrp_config(BASE)
    with pytest.raises(VrrpConfigError) as exc:
        VrrpInstance(config)
    assert fields_of(exc) == ["source_address"]
