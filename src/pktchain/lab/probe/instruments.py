"""Instruments that measure a failover from inside lab hosts: start, fail over, stop, read.

Three instruments watch the traffic that crosses a router (or router pair)
between a client host and a server host while something happens to it:

- `GapProbe`: one UDP datagram per millisecond from client to server; its
  report's `outage_ms` is the longest interval between two arrivals;
- `IperfWatcher`: a long iperf3 TCP transfer, rate-limited so as not to load
  the machine, whose server-side 0.1 s intervals show any stall;
- `ChatWatcher`: interactive sessions, a line echoed every 50 ms over one
  connection each.

`Instruments` runs all three and gives `Figures`::

    with Instruments(Endpoints(client_ns, server_ns, "198.51.100.10")) as probes:
        probes.start()
        fail_over()
        probes.wait_flowing(after=time.monotonic(), timeout=5.0)
        figures = probes.stop()
    print(figures.outage_ms, figures.tcp_lost)

Every program runs in its host's namespace as a process of its own (started
through nsenter), in its own process group. `close` (or leaving the ``with``
block, whatever happened in it) kills and reaps every one of them; the probe
programs also end on their own when their standard input closes (so when
this process dies) or after `max_duration` seconds, and iperf3 is given that
duration too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import pktchain
from pktchain.lab.errors import LabError, WaitTimeoutError
from pktchain.lab.lab import nsenter_argv
from pktchain.lab.links import TcpSocketState, tcp_connections
from pktchain.lab.probe.gap import NS_PER_S, GapReport, SenderSummary, gap_report, unpack_arrivals
from pktchain.lab.probe.tcp import (
    STALL_LIMIT_S,
    TcpConnectionReport,
    TcpReport,
    chat_reports,
    iperf_report,
)
from pktchain.lab.wait import wait_until

__all__ = [
    "ChatWatcher",
    "Endpoints",
    "Figures",
    "GapProbe",
    "Instruments",
    "IperfWatcher",
    "ProbeError",
]

AGENT_MODULE = "pktchain.lab.probe.agent"
MAX_DURATION_S = 120.0
STOP_GRACE_S = 5.0


class ProbeError(LabError):
    """An instrument did not start, or its program failed; names which and quotes it."""


@dataclass(frozen=True)
class Endpoints:
    """Where the instruments run: the client's and server's namespaces, and the
    address the client reaches the server at (through the router under test)."""

    client: str
    server: str
    server_address: str


def _agent_env() -> dict[str, str]:
    """The environment of a probe program: this one's, with pktchain importable."""
    env = dict(os.environ)
    source = str(Path(pktchain.__file__).resolve().parents[1])
    paths = [source, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError):
            kill(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_GRACE_S)


