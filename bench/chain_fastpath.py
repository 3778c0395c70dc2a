"""Chains of native functions on the fused fast path, against kernel IP forwarding.

One lab holds two paths, measured alternately, `--repeat` times, medians kept:

- kernel: k1 -- kr -- k2, veth links, kr forwarding IPv4 (`ip_forward=1`);
- pktchain: p1 and p2 are ports of a node running five native functions; a
  port chain steers the traffic through the first N of them (N = 1, 3, 5) and,
  symmetric, back.

Figures:

- 64-byte UDP packets per second (bench/udpflood.py, sendmmsg from the sender's
  namespace; the rate is what the receiver's interface counted per second of
  sending) for the kernel and for chains of 1, 3 and 5 functions;
- TCP throughput (iperf3, one stream) for the kernel, for the 3-function
  chain, and through firewall → load balancer → flow monitor: p1 connects to
  the load balancer's virtual IP; a chain steers its packets through the
  firewall to the load balancer (one-arm), which sends them from its own
  address to the backend p2 through a second chain with the flow monitor.

Goals from the issue, printed with the ratios: the 5-function chain ≥ 0.85 of
the 1-function rate; the 3-function chain ≥ 0.50 of kernel forwarding (small
packets); TCP through three functions ≥ 0.60 of kernel forwarding.

`--kinds` names the five functions (built-in kinds or module:Class, with
`--config KIND=JSON` for their settings); the default is a chain of the
built-ins that lease their flows, and `--kinds pass` measures the hop itself
with a do-nothing function (bench/chain_functions.py).

    .venv/bin/python bench/chain_fastpath.py [--seconds 3] [--repeat 3] [--kinds ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from pktchain.lab import Lab, wait_until
from pktchain.node.client import ChainingClient
from pktchain.node.process import NodeProcess
from switch_vs_bridge import cpu_seconds, flood_rate, mac_of

HERE = Path(__file__).resolve().parent
DEFAULT_KINDS = ("firewall", "flow-monitor", "firewall", "flow-monitor", "firewall")
DEFAULT_CONFIGS: dict[str, dict[str, Any]] = {"firewall": {"default": "accept"}}
LENGTHS = (1, 3, 5)
FLOOD_PORT = 9
IPERF_PORT = 5201
ADDRESSES = {"k1": "10.72.1.1", "k2": "10.72.2.2", "p1": "10.72.3.1", "p2": "10.72.3.2"}
VIP, LB_SOURCE = "10.72.3.100", "10.72.3.50"
LB_FRONTEND_MAC = "02:00:00:72:03:64"
SERVICE_FUNCTIONS = [
    {"name": "fw", "kind": "firewall", "config": {"default": "accept"}},
    {
        "name": "lb",
        "kind": "load-balancer",
        "config": {
            "frontend_mac": LB_FRONTEND_MAC,
            "backend_mac": "02:00:00:72:03:32",
            "source_ip": LB_SOURCE,
            "health": {"interval": 0.5, "timeout": 0.4, "rise": 1, "init_state": "down"},
            "services": [
                {
                    "vip": VIP,
                    "port": IPERF_PORT,
                    "backends": [{"ip": "10.72.3.2", "port": IPERF_PORT}],
                },
                {
                    "vip": VIP,
                    "port": FLOOD_PORT,
                    "proto": "udp",
                    "backends": [{"ip": "10.72.3.2", "port": FLOOD_PORT, "check_port": IPERF_PORT}],
                },
            ],
        },
    },
    {"name": "mon", "kind": "flow-monitor"},
]


def eth(address: str, attach: str | None = None, mac: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"addresses": [address]}
    if attach is not None:
        spec["attach"] = attach
    if mac is not None:
        spec["mac"] = mac
    return spec


def kernel_hosts() -> dict[str, Any]:
    """k1 -- kr -- k2: the kernel's IPv4 forwarding between two hosts."""
    return {
        "k1": {
            "interfaces": {"eth0": eth("10.72.1.1/24", "kr.eth0")},
            "routes": [{"to": "default", "via": "10.72.1.254"}],
        },
        "kr": {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "interfaces": {"eth0": eth("10.72.1.254/24"), "eth1": eth("10.72.2.254/24")},
        },
        "k2": {
            "interfaces": {"eth0": eth("10.72.2.2/24", "kr.eth1")},
            "routes": [{"to": "default", "via": "10.72.2.254"}],
        },
    }


def node_hosts() -> dict[str, Any]:
    """p1 and p2, ports of the node."""
    return {
        "p1": {"interfaces": {"eth0": eth("10.72.3.1/24", "node", "02:00:00:72:03:01")}},
        "p2": {"interfaces": {"eth0": eth("10.72.3.2/24", "node", "02:00:00:72:03:02")}},
    }


def topology(name: str) -> dict[str, Any]:
    return {"lab": name, "hosts": {**kernel_hosts(), **node_hosts()}}


def functions_file(kinds: list[str], configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "functions": [
            {"name": f"f{n}", "kind": kind, "config": configs.get(kind, {})}
            for n, kind in enumerate(kinds, start=1)
        ]
        + SERVICE_FUNCTIONS
    }


