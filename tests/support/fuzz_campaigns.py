"""Fuzz campaigns against a running node, one per kind of port, and their checks.

A campaign brings up a lab and a `pktchain node` process, opens an
established TCP connection between two legitimate hosts through the node,
then sends mutated frames (support.frame_fuzz) into one kind of port, paced
so that none is lost before the node reads it: a batch goes out with one
`sendmmsg(2)` on an AF_PACKET socket in the fuzzing host's namespace, and the
next waits until the node's counter of that port shows the earlier ones read
(the node's `counters` control request). The fuzzing hosts' own kernels are
silenced (nftables drops everything they would send), so that every frame
the node counts on their ports is one the campaign sent.

After the frames, `Campaign.check` asks of the node:

- it is alive (control socket ping) and its log holds no traceback;
- it received exactly the frames sent (no loss, nothing extra), or the kernel
  counted what it dropped on the node's socket;
- every frame is accounted for: on each port, received = forwarded + drops
  by reason (`support.datapath_fuzz.ledger_ports`), and every frame handed
  to a function got a verdict (`ledger_functions`); no function raised;
- the established flow still carries data both ways, and a ping passes;
- its resident memory stays bounded: RSS is sampled through the campaign
  (its tables fill up to their limits), then the campaign's first frames are
  sent again, the same bytes, and meanwhile the RSS must not grow by more
  than `RSS_SLACK_KIB`: what a frame leaves behind is what its flow needs,
  and the same flows need nothing more.

The port types of this module are those that take Ethernet frames: a TAP
host port, an AF_PACKET port, a chain of native functions, the router.
support.fuzz_streams has the underlay, the tunnel, the messenger and the
pipes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRPv3
from scapy.packet import Packet, Raw

from pktchain.lab import Lab, LabHost, wait_until
from pktchain.node.control import ControlError, request
from pktchain.node.dataplane.portsec import link_local
from pktchain.node.process import NodeProcess, NodeProcessError
from support.datapath_fuzz import ledger_functions, ledger_ports
from support.fn_lab import NO_IPV6
from support.frame_fuzz import Endpoints, Mutator, both, build_seeds, keep_off, whole_outer_tag

MakeLab = Callable[[dict[str, Any]], Lab]
"""Brings up a lab from a topology mapping (the tests' `lab_factory`, or `Lab.up`)."""

RSS_SLACK_KIB = 4096
"""How much the node's RSS may grow while a campaign's first frames are sent again."""
SILENCE = """
table inet fuzz-silence {
    chain output { type filter hook output priority 0; policy drop; }
}
table arp fuzz-silence {
    chain output { type filter hook output priority 0; policy drop; }
}
"""
"""nftables rules that keep a fuzzing host's kernel from sending anything: what
the node counts on its port is then only what the campaign sent."""

ETH_P_ALL = 0x0003
SOL_PACKET = 263
BATCH = 64
WINDOW = 192
"""Frames sent and not yet counted by the node, at most (an AF_PACKET socket's
default buffer holds about 200 small frames)."""


# -- sending ------------------------------------------------------------------


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)


class FrameSender:
    """Frames out of `ifname` of a lab host, a batch per system call (`sendmmsg`)."""

    def __init__(self, host: LabHost, ifname: str = "eth0") -> None:
        self.sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.bind((ifname, 0))
        self.busy = 0
        """Times the kernel said ENOBUFS (its queue full) and the batch waited."""

    def send(self, frames: Sequence[bytes]) -> tuple[int, int]:
        """Send `frames` in order; returns (sent, refused by the kernel)."""
        count = len(frames)
        buffers = [ctypes.create_string_buffer(frame, len(frame)) for frame in frames]
        iovecs = (_IoVec * count)()
        msgs = (_MMsgHdr * count)()
        for i, frame in enumerate(frames):
            iovecs[i].iov_base = ctypes.addressof(buffers[i])
            iovecs[i].iov_len = len(frame)
            msgs[i].msg_hdr.msg_iov = ctypes.pointer(iovecs[i])
            msgs[i].msg_hdr.msg_iovlen = 1
        fd = self.sock.fileno()
        at = sent = refused = 0
        waited = 0
        while at < count:
            done = _libc.sendmmsg(
                fd, ctypes.byref(msgs, at * ctypes.sizeof(_MMsgHdr)), count - at, 0
            )
            if done > 0:
                at += done
                sent += done
                continue
            code = ctypes.get_errno()
            if code in (errno.ENOBUFS, errno.EAGAIN) and waited < 1000:
                self.busy += 1
                waited += 1
                time.sleep(0.001)  # the device's queue is full: give it a moment
                continue
            refused += 1  # this one frame, e.g. EMSGSIZE
            at += 1
        return sent, refused

    def close(self) -> None:
        self.sock.close()


