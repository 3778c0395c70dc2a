"""The NAT's rate of new sessions per inside host: a token bucket each, refusals silent."""

from __future__ import annotations

import pytest

from pktchain.functions.nat.config import NatConfig, NatConfigError
from pktchain.functions.nat.napt import DropReason, NatVerdict
from support.nat import EXTERNAL, INSIDE_A, INSIDE_B, REMOTE, inb, make_nat, ok, out, tcp, udp


def test_a_host_opens_its_burst_then_its_rate_and_the_rest_is_dropped_silently() -> None:
    nat = make_nat(new_sessions_per_host_rate=10.0, new_sessions_per_host_burst=3)
    for sport in (1000, 1001, 1002):
        ok(out(nat, tcp(INSIDE_A, sport, REMOTE, 80), now=5.0))
    refused = out(nat, tcp(INSIDE_A, 1003, REMOTE, 80), now=5.0)
    assert refused.verdict is NatVerdict.DROPPED  # no ICMP: a flood gets no answers
    assert refused.reason is DropReason.HOST_SESSION_RATE and refused.reply is None
    ok(out(nat, tcp(INSIDE_A, 1000, REMOTE, 80, "A"), now=5.0))  # its sessions go on
    ok(out(nat, tcp(INSIDE_B, 1003, REMOTE, 80), now=5.0))  # other hosts have their own
    ok(out(nat, tcp(INSIDE_A, 1003, REMOTE, 80), now=5.15))  # a token a tenth of a second
    assert out(nat, tcp(INSIDE_A, 1004, REMOTE, 80), now=5.15).reason is (
        DropReason.HOST_SESSION_RATE
    )
    assert nat.counters()["host-session-rate"] == 2


def test_inbound_sessions_through_a_port_forward_count_for_the_inside_host() -> None:
    nat = make_nat(new_sessions_per_host_rate=1.0, new_sessions_per_host_burst=2)
    nat.add_port_forward("tcp", 8080, INSIDE_B, 80)
    ok(inb(nat, tcp(REMOTE, 1, EXTERNAL, 8080)))
    ok(inb(nat, tcp(REMOTE, 2, EXTERNAL, 8080)))
    assert inb(nat, tcp(REMOTE, 3, EXTERNAL, 8080)).reason is DropReason.HOST_SESSION_RATE
    assert nat.session_count() == 2


def test_a_host_whose_sessions_all_ended_starts_again_with_its_burst() -> None:
    nat = make_nat(new_sessions_per_host_rate=0.01, new_sessions_per_host_burst=2)
    ok(out(nat, udp(INSIDE_A, 1000, REMOTE, 53), now=0.0))
    ok(out(nat, udp(INSIDE_A, 1001, REMOTE, 53), now=0.0))
    assert out(nat, udp(INSIDE_A, 1002, REMOTE, 53), now=0.0).reason is (
        DropReason.HOST_SESSION_RATE
    )
    expired = nat.on_timer(400.0).expired  # past the UDP timeout
    assert len(expired) == 2 and nat.session_count() == 0
    ok(out(nat, udp(INSIDE_A, 1002, REMOTE, 53), now=400.0))
    ok(out(nat, udp(INSIDE_A, 1003, REMOTE, 53), now=400.0))


def test_the_rate_comes_after_the_session_limits_which_still_answer() -> None:
    nat = make_nat(
        max_sessions_per_host=1, new_sessions_per_host_rate=1.0, new_sessions_per_host_burst=5
    )
    ok(out(nat, udp(INSIDE_A, 1000, REMOTE, 53)))
    refused = out(nat, udp(INSIDE_A, 1001, REMOTE, 53))
    assert refused.reason is DropReason.HOST_SESSION_LIMIT and refused.reply is not None


def test_no_rate_means_no_limit() -> None:
    nat = make_nat(new_sessions_per_host_rate=None)
    for sport in range(1000, 4000):
        ok(out(nat, udp(INSIDE_A, sport, REMOTE, 53)))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"new_sessions_per_host_rate": 0.0}, "new_sessions_per_host_rate"),
        ({"new_sessions_per_host_rate": -5.0}, "new_sessions_per_host_rate"),
        ({"new_sessions_per_host_burst": 0}, "new_sessions_per_host_burst"),
        ({"icmp_refusal_rate": 0.0}, "icmp_refusal_rate"),
        ({"icmp_refusal_burst": 0}, "icmp_refusal_burst"),
    ],
)
def test_bad_rates_are_named(changes: dict[str, float], field: str) -> None:
    with pytest.raises(NatConfigError) as caught:
        NatConfig(EXTERNAL, ("10.0.0.0/24",), **changes)  # type: ignore[arg-type]
    assert [error.split(":")[0] for error in caught.value.errors] == [field]


def test_refusals_are_answered_within_their_own_rate_then_dropped_silently() -> None:
    nat = make_nat(max_sessions_per_host=1, icmp_refusal_rate=1.0, icmp_refusal_burst=2)
    ok(out(nat, udp(INSIDE_A, 1000, REMOTE, 53), now=1.0))
    answered = [out(nat, udp(INSIDE_A, port, REMOTE, 53), now=1.0) for port in (1, 2, 3, 4)]
    assert [r.verdict for r in answered] == [NatVerdict.REPLY] * 2 + [NatVerdict.DROPPED] * 2
    assert {r.reason for r in answered} == {DropReason.HOST_SESSION_LIMIT}
    assert out(nat, udp(INSIDE_A, 5, REMOTE, 53), now=2.0).verdict is NatVerdict.REPLY
    counters = nat.counters()
    assert counters["host-session-limit"] == 5 and counters["refusal-rate-limited"] == 2
