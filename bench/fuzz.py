"""Fuzz campaigns: a million random and mutated frames into every kind of port.

For each port type a lab and a `pktchain node` come up, an established TCP
flow crosses the node between two legitimate hosts, and the campaign sends
mutated frames (valid seeds of every header the codec knows, built with
scapy, then bit flips, truncation, boundary values, lying lengths and
options, random bytes), deterministic from `--seed`, paced so that none is
lost before the node reads it. After each campaign it checks, and prints:
the node is alive with no traceback in its log; it received every frame
sent; every frame is accounted for (per port: received = forwarded +
drops by reason; per function: handed = verdicts); the established flow and
a ping still pass; the node's RSS stayed bounded. The exit status is 1 when
a check failed.

    .venv/bin/python bench/fuzz.py [--port TYPE ...] [--frames 1000000] [--seed 1]

Port types: tap, af-packet, function, router, underlay, tunnel, messenger,
pipe. Recorded in docs/robustness.md ("Fuzz campaigns").
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the fuzzing support

from pktchain.lab import Lab  # noqa: E402
from support.fuzz_campaigns import CAMPAIGNS, Report  # noqa: E402
from support.fuzz_streams import STREAM_CAMPAIGNS  # noqa: E402

PORT_TYPES = (*CAMPAIGNS, *STREAM_CAMPAIGNS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        action="append",
        choices=PORT_TYPES,
        help="a port type to fuzz (repeatable; default: every one)",
    )
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames per port type")
    parser.add_argument("--seed", type=int, default=1, help="the mutations' seed (1)")
    parser.add_argument(
        "--markdown", action="store_true", help="also print docs/robustness.md rows"
    )
    args = parser.parse_args()
    ports = args.port or list(PORT_TYPES)
    reports: list[Report] = []
    for port_type in ports:
        command = f"bench/fuzz.py --port {port_type} --frames {args.frames} --seed {args.seed}"
        with tempfile.TemporaryDirectory(prefix=f"pktchain-fuzz-{port_type}-") as workdir:
            try:
                report = run_one(port_type, Path(workdir), args.frames, args.seed)
            except Exception as exc:  # reported as the campaign's failure; the next one runs
                report = Report(port_type, problems=[f"the campaign failed: {exc!r}"])
        report.command = command
        reports.append(report)
        print(report.text(), flush=True)
    if args.markdown:
        for report in reports:
            print(markdown(report))
    return 0 if all(report.ok for report in reports) else 1


LAB_NUMBERS = itertools.count()


def run_one(port_type: str, work: Path, frames: int, seed: int) -> Report:
    labs: list[Lab] = []

    def make_lab(topology: dict[str, Any]) -> Lab:
        name = f"fz{os.getpid() % 10000}{next(LAB_NUMBERS)}"  # unique in this run
        lab = Lab.up(topology, name=name)
        labs.append(lab)
        return lab

    try:
        if port_type in CAMPAIGNS:
            with CAMPAIGNS[port_type](make_lab, work, seed) as campaign:
                return campaign.run(frames)
        with STREAM_CAMPAIGNS[port_type](make_lab, work, seed) as stream:
            return stream.run(frames)
    finally:
        for lab in labs:
            lab.down()


def markdown(report: Report) -> str:
    drops = ", ".join(f"`{reason}` {count:,}" for reason, count in report.top_drops())
    return (
        f"| {report.port_type} | {report.frames:,} | {drops} | "
        f"{report.rss_before / 1024:.1f} → {report.rss_after / 1024:.1f} MiB | "
        f"{report.seconds:.0f} s | `{shlex.quote(report.command)}` | "
        f"{'pass' if report.ok else 'FAIL'} |"
    )


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    print(f"total {time.monotonic() - started:.0f} s", flush=True)
    sys.exit(status)
