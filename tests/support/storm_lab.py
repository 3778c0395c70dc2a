"""The storm lab: a node whose router and load balancer serve hosts while one of them floods.

Network ``lan`` (10.0.0.0/24) holds `a1` and `a2`, the pair whose ping is
timed, the stormer `s`, and the backend `b1`; the router's inside interface
(10.0.0.1, everybody's gateway) and a one-arm load balancer (VIP
10.0.0.100:80 → b1:80) are on it too. Network ``wan`` (198.51.100.0/24)
holds `o1`, the router's upstream gateway and the iperf3 server that `a1`
sends to through the NAT, and `o2`, an outside host that floods the
router's port forward (198.51.100.2:8080 → b1:80).

Every host port is secured (it has addresses), so a storm is made of frames
each host may send as itself: what stops it is the port's rate limits. A
`Storm` is hping3 bounded by `timeout`; a `Throughput` is one iperf3 flow
whose per-interval rates are compared before and during the storm; `rtts`
times pings. Everything a storm sends stays in the lab's namespaces.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pktchain.lab import Lab, LabHost, node_host_spec, wait_until
from pktchain.node.process import NodeProcess
from support.fn_lab import NO_IPV6

A1, A2, S, B1 = "10.0.0.11", "10.0.0.12", "10.0.0.66", "10.0.0.21"
O1, O2 = "198.51.100.10", "198.51.100.66"
ROUTER_IN, ROUTER_OUT = "10.0.0.1", "198.51.100.2"
VIP, LB_SOURCE = "10.0.0.100", "10.0.0.5"
FORWARD_PORT = 8080
BROADCAST_NEIGHBOR = "10.0.0.254"
"""An address the stormer's kernel resolves to ff:ff:ff:ff:ff:ff: what it
sends there leaves as Ethernet broadcast, from its own MAC and address."""

MAX_SESSIONS_PER_HOST = 4000
MAX_LB_CONNECTIONS = 2000
"""Table limits small enough for a few seconds of flood to reach them."""


def _host(network: str, mac: str, address: str, gateway: str | None) -> dict[str, Any]:
    spec = node_host_spec(network, mac, address, gateway)
    spec["sysctls"] = dict(NO_IPV6)
    return spec


TOPOLOGY: dict[str, Any] = {
    "lab": "storm",
    "hosts": {
        "a1": _host("lan", "02:00:00:00:01:11", f"{A1}/24", ROUTER_IN),
        "a2": _host("lan", "02:00:00:00:01:12", f"{A2}/24", ROUTER_IN),
        "s": _host("lan", "02:00:00:00:01:66", f"{S}/24", ROUTER_IN),
        "b1": _host("lan", "02:00:00:00:01:21", f"{B1}/24", ROUTER_IN),
        "o1": _host("wan", "02:00:00:00:02:0a", f"{O1}/24", None),
        "o2": _host("wan", "02:00:00:00:02:66", f"{O2}/24", None),
    },
}

ROUTER: dict[str, Any] = {
    "name": "router",
    "interfaces": {
        "inside": {"network": "lan", "mac": "02:00:00:00:01:01", "address": f"{ROUTER_IN}/24"},
        "outside": {
            "network": "wan",
            "mac": "02:00:00:00:02:01",
            "address": f"{ROUTER_OUT}/24",
            "external": True,
            "gateway": O1,
        },
    },
    "nat": {"max_sessions_per_host": MAX_SESSIONS_PER_HOST},
    "port_forwards": [
        {"proto": "tcp", "external_port": FORWARD_PORT, "inside_ip": B1, "inside_port": 80}
    ],
}

FUNCTIONS: dict[str, Any] = {
    "functions": [
        {
            "name": "lb1",
            "kind": "load-balancer",
            "network": "lan",
            "config": {
                "frontend_mac": "02:00:00:00:10:01",
                "backend_mac": "02:00:00:00:10:02",
                "source_ip": LB_SOURCE,
                "max_connections": MAX_LB_CONNECTIONS,
                "health": {"interval": 1.0, "timeout": 0.9, "rise": 1, "fall": 3},
                "services": [{"vip": VIP, "port": 80, "backends": [{"ip": B1, "port": 80}]}],
            },
        }
    ]
}

NO_LIMITS = tuple(
    arg for name in ("arp", "icmp", "flood", "slow-path") for arg in (f"--port-{name}-rate", "off")
)
"""Node options that turn every port rate limit off (the NAT's stay)."""


def node_args(directory: Path) -> tuple[str, ...]:
    """The node options that run the lab's router and load balancer (files written in
    `directory`)."""
    router = directory / "storm-router.yaml"
    router.write_text(yaml.safe_dump(ROUTER, sort_keys=False))
    functions = directory / "storm-functions.yaml"
    functions.write_text(yaml.safe_dump(FUNCTIONS, sort_keys=False))
    return ("--router", str(router), "--functions", str(functions))


SERVER = (
    "import http.server, socketserver, sys\n"
    "socketserver.TCPServer.allow_reuse_address = True\n"
    "socketserver.TCPServer.request_queue_size = 512\n"
    "address = (sys.argv[1], int(sys.argv[2]))\n"
    "socketserver.TCPServer(address, http.server.SimpleHTTPRequestHandler).serve_forever()\n"
)


def prepare(lab: Lab, node: NodeProcess, directory: Path) -> None:
    """Serve b1's page, wait until every host reaches its gateway and the load
    balancer sees b1 up, and teach the switch every host (one ping each)."""
    root = directory / "b1-web"
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text("b1\n")
    b1 = lab.host("b1")
    b1.popen(["python3", "-c", SERVER, B1, "80"], cwd=root)
    b1.wait_listening(80, timeout=10)
    for name, target in (("a1", ROUTER_IN), ("a2", ROUTER_IN), ("s", ROUTER_IN), ("b1", ROUTER_IN)):
        wait_until(
            lambda name=name, target=target: ping_ok(lab.host(name), target),  # type: ignore[misc]
            timeout=15,
            what=f"{name} pings {target}",
        )
    for name in ("o1", "o2"):
        wait_until(
            lambda name=name: ping_ok(lab.host(name), ROUTER_OUT),  # type: ignore[misc]
            timeout=15,
            what=f"{name} pings the router",
        )
    wait_until(lambda: lb_up(node), timeout=15, what="the load balancer to see b1 up")
    wait_until(lambda: ping_ok(lab.host("a1"), A2), timeout=10, what="a1 pings a2")


def ping_ok(host: LabHost, target: str) -> bool:
    return host.run(["ping", "-c", "1", "-W", "1", target], timeout=10).ok


def lb_up(node: NodeProcess) -> bool:
    (service,) = lb_status(node)["services"]
    return all(row["state"] == "up" for row in service["backends"])


def lb_status(node: NodeProcess) -> dict[str, Any]:
    return next(f for f in node.functions() if f["name"] == "lb1")


def rtts(host: LabHost, target: str, *, count: int = 20, interval: float = 0.05) -> list[float]:
    """Round-trip times (ms) of `count` pings, `interval` s apart (lost ones left out)."""
    argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", target]
    result = host.run(argv, timeout=count * interval + 15)
    return [float(value) for value in re.findall(r"time=([\d.]+)", result.stdout)]


NICE_SESSION = 'echo "$1" > /proc/self/autogroup 2>/dev/null; n=$1; shift; exec nice -n "$n" "$@"'
"""`sh -c` script: run `$2...` at nice `$1`, and give its session's autogroup the same
nice. A host's process starts a session of its own (`LabHost.popen`), and where the
kernel shares the CPU out by session first (`kernel.sched_autogroup_enabled`, on here),
a process's own nice weighs only against its session's other processes. Measured on
a flooder with one core held by a busy loop: at nice 19 alone, hping3 still took 0.4
to 0.5 of a CPU from the others; with its autogroup at 19 too, 0.07 to 0.25."""


@dataclass
class Storm:
    """A flood from one host: hping3 for `seconds` (``timeout``), in the background."""

    host: LabHost
    argv: list[str]
    seconds: float
    nice: int = 0
    """The flooder's nice value: above 0, it yields the CPU it shares with the node and
    the measured hosts (a flooding guest has CPUs of its own; here they are the node's)."""
    started: float = 0.0
    ended: float = 0.0
    sent: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Storm:
        argv = ["timeout", f"{self.seconds:g}", *self.argv]
        if self.nice:
            argv = ["sh", "-c", NICE_SESSION, "sh", str(self.nice), *argv]
        self._process = self.host.popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.started = time.monotonic()
        return self

    def wait(self) -> Storm:
        if self._process is None:
            raise RuntimeError("the storm was not started")
        _out, err = self._process.communicate(timeout=self.seconds + 30)
        self.ended = time.monotonic()
        found = re.search(rb"(\d+) packets transmitted", err)
        self.sent = int(found.group(1)) if found else 0
        return self


def broadcast_storm(lab: Lab, seconds: float) -> Storm:
    """s sends UDP to an address its kernel resolves to the broadcast MAC, as fast as it can."""
    s = lab.host("s")
    s.run(
        [
            *("ip", "neigh", "replace", BROADCAST_NEIGHBOR),
            *("lladdr", "ff:ff:ff:ff:ff:ff", "dev", "eth0", "nud", "permanent"),
        ],
        check=True,
    )
    argv = ["hping3", "--flood", "--udp", "-p", "9", "-d", "18", BROADCAST_NEIGHBOR]
    return Storm(s, argv, seconds)


def syn_flood(host: LabHost, target: str, port: int, seconds: float) -> Storm:
    """`host` sends TCP SYNs to `target`:`port` as fast as it can, each from a new source port."""
    return Storm(host, ["hping3", "-S", "--flood", "-p", str(port), target], seconds)


SCENARIOS = ("broadcast", "syn-nat", "syn-forward", "syn-vip")
"""The floods: a broadcast storm from s; SYNs from s through the NAT to o1, from
o2 at the router's port forward, from s at the load balancer's VIP."""


def scenario_storm(lab: Lab, scenario: str, seconds: float, *, loopback: bool = False) -> Storm:
    """The flood of `scenario`; with `loopback`, the same hping3 aimed at the
    flooder's own loopback (the CPU it burns, nothing sent to the node)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"no scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
    if scenario == "broadcast":
        storm = broadcast_storm(lab, seconds)
    elif scenario == "syn-nat":
        storm = syn_flood(lab.host("s"), O1, 5555, seconds)
    elif scenario == "syn-forward":
        storm = syn_flood(lab.host("o2"), ROUTER_OUT, FORWARD_PORT, seconds)
    else:
        storm = syn_flood(lab.host("s"), VIP, 80, seconds)
    if loopback:
        storm.argv[-1] = "127.0.0.1"
    return storm


@dataclass
class Throughput:
    """One iperf3 TCP flow a1 → o1 through the NAT, with its rate every half second."""

    lab: Lab
    seconds: float
    started: float = 0.0
    intervals: list[tuple[float, float, float]] = field(default_factory=list)
    """(start, end, bits per second), start and end on this process's monotonic clock."""
    local_port: int = 0
    """a1's port of the data connection."""
    _server: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _client: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Throughput:
        o1 = self.lab.host("o1")
        self._server = o1.popen(["iperf3", "-s", "-1", "-B", O1])
        o1.wait_listening(5201, timeout=10)
        argv = ["iperf3", "-c", O1, "-t", f"{self.seconds:g}", "-i", "0.5", "-J"]
        argv += ["--connect-timeout", "3000"]
        self._client = self.lab.host("a1").popen(argv, stdout=subprocess.PIPE)
        self.started = time.monotonic()
        return self

    def wait(self) -> Throughput:
        if self._client is None or self._server is None:
            raise RuntimeError("the flow was not started")
        out, _ = self._client.communicate(timeout=self.seconds + 30)
        self._server.wait(timeout=15)
        report = json.loads(out)
        if "error" in report:
            raise RuntimeError(f"iperf3: {report['error']}")
        self.local_port = int(report["start"]["connected"][0]["local_port"])
        self.intervals = [
            (
                self.started + row["sum"]["start"],
                self.started + row["sum"]["end"],
                float(row["sum"]["bits_per_second"]),
            )
            for row in report["intervals"]
        ]
        return self

    def rate(self, windows: list[tuple[float, float]]) -> float:
        """Median bits per second of the intervals that lie within one of `windows`
        ((start, end) on this process's monotonic clock)."""
        rates = [
            bps
            for begin, finish, bps in self.intervals
            if any(begin >= start and finish <= end for start, end in windows)
        ]
        if not rates:
            raise ValueError(f"no interval of the flow lies within the windows {windows}")
        return statistics.median(rates)


def a1_mappings(node: NodeProcess) -> dict[int, dict[str, Any]]:
    """The router's dynamic TCP mappings of a1, by a1's port."""
    return {
        int(row["internal_port"]): dict(row)
        for row in node.router(limit=100_000)["nat"]
        if row["proto"] == "tcp" and row["internal_address"] == A1 and not row["static"]
    }


def sessions_of(node: NodeProcess, address: str) -> int:
    """The NAT sessions an inside host holds (its mappings' sessions)."""
    return sum(
        int(row["sessions"])
        for row in node.router(limit=100_000)["nat"]
        if row["internal_address"] == address
    )


def counters(node: NodeProcess) -> dict[str, Any]:
    """What the figures need from the node: port drops, holds, tables."""
    status = node.status()
    router = node.router(limit=0)
    lb = lb_status(node)
    ports = {port["name"]: port for port in status["ports"]}
    return {
        "drops": {name: dict(port["drops"]) for name, port in ports.items() if port["drops"]},
        "holds": {name: port["holds"] for name, port in ports.items() if port["holds"]},
        "mac_entries": status["switch"]["mac_entries"],
        "fused_entries": status["fast_path"]["entries"],
        "steering_flows": status["steering"]["flows"],
        "nat_sessions": router["nat_sessions"],
        "nat": {k: v for k, v in router["counters"].items() if k.startswith("nat-")},
        "lb_connections": int(lb["connections"]["total"]),
        "lb_table_full": int(lb["counters"].get("table-full", 0)),
    }


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) process `pid` has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    """What one flood did to the others: RTT, the node's CPU, throughput, before and during it."""

    scenario: str
    seconds: float
    sent: int
    """Frames the flooder sent (hping3's count; most never reach the node)."""
    idle_rtt: float
    """Median RTT a1 → a2 before the flood, ms."""
    storm_rtt: float
    """Median RTT a1 → a2 during the flood, ms."""
    rtt_lost: int
    node_cpu: float
    """The node's CPU during the flood with nothing else to do but the pings (share of a core)."""
    idle_bps: float
    """Median rate of the flow's half-second intervals between floods."""
    storm_bps: float
    """Median rate of the flow's half-second intervals during floods."""
    mapping_before: dict[str, Any] | None
    mapping_after: dict[str, Any] | None
    flooder_sessions: int
    """NAT sessions the flood's inside host holds at the end (s, or b1 behind the forward)."""
    before: dict[str, Any]
    after: dict[str, Any]
    control_bps: float | None = None
    """The flow's rate while the same hping3 ran at the flooder's loopback, if measured."""

    @property
    def rtt_ratio(self) -> float:
        return self.storm_rtt / self.idle_rtt

    @property
    def kept(self) -> float:
        """The share of its idle throughput the flow kept during the flood."""
        return self.storm_bps / self.idle_bps

    @property
    def kept_vs_control(self) -> float:
        """The share of the rate it has under the flooder's CPU load alone that the
        flow kept during the flood (NaN without a control)."""
        return math.nan if self.control_bps is None else self.storm_bps / self.control_bps

    def drops(self) -> dict[str, int]:
        """What the node and its functions dropped during the floods, by reason."""
        grown: dict[str, int] = {}
        for port, reasons in self.after["drops"].items():
            for reason, count in reasons.items():
                more = count - self.before["drops"].get(port, {}).get(reason, 0)
                if more:
                    grown[f"{port} {reason}"] = more
        for name, count in self.after["nat"].items():
            more = count - self.before["nat"].get(name, 0)
            if more and ("limit" in name or "rate" in name):
                grown[f"router {name}"] = more
        full = self.after["lb_table_full"] - self.before["lb_table_full"]
        if full:
            grown["lb1 table-full"] = full
        return grown

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seconds": self.seconds,
            "flooder_sent": self.sent,
            "rtt_idle_ms": round(self.idle_rtt, 3),
            "rtt_storm_ms": round(self.storm_rtt, 3),
            "rtt_ratio": round(self.rtt_ratio, 2),
            "rtt_lost": self.rtt_lost,
            "node_cpu": round(self.node_cpu, 2),
            "tcp_idle_gbps": round(self.idle_bps / 1e9, 2),
            "tcp_storm_gbps": round(self.storm_bps / 1e9, 2),
            "tcp_kept": round(self.kept, 2),
            "tcp_cpu_only_gbps": None
            if self.control_bps is None
            else round(self.control_bps / 1e9, 2),
            "tcp_kept_vs_cpu_only": None
            if self.control_bps is None
            else round(self.storm_bps / self.control_bps, 2),
            "nat_mapping_kept": self.mapping_kept,
            "drops": self.drops(),
            "holds": {
                port: count - self.before["holds"].get(port, 0)
                for port, count in self.after["holds"].items()
                if count != self.before["holds"].get(port, 0)
            },
            "tables": {
                "mac_entries": self.after["mac_entries"],
                "fused_entries": self.after["fused_entries"],
                "steering_flows": self.after["steering_flows"],
                "nat_sessions": self.after["nat_sessions"],
                "flooder_nat_sessions": self.flooder_sessions,
                "lb_connections": self.after["lb_connections"],
            },
        }

    @property
    def mapping_kept(self) -> bool:
        """Whether the flow's NAT mapping outlived the floods with its external port."""
        before, after = self.mapping_before, self.mapping_after
        return (
            before is not None
            and after is not None
            and before["external_port"] == after["external_port"]
            and after["sessions"] >= 1
        )