def clear_chains(api: ChainingClient) -> None:
    for chain in api.list("port_chains"):
        api.delete("port_chains", chain["id"])
    for group in api.list("port_pair_groups"):
        api.delete("port_pair_groups", group["id"])


def use_service_chains(api: ChainingClient) -> None:
    """p1 -> [fw] -> lb (VIP) ... lb -> [mon] -> p2, both symmetric, TCP to 5201 and UDP to 9."""
    clear_chains(api)
    pid = api.port_id
    for name, source, destination, vip, function in (
        ("to-vip", "p1:eth0", "lb:frontend", True, "fw"),
        ("to-backend", "lb:backend", "p2:eth0", False, "mon"),
    ):
        classifiers = ((name, "tcp", IPERF_PORT), (f"{name}-udp", "udp", FLOOD_PORT))
        if not api.list("flow_classifiers", name=name):
            for classifier, proto, port in classifiers:
                api.create(
                    "flow_classifiers",
                    name=classifier,
                    protocol=proto,
                    destination_port_range_min=port,
                    destination_port_range_max=port,
                    destination_ip_prefix=f"{VIP}/32" if vip else "10.72.3.2/32",
                    logical_source_port=pid(source),
                    logical_destination_port=pid(destination),
                )
            api.create(
                "port_pairs",
                name=f"pp-{function}",
                ingress=pid(f"{function}:ingress"),
                egress=pid(f"{function}:egress"),
            )
        group = api.create(
            "port_pair_groups",
            name=f"g-{function}",
            port_pairs=[api.get("port_pairs", f"pp-{function}")["id"]],
        )
        api.create(
            "port_chains",
            name=name,
            port_pair_groups=[group["id"]],
            flow_classifiers=[
                api.get("flow_classifiers", classifier)["id"] for classifier, _, _ in classifiers
            ],
            chain_parameters={"symmetric": True},
        )


def use_chain(api: ChainingClient, length: int) -> None:
    """Replace the port chain by one through f1..f<length>, UDP to 9 and TCP to 5201."""
    clear_chains(api)
    pid = api.port_id
    if not api.list("flow_classifiers", name=f"udp{FLOOD_PORT}"):
        for proto, port in (("udp", FLOOD_PORT), ("tcp", IPERF_PORT)):
            api.create(
                "flow_classifiers",
                name=f"{proto}{port}",
                protocol=proto,
                destination_port_range_min=port,
                destination_port_range_max=port,
                logical_source_port=pid("p1:eth0"),
                logical_destination_port=pid("p2:eth0"),
            )
        for n in range(1, 6):
            api.create(
                "port_pairs",
                name=f"pp{n}",
                ingress=pid(f"f{n}:ingress"),
                egress=pid(f"f{n}:egress"),
            )
    groups = [
        api.create(
            "port_pair_groups", name=f"g{n}", port_pairs=[api.get("port_pairs", f"pp{n}")["id"]]
        )["id"]
        for n in range(1, length + 1)
    ]
    api.create(
        "port_chains",
        name=f"chain{length}",
        port_pair_groups=groups,
        flow_classifiers=[
            api.get("flow_classifiers", name)["id"]
            for name in (f"udp{FLOOD_PORT}", f"tcp{IPERF_PORT}")
        ],
        chain_parameters={"symmetric": True},
    )


def udp_pps(lab: Lab, sender: str, receiver: str, *, dst_mac: str, seconds: float) -> float:
    """64-byte frames from k1 or p1 to k2 or p2, counted at the receiver per second."""
    return flood_rate(
        lab,
        sender,
        receiver,
        src_ip=ADDRESSES[sender],
        dst_ip=ADDRESSES[receiver],
        dst_mac=dst_mac,
        seconds=seconds,
        dport=FLOOD_PORT,
    )


@contextmanager
def chain_node(
    workdir: Path,
    kinds: list[str],
    configs: dict[str, dict[str, Any]],
    *,
    hosts: dict[str, Any] | None = None,
    node_args: tuple[str, ...] = (),
) -> Iterator[tuple[Lab, NodeProcess]]:
    """A lab of `hosts` (default: `topology`'s) and a node running the functions of
    `functions_file` (and `node_args`)."""
    name = f"bench-{secrets.token_hex(3)}"
    spec = topology(name) if hosts is None else {"lab": name, "hosts": hosts}
    topo = workdir / "topology.yaml"
    topo.write_text(yaml.safe_dump(spec, sort_keys=False))
    functions = workdir / "functions.yaml"
    functions.write_text(yaml.safe_dump(functions_file(kinds, configs), sort_keys=False))
    with (
        Lab.up(topo) as lab,
        NodeProcess(
            name,
            topology=topo,
            log_path=workdir / "node.log",
            args=("--functions", str(functions), *node_args),
        ) as node,
    ):
        lab.host("p1").run(["ping", "-c", "2", "-W", "2", ADDRESSES["p2"]], check=True)
        yield lab, node


