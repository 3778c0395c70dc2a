"""Active health checks through the dataplane: SYNs from the timer, answers in, tables follow."""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.loadbalancer.function import BACKEND, FRONTEND, LbDrop, LoadBalancer
from pktchain.functions.sdk import Verdict
from support.loadbalancer import (
    B1,
    B1_MAC,
    B2,
    B3,
    BACK_MAC,
    BACKEND_PORT,
    CLIENT,
    MACS,
    SOURCE,
    VIP,
    arp_reply,
    backend,
    checksums_ok,
    forwarded,
    from_backend,
    from_client,
    make_lb,
    open_connection,
    run,
    settings,
    udp_from_client,
)

HEALTH = {"enabled": True, "interval": 2.0, "timeout": 1.0, "rise": 2, "fall": 3}


def checked_lb(backends: list[dict[str, Any]] | None = None, **health: Any) -> LoadBalancer:
    return make_lb(backends, health={**HEALTH, **health})


def checks(lb: LoadBalancer, now: float) -> dict[str, Ether]:
    """Run the timer; the health-check SYNs it sent, by backend address."""
    sent = {}
    for iface, frame in lb.on_timer(now):
        decoded = Ether(frame)
        if iface == BACKEND and decoded.haslayer(TCP):
            sent[decoded[IP].dst] = decoded
    return sent


def answer(lb: LoadBalancer, syn: Ether, flags: str = "SA", now: float = 0.0) -> Any:
    """The backend answers a check SYN (SYN-ACK acknowledges its sequence number)."""
    reply = from_backend(
        syn[IP].dst, syn[TCP].sport, flags, seq=777, ack=syn[TCP].seq + 1, sport=syn[TCP].dport
    )
    result, _ = run(lb, BACKEND, reply, now)
    return result


def state(lb: LoadBalancer, ip: str) -> str:
    (row,) = [b for b in lb.status()["services"][0]["backends"] if b["ip"] == ip]
    return str(row["state"])


def in_table(lb: LoadBalancer) -> int:
    return int(lb.status()["services"][0]["backends_in_table"])


def test_the_timer_sends_a_syn_to_each_backend() -> None:
    lb = checked_lb()
    sent = checks(lb, 0.0)
    assert set(sent) == {B1, B2, B3}
    for ip, syn in sent.items():
        assert (syn.src, syn.dst) == (BACK_MAC, MACS[ip])
        assert (syn[IP].src, syn[TCP].dport, syn[TCP].flags) == (SOURCE, BACKEND_PORT, "S")
        checksums_ok(syn)
    assert lb.next_deadline() == 1.0  # the checks' timeout
    assert lb.counters["health-checks-sent"] == 3


def test_a_syn_ack_passes_the_check_and_is_answered_by_a_reset() -> None:
    lb = checked_lb()
    syn = checks(lb, 0.0)[B1]
    result = answer(lb, syn, now=0.25)
    assert result.verdict is Verdict.REPLY and result.reason == LbDrop.HEALTH_CHECK_ANSWER
    ((iface, frame),) = result.emit
    rst = Ether(frame)
    assert iface == BACKEND and rst.dst == B1_MAC
    # RFC 9293 §3.10.5: <SEQ=SND.NXT><CTL=RST>, SND.NXT being the acknowledged ISS + 1.
    assert (rst[TCP].flags, rst[TCP].seq) == ("R", syn[TCP].seq + 1)
    assert (rst[TCP].sport, rst[TCP].dport) == (syn[TCP].sport, BACKEND_PORT)
    checksums_ok(rst)
    (row,) = [b for b in lb.status()["services"][0]["backends"] if b["ip"] == B1]
    assert row["health"]["last_result"] == "syn-ack" and row["health"]["rtt"] == 0.25


