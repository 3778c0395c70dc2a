"""pktchain switch against a Linux bridge: same hosts, same programs, same run.

Three pairs of hosts are built in one lab: b1/b2 joined by a Linux bridge (in
the lab's fabric namespace), p1/p2 whose NICs are TAP ports of a pktchain
node, and v1/v2 whose NICs are veth ports of the same node (`nic: veth`: a
veth pair each, read through AF_PACKET with recvmmsg).  Each figure is
measured on every pair, in turn, `--repeat` times, and the median is kept:

- TCP throughput: iperf3, one stream, `--seconds` long.
- Small-packet rate: `bench/udpflood.py` sends 60-byte UDP frames with
  sendmmsg(2) from the sender's namespace as fast as the path takes them; the
  rate is what the receiver's interface counted, per second of sending.
- Round-trip time: `ping -i 0.005`, `--pings` echoes, mean RTT.

It prints each figure and the ratios pktchain / kernel (TAP and veth ports)
and veth / TAP, and `--json` prints
the same machine-readably.  Not a pass/fail test: a record for
docs/benchmarks.md. With ``--no-port-limits`` the node runs with every port
rate limit off (docs/node.md, "Rate limits"), to tell what they cost.

    .venv/bin/python bench/switch_vs_bridge.py [--seconds 5] [--repeat 3] [--no-port-limits]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pyroute2 import IPRoute

from pktchain.lab import Lab, LabHost
from pktchain.linux.netns import entered
from pktchain.node.process import NodeProcess

HERE = Path(__file__).resolve().parent
GOALS = {"tcp_gbps": 0.50, "udp_pps": 0.35}


def topology(name: str) -> dict[str, Any]:
    def host(n: int, attach: str, subnet: str, nic: str | None = None) -> dict[str, Any]:
        eth0 = {
            "attach": attach,
            "mac": f"02:00:00:00:{int(subnet.rsplit('.', maxsplit=1)[-1]):02x}:{n:02x}",
            "addresses": [f"{subnet}.{n}/24"],
        }
        if nic is not None:
            eth0["nic"] = nic
        return {"interfaces": {"eth0": eth0}}

    return {
        "lab": name,
        "bridges": ["br0"],
        "hosts": {
            "b1": host(1, "br0", "10.71.1"),
            "b2": host(2, "br0", "10.71.1"),
            "p1": host(1, "node", "10.71.2", "tap"),
            "p2": host(2, "node", "10.71.2", "tap"),
            "v1": host(1, "node", "10.71.3", "veth"),
            "v2": host(2, "node", "10.71.3", "veth"),
        },
    }


PAIRS = {
    "kernel bridge": ("b1", "b2", "10.71.1"),
    "pktchain switch": ("p1", "p2", "10.71.2"),
    "pktchain veth": ("v1", "v2", "10.71.3"),
}
THROUGH_NODE = ("pktchain switch", "pktchain veth")


def rx_packets(host: LabHost) -> int:
    with entered(host.netns), IPRoute() as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        stats = ipr.get_links(index)[0].get_attr("IFLA_STATS64")
        return int(stats["rx_packets"])


def mac_of(host: LabHost) -> str:
    with entered(host.netns), IPRoute() as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        return str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))


def tcp_gbps(lab: Lab, pair: tuple[str, str, str], seconds: float) -> float:
    sender, receiver, subnet = pair
    server = lab.host(receiver).popen(["iperf3", "-s", "-1", "-p", "5201"])
    lab.host(receiver).wait_listening(5201, timeout=10)
    argv = ["iperf3", "-c", f"{subnet}.2", "-p", "5201", "-t", str(seconds), "-J"]
    result = lab.host(sender).run(argv, timeout=seconds + 30, check=True)
    server.wait(timeout=10)
    return float(json.loads(result.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process so far (/proc/PID/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


NODE_CPU: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
"""(user, system) seconds the node spent in each small-packet run through it, by pair."""


def flood_rate(
    lab: Lab,
    sender: str,
    receiver: str,
    *,
    src_ip: str,
    dst_ip: str,
    dst_mac: str,
    seconds: float,
    dport: int = 9,
) -> float:
    """Small UDP frames from `sender` (bench/udpflood.py): what `receiver` counted per second."""
    rx_host = lab.host(receiver)
    argv = [
        sys.executable,
        str(HERE / "udpflood.py"),
        "--netns",
        lab.host(sender).netns,
        "--ifname",
        "eth0",
        "--dst-mac",
        dst_mac,
        "--src-ip",
        src_ip,
        "--dst-ip",
        dst_ip,
        "--dport",
        str(dport),
        "--seconds",
        str(seconds),
    ]
    before = rx_packets(rx_host)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    time.sleep(0.2)  # let the last queued frames through before reading the counter
    received = rx_packets(rx_host) - before
    return received / float(json.loads(result.stdout)["seconds"])


def udp_pps(
    lab: Lab, pair: tuple[str, str, str], seconds: float, node_pid: int | None = None
) -> float:
    sender, receiver, subnet = pair
    cpu_before = cpu_seconds(node_pid) if node_pid else (0.0, 0.0)
    rate = flood_rate(
        lab,
        sender,
        receiver,
        src_ip=f"{subnet}.1",
        dst_ip=f"{subnet}.2",
        dst_mac=mac_of(lab.host(receiver)),
        seconds=seconds,
    )
    if node_pid:
        cpu_after = cpu_seconds(node_pid)
        NODE_CPU.setdefault(pair, []).append(
            (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
        )
    return rate


def rtt_ms(
    lab: Lab, pair: tuple[str, str, str], pings: int, echoes: list[float] | None = None
) -> float:
    """The mean RTT of `pings` echoes 5 ms apart; each echo's RTT is added to `echoes`."""
    sender, _receiver, subnet = pair
    argv = ["ping", "-c", str(pings), "-i", "0.005", "-W", "2", f"{subnet}.2"]
    result = lab.host(sender).run(argv, timeout=pings * 0.05 + 30, check=True)
    match = re.search(r"= [\d.]+/([\d.]+)/", result.stdout)
    if match is None:
        raise RuntimeError(f"no RTT in ping output: {result.stdout[-500:]!r}")
    if echoes is not None:
        echoes.extend(float(t) for t in re.findall(r" time=([\d.]+) ms", result.stdout))
    return float(match.group(1))