def silence(host: LabHost) -> None:
    """Stop `host`'s kernel from sending anything (see `SILENCE`)."""
    host.run(["nft", "-f", "-"], input=SILENCE, check=True)


def unsilence(host: LabHost) -> None:
    """Let `host`'s kernel send again (undo `silence`, or a silence of some interfaces)."""
    host.run(["nft", "delete", "table", "inet", "fuzz-silence"], check=True)
    host.run(["nft", "delete", "table", "arp", "fuzz-silence"])  # absent: nothing to undo


# -- watching the node ----------------------------------------------------------


def rss_kib(pid: int) -> int:
    """The resident set size of process `pid`, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"process {pid} reports no VmRSS")


def tracebacks(log: Path) -> list[str]:
    """The last line of each traceback in a log: the exception, as it was raised."""
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    found = []
    inside = False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            inside = True
            continue
        if inside and line and not line.startswith((" ", "\t")):
            found.append(line.strip())
            inside = False
    return found


def port_counters(node: NodeProcess) -> dict[str, dict[str, Any]]:
    return {port["name"]: port for port in node.counters()["ports"]}


def drops_of(ports: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> Counter[str]:
    """Drops by reason, summed over `names` (all ports when None)."""
    total: Counter[str] = Counter()
    for port in ports:
        if names is None or port["name"] in names:
            total.update(port["drops"])
    return total


# -- an established flow --------------------------------------------------------


class TcpFlow:
    """One TCP connection between two lab hosts, opened before a campaign and
    used again after it: the node must still carry it."""

    def __init__(self, client: LabHost, server: LabHost, address: str, port: int) -> None:
        self.client_host = client
        self.server_host = server
        self.address = address
        self.port = port
        self.listener = server.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, port))
        self.listener.listen(1)
        self.client = client.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.client.settimeout(10)
        self.server: socket.socket | None = None

    def open(self) -> None:
        self.client.connect((self.address, self.port))
        self.listener.settimeout(10)
        self.server, _ = self.listener.accept()
        self.server.settimeout(10)
        problem = self.exchange(b"before")
        if problem is not None:
            raise RuntimeError(problem)

    def exchange(self, word: bytes) -> str | None:
        """Send `word` each way; what went wrong, or None."""
        if self.server is None:
            return "the flow was never opened"
        try:
            self.client.sendall(b"ping " + word)
            got = self.server.recv(100)
            self.server.sendall(b"pong " + word)
            back = self.client.recv(100)
        except OSError as exc:
            return f"the established TCP flow failed: {exc} ({self._neighbours()})"
        if got != b"ping " + word or back != b"pong " + word:
            return f"the established TCP flow carried {got!r} and {back!r}"
        return None

    def _neighbours(self) -> str:
        """Both hosts' neighbour tables: what they believe of each other."""
        tables = []
        for host in (self.client_host, self.server_host):
            shown = host.run(["ip", "neigh", "show"]).stdout.strip().replace("\n", "; ")
            tables.append(f"{host.name}: {shown}")
        return "; ".join(tables)

    def close(self) -> None:
        for sock in (self.client, self.server, self.listener):
            if sock is not None:
                sock.close()


def pin_neighbours(pairs: Sequence[tuple[LabHost, str, str]]) -> None:
    """Give each host a permanent neighbour entry (host, address, MAC): the
    legitimate hosts of a campaign whose fuzzing port may pose as anyone
    (nothing secures it) keep what they know of each other."""
    for host, address, mac in pairs:
        host.run(
            ["ip", "neigh", "replace", address, "lladdr", mac, "nud", "permanent", "dev", "eth0"],
            check=True,
        )


def ping(host: LabHost, address: str) -> str | None:
    result = host.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", address], timeout=20)
    if result.ok:
        return None
    return f"{host.name} cannot ping {address}: {result.stdout.strip().splitlines()[-2:]}"


# -- campaigns --------------------------------------------------------------------


