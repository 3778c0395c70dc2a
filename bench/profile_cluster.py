"""Where each node's time goes while traffic crosses a chain split over two nodes.

Builds the cluster lab of bench/cluster_chain.py (c1 and f1 on n1; f2, f3 and
s1 on n2), sends a 64-byte UDP flood (`--traffic udp`) or one iperf3 TCP
stream (`--traffic tcp`) through the chain, and samples both node processes
with py-spy meanwhile (their main thread, where the packet loop runs, while
it is on a CPU); prints, per node, the lines and functions with the most
samples, and each node's user and system CPU time.

    .venv/bin/python bench/profile_cluster.py [--traffic udp|tcp] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import spy
from cluster_chain import IPERF_PORT, cluster_case, tcp_gbps, udp_pps
from switch_vs_bridge import cpu_seconds

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traffic", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--underlay-mtu", type=int, default=9000)
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
    )
    with tempfile.TemporaryDirectory(prefix="pktchain-bench-") as tmp:
        workdir = Path(tmp)
        with cluster_case(workdir, args.underlay_mtu) as case:
            if args.traffic == "tcp":
                case.lab.host(case.receiver).popen(["iperf3", "-s", "-p", str(IPERF_PORT)])
                case.lab.host(case.receiver).wait_listening(IPERF_PORT, timeout=10)
            before = {node.name: cpu_seconds(node.pid) for node in case.nodes}
            spies = [
                spy.sample(node.pid, args.seconds, workdir / f"{node.name}.txt")
                for node in case.nodes
            ]
            if args.traffic == "tcp":
                figure = f"{tcp_gbps(case, args.seconds + 1):.2f} Gbit/s"
            else:
                figure = f"{udp_pps(case, args.seconds + 1):,.0f} packets/s"
            profiles = [finish() for finish in spies]
            after = {node.name: cpu_seconds(node.pid) for node in case.nodes}
            names = [node.name for node in case.nodes]
        print(f"{args.traffic} through f1 (n1) | f2, f3 (n2): {figure}")
        for label, name, profile in zip(("n1", "n2"), names, profiles, strict=True):
            user = after[name][0] - before[name][0]
            system = after[name][1] - before[name][1]
            print(
                f"\n{label}: {profile.samples} samples; "
                f"CPU user {user:.2f} s, system {system:.2f} s"
            )
            profile.print(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
