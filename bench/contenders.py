"""Every contender in one run: pktchain's two fast paths against the kernel, a Linux
bridge, Open vSwitch and nftables, on the same machine, figure by figure.

Three labs are up at once:

- the kernel's contenders: k1 -- kr -- k2 with kr forwarding IPv4
  (bench/chain_fastpath.py's), b1/b2 on a Linux bridge, o1/o2 on an Open vSwitch
  bridge (userspace `netdev` datapath, NORMAL action; a private ovsdb-server and
  ovs-vswitchd in the switch host sw, tests/support/contenders.py), and
  inside -- nat -- outside with nftables masquerade on nat (the addresses of
  the router lab, tests/support/nat_lab.py);
- two pktchain nodes, each with p1/p2 as its ports, the five native functions
  and the firewall, load balancer and monitor of bench/chain_fastpath.py, and
  the router with NAT between an inside and an outside host (same addresses):
  one with TAP NICs and the Python fast path (`--host-nic tap
  --no-kernel-fastpath`), one with veth NICs and the kernel fast path
  (`--host-nic veth`, docs/kernel-fastpath.md).

Figures, each taken on every contender in turn, `--repeat` times, medians kept:

- plain switching (no chain; pktchain, Linux bridge, Open vSwitch): 64-byte UDP
  frames per second (bench/udpflood.py, counted at the receiver), TCP
  throughput (iperf3, one stream), ping RTT (`--pings` echoes 5 ms apart, mean;
  how the echoes of all runs spread is printed beside it);
- a chain of 3 native functions, and firewall -> load balancer -> monitor (the
  client sends to the load balancer's virtual IP): small UDP frames and TCP,
  against kernel forwarding. The UDP flows to the virtual IP are answered once
  by the backend before the flood: the load balancer leases a UDP flow to the
  fast path once it is answered, so both figures are of established flows;
- new TCP connections per second through the NAT (bench/tcpconns.py: connect,
  the server's FIN, close, for `--seconds` or `--conns` connections), pktchain's
  router against nftables masquerade, `--parallel` connections under way at
  once. The limits that nftables masquerade does not have are lifted unless
  `--default-limits` is given: the node's slow-path rate per host port (1000
  frames/s) and the NAT's new sessions per host per second and sessions per
  host, so that the figure is what each path can translate.

It prints the medians and one line per ratio with its goal, e.g.
``kernel fast path, chain3 / kernel (small packets): 1.08 (goal >= 1.00, met)``;
`--json` prints the same with every sample. Not a pass/fail test.

    .venv/bin/python bench/contenders.py [--seconds 3] [--repeat 3] [--pings 500]
        [--conns 20000] [--parallel 16] [--default-limits] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from chain_fastpath import (
    ADDRESSES,
    DEFAULT_CONFIGS,
    DEFAULT_KINDS,
    FLOOD_PORT,
    IPERF_PORT,
    LB_FRONTEND_MAC,
    VIP,
    backend_up,
    chain_node,
    clear_chains,
    kernel_hosts,
    node_hosts,
    tcp_gbps,
    use_chain,
    use_service_chains,
)
from nat_sessions import router as nat_router
from nat_sessions import topology as nat_topology
from pktchain.lab import Lab, wait_until
from pktchain.node.client import ChainingClient
from pktchain.node.process import NodeProcess
from switch_vs_bridge import flood_rate, mac_of, rtt_ms

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the contenders' set-up
from support.contenders import OpenVswitch, masquerade, ovs_missing  # noqa: E402
from support.nat_lab import INSIDE, OUTSIDE, ROUTER_IN, ROUTER_OUT  # noqa: E402

TCPCONNS = HERE / "tcpconns.py"
CONN_PORT = 7200
"""Each run's connections go to a server port of their own (CONN_PORT + run):
no connection meets the lingering state of an earlier run's."""
PORT_RANGE = "1024 65535"
"""The connecting hosts' ephemeral ports: as many as a run may use."""

