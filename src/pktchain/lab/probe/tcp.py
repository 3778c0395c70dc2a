"""The TCP watchers' arithmetic: how each watched connection ended, and its longest stall.

Two kinds of TCP traffic cross the router under test while it fails over: a
long iperf3 transfer, and interactive sessions (a line sent every 50 ms over
one connection and echoed back). A connection is **lost** if it was reset or
closed before the run stopped, failed with an error, or made no progress for
longer than the stall limit (3 s by default: longer than a user waits, and
past the first retransmission timeouts of a connection that will recover).

Pure, standard library only; the processes are driven by
`pktchain.lab.probe.instruments`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "IPERF_STOPPED",
    "STALL_LIMIT_S",
    "ConnectionEnd",
    "TcpConnectionReport",
    "TcpReport",
    "chat_reports",
    "iperf_report",
    "longest_zero_run",
]

STALL_LIMIT_S = 3.0
NS_PER_S = 1_000_000_000

IPERF_STOPPED = "interrupt - the client has terminated"
"""The error iperf3 reports when its client is stopped by SIGINT: the watcher's own stop."""


class ConnectionEnd(StrEnum):
    """How a watched connection ended."""

    OPEN = "open"
    """Still working when the run stopped."""
    RESET = "reset"
    """The peer or a middlebox reset it (ECONNRESET)."""
    CLOSED = "closed"
    """The peer closed it before the run stopped."""
    ERROR = "error"
    """Another failure: a refused or timed-out connection, a program that failed."""


@dataclass(frozen=True)
class TcpConnectionReport:
    """One watched connection: how it ended and its longest stall."""

    name: str
    end: ConnectionEnd
    longest_stall_s: float
    """The longest time the connection made no progress while it was open."""
    stall_start_s: float | None = None
    """When that stall began, CLOCK_MONOTONIC seconds (None if unknown)."""
    detail: str = ""
    """The error, or what the watcher noted."""
    exchanges: int = 0
    """Echoes received (interactive sessions) or intervals reported (iperf3)."""

    def lost(self, stall_limit_s: float = STALL_LIMIT_S) -> bool:
        return self.end is not ConnectionEnd.OPEN or self.longest_stall_s > stall_limit_s

    @property
    def reset(self) -> bool:
        return self.end is ConnectionEnd.RESET


@dataclass(frozen=True)
class TcpReport:
    """Every watched connection of a run."""

    connections: tuple[TcpConnectionReport, ...]
    stall_limit_s: float = STALL_LIMIT_S

    @property
    def lost(self) -> int:
        """Connections reset, closed, failed, or stalled longer than the limit."""
        return sum(1 for c in self.connections if c.lost(self.stall_limit_s))

    @property
    def longest_stall_s(self) -> float:
        return max((c.longest_stall_s for c in self.connections), default=0.0)

    def summary(self) -> list[dict[str, object]]:
        return [
            {
                "name": c.name,
                "end": str(c.end),
                "lost": c.lost(self.stall_limit_s),
                "longest_stall_s": round(c.longest_stall_s, 3),
                "detail": c.detail,
            }
            for c in self.connections
        ]


def longest_zero_run(intervals: Iterable[tuple[float, float, int]]) -> tuple[float, float | None]:
    """The longest run of consecutive intervals that carried no bytes.

    `intervals` are ``(start_s, end_s, bytes)`` in time order. Returns the
    run's length in seconds and its start (None if every interval carried
    bytes).
    """
    best, best_start = 0.0, None
    run_start: float | None = None
    for start, end, count in intervals:
        if count == 0:
            if run_start is None:
                run_start = start
            if end - run_start > best:
                best, best_start = end - run_start, run_start
        else:
            run_start = None
    return best, best_start


