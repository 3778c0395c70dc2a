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
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cluster_chain import IPERF_PORT, cluster_case, tcp_gbps, udp_pps
from switch_vs_bridge import cpu_seconds

HERE = Path(__file__).resolve().parent
MAIN_THREAD = "MainThread"


def summarize(raw: Path, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Samples of the main thread: (count, own time by line, time with callees by function)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    everywhere: set[str] | None = None
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        thread, _, frames_text = stack.partition(";")
        if MAIN_THREAD not in thread or not frames_text:
            continue
        count = int(count_text)
        # "function (path/file.py:line)" -> "function file.py:line"
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")")
            for f in frames_text.split(";")
        ]
        samples += count
        own[frames[-1]] += count
        functions = {frame.split(":")[0] for frame in frames}
        everywhere = functions if everywhere is None else everywhere & functions
        for function in functions:
            total[function] += count
    for function in everywhere or ():  # the loop's own frames, in every sample
        del total[function]
    return samples, own.most_common(top), total.most_common(top)


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
    spy = str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="pktchain-bench-") as tmp:
        workdir = Path(tmp)
        with cluster_case(workdir, args.underlay_mtu) as case:
            if args.traffic == "tcp":
                case.lab.host(case.receiver).popen(["iperf3", "-s", "-p", str(IPERF_PORT)])
                case.lab.host(case.receiver).wait_listening(IPERF_PORT, timeout=10)
            before = {node.name: cpu_seconds(node.pid) for node in case.nodes}
            spies = [
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(node.pid),
                        "--duration",
                        str(args.seconds),
                        "--format",
                        "raw",
                        "--threads",
                        "--rate",
                        "250",
                        "--nonblocking",
                        "--output",
                        str(workdir / f"{node.name}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for node in case.nodes
            ]
            if args.traffic == "tcp":
                figure = f"{tcp_gbps(case, args.seconds + 1):.2f} Gbit/s"
            else:
                figure = f"{udp_pps(case, args.seconds + 1):,.0f} packets/s"
            for process in spies:
                process.wait(timeout=args.seconds + 30)
            after = {node.name: cpu_seconds(node.pid) for node in case.nodes}
            names = [node.name for node in case.nodes]
        print(f"{args.traffic} through f1 (n1) | f2, f3 (n2): {figure}")
        for label, name in zip(("n1", "n2"), names, strict=True):
            user = after[name][0] - before[name][0]
            system = after[name][1] - before[name][1]
            samples, own, total = summarize(workdir / f"{name}.txt", args.top)
            print(f"\n{label}: {samples} samples; CPU user {user:.2f} s, system {system:.2f} s")
            print("  own time:")
            for frame, count in own:
                print(f"    {100 * count / max(samples, 1):5.1f}%  {frame}")
            print("  with callees:")
            for frame, count in total:
                print(f"    {100 * count / max(samples, 1):5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