MODES = {
    "python": ("Python fast path", ("--host-nic", "tap", "--no-kernel-fastpath")),
    "kfp": ("kernel fast path", ("--host-nic", "veth")),
}
CONTENDERS = {
    "kernel": "kernel forwarding",
    "bridge": "Linux bridge",
    "ovs": "Open vSwitch (netdev)",
    "nftables": "nftables masquerade",
    "python": "pktchain, Python fast path",
    "kfp": "pktchain, kernel fast path",
}
FLOOD_FLOWS, FLOOD_SPORT = 8, 10000
"""bench/udpflood.py's flows by default: source ports 10000 to 10007."""
UDP_REPLIER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind((sys.argv[1], int(sys.argv[2])))\n"
    "s.settimeout(float(sys.argv[4]))\n"
    "peers = set()\n"
    "while len(peers) < int(sys.argv[3]):\n"
    "    data, peer = s.recvfrom(2048)\n"
    "    s.sendto(data, peer)\n"
    "    peers.add(peer)\n"
)
"""Answers one datagram from each of `count` peers, then exits (or after `timeout` s idle)."""
PAIRS = {"bridge": ("b1", "b2", "10.72.5"), "ovs": ("o1", "o2", "10.72.6")}
"""The kernel lab's switched pairs: sender, receiver, subnet (.1 and .2)."""


@dataclass(frozen=True)
class Goal:
    """A ratio printed for each mode: the mode's `figure` against `reference`'s."""

    label: str
    figure: str
    reference: str
    python: float | None = None
    """The goal of the Python fast path (None: no goal)."""
    kfp: float | None = None
    """The goal of the kernel fast path."""
    lower_is_better: bool = False

    def target(self, mode: str) -> float | None:
        goal: float | None = getattr(self, mode)
        return goal

    def met(self, mode: str, value: float) -> bool | None:
        target = self.target(mode)
        if target is None:
            return None
        return value <= target if self.lower_is_better else value >= target

    def line(self, mode: str, value: float) -> str:
        target, met = self.target(mode), self.met(mode, value)
        verdict = "no goal"
        if target is not None:
            sign = "<=" if self.lower_is_better else ">="
            verdict = f"goal {sign} {target:.2f}, {'met' if met else 'MISSED'}"
        return f"{MODES[mode][0]}, {self.label}: {value:.2f} ({verdict})"


SMALL, TCP, RTT = "udp_pps", "tcp_gbps", "rtt_ms"
SERVICES = "firewall, load balancer, monitor"
GOALS = (
    Goal("switching / bridge (small packets)", f"switching {SMALL}", "bridge", 0.35, 1.0),
    Goal("switching / bridge (TCP)", f"switching {TCP}", "bridge", 0.50, 1.0),
    Goal("switching RTT / bridge", f"switching {RTT}", "bridge", None, 1.0, lower_is_better=True),
    Goal("switching / ovs (small packets)", f"switching {SMALL}", "ovs", None, 1.0),
    Goal("switching / ovs (TCP)", f"switching {TCP}", "ovs", None, 1.0),
    Goal("switching RTT / ovs", f"switching {RTT}", "ovs", None, 1.0, lower_is_better=True),
    Goal("chain3 / kernel (small packets)", f"chain3 {SMALL}", "kernel", 0.50, 1.0),
    Goal("chain3 / kernel (TCP)", f"chain3 {TCP}", "kernel", 0.60, 1.0),
    Goal(f"{SERVICES} / kernel (small packets)", f"fw-lb-mon {SMALL}", "kernel", None, 1.0),
    Goal(f"{SERVICES} / kernel (TCP)", f"fw-lb-mon {TCP}", "kernel", 0.60, 0.95),
    Goal("NAT, new TCP connections/s / nftables", "nat conns_per_s", "nftables", 0.50, 0.50),
)
"""The kernel fast path's goals: faster than the kernel's own forwarding and
bridge (0.95 of it for TCP through the firewall, load balancer and monitor),
ahead of Open vSwitch on every figure, half of nftables' rate of new
connections. The Python fast path's are bench/switch_vs_bridge.py's and
bench/chain_fastpath.py's, and the same half of nftables' connections."""

KERNEL_FIGURE = {"chain3": "forwarding", "fw-lb-mon": "forwarding"}
"""Kernel forwarding is measured once a run, as the reference of both chains."""