@dataclass
class Source:
    """Where a campaign's frames go in: a host's NIC, and the node port they reach."""

    label: str
    port: str
    """The node port's name, whose `rx_packets` paces the campaign."""
    sender: FrameSender
    make: Callable[[], Mutator]
    """Makes the source's mutator: twice, for the campaign and for its replay."""
    mutator: Mutator = field(init=False)
    sent: int = 0
    refused: int = 0
    base: int = 0
    received: int = 0
    base_kernel_drops: int = 0
    kernel_drops: int = 0
    """Frames the kernel dropped on the node's socket (an AF_PACKET port's buffer full)."""

    def __post_init__(self) -> None:
        self.mutator = self.make()


@dataclass
class Report:
    """What one campaign did and found (printed, and recorded in docs/robustness.md)."""

    port_type: str
    frames: int = 0
    delivered: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    rss_before: int = 0
    rss_after: int = 0
    rss_samples: list[int] = field(default_factory=list)
    """RSS through the campaign (KiB)."""
    replayed: int = 0
    """Frames sent again at the end (the campaign's first ones, the same bytes)."""
    replay_samples: list[int] = field(default_factory=list)
    """RSS through the replay, its first sample taken before it (KiB)."""
    seconds: float = 0.0
    command: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def top_drops(self, n: int = 10) -> list[tuple[str, int]]:
        return self.drops.most_common(n)

    def text(self) -> str:
        lines = [
            f"{self.port_type}: {self.frames:,} frames in {self.seconds:.1f} s "
            f"({self.rate:,.0f}/s), {self.delivered:,} counted where they arrived",
            f"  RSS {self.rss_before / 1024:.1f} MiB -> {self.rss_after / 1024:.1f} MiB "
            f"(samples: {', '.join(f'{s / 1024:.1f}' for s in self.rss_samples)}); "
            f"replaying {self.replayed:,} frames: {self.replay_growth()} KiB more",
            "  drops: " + ", ".join(f"{reason} {count:,}" for reason, count in self.top_drops()),
            *(f"  {note}" for note in self.notes),
            "  checks: " + ("all passed" if self.ok else "FAILED"),
            *(f"  - {problem}" for problem in self.problems),
        ]
        return "\n".join(lines)

    def replay_growth(self) -> int:
        """How much the RSS grew while the first frames were sent again (KiB)."""
        samples = self.replay_samples
        return max(samples) - samples[0] if samples else 0


