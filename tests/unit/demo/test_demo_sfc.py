"""`pktchain demo sfc`'s options and signals, without a lab: ``--hold`` reaches the demo,
SIGTERM interrupts it as Ctrl-C does (so that it removes what it made), and with
``--json`` the lines for a person go to stderr, leaving stdout one JSON document."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from pktchain.cli import main
from pktchain.demo import sfc
from pktchain.demo.report import DemoReport


def test_hold_and_json_reach_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def run(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 0

    monkeypatch.setattr(sfc, "run_sfc_demo", run)
    assert main(["demo", "sfc", "--json", "--hold", "--window", "1"]) == 0
    assert main(["demo", "sfc"]) == 0
    assert calls == [
        {"json_output": True, "window": 1.0, "hold": True},
        {"json_output": False, "window": 2.5, "hold": False},
    ]


def test_sigterm_interrupts_the_demo_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sfc._sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler's exception ends the wait at once
    assert signal.getsignal(signal.SIGTERM) is before


def test_with_json_the_notices_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    sfc._notice(DemoReport("pktchain demo sfc", json_output=True), "dashboard at http://x/ui/")
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "pktchain demo sfc: dashboard at http://x/ui/\n"
