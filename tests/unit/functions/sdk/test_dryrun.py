"""Dry runs of every built-in function: the verdict and rewrite of the real `process`,
and the function's state (status, tables, counters) as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pktchain.functions.sdk import Function, Packet, Verdict, forward, make_function
from pktchain.functions.sdk.dryrun import NotTraceableError, dry_run
from pktchain.packet.describe import PacketSpec, header_diff, header_fields
from support.loadbalancer import FRONTEND, from_client, make_lb

CONFIGS: dict[str, dict[str, Any]] = {
    "firewall": {
        "default": "accept",
        "rules": [{"action": "drop", "protocol": "tcp", "dport": [23]}],
    },
    "mirror": {},
    "rate-limiter": {"rate_pps": 10},
    "flow-monitor": {},
    "l7-classifier": {},
    "nat": {"external_address": "198.51.100.1", "internal_networks": ["10.0.0.0/24"]},
}


def syn(dport: int = 80) -> Packet:
    spec = PacketSpec.parse(["src=10.0.0.1", "dst=203.0.113.7", f"dport={dport}"])
    frame = spec.frame(eth_src=bytes.fromhex("020000000001"), eth_dst=bytes.fromhex("020000000002"))
    return Packet.from_ethernet(frame, "ingress")


def snapshot(function: Function) -> str:
    """Everything a function shows of its state, as one comparable string."""
    return json.dumps(
        {
            "status": function.status(),
            "tables": {k: v.entries for k, v in function.tables().items()},
        },
        sort_keys=True,
        default=str,
    )


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_a_dry_run_gives_the_real_verdict_and_changes_nothing(kind: str) -> None:
    function = make_function(kind, CONFIGS[kind])
    before = snapshot(function)
    packet = syn()
    frame = packet.ethernet
    dry = dry_run(function, packet, 1.0)
    assert snapshot(function) == before
    assert packet.ethernet == frame  # the caller's packet is untouched too
    # The same packet for real, on an identical function: the same answer.
    twin = make_function(kind, CONFIGS[kind])
    real_packet = syn()
    real = twin.process(real_packet, 1.0)
    assert dry.verdict is real.verdict
    assert dry.frame == real_packet.ethernet
    if kind in ("firewall", "flow-monitor", "nat"):
        # Stateful: the real packet opened an entry; the dry run says it would.
        grown = {name for name, (old, new) in dry.tables.items() if new > old}
        assert grown, dry.tables
        assert snapshot(twin) != before


def test_the_nat_s_dry_run_shows_its_rewrite_and_keeps_no_session() -> None:
    nat = make_function("nat", CONFIGS["nat"])
    dry = dry_run(nat, syn(), 1.0)
    assert dry.verdict is Verdict.FORWARD
    assert dry.iface == "egress"
    changes = {
        c["field"]: (c["from"], c["to"])
        for c in header_diff(header_fields(syn().ethernet), header_fields(dry.frame))
    }
    assert changes["ip.src"] == ("10.0.0.1", "198.51.100.1")
    assert dry.tables["nat-sessions"] == (0, 1)
    assert nat.tables()["nat-sessions"].entries == 0


def test_the_firewall_s_dry_run_names_its_drop() -> None:
    firewall = make_function("firewall", CONFIGS["firewall"])
    dry = dry_run(firewall, syn(dport=23), 1.0)
    assert dry.verdict is Verdict.DROP
    assert dry.reason
    assert firewall.counters[dry.reason] == 0


def test_the_load_balancer_s_dry_run_picks_a_backend_and_keeps_no_connection() -> None:
    lb = make_lb()
    before = snapshot(lb)
    packet = Packet.from_ethernet(bytes(from_client()), FRONTEND)
    dry = dry_run(lb, packet, 1.0)
    assert dry.verdict is Verdict.FORWARD
    assert header_fields(dry.frame)["ip.dst"] != header_fields(packet.ethernet)["ip.dst"]
    assert snapshot(lb) == before


class Unmarked(Function):
    KIND = "unmarked"

    def process(self, packet: Packet, now: float) -> Any:
        return forward()


def test_a_function_that_does_not_declare_traceable_is_not_run() -> None:
    with pytest.raises(NotTraceableError, match="TRACEABLE"):
        dry_run(Unmarked(), syn(), 1.0)
