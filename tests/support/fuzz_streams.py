"""Fuzz campaigns of the ports that take datagrams and streams rather than frames.

- `underlay`: VXLAN-GPE / NSH datagrams (UDP 4790) to a node of a two-node
  cluster, from its peer's address and from a stranger's; the node's own
  ledger must hold (datagrams received = hellos + drops + frames its peer
  ports received; on each port received = forwarded + drops).
- `tunnel`, `messenger`, `pipe`: see their functions below.

Each gives a `support.fuzz_campaigns.Report`, with the same checks where they
apply: the process is alive with no traceback in its log, everything sent is
accounted for, a legitimate exchange still works afterwards, and its RSS does
not grow while the campaign's first inputs are sent again.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pktchain.lab import Lab, LabHost, wait_until
from pktchain.node.dataplane.underlay import network_vni
from pktchain.node.process import NodeProcess, NodeProcessError
from support.datapath_fuzz import ledger_ports
from support.frame_fuzz import (
    Endpoints,
    Mutator,
    build_seeds,
    ip_seeds,
    keep_off,
    nsh_datagrams,
    nsh_inner,
)
from support.fuzz_campaigns import (
    NO_IPV6,
    RSS_SLACK_KIB,
    UNSECURED_SOURCE,
    MakeLab,
    Report,
    TcpFlow,
    drops_of,
    pin_neighbours,
    ping,
    rss_kib,
    tracebacks,
    unsilence,
)

WINDOW = 256
"""Datagrams sent and not yet counted by the node, at most."""
BATCH = 64


# -- the underlay -----------------------------------------------------------------

N1_UNDERLAY, N2_UNDERLAY, STRANGER = "10.250.0.1", "10.250.0.2", "10.250.0.99"
H1, H2 = "10.0.0.1", "10.0.0.2"
H1_MAC, H2_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


def underlay_ledger(underlay: dict[str, Any], ports: Sequence[dict[str, Any]]) -> list[str]:
    """What does not add up on a node's underlay: every datagram it read is a
    hello, a drop under a reason, or a frame one of its peer ports received."""
    drops = sum(
        count
        for reason, count in underlay["drops"].items()
        if reason not in ("rx-error", "hello-tx-error")
    )
    carried = sum(port["rx_packets"] for port in ports if port["kind"] == "underlay")
    accounted = underlay["hellos_received"] + drops + carried
    if underlay["rx_packets"] != accounted:
        return [
            f"underlay: read {underlay['rx_packets']} datagrams, accounted for {accounted} "
            f"(hellos {underlay['hellos_received']}, drops {drops}, frames {carried})"
        ]
    return []


@dataclass
class DatagramSource:
    label: str
    sock: socket.socket
    make: Callable[[], Mutator]
    mutator: Mutator = field(init=False)
    sent: int = 0
    refused: int = 0

    def __post_init__(self) -> None:
        self.mutator = self.make()

    def send(self, datagrams: Sequence[bytes], to: tuple[str, int]) -> None:
        for datagram in datagrams:
            try:
                self.sock.sendto(datagram, to)
            except OSError:
                self.refused += 1
                continue
            self.sent += 1


@dataclass
class UnderlayCampaign:
    """Two nodes of a cluster; datagrams to n1's underlay from n2's address and a stranger's."""

    lab: Lab
    node: NodeProcess
    peer: NodeProcess
    log: Path
    sources: list[DatagramSource]
    flow: TcpFlow
    pings: list[tuple[LabHost, str]]
    target: tuple[str, int] = (N1_UNDERLAY, 4790)

    def run(self, frames: int, *, samples: int = 10, replay: float = 0.2) -> Report:
        report = Report("underlay")
        node = self.node
        report.rss_before = rss_kib(node.pid)
        start = node.counters()["underlay"]
        base = start["rx_packets"] + start["rx_kernel_drops"]
        started = time.monotonic()
        self._send(frames, [s.mutator for s in self.sources], samples, report.rss_samples, base)
        report.replayed = max(BATCH, int(frames * replay))
        report.replay_samples.append(rss_kib(node.pid))
        again = [source.make() for source in self.sources]
        self._send(report.replayed, again, samples, report.replay_samples, base)
        sent = sum(source.sent for source in self.sources)
        read = self._wait(base, sent, 0, time.monotonic() + 60)
        report.seconds = time.monotonic() - started
        report.frames = sent
        report.delivered = read
        report.rss_after = rss_kib(node.pid)
        report.problems = self.check(report, start)
        for source in self.sources:
            made = ", ".join(f"{how} {n:,}" for how, n in sorted(source.mutator.counts.items()))
            report.notes.append(f"{source.label}: {made}")
        return report

    def _send(
        self,
        frames: int,
        mutators: Sequence[Mutator],
        samples: int,
        rss: list[int],
        base: int,
    ) -> None:
        every = max(BATCH, frames // samples)
        next_sample = every
        total = 0
        turn = 0
        deadline = time.monotonic() + 3600
        while total < frames:
            # Three batches from the peer's address for one from the stranger's.
            index = 0 if turn % 4 else 1
            turn += 1
            batch = mutators[index].frames(min(BATCH, frames - total))
            self.sources[index].send(batch, self.target)
            total += len(batch)
            self._wait(base, sum(s.sent for s in self.sources), WINDOW, deadline)
            if total >= next_sample:
                rss.append(rss_kib(self.node.pid))
                next_sample += every

    def _wait(self, base: int, sent: int, window: int, deadline: float) -> int:
        """Wait until n1 has read (or the kernel dropped) all but `window` of
        `sent`; returns how many it has. The peer's own datagrams (hellos,
        frames of its hosts) count too: the wait is a pace, not a check."""
        delay = 0.0002
        while True:
            underlay = self.node.counters()["underlay"]
            read = underlay["rx_packets"] + underlay["rx_kernel_drops"] - base
            if read >= sent - window or time.monotonic() > deadline:
                return read
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def check(self, report: Report, start: dict[str, Any]) -> list[str]:
        problems = []
        for log in (self.log, self.log.with_name("n2-node.log")):
            for line in tracebacks(log):
                problems.append(f"{log.name} has a traceback: {line}")
        status = self.node.status()
        underlay = status["cluster"]["peers"]
        sent = sum(source.sent for source in self.sources)
        kernel = underlay["rx_kernel_drops"] - start["rx_kernel_drops"]
        if kernel:
            problems.append(f"the kernel dropped {kernel} datagrams on the underlay's socket")
        if report.delivered < sent:
            problems.append(f"sent {sent:,} datagrams, n1 read {report.delivered:,}")
        problems += underlay_ledger(underlay, status["ports"])
        problems += ledger_ports(status["ports"])
        report.drops = drops_of(status["ports"]) + _counter(underlay["drops"])
        report.notes.append(
            f"n1 read {report.delivered - sent:,} datagrams more from its peer itself "
            f"(hellos {underlay['hellos_received'] - start['hellos_received']:,} in all)"
        )
        for source in self.sources:
            if source.refused:
                report.notes.append(f"{source.label}: {source.refused} datagrams refused")
        if not self.peer.counters()["ok"]:
            problems.append("the peer node does not answer")
        problem = self.flow.exchange(b"after")
        if problem is not None:
            problems.append(problem)
        for host, address in self.pings:
            problem = ping(host, address)
            if problem is not None:
                problems.append(problem)
        peers = underlay["peers"]
        if not all(peer["alive"] for peer in peers.values()):
            problems.append(f"n1 takes its peer for dead: {peers}")
        growth = report.replay_growth()
        if growth > RSS_SLACK_KIB:
            problems.append(
                f"the node's RSS grew by {growth} KiB while {report.replayed:,} datagrams were "
                f"sent again (samples {report.replay_samples})"
            )
        return problems


def _counter(mapping: dict[str, int]) -> Counter[str]:
    return Counter(mapping)


@contextlib.contextmanager
def underlay_campaign(make_lab: MakeLab, work: Path, seed: int) -> Iterator[UnderlayCampaign]:
    """n1 and n2, each with one host (h1, h2); the datagrams go to n1's underlay."""

    def host(node: str, mac: str, address: str) -> dict[str, Any]:
        eth0 = {"attach": "node", "network": "default", "mac": mac, "addresses": [address]}
        return {"node": node, "sysctls": dict(NO_IPV6), "interfaces": {"eth0": eth0}}

    topology: dict[str, Any] = {
        "lab": "fzu",
        "nodes": {"n1": {}, "n2": {}},
        "hosts": {"h1": host("n1", H1_MAC, f"{H1}/24"), "h2": host("n2", H2_MAC, f"{H2}/24")},
    }
    lab = make_lab(topology)
    path = work / "cluster.yaml"
    path.write_text(yaml.safe_dump(topology, sort_keys=False))
    etcd = lab.topology.etcd.client_url if lab.topology.etcd else None
    nodes: dict[str, NodeProcess] = {}
    try:
        for name in ("n1", "n2"):
            nodes[name] = NodeProcess(
                f"{lab.name}-{name}",
                topology=path,
                lab_name=lab.name,
                node=name,
                etcd=etcd,
                log_path=work / f"{name}-node.log",
            )
            nodes[name].start(timeout=30)
        wait_until(
            lambda: all(
                len(node.status()["cluster"]["peers"]["peers"]) == 1 for node in nodes.values()
            ),
            timeout=20,
            what="each node seeing the other",
        )
        n2 = lab.node("n2")
        n2.run(["ip", "addr", "add", f"{STRANGER}/24", "dev", "ul0"], check=True)
        peer_sock = n2.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer_sock.bind((N2_UNDERLAY, 0))
        stranger_sock = n2.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger_sock.bind((STRANGER, 0))
        # Inner frames from a station behind n2 to h1, in the network both join.
        ends = Endpoints("02:00:00:00:0f:22", H1_MAC, UNSECURED_SOURCE, H1, "fd00::22", "fd00::1")
        vni = network_vni("default")
        # The peer is trusted: what it sends has passed its ports' security.
        # Its frames do not pose as the legitimate hosts either, then.
        inner = keep_off((H1_MAC, H2_MAC), ends.src_mac, at=nsh_inner)
        sources = [
            DatagramSource(
                f"{N2_UNDERLAY} (the peer's address)",
                peer_sock,
                lambda: Mutator(nsh_datagrams(ends, vni), seed, max_size=9000, fit=inner),
            ),
            DatagramSource(
                f"{STRANGER} (a stranger's)",
                stranger_sock,
                lambda: Mutator(nsh_datagrams(ends, vni), seed + 1, max_size=9000, fit=inner),
            ),
        ]
        pin_neighbours(((lab.host("h1"), H2, H2_MAC), (lab.host("h2"), H1, H1_MAC)))
        flow = TcpFlow(lab.host("h1"), lab.host("h2"), H2, 7000)
        wait_until(
            lambda: ping(lab.host("h1"), H2) is None, timeout=15, what="h1 pinging h2 across nodes"
        )
        flow.open()
        try:
            yield UnderlayCampaign(
                lab,
                nodes["n1"],
                nodes["n2"],
                work / "n1-node.log",
                sources,
                flow,
                [(lab.host("h1"), H2)],
            )
        finally:
            for source in sources:
                source.sock.close()
            flow.close()
    finally:
        for node in nodes.values():
            try:
                node.stop()
            except NodeProcessError:
                node.kill()


# -- the tunnel -------------------------------------------------------------------

TUNNEL_KEY = b"the fuzz campaign's tunnel key"
TCP_PORT, UDP_PORT = 55556, 55557
SERVER_UNDERLAY = "10.9.0.1"
TCP_TUN, UDP_TUN = ("192.168.77.1", "192.168.77.2"), ("192.168.78.1", "192.168.78.2")
"""(server, legitimate client) inner addresses of the TCP and the UDP tunnel."""
FUZZ_INNER = "192.168.77.9"
MTU = 1500
_HEADER = 2  # the frame header: a 16-bit big-endian length (docs/tunnel.md)
_QUIET_CLOSES = ("peer-closed", "peer-closed-mid-frame", "zero-length-frame", "frame-too-long")


def decode_stream(data: bytes, mtu: int) -> tuple[int, str]:
    """How the tunnel must read `data`, the bytes of one connection after its
    handshake: the frames it delivers, and why it closes (the stream then
    ends). An independent reading of docs/tunnel.md's framing."""
    at = frames = 0
    while len(data) - at >= _HEADER:
        length = int.from_bytes(data[at : at + _HEADER], "big")
        if length == 0:
            return frames, "zero-length-frame"
        if length > mtu:
            return frames, "frame-too-long"
        if len(data) - at - _HEADER < length:
            break
        at += _HEADER + length
        frames += 1
    return frames, "peer-closed" if at == len(data) else "peer-closed-mid-frame"


def make_stream(rng: random.Random, mutator: Mutator, mtu: int) -> bytes:
    """One connection's frames: mutated packets, a length that lies now and
    then, and an end (a clean close, a cut in a frame, a header of 0 or more
    than the MTU)."""
    parts = []
    for _ in range(rng.randint(1, 300)):
        packet = mutator.one()
        length = len(packet)
        if rng.random() < 0.01:
            length = max(0, min(0xFFFF, length + rng.choice((-3, -1, 1, 2, 40))))
        parts.append(length.to_bytes(_HEADER, "big") + packet)
    ending = rng.random()
    if ending < 0.1:
        parts.append(b"\x00\x00")
    elif ending < 0.2:
        parts.append(rng.randint(mtu + 1, 0xFFFF).to_bytes(_HEADER, "big"))
    elif ending < 0.3:
        parts.append(
            rng.randint(1, mtu).to_bytes(_HEADER, "big") + rng.randbytes(rng.randint(0, 20))
        )
    return b"".join(parts)


def udp_drops_of(pid: int, port: int) -> tuple[int, int]:
    """(bytes waiting, datagrams dropped) of the UDP socket bound to `port` in
    the namespace of process `pid` (/proc/PID/net/udp)."""
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            waiting = int(fields[4].split(":")[1], 16)
            return waiting, int(fields[-1])
    return 0, 0


class TunnelProcess:
    """A ``pktchain -v tunnel ...`` process in a lab host, its log and its counters."""

    def __init__(self, host: LabHost, args: list[str], log: Path, interface: str) -> None:
        import subprocess
        import sys

        self.host = host
        self.log = log
        with log.open("ab") as out:
            argv = [sys.executable, "-m", "pktchain", "-v", "tunnel", *args]
            self.process = host.popen(argv, stdout=out, stderr=subprocess.STDOUT)
        wait_until(
            lambda: interface in host.run(["ip", "-o", "link"]).stdout or self.exited(),
            timeout=20,
            what=f"{host.name}: the tunnel's interface {interface}",
        )
        if self.exited():
            raise RuntimeError(f"the tunnel exited at once:\n{self.text()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> bool:
        return self.process.poll() is not None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def counters(self) -> dict[str, Any]:
        """Every end's counters, as the process prints them on SIGUSR1."""
        import json
        import signal

        marker = "pktchain tunnel: counters "
        before = self.text().count(marker)
        self.process.send_signal(signal.SIGUSR1)
        wait_until(lambda: self.text().count(marker) > before, timeout=10, what="counters")
        line = [ln for ln in self.text().splitlines() if marker in ln][-1]
        counters: dict[str, Any] = json.loads(line.split(marker, 1)[1])
        return counters

    def stop(self) -> int:
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)


def _end(counters: dict[str, Any], kind: str) -> dict[str, Any]:
    """The counters of the process's one end of `kind` ("server" or "client")."""
    return next(value for name, value in counters.items() if name.startswith(kind))


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {
        key: after.get(key, 0) - before.get(key, 0)
        for key in after
        if after.get(key, 0) != before.get(key, 0)
    }


@dataclass
class TunnelCampaign:
    """A TCP tunnel server (with a key) and a UDP one (without), each with a
    legitimate client; a third host connects to both and sends mutated packets."""

    fuzz: LabHost
    servers: dict[str, TunnelProcess]
    clients: dict[str, TunnelProcess]
    silenced: list[LabHost]
    seed: int
    make: Callable[[int], Mutator]
    expected_frames: int = 0
    expected_closes: dict[str, int] = field(default_factory=dict)
    handshakes: int = 0
    connections: int = 0
    datagrams: int = 0
    keepalives_sent: int = 0
    oversized_sent: int = 0

    def run(self, frames: int, *, samples: int = 10, replay: float = 0.2) -> Report:
        report = Report("tunnel")
        tcp, udp = self.servers["tcp"], self.servers["udp"]
        before = {kind: _end(server.counters(), "server") for kind, server in self.servers.items()}
        udp_dropped_before = udp_drops_of(udp.pid, UDP_PORT)[1]
        report.rss_before = rss_kib(tcp.pid) + rss_kib(udp.pid)
        started = time.monotonic()
        half = frames // 2
        self._tcp(half, self.seed, samples, report.rss_samples)
        self._udp(frames - half, self.seed + 1, samples, report.rss_samples)
        report.replayed = max(BATCH, int(frames * replay))
        report.replay_samples.append(rss_kib(tcp.pid) + rss_kib(udp.pid))
        self._tcp(report.replayed // 2, self.seed, samples, report.replay_samples)
        self._udp(
            report.replayed - report.replayed // 2, self.seed + 1, samples, report.replay_samples
        )
        wait_until(
            lambda: udp_drops_of(udp.pid, UDP_PORT)[0] == 0,
            timeout=30,
            what="the UDP tunnel reading all",
        )
        report.seconds = time.monotonic() - started
        report.rss_after = rss_kib(tcp.pid) + rss_kib(udp.pid)
        after = {kind: _end(server.counters(), "server") for kind, server in self.servers.items()}
        udp_dropped = udp_drops_of(udp.pid, UDP_PORT)[1] - udp_dropped_before
        report.frames = self.expected_frames + self.datagrams
        report.problems = self.check(report, before, after, udp_dropped)
        return report

    def _tcp(self, frames: int, seed: int, samples: int, rss: list[int]) -> None:
        """Connections to the TCP server until `frames` frames have gone: most
        authenticate and send a stream of frames; one in ten fuzzes the handshake."""
        rng = random.Random(seed)
        mutator = self.make(seed)
        sent = 0
        every = max(1, frames // samples)
        next_sample = every
        while sent < frames:
            if rng.random() < 0.1:
                self._bad_handshake(rng)
                continue
            stream = make_stream(rng, mutator, MTU)
            count, reason = decode_stream(stream, MTU)
            self._connection(stream, rng)
            self.expected_frames += count
            self.expected_closes[reason] = self.expected_closes.get(reason, 0) + 1
            sent += count + 1
            if sent >= next_sample:
                rss.append(rss_kib(self.servers["tcp"].pid) + rss_kib(self.servers["udp"].pid))
                next_sample += every

    def _open(self) -> socket.socket:
        conn = self.fuzz.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.settimeout(20)
        conn.connect((SERVER_UNDERLAY, TCP_PORT))
        self.connections += 1
        return conn

    def _connection(self, stream: bytes, rng: random.Random) -> None:
        from pktchain.tunnel.auth import PROOF_SIZE, Handshake, Role

        with self._open() as conn:
            me = Handshake(
                Role.CLIENT, TUNNEL_KEY, (socket.inet_aton(FUZZ_INNER),), nonce=rng.randbytes(32)
            )
            conn.sendall(me.start())
            hello = _recv_exactly(conn, 39)
            hello += _recv_exactly(conn, 16 * hello[38])
            conn.sendall(me.receive(hello).send)
            if not me.receive(_recv_exactly(conn, PROOF_SIZE)).done:
                raise RuntimeError("the tunnel server's proof did not verify")
            with contextlib.suppress(OSError):  # the server may close first, on a bad frame
                conn.sendall(stream)
                conn.shutdown(socket.SHUT_WR)
            _wait_closed(conn)

    def _bad_handshake(self, rng: random.Random) -> None:
        """A hello mutated (bit flips, cut short, wrong role or version, too many
        addresses, bytes that are no hello): the server must close, counting why."""
        from pktchain.tunnel.auth import Handshake, Role

        hello = bytearray(Handshake(Role.CLIENT, TUNNEL_KEY, nonce=rng.randbytes(32)).start())
        how = rng.randrange(6)
        if how == 0:
            for _ in range(rng.randint(1, 4)):
                hello[rng.randrange(len(hello))] ^= 1 << rng.randrange(8)
        elif how == 1:
            hello = hello[: rng.randrange(len(hello))]
        elif how == 2:
            hello[5] = rng.choice((0, 2, 3, 255))  # role
        elif how == 3:
            hello[4] = rng.choice((0, 2, 255))  # version
        elif how == 4:
            hello[38] = rng.randint(17, 255)  # address count
            hello += rng.randbytes(16 * rng.randint(0, 3))
        else:
            hello = bytearray(rng.randbytes(rng.randint(1, 80)))
        with self._open() as conn:
            with contextlib.suppress(OSError):
                conn.sendall(hello)
                # A hello that is whole and right gets the server's; then a wrong proof.
                conn.sendall(rng.randbytes(32))
                conn.shutdown(socket.SHUT_WR)
            _wait_closed(conn)
        self.handshakes += 1

    def _udp(self, datagrams: int, seed: int, samples: int, rss: list[int]) -> None:
        udp = self.servers["udp"]
        mutator = self.make(seed)
        with self.fuzz.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            every = max(BATCH, datagrams // samples)
            next_sample = every
            done = 0
            while done < datagrams:
                for made in mutator.frames(min(BATCH, datagrams - done)):
                    packet = made
                    if done % 97 == 0:  # now and then longer than the MTU
                        packet += bytes(MTU + 1 + done % 100 - len(packet))
                    sock.sendto(packet, (SERVER_UNDERLAY, UDP_PORT))
                    self.keepalives_sent += not packet
                    self.oversized_sent += len(packet) > MTU
                    done += 1
                wait_until(
                    lambda: udp_drops_of(udp.pid, UDP_PORT)[0] < 32 * 1024,
                    timeout=30,
                    what="the UDP tunnel reading",
                )
                if done >= next_sample:
                    rss.append(rss_kib(self.servers["tcp"].pid) + rss_kib(udp.pid))
                    next_sample += every
            self.datagrams += done

    def check(
        self,
        report: Report,
        before: dict[str, dict[str, Any]],
        after: dict[str, dict[str, Any]],
        udp_dropped: int,
    ) -> list[str]:
        problems: list[str] = []
        for kind, server in self.servers.items():
            if server.exited():
                problems.append(f"the {kind} tunnel server exited ({server.process.returncode})")
            for line in tracebacks(server.log):
                problems.append(f"the {kind} tunnel's log has a traceback: {line}")
        tcp_counts = _delta(after["tcp"]["counts"], before["tcp"]["counts"])
        tcp_drops = _delta(after["tcp"]["drops"], before["tcp"]["drops"])
        tcp_closes = _delta(after["tcp"]["closes"], before["tcp"]["closes"])
        received = tcp_counts.get("wire_rx_packets", 0)
        if received != self.expected_frames:
            problems.append(
                f"TCP: the server read {received:,} frames, "
                f"the streams held {self.expected_frames:,}"
            )
        delivered = _handled(tcp_counts, tcp_drops)
        if delivered != received:
            problems.append(
                f"TCP: {received:,} frames read, {delivered:,} written, relayed or dropped "
                f"({tcp_counts}, {tcp_drops})"
            )
        framed = {reason: tcp_closes.get(reason, 0) for reason in _QUIET_CLOSES}
        expected = {reason: self.expected_closes.get(reason, 0) for reason in _QUIET_CLOSES}
        if framed != expected:
            problems.append(f"TCP: connections closed {framed}, the streams called for {expected}")
        closed = sum(tcp_closes.values())
        if closed != self.connections or tcp_counts.get("connections", 0) != self.connections:
            problems.append(
                f"TCP: {self.connections} connections made, "
                f"{tcp_counts.get('connections', 0)} accepted, {closed} closed ({tcp_closes})"
            )
        udp_counts = _delta(after["udp"]["counts"], before["udp"]["counts"])
        udp_drops = _delta(after["udp"]["drops"], before["udp"]["drops"])
        legit = udp_counts.get("keepalives", 0) - self.keepalives_sent
        accounted = (
            udp_counts.get("wire_rx_packets", 0)
            + udp_counts.get("keepalives", 0)
            + udp_drops.get("oversized", 0)
            + udp_drops.get("too-many-peers", 0)
            + udp_dropped
        )
        if accounted - legit != self.datagrams or not 0 <= legit <= report.seconds / 10 + 2:
            problems.append(
                f"UDP: {self.datagrams:,} datagrams sent, {accounted - legit:,} accounted for "
                f"({udp_counts}, {udp_drops}, {udp_dropped} dropped by the kernel)"
            )
        udp_in = udp_counts.get("wire_rx_packets", 0)
        udp_out = _handled(udp_counts, udp_drops)
        if udp_in != udp_out:
            problems.append(
                f"UDP: {udp_in:,} packets read, {udp_out:,} written, relayed or dropped"
            )
        report.delivered = received + udp_in
        for name, counts in (("tcp", tcp_drops), ("udp", udp_drops)):
            for reason, count in counts.items():
                report.drops[f"{name}:{reason}"] += count
        for reason, count in tcp_closes.items():
            report.drops[f"tcp-close:{reason}"] += count
        report.notes.append(
            f"TCP: {self.connections:,} connections ({self.handshakes:,} with a mutated hello), "
            f"{self.expected_frames:,} frames; UDP: {self.datagrams:,} datagrams "
            f"({self.keepalives_sent:,} empty, {self.oversized_sent:,} over the MTU)"
        )
        for host in self.silenced:
            unsilence(host)
        for kind, (server_ip, _client_ip) in (("tcp", TCP_TUN), ("udp", UDP_TUN)):
            problem = ping(self.clients[kind].host, server_ip)
            if problem is not None:
                problems.append(f"{kind} tunnel: {problem}")
        growth = report.replay_growth()
        if growth > RSS_SLACK_KIB:
            problems.append(
                f"the tunnels' RSS grew by {growth} KiB while {report.replayed:,} frames were "
                f"sent again (samples {report.replay_samples})"
            )
        return problems


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def _wait_closed(conn: socket.socket) -> None:
    """Read until the peer closes (what it sends meanwhile is dropped)."""
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


@contextlib.contextmanager
def tunnel_campaign(make_lab: MakeLab, work: Path, seed: int) -> Iterator[TunnelCampaign]:
    topology = {
        "lab": "fzt",
        "bridges": ["lan"],
        "hosts": {
            name: {
                "sysctls": dict(NO_IPV6),
                "interfaces": {"eth0": {"attach": "lan", "addresses": [f"10.9.0.{n}/24"]}},
            }
            for n, name in enumerate(("srv", "cli", "fz"), start=1)
        },
    }
    lab = make_lab(topology)
    srv, cli, fz = lab.host("srv"), lab.host("cli"), lab.host("fz")
    key = work / "tunnel.key"
    key.write_bytes(TUNNEL_KEY)
    key.chmod(0o600)
    processes: list[TunnelProcess] = []
    try:
        tcp = TunnelProcess(
            srv,
            [
                "-m",
                "server",
                "-p",
                "tunt0",
                "-s",
                TCP_TUN[0],
                "-i",
                str(TCP_PORT),
                "--key-file",
                str(key),
            ],
            work / "tunnel-tcp.log",
            "tunt0",
        )
        processes.append(tcp)
        udp = TunnelProcess(
            srv,
            [
                "-m",
                "server",
                "-p",
                "tunu0",
                "-s",
                UDP_TUN[0],
                "-i",
                str(UDP_PORT),
                "--transport",
                "udp",
                "--no-auth",
            ],
            work / "tunnel-udp.log",
            "tunu0",
        )
        processes.append(udp)
        srv.wait_listening(TCP_PORT, timeout=10)
        clients = {
            "tcp": TunnelProcess(
                cli,
                [
                    "-m",
                    "client",
                    "-n",
                    "tunt1",
                    "-c",
                    TCP_TUN[1],
                    "-r",
                    SERVER_UNDERLAY,
                    "-o",
                    str(TCP_PORT),
                    "--key-file",
                    str(key),
                ],
                work / "client-tcp.log",
                "tunt1",
            ),
            "udp": TunnelProcess(
                cli,
                [
                    "-m",
                    "client",
                    "-n",
                    "tunu1",
                    "-c",
                    UDP_TUN[1],
                    "-r",
                    SERVER_UNDERLAY,
                    "-o",
                    str(UDP_PORT),
                    "--transport",
                    "udp",
                    "--no-auth",
                ],
                work / "client-udp.log",
                "tunu1",
            ),
        }
        processes += clients.values()
        for kind, (server_ip, _client_ip) in (("tcp", TCP_TUN), ("udp", UDP_TUN)):
            wait_until(
                lambda server_ip=server_ip: ping(cli, server_ip) is None,  # type: ignore[misc]
                timeout=20,
                what=f"the {kind} tunnel's client pinging its server",
            )
        # While the campaign runs, the kernels at both ends of the tunnels send
        # nothing into them: each end counts only what the campaign sent.
        silenced = [srv, cli]
        for host in silenced:
            host.run(["nft", "-f", "-"], input=_silence_interfaces("tun"), check=True)
        seeds = ip_seeds(
            Endpoints(
                src_ip=FUZZ_INNER, dst_ip=TCP_TUN[0], src_ip6="fd00:77::9", dst_ip6="fd00:77::1"
            )
        )
        seeds += ip_seeds(
            Endpoints(
                src_ip=FUZZ_INNER, dst_ip=TCP_TUN[1], src_ip6="fd00:77::9", dst_ip6="fd00:77::2"
            )
        )
        yield TunnelCampaign(
            fz,
            {"tcp": tcp, "udp": udp},
            clients,
            silenced,
            seed,
            lambda s: Mutator(seeds, s),
        )
    finally:
        for process in processes:
            process.stop()


def _silence_interfaces(prefix: str) -> str:
    return (
        "table inet fuzz-silence {\n"
        "    chain output { type filter hook output priority 0;"
        f' oifname "{prefix}*" drop; }}\n'
        "}\n"
    )


# -- the messenger ----------------------------------------------------------------

MESSENGER_SECRET = b"the fuzz campaign's messenger secret"
_ERROR_TYPES = frozenset(
    (
        "Unauthenticated",
        "Replayed",
        "MalformedMessage",
        "UnknownOp",
        "InvalidArgument",
        "Rejected",
        "MessageTooLarge",
        "Busy",
        "InternalError",
    )
)
_ODD_VALUES: tuple[Any, ...] = (
    None,
    "",
    -1,
    0,
    65536,
    2**64,
    True,
    1.5,
    1e308,
    "x" * 300,
    {"a": 1},
    [],
    "ff:ff:ff:ff:ff:ff",
    "00:00:00:00:00:00",
    "999.1.1.1",
    "10.0.0.0/33",
    "\u00e9\u0000",
    "10.0.0.1",
)


@dataclass
class Request:
    """One framed request of a campaign, and whether it can be authentic."""

    frame: bytes
    authentic: bool
    """False: no reply to it may say ok."""


def messenger_requests(
    rng: random.Random, now: float, count: int, serial: list[int]
) -> list[Request]:
    """`count` requests: authentic ones of the operations that leave the
    router's interfaces alone, authentic ones with an odd argument or member,
    authentic ones that are stale or replayed, and ones whose bytes were
    changed after signing, that have no MAC or a wrong one, or that are no
    JSON object at all."""
    from pktchain.messenger.client import make_request
    from pktchain.messenger.wire import encode_frame, sign

    out: list[Request] = []
    nonces: list[str] = []
    for _ in range(count):
        serial[0] += 1
        number = serial[0]
        nonce = rng.randbytes(16).hex()
        op, args = _messenger_op(rng)
        draw = rng.random()
        authentic = True
        if draw < 0.3:
            message = make_request(
                MESSENGER_SECRET, op, args, request_id=str(number), nonce=nonce, sent=now
            )
        elif draw < 0.5:
            message = make_request(None, op, args, request_id=str(number), nonce=nonce, sent=now)
            _odd(rng, message)
            try:
                message["mac"] = sign(MESSENGER_SECRET, message)
            except ValueError:
                message["mac"] = "0" * 64  # not encodable: cannot be signed
                authentic = False
        elif draw < 0.55:
            stale = now + rng.choice((-100.0, -31.0, 31.0, 1e9))
            message = make_request(
                MESSENGER_SECRET, op, args, request_id=str(number), nonce=nonce, sent=stale
            )
        elif draw < 0.6 and nonces:
            message = make_request(
                MESSENGER_SECRET,
                op,
                args,
                request_id=str(number),
                nonce=rng.choice(nonces),
                sent=now,
            )
        else:
            message = make_request(
                MESSENGER_SECRET, op, args, request_id=str(number), nonce=nonce, sent=now
            )
            authentic = False
        nonces.append(message["nonce"] if isinstance(message.get("nonce"), str) else nonce)
        try:
            body = json.dumps(message, separators=(",", ":")).encode()
        except ValueError:
            body = b"{}"
        if not authentic:
            spoiled = _spoil(rng, body)
            # Bytes changed after signing may still say the same thing (a
            # float's last digit that rounds to the same number): then the
            # MAC holds, as it should.
            authentic = spoiled == body or _same_message(spoiled, message)
            body = spoiled
        out.append(Request(encode_frame(body), authentic))
    return out


def _same_message(body: bytes, message: dict[str, Any]) -> bool:
    """Whether `body` is a JSON object equal to `message` (no key twice)."""
    try:
        pairs = json.loads(body, object_pairs_hook=lambda items: items)
    except (ValueError, RecursionError):
        return False
    if not isinstance(pairs, list) or len({key for key, _value in pairs}) != len(pairs):
        return False
    try:
        return bool(json.loads(body) == message)
    except (ValueError, RecursionError):
        return False


def _messenger_op(rng: random.Random) -> tuple[str, dict[str, Any]]:
    mac = "02:" + ":".join(f"{b:02x}" for b in rng.randbytes(5))
    # Hosts the controller announces: not the lab's own (10.0.0.1, .10), whose
    # binding to another MAC would, as asked, send their traffic elsewhere.
    ip = f"10.0.0.{rng.randint(100, 250)}"
    choice = rng.randrange(8)
    if choice == 0:
        return "host_nic_add", {"mac": mac, "ip": ip, "network_id": "net-fuzz"}
    if choice == 1:
        return "host_nic_remove", {"mac": mac} if rng.random() < 0.5 else {"ip": ip}
    if choice == 2:
        proto = rng.choice(("tcp", "udp"))
        # Ports below 1024: never a port the NAT gave the legitimate flow.
        return "port_forward_add", {
            "proto": proto,
            "external_port": rng.randint(1, 1023),
            "inside_ip": ip,
            "inside_port": rng.randint(1, 65535),
        }
    if choice == 3:
        return "port_forward_remove", {
            "proto": rng.choice(("tcp", "udp")),
            "external_port": rng.randint(1, 1023),
        }
    if choice == 4:
        return "hosts", {}
    if choice == 5:
        return "vrrp", {}
    if choice == 6:
        return "router_nic_remove", {"name": "nosuch" + str(rng.randint(0, 9))}
    return "ping", {}


def _odd(rng: random.Random, message: dict[str, Any]) -> None:
    """Make one member or argument of `message` odd: a wrong type, a boundary
    value, an unknown name, or missing."""
    how = rng.randrange(5)
    value = rng.choice(_ODD_VALUES)
    if how == 0 and message["args"]:
        message["args"][rng.choice(sorted(message["args"]))] = value
    elif how == 1:
        message["args"]["surplus"] = value
    elif how == 2:
        message[rng.choice(("id", "op", "nonce", "time", "args"))] = value
    elif how == 3:
        del message[rng.choice(("id", "op", "nonce", "time", "args"))]
    else:
        message["surplus"] = value


def _spoil(rng: random.Random, body: bytes) -> bytes:
    """Change a signed body so that it cannot pass: flip bits, drop or add the
    MAC, cut it, or put something that is no JSON object instead."""
    how = rng.randrange(7)
    changed = bytearray(body)
    if how == 0:
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(changed))
            changed[at] ^= 1 << rng.randrange(8)
        return bytes(changed)
    if how == 1:
        message = json.loads(body)
        message.pop("mac", None)
        return json.dumps(message).encode()
    if how == 2:
        message = json.loads(body)
        message["mac"] = rng.randbytes(32).hex()
        return json.dumps(message).encode()
    if how == 3:
        return body[: rng.randrange(len(body))]
    if how == 4:
        return rng.randbytes(rng.randint(0, 200))
    if how == 5:
        return rng.choice(
            (
                b"[]",
                b"1",
                b'"x"',
                b"null",
                b'{"a":1,"a":2}',
                b"NaN",
                b'{"t":Infinity}',
                b"\xff\xfe{}",
            )
        )
    depth = rng.randint(1000, 30000)
    return b"[" * depth + b"]" * depth  # deeper than any parser's recursion


@dataclass
class MessengerCampaign:
    """A node with a router and its messenger; connections of mutated requests."""

    node: NodeProcess
    log: Path
    port: int
    flow: TcpFlow
    pings: list[tuple[LabHost, str]]
    seed: int
    connections: int = 0
    requests: int = 0
    replies: int = 0
    too_large: int = 0
    problems: list[str] = field(default_factory=list)

    def run(self, frames: int, *, samples: int = 10, replay: float = 0.2) -> Report:
        report = Report("messenger")
        before = self.node.status()["messenger_counters"]
        report.rss_before = rss_kib(self.node.pid)
        started = time.monotonic()
        self._campaign(frames, self.seed, samples, report.rss_samples)
        report.replayed = max(BATCH, int(frames * replay))
        report.replay_samples.append(rss_kib(self.node.pid))
        self._campaign(report.replayed, self.seed, samples, report.replay_samples)
        report.seconds = time.monotonic() - started
        report.rss_after = rss_kib(self.node.pid)
        report.frames = self.requests
        report.delivered = self.replies
        after = self.node.status()["messenger_counters"]
        report.problems = self.check(report, before, after)
        return report

    def _campaign(self, requests: int, seed: int, samples: int, rss: list[int]) -> None:
        rng = random.Random(seed)
        serial = [0]
        every = max(1, requests // samples)
        next_sample = every
        done = 0
        while done < requests:
            batch = messenger_requests(
                rng, time.time(), min(rng.randint(1, 200), requests - done), serial
            )
            ending = rng.random()
            tail = b""
            too_large = ending < 0.1
            if too_large:
                tail = rng.randint(64 * 1024 + 1, 2**32 - 1).to_bytes(4, "big")
            elif ending < 0.2:
                tail = rng.randint(1, 64 * 1024).to_bytes(4, "big") + rng.randbytes(
                    rng.randint(0, 30)
                )
            self._connection(batch, tail, too_large)
            done += len(batch)
            if done >= next_sample:
                rss.append(rss_kib(self.node.pid))
                next_sample += every

    def _connection(self, batch: list[Request], tail: bytes, too_large: bool) -> None:
        from pktchain.messenger.wire import verify

        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as conn:
            self.connections += 1
            data = b"".join(request.frame for request in batch) + tail
            with contextlib.suppress(OSError):
                conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            received = bytearray()
            with contextlib.suppress(OSError):
                while chunk := conn.recv(65536):
                    received += chunk
        self.requests += len(batch)
        replies = []
        at = 0
        while len(received) - at >= 4:
            length = int.from_bytes(received[at : at + 4], "big")
            replies.append(bytes(received[at + 4 : at + 4 + length]))
            at += 4 + length
        expected = len(batch) + too_large
        self.replies += len(replies)
        self.too_large += too_large
        if len(replies) != expected and len(self.problems) < 20:
            self.problems.append(
                f"a connection of {len(batch)} requests got {len(replies)} replies, "
                f"{expected} expected"
            )
        for request, body in zip(batch, replies, strict=False):
            reply = json.loads(body)
            if not verify(MESSENGER_SECRET, reply) and len(self.problems) < 20:
                self.problems.append(f"a reply's MAC does not verify: {body[:200]!r}")
            if reply["ok"] and not request.authentic and len(self.problems) < 20:
                self.problems.append(
                    f"a request that cannot be authentic got ok: {request.frame[:200]!r}"
                )
            if (
                not reply["ok"]
                and reply["error"]["type"] not in _ERROR_TYPES
                and len(self.problems) < 20
            ):
                self.problems.append(f"an unknown error type: {body[:200]!r}")

    def check(self, report: Report, before: dict[str, int], after: dict[str, int]) -> list[str]:
        problems = list(self.problems)
        for line in tracebacks(self.log):
            problems.append(f"the node's log has a traceback: {line}")
        delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
        if delta.get("requests", 0) != self.requests:
            problems.append(
                f"the messenger counted {delta.get('requests', 0):,} requests, "
                f"{self.requests:,} were sent"
            )
        replies = sum(count for key, count in delta.items() if key.startswith("replies."))
        if replies != self.replies:
            problems.append(f"the messenger counted {replies:,} replies, {self.replies:,} arrived")
        opened = delta.get("connections.opened", 0)
        closed = sum(count for key, count in delta.items() if key.startswith("connections.closed."))
        if opened != self.connections or closed != self.connections:
            problems.append(
                f"{self.connections} connections made, {opened} opened, {closed} closed"
            )
        for key, count in delta.items():
            if key.startswith(("replies.error.", "connections.closed.")) and count:
                report.drops[key] += count
        report.notes.append(
            f"{self.connections:,} connections; {delta.get('replies.ok', 0):,} requests applied; "
            f"{self.too_large:,} connections ended by a frame header over 64 KiB"
        )
        from pktchain.messenger.client import MessengerClient

        try:
            with MessengerClient("127.0.0.1", self.port, MESSENGER_SECRET) as client:
                client.call("ping")
                client.call("hosts")
        except (OSError, ValueError) as exc:
            problems.append(f"a legitimate messenger client fails: {exc!r}")
        problem = self.flow.exchange(b"after")
        if problem is not None:
            problems.append(problem)
        for host, address in self.pings:
            problem = ping(host, address)
            if problem is not None:
                problems.append(problem)
        growth = report.replay_growth()
        if growth > RSS_SLACK_KIB:
            problems.append(
                f"the node's RSS grew by {growth} KiB while {report.replayed:,} requests were "
                f"sent again (samples {report.replay_samples})"
            )
        return problems


@contextlib.contextmanager
def messenger_campaign(make_lab: MakeLab, work: Path, seed: int) -> Iterator[MessengerCampaign]:
    """The router campaign's lab, its node serving the messenger on loopback."""
    from support.fuzz_campaigns import INSIDE, OUTSIDE, ROUTER, ROUTER_IN, _host

    topology = {
        "lab": "fzm",
        "hosts": {
            "inside": _host(
                "inside",
                "02:00:00:00:01:0a",
                f"{INSIDE}/24",
                routes=[{"to": "default", "via": ROUTER_IN}],
            ),
            "outside": _host("outside", "02:00:00:00:02:0a", f"{OUTSIDE}/24"),
        },
    }
    router = work / "router.yaml"
    router.write_text(yaml.safe_dump(ROUTER, sort_keys=False))
    secret = work / "messenger.secret"
    secret.write_bytes(MESSENGER_SECRET)
    secret.chmod(0o600)
    lab = make_lab(topology)
    path = work / "topology.yaml"
    path.write_text(yaml.safe_dump(topology, sort_keys=False))
    log = work / "messenger-node.log"
    node = NodeProcess(
        f"fzm{os.getpid() % 10000}",
        topology=path,
        lab_name=lab.name,
        args=(
            "--router",
            str(router),
            "--messenger",
            "127.0.0.1:0",
            "--messenger-secret-file",
            str(secret),
        ),
        log_path=log,
    )
    node.start(timeout=30)
    try:
        port = int(node.status()["messenger"])
        flow = TcpFlow(lab.host("inside"), lab.host("outside"), OUTSIDE, 7000)
        wait_until(
            lambda: ping(lab.host("inside"), ROUTER_IN) is None,
            timeout=15,
            what="inside pings the router",
        )
        flow.open()
        try:
            yield MessengerCampaign(node, log, port, flow, [(lab.host("inside"), OUTSIDE)], seed)
        finally:
            flow.close()
    finally:
        try:
            node.stop()
        except NodeProcessError:
            node.kill()


# -- the pipes ---------------------------------------------------------------------

PCAP_MAX = 262144
"""The longest record a pcap stream may claim (docs/pipes.md)."""
FUNCTION_FILTERS: tuple[tuple[str, ...], ...] = (
    ("firewall", "default=accept"),
    ("flow-monitor",),
    ("rate-limiter", "rate_pps=5000"),
    ("l7-classifier",),
    ("mirror",),
    ("nat", "external_address=192.0.2.1", 'internal_networks=["10.9.0.0/24"]'),
)
"""`pktchain fn` command lines the streams go through, in turn."""
RUN = 50_000
"""Frames in one stream (one process)."""


def pcap_records(rng: random.Random, mutator: Mutator, count: int) -> list[bytes]:
    """`count` pcap records: mostly mutated frames, some shorter than an
    Ethernet header, some truncated captures (shorter than their frame)."""
    records = []
    for n in range(count):
        frame = mutator.one()
        draw = rng.random()
        caplen = wire = len(frame)
        if draw < 0.03:
            frame = frame[: rng.randrange(14)]
            caplen = wire = len(frame)
        elif draw < 0.06:
            wire = caplen + rng.randint(1, 1000)
        records.append(struct.pack("<IIII", n, rng.randrange(1_000_000), caplen, wire) + frame)
    return records


def pcap_ending(rng: random.Random, mutator: Mutator) -> tuple[bytes, int, bool]:
    """How a pcap stream ends: at a record's end; or inside a record (which the
    reader reports); or with a record claiming more than 262144 bytes, after
    which a pcap stream cannot be followed (exit status 1). Returns the bytes,
    the records they add, and whether the ending is fatal."""
    ending = rng.random()
    if ending < 0.05:
        claim = rng.randint(PCAP_MAX + 1, 2**32 - 1)
        return struct.pack("<IIII", 0, 0, claim, 100) + bytes(20), 0, True
    if ending < 0.1:
        frame = mutator.one()
        record = struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
        return record[: rng.randrange(1, len(record))], 1, False
    return b"", 0, False


def pcap_header(rng: random.Random) -> bytes:
    """A pcap file header, microsecond or nanosecond, little-endian, Ethernet."""
    magic = 0xA1B23C4D if rng.random() < 0.5 else 0xA1B2C3D4
    return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, PCAP_MAX, 1)


def ascii_lines(rng: random.Random, mutator: Mutator, count: int) -> list[bytes]:
    """`count` lines the reader must account for, frames or defects (not hex
    pairs, half a byte, shorter than an Ethernet header), each maybe after a
    blank or comment line (which are not counted), and now and then a line
    longer than 2 MiB (skipped up to its newline)."""
    lines = []
    for _ in range(count):
        frame = mutator.one()
        draw = rng.random()
        text = _ascii_line(rng, frame)
        if draw < 0.02:
            at = rng.randrange(1, len(text) + 1)
            text = text[:at] + rng.choice(("g", "zz", "0x", "-", "é")) + text[at:]
        elif draw < 0.04:
            text += " " + rng.choice("0123456789abcdef")  # half a byte
        elif draw < 0.06:
            text = frame[: rng.randint(1, 13)].hex()
        elif draw < 0.07:
            text = rng.choice(("", "   ", "# a comment", "#")) + "\n" + text
        elif draw < 0.07002:
            text = "ab" * 1_100_000
        lines.append((text + "\n").encode())
    return lines


def _ascii_line(rng: random.Random, frame: bytes) -> str:
    """`frame` as EtherPIPE writes it (MACs, EtherType, byte pairs), or grouped
    another way the format allows, maybe with a 16-digit time column first."""
    how = rng.randrange(4)
    if how == 0:
        head = (frame[:6].hex(), frame[6:12].hex(), frame[12:14].hex())
        text = " ".join((*head, *(f"{b:02x}" for b in frame[14:])))
    elif how == 1:
        text = frame.hex()
    elif how == 2:
        text = " ".join(frame[i : i + 2].hex() for i in range(0, len(frame), 2))
    else:
        text = frame.hex(" ").upper()
    if rng.random() < 0.1:
        text = f"{rng.randrange(2**64):016x} " + text
    return text


@dataclass
class PipeCampaign:
    """Streams of mutated frames through `pktchain fn` filters and `pktchain pipe write`.

    Each process gets one stream of `RUN` frames (pcap and ASCII in turn),
    then the stream's first `replay` share again, the same bytes: its RSS,
    sampled as the stream is written, must not grow during the replay.
    """

    lab: Lab
    work: Path
    seed: int
    make: Callable[[int], Mutator]
    replay: float = 0.2
    runs: int = 0
    offered: int = 0
    accounted: int = 0
    replayed: int = 0
    problems: list[str] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    replay_samples: list[int] = field(default_factory=list)
    growth: list[int] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)

    def run(self, frames: int, *, samples: int = 10, replay: float = 0.2) -> Report:
        self.replay = replay
        report = Report("pipe")
        started = time.monotonic()
        rng = random.Random(self.seed)
        mutator = self.make(self.seed)
        done = turn = 0
        while done < frames:
            count = min(RUN, frames - done)
            if turn % 4 == 3:
                self._write(rng, mutator, count, turn)
            else:
                kind = FUNCTION_FILTERS[(turn - turn // 4) % len(FUNCTION_FILTERS)]
                self._filter(rng, mutator, count, turn, kind)
            done += count
            turn += 1
        report.seconds = time.monotonic() - started
        report.frames = self.offered
        report.delivered = self.accounted
        report.replayed = self.replayed
        report.rss_samples = self.samples
        report.rss_before = self.samples[0] if self.samples else 0
        report.rss_after = self.samples[-1] if self.samples else 0
        report.replay_samples = [0, max(self.growth, default=0)]
        report.drops = self.drops
        report.problems = list(self.problems)
        worst = max(self.growth, default=0)
        if worst > RSS_SLACK_KIB:
            report.problems.append(
                f"a process's RSS grew by {worst} KiB while its stream's first frames came again"
            )
        report.notes.append(
            f"{self.runs} processes; RSS growth of each during its replay (KiB): {self.growth}"
        )
        return report

    def _stream(
        self, rng: random.Random, mutator: Mutator, count: int, fmt: str
    ) -> tuple[bytes, list[bytes], bytes, int, bool]:
        """(head, records or lines with the replay, tail, records offered, fatal)."""
        if fmt == "pcap":
            head = pcap_header(rng)
            items = pcap_records(rng, mutator, count)
            tail, extra, fatal = pcap_ending(rng, mutator)
        else:
            head = b""
            items = ascii_lines(rng, mutator, count)
            tail, extra, fatal = b"", 0, False
        again = items[: int(len(items) * self.replay)]
        self.replayed += len(again)
        return head, items + again, tail, len(items) + len(again) + extra, fatal

    def _spawn(
        self, argv: list[str], head: bytes, items: list[bytes], tail: bytes, first: int
    ) -> tuple[int, str]:
        """Run `argv` with the stream on stdin, written in chunks while its RSS
        is sampled; returns its exit status and its stderr. The growth of its
        RSS from the `first` item on (the replay) is kept."""
        import subprocess

        errors = self.work / "stream.err"
        with errors.open("wb") as stderr:
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr
            )
            assert process.stdin is not None
            at_replay = peak = growth = 0
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(head)
                chunk = 2000
                for at in range(0, len(items), chunk):
                    if at >= first and not at_replay:
                        at_replay = _rss_of(process.pid)
                    process.stdin.write(b"".join(items[at : at + chunk]))
                    process.stdin.flush()
                    rss = _rss_of(process.pid)
                    peak = max(peak, rss)
                    if at_replay:
                        growth = max(growth, rss - at_replay)
                process.stdin.write(tail)
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
            process.wait(timeout=600)
        self.runs += 1
        self.samples.append(peak)
        self.growth.append(growth)
        return process.returncode, errors.read_text(errors="replace")

    def _filter(
        self, rng: random.Random, mutator: Mutator, count: int, turn: int, kind: tuple[str, ...]
    ) -> None:
        import sys

        fmt = "pcap" if turn % 2 == 0 else "ascii"
        head, items, tail, offered, fatal = self._stream(rng, mutator, count, fmt)
        argv = [sys.executable, "-m", "pktchain", "fn", *kind, "--stats-format", "json"]
        first = len(items) - int(count * self.replay)
        code, stderr = self._spawn(argv, head, items, tail, first)
        self.offered += offered
        where = f"pktchain fn {kind[0]} ({fmt} stream {self.runs})"
        self._tracebacks(where, stderr)
        if code != (1 if fatal else 0):
            self.problems.append(f"{where} exited {code}: {stderr[-500:]}")
            return
        line = [ln for ln in stderr.splitlines() if ln.startswith(f"pktchain fn {kind[0]}: {{")]
        if not line:
            self.problems.append(f"{where} printed no counters: {stderr[-500:]}")
            return
        stats = json.loads(line[-1].split(": ", 1)[1])
        taken = sum(stats["in"].values())
        skipped = sum(sum(by.values()) for by in stats["skipped"].values())
        self.accounted += taken + skipped
        if taken + skipped != offered:
            self.problems.append(f"{where}: {offered} offered, {taken} read + {skipped} skipped")
        verdicts = sum(stats["verdicts"].values())
        if verdicts != taken:
            self.problems.append(
                f"{where}: {taken} read, {verdicts} verdicts ({stats['verdicts']})"
            )
        if stats["errors"]:
            self.problems.append(f"{where}: the function raised {stats['errors']}")
        for by in stats["skipped"].values():
            for defect, number in by.items():
                self.drops[f"skipped: {defect}"] += number
        for reason, number in stats["status"].get("counters", {}).items():
            if reason.startswith("drop-") and number:
                self.drops[f"{kind[0]}:{reason}"] += number

    def _write(self, rng: random.Random, mutator: Mutator, count: int, turn: int) -> None:
        import re
        import sys

        fmt = "ascii" if turn % 8 == 3 else "pcap"
        head, items, tail, offered, fatal = self._stream(rng, mutator, count, fmt)
        fz = self.lab.host("fz")
        argv = [sys.executable, "-m", "pktchain", "pipe", "write", "--netns", fz.netns, "eth0"]
        first = len(items) - int(count * self.replay)
        code, stderr = self._spawn(argv, head, items, tail, first)
        self.offered += offered
        where = f"pktchain pipe write ({fmt} stream {self.runs})"
        self._tracebacks(where, stderr)
        if code != (1 if fatal else 0):
            self.problems.append(f"{where} exited {code}: {stderr[-500:]}")
            return
        summary = re.search(
            r"eth0: (\d+) frames sent(?:, (\d+) refused)?(?:; input: (\d+) skipped)?", stderr
        )
        if summary is None:
            self.problems.append(f"{where} printed no summary: {stderr[-500:]}")
            return
        sent, refused, skipped = (int(value or 0) for value in summary.groups())
        self.accounted += sent + refused + skipped
        if sent + refused + skipped != offered:
            self.problems.append(
                f"{where}: {offered} offered, {sent} sent + {refused} refused + {skipped} skipped"
            )
        self.drops["pipe write: refused"] += refused
        self.drops["pipe write: skipped"] += skipped

    def _tracebacks(self, where: str, stderr: str) -> None:
        if "Traceback (most recent call last)" in stderr:
            self.problems.append(f"{where} printed a traceback: {stderr[-800:]}")


def _rss_of(pid: int) -> int:
    try:
        return rss_kib(pid)
    except (OSError, RuntimeError):
        return 0  # it has ended


@contextlib.contextmanager
def pipe_campaign(make_lab: MakeLab, work: Path, seed: int) -> Iterator[PipeCampaign]:
    """A veth for `pipe write` to send out of (its far end silent), and the streams."""
    topology = {
        "lab": "fzp",
        "hosts": {
            "fz": {"sysctls": dict(NO_IPV6), "interfaces": {"eth0": {"attach": "sink.eth0"}}},
            "sink": {"sysctls": dict(NO_IPV6), "interfaces": {"eth0": {}}},
        },
    }
    lab = make_lab(topology)
    seeds = build_seeds(Endpoints())
    yield PipeCampaign(lab, work, seed, lambda s: Mutator(seeds, s, min_size=14))


STREAM_CAMPAIGNS: dict[str, Callable[[MakeLab, Path, int], Any]] = {
    "underlay": underlay_campaign,
    "tunnel": tunnel_campaign,
    "messenger": messenger_campaign,
    "pipe": pipe_campaign,
}
"""The campaigns on datagram and stream ports, by port type."""


FRAME_DROPS = ("malformed", "loop", "ttl-expired", "tun-write-failed")
"""The tunnel's drop reasons of a frame it read (docs/tunnel.md)."""


def _handled(counts: dict[str, int], drops: dict[str, int]) -> int:
    """Frames the tunnel read that it wrote to the TUN, relayed or dropped."""
    return (
        counts.get("tun_tx_packets", 0)
        + counts.get("relayed", 0)
        + sum(drops.get(reason, 0) for reason in FRAME_DROPS)
    )
