"""The probe connections: HTTP requests that never stop while a node dies.

A probe is a small Python program run in the client: keep-alive HTTP/1.1
connections to the server, each sending a request every `PROBE_INTERVAL`
seconds without waiting for the answers (pipelining), so that each of their
flows always has a packet on the way.  It prints its connections' source
ports, runs until its input ends, waits for the last answers, and prints
per connection the requests sent and answered, the longest wait between two
answers and the time (CLOCK_MONOTONIC) of the last one.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import Any

from pktchain.demo.cluster.topology import HTTP_PORT, SERVER
from pktchain.demo.report import StepError
from pktchain.lab import LabHost

PROBE_CONNECTIONS = 8
PROBE_INTERVAL = 0.08
"""Seconds between two requests of a probe connection: at most 9 fit in
TCP's initial window of 10 segments while nothing is answered, 0.72 s."""
PROBE_BATCHES = 3
"""Probes opened at most, until some flow crosses each instance on n2."""
AFTER_MOVE = 0.5
"""Seconds the probes keep sending once their flows moved: what they send
then must be answered too."""
PROBE_LIMIT = 60.0
"""Seconds a probe runs at most (the demo ends it sooner)."""
PROBE = r"""
import json, socket, sys, threading, time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
interval, limit = float(sys.argv[4]), float(sys.argv[5])
request = ("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode()
stop, senders_done = threading.Event(), threading.Event()


def content_length(head):
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class Connection:
    def __init__(self):
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(0.2)
        self.sport = self.sock.getsockname()[1]
        self.sent = 0
        self.answers = []
        self.error = None

    def send(self):
        while not stop.is_set():
            try:
                self.sock.sendall(request)
            except OSError as exc:
                self.error = "send: %s" % exc
                return
            self.sent += 1
            stop.wait(interval)

    def read(self):
        buf = b""
        give_up = None
        while not (senders_done.is_set() and len(self.answers) >= self.sent):
            if senders_done.is_set() and give_up is None:
                give_up = time.monotonic() + 5
            if give_up is not None and time.monotonic() > give_up:
                self.error = "%d requests unanswered" % (self.sent - len(self.answers))
                return
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as exc:
                self.error = "receive: %s" % exc
                return
            if not chunk:
                self.error = "closed by the server"
                return
            buf += chunk
            while True:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                length = content_length(head)
                if not sep or len(rest) < length:
                    break
                buf = rest[length:]
                self.answers.append(time.monotonic())


connections = [Connection() for _ in range(count)]
senders = [threading.Thread(target=c.send) for c in connections]
readers = [threading.Thread(target=c.read) for c in connections]
for thread in senders + readers:
    thread.start()
print(json.dumps([c.sport for c in connections]), flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
stop.wait(limit)
stop.set()
for thread in senders:
    thread.join()
senders_done.set()
for thread in readers:
    thread.join()
results = []
for c in connections:
    gaps = [b - a for a, b in zip(c.answers, c.answers[1:])]
    results.append({"sport": c.sport, "sent": c.sent, "answered": len(c.answers),
                    "max_gap": round(max(gaps, default=0.0), 3),
                    "last": c.answers[-1] if c.answers else None, "error": c.error})
print(json.dumps(results), flush=True)
"""


class Probe:
    """Keep-alive HTTP connections from the client, each sending a request every
    `PROBE_INTERVAL` s without waiting for the answers (HTTP/1.1 pipelining), so
    that each of their flows has a packet on the way at every moment."""

    def __init__(self, client: LabHost, connections: int) -> None:
        argv = ["python3", "-c", PROBE, SERVER, str(HTTP_PORT), str(connections)]
        argv += [str(PROBE_INTERVAL), str(PROBE_LIMIT)]
        self.process = client.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._output = b""
        first = self._read_line(time.monotonic() + 15)
        try:
            self.ports: list[int] = [int(port) for port in json.loads(first)]
        except (ValueError, TypeError) as exc:
            self.kill()
            raise StepError(f"the probe did not start: {first[:200]!r}") from exc

    def _read_line(self, deadline: float) -> bytes:
        stdout = self.process.stdout
        if stdout is None:  # pragma: no cover - popen was given PIPE
            raise StepError("the probe has no output")
        fd = stdout.fileno()
        while b"\n" not in self._output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise StepError("the probe did not answer in time")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise StepError(f"the probe exited with status {self.process.wait()}")
                self._output += chunk
        line, _, self._output = self._output.partition(b"\n")
        return line

    def finish(self, timeout: float) -> list[dict[str, Any]]:
        """Stop sending (end of input), wait for the last answers; each connection's counts."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        line = self._read_line(time.monotonic() + timeout)
        self.process.wait(timeout=5)
        try:
            return list(json.loads(line))
        except ValueError as exc:
            raise StepError(f"the probe's results do not parse: {line[:200]!r}") from exc

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
