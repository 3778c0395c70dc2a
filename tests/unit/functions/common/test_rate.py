"""The token bucket every rate limit of pktchain uses."""

from __future__ import annotations

from pktchain.functions.common.rate import TokenBucket


def test_a_new_bucket_gives_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=4.0, burst=3)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(10.25)  # a token a quarter of a second
    assert not bucket.take(10.25)
    assert bucket.tokens(11.0) == 3.0  # never more than the burst


def test_time_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1)
    assert bucket.take(5.0)
    assert not bucket.take(4.0)
    assert not bucket.take(5.5)
    assert bucket.take(6.0)
    assert (bucket.rate, bucket.burst) == (1.0, 1)
