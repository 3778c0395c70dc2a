"""The gap probe's arithmetic: its datagram, its send schedule, the longest gap."""

from __future__ import annotations

import pytest

from pktchain.lab.probe.gap import (
    DATAGRAM,
    Arrival,
    DatagramDrop,
    Schedule,
    SenderSummary,
    build_datagram,
    gap_report,
    pack_arrivals,
    parse_datagram,
    unpack_arrivals,
)

MS = 1_000_000
START = 1_000 * MS  # a monotonic time, in ns


def sender(sent: int, *, last_slot: int | None = None, **extra: int) -> SenderSummary:
    last = sent - 1 if last_slot is None else last_slot
    return SenderSummary(
        sent=sent, first_ns=START, last_ns=START + last * MS, interval_ns=MS, **extra
    )


def steady(slots: range, delay_ns: int = 20_000) -> list[Arrival]:
    """One arrival per 1 ms slot, each `delay_ns` after it was sent."""
    return [Arrival(k, START + k * MS, START + k * MS + delay_ns) for k in slots]


# -- the datagram --------------------------------------------------------------


def test_a_datagram_carries_its_run_slot_and_send_time() -> None:
    data = build_datagram(0xDEADBEEF, 42, 123_456_789, 64)
    assert len(data) == 64
    parsed = parse_datagram(data, 0xDEADBEEF)
    assert not isinstance(parsed, DatagramDrop)
    assert (parsed.seq, parsed.sent_ns) == (42, 123_456_789)


def test_datagrams_of_other_runs_or_no_run_are_named_drops() -> None:
    good = build_datagram(7, 1, 2, 24)
    assert parse_datagram(good, 8) is DatagramDrop.OTHER_RUN
    assert parse_datagram(good[: DATAGRAM.size - 1], 7) is DatagramDrop.SHORT
    assert parse_datagram(b"XXXX" + good[4:], 7) is DatagramDrop.BAD_MAGIC


def test_arrivals_survive_the_record_file_and_a_torn_last_record_is_ignored() -> None:
    arrivals = steady(range(3))
    data = pack_arrivals(arrivals)
    assert unpack_arrivals(data) == arrivals
    assert unpack_arrivals(data + b"\x01\x02") == arrivals


# -- the schedule --------------------------------------------------------------


def test_slots_are_due_on_an_absolute_schedule() -> None:
    schedule = Schedule(START, MS)
    assert [schedule.due(k) - START for k in range(4)] == [0, MS, 2 * MS, 3 * MS]


def test_a_slightly_late_send_does_not_shift_the_next_slot() -> None:
    schedule = Schedule(START, MS)
    # Slot 5 sent 0.4 ms late: slot 6 is still due at its own time, 0.6 ms later.
    assert schedule.next_slot(5, schedule.due(5) + 400_000) == 6


def test_a_sender_that_woke_slots_late_skips_them_rather_than_bursting() -> None:
    schedule = Schedule(START, MS)
    # Slot 5 sent 3.5 ms late: slots 6, 7 and 8 are past; the next is 9, still ahead.
    following = schedule.next_slot(5, schedule.due(5) + 3_500_000)
    assert following == 9
    assert schedule.due(following) > schedule.due(5) + 3_500_000


def test_a_schedule_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval_ns"):
        Schedule(START, 0)


# -- the gaps ------------------------------------------------------------------


def test_a_steady_run_has_an_outage_of_one_interval() -> None:
    report = gap_report(steady(range(1000)), sender(1000))
    assert report.received == 1000
    assert report.lost == 0
    assert report.outage_ms == pytest.approx(1.0)
    assert report.gaps == ()
    assert report.recovered
    assert report.latency_ms == pytest.approx(0.02)


def test_the_outage_is_the_longest_interval_between_arrivals_and_says_when() -> None:
    # Slots 300..599 lost (a 300 ms cut), slots 800..819 lost (20 ms).
    arrivals = steady(range(300)) + steady(range(600, 800)) + steady(range(820, 1000))
    report = gap_report(arrivals, sender(1000))
    assert report.received == 680
    assert report.lost == 320
    assert report.outage_ms == pytest.approx(301.0)
    assert report.outage is not None
    assert report.outage.start_ns == START + 299 * MS + 20_000
    assert report.outage.lost == 300
    assert [round(gap.ms) for gap in report.gaps] == [301, 21]
    assert report.recovered