def tcp_gbps(lab: Lab, sender: str, dst_ip: str, seconds: float) -> float:
    """iperf3 to the receiver's server (started by `serve_iperf`), one stream."""
    argv = ["iperf3", "-c", dst_ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"]
    argv += ["--connect-timeout", "3000"]
    result = lab.host(sender).run(argv, timeout=seconds + 30, check=True)
    return float(json.loads(result.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9


def backend_up(node: NodeProcess) -> bool:
    for function in node.functions():
        if function["name"] == "lb":
            backends = [b for service in function["services"] for b in service["backends"]]
            return bool(backends) and all(b["state"] == "up" for b in backends)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median kept)")
    parser.add_argument(
        "--kinds", default=",".join(DEFAULT_KINDS), help="five function kinds, or `pass`"
    )
    parser.add_argument("--config", action="append", default=[], metavar="KIND=JSON")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    kinds = ["chain_functions:Pass"] * 5 if args.kinds == "pass" else args.kinds.split(",")
    if len(kinds) != 5:
        parser.error("--kinds needs five functions (or `pass`)")
    configs = dict(DEFAULT_CONFIGS)
    for item in args.config:
        kind, _, text = item.partition("=")
        configs[kind] = json.loads(text)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
    )
    samples: dict[str, list[float]] = {}
    cpu: dict[str, tuple[float, float]] = {}
    fast: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="pktchain-bench-") as tmp,
        chain_node(Path(tmp), kinds, configs) as (lab, node),
    ):
        api = ChainingClient(node.control)
        for receiver in ("k2", "p2"):  # iperf3 servers for every TCP run
            lab.host(receiver).popen(["iperf3", "-s", "-p", str(IPERF_PORT)])
            lab.host(receiver).wait_listening(IPERF_PORT, timeout=10)
        lab.host("k1").run(["ping", "-c", "2", "-W", "2", "10.72.2.2"], check=True)
        kr_mac = mac_of(lab.host("kr"))
        p2_mac = mac_of(lab.host("p2"))
        print(f"functions: {', '.join(kinds)}; {args.repeat} runs each", file=sys.stderr)

        def record(key: str, value: float) -> None:
            samples.setdefault(key, []).append(value)
            print(f"  {key}: {value:,.3f}", file=sys.stderr)

        for _ in range(args.repeat):
            record(
                "udp_pps kernel",
                udp_pps(lab, "k1", "k2", dst_mac=kr_mac, seconds=args.seconds),
            )
            for length in LENGTHS:
                use_chain(api, length)
                before = cpu_seconds(node.pid)
                record(
                    f"udp_pps chain{length}",
                    udp_pps(lab, "p1", "p2", dst_mac=p2_mac, seconds=args.seconds),
                )
                after = cpu_seconds(node.pid)
                cpu[f"chain{length}"] = (after[0] - before[0], after[1] - before[1])
                fast[f"chain{length}"] = node.status()["fast_path"]
            record("tcp_gbps kernel", tcp_gbps(lab, "k1", "10.72.2.2", args.seconds))
            use_chain(api, 3)
            record("tcp_gbps chain3", tcp_gbps(lab, "p1", "10.72.3.2", args.seconds))
            use_service_chains(api)
            wait_until(
                lambda: backend_up(node),
                timeout=10,
                what="the load balancer's health check to find the backend",
            )
            record("tcp_gbps fw-lb-mon", tcp_gbps(lab, "p1", VIP, args.seconds))
            fast["fw-lb-mon"] = node.status()["fast_path"]
        functions_status = [
            {"name": f["name"], "kind": f.get("kind"), "verdicts": f.get("verdicts")}
            for f in node.functions()
        ]

    medians = {key: statistics.median(values) for key, values in samples.items()}
    ratios = {
        "chain5 / chain1 (small packets)": (
            medians["udp_pps chain5"] / medians["udp_pps chain1"],
            0.85,
        ),
        "chain3 / kernel (small packets)": (
            medians["udp_pps chain3"] / medians["udp_pps kernel"],
            0.50,
        ),
        "chain3 / kernel (TCP)": (medians["tcp_gbps chain3"] / medians["tcp_gbps kernel"], 0.60),
        "firewall, load balancer, monitor / kernel (TCP)": (
            medians["tcp_gbps fw-lb-mon"] / medians["tcp_gbps kernel"],
            0.60,
        ),
    }
    report = {
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "kinds": kinds,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "medians": medians,
        "ratios": {k: {"ratio": r, "goal": g, "met": r >= g} for k, (r, g) in ratios.items()},
        "node_cpu_seconds_last_run": cpu,
        "fast_path": fast,
        "functions": functions_status,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in medians.items():
        print(f"{key:<22} {value:>15,.3f}")
    for key, (ratio, goal) in ratios.items():
        print(f"{key:<48} {ratio:5.2f}  goal ≥ {goal:.2f} {'met' if ratio >= goal else 'MISSED'}")
    for key, (user, system) in cpu.items():
        print(f"node CPU, last {key} run: user {user:.2f} s, system {system:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
