"""Traffic for the networking-sfc demo lab (`pktchain.demo.sfc`), shared by its tests."""

from __future__ import annotations

from pktchain.demo.sfc import DEST_IP, WELCOME
from pktchain.lab import Lab


def fetch(lab: Lab, times: int) -> None:
    """`times` HTTP requests from the source VM to the destination VM, each answered in full."""
    for _ in range(times):
        result = lab.host("source_vm").run(["curl", "-sS", "--max-time", "5", f"http://{DEST_IP}/"])
        assert result.stdout == WELCOME, result.stderr