@dataclass
class Campaign:
    """A lab, its node and the sources of a campaign on Ethernet ports."""

    port_type: str
    lab: Lab
    node: NodeProcess
    log: Path
    sources: list[Source]
    flow: TcpFlow
    pings: list[tuple[LabHost, str]]
    fuzz_hosts: list[LabHost]
    ports: list[str] = field(default_factory=list)
    """The ports whose drops the report shows (all when empty)."""

    def run(
        self, frames: int, *, samples: int = 10, replay: float = 0.2, timeout: float = 3600.0
    ) -> Report:
        """Send `frames` frames, spread over the sources in batches, then the first
        `replay` share of them again (the same bytes: a node that keeps what it
        needs grows no more); check; report."""
        node = self.node
        report = Report(self.port_type)
        report.rss_before = rss_kib(node.pid)
        counters = port_counters(node)
        for source in self.sources:
            source.base = counters[source.port]["rx_packets"]
            source.base_kernel_drops = counters[source.port].get("rx_kernel_drops", 0)
        started = time.monotonic()
        deadline = started + timeout
        self._send(frames, [s.mutator for s in self.sources], samples, report.rss_samples, deadline)
        report.replayed = max(BATCH, int(frames * replay))
        report.replay_samples.append(rss_kib(node.pid))
        replayers = [source.make() for source in self.sources]
        self._send(report.replayed, replayers, samples, report.replay_samples, deadline)
        for source in self.sources:
            self._pace(source, 0, min(deadline, time.monotonic() + 60))
        report.seconds = time.monotonic() - started
        report.frames = sum(s.sent for s in self.sources)
        report.delivered = sum(s.received for s in self.sources)
        report.rss_after = rss_kib(node.pid)
        report.problems = self.check(report)
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
        deadline: float,
    ) -> None:
        """`frames` frames from `mutators` (one per source, taking turns by batch)."""
        every = max(BATCH, frames // samples)
        next_sample = every
        total = 0
        turn = 0
        while total < frames:
            index = turn % len(self.sources)
            source = self.sources[index]
            turn += 1
            batch = mutators[index].frames(min(BATCH, frames - total))
            sent, refused = source.sender.send(batch)
            source.sent += sent
            source.refused += refused
            total += len(batch)
            self._pace(source, WINDOW, deadline)
            if total >= next_sample:
                rss.append(rss_kib(self.node.pid))
                next_sample += every

    def _pace(self, source: Source, window: int, deadline: float) -> None:
        """Wait until the node has read all but `window` of what `source` sent."""
        node = self.node
        delay = 0.0002
        while True:
            port = port_counters(node)[source.port]
            source.received = port["rx_packets"] - source.base
            source.kernel_drops = port.get("rx_kernel_drops", 0) - source.base_kernel_drops
            if source.received + source.kernel_drops >= source.sent - window:
                return
            if time.monotonic() > deadline:
                return  # the check reports the frames missing
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def check(self, report: Report) -> list[str]:
        problems = []
        try:
            alive = bool(request(self.node.control, "ping").get("ok"))
        except (ControlError, OSError) as exc:
            return [f"the node does not answer its control socket: {exc}"]
        if not alive:
            problems.append("the node does not answer ping")
        for line in tracebacks(self.log):
            problems.append(f"the node's log has a traceback: {line}")
        for source in self.sources:
            if source.received + source.kernel_drops != source.sent:
                problems.append(
                    f"{source.label}: sent {source.sent:,}, the node received "
                    f"{source.received:,} and the kernel dropped {source.kernel_drops:,} "
                    "on its socket"
                )
            if source.kernel_drops:
                report.drops["rx-kernel-drops"] += source.kernel_drops
            if source.refused:
                report.notes.append(
                    f"{source.label}: {source.refused} frames refused by the kernel"
                )
        status = self.node.status()
        functions = self.node.functions()
        problems += ledger_ports(status["ports"])
        problems += ledger_functions(functions, status["ports"])
        report.drops = drops_of(status["ports"], self.ports or None)
        steering = status["steering"]
        report.notes.append(
            f"tables after: {status['switch']['mac_entries']:,} MAC addresses "
            f"({status['switch']['table_full']:,} not learned, table full), "
            f"{steering['flows']:,} steered flows ({steering['stats']['table_full']:,} "
            f"made room for others), {status['fast_path']['entries']:,} fused entries"
        )
        for function in functions:
            for reason, count in function.get("counters", {}).items():
                if reason.startswith("drop") or "drop" in reason:
                    report.drops[f"{function['name']}:{reason}"] += count
        for host in self.fuzz_hosts:
            unsilence(host)
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
                f"the node's RSS grew by {growth} KiB while {report.replayed:,} frames were "
                f"sent again (samples {report.replay_samples})"
            )
        return problems


# -- the labs -------------------------------------------------------------------

FUZZ_MAC = "02:00:00:00:0f:01"
WIRE_MAC = "02:00:00:00:0f:02"
H1, H2 = "10.0.0.1", "10.0.0.2"
H1_MAC, H2_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
FUZZ_IP = "10.0.0.66"
UNSECURED_SOURCE = "10.77.0.77"
"""The IPv4 source of the frames of a port nothing secures (an AF_PACKET port
with no addresses, a function's, the underlay from a trusted peer): far from
the legitimate hosts' addresses, so that a flipped bit does not make an ARP
packet claim one of them. Such a port may claim them (that is what port
security stops); a host that believes it loses its flow, which says nothing
of the node."""


def _host(network: str, mac: str, address: str | None, **extra: Any) -> dict[str, Any]:
    eth0: dict[str, Any] = {"attach": "node", "network": network, "mac": mac}
    if address is not None:
        eth0["addresses"] = [address]
    eth0.update(extra.pop("eth0", {}))
    return {"sysctls": dict(NO_IPV6), "interfaces": {"eth0": eth0}, **extra}


def _ll(mac: str) -> str:
    return str(ipaddress.IPv6Address(link_local(bytes.fromhex(mac.replace(":", "")))))


def _start_node(
    lab: Lab, work: Path, topology: dict[str, Any], name: str, args: Sequence[str] = ()
) -> tuple[NodeProcess, Path]:
    path = work / f"{name}-topology.yaml"
    path.write_text(yaml.safe_dump(topology, sort_keys=False))
    log = work / f"{name}-node.log"
    node = NodeProcess(
        f"{name}{os.getpid() % 10000}",
        topology=path,
        lab_name=lab.name,
        args=tuple(args),
        log_path=log,
    )
    node.start(timeout=30)
    return node, log


@contextlib.contextmanager
def _running(node: NodeProcess) -> Iterator[NodeProcess]:
    try:
        yield node
    finally:
        try:
            node.stop()
        except NodeProcessError:
            node.kill()


