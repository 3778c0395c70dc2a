"""The fast path's own cost per packet, in-process: no kernel, no system calls.

Drives `Datapath.drain` with in-memory ports (as the unit tests do) and prints
microseconds per 64-byte packet for plain switching and for established flows
through chains of 1, 3 and 5 do-nothing native functions (bench/chain_functions.py):
the Python share of what bench/chain_fastpath.py measures on real interfaces.

    .venv/bin/python bench/fastpath_cost.py [--packets 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the in-memory ports

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from chain_functions import Pass  # noqa: E402
from pktchain.node.dataplane.datapath import Datapath  # noqa: E402
from support.memports import MemoryPort, function_chain  # noqa: E402

VNET = bytes(10)


def build(length: int) -> tuple[Datapath, MemoryPort, bytes]:
    datapath, h1, _h2 = function_chain([Pass() for _ in range(length)])
    frame = VNET + bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / UDP(sport=1, dport=9)
        / (b"x" * 18)
    )
    return datapath, h1, frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=100_000)
    args = parser.parse_args()
    for length in (0, 1, 3, 5):
        datapath, h1, frame = build(length)
        h1.inbox.extend([frame] * 3)  # the slow path, then the fused entry
        while h1.inbox:
            datapath.drain(h1)
        h1.inbox.extend([frame] * args.packets)
        started = time.perf_counter()
        while h1.inbox:
            datapath.drain(h1)
        elapsed = time.perf_counter() - started
        what = "plain switching" if not length else f"chain of {length}, fast path"
        print(f"{what:<26} {elapsed / args.packets * 1e6:5.2f} µs/packet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
