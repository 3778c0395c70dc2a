"""100,000 NAT sessions through the node's router: memory, the limit, old flows.

An inside host (10.0.0.10) and an outside host (198.51.100.10) on either side
of the router in a node; the NAT's table limit is set to `--limit` sessions.
First an inside client opens a TCP connection to an echo server outside (an
established flow).  Then the inside host sends `--datagrams` UDP datagrams,
each from a new source port or to a new destination port, so each would be a
new session: crafted once, sent with sendmmsg(2) in paced batches (bounded in
count and time).  Reported: sessions in the table, refusals counted by the NAT
(ICMP 3/13 sent back inside), the node's resident memory before and after and
so the bytes per session, and whether the established connection still
echoes.

    .venv/bin/python bench/nat_sessions.py [--limit 100000] [--datagrams 120000]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import secrets
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import raw

from pktchain.lab import Lab, LabHost, node_host_spec, wait_until
from pktchain.node.process import NodeProcess

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from udpflood import IoVec, MMsgHdr  # noqa: E402

INSIDE, OUTSIDE, ROUTER_IN, ROUTER_OUT = "10.0.0.10", "198.51.100.10", "10.0.0.1", "198.51.100.2"
ROUTER_IN_MAC = "02:00:00:00:01:01"
INSIDE_MAC = "02:00:00:00:01:0a"
ECHO_PORT = 7100

ECHO_SERVER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4)\n"
    "c, _ = s.accept()\n"
    "while data := c.recv(4096):\n"
    "    c.sendall(data)\n"
)


def topology(name: str) -> dict[str, Any]:
    return {
        "lab": name,
        "hosts": {
            "inside": node_host_spec("inside", INSIDE_MAC, f"{INSIDE}/24", ROUTER_IN),
            "outside": node_host_spec("outside", "02:00:00:00:02:0a", f"{OUTSIDE}/24"),
        },
    }


def router(limit: int) -> dict[str, Any]:
    return {
        "name": "router",
        "interfaces": {
            "inside": {"network": "inside", "mac": ROUTER_IN_MAC, "address": f"{ROUTER_IN}/24"},
            "outside": {
                "network": "outside",
                "mac": "02:00:00:00:02:01",
                "address": f"{ROUTER_OUT}/24",
                "external": True,
                "gateway": OUTSIDE,
            },
        },
        "nat": {"max_sessions": limit, "max_sessions_per_host": limit},
        "auto_forward_service_port": None,
    }


def frames(count: int) -> list[bytes]:
    """UDP datagrams inside → outside, each a new session (source port, destination port)."""
    template = raw(
        Ether(src=INSIDE_MAC, dst=ROUTER_IN_MAC)
        / IP(src=INSIDE, dst=OUTSIDE, ttl=64)
        / UDP(sport=1, dport=1, chksum=0)
        / b"x"
    )
    out = []
    for n in range(count):
        sport, dport = 20000 + n % 40000, 9000 + n // 40000
        frame = bytearray(template)
        struct.pack_into("!HH", frame, 34, sport, dport)  # UDP checksum 0: none (RFC 768)
        out.append(bytes(frame))
    return out


def send_paced(
    host: LabHost, data: list[bytes], batch: int, caught_up: Callable[[int], None]
) -> int:
    """Send with sendmmsg from inside `host`, `batch` frames at a time, each batch once
    `caught_up(sent)` returns (the router has read nearly all): no frame is lost in
    the host's queue, whatever the router's pace."""
    libc = ctypes.CDLL(None, use_errno=True)
    sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sent = 0
    try:
        sock.bind(("eth0", 0))
        buffers = [ctypes.create_string_buffer(f, len(f)) for f in data]
        for start in range(0, len(data), batch):
            chunk = buffers[start : start + batch]
            iovecs = (IoVec * len(chunk))()
            msgs = (MMsgHdr * len(chunk))()
            for i, buf in enumerate(chunk):
                iovecs[i].iov_base = ctypes.addressof(buf)
                iovecs[i].iov_len = len(data[start + i])
                msgs[i].msg_hdr.msg_iov = ctypes.pointer(iovecs[i])
                msgs[i].msg_hdr.msg_iovlen = 1
            done = libc.sendmmsg(sock.fileno(), msgs, len(chunk), 0)
            sent += max(done, 0)
            caught_up(sent)
    finally:
        sock.close()
    return sent


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100_000, help="the NAT's table limit")
    parser.add_argument("--datagrams", type=int, default=120_000, help="new sessions attempted")
    parser.add_argument("--batch", type=int, default=400, help="frames per sendmmsg")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    name = f"bench-nat-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="pktchain-bench-") as tmp:
        workdir = Path(tmp)
        topo = workdir / "topology.yaml"
        topo.write_text(yaml.safe_dump(topology(name)))
        router_file = workdir / "router.yaml"
        router_file.write_text(yaml.safe_dump(router(args.limit)))
        with (
            Lab.up(topo) as lab,
            NodeProcess(
                name,
                topology=topo,
                log_path=workdir / "node.log",
                args=("--router", str(router_file)),
            ) as node,
        ):
            inside, outside = lab.host("inside"), lab.host("outside")
            outside.popen(["python3", "-c", ECHO_SERVER, OUTSIDE, str(ECHO_PORT)])
            outside.wait_listening(ECHO_PORT, timeout=10)
            with inside.socket(socket.AF_INET, socket.SOCK_STREAM) as old:
                old.settimeout(5)
                old.connect((OUTSIDE, ECHO_PORT))
                old.sendall(b"before\n")
                assert old.recv(100) == b"before\n"
                before = rss_bytes(node.pid)
                base = node.router(limit=0)["counters"].get("rx-frames", 0)

                def caught_up(sent: int, slack: int = args.batch // 2) -> None:
                    wait_until(
                        lambda: (
                            node.router(limit=0)["counters"]["rx-frames"] - base >= sent - slack
                        ),
                        timeout=30,
                        what="the router to read the datagrams sent",
                    )

                started = time.monotonic()
                sent = send_paced(inside, frames(args.datagrams), args.batch, caught_up)
                caught_up(sent, slack=0)
                seconds = time.monotonic() - started
                table = node.router(limit=0)
                after = rss_bytes(node.pid)
                old.sendall(b"after\n")
                still = old.recv(100) == b"after\n"
    sessions = int(table["nat_sessions"])
    counters = table["counters"]
    report = {
        "limit": args.limit,
        "datagrams_sent": sent,
        "seconds": round(seconds, 1),
        "sessions": sessions,
        "refused_session_limit": counters.get("nat-session-limit", 0)
        + counters.get("nat-host-session-limit", 0),
        # RFC 5508 REQ-8: refusals answered with ICMP 3/13, within the router's
        # ICMP error rate limit (RFC 1812 §4.3.2.8); the rest are counted only.
        "icmp_3_13_sent": counters.get("icmp-out-nat", 0),
        "icmp_rate_limited": counters.get("icmp-rate-limited", 0),
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "bytes_per_session": round((after - before) / sessions) if sessions else None,
        "established_flow_still_works": still,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:30} {value}")
    return 0 if still and sessions <= args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