def test_silence_takes_a_new_backend_down_and_out_of_the_table() -> None:
    # HAProxy's init-state up: up at once, down at the first failure.
    lb = checked_lb()
    sent = checks(lb, 0.0)
    answer(lb, sent[B2])
    answer(lb, sent[B3])
    checks(lb, 1.0)  # B1's check times out
    assert state(lb, B1) == "down" and in_table(lb) == 2
    chosen = {
        forwarded(lb, FRONTEND, from_client(p, "S"), 1.5)[IP].dst for p in range(50000, 50200)
    }
    assert chosen == {B2, B3}
    assert lb.counters["backends-marked-down"] == 1


def test_rise_successes_bring_it_up_and_fall_failures_take_it_down() -> None:
    lb = checked_lb([backend(B1)])
    checks(lb, 0.0)
    checks(lb, 1.0)
    assert state(lb, B1) == "down"
    answer(lb, checks(lb, 2.0)[B1], now=2.1)
    assert state(lb, B1) == "down"  # 1 of rise 2
    answer(lb, checks(lb, 4.0)[B1], now=4.1)
    assert state(lb, B1) == "up" and in_table(lb) == 1
    for now in (6.0, 8.0):
        checks(lb, now)
        checks(lb, now + 1.0)
        assert state(lb, B1) == "up"  # fall is 3
    checks(lb, 10.0)
    checks(lb, 11.0)
    assert state(lb, B1) == "down" and in_table(lb) == 0
    result, _ = run(lb, FRONTEND, from_client(40000, "S"), 11.5)
    assert result.reason == LbDrop.NO_BACKEND


def test_a_reset_fails_the_check() -> None:
    lb = checked_lb([backend(B1)])
    syn = checks(lb, 0.0)[B1]
    result = answer(lb, syn, "RA")
    assert result.verdict is Verdict.DROP and result.emit == []
    assert state(lb, B1) == "down"
    (row,) = lb.status()["services"][0]["backends"]
    assert row["health"]["last_result"] == "refused"


def test_a_stale_syn_ack_is_reset_but_not_counted() -> None:
    lb = checked_lb([backend(B1)])
    syn = checks(lb, 0.0)[B1]
    stale = from_backend(B1, syn[TCP].sport, "SA", seq=1, ack=syn[TCP].seq + 99)
    result, _ = run(lb, BACKEND, stale)
    assert Ether(result.emit[0][1])[TCP].flags == "R"
    assert lb.counters["health-checks-passed"] == 0 and lb.counters["health-checks-failed"] == 0


def test_init_state_down_waits_for_one_success() -> None:
    lb = checked_lb([backend(B1), backend(B2)], init_state="down")
    assert in_table(lb) == 0
    sent = checks(lb, 0.0)
    answer(lb, sent[B1])
    assert state(lb, B1) == "up" and state(lb, B2) == "down"


def test_a_down_backend_keeps_its_tcp_connections() -> None:
    lb = checked_lb([backend(B1), backend(B2)])
    sent = checks(lb, 0.0)
    answer(lb, sent[B1])
    answer(lb, sent[B2])
    ports = {}
    for port in range(40000, 40040):
        ports[port] = open_connection(lb, port, now=0.5)[0]
    on_b1 = [p for p, ip in ports.items() if ip == B1]
    connections = [lb.connection(CLIENT, p, VIP, 80) for p in on_b1]
    leases = [c.lease for c in connections if c is not None]
    sent = checks(lb, 2.0)
    answer(lb, sent[B2], now=2.1)
    for now in (3.0, 4.0, 5.0, 6.0, 7.0):
        for ip, syn in checks(lb, now).items():
            if ip == B2:
                answer(lb, syn, now=now + 0.1)
    assert state(lb, B1) == "down"
    assert len(leases) == len(on_b1) and all(lease is not None and lease.valid for lease in leases)
    out = forwarded(
        lb, FRONTEND, from_client(on_b1[0], "PA", seq=1001, ack=5001, payload=b"x"), 7.5
    )
    assert out[IP].dst == B1


def test_a_syn_retransmitted_to_a_backend_gone_down_goes_elsewhere() -> None:
    lb = checked_lb([backend(B1), backend(B2)])
    sent = checks(lb, 0.0)
    answer(lb, sent[B2])
    port = next(
        p
        for p in range(40000, 41000)
        if forwarded(lb, FRONTEND, from_client(p, "S"), 0.1)[IP].dst == B1
    )
    checks(lb, 1.0)  # B1's check times out: down
    retransmitted = forwarded(lb, FRONTEND, from_client(port, "S"), 1.5)
    assert retransmitted[IP].dst == B2
    assert lb.counters["connections-rebalanced"] == 1


