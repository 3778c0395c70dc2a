"""A chain of three native functions across two nodes, against the same chain on one node.

Two labs are up at once and measured alternately, `--repeat` times, medians
kept:

- one node (a lab without `nodes:`, one `pktchain node -t FILE`): hosts p1
  and p2 are its ports, and it runs the three functions f1, f2, f3; beside
  them, k1 -- kr -- k2 over veth links with kr forwarding IPv4
  (`ip_forward=1`), the kernel's figure;
- two nodes (a cluster lab: n1 and n2 on an underlay, MTU 9000 unless
  `--underlay-mtu` says otherwise, and the lab's etcd): c1 and f1 on n1, f2,
  f3 and s1 on n2. The forward path
  crosses the underlay once, after f1 (c1 -> f1 | f2 -> f3 -> s1), and the way
  back once, before f1 (s1 -> f3 -> f2 | f1 -> c1), in NSH over VXLAN-GPE.

The functions are the same kinds with the same settings in both cases:
firewall (accepting by default), flow monitor, firewall. Each case has one
symmetric port chain f1 -> f2 -> f3 for UDP to port 9 and TCP to port 5201,
made through the REST API (for the cluster, n1's, served on its underlay
address with an API token and called from inside the lab's fabric
namespace).

Figures:

- TCP throughput: iperf3, one stream, `--seconds` long;
- 64-byte packets per second: bench/udpflood.py sends 60-byte frames (64 on
  the wire with the FCS) with sendmmsg(2) from the sender's namespace as fast
  as the path takes them; the rate is what the receiver's interface counted
  per second of sending (bench/switch_vs_bridge.py).

It prints the medians, two nodes / one node for both figures (goal >= 0.7),
and each against kernel forwarding; then each node's CPU time per packet and
per GB carried, how busy the machine was, and the share of each run a node
spent runnable but waiting for a core. `--json` prints the same with every
sample and the nodes' fast-path, function and underlay counters.

    .venv/bin/python bench/cluster_chain.py [--seconds 3] [--repeat 3]
        [--underlay-mtu 9000] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import yaml

from pktchain.client.neutron import NeutronClient
from pktchain.lab import Lab, wait_until
from pktchain.lab.topology import DEFAULT_UNDERLAY_MTU
from pktchain.linux.netns import entered
from pktchain.node.config import NODE_API_PORT
from pktchain.node.process import NodeProcess
from pktchain.sfc.resources import ResourceKind
from switch_vs_bridge import cpu_seconds, flood_rate, mac_of

HERE = Path(__file__).resolve().parent
GOAL = 0.7
"""Two nodes / one node, for both figures."""
FLOOD_PORT = 9
IPERF_PORT = 5201
FUNCTIONS: tuple[dict[str, Any], ...] = (
    {"name": "f1", "kind": "firewall", "config": {"default": "accept"}},
    {"name": "f2", "kind": "flow-monitor", "config": {}},
    {"name": "f3", "kind": "firewall", "config": {"default": "accept"}},
)
SPLIT = {"n1": ("f1",), "n2": ("f2", "f3")}
"""Which node of the cluster runs which function."""
START_TIMEOUT = 30.0
T = TypeVar("T")


def _eth(address: str, *, attach: str | None = None, mac: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"addresses": [address]}
    if attach is not None:
        spec["attach"] = attach
    if mac is not None:
        spec["mac"] = mac
    return spec


def single_topology(name: str) -> dict[str, Any]:
    """The kernel's path and the one node's two hosts."""
    return {
        "lab": name,
        "hosts": {
            "k1": {
                "interfaces": {"eth0": _eth("10.73.1.1/24", attach="kr.eth0")},
                "routes": [{"to": "default", "via": "10.73.1.254"}],
            },
            "kr": {
                "sysctls": {"net.ipv4.ip_forward": 1},
                "interfaces": {"eth0": _eth("10.73.1.254/24"), "eth1": _eth("10.73.2.254/24")},
            },
            "k2": {
                "interfaces": {"eth0": _eth("10.73.2.2/24", attach="kr.eth1")},
                "routes": [{"to": "default", "via": "10.73.2.254"}],
            },
            "p1": {
                "interfaces": {"eth0": _eth("10.73.3.1/24", attach="node", mac="02:00:00:73:03:01")}
            },
            "p2": {
                "interfaces": {"eth0": _eth("10.73.3.2/24", attach="node", mac="02:00:00:73:03:02")}
            },
        },
    }


def cluster_topology(name: str, underlay_mtu: int = DEFAULT_UNDERLAY_MTU) -> dict[str, Any]:
    """Two nodes on an underlay, c1 on n1 and s1 on n2."""
    return {
        "lab": name,
        "underlay": "10.251.73.0/24",
        "underlay_mtu": underlay_mtu,
        "nodes": {"n1": {}, "n2": {}},
        "hosts": {
            "c1": {
                "node": "n1",
                "interfaces": {
                    "eth0": _eth("10.74.0.1/24", attach="node", mac="02:00:00:74:00:01")
                },
            },
            "s1": {
                "node": "n2",
                "interfaces": {
                    "eth0": _eth("10.74.0.2/24", attach="node", mac="02:00:00:74:00:02")
                },
            },
        },
    }


@dataclass(frozen=True)
class Case:
    """One way of running the chain: where its ends are and which nodes run it."""

    name: str
    lab: Lab
    nodes: tuple[NodeProcess, ...]
    sender: str
    receiver: str
    src_ip: str
    dst_ip: str
    dst_mac: str = field(default="")

    def cpu(self) -> tuple[float, float]:
        """User and system CPU seconds of all its nodes so far."""
        times = [cpu_seconds(node.pid) for node in self.nodes]
        return sum(u for u, _ in times), sum(s for _, s in times)


class ChainApi:
    """The networking-sfc REST API of one node, called from inside `netns` if given."""

    def __init__(self, url: str, *, token: str | None = None, netns: str | None = None) -> None:
        self.client = NeutronClient(url, token)
        self.netns = netns

    def call(self, request: Callable[[NeutronClient], T]) -> T:
        with entered(self.netns):  # urllib connects per request, in this thread
            return request(self.client)

    def create(self, kind: ResourceKind, **body: Any) -> str:
        return str(self.call(lambda c: c.create(kind, body))["id"])

    def port_id(self, name: str) -> str:
        return self.call(lambda c: c.find_id(ResourceKind.PORT, name))

    def port_names(self) -> set[str]:
        return {str(p["name"]) for p in self.call(lambda c: c.list(ResourceKind.PORT))}

    def chain_names(self) -> set[str]:
        return {str(p["name"]) for p in self.call(lambda c: c.list(ResourceKind.PORT_CHAIN))}

    def make_chain(self, source: str, destination: str, functions: list[str]) -> None:
        """One symmetric chain through `functions` for UDP to 9 and TCP to 5201."""
        classifiers = [
            self.create(
                ResourceKind.FLOW_CLASSIFIER,
                name=f"{proto}{port}",
                protocol=proto,
                destination_port_range_min=port,
                destination_port_range_max=port,
                logical_source_port=self.port_id(source),
                logical_destination_port=self.port_id(destination),
            )
            for proto, port in (("udp", FLOOD_PORT), ("tcp", IPERF_PORT))
        ]
        groups = []
        for function in functions:
            pair = self.create(
                ResourceKind.PORT_PAIR,
                name=f"pp-{function}",
                ingress=self.port_id(f"{function}:ingress"),
                egress=self.port_id(f"{function}:egress"),
            )
            groups.append(
                self.create(ResourceKind.PORT_PAIR_GROUP, name=f"g-{function}", port_pairs=[pair])
            )
        self.create(
            ResourceKind.PORT_CHAIN,
            name="chain",
            port_pair_groups=groups,
            flow_classifiers=classifiers,
            chain_parameters={"symmetric": True},
        )


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@contextmanager
def single_case(workdir: Path) -> Iterator[tuple[Case, Case]]:
    """The kernel's path and the chain on one node: (kernel, one node)."""
    name = f"bench-{secrets.token_hex(3)}"
    topology = write_yaml(workdir / "single.yaml", single_topology(name))
    functions = write_yaml(workdir / "single-functions.yaml", {"functions": list(FUNCTIONS)})
    with (
        Lab.up(topology) as lab,
        NodeProcess(
            name,
            topology=topology,
            log_path=workdir / "single-node.log",
            args=("--functions", str(functions)),
        ) as node,
    ):
        ChainApi(node.api_url()).make_chain("p1:eth0", "p2:eth0", [f["name"] for f in FUNCTIONS])
        lab.host("k1").run(["ping", "-c", "2", "-W", "2", "10.73.2.2"], check=True)
        lab.host("p1").run(["ping", "-c", "2", "-W", "2", "10.73.3.2"], check=True)
        kernel = Case(
            "kernel", lab, (), "k1", "k2", "10.73.1.1", "10.73.2.2", mac_of(lab.host("kr"))
        )
        one = Case("one node", lab, (node,), "p1", "p2", "10.73.3.1", "10.73.3.2")
        yield kernel, one


