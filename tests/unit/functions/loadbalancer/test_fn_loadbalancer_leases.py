"""The load balancer's connections over time: leases, idle expiry, draining, reconfiguration."""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktchain.functions.loadbalancer.function import BACKEND, FRONTEND, LbDrop, LoadBalancer
from pktchain.functions.sdk import FlowLease, Verdict
from support.loadbalancer import (
    B1,
    B1_MAC,
    B2,
    B3,
    BACK_MAC,
    BACKEND_PORT,
    CLIENT,
    FRONT_MAC,
    MACS,
    SOURCE,
    VIP,
    arp_reply,
    backend,
    forwarded,
    from_backend,
    from_client,
    make_lb,
    open_connection,
    run,
    settings,
    udp_from_client,
)


def lease(lb: LoadBalancer, port: int) -> FlowLease:
    connection = lb.connection(CLIENT, port, VIP, 80)
    assert connection is not None and connection.lease is not None
    return connection.lease


def data(port: int, payload: bytes = b"x") -> Ether:
    return from_client(port, "PA", seq=1001, ack=5001, payload=payload)


def spread(lb: LoadBalancer, ports: range) -> dict[str, list[int]]:
    """Open a connection from each port; the ports each backend got."""
    by_backend: dict[str, list[int]] = {B1: [], B2: [], B3: []}
    for port in ports:
        by_backend[open_connection(lb, port)[0]].append(port)
    assert all(by_backend.values())
    return by_backend


# -- leases -------------------------------------------------------------------------------


def test_a_lease_comes_with_the_first_established_packet_and_covers_both_directions() -> None:
    lb = make_lb()
    syn, packet = run(lb, FRONTEND, from_client(40000, "S"))
    assert syn.verdict is Verdict.FORWARD and syn.lease is None
    out = Ether(packet.ethernet)
    ip, snat = out[IP].dst, out[TCP].sport
    syn_ack, _ = run(lb, BACKEND, from_backend(ip, snat, "SA"))
    assert syn_ack.lease is None  # a SYN never takes the fast path
    ack, _ = run(lb, FRONTEND, from_client(40000, "A", seq=1001, ack=5001))
    assert ack.lease is not None and ack.lease.valid
    answer, _ = run(lb, BACKEND, from_backend(ip, snat, "PA", seq=5001, ack=1001, payload=b"y"))
    assert answer.lease is ack.lease  # one lease per connection
    assert lb.counters["leases-granted"] == 1


def test_a_fin_revokes_the_lease_and_the_connection_stays_slow() -> None:
    lb = make_lb()
    ip, snat = open_connection(lb)
    given = lease(lb, 40000)
    revoked: list[bool] = []
    given.on_revoke(lambda: revoked.append(True))
    result, _ = run(lb, FRONTEND, from_client(40000, "FA", seq=1001, ack=5001))
    assert result.verdict is Verdict.FORWARD and result.lease is None
    assert not given.valid and revoked == [True]
    half_closed, _ = run(
        lb, BACKEND, from_backend(ip, snat, "PA", seq=5001, ack=1002, payload=b"z")
    )
    assert half_closed.verdict is Verdict.FORWARD and half_closed.lease is None
    assert lb.counters["leases-revoked"] == 1


def test_a_reset_revokes_the_lease() -> None:
    lb = make_lb()
    ip, snat = open_connection(lb)
    given = lease(lb, 40000)
    run(lb, BACKEND, from_backend(ip, snat, "R", seq=5001, ack=0))
    assert not given.valid
    assert lb.status()["connections"]["states"] == {"transitory": 1}


def test_idle_expiry_asks_the_lease_when_the_flow_was_last_seen() -> None:
    lb = make_lb(tcp_established_timeout=100.0)
    lb.on_timer(0.0)
    open_connection(lb, now=0.0)
    given = lease(lb, 40000)
    assert lb.next_deadline() == 100.0
    given.seen = 90.0  # the fast path carried the flow until then
    lb.on_timer(100.0)
    assert given.valid and lb.connection(CLIENT, 40000, VIP, 80) is not None
    assert lb.next_deadline() == 190.0
    lb.on_timer(190.0)
    assert not given.valid
    assert lb.connection(CLIENT, 40000, VIP, 80) is None
    assert lb.counters["connections-expired"] == 1
    late, _ = run(lb, FRONTEND, data(40000), 191.0)
    assert late.reason == LbDrop.NO_CONNECTION  # answered by a reset