def kernel_topology(name: str) -> dict[str, Any]:
    """The kernel's contenders, each between two hosts of their own."""

    def end(attach: str, address: str, mac: str) -> dict[str, Any]:
        return {"attach": attach, "addresses": [address], "mac": mac}

    hosts = kernel_hosts()
    for contender, attach in (("bridge", ("br0", "br0")), ("ovs", ("sw.eth0", "sw.eth1"))):
        sender, receiver, subnet = PAIRS[contender]
        octet = int(subnet.rsplit(".", 1)[1])
        for n, (host, to) in enumerate(((sender, attach[0]), (receiver, attach[1])), start=1):
            mac = f"02:00:00:72:{octet:02x}:{n:02x}"
            hosts[host] = {"interfaces": {"eth0": end(to, f"{subnet}.{n}/24", mac)}}
    hosts["sw"] = {"interfaces": {"eth0": {}, "eth1": {}}}
    hosts["inside"] = {
        "interfaces": {"eth0": end("nat.eth0", f"{INSIDE}/24", "02:00:00:00:01:0a")},
        "routes": [{"to": "default", "via": ROUTER_IN}],
    }
    hosts["nat"] = {
        "interfaces": {
            "eth0": {"addresses": [f"{ROUTER_IN}/24"], "mac": "02:00:00:00:01:01"},
            "eth1": {"addresses": [f"{ROUTER_OUT}/24"], "mac": "02:00:00:00:02:01"},
        }
    }
    hosts["outside"] = {
        "interfaces": {"eth0": end("nat.eth1", f"{OUTSIDE}/24", "02:00:00:00:02:0a")}
    }
    return {"lab": name, "bridges": ["br0"], "hosts": hosts}


def node_lab_hosts() -> dict[str, Any]:
    """p1 and p2 (switching, chains), inside and outside (the router's NAT)."""
    hosts: dict[str, Any] = nat_topology("hosts-only")["hosts"]
    return {**node_hosts(), **hosts}


def router_file(path: Path, *, default_limits: bool) -> Path:
    """The router of bench/nat_sessions.py; without `default_limits`, no NAT limit
    below what a run offers (nftables masquerade has none)."""
    config = nat_router(200_000)
    if default_limits:
        del config["nat"]["max_sessions"], config["nat"]["max_sessions_per_host"]
    else:
        config["nat"]["new_sessions_per_host_rate"] = None
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


LIFTED_PORT_LIMITS = ("--port-slow-path-rate", "off")
"""A host port's frames for a native function (a connection's SYN, FIN, first
packets), 1000/s by default: a policy against one host's floods that would
otherwise be the figure of new connections."""


