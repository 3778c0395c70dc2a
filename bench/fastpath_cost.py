"""The fast path's own cost per packet, in-process: no kernel, no system calls.

Drives `Datapath.drain` with in-memory ports (as the unit tests do) and prints
microseconds per 64-byte packet for plain switching and for established flows
through chains of 1, 3 and 5 do-nothing native functions (bench/chain_functions.py):
the Python share of what bench/chain_fastpath.py measures on real interfaces.

With ``--port-security`` each path is also run with the sending port secured
(its frames checked as docs/node.md, "Port security", says), alternating with
the unsecured run, and the difference is printed: the check itself on plain
switching (every frame takes the slow path), the source MAC comparison on the
fast path. With ``--port-limits`` each path is run with the sending port
policed by the default rate limits (docs/node.md, "Rate limits") against the
same port without them, alternating: on plain switching the frames are
unicast IPv4, within no class, so what is measured is what every other frame
pays for the limits.

    .venv/bin/python bench/fastpath_cost.py [--packets 100000] [--port-security]
        [--port-limits] [--repeat 5]
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
from pktchain.node.dataplane.portsec import PortGuard  # noqa: E402
from pktchain.sfc.resources import FixedIp, Port  # noqa: E402
from pktchain.sfc.security import port_security  # noqa: E402
from support.memports import H1_MAC, MemoryPort, function_chain  # noqa: E402

VNET = bytes(10)


def build(
    length: int, *, secured: bool = False, policed: bool = True
) -> tuple[Datapath, MemoryPort, bytes]:
    datapath, h1, _h2 = function_chain([Pass() for _ in range(length)])
    if not policed:
        h1.policer = None  # the port as it was before the limits
    if secured:
        security = port_security(
            Port(id="h1", mac_address=H1_MAC, fixed_ips=(FixedIp("10.0.0.1"),))
        )
        datapath.secure(h1, None if security is None else PortGuard(security))
    frame = VNET + bytes(
        Ether(src=H1_MAC, dst="02:00:00:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / UDP(sport=1, dport=9)
        / (b"x" * 18)
    )
    return datapath, h1, frame


def per_packet(length: int, packets: int, *, secured: bool, policed: bool = True) -> float:
    """Microseconds per packet of an established flow on a chain of `length` functions."""
    datapath, h1, frame = build(length, secured=secured, policed=policed)
    h1.inbox.extend([frame] * 3)  # the slow path, then the fused entry
    while h1.inbox:
        datapath.drain(h1)
    h1.inbox.extend([frame] * packets)
    started = time.perf_counter()
    while h1.inbox:
        datapath.drain(h1)
    elapsed = time.perf_counter() - started
    if sum(h1.drops.values()):
        raise SystemExit(f"the port dropped its own frames: {dict(h1.drops)}")
    return elapsed / packets * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument(
        "--port-security", action="store_true", help="also run with the sending port secured"
    )
    parser.add_argument(
        "--port-limits",
        action="store_true",
        help="also run with the sending port policed (default rate limits) and without",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each (the minimum is printed)"
    )
    args = parser.parse_args()
    for length in (0, 1, 3, 5):
        what = "plain switching" if not length else f"chain of {length}, fast path"
        if args.port_limits:
            bare: list[float] = []
            policed: list[float] = []
            for _ in range(args.repeat):  # alternating, so that both see the same machine
                bare.append(per_packet(length, args.packets, secured=False, policed=False))
                policed.append(per_packet(length, args.packets, secured=False, policed=True))
            print(
                f"{what:<26} {min(bare):5.2f} µs/packet, port policed {min(policed):5.2f}"
                f" ({(min(policed) - min(bare)) * 1000:+4.0f} ns)"
            )
            continue
        if not args.port_security:
            best = min(per_packet(length, args.packets, secured=False) for _ in range(args.repeat))
            print(f"{what:<26} {best:5.2f} µs/packet")
            continue
        plain: list[float] = []
        secured: list[float] = []
        for _ in range(args.repeat):  # alternating, so that both see the same machine
            plain.append(per_packet(length, args.packets, secured=False, policed=False))
            secured.append(per_packet(length, args.packets, secured=True, policed=False))
        print(
            f"{what:<26} {min(plain):5.2f} µs/packet, port secured {min(secured):5.2f}"
            f" ({(min(secured) - min(plain)) * 1000:+4.0f} ns)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