def _switch_lab(extra_hosts: dict[str, Any]) -> dict[str, Any]:
    return {
        "lab": "fz",
        "hosts": {
            "h1": _host("default", H1_MAC, f"{H1}/24"),
            "h2": _host("default", H2_MAC, f"{H2}/24"),
            **extra_hosts,
        },
    }


def host_nic_fit(
    node: NodeProcess, port: str, fit: Callable[[bytes], bytes] | None = None
) -> Callable[[bytes], bytes] | None:
    """`fit`, made to give whole VLAN tags when `port` is a veth port: the
    kernel of the node's namespace drops a frame whose tag is cut short before
    the node's socket on the veth's end sees it, as on an AF_PACKET port's
    interface (a TAP hands the node every frame)."""
    kind = next(p["kind"] for p in node.counters()["ports"] if p["name"] == port)
    if kind != "veth":
        return fit
    return whole_outer_tag if fit is None else both(whole_outer_tag, fit)


@contextlib.contextmanager
def tap_campaign(make_lab: MakeLab, work: Path, seed: int) -> Iterator[Campaign]:
    """A secured TAP host port: `fz` (10.0.0.66) sends as itself, mostly to h2,
    and as others (what port security refuses)."""
    topology = _switch_lab({"fz": _host("default", FUZZ_MAC, f"{FUZZ_IP}/24")})
    lab = make_lab(topology)
    node, log = _start_node(lab, work, topology, "tap")
    with _running(node):
        fz = lab.host("fz")
        silence(fz)
        ends = Endpoints(FUZZ_MAC, H2_MAC, FUZZ_IP, H2, _ll(FUZZ_MAC), _ll(H2_MAC))
        flow = TcpFlow(lab.host("h1"), lab.host("h2"), H2, 7000)
        flow.open()
        sender = FrameSender(fz)
        fit = host_nic_fit(node, "fz:eth0")
        source = Source(
            "fz:eth0 (TAP, secured)",
            "fz:eth0",
            sender,
            lambda: Mutator(build_seeds(ends), seed, min_size=14, fit=fit),
        )
        try:
            yield Campaign(
                "tap", lab, node, log, [source], flow, [(lab.host("h1"), H2)], [fz], ["fz:eth0"]
            )
        finally:
            sender.close()
            flow.close()


@contextlib.contextmanager
def af_packet_campaign(make_lab: MakeLab, work: Path, seed: int) -> Iterator[Campaign]:
    """An AF_PACKET port on a veth, not secured: `fz` sends through the veth
    `wire` whose end is the node's port; anything goes, the switch learns."""
    topology = _switch_lab(
        {
            "fz": {"sysctls": dict(NO_IPV6), "interfaces": {"eth0": {"attach": "wire.eth0"}}},
            "wire": {"sysctls": dict(NO_IPV6), "interfaces": {"eth0": {"mac": WIRE_MAC}}},
        }
    )
    lab = make_lab(topology)
    wire = lab.host("wire")
    node, log = _start_node(lab, work, topology, "afp", ("--af-packet", f"{wire.netns}:eth0"))
    with _running(node):
        fz = lab.host("fz")
        silence(fz)
        silence(wire)
        port = next(p["name"] for p in node.counters()["ports"] if p["kind"] == "af_packet")
        mac = fz.run(["cat", "/sys/class/net/eth0/address"], check=True).stdout.strip()
        ends = Endpoints(mac, H2_MAC, UNSECURED_SOURCE, H2, _ll(mac), _ll(H2_MAC))
        pin_neighbours(((lab.host("h1"), H2, H2_MAC), (lab.host("h2"), H1, H1_MAC)))
        flow = TcpFlow(lab.host("h1"), lab.host("h2"), H2, 7000)
        flow.open()
        sender = FrameSender(fz)
        # The kernel drops a frame whose VLAN tag is cut short before the
        # node's socket sees it: such frames go with their tag made whole.
        source = Source(
            f"{port} (AF_PACKET)",
            port,
            sender,
            lambda: Mutator(
                build_seeds(ends),
                seed,
                min_size=14,
                fit=both(whole_outer_tag, keep_off((H1_MAC, H2_MAC), mac)),
            ),
        )
        try:
            yield Campaign(
                "af-packet",
                lab,
                node,
                log,
                [source],
                flow,
                [(lab.host("h1"), H2)],
                [fz, wire],
                [port],
            )
        finally:
            sender.close()
            flow.close()