def test_the_gaps_listed_are_those_above_the_threshold() -> None:
    arrivals = steady(range(100)) + steady(range(105, 200))
    assert gap_report(arrivals, sender(200)).gaps == ()
    listed = gap_report(arrivals, sender(200), threshold_ms=5.0).gaps
    assert [round(gap.ms) for gap in listed] == [6]


def test_a_path_still_down_at_the_end_is_an_unrecovered_outage_up_to_the_last_send() -> None:
    arrivals = steady(range(500))
    report = gap_report(arrivals, sender(900))
    assert report.outage is not None
    assert not report.outage.recovered
    assert not report.recovered
    # From the last arrival to the last send (plus the usual delay): 400 ms.
    assert report.outage_ms == pytest.approx(400.0)


def test_nothing_received_is_one_outage_as_long_as_the_run() -> None:
    report = gap_report([], sender(100))
    assert report.received == 0
    assert report.outage_ms == pytest.approx(99.0)
    assert not report.recovered
    assert report.latency_ms is None


def test_a_sender_pause_that_lost_nothing_is_not_the_paths_outage() -> None:
    # The sender paused 7 ms after datagram 99 (a busy machine); datagram 100
    # went out late and arrived: the path carried everything.
    late = [
        Arrival(a.seq, a.sent_ns + 7 * MS, a.arrived_ns + 7 * MS) for a in steady(range(100, 200))
    ]
    report = gap_report(steady(range(100)) + late, sender(200, last_slot=206))
    # 8 ms between the arrivals of 99 and 100, of which 7 the sender's.
    assert report.outage_ms == pytest.approx(1.0)
    assert report.gaps == ()
    every = gap_report(steady(range(100)) + late, sender(200, last_slot=206), threshold_ms=0.5)
    (paused,) = [gap for gap in every.gaps if gap.arrival_ms > 2]
    assert paused.arrival_ms == pytest.approx(8.0)
    assert paused.sender_pause_ns == 7 * MS
    assert paused.lost == 0


def test_a_gap_with_datagrams_lost_counts_whole_even_if_the_sender_paused() -> None:
    # Datagrams 100..149 lost and the sender paused 7 ms among them: the path
    # was down all the time no datagram arrived.
    late = [
        Arrival(a.seq, a.sent_ns + 7 * MS, a.arrived_ns + 7 * MS) for a in steady(range(150, 200))
    ]
    report = gap_report(steady(range(100)) + late, sender(200, last_slot=206))
    assert report.outage is not None
    assert report.outage.lost == 50
    assert report.outage_ms == pytest.approx(58.0)


def test_a_path_that_held_datagrams_back_without_losing_them_is_an_outage() -> None:
    # Datagrams 100..129 held on the way (a neighbour being resolved) and let go
    # together at 130 ms: none lost.
    held = [Arrival(k, START + k * MS, START + 129 * MS + k * 1000) for k in range(100, 130)]
    report = gap_report(steady(range(100)) + held + steady(range(130, 200)), sender(200))
    assert report.outage is not None
    assert report.outage.lost == 0
    assert report.reordered == 0
    assert report.outage_ms == pytest.approx(30.08)  # 99.02 ms to 129.1 ms


def test_gaps_are_timed_by_arrival_not_by_the_order_the_receiver_read_them() -> None:
    arrivals = steady(range(50)) + steady(range(250, 300))
    shuffled = arrivals[::-1]
    assert gap_report(shuffled, sender(300)).outage_ms == pytest.approx(201.0)


def test_duplicates_count_once_and_late_slots_count_as_reordered() -> None:
    arrivals = steady(range(10))
    # Slot 3 arrives again after slot 9, and slot 20 overtakes slot 15.
    arrivals.append(Arrival(3, START + 3 * MS, START + 9 * MS + 50_000))
    arrivals.append(Arrival(20, START + 20 * MS, START + 20 * MS + 10_000))
    arrivals.append(Arrival(15, START + 15 * MS, START + 20 * MS + 90_000))
    report = gap_report(arrivals, sender(21))
    assert report.duplicates == 1
    assert report.reordered == 1
    assert report.received == 12


def test_the_pacing_error_is_one_interval_and_the_senders_worst_lateness() -> None:
    report = gap_report(steady(range(10)), sender(10, max_late_ns=250_000, late=0))
    assert report.pacing_error_ms == pytest.approx(1.25)
    summary = report.summary()
    assert summary["sender_max_late_ms"] == 0.25
    assert summary["outage_ms"] == 1.0
