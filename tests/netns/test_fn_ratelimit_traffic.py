"""The rate limiter on real traffic: a UDP flood is cut to its rate while a slow ping passes.

A symmetric chain steers every IP packet between h1 and h2 through the rate
limiter rl1 (see fn_lab.py). h1 sends a paced UDP flood to a counting receiver
on h2 and pings h2 at the same time; the receiver's count, ping's statistics
and the function's counters judge the result.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from support.fn_lab import H2, NodeLab, function_status, start

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath

FLOOD = 2000
"""Datagrams h1 sends, about 1000 a second."""
RATE, BURST = 100, 20

SENDER = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
for n in range({FLOOD}):
    s.sendto(b"x" * 100, ("{H2}", 9000))
    pause = start + (n + 1) / 1000 - time.monotonic()
    if pause > 0:
        time.sleep(pause)
print(round(time.monotonic() - start, 3))
"""

RECEIVER = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{H2}", 9000))
s.settimeout(5)
count = 0
try:
    s.recv(2048)
    count = 1
    s.settimeout(1)
    while True:
        s.recv(2048)
        count += 1
except OSError:
    pass
print(count)
"""


def test_a_udp_flood_is_cut_to_its_rate_while_a_slow_ping_passes(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    limiter = {
        "name": "rl1",
        "kind": "rate-limiter",
        "network": "default",
        "config": {"rate_pps": RATE, "burst_packets": BURST, "scope": "flow"},
    }
    lab, node = start(node_lab, tmp_path, [limiter])
    counts = tmp_path / "received.txt"
    with counts.open("wb") as sink:
        receiver = lab.host("h2").popen(["python3", "-c", RECEIVER], stdout=sink)
    lab.host("h2").wait_listening(9000, kind=socket.SOCK_DGRAM, timeout=10)
    sender = lab.host("h1").popen(["python3", "-c", SENDER])
    pings = lab.host("h1").run(["ping", "-c", "5", "-i", "0.3", "-W", "2", H2], timeout=30)
    assert sender.wait(timeout=30) == 0
    assert receiver.wait(timeout=30) == 0
    received = int(counts.read_text())

    assert pings.ok, pings.stdout  # 5 transmitted, 5 received: its own flow, far under the rate
    assert " 0% packet loss" in pings.stdout
    counters = function_status(node, "rl1")["counters"]
    assert counters["drop-rate-limit"] >= FLOOD // 2
    assert counters["passed"] >= received
    # The burst, then RATE a second for the ~2 s the flood lasts (slack for timing).
    assert BURST <= received <= BURST + RATE * 4
