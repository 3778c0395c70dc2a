"""Memory per NAT session, measured with tracemalloc.

The test measures 20,000 sessions to stay fast; run this file as a script for
the 100,000-session figure recorded in docs/nat-conformance.md::

    .venv/bin/python tests/unit/functions/nat/test_nat_memory.py
"""

from __future__ import annotations

import struct
import sys
import time
import tracemalloc

from pktchain.functions.nat.napt import Nat, NatConfig, NatVerdict
from pktchain.packet import Ipv4, Udp, build

_ADDRESSES = struct.Struct("!4s4s")
_PORTS = struct.Struct("!HH")


def fill(sessions: int) -> tuple[Nat, float, float]:
    """A NAT holding ``sessions`` UDP sessions; returns it, bytes per session and seconds."""
    nat = Nat(NatConfig("203.0.113.1", ("10.0.0.0/16",), max_sessions=sessions, port_seed=1))
    template = build(Ipv4(src="10.0.0.1", dst="198.51.100.1"), Udp(1, 1), b"x" * 18)
    hosts, ports, remotes = 100, 10, sessions // 1000
    packet = bytearray(template)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    for host in range(hosts):
        inside = bytes((10, 0, host // 250, 1 + host % 250))
        for port in range(ports):
            for remote in range(remotes):
                packet[:] = template
                _ADDRESSES.pack_into(
                    packet, 12, inside, bytes((198, 51, 100 + remote // 250, 1 + remote % 250))
                )
                _PORTS.pack_into(packet, 20, 20000 + port, 53)
                if nat.translate_outbound(packet, 0, 0.0).verdict is not NatVerdict.TRANSLATED:
                    raise RuntimeError("session refused while filling the table")
    elapsed = time.perf_counter() - started
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return nat, used / nat.session_count(), elapsed


def test_bytes_per_session_stay_small() -> None:
    nat, per_session, _ = fill(20_000)
    assert nat.session_count() == 20_000
    assert per_session < 600
    # The table limit holds: one more session is refused.
    extra = bytearray(build(Ipv4(src="10.0.9.9", dst="198.51.100.1"), Udp(9, 9), b""))
    assert nat.translate_outbound(extra, 0, 0.0).verdict is NatVerdict.REPLY


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    nat, per_session, elapsed = fill(count)
    print(
        f"{nat.session_count()} sessions, {len(nat.mappings())} mappings: "
        f"{per_session:.0f} bytes per session (tracemalloc), filled in {elapsed:.2f} s"
    )
