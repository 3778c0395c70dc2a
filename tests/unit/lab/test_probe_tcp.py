"""The TCP watchers' arithmetic: how a connection ended, its longest stall, what is lost."""

from __future__ import annotations

from typing import Any

import pytest

from pktchain.lab.probe.tcp import (
    IPERF_STOPPED,
    ConnectionEnd,
    TcpConnectionReport,
    TcpReport,
    chat_reports,
    iperf_report,
    longest_zero_run,
)


def iperf_document(counts: list[int], *, sender: bool, error: str | None = None) -> dict[str, Any]:
    """An iperf3 --json document with 0.1 s intervals carrying `counts` bytes."""
    document: dict[str, Any] = {
        "intervals": [
            {
                "sum": {
                    "start": n / 10,
                    "end": (n + 1) / 10,
                    "bytes": count,
                    "omitted": False,
                    "sender": sender,
                }
            }
            for n, count in enumerate(counts)
        ]
    }
    if error is not None:
        document["error"] = error
    return document


def test_the_longest_run_of_empty_intervals_and_its_start() -> None:
    intervals = [(0.0, 0.1, 5), (0.1, 0.2, 0), (0.2, 0.3, 0), (0.3, 0.4, 9), (0.4, 0.5, 0)]
    length, start = longest_zero_run(intervals)
    assert length == pytest.approx(0.2)
    assert start == pytest.approx(0.1)
    assert longest_zero_run([(0.0, 0.1, 1)]) == (0.0, None)


def test_an_iperf_transfer_stopped_by_the_watcher_is_open_with_the_receivers_stall() -> None:
    # The server received nothing for 3.5 s; the client kept writing into its buffer.
    server = iperf_document([100] * 5 + [0] * 35 + [100] * 5, sender=False)
    client = iperf_document([100] * 45, sender=True, error=IPERF_STOPPED)
    report = iperf_report("up", client, server, started_s=50.0, client_status=1, exited_early=False)
    assert report.end is ConnectionEnd.OPEN
    assert report.longest_stall_s == pytest.approx(3.5)
    assert report.stall_start_s == pytest.approx(50.5)
    assert report.lost(3.0)
    assert not report.lost(4.0)
    assert "server" in report.detail


def test_a_download_takes_its_stall_from_the_client_which_receives() -> None:
    server = iperf_document([100] * 10, sender=True)
    client = iperf_document([100, 0, 0, 100], sender=False, error=IPERF_STOPPED)
    report = iperf_report(
        "down", client, server, started_s=0.0, client_status=1, exited_early=False
    )
    assert report.longest_stall_s == pytest.approx(0.2)
    assert "client" in report.detail


def test_a_reset_transfer_is_lost_whatever_its_stall() -> None:
    client = iperf_document(
        [100],
        sender=True,
        error="error - unable to write to stream socket: Connection reset by peer",
    )
    report = iperf_report("up", client, None, started_s=0.0, client_status=1, exited_early=True)
    assert report.end is ConnectionEnd.RESET
    assert report.reset
    assert report.lost()


def test_a_reset_only_the_server_saw_makes_the_transfer_reset() -> None:
    # The client, stopped by the watcher, only saw a stall: the reset went to the server.
    client = iperf_document([100, 0, 0], sender=False, error=IPERF_STOPPED)
    server = iperf_document(
        [100],
        sender=True,
        error="error - unable to write to stream socket: Connection reset by peer",
    )
    report = iperf_report(
        "down", client, server, started_s=0.0, client_status=1, exited_early=False
    )
    assert report.end is ConnectionEnd.RESET
    assert report.detail.startswith("server: ")
    assert report.lost()


def test_a_transfer_whose_server_went_away_is_closed() -> None:
    client = iperf_document([100], sender=True, error="control socket has closed unexpectedly")
    report = iperf_report("up", client, None, started_s=0.0, client_status=1, exited_early=True)
    assert report.end is ConnectionEnd.CLOSED
    assert report.lost()


def test_a_transfer_with_no_client_report_is_an_error() -> None:
    report = iperf_report("up", None, None, started_s=0.0, client_status=1, exited_early=True)
    assert report.end is ConnectionEnd.ERROR
    assert "status 1" in report.detail


def test_interactive_sessions_from_the_clients_result() -> None:
    result = {
        "sessions": [
            {
                "end": "open",
                "error": "",
                "echoes": 80,
                "longest_stall_ns": 400_000_000,
                "stall_start_ns": 7_000_000_000,
            },
            {
                "end": "reset",
                "error": "Connection reset by peer",
                "echoes": 12,
                "longest_stall_ns": 50_000_000,
                "stall_start_ns": None,
            },
        ]
    }
    first, second = chat_reports(result)
    assert (first.name, first.end, first.longest_stall_s) == ("interactive 1", "open", 0.4)
    assert first.stall_start_s == 7.0
    assert not first.lost()
    assert second.reset and second.lost()
    assert second.detail == "Connection reset by peer"


def test_the_report_counts_connections_reset_closed_or_stalled_past_the_limit() -> None:
    report = TcpReport(
        (
            TcpConnectionReport("a", ConnectionEnd.OPEN, 0.7),
            TcpConnectionReport("b", ConnectionEnd.OPEN, 3.2),
            TcpConnectionReport("c", ConnectionEnd.RESET, 0.0),
            TcpConnectionReport("d", ConnectionEnd.CLOSED, 0.0),
        )
    )
    assert report.lost == 3
    assert report.longest_stall_s == 3.2
    assert [row["lost"] for row in report.summary()] == [False, True, True, True]
    assert TcpReport(report.connections, stall_limit_s=5.0).lost == 2
