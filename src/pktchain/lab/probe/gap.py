"""The gap probe's arithmetic: the datagram, the send schedule, and the longest gap.

A gap probe sends one small UDP datagram per interval (1 ms by default) from
one lab host to another through the router under test, and the receiver notes
when each one arrived. The longest interval between two consecutive arrivals
during the run is the outage a failover caused (`GapReport.outage_ms`).

This module is pure and imports only the standard library, so that the probe's
programs (`pktchain.lab.probe.agent`) load it quickly; the processes are driven
by `pktchain.lab.probe.instruments`.

Pacing follows an absolute schedule: slot ``k`` is due at ``start + k *
interval`` (`Schedule`), so waking a little late never shifts the slots after
it, as a chain of ``sleep(interval)`` calls would. A sender that wakes more
than one interval late (the machine was busy) skips the slots it missed
rather than sending them in a burst; the skipped and late slots are counted,
so a report says how far its own pacing can be trusted: a measured outage is
the true one within one interval plus the sender's lateness around it. The
datagrams are numbered one by one (not by slot), so the receiver knows how
many were lost between two arrivals; a gap in which none was lost is the
path's only for the part the sender's own pause does not explain.
"""

from __future__ import annotations

import itertools
import statistics
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ARRIVAL",
    "DATAGRAM",
    "Arrival",
    "Datagram",
    "DatagramDrop",
    "Gap",
    "GapReport",
    "Schedule",
    "SenderSummary",
    "gap_report",
    "pack_arrivals",
    "parse_datagram",
    "unpack_arrivals",
]

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

DATAGRAM = struct.Struct("!4sIQq")
"""The probe datagram's payload, network byte order:

======  ====  ==========================================================
offset  size  field
======  ====  ==========================================================
0       4     magic ``b"PCGP"``
4       4     run token: a random number naming this run (strays are dropped)
8       8     sequence number: datagrams sent before this one in the run
16      8     send time, CLOCK_MONOTONIC nanoseconds
======  ====  ==========================================================

Bytes after the 24 of the header are padding up to the configured size.
"""
MAGIC = b"PCGP"

ARRIVAL = struct.Struct("=Qqq")
"""One arrival as the receiver records it: number, send time, arrival time
(both CLOCK_MONOTONIC nanoseconds), native byte order (the file never leaves
the machine)."""


class DatagramDrop(StrEnum):
    """Why a datagram that reached the receiver is not counted as an arrival."""

    SHORT = "short"
    BAD_MAGIC = "bad-magic"
    OTHER_RUN = "other-run"


@dataclass(frozen=True)
class Datagram:
    """A parsed probe datagram."""

    token: int
    seq: int
    sent_ns: int


def parse_datagram(data: bytes | memoryview, token: int) -> Datagram | DatagramDrop:
    """The datagram in `data`, or the reason it is not one of this run's."""
    if len(data) < DATAGRAM.size:
        return DatagramDrop.SHORT
    magic, their_token, seq, sent_ns = DATAGRAM.unpack_from(data)
    if magic != MAGIC:
        return DatagramDrop.BAD_MAGIC
    if their_token != token:
        return DatagramDrop.OTHER_RUN
    return Datagram(their_token, seq, sent_ns)


def build_datagram(token: int, seq: int, sent_ns: int, size: int) -> bytes:
    """A probe datagram of `size` bytes (at least the header's 24)."""
    header = DATAGRAM.pack(MAGIC, token, seq, sent_ns)
    return header + bytes(max(0, size - len(header)))