FUNCTIONS_LEGIT = ("fw", "fm")
TABLES = 8192
"""The table limits of the fuzzed chain's functions, and half the node's
flow table (`--max-flows`): small enough that a million random frames fill
them all, so that the replay shows their memory bounded when full."""
FUNCTIONS_FUZZ = (
    (
        "zfw",
        "firewall",
        {
            "default": "accept",
            "rules": [{"action": "drop", "protocol": "tcp", "dport": 23}],
            "max_connections": TABLES,
        },
    ),
    ("zfm", "flow-monitor", {"max_flows": TABLES, "max_records": TABLES}),
    ("zrl", "rate-limiter", {"rate_pps": 100000, "max_buckets": TABLES}),
    ("zl7", "l7-classifier", {"max_flows": TABLES}),
    ("zmirror", "mirror", {"max_leases": TABLES}),
    (
        "znat",
        "nat",
        {
            "external_address": "10.0.0.200",
            "internal_networks": ["10.77.0.0/16"],
            "max_sessions": TABLES,
        },
    ),
)


@contextlib.contextmanager
def function_campaign(make_lab: MakeLab, work: Path, seed: int) -> Iterator[Campaign]:
    """Native functions' ports: every IPv4 and IPv6 packet of `fz` is steered
    through a chain of a firewall, a flow monitor, a rate limiter, an L7
    classifier, a mirror (its copies to a watcher) and a NAT; the legitimate
    flow (h1 to h2) through another chain of a firewall and a flow monitor."""
    from pktchain.node.client import ChainingClient

    topology = _switch_lab(
        {
            "fz": _host("default", FUZZ_MAC, None, eth0={"port_security": False}),
            "watcher": _host("tap", "02:00:00:00:0f:03", None),
        }
    )
    functions: list[dict[str, Any]] = [
        {"name": "fw", "kind": "firewall", "config": {"default": "accept"}},
        {"name": "fm", "kind": "flow-monitor"},
    ]
    for name, kind, config in FUNCTIONS_FUZZ:
        spec: dict[str, Any] = {"name": name, "kind": kind, "config": config}
        if kind == "mirror":
            spec["network"] = {"ingress": "default", "egress": "default", "mirror": "tap"}
        functions.append(spec)
    path = work / "functions.yaml"
    path.write_text(yaml.safe_dump({"functions": functions}, sort_keys=False))
    lab = make_lab(topology)
    node, log = _start_node(
        lab, work, topology, "fn", ("--functions", str(path), "--max-flows", str(2 * TABLES))
    )
    with _running(node):
        api = ChainingClient(node.control)
        _chain(
            api,
            "legit",
            list(FUNCTIONS_LEGIT),
            [
                {
                    "logical_source_port": "h1:eth0",
                    "logical_destination_port": "h2:eth0",
                    "ethertype": "IPv4",
                }
            ],
            symmetric=True,
        )
        _chain(
            api,
            "fuzz",
            [name for name, _k, _c in FUNCTIONS_FUZZ],
            [
                {"logical_source_port": "fz:eth0", "ethertype": "IPv4"},
                {"logical_source_port": "fz:eth0", "ethertype": "IPv6"},
            ],
            symmetric=False,
        )
        fz = lab.host("fz")
        silence(fz)
        silence(lab.host("watcher"))
        ends = Endpoints(FUZZ_MAC, H2_MAC, UNSECURED_SOURCE, H2, "fd00:7::5", "fd00:7::2")
        pin_neighbours(((lab.host("h1"), H2, H2_MAC), (lab.host("h2"), H1, H1_MAC)))
        flow = TcpFlow(lab.host("h1"), lab.host("h2"), H2, 7000)
        flow.open()
        sender = FrameSender(fz)
        fit = host_nic_fit(node, "fz:eth0", keep_off((H1_MAC, H2_MAC), FUZZ_MAC))
        source = Source(
            "fz:eth0 (chained to native functions)",
            "fz:eth0",
            sender,
            lambda: Mutator(build_seeds(ends), seed, min_size=14, fit=fit),
        )
        try:
            yield Campaign(
                "function",
                lab,
                node,
                log,
                [source],
                flow,
                [(lab.host("h1"), H2)],
                [fz, lab.host("watcher")],
                [],
            )
        finally:
            sender.close()
            flow.close()


