"""The packet loop's real-time priority, on this kernel: the thread that asks gets
``SCHED_FIFO``, and the threads and processes it starts do not.

Each case runs in a child interpreter, so that the test's own process stays
time-sharing whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pktchain.linux.sched import make_realtime, parse_priority

CHILD = r"""
import json, os, subprocess, sys, threading
from pktchain.linux.sched import make_realtime, thread_policy

scheduling = make_realtime(int(sys.argv[1]) if sys.argv[1] != "off" else None)
seen = {}
def helper():
    seen["thread"] = thread_policy(threading.get_native_id())
t = threading.Thread(target=helper)
t.start(); t.join()
child = subprocess.run(["chrt", "-p", "0"], capture_output=True, text=True, check=True)
print(json.dumps({
    "status": scheduling.status(),
    "self": thread_policy(threading.get_native_id()),
    "raw": os.sched_getscheduler(0),
    "thread": seen["thread"],
    "child": child.stdout,
}))
"""


def run_child(priority: str) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [sys.executable, "-c", CHILD, priority],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs CAP_SYS_NICE")
def test_the_thread_that_asks_runs_fifo_and_what_it_starts_time_shares() -> None:
    seen = run_child("3")
    assert seen["status"]["policy"] == "fifo" and seen["status"]["priority"] == 3
    assert seen["self"] == [os.SCHED_FIFO, 3]
    assert seen["raw"] == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert seen["thread"] == [os.SCHED_OTHER, 0]
    assert "SCHED_OTHER" in seen["child"] and "priority: 0" in seen["child"]


def test_off_leaves_the_thread_time_sharing() -> None:
    seen = run_child("off")
    assert seen["status"] == {
        "policy": "other",
        "priority": None,
        "reason": "off",
        "thread": seen["status"]["thread"],
    }
    assert seen["self"] == [os.SCHED_OTHER, 0]


def test_a_refused_priority_says_why_and_the_thread_goes_on_time_sharing() -> None:
    # As nobody, with no RLIMIT_RTPRIO: the kernel refuses, the thread keeps running.
    script = CHILD.replace("scheduling = ", "os.setgid(65534); os.setuid(65534)\nscheduling = ")
    if os.geteuid() != 0:
        script = CHILD
    result = subprocess.run(
        ["prlimit", "--rtprio=0", "--", sys.executable, "-c", script, "1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["status"]["policy"] == "other"
    assert seen["status"]["reason"].startswith("SCHED_FIFO 1 refused: "), seen["status"]
    assert seen["self"] == [os.SCHED_OTHER, 0]


@pytest.mark.parametrize(
    ("text", "expected"), [("1", 1), ("99", 99), ("off", None), (" OFF ", None)]
)
def test_priorities_parse(text: str, expected: int | None) -> None:
    assert parse_priority(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "priority 0 out of range (1 to 99, or off)"),
        ("100", "priority 100 out of range (1 to 99, or off)"),
        ("high", "not a priority: 'high' (1 to 99, or off)"),
    ],
)
def test_bad_priorities_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_priority(text)


def test_no_priority_is_time_sharing_in_this_process() -> None:
    assert make_realtime(None).reason == "off"
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