def test_a_half_open_connection_expires_after_the_opening_timeout() -> None:
    lb = make_lb(tcp_opening_timeout=20.0)
    lb.on_timer(0.0)
    forwarded(lb, FRONTEND, from_client(40000, "S"), 5.0)
    assert lb.next_deadline() == 25.0
    lb.on_timer(25.0)
    assert lb.status()["connections"]["total"] == 0


def test_closing_shortens_the_timer() -> None:
    lb = make_lb(tcp_closing_timeout=30.0)
    lb.on_timer(0.0)
    ip, snat = open_connection(lb)
    forwarded(lb, FRONTEND, from_client(40000, "FA", seq=1001, ack=5001), 10.0)
    forwarded(lb, BACKEND, from_backend(ip, snat, "FA", seq=5001, ack=1002), 11.0)
    assert lb.next_deadline() == 41.0
    lb.on_timer(41.0)
    assert lb.status()["connections"]["total"] == 0


def test_a_new_syn_after_a_closed_connection_opens_a_new_one() -> None:
    lb = make_lb()
    ip, _ = open_connection(lb)
    forwarded(lb, FRONTEND, from_client(40000, "R", seq=1001))
    again = forwarded(lb, FRONTEND, from_client(40000, "S", seq=9000))
    assert again[TCP].flags == "S" and again[IP].dst == ip  # the same flow hash
    assert lb.counters["connections-rebalanced"] == 1
    assert lb.status()["connections"]["states"] == {"int-syn": 1}


def test_a_client_arriving_through_another_mac_revokes_the_lease() -> None:
    lb = make_lb()
    ip, snat = open_connection(lb)
    given = lease(lb, 40000)
    forwarded(lb, FRONTEND, from_client(40000, "PA", seq=1001, ack=5001, mac="02:aa:00:00:00:77"))
    assert not given.valid
    back = forwarded(lb, BACKEND, from_backend(ip, snat, "PA", seq=5001, ack=1001, payload=b"y"))
    assert back.dst == "02:aa:00:00:00:77"


def test_the_connection_table_is_bounded() -> None:
    lb = make_lb(max_connections=2)
    forwarded(lb, FRONTEND, from_client(40000, "S"))
    forwarded(lb, FRONTEND, from_client(40001, "S"))
    result, _ = run(lb, FRONTEND, from_client(40002, "S"))
    assert result.reason == LbDrop.TABLE_FULL


def test_source_ports_can_run_out() -> None:
    lb = make_lb([backend(B1)], snat_port_min=5000, snat_port_max=5000)
    first = forwarded(lb, FRONTEND, from_client(40000, "S"))
    assert first[TCP].sport == 5000
    result, _ = run(lb, FRONTEND, from_client(40001, "S"))
    assert result.reason == LbDrop.SNAT_PORTS_EXHAUSTED


# -- draining and removing backends ------------------------------------------------------


def drain(lb: LoadBalancer, ip: str, **more: Any) -> None:
    data_ = settings(lb, **more)
    for spec in data_["services"][0]["backends"]:
        spec["draining"] = spec["ip"] == ip
    lb.reconfigure(data_)


def test_a_draining_backend_takes_no_new_connections_but_keeps_its_own() -> None:
    lb = make_lb()
    ports = spread(lb, range(40000, 40060))
    kept = {port: lease(lb, port) for port in ports[B1]}
    drain(lb, B1)
    assert all(lease_.valid for lease_ in kept.values())  # draining is not a change to them
    for port in ports[B1]:
        assert forwarded(lb, FRONTEND, data(port))[IP].dst == B1
    new = {forwarded(lb, FRONTEND, from_client(p, "S"))[IP].dst for p in range(50000, 50200)}
    assert new == {B2, B3}
    states = {b["ip"]: b["state"] for b in lb.status()["services"][0]["backends"]}
    assert states == {B1: "draining", B2: "up", B3: "up"}


