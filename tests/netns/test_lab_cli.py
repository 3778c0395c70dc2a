"""``pktchain lab`` up / exec / list / down, run as a user runs them, including
``down`` after ``up`` was killed half way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pktchain.lab import namespaces, wait_until
from pktchain.lab.journal import journal_path, read_journal


def pktchain(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pktchain", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
    )


def lab_netns(name: str) -> list[str]:
    return [ns for ns in namespaces.list_netns() if ns.startswith(f"pc-{name}.")]


@pytest.fixture
def topology_file(tmp_path: Path, unique_name: Callable[[str], str]) -> Iterator[Path]:
    """A two-host lab with a bridge and a background command, under a unique name.

    Whatever a test leaves of it is removed afterwards.
    """
    name = unique_name("cli")
    path = tmp_path / "lab.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            lab: {name}
            bridges: [lan0]
            hosts:
              h1:
                interfaces:
                  eth0: {{attach: lan0, addresses: [10.0.20.1/24]}}
              h2:
                interfaces:
                  eth0: {{attach: lan0, addresses: [10.0.20.2/24]}}
                  eth1: {{attach: h3.eth0, addresses: [10.0.21.1/24]}}
              h3:
                interfaces:
                  eth0: {{addresses: [10.0.21.2/24]}}
                commands:
                  - sleep 300
            """
        )
    )
    yield path
    pktchain("lab", "down", "--lab", name)


def test_up_exec_down(topology_file: Path) -> None:
    name = topology_file.read_text().split()[1]
    up = pktchain("lab", "up", str(topology_file))
    assert up.returncode == 0, up.stderr
    assert f"pc-{name}.h1" in up.stdout and "sleep 300" in up.stdout
    assert sorted(lab_netns(name)) == sorted(
        f"pc-{name}.{suffix}" for suffix in ("fabric", "h1", "h2", "h3")
    )

    ping = pktchain("lab", "exec", "-f", str(topology_file), "h1", "--", "ping", "-c1", "10.0.20.2")
    assert ping.returncode == 0, ping.stderr
    status = pktchain("lab", "exec", "--lab", name, "h3", "--", "sh", "-c", "exit 7")
    assert status.returncode == 7
    unknown = pktchain("lab", "exec", "--lab", name, "h9", "--", "true")
    assert unknown.returncode == 2
    assert "has no host or node 'h9' (it has: h1, h2, h3)" in unknown.stderr

    listed = pktchain("lab", "list")
    assert f"{name}: 4 namespace(s), up" in listed.stdout

    again = pktchain("lab", "up", str(topology_file))
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "already up" in again.stderr

    journal = read_journal(name)
    assert journal is not None
    (sleeper,) = journal.processes
    down = pktchain("lab", "down", str(topology_file))
    assert down.returncode == 0, down.stderr
    assert f"lab {name}: removed 4 namespace(s), 1 process(es)" in down.stdout
    assert not lab_netns(name)
    assert not namespaces.process_alive(sleeper.pid)

    twice = pktchain("lab", "down", str(topology_file))
    assert twice.returncode == 0
    assert f"lab {name}: nothing to remove" in twice.stdout


def test_up_reports_every_topology_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("lab: bad\nhosts:\n  h1:\n    interfaces:\n      eth0: {attach: nowhere}\n")
    result = pktchain("lab", "up", str(path))
    assert result.returncode == 2
    assert f"{path}:5: hosts.h1.interfaces.eth0.attach:" in result.stderr


# A child that runs `pktchain lab up` and is SIGKILLed by its own hand when it
# is about to create its second veth: namespaces exist, some links too, the
# journal is not marked ready.
CRASHING_UP = """
import os, signal, sys
from pktchain.lab import links
original = links.Netlink.create_veth
calls = []
def create_veth(self, *args, **kwargs):
    calls.append(args)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
links.Netlink.create_veth = create_veth
from pktchain.cli import main
sys.exit(main(["lab", "up", sys.argv[1]]))
"""


def test_down_after_up_was_killed(topology_file: Path) -> None:
    name = topology_file.read_text().split()[1]
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_UP, str(topology_file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    left = lab_netns(name)
    assert len(left) == 4
    journal = read_journal(name)
    assert journal is not None and not journal.ready
    listed = pktchain("lab", "list")
    assert f"{name}: 4 namespace(s), incomplete" in listed.stdout

    # Someone started a process in a half-made host, and a namespace with the
    # lab's prefix appeared that the journal does not know.
    stray = f"pc-{name}.stray"
    namespaces.create_netns(stray)
    sleeper = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/pc-{name}.h2", "--", "sleep", "300"],
        start_new_session=True,
    )
    try:
        target = namespaces.netns_id(f"pc-{name}.h2")
        wait_until(
            lambda: namespaces.process_netns(sleeper.pid) == target,
            timeout=5,
            what="sleeper inside h2",
        )
        down = pktchain("lab", "down", str(topology_file))
        assert down.returncode == 0, down.stderr
        assert f"lab {name}: removed 5 namespace(s), 1 process(es)" in down.stdout
        assert sleeper.wait(timeout=5) == -signal.SIGTERM
    finally:
        if sleeper.poll() is None:
            os.killpg(sleeper.pid, signal.SIGKILL)
            sleeper.wait()
    assert not lab_netns(name)
    assert not journal_path(name).exists()
    assert pktchain("lab", "down", "--lab", name).returncode == 0