def _sees_nodes(node: NodeProcess, names: list[str]) -> bool:
    return bool(node.status()["cluster"]["nodes"] == names)


def _knows_ports(api: ChainApi, names: set[str]) -> bool:
    return api.port_names() >= names


@contextmanager
def cluster_case(workdir: Path, underlay_mtu: int = DEFAULT_UNDERLAY_MTU) -> Iterator[Case]:
    """The chain across n1 and n2 of a cluster lab."""
    name = f"bench-{secrets.token_hex(3)}"
    topology = write_yaml(workdir / "cluster.yaml", cluster_topology(name, underlay_mtu))
    token = secrets.token_hex(16)
    with ExitStack() as stack:
        lab = stack.enter_context(Lab.up(topology))
        etcd = lab.topology.etcd
        if etcd is None:
            raise RuntimeError("the cluster lab runs no etcd")
        nodes: list[NodeProcess] = []
        for node, hosted in SPLIT.items():
            functions = write_yaml(
                workdir / f"{node}-functions.yaml",
                {"functions": [f for f in FUNCTIONS if f["name"] in hosted]},
            )
            underlay = lab.topology.node(node).underlay.ip
            process = NodeProcess(
                f"{name}-{node}",
                topology=topology,
                node=node,
                etcd=etcd.client_url,
                api=f"{underlay}:{NODE_API_PORT}",
                args=("--functions", str(functions), "--api-token", token),
                log_path=workdir / f"{node}.log",
            )
            stack.push(process)  # stopped on the way out, even if it fails to start
            nodes.append(process.start(timeout=START_TIMEOUT))
        fabric = lab.topology.fabric_netns
        apis = [ChainApi(n.api_url(), token=token, netns=fabric) for n in nodes]
        every_port = {"c1:eth0", "s1:eth0"} | {
            f"{f['name']}:{side}" for f in FUNCTIONS for side in ("ingress", "egress")
        }
        registered = sorted(n.name for n in nodes)
        for process, api in zip(nodes, apis, strict=True):
            wait_until(
                partial(_sees_nodes, process, registered),
                timeout=START_TIMEOUT,
                what=f"{process.name} to see every node of the cluster",
            )
            wait_until(
                partial(_knows_ports, api, every_port),
                timeout=START_TIMEOUT,
                what=f"{process.name} to know every port of the cluster",
            )
        apis[0].make_chain("c1:eth0", "s1:eth0", [f["name"] for f in FUNCTIONS])
        wait_until(
            lambda: "chain" in apis[1].chain_names(),
            timeout=START_TIMEOUT,
            what="n2 to have the chain made through n1",
        )
        lab.host("c1").run(["ping", "-c", "2", "-W", "2", "10.74.0.2"], check=True)
        yield Case("two nodes", lab, tuple(nodes), "c1", "s1", "10.74.0.1", "10.74.0.2")


