"""The kernel fast path against the kernel's own IP forwarding: same hosts, same run.

Two hosts, each a namespace with one end of a veth pair whose other end sits
in a router namespace that forwards IPv4 between them (addresses on its ends,
``ip_forward`` on).  Each figure is measured with the kernel routing every
packet, then with pktchain's kernel fast path (docs/kernel-fastpath.md)
attached to both router ends and holding routed entries for the measured
flows (TTL - 1, MACs, as the node's router function would fuse them): their
packets skip the router namespace's stack and go with ``bpf_redirect_peer``
straight into the other host.  Packets the program punts (a TCP handshake,
the control connection of iperf3) are routed by the kernel as before.

- TCP throughput: iperf3, one stream, its client port fixed so that the
  entry can name it, `--seconds` long, offloads on (64 KB GSO segments).
- Small-packet rate: bench/udpflood.py's 60-byte UDP frames, what the
  receiver's interface counted per second.

It prints both figures and the ratio fast path / kernel (median of
`--repeat`), and `--json` prints them machine-readably.  Not a pass/fail test.

    .venv/bin/python bench/kernel_fastpath.py [--seconds 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import IPRoute
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket

from pktchain.functions.sdk import FlowLease
from pktchain.linux.netns import entered
from pktchain.node.dataplane.fastpath import FusedEntry, Trace, fuse
from pktchain.node.dataplane.kfastpath import KernelFastPath
from pktchain.node.dataplane.ports import PortKind, SwitchPort
from pktchain.packet.parse import parse_frame

HERE = Path(__file__).resolve().parent
A_MAC, RA_MAC, B_MAC, RB_MAC = (
    "02:00:00:0b:00:01",
    "02:00:00:0b:00:a1",
    "02:00:00:0b:00:02",
    "02:00:00:0b:00:b1",
)
A_IP, B_IP = "10.11.1.1", "10.11.2.1"
IPERF_PORT, IPERF_CPORT, IPERF_RUNS = 5201, 41000, 32
"""Each iperf3 run has a client port of its own (the last one's may be in TIME-WAIT)."""
FLOOD_DPORT, FLOOD_FLOWS = 9, 8


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def topology() -> Iterator[dict[str, str]]:
    suffix = secrets.token_hex(3)
    names = {"router": f"kfr{suffix}", "a": f"kfa{suffix}", "b": f"kfb{suffix}"}
    made = []
    try:
        for name in names.values():
            ip("netns", "add", name)
            made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        router = names["router"]
        for host, mac, router_mac, address, gateway in (
            ("a", A_MAC, RA_MAC, A_IP, "10.11.1.254"),
            ("b", B_MAC, RB_MAC, B_IP, "10.11.2.254"),
        ):
            end = f"r{host}"
            ip("-n", router, "link", "add", end, "address", router_mac, "type", "veth",
               "peer", "name", "eth0", "address", mac, "netns", names[host])  # fmt: skip
            ip("-n", router, "addr", "add", f"{gateway}/24", "dev", end)
            ip("-n", router, "link", "set", end, "up")
            ip("-n", names[host], "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", names[host], "link", "set", "eth0", "up")
            ip("-n", names[host], "route", "add", "default", "via", gateway)
        subprocess.run(
            ["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True,
            timeout=30,
        )
        # Let the neighbours be known before anything is measured.
        subprocess.run(
            ["ip", "netns", "exec", names["a"], "ping", "-c", "2", "-i", "0.2", B_IP],
            check=True,
            capture_output=True,
            timeout=30,
        )
        yield names
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def routed_entry(first: ScapyPacket, dst_mac: str, src_mac: str) -> FusedEntry:
    """The entry a router would fuse for `first`'s flow: MACs set, TTL - 1."""
    final = first.copy()
    final[Ether].dst, final[Ether].src = dst_mac, src_mac
    final[IP].ttl -= 1
    del final[IP].chksum
    vnet = bytes(10)
    first_bytes, final_bytes = vnet + bytes(first), vnet + bytes(Ether(bytes(final)))
    port = SwitchPort(
        name="bench", kind=PortKind.TAP, fd=-1, recv=bytes, send=len, sendv=len,
        netns=None, ifname="bench",
    )  # fmt: skip
    trace = Trace(port, first_bytes, parse_frame(first_bytes, 10))
    trace.add_lease(FlowLease())
    entry = fuse(trace, port, final_bytes, dst_entry=None, src_entry=None)
    if not isinstance(entry, FusedEntry):
        raise RuntimeError(f"no entry: {entry}")
    return entry


def install(kernel: KernelFastPath, names: dict[str, str]) -> None:
    with entered(names["router"]):
        ra, rb = socket.if_nametoindex("ra"), socket.if_nametoindex("rb")
    a, b = socket.inet_aton(A_IP), socket.inet_aton(B_IP)
    flows = []
    for cport in range(IPERF_CPORT, IPERF_CPORT + IPERF_RUNS):
        forth = Ether(src=A_MAC, dst=RA_MAC) / IP(src=A_IP, dst=B_IP)
        back = Ether(src=B_MAC, dst=RB_MAC) / IP(src=B_IP, dst=A_IP)
        flows.append((ra, rb, forth / TCP(sport=cport, dport=IPERF_PORT), B_MAC, RB_MAC))
        flows.append((rb, ra, back / TCP(sport=IPERF_PORT, dport=cport), A_MAC, RA_MAC))
    for flow in range(FLOOD_FLOWS):
        frame = (
            Ether(src=A_MAC, dst=RA_MAC)
            / IP(src=A_IP, dst=B_IP)
            / UDP(sport=10000 + flow, dport=FLOOD_DPORT)
        )
        flows.append((ra, rb, frame, B_MAC, RB_MAC))
    for ingress, egress, first, dst_mac, src_mac in flows:
        packet = first[IP]
        key = (
            socket.inet_aton(packet.src),
            socket.inet_aton(packet.dst),
            packet.proto,
            packet.payload.sport,
            packet.payload.dport,
        )
        assert key[0] in {a, b}
        refused = kernel.install(ingress, key, routed_entry(first, dst_mac, src_mac), egress)
        if refused is not None:
            raise RuntimeError(f"entry refused: {refused}")


def tcp_gbps(names: dict[str, str], seconds: float, cport: int) -> float:
    server = subprocess.Popen(
        ["ip", "netns", "exec", names["b"], "iperf3", "-s", "-1", "-B", B_IP],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            done = subprocess.run(
                ["ip", "netns", "exec", names["a"], "iperf3", "-c", B_IP, "-J",
                 "--cport", str(cport), "-t", str(seconds)],
                capture_output=True, text=True, timeout=seconds + 30, check=False,
            )  # fmt: skip
            received = json.loads(done.stdout or "{}").get("end", {}).get("sum_received")
            if done.returncode == 0 and received:
                return float(received["bits_per_second"]) / 1e9
            time.sleep(0.05)  # the server is not listening yet
        raise RuntimeError(f"iperf3 failed: {done.stderr or done.stdout}")
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def rx_packets(netns: str) -> int:
    with entered(netns), IPRoute() as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        return int(ipr.get_links(index)[0].get_attr("IFLA_STATS64")["rx_packets"])


def udp_pps(names: dict[str, str], seconds: float) -> float:
    argv = [
        sys.executable, str(HERE / "udpflood.py"), "--netns", names["a"], "--ifname", "eth0",
        "--dst-mac", RA_MAC, "--src-ip", A_IP, "--dst-ip", B_IP, "--dport", str(FLOOD_DPORT),
        "--flows", str(FLOOD_FLOWS), "--seconds", str(seconds),
    ]  # fmt: skip
    before = rx_packets(names["b"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    time.sleep(0.2)  # the last queued frames
    return (rx_packets(names["b"]) - before) / float(json.loads(done.stdout)["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, dict[str, list[float]]] = {
        "tcp_gbps": {"kernel": [], "fastpath": []},
        "udp_pps": {"kernel": [], "fastpath": []},
    }
    with topology() as names, KernelFastPath.load() as kernel:
        install(kernel, names)
        runs = iter(range(IPERF_CPORT, IPERF_CPORT + IPERF_RUNS))
        for _ in range(min(args.repeat, IPERF_RUNS // 2)):
            for mode in ("kernel", "fastpath"):
                if mode == "fastpath":
                    for end in ("ra", "rb"):
                        kernel.attach(end, netns=names["router"])
                figures["tcp_gbps"][mode].append(tcp_gbps(names, args.seconds, next(runs)))
                figures["udp_pps"][mode].append(udp_pps(names, args.seconds))
                if mode == "fastpath":
                    for end in ("ra", "rb"):
                        kernel.detach(end, netns=names["router"])
        carried = sum(hit.packets for hit in kernel.hits())
    medians = {
        figure: {mode: statistics.median(values) for mode, values in modes.items()}
        for figure, modes in figures.items()
    }
    if args.json:
        print(json.dumps({"medians": medians, "runs": figures, "carried": carried}))
        return
    for figure, modes in medians.items():
        ratio = modes["fastpath"] / modes["kernel"] if modes["kernel"] else float("nan")
        print(
            f"{figure:9} kernel forwarding {modes['kernel']:14,.2f}   "
            f"kernel fast path {modes['fastpath']:14,.2f}   ratio {ratio:.2f}"
        )
    print(f"packets the fast path carried: {carried:,}")


if __name__ == "__main__":
    main()