class Agent:
    """One probe program (`pktchain.lab.probe.agent`) running in a namespace.

    It prints event lines, a word and maybe a value (``ready``, ``flowing``,
    ``tick 123``), and one ``result <json>`` line; its standard input closing
    tells it to stop. The last value of each event is kept.
    """

    def __init__(self, what: str, netns: str, role: str, args: Sequence[str], log: Path) -> None:
        self.what = what
        self.netns = netns
        self.argv = [sys.executable, "-m", AGENT_MODULE, role, *args]
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = bytearray()
        self._events: dict[str, str] = {}
        self._eof = False

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                nsenter_argv(self.netns, self.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=_agent_env(),
                start_new_session=True,
            )
        os.set_blocking(self._stdout().fileno(), False)

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise ProbeError(f"{self.what}: not started")
        return self._process

    def _stdout(self) -> IO[bytes]:
        stdout = self.process.stdout
        if stdout is None:
            raise ProbeError(f"{self.what}: no output pipe")
        return stdout

    def _read(self, timeout: float) -> None:
        """Take in what the program printed, waiting up to `timeout` s for something."""
        if self._eof:
            return
        stdout = self._stdout()
        ready, _, _ = select.select([stdout], [], [], max(0.0, timeout))
        if not ready:
            return
        while True:
            try:
                chunk = os.read(stdout.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                self._eof = True
                break
            self._buffer += chunk
        *complete, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        for line in complete:
            event, _, value = line.decode(errors="replace").partition(" ")
            self._events[event] = value

    def _failure(self, doing: str) -> ProbeError:
        last = ""
        with contextlib.suppress(OSError):
            lines = self.log.read_text(errors="replace").strip().splitlines()
            last = lines[-1] if lines else ""
        with contextlib.suppress(ValueError, AttributeError):
            # A program that failed on a system call says so in its result.
            last = json.loads(self._events.get("result", "{}")).get("error") or last
        status = self.process.poll()
        state = "still running" if status is None else f"exited with status {status}"
        return ProbeError(
            f"{self.what} in {self.netns}: {doing}; it is {state}"
            + (f"; it said: {last}" if last else "")
        )

    def wait_for(self, event: str, timeout: float) -> None:
        """Wait until the program has printed `event`; ProbeError if it ends or is late."""
        deadline = time.monotonic() + timeout
        while event not in self._events:
            remaining = deadline - time.monotonic()
            if self._eof or remaining <= 0:
                raise self._failure(f"no {event!r} within {timeout:g} s")
            self._read(min(remaining, 0.1))

    def last(self, event: str, timeout: float = 0.0) -> str | None:
        """The value of the latest `event` printed so far, after reading for up to `timeout` s."""
        self._read(timeout)
        return self._events.get(event)

    def finish(self, timeout: float = STOP_GRACE_S) -> dict[str, Any]:
        """Tell the program to stop, and return its result document."""
        process = self.process
        if process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self._read(min(0.1, deadline - time.monotonic()))
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise self._failure(f"did not stop within {timeout:g} s") from None
        if "result" not in self._events:
            raise self._failure("gave no result")
        result: dict[str, Any] = json.loads(self._events["result"])
        if "error" in result:
            raise self._failure(f"failed: {result['error']}")
        return result

    def kill(self) -> None:
        """Kill the program's process group and reap it; close the pipes."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            _kill_group(process)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class _Instrument:
    """What the instruments share: a scratch directory, processes, `with`."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._scratch: Path | None = None
        self._agents: list[Agent] = []
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def scratch(self) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="pktchain-probe-"))
        return self._scratch

    def _agent(self, what: str, netns: str, role: str, args: Sequence[str]) -> Agent:
        agent = Agent(what, netns, role, args, self.scratch / f"{role}.log")
        self._agents.append(agent)
        agent.start()
        return agent

    def _popen(self, netns: str, argv: Sequence[str], stdout: IO[bytes]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            nsenter_argv(netns, argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._processes.append(process)
        return process

    def close(self) -> None:
        """Kill and reap every process of this instrument; remove its files. Idempotent."""
        for agent in self._agents:
            agent.kill()
        for process in self._processes:
            if process.returncode is None:
                _kill_group(process)
        self._agents.clear()
        self._processes.clear()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class GapProbe(_Instrument):
    """UDP datagrams every `interval` seconds from `sender` to `address` in `receiver`.

    `start` returns once datagrams arrive; `stop` returns the `GapReport`. At
    most `max_duration` seconds of sending.
    """

    def __init__(
        self,
        sender: str,
        receiver: str,
        address: str,
        *,
        port: int = 47000,
        interval: float = 0.001,
        size: int = 64,
        max_duration: float = MAX_DURATION_S,
        realtime: bool = True,
    ) -> None:
        super().__init__("gap probe")
        if not 0.0001 <= interval <= 1.0:
            raise ValueError(f"interval: expected 0.0001 to 1 s, got {interval!r}")
        if not 24 <= size <= 1472:
            raise ValueError(f"size: expected 24 to 1472 bytes, got {size!r}")
        if not 0 < max_duration <= 3600:
            raise ValueError(f"max_duration: expected up to 3600 s, got {max_duration!r}")
        self.sender, self.receiver, self.address = sender, receiver, address
        self.port, self.interval, self.size = port, interval, size
        self.max_duration, self.realtime = max_duration, realtime
        self.token = secrets.randbits(32)
        self._send: Agent | None = None
        self._receive: Agent | None = None

    def start(self, timeout: float = 10.0) -> Self:
        """Start the receiver, then the sender; return once datagrams arrive."""
        max_count = int(self.max_duration / self.interval) + 1
        common = ["--port", str(self.port), "--token", str(self.token)]
        limits = ["--max-duration", str(self.max_duration), "--max-count", str(max_count)]
        try:
            self._receive = self._agent(
                "gap receiver",
                self.receiver,
                "gap-receive",
                [*common, "--records", str(self.scratch / "arrivals"), *limits],
            )
            self._receive.wait_for("ready", timeout)
            extra = ["--realtime"] if self.realtime else []
            self._send = self._agent(
                "gap sender",
                self.sender,
                "gap-send",
                [
                    "--address",
                    self.address,
                    *common,
                    "--interval-us",
                    str(self.interval * 1e6),
                    "--size",
                    str(self.size),
                    *limits,
                    *extra,
                ],
            )
            self._send.wait_for("ready", timeout)
            self._receive.wait_for("flowing", timeout)
        except BaseException:
            self.close()
            raise
        return self

    def last_arrival(self, timeout: float = 0.0) -> float | None:
        """When the latest datagram arrived, as the receiver last said (monotonic s).

        The receiver reports its latest arrival every 50 ms while datagrams
        come; this reads its reports for up to `timeout` s.
        """
        if self._receive is None:
            raise ProbeError("gap probe: not started")
        value = self._receive.last("tick", timeout)
        return None if value is None else int(value) / NS_PER_S

    def wait_arrival_after(self, moment: float, timeout: float) -> float:
        """Wait until a datagram arrives after `moment` (monotonic s); return when it did.

        `ProbeError` if none has after `timeout` s: the path has not come back.
        """
        deadline = time.monotonic() + timeout
        while True:
            arrived = self.last_arrival(0.0)
            if arrived is not None and arrived > moment:
                return arrived
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProbeError(
                    f"gap probe: no datagram from {self.sender} reached {self.receiver} "
                    f"within {timeout:g} s"
                )
            self.last_arrival(min(remaining, 0.1))

    def stop(self) -> GapReport:
        """Stop sending, let the last datagrams land, stop receiving, and report."""
        if self._send is None or self._receive is None:
            raise ProbeError("gap probe: stop before start")
        try:
            sent = self._send.finish()
            # The last datagram is on its way for at most a few milliseconds.
            time.sleep(0.05)
            self._receive.finish()
            arrivals = unpack_arrivals((self.scratch / "arrivals").read_bytes())
        finally:
            self.close()
        sender = SenderSummary(
            sent=int(sent["sent"]),
            first_ns=int(sent["first_ns"]),
            last_ns=int(sent["last_ns"]),
            interval_ns=int(sent["interval_ns"]),
            max_late_ns=int(sent["max_late_ns"]),
            max_late_at_ns=int(sent["max_late_at_ns"]),
            late=int(sent["late"]),
            skipped=int(sent["skipped"]),
            realtime=bool(sent["realtime"]),
        )
        return gap_report(arrivals, sender)


class IperfWatcher(_Instrument):
    """A long iperf3 TCP transfer between `client` and `address` in `server`.

    From the client to the server, or, `reverse`, from the server to the
    client (iperf3 ``-R``: a download, whose data the server sends first
    after a failover). Rate-limited (`rate`, iperf3's ``-b``) so that the transfer does not load
    the machine it measures. `stop` interrupts the client (SIGINT: iperf3 then
    reports) and returns the transfer's `TcpConnectionReport`.
    """

    def __init__(
        self,
        client: str,
        server: str,
        address: str,
        *,
        port: int = 47001,
        rate: str = "100M",
        max_duration: float = MAX_DURATION_S,
        reverse: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__("iperf3 watcher")
        if not 1 <= max_duration <= 3600:
            raise ValueError(f"max_duration: expected 1 to 3600 s, got {max_duration!r}")
        self.client, self.server, self.address = client, server, address
        self.port, self.rate, self.max_duration = port, rate, max_duration
        self.reverse = reverse
        self.name = name or ("iperf3 download" if reverse else "iperf3 upload")
        self._server: subprocess.Popen[bytes] | None = None
        self._client: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    @property
    def server_pid(self) -> int | None:
        """The iperf3 server's pid, while it runs (for a test that kills it)."""
        return _pid(self._server)

    def start(self, timeout: float = 10.0) -> Self:
        iperf3 = shutil.which("iperf3")
        if iperf3 is None:
            raise ProbeError("iperf3 watcher: iperf3 is not installed (Debian package iperf3)")
        port = str(self.port)
        try:
            with open(self.scratch / "server.json", "wb") as out:
                self._server = self._popen(
                    self.server, [iperf3, "-s", "-1", "-p", port, "-i", "0.1", "--json"], out
                )
            from pktchain.lab.links import listening

            self._wait(lambda: listening(self.server, self.port), timeout, "the iperf3 server")
            with open(self.scratch / "client.json", "wb") as out:
                argv = [iperf3, "-c", self.address, "-p", port, "-i", "0.1", "--json"]
                argv += ["-b", self.rate, "-t", str(int(self.max_duration))]
                argv += ["-R"] if self.reverse else []
                self._client = self._popen(self.client, argv, out)
            self._started = time.monotonic()
            # The control and the data connection are both up once two exist.
            self._wait(
                lambda: _established(self.client, self.port) >= 2,
                timeout,
                "the iperf3 connections",
            )
        except BaseException:
            self.close()
            raise
        return self

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        def ready() -> bool:
            for process in (self._server, self._client):
                if process is not None and process.poll() is not None:
                    raise ProbeError(
                        f"iperf3 watcher: {what}: iperf3 exited ({process.returncode})"
                    )
            return bool(condition())

        try:
            wait_until(ready, timeout=timeout, what=f"iperf3 watcher: {what}")
        except WaitTimeoutError as exc:
            raise ProbeError(str(exc)) from None

    def stop(self) -> TcpConnectionReport:
        client, server = self._client, self._server
        if client is None or server is None:
            raise ProbeError("iperf3 watcher: stop before start")
        try:
            exited_early = client.poll() is not None
            if not exited_early:
                client.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                client.wait(timeout=STOP_GRACE_S)
            # The server ends when the client tells it; one the path cut off
            # from its client is interrupted so that it reports too.
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=1.0)
            if server.poll() is None:
                server.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.wait(timeout=STOP_GRACE_S)
            return iperf_report(
                self.name,
                _json_file(self.scratch / "client.json"),
                _json_file(self.scratch / "server.json"),
                started_s=self._started,
                client_status=client.returncode,
                exited_early=exited_early,
            )
        finally:
            self.close()


def _pid(process: subprocess.Popen[bytes] | None) -> int | None:
    return None if process is None or process.poll() is not None else process.pid


def _established(netns: str, port: int) -> int:
    return sum(1 for c in tcp_connections(netns, port) if c.state is TcpSocketState.ESTABLISHED)


def _json_file(path: Path) -> dict[str, Any] | None:
    """The JSON document in `path`, or None if the program wrote none (or half of one)."""
    try:
        document = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


class ChatWatcher(_Instrument):
    """`sessions` interactive TCP sessions from `client` to `address` in `server`:
    a line every `period` seconds on each, echoed back."""

    def __init__(
        self,
        client: str,
        server: str,
        address: str,
        *,
        port: int = 47002,
        sessions: int = 1,
        period: float = 0.05,
        max_duration: float = MAX_DURATION_S,
    ) -> None:
        super().__init__("interactive sessions")
        if not 1 <= sessions <= 64:
            raise ValueError(f"sessions: expected 1 to 64, got {sessions!r}")
        if not 0.001 <= period <= 10:
            raise ValueError(f"period: expected 0.001 to 10 s, got {period!r}")
        self.client, self.server, self.address = client, server, address
        self.port, self.sessions, self.period = port, sessions, period
        self.max_duration = max_duration
        self._server: Agent | None = None
        self._client: Agent | None = None

    @property
    def server_pid(self) -> int | None:
        """The echo server's pid, while it runs (for a test that kills it)."""
        return _pid(None if self._server is None else self._server.process)

    def start(self, timeout: float = 10.0) -> Self:
        limit = ["--max-duration", str(self.max_duration)]
        try:
            self._server = self._agent(
                "echo server", self.server, "chat-server", ["--port", str(self.port), *limit]
            )
            self._server.wait_for("ready", timeout)
            self._client = self._agent(
                "interactive client",
                self.client,
                "chat-client",
                [
                    "--address",
                    self.address,
                    "--port",
                    str(self.port),
                    "--sessions",
                    str(self.sessions),
                    "--period",
                    str(self.period),
                    *limit,
                ],
            )
            self._client.wait_for("flowing", timeout)
        except BaseException:
            self.close()
            raise
        return self

    def stop(self) -> list[TcpConnectionReport]:
        if self._client is None or self._server is None:
            raise ProbeError("interactive sessions: stop before start")
        try:
            result = self._client.finish()
            with contextlib.suppress(ProbeError):
                self._server.finish()  # a killed server (a test's doing) has no result
            return chat_reports(result)
        finally:
            self.close()


@dataclass(frozen=True)
class Figures:
    """What the instruments measured over one run."""

    gap: GapReport
    tcp: TcpReport
    started_s: float
    """When the instruments were all running (CLOCK_MONOTONIC seconds)."""
    stopped_s: float

    @property
    def outage_ms(self) -> float:
        return self.gap.outage_ms

    @property
    def tcp_lost(self) -> int:
        return self.tcp.lost

    @property
    def outage_start_s(self) -> float | None:
        """When the longest gap began, seconds since the instruments started."""
        outage = self.gap.outage
        return None if outage is None else outage.start_ns / NS_PER_S - self.started_s

    def summary(self) -> dict[str, object]:
        return {
            "outage_ms": round(self.outage_ms, 3),
            "tcp_lost": self.tcp_lost,
            "gap": self.gap.summary(),
            "tcp": self.tcp.summary(),
        }


class Instruments:
    """A gap probe, iperf3 transfers and interactive sessions between two hosts.

    `start` starts them all (each bounded by `max_duration`) and returns once
    traffic flows through every one; `stop` stops them and returns the
    `Figures`; `close` (also on leaving a ``with`` block) kills whatever is
    still running. The transfers are an upload (client to server) and a
    download (server to client), each at `iperf_rate`; `upload`,
    `download` False and `sessions` 0 leave those out. Ports from
    `port_base` up: the gap probe's, the sessions', the upload's, the
    download's.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        interval: float = 0.001,
        iperf_rate: str = "100M",
        upload: bool = True,
        download: bool = True,
        sessions: int = 2,
        stall_limit: float = STALL_LIMIT_S,
        max_duration: float = MAX_DURATION_S,
        port_base: int = 47000,
    ) -> None:
        if not 1024 <= port_base <= 65532:
            raise ValueError(f"port_base: expected 1024 to 65532, got {port_base!r}")
        self.endpoints = endpoints
        self.stall_limit = stall_limit
        client, server, address = endpoints.client, endpoints.server, endpoints.server_address
        self.gap = GapProbe(
            client, server, address, port=port_base, interval=interval, max_duration=max_duration
        )
        self.chat = (
            None
            if sessions == 0
            else ChatWatcher(
                client,
                server,
                address,
                port=port_base + 1,
                sessions=sessions,
                max_duration=max_duration,
            )
        )
        self.transfers = [
            IperfWatcher(
                client,
                server,
                address,
                port=port_base + 2 + reverse,
                rate=iperf_rate,
                max_duration=max_duration,
                reverse=reverse,
            )
            for reverse, wanted in ((False, upload), (True, download))
            if wanted
        ]
        self._started: float | None = None

    @property
    def _instruments(self) -> list[GapProbe | ChatWatcher | IperfWatcher]:
        return [self.gap, *self.transfers, *([self.chat] if self.chat is not None else [])]

    def start(self, timeout: float = 10.0) -> Self:
        try:
            for transfer in self.transfers:
                transfer.start(timeout)
            if self.chat is not None:
                self.chat.start(timeout)
            self.gap.start(timeout)
        except BaseException:
            self.close()
            raise
        self._started = time.monotonic()
        return self

    def wait_flowing(self, after: float, timeout: float = 10.0) -> float:
        """Wait until a gap probe datagram arrives after `after` (monotonic s).

        After a failover: once the new router is in place, this says the
        path carries traffic again (it returns when, in monotonic seconds);
        `ProbeError` if it does not within `timeout` s.
        """
        return self.gap.wait_arrival_after(after, timeout)

    def stop(self) -> Figures:
        if self._started is None:
            raise ProbeError("instruments: stop before start")
        try:
            gap = self.gap.stop()
            connections = [transfer.stop() for transfer in self.transfers]
            if self.chat is not None:
                connections += self.chat.stop()
        finally:
            self.close()
        return Figures(
            gap, TcpReport(tuple(connections), self.stall_limit), self._started, time.monotonic()
        )

    def close(self) -> None:
        for instrument in self._instruments:
            instrument.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
