"""`pktchain demo ha --json`: a router pair loses its master and gets it back, and no
TCP connection through the NAT notices.

The demo runs as a user runs it; the test reads its JSON: every step held,
the figures the issue of a failover is judged by are top-level keys, each
outage is within 300 ms and no TCP connection was lost, and the lab is gone.
"""

from __future__ import annotations

from typing import Any

import pytest

from pktchain.lab import running_labs
from support import demo_run
from support.nsh_fn import pktchain_argv

pytestmark = pytest.mark.slow

TIMEOUT = 120.0
"""Seconds the demo may take (it takes about 15)."""
STEPS = (
    "two routers up",
    "r1 killed",
    "r2 took over r1's state",
    "r1 back",
    "the pair as it ends",
)


def run_demo(argv: list[str]) -> tuple[int, dict[str, Any], str]:
    return demo_run.run_demo(argv, timeout=TIMEOUT, lab_prefix="hapair-")


def test_demo_ha_fails_over_and_back_without_losing_a_connection() -> None:
    before = set(running_labs())
    code, report, err = run_demo(pktchain_argv("demo", "ha", "--json"))
    failed = [(s["name"], s["detail"]) for s in report["steps"] if not s["ok"]]
    assert code == 0 and report["ok"] and not failed, (failed, err[-3000:])
    names = [step["name"] for step in report["steps"]]
    assert len(names) == len(STEPS)
    assert all(name.startswith(start) for name, start in zip(names, STEPS, strict=True)), names
    # The figures, top-level, for the crash and for the preemption.
    assert 0 < report["outage_ms"] <= 300
    assert 0 <= report["preempt_outage_ms"] <= 300
    assert report["tcp_lost"] == 0 and report["preempt_tcp_lost"] == 0
    steps = dict(zip(STEPS, report["steps"], strict=True))
    for name in ("r1 killed", "r1 back"):
        data = steps[name]["data"]
        assert data["tcp_watched"] >= 4  # iperf3 both ways, two interactive sessions
        assert data["datagrams"]["received"] > 1000  # the probe ran through the switch
    # r2 took over from a complete copy, as soon as r1's sync connection closed.
    taken = steps["r2 took over r1's state"]["data"]["takeover"]
    assert taken["had_copy"] and taken["sessions"] >= 4
    assert steps["the pair as it ends"]["data"]["r1"] == {
        "outside/52": "master",
        "inside/51": "master",
    }
    # The demo's own lab is gone (labs of anything else running meanwhile are not its).
    assert {lab for lab in set(running_labs()) - before if lab.startswith("hapair-")} == set()
