"""From exec of `pktchain pipe ...` and `pktchain fn ...` to the first frame forwarded; goal 0.1 s.

A lab of three hosts, src.eth0 - mid.in and mid.out - dst.eth0, no addresses,
IPv6 off (so no frame but the bench's own crosses it). Each figure is taken
`--runs` times and printed as median and max, in milliseconds:

- **write**: exec of ``pktchain pipe write --netns MID out`` with one ASCII frame
  already waiting on its stdin, to that frame's arrival on dst.eth0 (the
  kernel's receive timestamp on a packet socket in dst);
- **read**: exec of ``pktchain pipe read --netns MID --count 1 in``, while src
  sends a frame every millisecond into mid.in, to the first byte of its stdout
  (so up to 1 ms of the figure is waiting for the next frame);
- **read | write**: both started together, joined by a pipe, the same frames
  from src, to the first frame's arrival on dst.eth0;
- **fn KIND**: exec of ``pktchain fn KIND -q`` with one ASCII frame already
  waiting on its stdin, to the first byte on its stdout (the frame, through
  the function: firewall, flow-monitor, and nat, whose modules take longest
  to import);
- **read | fn firewall | fn flow-monitor | write**: the four started together,
  the same frames from src, to the first frame's arrival on dst.eth0;
- the baselines, in the same run: exec to exit of ``python -c pass`` (the
  interpreter's own start-up) and of ``pktchain --version`` (the CLI's).

By default the commands run with a bytecode cache (``PYTHONPYCACHEPREFIX`` in
a temporary directory, warmed by one run that is not counted), as an installed
pktchain would; ``--no-bytecode-cache`` keeps the environment as it is, and
with ``PYTHONDONTWRITEBYTECODE`` set every start compiles pktchain's sources.
Needs root (namespaces, packet sockets). Every wait is bounded.

    .venv/bin/python bench/pipe_startup.py [--runs 10] [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pktchain.lab import Lab
from pktchain.packet.streams import AsciiEncoder, Frame
from pktchain.pipe.capture import SO_TIMESTAMPNS

PKTCHAIN = str(Path(sys.executable).with_name("pktchain"))
ETH_P_ALL = 0x0003
MARKER_TYPE = b"\x88\xb5"  # IEEE 802 local experimental EtherType: only the bench sends it
SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")
WAIT = 5.0  # seconds: the longest any single measurement may take
NO_IPV6 = {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}


def topology(name: str) -> dict[str, object]:
    return {
        "lab": name,
        "hosts": {
            "src": {"sysctls": NO_IPV6, "interfaces": {"eth0": {"attach": "mid.in"}}},
            "mid": {"sysctls": NO_IPV6, "interfaces": {"in": {}, "out": {}}},
            "dst": {"sysctls": NO_IPV6, "interfaces": {"eth0": {"attach": "mid.out"}}},
        },
    }


def marker(run: str) -> bytes:
    return DST_MAC + SRC_MAC + MARKER_TYPE + run.encode().ljust(46, b"\0")


class FarEnd:
    """A packet socket on dst.eth0 that tells when a marker frame of a run arrives."""

    def __init__(self, lab: Lab) -> None:
        self.sock = lab.host("dst").socket(
            socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)
        )
        self.sock.bind(("eth0", ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

    def arrival_ns(self, run: str, deadline: float) -> int:
        """Kernel receive time (ns since the epoch) of the first frame of `run`."""
        wanted = run.encode()
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, ancillary, _, _ = self.sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except TimeoutError:
                break
            if data[12:14] == MARKER_TYPE and data[14:].startswith(wanted):
                for level, kind, value in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        seconds, nanoseconds = struct.unpack("@ll", value[:16])
                        return seconds * 1_000_000_000 + nanoseconds
                return time.time_ns()
        raise TimeoutError(f"frame of run {run} not seen on dst.eth0 within {WAIT} s")


class Sender:
    """src sends a marker frame of `run` into mid.in every millisecond, until stopped."""

    def __init__(self, lab: Lab, run: str) -> None:
        self.sock = lab.host("src").socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.bind(("eth0", 0))
        self.frame = marker(run)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        for _ in range(int(WAIT * 1000)):
            if self.done.wait(0.001):
                return
            self.sock.send(self.frame)

    def __enter__(self) -> Sender:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=WAIT)
        self.sock.close()


def finish(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def time_write(lab: Lab, far: FarEnd, env: dict[str, str], run: str) -> float:
    read_end, write_end = os.pipe()
    os.write(write_end, AsciiEncoder().encode(Frame(marker(run))))
    os.close(write_end)
    start = time.time_ns()
    process = subprocess.Popen(
        [PKTCHAIN, "pipe", "write", "-q", "--netns", lab.netns_of("mid"), "out"],
        stdin=read_end,
        env=env,
    )
    os.close(read_end)
    try:
        arrived = far.arrival_ns(run, time.monotonic() + WAIT)
    finally:
        finish(process)
    return (arrived - start) / 1e6


def time_read(lab: Lab, env: dict[str, str], run: str) -> float:
    read_cmd = [PKTCHAIN, "pipe", "read", "-q", "--netns", lab.netns_of("mid"), "-c", "1"]
    with Sender(lab, run):
        start = time.time_ns()
        process = subprocess.Popen(
            [*read_cmd, "--format", "ascii", "in"], stdout=subprocess.PIPE, env=env
        )
        assert process.stdout is not None
        try:
            first = process.stdout.read(1)
            seen = time.time_ns()
        finally:
            finish(process)
    if not first:
        raise RuntimeError("pktchain pipe read wrote nothing")
    return (seen - start) / 1e6


def time_chain(lab: Lab, far: FarEnd, env: dict[str, str], run: str) -> float:
    mid = lab.netns_of("mid")
    read_end, write_end = os.pipe()
    with Sender(lab, run):
        start = time.time_ns()
        reader = subprocess.Popen(
            [PKTCHAIN, "pipe", "read", "-q", "--netns", mid, "-c", "1", "in"],
            stdout=write_end,
            env=env,
        )
        writer = subprocess.Popen(
            [PKTCHAIN, "pipe", "write", "-q", "--netns", mid, "out"], stdin=read_end, env=env
        )
        os.close(read_end)
        os.close(write_end)
        try:
            arrived = far.arrival_ns(run, time.monotonic() + WAIT)
        finally:
            finish(reader, writer)
    return (arrived - start) / 1e6


FN_SETTINGS: dict[str, list[str]] = {
    "firewall": [],
    "flow-monitor": [],
    "nat": ["external_address=203.0.113.1", 'internal_networks=["192.168.0.0/24"]'],
}
"""The functions timed alone, with the configuration each needs (the marker frame is
not IP: each forwards it)."""


def time_fn(env: dict[str, str], run: str, kind: str) -> float:
    read_end, write_end = os.pipe()
    os.write(write_end, AsciiEncoder().encode(Frame(marker(run))))
    os.close(write_end)
    start = time.time_ns()
    process = subprocess.Popen(
        [PKTCHAIN, "fn", kind, *FN_SETTINGS[kind], "-q"],
        stdin=read_end,
        stdout=subprocess.PIPE,
        env=env,
    )
    os.close(read_end)
    assert process.stdout is not None
    try:
        first = process.stdout.read(1)
        seen = time.time_ns()
    finally:
        finish(process)
    if not first:
        raise RuntimeError(f"pktchain fn {kind} wrote nothing")
    return (seen - start) / 1e6


def time_fn_chain(lab: Lab, far: FarEnd, env: dict[str, str], run: str) -> float:
    mid = lab.netns_of("mid")
    commands = [
        [PKTCHAIN, "pipe", "read", "-q", "--netns", mid, "-c", "1", "in"],
        [PKTCHAIN, "fn", "firewall", "-q"],
        [PKTCHAIN, "fn", "flow-monitor", "-q"],
        [PKTCHAIN, "pipe", "write", "-q", "--netns", mid, "out"],
    ]
    with Sender(lab, run):
        start = time.time_ns()
        processes: list[subprocess.Popen[bytes]] = []
        stdin: int | None = None
        for n, argv in enumerate(commands):
            read_end, write_end = os.pipe() if n < len(commands) - 1 else (None, None)
            processes.append(subprocess.Popen(argv, stdin=stdin, stdout=write_end, env=env))
            for fd in (stdin, write_end):
                if fd is not None:
                    os.close(fd)
            stdin = read_end
        try:
            arrived = far.arrival_ns(run, time.monotonic() + WAIT)
        finally:
            finish(*processes)
    return (arrived - start) / 1e6


def time_exit(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, timeout=WAIT, check=True)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="measurements of each figure (10)")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run the commands in this environment as it is (no cache prepared)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("pipe_startup: needs root (network namespaces, packet sockets)", file=sys.stderr)
        return 2
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="pktchain-bench-") as cache:
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = cache
        with Lab.up(topology(f"pipestart-{secrets.token_hex(3)}")) as lab:
            far = FarEnd(lab)
            figures: dict[str, list[float]] = {}
            measures: dict[str, Callable[[str], float]] = {
                "python -c pass (exit)": lambda run: time_exit([sys.executable, "-c", "pass"], env),
                "pktchain --version (exit)": lambda run: time_exit([PKTCHAIN, "--version"], env),
                "pipe write: first frame on dst": lambda run: time_write(lab, far, env, run),
                "pipe read: first frame on stdout": lambda run: time_read(lab, env, run),
                "pipe read | pipe write: on dst": lambda run: time_chain(lab, far, env, run),
                **{
                    f"fn {kind}: first frame on stdout": (
                        lambda run, kind=kind: time_fn(env, run, kind)
                    )
                    for kind in FN_SETTINGS
                },
                "read | fn | fn | write: on dst": lambda run: time_fn_chain(lab, far, env, run),
            }
            for name, measure in measures.items():
                measure("warm-up")  # fills the bytecode cache; not counted
                figures[name] = [measure(f"{name[:6]}{n}") for n in range(args.runs)]
            far.sock.close()
    cache_note = "off (as the environment is)" if args.no_bytecode_cache else "on"
    print(f"pktchain pipe start-up, {args.runs} runs each, bytecode cache {cache_note}")
    print(f"{'figure':40} {'median ms':>10} {'max ms':>8}")
    for name, values in figures.items():
        print(f"{name:40} {statistics.median(values):10.1f} {max(values):8.1f}")
    chain = statistics.median(figures["pipe read | pipe write: on dst"])
    print(f"goal: first frame forwarded within 100 ms of exec: read | write median {chain:.1f} ms")
    slowest = max(
        statistics.median(figures[f"fn {kind}: first frame on stdout"]) for kind in FN_SETTINGS
    )
    print(f"goal: the same for pktchain fn: slowest median {slowest:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