def tcp_gbps(case: Case, seconds: float) -> float:
    """iperf3 from the sender to the receiver's server (started once), one stream."""
    argv = ["iperf3", "-c", case.dst_ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"]
    argv += ["--connect-timeout", "3000"]
    result = case.lab.host(case.sender).run(argv, timeout=seconds + 30, check=True)
    return float(json.loads(result.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9


def udp_pps(case: Case, seconds: float) -> float:
    """64-byte frames from the sender, counted by the receiver per second of sending."""
    dst_mac = case.dst_mac or mac_of(case.lab.host(case.receiver))
    return flood_rate(
        case.lab,
        case.sender,
        case.receiver,
        src_ip=case.src_ip,
        dst_ip=case.dst_ip,
        dst_mac=dst_mac,
        seconds=seconds,
        dport=FLOOD_PORT,
    )


def node_counters(node: NodeProcess) -> dict[str, Any]:
    """What shows that the chain carried the traffic: fast path, functions, underlay."""
    status = node.status()
    cluster = status.get("cluster") or {}
    peers = cluster.get("peers") or {}
    return {
        "fast_path": status["fast_path"],
        "functions": {
            f["name"]: f.get("verdicts")
            for f in node.functions()
            if f["name"] in SPLIT["n1"] + SPLIT["n2"]
        },
        "underlay": {k: peers[k] for k in ("rx_packets", "rx_bytes", "drops") if k in peers},
        "port_drops": {p["name"]: p["drops"] for p in status["ports"] if p.get("drops")},
    }


def machine_busy() -> float:
    """Core-seconds the machine has been busy so far (/proc/stat: all but idle and iowait)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    """One measurement and what the machine and the case's nodes spent on it."""

    value: float
    wall: float
    machine: float
    """Core-seconds the machine was busy."""
    nodes: tuple[float, ...]
    """CPU seconds (user + system) of each node of the case."""
    waiting: tuple[float, ...]
    """Seconds each node's threads spent runnable on a run queue, not running."""


def run_queue_seconds(pid: int) -> float:
    """Time the process's threads have waited on a run queue (schedstat, field 2)."""
    return sum(
        int((task / "schedstat").read_text().split()[1]) / 1e9
        for task in Path(f"/proc/{pid}/task").iterdir()
    )


def measure(case: Case, run: Callable[[Case, float], float], seconds: float) -> Run:
    nodes_before = [sum(cpu_seconds(n.pid)) for n in case.nodes]
    waiting_before = [run_queue_seconds(n.pid) for n in case.nodes]
    busy_before, start = machine_busy(), time.monotonic()
    value = run(case, seconds)
    wall = time.monotonic() - start
    busy = machine_busy() - busy_before
    nodes = [sum(cpu_seconds(n.pid)) - b for n, b in zip(case.nodes, nodes_before, strict=True)]
    waiting = [
        run_queue_seconds(n.pid) - b for n, b in zip(case.nodes, waiting_before, strict=True)
    ]
    return Run(value, wall, busy, tuple(nodes), tuple(waiting))


def cost(metric: str, run: Run, seconds: float) -> tuple[float, ...]:
    """Each node's CPU per unit carried: µs per packet, or core-seconds per GB."""
    units = run.value * seconds * (1e-6 if metric == "udp_pps" else 1 / 8)
    return tuple(cpu / units if units else math.inf for cpu in run.nodes)


def shares(seconds: tuple[float, ...], wall: float) -> tuple[float, ...]:
    return tuple(s / wall for s in seconds)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # leave through the `with` blocks: labs and nodes go


METRICS = {"udp_pps": (udp_pps, "64-byte packets/s"), "tcp_gbps": (tcp_gbps, "TCP Gbit/s")}
COST_UNITS = {"udp_pps": "µs per packet", "tcp_gbps": "core-s per GB"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median kept)")
    parser.add_argument(
        "--underlay-mtu",
        type=int,
        default=DEFAULT_UNDERLAY_MTU,
        help="MTU of the cluster's underlay (default %(default)s, the labs' default)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    if args.seconds <= 0 or args.repeat < 1:
        parser.error("--seconds must be positive and --repeat at least 1")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    runs: dict[tuple[str, str], list[Run]] = {}
    counters: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="pktchain-bench-") as tmp,
        single_case(Path(tmp)) as (kernel, one),
        cluster_case(Path(tmp), args.underlay_mtu) as two,
    ):
        cases = (kernel, one, two)
        for case in cases:  # iperf3 servers for every TCP run
            case.lab.host(case.receiver).popen(["iperf3", "-s", "-p", str(IPERF_PORT)])
            case.lab.host(case.receiver).wait_listening(IPERF_PORT, timeout=10)
        print(f"measuring: {args.repeat} runs each, {args.seconds} s per run", file=sys.stderr)
        for _ in range(args.repeat):
            for metric, (run, _label) in METRICS.items():
                for case in cases:
                    result = measure(case, run, args.seconds)
                    runs.setdefault((metric, case.name), []).append(result)
                    print(f"  {metric} {case.name}: {result.value:,.3f}", file=sys.stderr)
        for case in (one, two):
            for node in case.nodes:
                counters[node.name] = node_counters(node)

    def median(metric: str, case: Case) -> float:
        return statistics.median(r.value for r in runs[metric, case.name])

    ratios: dict[str, tuple[float, float | None]] = {}
    for metric, label in (("tcp_gbps", "TCP"), ("udp_pps", "64-byte packets")):
        kern, single, cluster = (median(metric, c) for c in (kernel, one, two))
        ratios[f"two nodes / one node ({label})"] = (cluster / single, GOAL)
        ratios[f"one node / kernel ({label})"] = (single / kern, None)
        ratios[f"two nodes / kernel ({label})"] = (cluster / kern, None)
    costs = {
        f"{metric} {case.name}": [
            statistics.median(c)
            for c in zip(
                *(cost(metric, r, args.seconds) for r in runs[metric, case.name]), strict=True
            )
        ]
        for metric in METRICS
        for case in (one, two)
    }
    busy = {
        f"{metric} {case.name}": statistics.median(
            r.machine / r.wall for r in runs[metric, case.name]
        )
        for metric in METRICS
        for case in cases
    }
    waiting = {
        f"{metric} {case.name}": [
            statistics.median(w)
            for w in zip(*(shares(r.waiting, r.wall) for r in runs[metric, case.name]), strict=True)
        ]
        for metric in METRICS
        for case in (one, two)
    }
    report = {
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "functions": list(FUNCTIONS),
        "split": SPLIT,
        "underlay_mtu": args.underlay_mtu,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "samples": {f"{m} {c}": [r.value for r in rs] for (m, c), rs in runs.items()},
        "medians": {f"{m} {c.name}": median(m, c) for m in METRICS for c in cases},
        "ratios": {
            key: {"ratio": r, "goal": g, "met": None if g is None else r >= g}
            for key, (r, g) in ratios.items()
        },
        "node_cpu_per_unit": {
            key: {"unit": COST_UNITS[key.split()[0]], "per_node": values}
            for key, values in costs.items()
        },
        "machine_busy_cores": busy,
        "node_run_queue_share": waiting,
        "runs": {
            f"{m} {c}": [
                {
                    "value": r.value,
                    "wall": round(r.wall, 3),
                    "machine_busy_s": round(r.machine, 2),
                    "node_cpu_s": [round(x, 2) for x in r.nodes],
                    "node_run_queue_s": [round(x, 2) for x in r.waiting],
                }
                for r in rs
            ]
            for (m, c), rs in runs.items()
        },
        "nodes": counters,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'figure':<18} {'kernel':>12} {'one node':>12} {'two nodes':>12}")
    for metric, (_run, label) in METRICS.items():
        row = [median(metric, c) for c in (kernel, one, two)]
        print(f"{label:<18} " + " ".join(f"{v:>12,.2f}" for v in row))
    for key, (ratio, goal) in ratios.items():
        verdict = (
            "" if goal is None else f"  goal ≥ {goal:.2f} {'met' if ratio >= goal else 'MISSED'}"
        )
        print(f"{key:<40} {ratio:5.2f}{verdict}")
    print("node CPU per unit carried (median; two nodes: n1, n2):")
    for key, values in costs.items():
        unit = COST_UNITS[key.split()[0]]
        print(f"  {key:<22} " + " + ".join(f"{v:.2f}" for v in values) + f" {unit}")
    print("machine busy, cores of 2 (median):")
    for key, value in busy.items():
        print(f"  {key:<22} {value:.2f}")
    print("share of the run each node spent runnable but waiting for a core (median):")
    for key, values in waiting.items():
        print(f"  {key:<22} " + " + ".join(f"{v:.2f}" for v in values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
