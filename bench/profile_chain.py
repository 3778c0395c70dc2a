"""Where the node spends its time while a flood crosses a chain of native functions.

Builds the lab of bench/chain_fastpath.py, steers a 64-byte UDP flood through
a chain of `--length` functions, and samples the node with py-spy meanwhile;
prints the functions with the most samples (own time, and with callees).

    .venv/bin/python bench/profile_chain.py [--length 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import spy
from chain_fastpath import DEFAULT_CONFIGS, DEFAULT_KINDS, chain_node, udp_pps, use_chain
from pktchain.node.client import ChainingClient
from switch_vs_bridge import mac_of

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=3, choices=(1, 3, 5))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = str(HERE)
    with tempfile.TemporaryDirectory(prefix="pktchain-bench-") as tmp:
        raw = Path(tmp) / "samples.txt"
        with chain_node(Path(tmp), list(DEFAULT_KINDS), DEFAULT_CONFIGS) as (lab, node):
            use_chain(ChainingClient(node.control), args.length)
            finish = spy.sample(node.pid, args.seconds, raw, rate=500)
            rate = udp_pps(
                lab, "p1", "p2", dst_mac=mac_of(lab.host("p2")), seconds=args.seconds + 1
            )
            profile = finish()
    kinds = ", ".join(DEFAULT_KINDS[: args.length])
    samples = profile.samples
    print(f"{samples} samples of the node, chain of {args.length} ({kinds}), {rate:,.0f} packets/s")
    profile.print(args.top, indent="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
