"""Active health checks of the load balancer's backends: one state table, one probe per target.

A check is a TCP connection attempt sent through the dataplane (the load
balancer builds the SYN and emits it from its timer): a SYN-ACK means the
backend accepts connections (the load balancer answers it with a RST so that
the backend forgets the half-open connection, RFC 9293 §3.10.7.3); a RST means
it refuses them; silence until the timeout is a failure too. A *target* is one
``ip:port`` that is checked; backends of several services that share it share
its state.

States and transitions, counting consecutive results as HAProxy does
(``rise`` / ``fall``; HAProxy's ``init-state up``, its default, starts a
backend up and lets one failure take it down; ``init-state down`` starts it
down and lets one success bring it up):

=====  =======  =================================  =====  ==========================
state  result   condition                          next   action
=====  =======  =================================  =====  ==========================
UP     success  (any)                              UP     failures = 0
UP     failure  failures + 1 < fall                UP     failures += 1
UP     failure  failures + 1 >= fall               DOWN   leave the Maglev tables
DOWN   failure  (any)                              DOWN   successes = 0
DOWN   success  successes + 1 < rise               DOWN   successes += 1
DOWN   success  successes + 1 >= rise              UP     join the Maglev tables
=====  =======  =================================  =====  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "HEALTH_TRANSITIONS",
    "CheckResult",
    "HealthState",
    "Target",
    "TargetEntry",
]


class HealthState(Enum):
    """Whether a checked backend takes new connections."""

    UP = "up"
    DOWN = "down"


class CheckResult(Enum):
    """How one check ended."""

    SYN_ACK = "syn-ack"
    REFUSED = "refused"  # a RST answered the SYN
    TIMEOUT = "timeout"  # nothing within the timeout (or its MAC never resolved)

    @property
    def passed(self) -> bool:
        return self is CheckResult.SYN_ACK


HEALTH_TRANSITIONS: dict[tuple[HealthState, bool, bool], HealthState] = {
    # (state, check passed, threshold reached) -> next state; see the module's table.
    (HealthState.UP, True, False): HealthState.UP,
    (HealthState.UP, True, True): HealthState.UP,
    (HealthState.UP, False, False): HealthState.UP,
    (HealthState.UP, False, True): HealthState.DOWN,
    (HealthState.DOWN, False, False): HealthState.DOWN,
    (HealthState.DOWN, False, True): HealthState.DOWN,
    (HealthState.DOWN, True, False): HealthState.DOWN,
    (HealthState.DOWN, True, True): HealthState.UP,
}


class Target:
    """One checked ``ip:port``: its health, its probe in flight, and when to check again."""

    __slots__ = (
        "checks",
        "failures",
        "ip",
        "last_change",
        "last_check",
        "last_result",
        "next_check",
        "port",
        "probe_deadline",
        "probe_sent",
        "probe_seq",
        "rtt",
        "source_port",
        "state",
        "successes",
    )

    def __init__(
        self, ip: bytes, port: int, source_port: int, *, initial: HealthState, rise: int, fall: int
    ) -> None:
        self.ip = ip
        self.port = port
        self.source_port = source_port
        """The port of ``source_ip`` every check of this target comes from."""
        self.state = initial
        # One result away from the other state, as HAProxy's init-state up/down.
        self.failures = fall - 1 if initial is HealthState.UP else 0
        self.successes = rise - 1 if initial is HealthState.DOWN else 0
        self.checks = 0
        self.last_result: CheckResult | None = None
        self.last_check: float | None = None
        self.last_change: float | None = None
        self.rtt: float | None = None
        self.next_check = float("-inf")
        self.probe_seq: int | None = None
        """The sequence number of the SYN in flight; None when none is."""
        self.probe_sent = 0.0
        self.probe_deadline = float("inf")

    @property
    def up(self) -> bool:
        return self.state is HealthState.UP

    @property
    def deadline(self) -> float:
        """When the target's timer is next due: a probe timing out, or the next check."""
        return min(self.probe_deadline, self.next_check)

    def start_probe(self, seq: int, now: float, interval: float, timeout: float) -> None:
        self.probe_seq = seq
        self.probe_sent = now
        self.probe_deadline = now + timeout
        self.next_check = now + interval
        self.checks += 1

    def record(self, result: CheckResult, now: float, *, rise: int, fall: int) -> bool:
        """Account one result; True when the state changed."""
        self.probe_seq = None
        self.probe_deadline = float("inf")
        self.last_result = result
        self.last_check = now
        passed = result.passed
        if passed:
            self.rtt = now - self.probe_sent
            self.successes += 1
            self.failures = 0
            reached = self.successes >= rise
        else:
            self.failures += 1
            self.successes = 0
            reached = self.failures >= fall
        state = HEALTH_TRANSITIONS[self.state, passed, reached]
        if state is self.state:
            return False
        self.state = state
        self.last_change = now
        self.successes = 0
        self.failures = 0
        return True

    def entry(self) -> TargetEntry:
        return TargetEntry(
            self.state,
            self.last_result,
            self.last_check,
            self.last_change,
            self.checks,
            self.successes,
            self.failures,
            self.rtt,
        )


@dataclass(frozen=True, slots=True)
class TargetEntry:
    """A target's health as listed in the load balancer's status."""

    state: HealthState
    last_result: CheckResult | None
    last_check: float | None
    last_change: float | None
    checks: int
    successes: int
    """Consecutive successes since the last failure (while down, toward ``rise``)."""
    failures: int
    """Consecutive failures since the last success (while up, toward ``fall``)."""
    rtt: float | None
    """Seconds from the last successful check's SYN to its SYN-ACK."""
