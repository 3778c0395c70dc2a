"""`pktchain pipe` as a command: what it imports (start-up), usage errors, a missing interface."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Modules that would cost a pipe tens of milliseconds of start-up, or more.
HEAVY = (
    "pydantic",
    "fastapi",
    "uvicorn",
    "pyroute2",
    "yaml",
    "rich",
    "scapy",
    "dpkt",
    "logging",
    "pktchain.lab.lab",
    "pktchain.client.cli",
    "pktchain.node.daemon",
    "pktchain.packet.parse",
)


@pytest.mark.parametrize("action", ["read", "write"])
def test_a_pipe_command_loads_nothing_heavy(action: str) -> None:
    script = (
        "import json, sys\n"
        "from pktchain.cli import main\n"
        f"status = main(['pipe', '{action}', '-q', 'no-such-if0'])\n"
        "print(json.dumps([status, sorted(sys.modules)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    status, modules = json.loads(result.stdout)
    assert status == 1  # no such interface: the handler and everything it needs ran
    assert f"pktchain.pipe.{'capture' if action == 'read' else 'iface'}" in modules
    loaded = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == []
    if action == "write":
        assert "pktchain.pipe.capture" not in modules


def pipe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pktchain", "pipe", *args],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_missing_interface_is_named() -> None:
    result = pipe("write", "no-such-if0")
    assert result.returncode == 1
    assert result.stderr.startswith("pktchain pipe write: no-such-if0: cannot send on it: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("read", "--count", "0", "eth0"), "--count: expected a positive number of frames"),
        (("read", "--snaplen", "262145", "eth0"), "--snaplen: expected 1 to 262144"),
        (("write", "--count", "-1", "eth0"), "--count: expected a positive number of frames"),
    ],
)
def test_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = pipe(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == f"pktchain: {message}"


def test_the_full_command_line_still_lists_pipe() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pktchain", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "    pipe " in result.stdout
