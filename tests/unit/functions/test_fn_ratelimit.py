"""The rate limiter (`kind: rate-limiter`): token buckets by scope, drops, table bounds, timers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.ratelimit import RateLimiter
from pktchain.functions.sdk import Result, Verdict, function_class, make_function
from pktchain.functions.sdk.schema import ConfigError
from support.fn_frames import CLIENT, MAC_A, MAC_B, SERVER, driven, packet, raw_packet, udp


def limiter(**config: Any) -> RateLimiter:
    made = make_function("rate-limiter", config)
    assert isinstance(made, RateLimiter)
    return made


def verdicts(results: list[Result]) -> list[str]:
    return ["pass" if r.verdict is Verdict.FORWARD else r.reason for r in results]


def send(fn: RateLimiter, count: int, now: float, **fields: Any) -> list[str]:
    return verdicts([driven(fn, packet(udp(**fields)), now) for _ in range(count)])


def test_the_kind_loads_the_class() -> None:
    assert function_class("rate-limiter") is RateLimiter
    assert RateLimiter.LIVE


def test_a_rate_is_required() -> None:
    with pytest.raises(ConfigError) as caught:
        limiter()
    assert "give at least one rate" in str(caught.value)


def test_every_wrong_field_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        limiter(rate_pps=0, rate_bps="fast", scope="planet", max_buckets=0, burst_packets=0)
    fields = {error.field for error in caught.value.errors}
    assert fields == {"rate_pps", "rate_bps", "scope", "max_buckets", "burst_packets"}


def test_a_burst_needs_its_rate() -> None:
    with pytest.raises(ConfigError) as caught:
        limiter(rate_pps=10, burst_bytes=1000)
    assert "burst_bytes: needs rate_bps" in str(caught.value)


def test_packets_over_the_burst_are_dropped_and_counted() -> None:
    fn = limiter(rate_pps=10, burst_packets=3)
    assert send(fn, 5, 0.0) == ["pass"] * 3 + ["drop-rate-limit"] * 2
    assert (fn.counters["passed"], fn.counters["drop-rate-limit"]) == (3, 2)


def test_the_bucket_refills_at_the_rate() -> None:
    fn = limiter(rate_pps=10, burst_packets=3)
    send(fn, 3, 0.0)
    assert send(fn, 2, 0.1) == ["pass", "drop-rate-limit"]  # one token per 0.1 s
    assert send(fn, 4, 10.0) == ["pass"] * 3 + ["drop-rate-limit"]  # never above the burst


def test_the_default_burst_is_one_second() -> None:
    fn = limiter(rate_pps=4)
    assert send(fn, 5, 0.0) == ["pass"] * 4 + ["drop-rate-limit"]


def test_a_bit_rate_counts_frame_bytes() -> None:
    fn = limiter(rate_bps=8000, burst_bytes=1000)  # 1000 bytes a second
    big = udp(payload=b"x" * 400)  # 14 + 20 + 8 + 400 = 442 bytes
    results = [fn.process(packet(big), 0.0) for _ in range(3)]
    assert verdicts(results) == ["pass", "pass", "drop-rate-limit"]
    assert fn.counters["drop-rate-limit-bytes"] == 442
    assert verdicts([fn.process(packet(big), 0.5)]) == ["pass"]  # 116 + 500 bytes back


def test_both_limits_apply_together() -> None:
    fn = limiter(rate_pps=100, burst_packets=100, rate_bps=8000, burst_bytes=100)
    assert send(fn, 2, 0.0, payload=b"x" * 18) == ["pass", "drop-rate-limit"]  # 60-byte frames


def test_each_flow_has_its_bucket() -> None:
    fn = limiter(rate_pps=1, burst_packets=1)
    assert send(fn, 2, 0.0, sport=1) == ["pass", "drop-rate-limit"]
    assert send(fn, 1, 0.0, sport=2) == ["pass"]


def test_the_source_scope_shares_a_bucket_per_address() -> None:
    fn = limiter(rate_pps=1, burst_packets=2, scope="source")
    assert send(fn, 1, 0.0, sport=1) + send(fn, 1, 0.0, sport=2) == ["pass", "pass"]
    assert send(fn, 1, 0.0, sport=3) == ["drop-rate-limit"]
    assert send(fn, 1, 0.0, src="10.0.0.2") == ["pass"]


def test_the_global_scope_shares_one_bucket() -> None:
    fn = limiter(rate_pps=1, burst_packets=2, scope="global")
    assert send(fn, 1, 0.0, src="10.0.0.2") + send(fn, 1, 0.0, src="10.0.0.3") == ["pass"] * 2
    assert send(fn, 1, 0.0, src="10.0.0.4") == ["drop-rate-limit"]


def test_a_flood_is_cut_while_a_slow_ping_passes() -> None:
    fn = limiter(rate_pps=100, burst_packets=10)
    flood = [fn.process(packet(udp(dport=9)), i / 10000) for i in range(1000)]  # 10,000/s
    pings = [
        fn.process(packet(IP(src=CLIENT, dst=SERVER) / ICMP(id=1, seq=n)), n * 0.1)
        for n in range(10)
    ]
    assert verdicts(pings) == ["pass"] * 10
    passed = verdicts(flood).count("pass")
    assert 10 + 9 <= passed <= 10 + 11  # the burst, then 100/s for 0.1 s


def test_only_the_chosen_direction_is_limited() -> None:
    fn = limiter(rate_pps=1, burst_packets=1, direction="ingress")
    answers = [fn.process(packet(udp(), "egress"), 0.0) for _ in range(3)]
    assert verdicts(answers) == ["pass"] * 3
    assert fn.counters["not-limited"] == 3


def test_it_never_gives_a_lease() -> None:
    fn = limiter(rate_pps=1000)
    assert all(fn.process(packet(udp()), 0.0).lease is None for _ in range(5))


def test_frames_that_are_not_ip_pass() -> None:
    fn = limiter(rate_pps=1, burst_packets=1, scope="global")
    arp = bytes(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=SERVER))
    results = [fn.process(raw_packet(arp), 0.0) for _ in range(3)]
    assert verdicts(results) == ["pass"] * 3


def test_a_malformed_frame_is_a_counted_drop() -> None:
    fn = limiter(rate_pps=10)
    truncated = bytes(Ether(src=MAC_A, dst=MAC_B) / udp())[:30]
    assert fn.process(raw_packet(truncated), 0.0).reason == "drop-malformed"


def test_the_table_evicts_the_least_recently_used_bucket() -> None:
    fn = limiter(rate_pps=1, burst_packets=1, max_buckets=2)
    send(fn, 1, 0.0, sport=1)
    send(fn, 1, 1.0, sport=2)
    send(fn, 1, 2.0, sport=1)  # port 1 used again: port 2 is now the oldest
    send(fn, 1, 3.0, sport=3)
    ports = [bucket["sport"] for bucket in fn.status()["buckets"]]
    assert sorted(ports) == [1, 3]
    assert fn.counters["buckets-evicted"] == 1


def test_idle_buckets_expire() -> None:
    fn = limiter(rate_pps=10, idle_timeout=30)
    send(fn, 1, 0.0, sport=1)
    send(fn, 1, 10.0, sport=2)
    assert fn.next_deadline() == 30.0
    fn.on_timer(30.0)
    assert fn.status()["bucket_count"] == 1
    assert fn.next_deadline() == 40.0
    fn.on_timer(40.0)
    assert fn.next_deadline() is None
    assert fn.counters["buckets-expired"] == 2


def test_a_bucket_is_kept_until_it_would_be_full_again() -> None:
    fn = limiter(rate_pps=1, burst_packets=100, idle_timeout=10)  # 100 s to refill
    send(fn, 100, 0.0)
    assert fn.next_deadline() == 100.0


def test_new_rates_apply_to_existing_buckets() -> None:
    fn = limiter(rate_pps=100, burst_packets=100)
    send(fn, 1, 0.0)
    fn.reconfigure({"rate_pps": 1, "burst_packets": 2})
    assert send(fn, 3, 0.0) == ["pass", "pass", "drop-rate-limit"]  # cut to the new burst


def test_a_new_scope_starts_afresh() -> None:
    fn = limiter(rate_pps=1, burst_packets=1)
    send(fn, 2, 0.0)
    fn.reconfigure({"rate_pps": 1, "burst_packets": 1, "scope": "source"})
    assert fn.status()["bucket_count"] == 0
    assert send(fn, 1, 0.0) == ["pass"]


def test_the_status_lists_the_buckets_that_drop_most() -> None:
    fn = limiter(rate_pps=1, burst_packets=1, status_buckets=1)
    send(fn, 1, 0.0, sport=1)
    send(fn, 5, 0.0, sport=2)
    (bucket,) = fn.status()["buckets"]
    assert (bucket["sport"], bucket["source"], bucket["passed"], bucket["dropped"]) == (
        2,
        CLIENT,
        1,
        4,
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.sampled_from(["ingress", "egress"]), st.floats(0, 1e6))
def test_arbitrary_bytes_never_raise(data: bytes, iface: str, now: float) -> None:
    fn = limiter(rate_pps=5, rate_bps=10000, scope="source")
    frame = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x0800)) + data
    for candidate in (frame, data):
        assert fn.process(raw_packet(candidate, iface), now).verdict in (
            Verdict.FORWARD,
            Verdict.DROP,
        )
    fn.on_timer(now + 1e6)
    fn.status()
