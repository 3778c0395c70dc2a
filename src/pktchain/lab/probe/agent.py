"""The probe programs that run inside lab hosts: ``python -m pktchain.lab.probe.agent ROLE``.

Each role is a small process started in a host's namespace (through nsenter)
by `pktchain.lab.probe.instruments`:

- ``gap-send``: one datagram per interval to the receiver, on an absolute
  schedule (`pktchain.lab.probe.gap.Schedule`), under SCHED_FIFO when allowed;
- ``gap-receive``: notes each datagram's arrival, timed by the kernel
  (``SO_TIMESTAMPNS``, so the receiver's own scheduling does not matter), and
  writes the arrivals to a file;
- ``chat-server``: echoes whatever each connection sends;
- ``chat-client``: opens interactive sessions, sends a line on each every
  period (50 ms) and times the echoes, noting the longest stall and how each
  session ended.

They are separate processes, not threads of the caller, so that the caller's
own work (and Python's interpreter lock, handed over only every 5 ms) cannot
delay a 1 ms schedule. Each one talks over its standard streams: it prints
``ready`` once set up, ``flowing`` once traffic gets through, and
``result <json>`` when it ends. It ends when its standard input closes (the
caller's stop, or the caller's death) or after ``--max-duration`` seconds,
whichever comes first, so that none outlives its run. Standard library only:
these start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import json
import os
import select
import selectors
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pktchain.lab.probe.gap import (
    Arrival,
    DatagramDrop,
    Schedule,
    build_datagram,
    pack_arrivals,
    parse_datagram,
)
from pktchain.lab.probe.tcp import ConnectionEnd

NS_PER_S = 1_000_000_000
STDIN = 0
TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux: tv_sec, tv_nsec
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # asm-generic/socket.h
RECEIVE_BUFFER = 4 << 20
TICK_NS = 50_000_000  # how often the receiver reports its latest arrival
SENDER_PRIORITY = 10  # SCHED_FIFO priority: above every normal task, far below the kernel's


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def stdin_closed(timeout: float) -> bool:
    """Wait up to `timeout` s for the caller to close standard input; True if it has."""
    ready, _, _ = select.select([STDIN], [], [], max(0.0, timeout))
    return bool(ready) and not os.read(STDIN, 4096)


def realtime_offset_ns() -> int:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC now, from the closest of a few readings."""
    readings = []
    for _ in range(3):
        before = time.monotonic_ns()
        real = time.time_ns()
        after = time.monotonic_ns()
        readings.append((after - before, real - (before + after) // 2))
    return min(readings)[1]


# -- gap probe ---------------------------------------------------------------


def gap_send(args: argparse.Namespace) -> dict[str, Any]:
    interval_ns = int(args.interval_us * 1000)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((args.address, args.port))
    realtime = False
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(SENDER_PRIORITY))
            realtime = True
        except OSError:
            realtime = False  # not permitted here: the report says so
    # The loop allocates little and keeps nothing: no collector pause in it.
    gc.disable()
    say("ready")
    deadline = time.monotonic_ns() + int(args.max_duration * NS_PER_S)
    schedule = Schedule(time.monotonic_ns(), interval_ns)
    slot = sent = late = skipped = max_late = max_late_at = 0
    first = last = 0
    errors: Counter[str] = Counter()
    since_check = 0
    while sent < args.max_count:
        now = time.monotonic_ns()
        if now >= deadline:
            break
        due = schedule.due(slot)
        if now < due:
            if stdin_closed((due - now) / NS_PER_S):
                break
            continue
        lateness = now - due
        if lateness > max_late:
            max_late, max_late_at = lateness, due
        late += lateness > interval_ns
        # Numbered by datagram, not by slot: the receiver counts the lost ones
        # between two arrivals exactly, whatever slots were skipped.
        try:
            sock.send(build_datagram(args.token, sent, now, args.size))
        except OSError as exc:
            # The path is down (unreachable, refused, no buffer): a datagram
            # that did not leave, lost all the same.
            errors[errno.errorcode.get(exc.errno or 0, str(exc.errno))] += 1
        sent += 1
        first = first or now
        last = now
        following = schedule.next_slot(slot, time.monotonic_ns())
        skipped += following - slot - 1
        slot = following
        since_check += 1
        # A sender that is always late never waits on stdin: look now and then.
        if since_check >= 256:
            since_check = 0
            if stdin_closed(0.0):
                break
    return {
        "sent": sent,
        "first_ns": first,
        "last_ns": last,
        "interval_ns": interval_ns,
        "max_late_ns": max_late,
        "max_late_at_ns": max_late_at,
        "late": late,
        "skipped": skipped,
        "realtime": realtime,
        "send_errors": dict(errors),
    }


def _arrival_time(ancillary: list[tuple[int, int, bytes]], offset_ns: int) -> int:
    """The kernel's receive time (SO_TIMESTAMPNS, realtime) on the monotonic clock."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            return int(seconds * NS_PER_S + nanoseconds - offset_ns)
    return time.monotonic_ns()


def gap_receive(args: argparse.Namespace) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((args.bind, args.port))
    sock.setblocking(False)
    ancillary_size = socket.CMSG_SPACE(TIMESPEC.size)
    arrivals: list[Arrival] = []
    drops: Counter[str] = Counter()
    say("ready")
    deadline = time.monotonic() + args.max_duration
    stopping = False
    ticked = 0
    while not stopping:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([sock.fileno(), STDIN], [], [], min(remaining, 0.5))
        if STDIN in ready and not os.read(STDIN, 4096):
            stopping = True  # drain what already arrived, then stop
        offset = realtime_offset_ns()
        had_any = bool(arrivals)
        while len(arrivals) < args.max_count:
            try:
                data, ancillary, _, _ = sock.recvmsg(2048, ancillary_size)
            except BlockingIOError:
                break
            parsed = parse_datagram(data, args.token)
            if isinstance(parsed, DatagramDrop):
                drops[str(parsed)] += 1
                continue
            arrivals.append(Arrival(parsed.seq, parsed.sent_ns, _arrival_time(ancillary, offset)))
        if arrivals and not had_any:
            say("flowing")
        # The latest arrival, now and then, for a caller waiting for traffic.
        if arrivals and arrivals[-1].arrived_ns - ticked >= TICK_NS:
            ticked = arrivals[-1].arrived_ns
            say(f"tick {ticked}")
    with open(args.records, "wb") as out:
        out.write(pack_arrivals(arrivals))
    return {"received": len(arrivals), "drops": dict(drops)}


# -- interactive TCP sessions ------------------------------------------------


def chat_server(args: argparse.Namespace) -> dict[str, Any]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.bind, args.port))
    listener.listen(64)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    selector.register(STDIN, selectors.EVENT_READ, None)
    pending: dict[socket.socket, bytearray] = {}
    accepted = 0
    say("ready")
    deadline = time.monotonic() + args.max_duration
    while (remaining := deadline - time.monotonic()) > 0:
        for key, events in selector.select(min(remaining, 0.5)):
            if key.fileobj == STDIN:
                if not os.read(STDIN, 4096):
                    return {"accepted": accepted}
            elif key.fileobj is listener:
                with contextlib.suppress(BlockingIOError):
                    conn, _ = listener.accept()
                    conn.setblocking(False)
                    pending[conn] = bytearray()
                    selector.register(conn, selectors.EVENT_READ, None)
                    accepted += 1
            else:
                conn = cast(socket.socket, key.fileobj)  # every other key is a connection
                if not _echo(conn, pending[conn], events):
                    selector.unregister(conn)
                    del pending[conn]
                    conn.close()
                else:
                    wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE * bool(pending[conn]))
                    selector.modify(conn, wanted, None)
    return {"accepted": accepted}


def _echo(conn: socket.socket, out: bytearray, events: int) -> bool:
    """Read what came and send it back; False once the connection is over."""
    try:
        if events & selectors.EVENT_READ:
            data = conn.recv(65536)
            if not data:
                return False
            out += data
        if out:
            del out[: conn.send(out)]
    except BlockingIOError:
        pass
    except OSError:
        return False
    return True


@dataclass
class Session:
    """One interactive session of the chat client."""

    sock: socket.socket
    last_progress_ns: int
    end: ConnectionEnd = ConnectionEnd.OPEN
    error: str = ""
    sent: int = 0
    echoes: int = 0
    bytes_out: int = 0
    bytes_back: int = 0
    longest_stall_ns: int = 0
    stall_start_ns: int | None = None
    unsent: bytearray = field(default_factory=bytearray)

    def progress(self, now: int) -> None:
        if now - self.last_progress_ns > self.longest_stall_ns:
            self.longest_stall_ns = now - self.last_progress_ns
            self.stall_start_ns = self.last_progress_ns
        self.last_progress_ns = now

    def fail(self, exc: OSError | None) -> None:
        if exc is None:
            self.end, self.error = ConnectionEnd.CLOSED, "closed by the peer"
        elif exc.errno in (errno.ECONNRESET, errno.EPIPE):
            self.end, self.error = ConnectionEnd.RESET, os.strerror(exc.errno)
        else:
            self.end, self.error = ConnectionEnd.ERROR, str(exc)

    def report(self) -> dict[str, Any]:
        return {
            "end": str(self.end),
            "error": self.error,
            "sent": self.sent,
            "echoes": self.echoes,
            "longest_stall_ns": self.longest_stall_ns,
            "stall_start_ns": self.stall_start_ns,
        }


def chat_client(args: argparse.Namespace) -> dict[str, Any]:
    sessions: list[Session] = []
    for _ in range(args.sessions):
        sock = socket.create_connection((args.address, args.port), timeout=args.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sessions.append(Session(sock, time.monotonic_ns()))
    say("ready")
    by_fd = {s.sock.fileno(): s for s in sessions}
    period_ns = int(args.period * NS_PER_S)
    deadline = time.monotonic_ns() + int(args.max_duration * NS_PER_S)
    schedule = Schedule(time.monotonic_ns(), period_ns)
    tick = 0
    flowing = False
    while True:
        now = time.monotonic_ns()
        if now >= deadline:
            break
        if now >= schedule.due(tick):
            for session in sessions:
                if session.end is ConnectionEnd.OPEN:
                    _chat_send(session, f"{tick}\n".encode())
            tick = schedule.next_slot(tick, now)
        live = [fd for fd, s in by_fd.items() if s.end is ConnectionEnd.OPEN]
        timeout = max(0.0, (schedule.due(tick) - time.monotonic_ns()) / NS_PER_S)
        ready, _, _ = select.select([STDIN, *live], [], [], timeout)
        if STDIN in ready and not os.read(STDIN, 4096):
            break
        arrived = time.monotonic_ns()
        for fd in ready:
            if fd != STDIN:
                _chat_receive(by_fd[fd], arrived)
        if not flowing and all(s.echoes for s in sessions):
            flowing = True
            say("flowing")
    stopped = time.monotonic_ns()
    for session in sessions:
        if session.end is ConnectionEnd.OPEN and session.bytes_out > session.bytes_back:
            session.progress(stopped)  # still waiting for an echo: the tail is a stall
        session.sock.close()
    return {"sessions": [s.report() for s in sessions]}


def _chat_send(session: Session, line: bytes) -> None:
    session.unsent += line
    try:
        sent = session.sock.send(session.unsent)
    except BlockingIOError:
        return  # the path is stalled; the line waits its turn
    except OSError as exc:
        session.fail(exc)
        return
    del session.unsent[:sent]
    session.sent += 1
    session.bytes_out += sent


def _chat_receive(session: Session, now: int) -> None:
    try:
        data = session.sock.recv(65536)
    except BlockingIOError:
        return
    except OSError as exc:
        session.fail(exc)
        return
    if not data:
        session.fail(None)
        return
    session.bytes_back += len(data)
    session.echoes += data.count(b"\n")
    session.progress(now)


# -- command line ------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m pktchain.lab.probe.agent")
    roles = top.add_subparsers(dest="role", required=True)

    send = roles.add_parser("gap-send", help="send one datagram per interval")
    send.add_argument("--address", required=True)
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--token", type=int, required=True)
    send.add_argument("--interval-us", type=float, default=1000.0)
    send.add_argument("--size", type=int, default=64)
    send.add_argument("--max-duration", type=float, required=True)
    send.add_argument("--max-count", type=int, required=True)
    send.add_argument("--realtime", action="store_true")

    receive = roles.add_parser("gap-receive", help="note each datagram's arrival")
    receive.add_argument("--bind", default="0.0.0.0")
    receive.add_argument("--port", type=int, required=True)
    receive.add_argument("--token", type=int, required=True)
    receive.add_argument("--records", required=True)
    receive.add_argument("--max-duration", type=float, required=True)
    receive.add_argument("--max-count", type=int, required=True)

    server = roles.add_parser("chat-server", help="echo each connection")
    server.add_argument("--bind", default="0.0.0.0")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--max-duration", type=float, required=True)

    client = roles.add_parser("chat-client", help="interactive sessions, timed")
    client.add_argument("--address", required=True)
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--sessions", type=int, default=1)
    client.add_argument("--period", type=float, default=0.05)
    client.add_argument("--connect-timeout", type=float, default=3.0)
    client.add_argument("--max-duration", type=float, required=True)
    return top


ROLES = {
    "gap-send": gap_send,
    "gap-receive": gap_receive,
    "chat-server": chat_server,
    "chat-client": chat_client,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = ROLES[args.role](args)
    except OSError as exc:
        say("result " + json.dumps({"error": str(exc)}))
        return 1
    say("result " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