def _iperf_intervals(
    document: Mapping[str, Any] | None,
) -> tuple[list[tuple[float, float, int]], bool]:
    """The ``(start, end, bytes)`` of each interval of an iperf3 JSON document, and
    whether they are the receiving side's."""
    found = []
    receiving = False
    for interval in (document or {}).get("intervals", ()):
        total = interval.get("sum", {})
        if isinstance(total, Mapping) and not total.get("omitted", False):
            receiving = not total.get("sender", True)
            found.append(
                (float(total.get("start", 0.0)), float(total.get("end", 0.0)), int(total["bytes"]))
            )
    return found, receiving


def iperf_report(
    name: str,
    client: Mapping[str, Any] | None,
    server: Mapping[str, Any] | None,
    *,
    started_s: float,
    client_status: int | None,
    exited_early: bool,
) -> TcpConnectionReport:
    """A report on one iperf3 transfer from its client's and server's JSON documents.

    The stall comes from the receiving side's intervals (the bytes that
    arrived: the server's, or the client's with ``-R``), or the sending
    side's if the receiver gave none (those count bytes written to the
    socket, so they understate a stall by what the send buffer absorbed).
    `started_s` (monotonic) is when the client was started: interval times
    are counted from about then. `exited_early` says the client ended before
    the watcher stopped it.
    """
    error = str(client.get("error", "")) if client is not None else ""
    server_error = str(server.get("error", "")) if server is not None else ""
    choices = [
        (*_iperf_intervals(doc), side) for side, doc in (("server", server), ("client", client))
    ]
    # The receiver's figures if there are any, else whatever there is.
    choices.sort(key=lambda choice: (not (choice[0] and choice[1]), not choice[0]))
    intervals, _, source = choices[0]
    stall, stall_start = longest_zero_run(intervals)
    # A reset seen by either end: the other may only have seen a stall (the
    # reset went the other way) or a closed control connection.
    resets = [f"{side}: {e}" for side, e in (("client", error), ("server", server_error))]
    resets = [r for r in resets if "reset" in r.lower()]
    if client is None:
        end, detail = ConnectionEnd.ERROR, f"iperf3 client gave no report (status {client_status})"
    elif resets:
        end, detail = ConnectionEnd.RESET, "; ".join(resets)
    elif error == IPERF_STOPPED and not exited_early:
        end, detail = ConnectionEnd.OPEN, ""
    elif not error and not exited_early:
        end, detail = ConnectionEnd.OPEN, "finished its planned time"
    elif not error or "closed" in error.lower():
        end, detail = ConnectionEnd.CLOSED, error or "ended before the run stopped"
    else:
        end, detail = ConnectionEnd.ERROR, error
    if intervals and end is ConnectionEnd.OPEN:
        detail = f"stall from the {source}'s 0.1 s intervals"
    return TcpConnectionReport(
        name=name,
        end=end,
        longest_stall_s=stall,
        stall_start_s=None if stall_start is None else started_s + stall_start,
        detail=detail,
        exchanges=len(intervals),
    )


def chat_reports(
    result: Mapping[str, Any], *, prefix: str = "interactive"
) -> list[TcpConnectionReport]:
    """Reports on interactive sessions from the chat client's result document.

    Each session in ``result["sessions"]`` has ``end`` (a `ConnectionEnd`
    value), ``error``, ``echoes``, ``longest_stall_ns`` and ``stall_start_ns``
    (CLOCK_MONOTONIC), as `pktchain.lab.probe.agent` writes them.
    """
    reports = []
    sessions: Sequence[Mapping[str, Any]] = result.get("sessions", ())
    for number, session in enumerate(sessions, start=1):
        start_ns = session.get("stall_start_ns")
        reports.append(
            TcpConnectionReport(
                name=f"{prefix} {number}",
                end=ConnectionEnd(session["end"]),
                longest_stall_s=int(session["longest_stall_ns"]) / NS_PER_S,
                stall_start_s=None if start_ns is None else int(start_ns) / NS_PER_S,
                detail=str(session.get("error", "")),
                exchanges=int(session.get("echoes", 0)),
            )
        )
    return reports
