"""Per-port rate limits: what one host port may make the node do, per second.

A host can starve a software switch without sending much: a broadcast or
unknown-unicast frame is written to every other port of its network and
handed to every function that owns addresses there, an ARP packet or a ping
to the router is answered by Python code, and a SYN or the first packet of a
flow crosses the router or the load balancer on the slow path, tens of
microseconds each. So each host port gets a token bucket per class of such
frames, as a switch's storm control and a router's control-plane policing
do:

- ARP: every ARP packet the port sends (`rate-arp`);
- ICMP to the router: ICMP and ICMPv6 to one of the router's own addresses
  (`rate-icmp-router`);
- flood: broadcast, multicast and unknown-unicast frames the switch would
  flood (`rate-flood`);
- slow path: frames the switch hands to a native function (the router, a
  load balancer): a flow's first packets, TCP SYN, FIN and RST, ARP replies,
  ICMP to the router (`rate-slow-path`).

An ARP request is also a broadcast (it takes a token of both), a ping of the
router is also a frame for a function (ICMP first, then slow path). The
limits apply where frames leave the fast path: a frame a fused entry carries
is never one of these, so the fast path pays nothing, and the slow path pays
one comparison per frame and a bucket only for the frames of a class. Frames
that service chains steer are not limited here (a chain's functions chose to
see them; the steering's flow table is bounded).

A host port is a TAP port, or an AF_PACKET port on an interface of a host's
namespace. An AF_PACKET port on an interface of the node's own namespace is
a NIC, an uplink that carries many hosts' traffic, and is not limited, as a
switch's storm control is set on access ports; nor are the node's function
ports or other nodes' ports.

The checks come after the port security check (a spoofed frame is counted
as spoofed) and before the switch learns from or forwards the frame.

A port that keeps the node busy with frames it only drops is not read for
`HOLD` seconds. The node judges a port per `BATCH` frames read from it,
however many reads that took (a node that wakes at once reads a storm a
few frames at a time): a window of them half or more over its limits is a
strike, and `HOLD_STRIKES` strikes in a row hold it. The frames it sends
meanwhile wait in, and overflow, its own queue in the kernel, where dropping
them costs the node nothing; when the hold ends, one more window mostly over
its limits holds it again. Only the port that storms waits: the others are
read as ever. (One window is not enough: a server answering a flood of SYNs,
say, fills one while the node is busy elsewhere, and the fast-path traffic
among its frames should not wait for it.)
(The new sessions one inside host may open through the router's NAT are
limited by the NAT itself: `new_sessions_per_host_rate`, docs/router.md.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pktchain.functions.common.rate import TokenBucket

__all__ = [
    "DEFAULT_PORT_LIMITS",
    "HOLD",
    "HOLD_SHARE",
    "HOLD_STRIKES",
    "PortLimits",
    "PortPolicer",
    "Rate",
    "RateDrop",
]


class RateDrop(StrEnum):
    """Why a host port's frame was dropped by its limits; counted on the port."""

    ARP = "rate-arp"
    ICMP_ROUTER = "rate-icmp-router"
    FLOOD = "rate-flood"
    SLOW_PATH = "rate-slow-path"


@dataclass(frozen=True)
class Rate:
    """A token bucket's settings: `per_second` on average, `burst` at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not self.per_second > 0:
            raise ValueError(f"rate must be more than 0 a second, got {self.per_second:g}")
        if self.burst < 1:
            raise ValueError(f"burst must be 1 or more, got {self.burst}")

    def __str__(self) -> str:
        return f"{self.per_second:g}/s, burst {self.burst}"

    def bucket(self) -> TokenBucket:
        return TokenBucket(self.per_second, self.burst)


@dataclass(frozen=True)
class PortLimits:
    """The rate limits every host port of a node gets (None: that class is not limited).

    The defaults leave a host room for anything it does on its own (resolving
    a few hundred neighbours at once, a `ping -f` of its router at a hundred a
    second, DHCP, mDNS and the unknown unicast of a flow whose peer was aged
    out, a thousand new connections a second through the router) and cap what
    a storm or a flood from one port costs the node at a small share of a core.
    """

    arp: Rate | None = Rate(100.0, 200)
    icmp_router: Rate | None = Rate(100.0, 200)
    flood: Rate | None = Rate(1000.0, 500)
    slow_path: Rate | None = Rate(1000.0, 500)

    def status(self) -> dict[str, Any]:
        """Each class's rate and burst (None: not limited), as status shows them."""
        return {
            name: None if rate is None else {"rate": rate.per_second, "burst": rate.burst}
            for name, rate in (
                ("arp", self.arp),
                ("icmp_router", self.icmp_router),
                ("flood", self.flood),
                ("slow_path", self.slow_path),
            )
        }


DEFAULT_PORT_LIMITS = PortLimits()

HOLD = 0.02
"""Seconds a port that storms is left unread (see the module)."""

HOLD_SHARE = 0.5
"""The share of a window of `BATCH` frames that, dropped by the port's limits, is a strike."""

HOLD_STRIKES = 2
"""Strikes in a row (windows each half or more over the limits) that hold a port."""


class PortPolicer:
    """One host port's buckets, and what they dropped (read by the datapath's loop)."""

    __slots__ = (
        "arp",
        "dropped",
        "flood",
        "hold",
        "holds",
        "icmp_router",
        "limits",
        "slow_path",
        "strikes",
        "window_dropped",
        "window_read",
    )

    def __init__(self, limits: PortLimits) -> None:
        self.limits = limits
        self.arp = None if limits.arp is None else limits.arp.bucket()
        self.icmp_router = None if limits.icmp_router is None else limits.icmp_router.bucket()
        self.flood = None if limits.flood is None else limits.flood.bucket()
        self.slow_path = None if limits.slow_path is None else limits.slow_path.bucket()
        self.dropped = 0
        """Frames the buckets refused, all classes together."""
        self.strikes = 0
        """Windows in a row, each half or more over the limits."""
        self.window_read = 0
        """Frames read from the port in the window being counted (up to `BATCH`)."""
        self.window_dropped = 0
        """... and how many of them the buckets refused."""
        self.hold = False
        """Set by the datapath when the port's last batch says it storms; the
        node clears it when it holds the port."""
        self.holds = 0
        """How many times the port was held."""
