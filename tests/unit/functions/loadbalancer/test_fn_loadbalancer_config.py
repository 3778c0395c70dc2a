"""The load balancer's configuration (every wrong field named at once) and its status."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from pktchain.functions.loadbalancer.function import BACKEND, FRONTEND, LoadBalancer
from pktchain.functions.sdk import make_function
from pktchain.functions.sdk.schema import ConfigError
from support.loadbalancer import (
    B1,
    B2,
    B3,
    BACK_MAC,
    FRONT_MAC,
    SOURCE,
    VIP,
    backend,
    from_client,
    make_lb,
    open_connection,
    run,
    settings,
)


def errors_of(config: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        LoadBalancer.from_config(config)
    return {e.field: e.message for e in caught.value.errors}


def base(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "frontend_mac": FRONT_MAC,
        "backend_mac": BACK_MAC,
        "source_ip": SOURCE,
        "table_size": 2003,
        "services": [{"vip": VIP, "port": 80, "backends": [backend(B1), backend(B2)]}],
    }
    config.update(changes)
    return config


def test_the_required_fields_are_named() -> None:
    with pytest.raises(ConfigError) as caught:
        LoadBalancer()
    assert {e.field for e in caught.value.errors} == {"frontend_mac", "backend_mac", "source_ip"}
    with pytest.raises(ConfigError):
        make_function("load-balancer", {})


def test_every_wrong_field_is_reported_at_once() -> None:
    errors = errors_of(
        base(
            frontend_mac="01:00:5e:00:00:01",
            source_ip="127.0.0.1",
            table_size=65536,
            health={"interval": 0, "rise": 0, "init_state": "sideways"},
            snat_port_min=0,
            drain_timeout=-1,
            services=[
                {
                    "vip": "224.0.0.9",
                    "port": 70000,
                    "proto": "sctp",
                    "backends": [{"ip": "10.1.0.11", "port": 80, "weight": 0, "mac": "zz"}],
                },
                {"vip": VIP, "backends": [{"port": 80, "colour": "red"}]},
            ],
        )
    )
    assert set(errors) == {
        "frontend_mac",
        "source_ip",
        "table_size",
        "health.interval",
        "health.rise",
        "health.init_state",
        "snat_port_min",
        "drain_timeout",
        "services[0].vip",
        "services[0].port",
        "services[0].proto",
        "services[0].backends[0].weight",
        "services[0].backends[0].mac",
        "services[1].port",
        "services[1].backends[0].ip",
        "services[1].backends[0].colour",
    }
    assert "prime" in errors["table_size"]
    assert "multicast" in errors["frontend_mac"]


def test_fields_that_disagree_are_named() -> None:
    errors = errors_of(
        base(
            backend_mac=FRONT_MAC,
            snat_port_min=6000,
            snat_port_max=5000,
            health={"interval": 1.0, "timeout": 2.0},
            services=[
                {"vip": VIP, "port": 80, "backends": [backend(B1), backend(B1), backend(B2)]},
                {"vip": VIP, "port": 80, "backends": []},
                {"vip": SOURCE, "port": 81, "backends": []},
                {
                    "vip": "192.0.2.30",
                    "port": 80,
                    "backends": [backend(B2, mac="02:bb:00:00:00:77"), {"ip": SOURCE, "port": 1}],
                },
            ],
        )
    )
    assert set(errors) == {
        "backend_mac",
        "snat_port_max",
        "health.timeout",
        "services[0].backends[1]",
        "services[1]",
        "services[1].name",
        "services[2].vip",
        "services[3].backends[0].mac",
        "services[3].backends[1].ip",
    }


def test_a_wrong_reconfiguration_changes_nothing() -> None:
    lb = make_lb()
    open_connection(lb)
    with pytest.raises(ConfigError):
        lb.reconfigure(settings(lb, services=[{"vip": VIP, "port": 80, "backends": "B1"}]))
    with pytest.raises(ConfigError):
        lb.reconfigure(settings(lb, backend_mac=FRONT_MAC))
    assert len(lb.config.services[0].backends) == 3
    result, _ = run(lb, FRONTEND, from_client(40000, "PA", seq=1001, ack=5001, payload=b"x"))
    assert result.lease is not None


def test_the_schema_is_described() -> None:
    rows = {row["name"]: row for row in LoadBalancer.schema()}
    assert rows["table_size"]["default"] == 65537
    assert rows["frontend_mac"]["required"] is True
    assert rows["health"]["default"]["interval"] == 2.0
    assert rows["health"]["default"]["init_state"] == "up"


# -- status ---------------------------------------------------------------------------------


def test_status_shows_services_backends_health_table_and_counters() -> None:
    lb = make_lb(
        [backend(B1, weight=1), backend(B2, weight=3), backend(B3, draining=True)],
        health={"enabled": True, "fall": 1},
    )
    checks = [Ether(f) for iface, f in lb.on_timer(0.0) if iface == BACKEND]
    assert len([f for f in checks if f.haslayer(TCP)]) == 3
    ip, _ = open_connection(lb, now=0.1)
    status = lb.status()
    assert status["kind"] == "load-balancer"
    assert status["table_size"] == 2003
    assert status["connections"] == {"total": 1, "states": {"established": 1}}
    (service,) = status["services"]
    assert (service["name"], service["vip"], service["port"], service["proto"]) == (
        f"{VIP}:80/tcp",
        VIP,
        80,
        "tcp",
    )
    assert service["backends_in_table"] == 2
    rows = {row["ip"]: row for row in service["backends"]}
    assert rows[B3]["state"] == "draining" and rows[B3]["slots"] == 0
    assert rows[B1]["slots"] + rows[B2]["slots"] == 2003
    assert rows[B2]["slots"] == pytest.approx(3 * rows[B1]["slots"], abs=3)
    assert rows[ip]["connections"] == 1
    assert rows[B1]["health"]["checks"] == 1 and rows[B1]["health"]["last_result"] is None
    assert status["counters"]["health-checks-sent"] == 3
    assert status["counters"]["connections-opened"] == 1
    assert status["counters"]["no-backend"] == 0  # every counter shows, at zero too
    lb.on_timer(1.0)
    rows = {row["ip"]: row for row in lb.status()["services"][0]["backends"]}
    assert rows[B1]["health"]["last_result"] == "timeout"
    assert rows[B1]["state"] == "down"


def test_its_ports_carry_the_configured_addresses() -> None:
    config = base()
    lb = make_function("load-balancer", config)
    assert lb.mac(FRONTEND) == config["frontend_mac"].lower()
    assert lb.mac(BACKEND) == config["backend_mac"].lower()
    assert lb.mac("elsewhere") is None
