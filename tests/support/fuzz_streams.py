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
import random
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pktchain.lab import Lab, LabHost, wait_until
from pktchain.node.dataplane.underlay import network_vni
from pktchain.node.process import NodeProcess, NodeProcessError
from support.datapath_fuzz import ledger_ports
from support.frame_fuzz import Endpoints, Mutator, ip_seeds, nsh_datagrams
from support.fuzz_campaigns import (
    NO_IPV6,
    RSS_SLACK_KIB,
    MakeLab,
    Report,
    TcpFlow,
    drops_of,
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


def _counter(mapping: dict[str, int]) -> Any:
    from collections import Counter

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
        ends = Endpoints("02:00:00:00:0f:22", H1_MAC, "10.0.0.34", H1, "fd00::22", "fd00::1")
        vni = network_vni("default")
        sources = [
            DatagramSource(
                f"{N2_UNDERLAY} (the peer's address)",
                peer_sock,
                lambda: Mutator(nsh_datagrams(ends, vni), seed, max_size=9000),
            ),
            DatagramSource(
                f"{STRANGER} (a stranger's)",
                stranger_sock,
                lambda: Mutator(nsh_datagrams(ends, vni), seed + 1, max_size=9000),
            ),
        ]
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
        delivered = (
            tcp_counts.get("tun_tx_packets", 0)
            + tcp_counts.get("relayed", 0)
            + sum(
                tcp_drops.get(r, 0)
                for r in ("malformed", "loop", "ttl-expired", "tun-write-failed")
            )
        )
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
        udp_out = (
            udp_counts.get("tun_tx_packets", 0)
            + udp_counts.get("relayed", 0)
            + sum(
                udp_drops.get(r, 0)
                for r in ("malformed", "loop", "ttl-expired", "tun-write-failed")
            )
        )
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


STREAM_CAMPAIGNS: dict[str, Callable[[MakeLab, Path, int], Any]] = {
    "underlay": underlay_campaign,
    "tunnel": tunnel_campaign,
}
"""The campaigns on datagram and stream ports, by port type."""