def _chain(
    api: Any,
    name: str,
    functions: list[str],
    classifiers: list[dict[str, Any]],
    *,
    symmetric: bool,
) -> None:
    pid = api.port_id
    groups = []
    for function in functions:
        pair = api.create(
            "port_pairs",
            name=f"pp-{function}",
            ingress=pid(f"{function}:ingress"),
            egress=pid(f"{function}:egress"),
        )
        groups.append(
            api.create("port_pair_groups", name=f"g-{function}", port_pairs=[pair["id"]])["id"]
        )
    ids = []
    for n, given in enumerate(classifiers):
        fields = dict(given)
        fields["logical_source_port"] = pid(fields["logical_source_port"])
        if "logical_destination_port" in fields:
            fields["logical_destination_port"] = pid(fields["logical_destination_port"])
        ids.append(api.create("flow_classifiers", name=f"fc-{name}-{n}", **fields)["id"])
    api.create(
        "port_chains",
        name=name,
        port_pair_groups=groups,
        flow_classifiers=ids,
        chain_parameters={"symmetric": symmetric},
    )


ROUTER_IN, ROUTER_OUT = "10.0.0.1", "198.51.100.2"
ROUTER_IN_MAC, ROUTER_OUT_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"
INSIDE, OUTSIDE = "10.0.0.10", "198.51.100.10"
VIRTUAL = "10.0.0.254"
INSIDE_MAC, OUTSIDE_MAC = "02:00:00:00:01:0a", "02:00:00:00:02:0a"
OUTSIDE_FUZZ_MAC = "02:00:00:00:0f:09"
ROUTER_HOSTS = (INSIDE_MAC, OUTSIDE_MAC)
"""The legitimate hosts of the router campaign, whose MACs its frames do not use."""
ROUTER: dict[str, Any] = {
    "name": "router",
    "interfaces": {
        "inside": {"network": "inside", "mac": ROUTER_IN_MAC, "address": f"{ROUTER_IN}/24"},
        "outside": {
            "network": "outside",
            "mac": ROUTER_OUT_MAC,
            "address": f"{ROUTER_OUT}/24",
            "external": True,
            "gateway": OUTSIDE,
        },
    },
    "nat": {},
    "port_forwards": [
        {"proto": "tcp", "external_port": 8080, "inside_ip": INSIDE, "inside_port": 80},
        {"proto": "udp", "external_port": 5353, "inside_ip": INSIDE, "inside_port": 53},
    ],
    "vrrp": [{"vrid": 1, "interface": "inside", "virtual_addresses": [VIRTUAL], "priority": 100}],
}


def _router_extras(ends: Endpoints, beyond: str) -> list[tuple[str, Packet]]:
    """Frames for the router beyond the codec's kinds: routed on (TTL 1, DF),
    VRRP for its virtual router, ARP for its addresses, its port forwards."""
    eth = Ether(src=ends.src_mac, dst=ends.dst_mac)
    bcast = Ether(src=ends.src_mac, dst="ff:ff:ff:ff:ff:ff")
    return [
        (
            "routed-udp",
            eth / IP(src=ends.src_ip, dst=beyond, id=1) / UDP(sport=4000, dport=53) / Raw(b"q"),
        ),
        (
            "routed-ttl1",
            eth / IP(src=ends.src_ip, dst=beyond, ttl=1, id=2) / UDP(sport=4001, dport=33434),
        ),
        (
            "routed-tcp-syn",
            eth / IP(src=ends.src_ip, dst=beyond, id=3) / TCP(sport=40000, dport=80, flags="S"),
        ),
        (
            "routed-big-df",
            eth
            / IP(src=ends.src_ip, dst=beyond, flags="DF", id=4)
            / UDP(sport=1, dport=2)
            / Raw(bytes(1400)),
        ),
        ("routed-echo", eth / IP(src=ends.src_ip, dst=beyond, id=5) / ICMP(type=8, id=77, seq=1)),
        ("arp-virtual", bcast / ARP(op=1, hwsrc=ends.src_mac, psrc=ends.src_ip, pdst=VIRTUAL)),
        (
            "arp-gratuitous",
            bcast
            / ARP(
                op=2,
                hwsrc=ends.src_mac,
                psrc=ends.src_ip,
                hwdst="ff:ff:ff:ff:ff:ff",
                pdst=ends.src_ip,
            ),
        ),
        (
            "vrrp-higher",
            Ether(src="00:00:5e:00:01:01", dst="01:00:5e:00:00:12")
            / IP(src=ends.src_ip, dst="224.0.0.18", ttl=255, id=6)
            / VRRPv3(vrid=1, priority=200, ipcount=1, addrlist=[VIRTUAL]),
        ),
        (
            "vrrp-zero",
            Ether(src="00:00:5e:00:01:01", dst="01:00:5e:00:00:12")
            / IP(src=ends.src_ip, dst="224.0.0.18", ttl=255, id=7)
            / VRRPv3(vrid=1, priority=0, ipcount=1, addrlist=[VIRTUAL]),
        ),
        (
            "forward-tcp",
            eth
            / IP(src=ends.src_ip, dst=ends.dst_ip, id=8)
            / TCP(sport=40001, dport=8080, flags="S"),
        ),
        (
            "forward-udp",
            eth
            / IP(src=ends.src_ip, dst=ends.dst_ip, id=9)
            / UDP(sport=4002, dport=5353)
            / Raw(b"x"),
        ),
    ]