def test_the_drain_timeout_cuts_what_is_left() -> None:
    lb = make_lb(drain_timeout=30.0)
    lb.on_timer(0.0)
    ports = spread(lb, range(40000, 40060))
    kept = lease(lb, ports[B1][0])
    drain(lb, B1, drain_timeout=30.0)
    # A reconfiguration has no clock: the drain starts at the timer run next, at once.
    assert lb.next_deadline() == 0.0
    lb.on_timer(1000.0)
    assert lb.next_deadline() == 1030.0
    lb.on_timer(1029.0)
    assert kept.valid
    lb.on_timer(1030.0)
    assert not kept.valid
    assert all(lb.connection(CLIENT, p, VIP, 80) is None for p in ports[B1])
    assert all(lb.connection(CLIENT, p, VIP, 80) is not None for p in ports[B2])
    assert lb.counters["connections-cut"] == len(ports[B1])


def without_b3(lb: LoadBalancer) -> dict[str, Any]:
    changed = settings(lb)
    changed["services"][0]["backends"] = [backend(B1), backend(B2)]
    return changed


def test_a_removed_backend_drains_its_connections_on_the_slow_path() -> None:
    lb = make_lb(drain_timeout=30.0)
    lb.on_timer(0.0)
    ports = spread(lb, range(40000, 40060))
    leases = {port: lease(lb, port) for ps in ports.values() for port in ps}
    lb.reconfigure(without_b3(lb))
    for port, given in leases.items():
        assert given.valid == (port not in ports[B3])  # only the removed backend's
    lb.on_timer(1.0)  # the drain starts
    result, packet = run(lb, FRONTEND, data(ports[B3][0]), 1.0)
    assert result.verdict is Verdict.FORWARD and result.lease is None
    assert Ether(packet.ethernet)[IP].dst == B3
    rows = {b["ip"]: b for b in lb.status()["services"][0]["backends"]}
    assert rows[B3]["state"] == "removed" and rows[B3]["connections"] == len(ports[B3])
    new = {forwarded(lb, FRONTEND, from_client(p, "S"), 1.0)[IP].dst for p in range(50000, 50100)}
    assert new == {B1, B2}
    lb.on_timer(30.0)
    assert lb.connection(CLIENT, ports[B3][0], VIP, 80) is not None
    lb.on_timer(31.0)  # the drain timeout, counted from the removal
    assert lb.connection(CLIENT, ports[B3][0], VIP, 80) is None
    assert {b["ip"] for b in lb.status()["services"][0]["backends"]} == {B1, B2}


def test_a_removed_backend_goes_with_its_last_connection() -> None:
    lb = make_lb(tcp_closing_timeout=5.0)
    lb.on_timer(0.0)
    ports = spread(lb, range(40000, 40030))
    lb.reconfigure(without_b3(lb))
    for port in ports[B3]:
        forwarded(lb, FRONTEND, from_client(port, "R", seq=1001), 1.0)
    lb.on_timer(6.0)
    assert {b["ip"] for b in lb.status()["services"][0]["backends"]} == {B1, B2}


def test_a_removed_backend_without_connections_goes_at_once() -> None:
    lb = make_lb()
    lb.reconfigure(without_b3(lb))
    assert {b["ip"] for b in lb.status()["services"][0]["backends"]} == {B1, B2}


def test_a_backend_put_back_while_draining_takes_connections_again() -> None:
    lb = make_lb()
    ports = spread(lb, range(40000, 40060))
    config = settings(lb)
    lb.reconfigure(without_b3(lb))
    lb.reconfigure(config)
    rows = {b["ip"]: b for b in lb.status()["services"][0]["backends"]}
    assert rows[B3]["state"] == "up" and rows[B3]["connections"] == len(ports[B3])
    result, _ = run(lb, FRONTEND, data(ports[B3][0]))
    assert result.lease is not None