def conns_per_s(
    lab: Lab, port: int, *, seconds: float, count: int, parallel: int
) -> dict[str, Any]:
    """bench/tcpconns.py from the lab's inside host to a server on its outside host."""
    python = sys.executable
    server = lab.host("outside").popen(
        [python, str(TCPCONNS), "server", OUTSIDE, str(port), "--seconds", str(seconds + 60)]
    )
    try:
        lab.host("outside").wait_listening(port, timeout=10)
        argv = [python, str(TCPCONNS), "client", OUTSIDE, str(port)]
        argv += ["--count", str(count), "--seconds", str(seconds), "--parallel", str(parallel)]
        done = lab.host("inside").run(argv, timeout=seconds + 60, check=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def answer_udp_flows(lab: Lab) -> None:
    """Have the backend p2 answer one datagram of each flood flow sent to the virtual IP.

    The load balancer gives a UDP flow its fast-path lease once the backend has
    answered (a flow one way only stays on the slow path, every packet), so the
    small-packet figure through it is that of established flows, as for TCP.
    """
    p1, p2 = lab.host("p1"), lab.host("p2")
    replier = p2.popen(
        [
            sys.executable,
            "-c",
            UDP_REPLIER,
            ADDRESSES["p2"],
            str(FLOOD_PORT),
            str(FLOOD_FLOWS),
            "10",
        ]
    )
    try:
        p2.wait_listening(FLOOD_PORT, kind=socket.SOCK_DGRAM, timeout=10)
        for flow in range(FLOOD_FLOWS):
            with p1.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((ADDRESSES["p1"], FLOOD_SPORT + flow))
                sock.settimeout(1.0)
                for _ in range(5):  # the first datagram may meet a backend still unknown
                    sock.sendto(b"answer me", (VIP, FLOOD_PORT))
                    try:
                        sock.recv(2048)
                        break
                    except TimeoutError:
                        continue
                else:
                    raise RuntimeError(f"no answer through the load balancer to flow {flow}")
        replier.wait(timeout=10)
    finally:
        if replier.poll() is None:
            replier.kill()
            replier.wait(timeout=10)


@dataclass
class Node:
    """One pktchain node of the run: its lab, process, API."""

    mode: str
    lab: Lab
    process: NodeProcess
    api: ChainingClient

    def fast_path(self) -> dict[str, Any]:
        fast: dict[str, Any] = self.process.status()["fast_path"]
        return fast

    def check_fast_path(self) -> None:
        """Stop the run if the node does not run the fast path it is measured as."""
        kernel = self.fast_path().get("kernel") or {}
        if self.mode == "kfp" and not (kernel.get("active") and kernel.get("ports")):
            raise SystemExit(f"the kernel fast path is off: {kernel.get('reason')}")
        if self.mode == "python" and kernel.get("active"):
            raise SystemExit("the node of the Python fast path runs the kernel fast path")

    def hits(self) -> tuple[int, int]:
        """Packets both fast paths carried so far, and the kernel's part of them."""
        fast = self.fast_path()
        return int(fast["hits"]), int((fast.get("kernel") or {}).get("hits", 0))


@dataclass
class Contest:
    """The labs of one run and what was measured in them."""

    args: argparse.Namespace
    klab: Lab
    nodes: dict[str, Node]
    macs: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    carried: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """Fast-path packets (all, kernel) by figure and mode, summed over the runs."""
    nat_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    echoes: dict[str, list[float]] = field(default_factory=dict)
    """Every echo's RTT (ms) of the switching RTT runs, by contender."""

    def prepare(self) -> None:
        """iperf3 servers, neighbours known, ephemeral ports, MACs for the floods."""
        klab, labs = self.klab, [n.lab for n in self.nodes.values()]
        for lab, receivers in ((klab, ("k2", "b2", "o2")), *((lab, ("p2",)) for lab in labs)):
            for receiver in receivers:
                lab.host(receiver).popen(["iperf3", "-s", "-p", str(IPERF_PORT)])
                lab.host(receiver).wait_listening(IPERF_PORT, timeout=10)
        pings = [(klab, "k1", ADDRESSES["k2"])]
        pings += [(klab, sender, f"{subnet}.2") for sender, _, subnet in PAIRS.values()]
        pings += [(lab, "inside", OUTSIDE) for lab in (klab, *labs)]
        for lab, sender, address in pings:
            lab.host(sender).run(["ping", "-c", "2", "-W", "2", address], check=True)
        for lab in (klab, *labs):
            lab.host("inside").sysctl("net.ipv4.ip_local_port_range", PORT_RANGE)
        self.macs["kr"] = mac_of(klab.host("kr"))
        for _, receiver, _ in PAIRS.values():
            self.macs[receiver] = mac_of(klab.host(receiver))
        self.macs["p2"] = mac_of(labs[0].host("p2"))

    def record(self, figure: str, contender: str, measure: Callable[[], float]) -> None:
        node = self.nodes.get(contender)
        before = node.hits() if node else (0, 0)
        value = measure()
        if node is not None:
            after = node.hits()
            counts = self.carried.setdefault(figure, {}).setdefault(contender, [0, 0])
            counts[0] += after[0] - before[0]
            counts[1] += after[1] - before[1]
        self.samples.setdefault(f"{figure} {contender}", []).append(value)
        print(f"  {figure} {contender}: {value:,.3f}", file=sys.stderr)

    def flood(self, lab: Lab, pair: tuple[str, str], ips: tuple[str, str], dst_mac: str) -> float:
        """Small UDP frames from pair[0] (ips[0]) to pair[1] (ips[1], by `dst_mac`)."""
        return flood_rate(
            lab,
            *pair,
            src_ip=ips[0],
            dst_ip=ips[1],
            dst_mac=dst_mac,
            seconds=self.args.seconds,
            dport=FLOOD_PORT,
        )

    def node_flood(self, figure: str, dst_ip: str, dst_mac: str) -> None:
        for mode, node in self.nodes.items():
            record = partial(self.flood, node.lab, ("p1", "p2"), (ADDRESSES["p1"], dst_ip), dst_mac)
            self.record(figure, mode, record)

    def node_tcp(self, figure: str, dst_ip: str) -> None:
        for mode, node in self.nodes.items():
            self.record(figure, mode, partial(tcp_gbps, node.lab, "p1", dst_ip, self.args.seconds))

    def switching(self) -> None:
        """Linux bridge, Open vSwitch and pktchain with no chain, switching p1 to p2."""
        seconds, klab = self.args.seconds, self.klab
        for node in self.nodes.values():
            clear_chains(node.api)
        for contender, (sender, receiver, subnet) in PAIRS.items():
            ips = (f"{subnet}.1", f"{subnet}.2")
            measure = partial(self.flood, klab, (sender, receiver), ips, self.macs[receiver])
            self.record(f"switching {SMALL}", contender, measure)
        self.node_flood(f"switching {SMALL}", ADDRESSES["p2"], self.macs["p2"])
        for contender, (sender, _, subnet) in PAIRS.items():
            measure = partial(tcp_gbps, klab, sender, f"{subnet}.2", seconds)
            self.record(f"switching {TCP}", contender, measure)
        self.node_tcp(f"switching {TCP}", ADDRESSES["p2"])
        pings = self.args.pings
        for contender, pair in PAIRS.items():
            echoes = self.echoes.setdefault(contender, [])
            measure = partial(rtt_ms, klab, pair, pings, echoes)
            self.record(f"switching {RTT}", contender, measure)
        for mode, node in self.nodes.items():
            echoes = self.echoes.setdefault(mode, [])
            measure = partial(rtt_ms, node.lab, ("p1", "p2", "10.72.3"), pings, echoes)
            self.record(f"switching {RTT}", mode, measure)

    def forwarding(self) -> None:
        """Kernel IPv4 forwarding, k1 to k2."""
        ips = (ADDRESSES["k1"], ADDRESSES["k2"])
        measure = partial(self.flood, self.klab, ("k1", "k2"), ips, self.macs["kr"])
        self.record(f"forwarding {SMALL}", "kernel", measure)
        measure = partial(tcp_gbps, self.klab, "k1", ADDRESSES["k2"], self.args.seconds)
        self.record(f"forwarding {TCP}", "kernel", measure)

    def chain3(self) -> None:
        for node in self.nodes.values():
            use_chain(node.api, 3)
        self.node_flood(f"chain3 {SMALL}", ADDRESSES["p2"], self.macs["p2"])
        self.node_tcp(f"chain3 {TCP}", ADDRESSES["p2"])

    def services(self) -> None:
        """Firewall -> load balancer (to its virtual IP) -> monitor."""
        for node in self.nodes.values():
            use_service_chains(node.api)
        for node in self.nodes.values():
            wait_until(
                partial(backend_up, node.process),
                timeout=10,
                what="the load balancer's health check to find the backend",
            )
        for node in self.nodes.values():
            answer_udp_flows(node.lab)
        self.node_flood(f"fw-lb-mon {SMALL}", VIP, LB_FRONTEND_MAC)
        self.node_tcp(f"fw-lb-mon {TCP}", VIP)

    def nat(self, run: int) -> None:
        """New TCP connections, inside to outside, to a server port new to this run."""
        labs = {"nftables": self.klab, **{m: n.lab for m, n in self.nodes.items()}}
        for contender, lab in labs.items():
            self.record("nat conns_per_s", contender, partial(self.conns, contender, lab, run))

    def conns(self, contender: str, lab: Lab, run: int) -> float:
        args = self.args
        report = conns_per_s(
            lab, CONN_PORT + run, seconds=args.seconds, count=args.conns, parallel=args.parallel
        )
        self.nat_runs.setdefault(contender, []).append(report)
        return float(report["per_second"])

    def median(self, figure: str, contender: str) -> float:
        scenario, metric = figure.split()
        if contender == "kernel":
            scenario = KERNEL_FIGURE.get(scenario, scenario)
        return statistics.median(self.samples[f"{scenario} {metric} {contender}"])


@contextmanager
def contest(args: argparse.Namespace) -> Iterator[Contest]:
    """The three labs, Open vSwitch, the masquerade and both nodes; all gone afterwards."""
    # Open vSwitch's daemons end by themselves after this, whatever happens here.
    lifetime = 1800 + args.repeat * (40 * args.seconds + args.pings * 0.05)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pktchain-bench-")))
        topo = workdir / "kernel.yaml"
        topo.write_text(yaml.safe_dump(kernel_topology(f"bench-{secrets.token_hex(3)}")))
        klab = stack.enter_context(Lab.up(topo))
        switch = OpenVswitch(klab.host("sw"), ["eth0", "eth1"], workdir / "ovs", lifetime=lifetime)
        stack.enter_context(switch)
        masquerade(klab.host("nat"), inside="10.0.0.0/24", outside_ifname="eth1")
        nodes: dict[str, Node] = {}
        for mode, (_, node_args) in MODES.items():
            (workdir / mode).mkdir()
            routes = router_file(workdir / mode / "router.yaml", default_limits=args.default_limits)
            limits = () if args.default_limits else LIFTED_PORT_LIMITS
            lab, process = stack.enter_context(
                chain_node(
                    workdir / mode,
                    list(DEFAULT_KINDS),
                    DEFAULT_CONFIGS,
                    hosts=node_lab_hosts(),
                    node_args=("--router", str(routes), *limits, *node_args),
                )
            )
            nodes[mode] = Node(mode, lab, process, ChainingClient(process.control))
            nodes[mode].check_fast_path()
        yield Contest(args, klab, nodes)


def report(run: Contest) -> dict[str, Any]:
    ratios = []
    for goal in GOALS:
        reference = run.median(goal.figure, goal.reference)
        for mode in MODES:
            value = run.median(goal.figure, mode) / reference if reference else float("nan")
            ratios.append(
                {
                    "mode": mode,
                    "ratio": goal.label,
                    "value": value,
                    "goal": goal.target(mode),
                    "lower_is_better": goal.lower_is_better,
                    "met": goal.met(mode, value),
                    "line": goal.line(mode, value),
                }
            )
    return {
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "seconds": run.args.seconds,
        "repeat": run.args.repeat,
        "pings": run.args.pings,
        "default_limits": run.args.default_limits,
        "contenders": CONTENDERS,
        "samples": run.samples,
        "medians": {key: statistics.median(values) for key, values in run.samples.items()},
        "ratios": ratios,
        "fast_path_packets": {
            figure: {mode: {"all": c[0], "kernel": c[1]} for mode, c in by_mode.items()}
            for figure, by_mode in run.carried.items()
        },
        "nat_runs": run.nat_runs,
        "echoes": {contender: spread(rtts) for contender, rtts in run.echoes.items() if rtts},
    }


def spread(rtts: list[float]) -> dict[str, float]:
    """How the echoes of the switching RTT runs spread (ms): the mean is the figure."""
    cuts = statistics.quantiles(rtts, n=100, method="inclusive")
    return {
        "echoes": len(rtts),
        "mean": statistics.fmean(rtts),
        "median": statistics.median(rtts),
        "p90": cuts[89],
        "p99": cuts[98],
        "max": max(rtts),
        "over_0.1": sum(1 for rtt in rtts if rtt > 0.1),
    }


def print_report(result: dict[str, Any]) -> None:
    for key, value in result["medians"].items():
        figure, metric, contender = key.split()
        print(f"{figure:<10} {metric:<14} {CONTENDERS[contender]:<28} {value:>15,.3f}")
    for row in result["ratios"]:
        print(row["line"])
    for figure, by_mode in result["fast_path_packets"].items():
        if "kfp" in by_mode:
            counts = by_mode["kfp"]
            print(
                f"kernel fast path, {figure}: the kernel carried {counts['kernel']:,} "
                f"of {counts['all']:,} fast-path packets"
            )
    for contender, echoes in result["echoes"].items():
        print(
            f"switching RTT per echo, {CONTENDERS[contender]}: median {echoes['median']:.3f} ms, "
            f"90th {echoes['p90']:.3f}, 99th {echoes['p99']:.3f}, max {echoes['max']:.3f}; "
            f"{echoes['over_0.1']} of {echoes['echoes']} over 0.1 ms"
        )
    for contender, runs in result["nat_runs"].items():
        failures: dict[str, int] = {}
        for nat_run in runs:
            for error, count in nat_run["failures"].items():
                failures[error] = failures.get(error, 0) + count
        if failures:
            print(f"NAT, {CONTENDERS[contender]}: failed connections {failures}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median kept)")
    parser.add_argument("--pings", type=int, default=500, help="echoes per RTT run")
    parser.add_argument("--conns", type=int, default=20_000, help="NAT connections a run, at most")
    parser.add_argument("--parallel", type=int, default=16, help="NAT connections under way")
    parser.add_argument(
        "--default-limits",
        action="store_true",
        help="keep the node's slow-path rate limit and the NAT's per-host limits",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.seconds < 1:
        parser.error("--seconds must be at least 1 (iperf3 counts whole seconds)")
    missing = ovs_missing()
    if missing is not None:
        parser.error(f"Open vSwitch cannot run: {missing}")
    # A termination request unwinds the labs, nodes and daemons as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with contest(args) as run:
        run.prepare()
        print(f"{args.repeat} runs of every figure, medians kept", file=sys.stderr)
        for number in range(args.repeat):
            run.switching()
            run.forwarding()
            run.chain3()
            run.services()
            run.nat(number)
        result = report(run)
        result["fast_path"] = {mode: node.fast_path() for mode, node in run.nodes.items()}
        result["router_counters"] = {
            mode: node.process.router(limit=0)["counters"] for mode, node in run.nodes.items()
        }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
