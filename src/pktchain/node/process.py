"""Running a node as a child process: start it, wait until it serves, stop it.

The demo, the benchmarks and the tests all drive a real `pktchain node`
process this way, exactly as a user would start it, and talk to it only over
its control socket.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pktchain.lab.lab import nsenter_argv
from pktchain.node.control import RUN_DIR, ControlError, request


class NodeProcessError(RuntimeError):
    """The node did not start, or did not stop as asked."""


class NodeProcess:
    """A `pktchain node` child process with its own name and control socket."""

    def __init__(
        self,
        name: str,
        *,
        topology: Path | None = None,
        lab_name: str | None = None,
        node: str | None = None,
        state: Path | None = None,
        api: str | None = "127.0.0.1:0",
        args: tuple[str, ...] = (),
        log_path: Path | None = None,
        etcd: str | None = None,
        control: Path | None = None,
        netns: str | None = None,
    ) -> None:
        self.name = name
        self.control = control or RUN_DIR / f"node-{name}.sock"
        self.topology = topology
        self.lab_name = lab_name
        self.node = node
        self.state = state
        self.api = api
        self.args = args
        self.log_path = log_path
        self.etcd = etcd
        """etcd URLs: the node joins that cluster (its state is there, not in `state`)."""
        self.netns = netns
        """The network namespace the process runs in (a lab host's, as a machine of
        its own); None: this process's."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise NodeProcessError(f"node {self.name} is not running")
        return self._proc.pid

    def start(self, timeout: float = 15.0) -> NodeProcess:
        """Start the node and wait until it serves (`spawn`, then `wait_ready`)."""
        self.spawn()
        self.wait_ready(timeout)
        return self

    def spawn(self) -> None:
        """Start the node without waiting for it (several then start at once)."""
        argv = [sys.executable, "-m", "pktchain", "node", "--name", self.name]
        argv += ["--control", str(self.control)]
        if self.topology is not None:
            argv += ["--topology", str(self.topology)]
        if self.lab_name is not None:
            argv += ["--lab", self.lab_name]
        if self.node is not None:
            argv += ["--node", self.node]
        if self.etcd is not None:
            argv += ["--etcd", self.etcd]
        elif self.state is not None:
            argv += ["--state", str(self.state)]
        else:
            argv += ["--no-state"]
        argv += ["--api", self.api] if self.api is not None else ["--no-api"]
        argv += list(self.args)
        if self.netns is not None:
            argv = nsenter_argv(self.netns, argv)
        self._log = (
            open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        )
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise NodeProcessError(
                    f"node {self.name} exited with status {self._proc.returncode} "
                    f"while starting{self._log_tail()}"
                )
            try:
                if request(self.control, "ping", timeout=1.0).get("ok"):
                    return
            except (ControlError, OSError):
                pass
            time.sleep(0.05)
        self.kill()
        raise NodeProcessError(f"node {self.name} did not serve within {timeout}s")

    def status(self) -> dict[str, Any]:
        return request(self.control, "status")

    def counters(self) -> dict[str, Any]:
        """The ports' counters (and the underlay's), without the rest of the status."""
        reply = request(self.control, "counters")
        if not reply.get("ok"):
            raise NodeProcessError(f"node {self.name}: {reply.get('error')}")
        return reply

    def router(self, limit: int = 1000) -> dict[str, Any]:
        """The router's tables (interfaces, hosts, ARP, NAT, forwards, counters)."""
        reply = request(self.control, "router", limit=limit)
        if not reply.get("ok"):
            raise NodeProcessError(f"node {self.name}: {reply.get('error')}")
        return dict(reply["router"])

    def functions(self) -> list[dict[str, Any]]:
        """The node's native functions (``pktchain node functions --json``)."""
        reply = request(self.control, "functions")
        if not reply.get("ok"):
            raise NodeProcessError(f"node {self.name}: {reply.get('error')}")
        return list(reply["functions"])

    def flows(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The steering's flow table, at most `limit` rows (``pktchain node flows --json``)."""
        reply = request(self.control, "flows", limit=limit)
        if not reply.get("ok"):
            raise NodeProcessError(f"node {self.name}: {reply.get('error')}")
        return list(reply["flows"])

    def api_url(self) -> str:
        """The REST API's base URL (without /v2.0), as the node reports it."""
        url = self.status().get("api")
        if not url:
            raise NodeProcessError(f"node {self.name} serves no REST API")
        return str(url)

    def port(self, name: str) -> dict[str, Any]:
        for port in self.status()["ports"]:
            if port["name"] == name:
                return dict(port)
        raise KeyError(f"node {self.name} has no port {name!r}")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; returns the exit status (SIGKILL after `timeout`)."""
        if self._proc is None:
            return 0
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
                raise NodeProcessError(f"node {self.name} ignored SIGTERM for {timeout}s") from None
        return self._finish()

    def kill(self) -> int:
        if self._proc is None:
            return 0
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        return self._finish()

    def _finish(self) -> int:
        if self._proc is None:
            return 0
        code = self._proc.returncode
        if code < 0:
            # Killed by a signal it could not answer (SIGKILL): its control
            # socket is still there, with no one behind it.
            with contextlib.suppress(FileNotFoundError):
                self.control.unlink()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None
        return code

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        return ":\n  " + "\n  ".join(lines) if lines else ""

    def __enter__(self) -> NodeProcess:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except NodeProcessError:
            self.kill()
