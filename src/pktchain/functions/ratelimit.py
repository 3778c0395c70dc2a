"""A rate-limiter function: token buckets per flow, per source address, or for everything.

:class:`RateLimiter` is a bump in the wire (``ingress``, ``egress``). Each IP
packet takes tokens from the bucket of its key, chosen by ``scope``:

* ``flow``: the 5-tuple, so each direction of a connection has its own bucket;
* ``source``: the source address;
* ``global``: one bucket for all the traffic it polices.

A bucket holds up to ``burst_packets`` packet tokens and ``burst_bytes`` byte
tokens and refills at ``rate_pps`` packets and ``rate_bps`` bits a second (a
limit left out is not applied). A packet passes when its bucket has one packet
token and as many byte tokens as the frame has bytes (the Ethernet frame, as
``tc`` counts; a GSO frame counts whole), and takes them; otherwise it is
dropped and counted (``drop-rate-limit``). Buckets refill from the ``now`` of
each packet, so no timer runs per bucket; ``on_timer`` only forgets buckets
idle long enough to be full again, and the table of buckets has a limit (the
least recently used bucket makes room).

A rate limiter must see every packet it limits, so it never forwards with a
flow lease: every flow that goes through it stays on the node's slow path,
and so does the rest of its chain for those flows. Put it where it is needed
(a classifier that sends it only the traffic to limit), not in front of
everything. Frames that are not IP pass without being limited.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from pktchain.functions.common.fields import Direction
from pktchain.functions.sdk import Function, Packet, Result, TableSize, drop, forward
from pktchain.functions.sdk.schema import check
from pktchain.packet.address import format_ip

__all__ = ["Bucket", "Direction", "RateLimiter", "RateLimiterConfig", "Scope"]


class Scope(Enum):
    """What shares a bucket."""

    FLOW = "flow"
    SOURCE = "source"
    GLOBAL = "global"


def _positive(value: float | None) -> str | None:
    return None if value is None or value > 0 else "must be more than 0"


@dataclass(frozen=True, slots=True)
class RateLimiterConfig:
    """Rates, bursts, scope and table bounds; at least one of the two rates is required."""

    rate_pps: float | None = field(
        default=None, metadata=check(test=_positive, help="packets per second (more than 0)")
    )
    rate_bps: float | None = field(
        default=None,
        metadata=check(
            test=_positive,
            help="bits per second (more than 0); at least one of the two rates is required",
        ),
    )
    burst_packets: int | None = field(
        default=None,
        metadata=check(
            minimum=1,
            help="packet bucket size; default one second of rate_pps (at least 1); needs rate_pps",
        ),
    )
    burst_bytes: int | None = field(
        default=None,
        metadata=check(
            minimum=1,
            help="byte bucket size; default one second of rate_bps, at least 65536; needs rate_bps",
        ),
    )
    scope: Scope = field(
        default=Scope.FLOW,
        metadata=check(
            help="what shares a bucket: flow (the 5-tuple), source (the source address) "
            "or global (everything)"
        ),
    )
    direction: Direction = field(
        default=Direction.ANY,
        metadata=check(
            help="ingress, egress or any: the interface whose incoming packets are limited"
        ),
    )
    max_buckets: int = field(
        default=65536,
        metadata=check(
            minimum=1, help="bucket table limit; the least recently used bucket makes room"
        ),
    )
    idle_timeout: float = field(
        default=60.0,
        metadata=check(minimum=0.001, help="seconds before an unused bucket is forgotten"),
    )
    status_buckets: int = field(
        default=20,
        metadata=check(
            minimum=0,
            maximum=10000,
            help="buckets listed by status() (those that dropped most)",
        ),
    )

    def __post_init__(self) -> None:
        problems = []
        if self.rate_pps is None and self.rate_bps is None:
            problems.append("rate_pps/rate_bps: give at least one rate")
        if self.burst_packets is not None and self.rate_pps is None:
            problems.append("burst_packets: needs rate_pps")
        if self.burst_bytes is not None and self.rate_bps is None:
            problems.append("burst_bytes: needs rate_bps")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def packet_depth(self) -> float:
        """The packet bucket's size (0: no packet limit)."""
        if self.rate_pps is None:
            return 0.0
        return float(self.burst_packets or max(1.0, self.rate_pps))

    @property
    def byte_depth(self) -> float:
        """The byte bucket's size (0: no byte limit)."""
        if self.rate_bps is None:
            return 0.0
        return float(self.burst_bytes or max(65536.0, self.rate_bps / 8))

    @property
    def refill_time(self) -> float:
        """Seconds an empty bucket takes to fill: after that it holds nothing worth keeping."""
        times = [0.0]
        if self.rate_pps is not None:
            times.append(self.packet_depth / self.rate_pps)
        if self.rate_bps is not None:
            times.append(self.byte_depth * 8 / self.rate_bps)
        return max(times)


