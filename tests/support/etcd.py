"""A real etcd for tests, on loopback, with a data directory of its own.

`EtcdServer` runs etcd (Debian's etcd-server, installed by
scripts/install-deps) with the lab's command line (`pktchain.lab.etcd`) as a
one-member cluster on 127.0.0.1, on free client and peer ports, in a
temporary data directory, and waits until ``/health`` says it has a leader.
`stop()` ends it (SIGTERM, then SIGKILL), `kill()` crashes it (SIGKILL) and
`start()` runs it again on the same ports and data, so a test can take etcd
away and bring it back. The `etcd` fixture always
stops the server and removes its directory.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pktchain.lab.etcd import etcd_argv, etcd_env, find_etcd
from pktchain.lab.topology import EtcdSpec

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """One etcd member on 127.0.0.1; `url` is its client URL."""

    def __init__(self, directory: Path, name: str = "pktchain-test") -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.log_path = directory / "etcd.log"
        self.name = name
        self.client_port = 0
        self.peer_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Run etcd (on the ports of the last run, if any) and wait until it is healthy."""
        if self.running:
            raise RuntimeError("etcd is already running")
        fresh = self.client_port == 0
        for _attempt in range(3 if fresh else 1):
            if fresh:  # a free port may be taken before etcd binds it: pick again
                self.client_port, self.peer_port = free_port(), free_port()
            if self._run():
                return
        raise RuntimeError(f"etcd did not start; its log:\n{self._log_tail()}")

    def _run(self) -> bool:
        # The lab's etcd command line (pktchain.lab.etcd), on loopback ports.
        spec = EtcdSpec(
            self.name,
            ipaddress.IPv4Interface("127.0.0.1/8"),
            client_port=self.client_port,
            peer_port=self.peer_port,
        )
        argv = etcd_argv(find_etcd(), spec, self.data_dir)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=etcd_env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            if self.healthy():
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def healthy(self) -> bool:
        """Whether etcd answers ``/health`` with a leader."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """End etcd cleanly (SIGTERM; SIGKILL if it lingers); idempotent."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """End etcd at once, as a crash does."""
        self._end(signal.SIGKILL)

    def _end(self, signum: int) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        self.process = None

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A running etcd on loopback, stopped and removed after the test."""
    server = EtcdServer(Path(tempfile.mkdtemp(prefix="pktchain-etcd-")))
    try:
        server.start()
        yield server
    finally:
        server.close()
