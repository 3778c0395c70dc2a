"""The packet loop's place in the CPU scheduler: real-time priority for one thread.

A node's loop sleeps until a port has a frame, and every frame it carries waits
for it to wake. Under the kernel's fair scheduler a woken thread may wait for
the thread it shares a CPU with to finish its slice, up to a timer tick (4 ms
at HZ=250) on a kernel built without preemption, and while another process
floods (or any busy process holds the CPUs) that wait is most of every frame's
latency. A thread under ``SCHED_FIFO`` takes the CPU from any fair-scheduled
thread as soon as it wakes; the kernel's real-time throttling
(``/proc/sys/kernel/sched_rt_runtime_us``) still leaves the others their share
should it ever spin.

``SCHED_RESET_ON_FORK`` goes with it, so the threads and processes the loop
starts (function processes, helper threads) are fair-scheduled again.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

MIN_PRIORITY = 1
MAX_PRIORITY = 99
DEFAULT_LOOP_PRIORITY = 1
"""The lowest real-time priority: above every fair-scheduled thread, below the kernel's
own real-time threads and any other real-time program."""


@dataclass(frozen=True)
class Scheduling:
    """How a thread is scheduled: ``SCHED_FIFO`` at `priority`, or time-sharing with the
    reason it is not real-time."""

    priority: int | None
    reason: str | None = None
    thread: int = 0
    """The thread's id (as in /proc/PID/task)."""

    @property
    def realtime(self) -> bool:
        return self.priority is not None

    def status(self) -> dict[str, object]:
        return {
            "policy": "fifo" if self.realtime else "other",
            "priority": self.priority,
            "reason": self.reason,
            "thread": self.thread,
        }


def parse_priority(text: str) -> int | None:
    """`text` as a real-time priority (1 to 99), or None for ``off``; ValueError names it."""
    if text.strip().lower() == "off":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a priority: {text!r} (1 to 99, or off)") from None
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(f"priority {value} out of range (1 to 99, or off)")
    return value


def make_realtime(priority: int | None) -> Scheduling:
    """Put the calling thread under ``SCHED_FIFO`` at `priority` (None: leave it
    time-sharing). Where the kernel refuses (no ``CAP_SYS_NICE``, an RLIMIT_RTPRIO of 0,
    a container's limits), the thread stays time-sharing and the reason says why."""
    thread = threading.get_native_id()
    if priority is None:
        return Scheduling(None, "off", thread)
    policy = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    try:
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except OSError as error:
        refused = f"SCHED_FIFO {priority} refused: {error.strerror or error}"
        return Scheduling(None, refused, thread)
    return Scheduling(priority, None, thread)


def thread_policy(tid: int) -> tuple[int, int]:
    """The scheduling policy (without ``SCHED_RESET_ON_FORK``) and priority of a thread."""
    policy = os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
    return policy, os.sched_getparam(tid).sched_priority