BucketKey = tuple[bytes | int, ...]


class Bucket:
    """The tokens of one key, as of ``last`` (refilled when next used)."""

    __slots__ = ("bytes", "dropped", "last", "packets", "passed")

    def __init__(self, packets: float, octets: float, now: float) -> None:
        self.packets = packets
        self.bytes = octets
        self.last = now
        self.passed = 0
        self.dropped = 0


class RateLimiter(Function[RateLimiterConfig]):
    """Token-bucket policing (see the module docstring)."""

    KIND: ClassVar[str] = "rate-limiter"
    Config: ClassVar[type[Any]] = RateLimiterConfig
    LIVE: ClassVar[bool] = True
    INTERFACES: ClassVar[tuple[str, ...]] = ("ingress", "egress")
    UNKNOWN_INTERFACE: ClassVar[str] = "drop-unknown-interface"
    COUNTERS: ClassVar[Mapping[str, str]] = {
        "passed": "packets within the rate",
        "passed-bytes": "bytes of the packets within the rate (Ethernet frames)",
        "drop-rate-limit": "packets over the rate, dropped",
        "drop-rate-limit-bytes": "bytes of the packets over the rate",
        "drop-malformed": "frames that do not parse, dropped",
        "drop-unknown-interface": "frames on an interface it does not have, refused by the driver",
        "not-limited": "packets passed without policing (the other direction, or not IP)",
        "buckets-new": "buckets made",
        "buckets-expired": "buckets forgotten after idle_timeout unused",
        "buckets-evicted": "buckets dropped to make room (max_buckets)",
    }

    def __init__(self, config: RateLimiterConfig) -> None:
        super().__init__(config)
        # Least recently used first: each packet moves its bucket to the end,
        # so the front is what expires or is evicted first.
        self._buckets: dict[BucketKey, Bucket] = {}
        self._limited = self._limited_interfaces(config)

    def _limited_interfaces(self, config: RateLimiterConfig) -> frozenset[str]:
        if config.direction is Direction.ANY:
            return frozenset(self.INTERFACES)
        return frozenset((config.direction.value,))

    # -- packets -------------------------------------------------------------

    def process(self, packet: Packet, now: float) -> Result:
        info = packet.info
        if info.error is not None:
            return drop("drop-malformed")
        iface = packet.iface
        if not info.ip_version or iface not in self._limited:
            self.counters["not-limited"] += 1
            return forward()
        scope = self.config.scope
        key: BucketKey
        if scope is Scope.FLOW:
            key = (info.src, info.dst, info.proto, info.sport, info.dport)
        elif scope is Scope.SOURCE:
            key = (info.src,)
        else:
            key = ()
        size = len(packet)
        if self._take(key, size, now):
            self.counters["passed"] += 1
            self.counters["passed-bytes"] += size
            return forward()  # never with a lease: every packet must be counted here
        self.counters["drop-rate-limit-bytes"] += size
        return drop("drop-rate-limit")

    def _take(self, key: BucketKey, size: int, now: float) -> bool:
        config = self.config
        buckets = self._buckets
        bucket = buckets.pop(key, None)
        if bucket is None:
            if len(buckets) >= config.max_buckets:
                del buckets[next(iter(buckets))]
                self.counters["buckets-evicted"] += 1
            bucket = Bucket(config.packet_depth, config.byte_depth, now)
            self.counters["buckets-new"] += 1
        elif now > bucket.last:
            elapsed = now - bucket.last
            if config.rate_pps is not None:
                bucket.packets = min(
                    config.packet_depth, bucket.packets + elapsed * config.rate_pps
                )
            if config.rate_bps is not None:
                bucket.bytes = min(config.byte_depth, bucket.bytes + elapsed * config.rate_bps / 8)
        bucket.last = max(bucket.last, now)
        buckets[key] = bucket
        pps = config.rate_pps is not None
        bps = config.rate_bps is not None
        if (pps and bucket.packets < 1.0) or (bps and bucket.bytes < size):
            bucket.dropped += 1
            return False
        if pps:
            bucket.packets -= 1.0
        if bps:
            bucket.bytes -= size
        bucket.passed += 1
        return True

    # -- timers --------------------------------------------------------------

    def _idle_limit(self) -> float:
        # A bucket is forgotten once idle for idle_timeout, and never before it
        # would have filled up again: forgetting it then gives nothing away.
        return max(self.config.idle_timeout, self.config.refill_time)

    def next_deadline(self) -> float | None:
        buckets = self._buckets
        if not buckets:
            return None
        return buckets[next(iter(buckets))].last + self._idle_limit()

    def on_timer(self, now: float) -> list[tuple[str, bytes]]:
        buckets = self._buckets
        limit = self._idle_limit()
        while buckets:
            key = next(iter(buckets))
            if buckets[key].last + limit > now:
                break
            del buckets[key]
            self.counters["buckets-expired"] += 1
        return []

    # -- configuration and status --------------------------------------------

    def apply_config(self, config: RateLimiterConfig) -> None:
        """New rates apply at once; tokens above a new burst are cut; a new scope starts afresh."""
        old = self.config
        self.config = config
        self._limited = self._limited_interfaces(config)
        limits_changed = (config.rate_pps is None, config.rate_bps is None) != (
            old.rate_pps is None,
            old.rate_bps is None,
        )
        if config.scope is not old.scope or limits_changed:
            self._buckets.clear()
            return
        packets, octets = config.packet_depth, config.byte_depth
        for bucket in self._buckets.values():
            bucket.packets = min(bucket.packets, packets)
            bucket.bytes = min(bucket.bytes, octets)
        while len(self._buckets) > config.max_buckets:
            del self._buckets[next(iter(self._buckets))]
            self.counters["buckets-evicted"] += 1

    def tables(self) -> dict[str, TableSize]:
        return {"buckets": TableSize(len(self._buckets), self.config.max_buckets)}

    def status(self) -> dict[str, Any]:
        config = self.config
        busiest = heapq.nlargest(
            config.status_buckets, self._buckets.items(), key=lambda item: item[1].dropped
        )
        return {
            **super().status(),
            "scope": config.scope.value,
            "bucket_count": len(self._buckets),
            "max_buckets": config.max_buckets,
            "buckets": [_bucket_view(key, bucket) for key, bucket in busiest],
        }


def _bucket_view(key: BucketKey, bucket: Bucket) -> dict[str, Any]:
    view: dict[str, Any] = {}
    if len(key) == 5:
        src, dst, proto, sport, dport = key
        view = {
            "source": src,
            "destination": dst,
            "protocol": proto,
            "sport": sport,
            "dport": dport,
        }
    elif len(key) == 1:
        view = {"source": key[0]}
    for name in ("source", "destination"):
        address = view.get(name)
        if isinstance(address, bytes):
            view[name] = format_ip(address)
    return {
        **view,
        "passed": bucket.passed,
        "dropped": bucket.dropped,
        "packet_tokens": round(bucket.packets, 3),
        "byte_tokens": round(bucket.bytes, 1),
        "last_seen": bucket.last,
    }