def measure(
    lab: Lab,
    node: NodeProcess,
    scenario: str,
    *,
    seconds: float = 3.0,
    rounds: int = 2,
    control: bool = False,
    nice: int = 0,
    during: Callable[[Storm], None] | None = None,
) -> Figures:
    """Time a1's pings to a2 and the node's CPU, then a1's iperf3 flow through the NAT,
    before and during floods of `scenario`.

    Pings first, with nothing else running: 20 pings 50 ms apart, then a flood
    `seconds` long with pings again from half a second into it, the node's
    CPU time counted meanwhile. Then the flow, with `rounds` floods of
    `seconds` each, `seconds` apart: the flow's rate is the median of its
    half-second intervals between floods against the median of those during
    them (alternating, so that a change of the machine's load weighs on both).
    With `control`, each flood of the flow's part comes right after the same
    flooder aimed at its own loopback for as long (`scenario_storm`): the CPU
    it burns without a frame for the node, whose rate is `Figures.control_bps`.
    `nice` is the flooder's nice value (`Storm.nice`). `during` is called with
    each flood of the flow's part once it runs (a profiler, say) and should
    return before it ends. With no `rounds`, no flow (its rates are NaN).
    """

    def flood(loopback: bool = False) -> Storm:
        storm = scenario_storm(lab, scenario, seconds, loopback=loopback)
        storm.nice = nice
        return storm.start()

    a1 = lab.host("a1")
    pings = max(5, int((seconds - 1.0) / 0.05))
    idle_rtts = rtts(a1, A2, count=pings)
    before = counters(node)
    storm = flood()
    time.sleep(0.5)  # the flood's own start
    cpu = cpu_seconds(node.pid)
    clock = time.monotonic()
    storm_rtts = rtts(a1, A2, count=pings)
    node_cpu = (cpu_seconds(node.pid) - cpu) / (time.monotonic() - clock)
    sent = storm.wait().sent
    flooder = B1 if scenario == "syn-forward" else S
    figures = Figures(
        scenario=scenario,
        seconds=seconds,
        sent=sent,
        idle_rtt=statistics.median(idle_rtts),
        storm_rtt=statistics.median(storm_rtts) if storm_rtts else float("inf"),
        rtt_lost=pings - len(storm_rtts),
        node_cpu=node_cpu,
        idle_bps=math.nan,
        storm_bps=math.nan,
        mapping_before=None,
        mapping_after=None,
        flooder_sessions=0,
        before=before,
        after=before,
    )
    if rounds:
        _measure_flow(lab, node, figures, rounds, control, flood, during)
    figures.after = counters(node)
    figures.flooder_sessions = sessions_of(node, flooder)
    return figures


