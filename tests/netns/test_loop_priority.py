"""The node's packet loop runs under SCHED_FIFO (`--loop-priority`), and only it:
read from the kernel (/proc and sched_getscheduler), and from `pktchain node status`.

Why (docs/node.md, "The packet loop's priority"): the storm tests
(tests/netns/test_storm.py) showed a flood from one host delaying other hosts'
frames by up to a 4 ms timer tick while the node used a tenth of a core, the
node's loop waiting for the CPU behind the flooder and a busy process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from pktchain.lab import Lab
from pktchain.linux.sched import thread_policy
from pktchain.node.process import NodeProcess
from support.topologies import node_hosts

NodeLab = Callable[..., tuple[Lab, NodeProcess]]


def threads(pid: int) -> dict[int, tuple[int, int]]:
    return {int(tid): thread_policy(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_the_packet_loop_alone_runs_fifo_and_traffic_flows(node_lab: NodeLab) -> None:
    lab, node = node_lab(node_hosts("h1", "h2"))
    assert lab.host("h1").run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.2"]).ok
    loop = node.status()["loop_scheduling"]
    assert loop["policy"] == "fifo" and loop["priority"] == 1, loop
    policies = threads(node.pid)
    assert policies[loop["thread"]] == (os.SCHED_FIFO, 1)
    assert loop["thread"] == node.pid  # the main thread runs the loop
    # The node's other threads (its API server's among them) time-share.
    others = {tid: p for tid, p in policies.items() if tid != loop["thread"]}
    assert others and set(others.values()) == {(os.SCHED_OTHER, 0)}, policies
    table = subprocess.run(
        [sys.executable, "-m", "pktchain", "node", "status", "--control", str(node.control)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert f"packet loop: SCHED_FIFO 1, thread {node.pid}" in table.stdout


def test_loop_priority_off_time_shares_and_a_priority_is_taken(node_lab: NodeLab) -> None:
    _lab, off = node_lab(node_hosts("h1", "h2"), args=("--loop-priority", "off"))
    loop = off.status()["loop_scheduling"]
    assert loop == {"policy": "other", "priority": None, "reason": "off", "thread": off.pid}
    assert set(threads(off.pid).values()) == {(os.SCHED_OTHER, 0)}
    _lab, five = node_lab(node_hosts("h3", "h4"), args=("--loop-priority", "5"))
    assert thread_policy(five.pid) == (os.SCHED_FIFO, 5)


def test_a_bad_loop_priority_is_refused_naming_the_option() -> None:
    argv = [sys.executable, "-m", "pktchain", "node", "--loop-priority", "100"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "--loop-priority: priority 100 out of range (1 to 99, or off)" in result.stderr
