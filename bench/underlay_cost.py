"""What one datagram costs on a lab's underlay, and what decoding it costs a node.

Two parts, each printed as a table:

- In the node, in-process: decoding a chained datagram (VXLAN-GPE, NSH with a
  three-hop path) against parsing the inner 60-byte frame, the only parsing
  a frame on one node's fast path gets.
- Across the underlay: a cluster lab (two nodes, no etcd) per `--mtu`; from
  n1's namespace, datagrams of each `--sizes` are sent to a UDP socket in
  n2's namespace, as a node sends them (`IP_PMTUDISC_DONT`: larger than the
  MTU, they are fragmented), one at a time, the receiver drained after each;
  then the same from a socket connected to n2 (the route looked up once).
  In a lab the whole way (n1's UDP and IP output, fragmentation, veth, the
  underlay bridge, veth, n2's reassembly and UDP input) runs in the sender's
  system call, so the time per datagram is its whole cost on the machine.

    .venv/bin/python bench/underlay_cost.py [--mtu 9000 65535] [--sizes 100 8900 62100]
"""

from __future__ import annotations

import argparse
import secrets
import socket
import time
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

from pktchain.lab import Lab
from pktchain.linux.netns import entered
from pktchain.linux.sockets import udp_socket
from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.node.dataplane.underlay import NshHeader, Underlay, encapsulate
from pktchain.packet.parse import parse_frame

PORT = 4790
SECONDS = 2.0
"""At most this long per size."""
COUNT = 20_000
"""At most this many datagrams per size."""


def topology(name: str, mtu: int) -> dict[str, Any]:
    return {
        "lab": name,
        "underlay": "10.251.74.0/24",
        "underlay_mtu": mtu,
        "etcd": False,
        "nodes": {"n1": {}, "n2": {}},
        "hosts": {"h": {}},
    }


def across(mtu: int, sizes: list[int]) -> list[tuple[int, float, float, float, int, int]]:
    """Per size: (size, µs in sendmsg, µs per datagram sent and drained, µs in send on a
    connected socket, datagrams sent, received)."""
    rows = []
    with Lab.up(topology(f"bench-{secrets.token_hex(3)}", mtu)) as lab:
        source = str(lab.topology.node("n1").underlay.ip)
        target = (str(lab.topology.node("n2").underlay.ip), PORT)
        with entered(lab.node("n2").netns):
            receiver = udp_socket(socket.AF_INET, bind=target)
        with entered(lab.node("n1").netns):
            sender = udp_socket(socket.AF_INET, bind=(source, PORT), fragment=True)
            connected = udp_socket(
                socket.AF_INET, bind=(source, PORT + 1), connect=target, fragment=True
            )
        with receiver, sender, connected:
            receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            for size in sizes:
                datagram = bytes(size)
                in_send, total, sent, received = _send(
                    partial(sender.sendto, datagram, target), receiver
                )
                in_connected, _, _, _ = _send(partial(connected.send, datagram), receiver)
                rows.append((size, in_send, total, in_connected, sent, received))
    return rows


def _send(send: Callable[[], int], receiver: socket.socket) -> tuple[float, float, int, int]:
    """(µs in `send`, µs per datagram sent and drained, sent, received), for at most
    `COUNT` datagrams or `SECONDS`."""
    send()  # the neighbour is resolved before timing
    _drain(receiver)
    sent = received = 0
    in_send = 0.0
    clock = time.perf_counter
    start = clock()
    deadline = start + SECONDS
    while sent < COUNT and clock() < deadline:
        before = clock()
        send()
        in_send += clock() - before
        sent += 1
        received += _drain(receiver)
    elapsed = clock() - start
    return in_send / sent * 1e6, elapsed / sent * 1e6, sent, received


def _drain(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(65535)
        except BlockingIOError:
            return count
        count += 1


def decoding(number: int) -> dict[str, float]:
    """µs per call: Underlay.decode of a chained datagram, parse_frame of its frame."""
    frame = bytes(VNET_HDR_LEN) + bytes.fromhex("020000000002020000000001") + b"\x08\x00"
    frame += bytes.fromhex("4500002e00004000401100000a0000010a000002") + bytes(26)
    header = NshHeader(1, 42, 254, tags=(0x11111111, 0x22222222, 0x33333333))
    datagram = b"".join(bytes(part) for part in encapsulate(header, frame))
    underlay = Underlay("n2", ("127.0.0.1", 0))
    try:
        underlay.set_peers({"n1": ("127.0.0.2", PORT)})
        if isinstance(underlay.decode(datagram, "127.0.0.2"), str | None):
            raise RuntimeError("the sample datagram does not decode")
        cases = {
            "Underlay.decode (VXLAN-GPE, NSH, 3-hop path)": lambda: underlay.decode(
                datagram, "127.0.0.2"
            ),
            "parse_frame (the inner frame)": lambda: parse_frame(frame, VNET_HDR_LEN),
            "encapsulate (the sending side)": lambda: encapsulate(header, frame),
        }
        return {
            name: min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6
            for name, call in cases.items()
        }
    finally:
        underlay.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mtu", type=int, nargs="+", default=[9000, 65535])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 8900, 62100])
    parser.add_argument("--number", type=int, default=100_000, help="calls per decode timing")
    args = parser.parse_args()
    if any(not 0 < size <= 65507 for size in args.sizes):
        parser.error("--sizes: a UDP payload is 1 to 65507 bytes")
    # First, while no lab's namespaces are being torn down in the background.
    for name, micros in decoding(args.number).items():
        print(f"{name:<46} {micros:5.2f} µs")
    print()
    print(
        f"{'MTU':>6} {'datagram':>9} {'in sendto':>10} {'per datagram':>13} "
        f"{'received':>13} {'connected send':>15}"
    )
    for mtu in args.mtu:
        for size, in_send, total, in_connected, sent, received in across(mtu, args.sizes):
            print(
                f"{mtu:>6} {size:>8}B {in_send:>8.1f}µs {total:>11.1f}µs "
                f"{received:>6}/{sent:<6} {in_connected:>13.1f}µs"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