def udp_lb(**extra: Any) -> LoadBalancer:
    backends = [backend(B1, port=5353, **extra), backend(B2, port=5353, **extra)]
    return make_lb(
        services=[{"vip": VIP, "port": 53, "proto": "udp", "backends": backends}], health=HEALTH
    )


def test_a_udp_service_is_checked_only_on_a_check_port() -> None:
    assert checks(udp_lb(), 0.0) == {}
    sent = checks(udp_lb(check_port=8080), 0.0)
    assert {(ip, syn[TCP].dport) for ip, syn in sent.items()} == {(B1, 8080), (B2, 8080)}


def test_udp_flows_of_a_down_backend_move_on_their_next_datagram() -> None:
    lb = udp_lb(check_port=8080)
    sent = checks(lb, 0.0)
    answer(lb, sent[B1])
    answer(lb, sent[B2])
    first: dict[str, int] = {}
    for port in range(33000, 33100):
        first.setdefault(forwarded(lb, FRONTEND, udp_from_client(port), 0.5)[IP].dst, port)
    port = first[B1]
    given = lb.connection(CLIENT, port, VIP, 53, "udp")
    assert given is not None
    for now in (2.0, 3.0, 4.0, 5.0, 6.0, 7.0):  # B1 stays silent, B2 answers
        assert state(lb, B1) == "up"  # fall is 3
        for ip, syn in checks(lb, now).items():
            if ip == B2:
                answer(lb, syn, now=now + 0.1)
    assert state(lb, B1) == "down"
    assert forwarded(lb, FRONTEND, udp_from_client(port), 7.5)[IP].dst == B2


def test_a_backend_of_two_services_is_checked_once() -> None:
    lb = make_lb(
        services=[
            {"vip": VIP, "port": 80, "backends": [backend(B1)]},
            {"vip": VIP, "port": 8000, "backends": [backend(B1)]},
        ],
        health=HEALTH,
    )
    frames = [f for iface, f in lb.on_timer(0.0) if iface == BACKEND and Ether(f).haslayer(TCP)]
    assert len(frames) == 1
    checks(lb, 1.0)
    downs = [s["backends"][0]["state"] for s in lb.status()["services"]]
    assert downs == ["down", "down"]


def test_a_check_waits_for_the_backend_mac() -> None:
    lb = checked_lb([backend(B1, static=False)])
    frames = [Ether(f) for iface, f in lb.on_timer(0.0) if iface == BACKEND]
    assert [f[ARP].pdst for f in frames if f.haslayer(ARP) and f[ARP].psrc != f[ARP].pdst] == [B1]
    result, _ = run(lb, BACKEND, arp_reply(B1_MAC, B1, BACK_MAC, SOURCE), 0.1)
    (syn,) = [Ether(f) for _, f in result.emit]
    assert (syn.dst, syn[TCP].flags, syn[IP].dst) == (B1_MAC, "S", B1)
    answer(lb, syn, now=0.2)
    assert state(lb, B1) == "up"


def test_turning_checks_off_brings_every_backend_back() -> None:
    lb = checked_lb()
    checks(lb, 0.0)
    checks(lb, 1.0)
    assert in_table(lb) == 0
    lb.reconfigure(settings(lb, health={"enabled": False}))
    assert in_table(lb) == 3
    assert lb.on_timer(10.0) == []


def test_a_checked_target_is_not_a_connection() -> None:
    # The check's source port is never handed to a client connection toward that backend.
    lb = checked_lb([backend(B1)], interval=2.0)
    syn = checks(lb, 0.0)[B1]
    answer(lb, syn)
    out = forwarded(lb, FRONTEND, from_client(syn[TCP].sport, "S"), 0.5)
    assert out[TCP].sport != syn[TCP].sport