def _measure_flow(  # noqa: PLR0917 - the parts of `measure`
    lab: Lab,
    node: NodeProcess,
    figures: Figures,
    rounds: int,
    control: bool,
    flood: Callable[..., Storm],
    during: Callable[[Storm], None] | None,
) -> None:
    """The flow's part of `measure`: its rates, floods and NAT mapping, into `figures`."""
    seconds = figures.seconds
    per_round = seconds * (3 if control else 2)
    flow = Throughput(lab, rounds * per_round + seconds + 0.5).start()
    wait_until(lambda: len(a1_mappings(node)) >= 2, timeout=10, what="a1's iperf3 connections")
    windows: dict[str, list[tuple[float, float]]] = {"idle": [], "control": [], "storm": []}
    mappings: dict[int, dict[str, Any]] = {}
    quiet = flow.started + 0.5  # past the flow's slow start
    for _ in range(rounds):
        time.sleep(max(0.0, quiet + seconds - 0.5 - time.monotonic()))
        if not mappings:
            mappings = a1_mappings(node)
        if control:
            burner = flood(loopback=True)
            windows["idle"].append((quiet, burner.started))
            burner.wait()
            windows["control"].append((burner.started + 0.5, burner.ended))
            quiet = burner.ended
        storm = flood()
        if not control:
            windows["idle"].append((quiet, storm.started))
        if during is not None:
            during(storm)
        storm.wait()
        figures.sent += storm.sent
        windows["storm"].append((storm.started + 0.5, storm.ended))
        quiet = storm.ended + 0.5  # the flood's queues drained
    later = a1_mappings(node)
    flow.wait()
    windows["idle"].append((quiet, flow.started + flow.seconds))
    figures.idle_bps = flow.rate(windows["idle"])
    figures.storm_bps = flow.rate(windows["storm"])
    if control:
        figures.control_bps = flow.rate(windows["control"])
    figures.mapping_before = mappings.get(flow.local_port)
    figures.mapping_after = later.get(flow.local_port)
