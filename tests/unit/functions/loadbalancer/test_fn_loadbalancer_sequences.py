"""Random sequences of packets, timers and reconfigurations: the tables stay consistent.

Whatever happens, every connection is found from both sides, belongs to its
backend, holds one source port, and a lease is never left valid on a
connection that is gone; nothing raises and nothing counts as an internal error.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Ether

from pktchain.functions.loadbalancer.function import BACKEND, FRONTEND, LbDrop, LoadBalancer
from pktchain.functions.sdk import FlowLease
from support.loadbalancer import (
    B1,
    B2,
    B3,
    CLIENT,
    VIP,
    backend,
    from_backend,
    from_client,
    make_lb,
    run,
)
from support.loadbalancer import settings as config_of

CLIENT_FLAGS = ["S", "A", "PA", "FA", "R"]
BACKEND_FLAGS = ["SA", "A", "PA", "FA", "R", "RA"]

client_event = st.tuples(
    st.just("client"), st.integers(40000, 40007), st.sampled_from(CLIENT_FLAGS)
)
backend_event = st.tuples(st.just("backend"), st.integers(0, 7), st.sampled_from(BACKEND_FLAGS))
timer_event = st.tuples(st.just("timer"), st.floats(0.1, 400.0), st.just(""))
config_event = st.tuples(
    st.just("config"),
    st.integers(0, 7),  # which of B1..B3 stay (bits), none when 0
    st.sampled_from(["", "drain", "weight"]),
)
events = st.lists(st.one_of(client_event, backend_event, timer_event, config_event), max_size=40)


def check(lb: LoadBalancer, leases: list[tuple[int, FlowLease]]) -> None:
    """The invariants of the connection table, as the status and the lookups show them."""
    status = lb.status()
    total = status["connections"]["total"]
    rows = [row for service in status["services"] for row in service["backends"]]
    assert sum(row["connections"] for row in rows) == total
    targets = {(row["ip"], row["health"]["port"]) for row in rows if row["health"] is not None}
    assert status["snat_ports_in_use"] == total + len(targets)
    for port, lease in leases:
        if lease.valid:  # a valid lease belongs to a live connection, and is its lease
            connection = lb.connection(CLIENT, port, VIP, 80)
            assert connection is not None and connection.lease is lease
    assert lb.counters[LbDrop.INTERNAL_ERROR] == 0


def reconfigure(lb: LoadBalancer, keep: int, change: str) -> None:
    chosen = [ip for bit, ip in enumerate((B1, B2, B3)) if keep >> bit & 1]
    data: dict[str, Any] = config_of(lb)
    data["services"][0]["backends"] = [
        backend(ip, draining=change == "drain" and ip == chosen[0], weight=3 if change else 1)
        for ip in chosen
    ]
    lb.reconfigure(data)


@settings(max_examples=300, deadline=None)
@given(steps=events, checked=st.booleans())
def test_any_sequence_keeps_the_tables_consistent(
    steps: list[tuple[str, Any, str]], checked: bool
) -> None:
    health = {"enabled": checked, "interval": 5.0, "timeout": 1.0}
    lb = make_lb(health=health, drain_timeout=50.0, tcp_closing_timeout=20.0)
    now = 0.0
    leases: list[tuple[int, FlowLease]] = []
    seen_ports: list[tuple[str, int, int]] = []
    for kind, value, flags in steps:
        client_port = value
        if kind == "client":
            result, packet = run(lb, FRONTEND, from_client(value, flags, seq=1000), now)
            out = Ether(packet.ethernet)
            if result.iface == BACKEND and out.haslayer("TCP"):
                seen_ports.append((out["IP"].dst, out["TCP"].sport, value))
        elif kind == "backend" and seen_ports:
            ip, port, client_port = seen_ports[value % len(seen_ports)]
            result, _ = run(lb, BACKEND, from_backend(ip, port, flags, ack=1001), now)
        elif kind == "timer":
            now += value
            lb.on_timer(now)
            continue
        elif kind == "config":
            reconfigure(lb, value, flags)
            check(lb, leases)
            continue
        else:
            continue
        if result.lease is not None:
            leases.append((client_port, result.lease))
        check(lb, leases)