def measure(
    name: str, repeat: int, run: Callable[[tuple[str, str, str]], float], lab: Lab
) -> dict[str, float]:
    samples: dict[str, list[float]] = {pair: [] for pair in PAIRS}
    for _ in range(repeat):
        for pair_name, pair in PAIRS.items():
            samples[pair_name].append(run(pair))
    medians = {pair: statistics.median(values) for pair, values in samples.items()}
    print(
        f"  {name}: "
        + ", ".join(f"{pair} {[round(v, 3) for v in values]}" for pair, values in samples.items()),
        file=sys.stderr,
    )
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median kept)")
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--no-port-limits", action="store_true", help="run the node without port rate limits"
    )
    args = parser.parse_args()
    off = ("arp", "icmp", "flood", "slow-path") if args.no_port_limits else ()
    node_args = tuple(arg for name in off for arg in (f"--port-{name}-rate", "off"))

    name = f"bench-{secrets.token_hex(3)}"
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pktchain-bench-") as tmp:
        path = Path(tmp) / "topology.yaml"
        path.write_text(yaml.safe_dump(topology(name), sort_keys=False))
        with (
            Lab.up(path) as lab,
            NodeProcess(
                name, topology=path, args=node_args, log_path=Path(tmp) / "node.log"
            ) as node,
        ):
            for sender, _receiver, subnet in PAIRS.values():
                lab.host(sender).run(["ping", "-c", "2", "-W", "2", f"{subnet}.2"], check=True)
            print(f"measuring ({args.repeat} runs each, median kept)", file=sys.stderr)
            results["tcp_gbps"] = measure(
                "TCP Gbit/s", args.repeat, lambda p: tcp_gbps(lab, p, args.seconds), lab
            )
            results["udp_pps"] = measure(
                "small UDP packets/s",
                args.repeat,
                lambda p: udp_pps(
                    lab, p, args.seconds, node.pid if p != PAIRS["kernel bridge"] else None
                ),
                lab,
            )
            results["rtt_ms"] = measure(
                "ping RTT ms", args.repeat, lambda p: rtt_ms(lab, p, args.pings), lab
            )
            drops = {
                port["name"]: {**port["drops"], "rx_kernel": port.get("rx_kernel_drops", 0)}
                for port in node.status()["ports"]
            }

    kernel, tap, veth = PAIRS
    rows = []
    for metric, values in results.items():
        ratio = values[tap] / values[kernel]
        goal = GOALS.get(metric)
        rows.append(
            {
                "metric": metric,
                "kernel": values[kernel],
                "pktchain": values[tap],
                "pktchain_veth": values[veth],
                "ratio": ratio,
                "veth_ratio": values[veth] / values[kernel],
                "veth_vs_tap": values[veth] / values[tap],
                "goal": goal,
                "met": None if goal is None else ratio >= goal,
            }
        )
    report = {
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "seconds": args.seconds,
        "repeat": args.repeat,
        "results": rows,
        "node_drops": drops,
        "node_cpu_during_small_packets": {
            name: {
                "user_s": round(sum(u for u, _ in NODE_CPU.get(PAIRS[name], [])), 2),
                "system_s": round(sum(k for _, k in NODE_CPU.get(PAIRS[name], [])), 2),
            }
            for name in THROUGH_NODE
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{'metric':<10} {'kernel bridge':>15} {'pktchain TAP':>15} {'pktchain veth':>15} "
            f"{'TAP/k':>7} {'veth/k':>7} {'veth/TAP':>8}  goal (TAP)"
        )
        for row in rows:
            goal = (
                ""
                if row["goal"] is None
                else f"≥ {row['goal']:.2f} {'met' if row['met'] else 'MISSED'}"
            )
            print(
                f"{row['metric']:<10} {row['kernel']:>15,.3f} {row['pktchain']:>15,.3f} "
                f"{row['pktchain_veth']:>15,.3f} {row['ratio']:>7.2f} {row['veth_ratio']:>7.2f} "
                f"{row['veth_vs_tap']:>8.2f}  {goal}"
            )
        print(f"node drops by port: {drops}")
        for name, cpu in report["node_cpu_during_small_packets"].items():
            print(
                f"node CPU during the small-packet runs of {name}: "
                f"user {cpu['user_s']} s, system {cpu['system_s']} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
