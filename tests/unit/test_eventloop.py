"""The event loop every pktchain process runs: timers, other threads' work, its own thread."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from pktchain.eventloop import EventLoop, LoopThread


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_submit_runs_work_in_the_loop_thread_and_returns_its_result() -> None:
    loop = EventLoop()
    loop_thread = threading.Thread(target=loop.run, daemon=True)
    # Work submitted before the loop runs waits for it, then runs in its thread.
    early: list[int] = []
    submitter = threading.Thread(target=lambda: early.append(loop.submit(threading.get_ident)))
    submitter.start()
    loop_thread.start()
    try:
        submitter.join(timeout=5)
        assert early == [loop_thread.ident]
        assert loop.submit(threading.get_ident) == loop_thread.ident
        with pytest.raises(ZeroDivisionError):
            loop.submit(lambda: 1 // 0)
        assert loop.submit(lambda: "still serving") == "still serving"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(timeout=5)
        loop.close()
    assert not loop_thread.is_alive()


def test_timers_run_in_deadline_order_and_a_cancelled_one_never() -> None:
    loop = EventLoop()
    fired: list[str] = []
    loop.call_later(0.03, lambda: fired.append("late"))
    loop.call_later(0.01, lambda: fired.append("early"))
    loop.call_later(0.02, lambda: fired.append("cancelled")).cancel()
    ticks = loop.call_every(0.005, lambda: fired.append("tick"))
    loop.call_later(0.05, loop.stop)
    try:
        loop.run()
    finally:
        loop.close()
    ticks.cancel()
    assert "cancelled" not in fired
    assert [f for f in fired if f != "tick"] == ["early", "late"]
    assert fired.count("tick") >= 3


def test_readers_and_writers_are_called_until_they_are_removed() -> None:
    loop = EventLoop()
    left, right = socket.socketpair()
    received: list[bytes] = []

    def on_readable() -> None:
        received.append(right.recv(100))
        loop.forget(right.fileno())
        loop.stop()

    def on_writable() -> None:
        left.send(b"ping")
        loop.set_writer(left.fileno(), None)

    loop.set_reader(right.fileno(), on_readable)
    loop.set_writer(left.fileno(), on_writable)
    try:
        loop.run()
    finally:
        loop.close()
        left.close()
        right.close()
    assert received == [b"ping"]


def test_loop_thread_serves_and_leaves_no_thread_or_descriptor() -> None:
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    runner = LoopThread("pktchain-test-loop")
    fired = threading.Event()
    runner.loop.call_later(0.01, fired.set)  # registered before the thread starts
    with runner:
        assert runner.running
        assert fired.wait(5)
        in_loop = runner.loop.submit(threading.get_ident)
        assert in_loop != threading.get_ident()
        assert in_loop in {t.ident for t in threading.enumerate() if t.name == "pktchain-test-loop"}
    assert not runner.running
    assert set(threading.enumerate()) == threads_before
    assert _open_fds() == fds_before


def test_loop_thread_stopped_before_it_started_closes_its_loop() -> None:
    fds_before = _open_fds()
    runner = LoopThread("pktchain-test-idle")
    runner.stop()
    assert not runner.running
    assert _open_fds() == fds_before


def test_loop_now_is_read_once_per_wake_up() -> None:
    loop = EventLoop()
    seen: list[float] = []

    def slow() -> None:
        seen.append(loop.now)
        time.sleep(0.02)

    def last() -> None:
        seen.append(loop.now)
        loop.stop()

    loop.call_later(0.01, slow)
    loop.call_later(0.01, slow)  # due at the same wake-up: the same `now`
    loop.call_later(0.015, last)  # due during the sleeps: seen at the next wake-up
    try:
        loop.run()
    finally:
        loop.close()
    assert len(seen) == 3
    assert seen[0] == seen[1]
    assert seen[2] >= seen[0] + 0.04