def test_a_weight_change_revokes_nothing() -> None:
    lb = make_lb()
    ports = spread(lb, range(40000, 40060))
    leases = [lease(lb, port) for ps in ports.values() for port in ps]
    changed = settings(lb)
    changed["services"][0]["backends"][1]["weight"] = 5
    lb.reconfigure(changed)
    assert all(given.valid for given in leases)
    slots = {b["ip"]: b["slots"] for b in lb.status()["services"][0]["backends"]}
    assert slots[B2] > 2 * slots[B1]


def test_a_new_backend_mac_revokes_the_leases_of_that_backend_only() -> None:
    lb = make_lb()
    ports = spread(lb, range(40000, 40060))
    leases = {port: lease(lb, port) for ps in ports.values() for port in ps}
    changed = settings(lb)
    changed["services"][0]["backends"][0]["mac"] = "02:bb:00:00:00:99"
    lb.reconfigure(changed)
    for port, given in leases.items():
        assert given.valid == (port not in ports[B1])
    assert forwarded(lb, FRONTEND, data(ports[B1][0])).dst == "02:bb:00:00:00:99"


def test_a_mac_learned_anew_by_arp_revokes_that_backends_leases() -> None:
    lb = make_lb([backend(B1, static=False)])
    run(lb, FRONTEND, from_client(40000, "S"))
    run(lb, BACKEND, arp_reply(B1_MAC, B1, BACK_MAC, SOURCE))
    forwarded(lb, BACKEND, from_backend(B1, 40000, "SA"))
    forwarded(lb, FRONTEND, from_client(40000, "A", seq=1001, ack=5001))
    given = lease(lb, 40000)
    run(lb, BACKEND, arp_reply("02:bb:00:00:00:42", B1, BACK_MAC, SOURCE), 1.0)
    assert not given.valid and lb.counters["arp-mac-changed"] == 1
    assert forwarded(lb, FRONTEND, data(40000)).dst == "02:bb:00:00:00:42"


def test_a_new_frontend_mac_revokes_every_lease_and_is_announced() -> None:
    lb = make_lb()
    lb.on_timer(0.0)
    open_connection(lb)
    given = lease(lb, 40000)
    lb.reconfigure(settings(lb, frontend_mac="02:00:00:00:10:09"))
    assert not given.valid
    announced = [Ether(f) for iface, f in lb.on_timer(1.0) if iface == FRONTEND]
    assert [(f.src, f.psrc) for f in announced] == [("02:00:00:00:10:09", VIP)]
    assert lb.connection(CLIENT, 40000, VIP, 80) is not None  # the connection goes on


def test_a_removed_service_loses_its_connections() -> None:
    lb = make_lb()
    open_connection(lb)
    given = lease(lb, 40000)
    lb.reconfigure(settings(lb, services=[]))
    assert not given.valid and lb.status()["connections"]["total"] == 0
    result, _ = run(lb, FRONTEND, data(40000))
    assert result.reason == LbDrop.NOT_FOR_US  # the VIP is gone with it


def test_a_udp_flow_expiry_also_consults_its_lease() -> None:
    lb = make_lb(
        services=[{"vip": VIP, "port": 53, "proto": "udp", "backends": [backend(B1)]}],
        udp_timeout=60.0,
    )
    lb.on_timer(0.0)
    run(lb, FRONTEND, udp_from_client(33000))
    answer = (
        Ether(src=MACS[B1], dst=BACK_MAC)
        / IP(src=B1, dst=SOURCE)
        / UDP(sport=BACKEND_PORT, dport=33000)
        / b"a"
    )
    result, _ = run(lb, BACKEND, answer)
    assert result.lease is not None
    result.lease.seen = 50.0
    lb.on_timer(60.0)
    assert result.lease.valid
    lb.on_timer(110.0)
    assert not result.lease.valid
    assert lb.status()["connections"]["total"] == 0


def test_frontend_mac_is_what_clients_see() -> None:
    lb = make_lb()
    syn = forwarded(lb, FRONTEND, from_client(40000, "S"))
    back = forwarded(lb, BACKEND, from_backend(syn[IP].dst, syn[TCP].sport, "SA"))
    assert back.src == FRONT_MAC