@contextlib.contextmanager
def router_campaign(make_lab: MakeLab, work: Path, seed: int) -> Iterator[Campaign]:
    """The router's ports: `fz` inside and `fo` outside send to the router's
    MAC and addresses (ARP, ICMP, VRRP for its virtual router, packets to route
    and to translate, its port forwards); neither port is secured."""
    topology = {
        "lab": "fz",
        "hosts": {
            "inside": _host(
                "inside",
                "02:00:00:00:01:0a",
                f"{INSIDE}/24",
                routes=[{"to": "default", "via": ROUTER_IN}],
            ),
            "outside": _host("outside", OUTSIDE_MAC, f"{OUTSIDE}/24"),
            "fz": _host("inside", FUZZ_MAC, "10.0.0.66/24", eth0={"port_security": False}),
            "fo": _host(
                "outside", "02:00:00:00:0f:09", "198.51.100.66/24", eth0={"port_security": False}
            ),
        },
    }
    path = work / "router.yaml"
    path.write_text(yaml.safe_dump(ROUTER, sort_keys=False))
    lab = make_lab(topology)
    node, log = _start_node(lab, work, topology, "rt", ("--router", str(path)))
    with _running(node):
        fz, fo = lab.host("fz"), lab.host("fo")
        silence(fz)
        silence(fo)
        pin_neighbours(
            (
                (lab.host("inside"), ROUTER_IN, ROUTER_IN_MAC),
                (lab.host("outside"), ROUTER_OUT, ROUTER_OUT_MAC),
            )
        )
        flow = TcpFlow(lab.host("inside"), lab.host("outside"), OUTSIDE, 7000)
        wait_until(
            lambda: ping(lab.host("inside"), ROUTER_IN) is None,
            timeout=15,
            what="inside pings the router",
        )
        flow.open()
        inside_ends = Endpoints(
            FUZZ_MAC, ROUTER_IN_MAC, "10.0.0.66", ROUTER_IN, _ll(FUZZ_MAC), "fe80::1"
        )
        outside_ends = Endpoints(
            "02:00:00:00:0f:09",
            ROUTER_OUT_MAC,
            "198.51.100.66",
            ROUTER_OUT,
            _ll("02:00:00:00:0f:09"),
            "fe80::2",
        )
        sources = [
            Source(
                "fz:eth0 (router inside)",
                "fz:eth0",
                FrameSender(fz),
                lambda: Mutator(
                    build_seeds(inside_ends, extra=_router_extras(inside_ends, OUTSIDE)),
                    seed,
                    min_size=14,
                    fit=host_nic_fit(node, "fz:eth0", keep_off(ROUTER_HOSTS, FUZZ_MAC)),
                ),
            ),
            Source(
                "fo:eth0 (router outside)",
                "fo:eth0",
                FrameSender(fo),
                lambda: Mutator(
                    build_seeds(outside_ends, extra=_router_extras(outside_ends, INSIDE)),
                    seed + 1,
                    min_size=14,
                    fit=host_nic_fit(node, "fo:eth0", keep_off(ROUTER_HOSTS, OUTSIDE_FUZZ_MAC)),
                ),
            ),
        ]
        try:
            yield Campaign(
                "router",
                lab,
                node,
                log,
                sources,
                flow,
                [(lab.host("inside"), OUTSIDE), (lab.host("inside"), ROUTER_IN)],
                [fz, fo],
                [],
            )
        finally:
            for source in sources:
                source.sender.close()
            flow.close()


CAMPAIGNS: dict[
    str, Callable[[MakeLab, Path, int], contextlib.AbstractContextManager[Campaign]]
] = {
    "tap": tap_campaign,
    "af-packet": af_packet_campaign,
    "function": function_campaign,
    "router": router_campaign,
}
"""The campaigns on Ethernet ports, by port type."""
