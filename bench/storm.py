"""What a storm or a flood from one port costs the others on the same node.

Builds the storm lab (tests/support/storm_lab.py: hosts a1, a2, s, b1 on the
router's inside network with a one-arm load balancer, o1 and o2 outside), and
for each flood measures, before and during it, the median RTT of a1's pings
to a2 and the rate of a1's iperf3 flow to o1 through the NAT:

- ``broadcast``: s sends broadcast UDP frames as fast as hping3 can;
- ``syn-nat``: s sends SYNs to o1 through the NAT (``hping3 -S --flood``);
- ``syn-forward``: o2 sends SYNs at the router's port forward (to b1);
- ``syn-vip``: s sends SYNs at the load balancer's VIP (to b1).

With ``--cpu-only`` each flood comes right after the same hping3 aimed at
the flooder's own loopback (burning the same CPU, sending nothing to the
node), which tells the node's share of the flow's loss from the machine's. With ``--no-limits``
the node runs with every port rate limit off (the NAT's stay). Prints one
line per flood and, with ``--json``, the figures with the drops counted and
the tables' sizes. Not a pass/fail test: a record for docs/robustness.md.

    .venv/bin/python bench/storm.py [--seconds 3] [--repeat 3] [--no-limits] [--cpu-only]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import yaml

import spy

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the storm lab

from pktchain.lab import Lab  # noqa: E402
from pktchain.node.process import NodeProcess  # noqa: E402
from support.storm_lab import (  # noqa: E402
    NO_LIMITS,
    SCENARIOS,
    TOPOLOGY,
    Figures,
    Storm,
    measure,
    node_args,
    prepare,
)


def run(args: argparse.Namespace, directory: Path) -> list[dict[str, Any]]:
    topology = directory / "storm.yaml"
    topology.write_text(yaml.safe_dump(TOPOLOGY, sort_keys=False))
    name = f"storm{secrets.token_hex(2)}"
    extra = NO_LIMITS if args.no_limits else ()
    rows: list[dict[str, Any]] = []
    with Lab.up(topology, name=name) as lab:
        node = NodeProcess(
            name,
            topology=topology,
            lab_name=lab.name,
            args=(*node_args(directory), *extra),
            log_path=directory / "node.log",
        )
        with node:
            prepare(lab, node, directory)
            for scenario in args.scenarios:
                runs: list[Figures] = []
                for _ in range(args.repeat):
                    during = None
                    if args.profile:
                        during = partial(profile, node.pid, args.seconds, args.profile)
                    try:
                        figures = measure(
                            lab,
                            node,
                            scenario,
                            seconds=args.seconds,
                            nice=args.nice,
                            control=args.cpu_only,
                            during=during,
                        )
                    except (RuntimeError, ValueError) as exc:
                        print(f"{scenario:12} a run failed: {exc}", flush=True)
                        continue
                    runs.append(figures)
                if not runs:
                    continue
                rows.append(summarize(scenario, runs))
                print_row(rows[-1])
    return rows


def profile(pid: int, seconds: float, top: int, storm: Storm) -> None:
    """Sample the node with py-spy while the flood runs; print where its time goes."""
    raw = Path(tempfile.mkdtemp(prefix="pktchain-storm-spy-")) / "samples.txt"
    found = spy.sample(pid, seconds - 1, raw)()
    print(f"{'':12} py-spy: {found.samples} samples of the node during {' '.join(storm.argv)}")
    found.print(top, indent=" " * 12)


def summarize(scenario: str, runs: list[Figures]) -> dict[str, Any]:
    """The median of each figure over the runs, and each run's details."""
    summaries = [run.summary() for run in runs]

    def median(key: str) -> float:
        return round(statistics.median(s[key] for s in summaries), 3)

    row: dict[str, Any] = {
        "scenario": scenario,
        "rtt_idle_ms": median("rtt_idle_ms"),
        "rtt_storm_ms": median("rtt_storm_ms"),
        "rtt_ratio": median("rtt_ratio"),
        "tcp_idle_gbps": median("tcp_idle_gbps"),
        "tcp_storm_gbps": median("tcp_storm_gbps"),
        "tcp_kept": median("tcp_kept"),
        "node_cpu": median("node_cpu"),
        "nat_mapping_kept": all(s["nat_mapping_kept"] for s in summaries),
        "runs": summaries,
    }
    if all(s.get("tcp_cpu_only_gbps") is not None for s in summaries):
        row["tcp_cpu_only_gbps"] = median("tcp_cpu_only_gbps")
        row["tcp_kept_vs_cpu_only"] = median("tcp_kept_vs_cpu_only")
    return row


def print_row(row: dict[str, Any]) -> None:
    line = (
        f"{row['scenario']:12} rtt {row['rtt_idle_ms']:.3f} -> {row['rtt_storm_ms']:.3f} ms "
        f"(x{row['rtt_ratio']:.2f}), node CPU {row['node_cpu']:.0%}  "
        f"tcp {row['tcp_idle_gbps']:.2f} -> "
        f"{row['tcp_storm_gbps']:.2f} Gbit/s ({row['tcp_kept']:.0%} kept)"
    )
    if "tcp_cpu_only_gbps" in row:
        line += (
            f"  [same CPU load, no flood at the node: {row['tcp_cpu_only_gbps']:.2f} Gbit/s; "
            f"{row['tcp_kept_vs_cpu_only']:.0%} of it kept]"
        )
    line += f"  NAT mapping kept: {'yes' if row['nat_mapping_kept'] else 'NO'}"
    print(line, flush=True)
    last = row["runs"][-1]
    print(f"{'':12} drops {last['drops']}  holds {last['holds']}  tables {last['tables']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="each flood's length")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each flood (medians)")
    parser.add_argument(
        "--scenario",
        dest="scenarios",
        action="append",
        choices=SCENARIOS,
        help="only this flood (repeatable; default all)",
    )
    parser.add_argument("--no-limits", action="store_true", help="port rate limits off")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the flooder at this nice value (19: it gets the CPU nothing else wants)",
    )
    parser.add_argument(
        "--cpu-only",
        action="store_true",
        help="also run each flood at the flooder's loopback (the CPU it burns, no flood)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        default=0,
        help="sample the node with py-spy during each flood; print its N busiest functions",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    args.scenarios = args.scenarios or list(SCENARIOS)
    with tempfile.TemporaryDirectory(prefix="pktchain-storm-") as tmp:
        rows = run(args, Path(tmp))
    if args.json:
        print(
            json.dumps({"limits": not args.no_limits, "nice": args.nice, "floods": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
