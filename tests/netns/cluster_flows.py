"""Programs the cluster tests run inside hosts: a UDP flow sender, and a
receiver that notes, for each packet, its flow and the MAC it came from.

A routed appliance gives every packet it forwards its own source MAC, so the
receiver knows which replica each packet of each flow crossed, and when.
Run as ``python3 cluster_flows.py send|receive ...``; both stop by themselves.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time


def send(  # noqa: PLR0917 - the command line's arguments, in order
    destination: str, port: int, flows: int, rate: float, seconds: float, base: int
) -> None:
    """`flows` UDP flows (source ports base, base + 1, ...), each `rate` packets a second."""
    sockets = []
    for n in range(flows):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", base + n))
        sockets.append(sock)
    end = time.monotonic() + seconds
    sequence = 0
    while time.monotonic() < end:
        for sock in sockets:
            # A path being re-pinned may refuse a packet for a moment.
            with contextlib.suppress(OSError):
                sock.sendto(sequence.to_bytes(4, "big") + b"x" * 60, (destination, port))
        sequence += 1
        time.sleep(1 / rate)


def receive(ifname: str, port: int, seconds: float, out: str) -> None:
    """Note (time, source port, source MAC) of each UDP packet to `port` on `ifname`."""
    keep = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no port unreachable back
    keep.bind(("0.0.0.0", port))
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    raw.bind((ifname, 0))
    raw.settimeout(0.2)
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            frame = raw.recv(2048)
        except TimeoutError:
            continue
        if len(frame) < 42 or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        sport = int.from_bytes(frame[14 + ihl : 16 + ihl], "big")
        dport = int.from_bytes(frame[16 + ihl : 18 + ihl], "big")
        if dport != port:
            continue
        seen.append((time.monotonic(), sport, frame[6:12].hex(":")))
    with open(out, "w") as sink:
        json.dump(seen, sink)
    keep.close()


if __name__ == "__main__":
    if sys.argv[1] == "send":
        destination, port, flows, rate, seconds, base = sys.argv[2:8]
        send(destination, int(port), int(flows), float(rate), float(seconds), int(base))
    else:
        receive(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