@dataclass(frozen=True)
class Schedule:
    """When each slot is due: ``start_ns + k * interval_ns`` (monotonic nanoseconds)."""

    start_ns: int
    interval_ns: int

    def __post_init__(self) -> None:
        if self.interval_ns <= 0:
            raise ValueError(f"interval_ns: must be positive, got {self.interval_ns}")

    def due(self, slot: int) -> int:
        return self.start_ns + slot * self.interval_ns

    def next_slot(self, sent: int, now_ns: int) -> int:
        """The slot to send after slot `sent`, sent at `now_ns`.

        Normally ``sent + 1``; if `now_ns` is already past the due time of
        later slots, the first slot still in the future (those in between are
        skipped, not sent late in a burst).
        """
        return max(sent + 1, (now_ns - self.start_ns) // self.interval_ns + 1)


@dataclass(frozen=True)
class Arrival:
    """One datagram received: its number, when it was sent and when it arrived (ns)."""

    seq: int
    sent_ns: int
    arrived_ns: int


def pack_arrivals(arrivals: Iterable[Arrival]) -> bytes:
    return b"".join(ARRIVAL.pack(a.seq, a.sent_ns, a.arrived_ns) for a in arrivals)


def unpack_arrivals(data: bytes) -> list[Arrival]:
    """Arrivals from the receiver's record file; a torn last record is ignored."""
    usable = len(data) - len(data) % ARRIVAL.size
    return [Arrival(*fields) for fields in ARRIVAL.iter_unpack(data[:usable])]


@dataclass(frozen=True)
class SenderSummary:
    """What the sender did: how many it sent, over which time, how well it kept time."""

    sent: int
    """Datagrams sent (numbered 0 to sent - 1), those the kernel refused included."""
    first_ns: int
    last_ns: int
    interval_ns: int
    max_late_ns: int = 0
    """The largest delay of a send after its slot was due."""
    max_late_at_ns: int = 0
    """When that slot was due (0 if none was late)."""
    late: int = 0
    """Sends more than one interval after their slot was due."""
    skipped: int = 0
    """Slots never sent because the sender woke after the next one was due."""
    realtime: bool = False
    """Whether the sender ran under SCHED_FIFO."""


@dataclass(frozen=True)
class Gap:
    """An interval with no arrival: from `start_ns` (the last arrival before it) to `end_ns`.

    `recovered` is False for the gap at the end of a run whose datagrams had
    stopped arriving when the sender stopped: its end is the sender's last send.
    """

    start_ns: int
    end_ns: int
    lost: int
    """Datagrams sent between the two arrivals that never arrived."""
    sender_pause_ns: int = 0
    """The part of the gap the sender caused by pausing, when nothing was lost
    in it: not the path's doing, so not counted in `ms`."""
    recovered: bool = True

    @property
    def ms(self) -> float:
        """The gap's length as the path's: without the sender's own pause."""
        return (self.end_ns - self.start_ns - self.sender_pause_ns) / NS_PER_MS

    @property
    def arrival_ms(self) -> float:
        """The time between the two arrivals, as the receiver saw it."""
        return (self.end_ns - self.start_ns) / NS_PER_MS


@dataclass(frozen=True)
class GapReport:
    """The figures of one gap probe run."""

    sent: int
    received: int
    duplicates: int
    reordered: int
    interval_ms: float
    outage: Gap | None
    """The longest gap (None with fewer than two arrivals and no tail)."""
    gaps: tuple[Gap, ...]
    """Every gap longer than the report's threshold, in time order."""
    latency_ms: float | None
    """Median one-way delay, send to arrival."""
    max_latency_ms: float | None
    sender: SenderSummary
    first_arrival_ns: int | None
    last_arrival_ns: int | None

    @property
    def lost(self) -> int:
        return max(0, self.sent - self.received)

    @property
    def outage_ms(self) -> float:
        """The longest interval between consecutive arrivals in the run, in ms."""
        return 0.0 if self.outage is None else self.outage.ms

    @property
    def recovered(self) -> bool:
        """False if datagrams had stopped arriving when the run stopped."""
        return all(gap.recovered for gap in self.gaps)

    @property
    def pacing_error_ms(self) -> float:
        """How far a measured gap may be off the true one: one interval and the
        sender's worst lateness."""
        return self.interval_ms + self.sender.max_late_ns / NS_PER_MS

    def summary(self) -> dict[str, object]:
        """The figures as plain values (for JSON or a table)."""
        outage = self.outage
        return {
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "outage_ms": round(self.outage_ms, 3),
            "outage_start_s": None if outage is None else outage.start_ns / NS_PER_S,
            "outage_lost": None if outage is None else outage.lost,
            "outage_arrival_ms": None if outage is None else round(outage.arrival_ms, 3),
            "recovered": self.recovered,
            "gaps_ms": [round(gap.ms, 3) for gap in self.gaps],
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "max_latency_ms": (
                None if self.max_latency_ms is None else round(self.max_latency_ms, 3)
            ),
            "sender_max_late_ms": round(self.sender.max_late_ns / NS_PER_MS, 3),
            "sender_late": self.sender.late,
            "sender_skipped": self.sender.skipped,
            "sender_realtime": self.sender.realtime,
        }


def gap_report(
    arrivals: Sequence[Arrival],
    sender: SenderSummary,
    *,
    threshold_ms: float | None = None,
) -> GapReport:
    """The figures of a run from the receiver's arrivals and the sender's summary.

    Arrivals are taken in arrival-time order; a sequence number seen twice is
    a duplicate (counted, and not an arrival again); one lower than one seen
    before is reordered. A gap is the time between two consecutive arrivals,
    less, when no datagram was lost between them, the time the sender paused
    beyond one interval (the path then carried everything; a busy machine
    delayed the sender); and if the sender went on sending well after the
    last arrival, the time from that arrival to the sender's last send is a
    final, unrecovered gap. `gaps` lists those longer than `threshold_ms`
    (default: ten intervals).
    """
    interval_ns = sender.interval_ns
    threshold_ns = 10 * interval_ns if threshold_ms is None else int(threshold_ms * NS_PER_MS)
    ordered = sorted(arrivals, key=lambda a: a.arrived_ns)
    seen: set[int] = set()
    unique: list[Arrival] = []
    duplicates = reordered = 0
    highest = -1
    for arrival in ordered:
        if arrival.seq in seen:
            duplicates += 1
            continue
        seen.add(arrival.seq)
        if arrival.seq < highest:
            reordered += 1
        highest = max(highest, arrival.seq)
        unique.append(arrival)

    gaps: list[Gap] = []
    longest: Gap | None = None
    for before, after in itertools.pairwise(unique):
        lost = max(0, after.seq - before.seq - 1)
        pause = 0
        if after.seq == before.seq + 1:
            # Nothing lost in between: the path carried all that was sent, and
            # time the sender took beyond one interval was the sender's pause.
            pause = max(0, after.sent_ns - before.sent_ns - interval_ns)
            pause = min(pause, after.arrived_ns - before.arrived_ns)
        gap = Gap(before.arrived_ns, after.arrived_ns, lost, pause)
        if longest is None or gap.ms > longest.ms:
            longest = gap
        if gap.ms * NS_PER_MS > threshold_ns:
            gaps.append(gap)
    if unique:
        last = unique[-1]
        # The last datagram needs its one-way delay to arrive: measure the
        # tail from the last send plus the usual delay, so that a healthy run
        # ends with no tail at all.
        delays = [a.arrived_ns - a.sent_ns for a in unique]
        usual = int(statistics.median(delays))
        tail_end = sender.last_ns + usual
        if tail_end - last.arrived_ns > threshold_ns:
            lost = max(0, sender.sent - 1 - max(a.seq for a in unique))
            tail = Gap(last.arrived_ns, tail_end, lost, recovered=False)
            gaps.append(tail)
            if longest is None or tail.ms > longest.ms:
                longest = tail
        latency: float | None = usual / NS_PER_MS
        max_latency: float | None = max(delays) / NS_PER_MS
    else:
        latency = max_latency = None
        if sender.sent:
            # Nothing arrived: the whole run was one outage.
            longest = Gap(sender.first_ns, sender.last_ns, sender.sent, recovered=False)
            gaps.append(longest)
    return GapReport(
        sent=sender.sent,
        received=len(unique),
        duplicates=duplicates,
        reordered=reordered,
        interval_ms=interval_ns / NS_PER_MS,
        outage=longest,
        gaps=tuple(gaps),
        latency_ms=latency,
        max_latency_ms=max_latency,
        sender=sender,
        first_arrival_ns=unique[0].arrived_ns if unique else None,
        last_arrival_ns=unique[-1].arrived_ns if unique else None,
    )
