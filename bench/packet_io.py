"""How a packet socket is best read and written: the measurements behind the ports' choices.

On one veth pair between this namespace and a namespace of its own, with
64-byte frames (vnet header in front, as the node's ports carry them):

- receive: `recv` per frame, `recvmmsg` 64 at a time (`ReceiveBatch`, as the
  node's AF_PACKET and veth ports read), and a `TPACKET_V3` ring. The frames
  are queued first (a 64 MiB receive buffer, a 64 MiB ring), then drained
  and timed: the cost of reading alone, copy into ``bytes`` included.
- wake-up: the time from a frame's `send` to its socket polling readable,
  for a plain socket and for a `TPACKET_V3` ring (whose reader is woken when
  a block is retired: full, or its timer, here 1 ms, expired).
- send: `send` per frame against `sendmmsg` 64 at a time (`SendBatch`), into
  a veth whose peer's kernel drops the frames (no socket there).

Not a pass/fail test: a record for docs/benchmarks.md ("Packet socket I/O").

    .venv/bin/python bench/packet_io.py [--frames 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import mmap
import os
import select
import socket
import statistics
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pktchain.linux.mmsg import ReceiveBatch, SendBatch
from pktchain.linux.netns import entered
from pktchain.linux.packet import ETH_P_ALL, PACKET_IGNORE_OUTGOING, PACKET_VNET_HDR, SOL_PACKET
from pktchain.linux.sockets import receive_buffer

PACKET_RX_RING = 5  # linux/if_packet.h
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_USER = 1
BLOCK = 1 << 22
BLOCKS = 16
# struct tpacket_req3: block size, block count, frame size, frame count,
# retire timeout (ms), private size, features.
TPACKET_REQ3 = struct.Struct("IIIIIII")
# struct tpacket3_hdr up to tp_mac: next offset, sec, nsec, snaplen, len, status, mac.
TPACKET3_HDR = struct.Struct("IIIIIIH")
FRAME = bytes(10) + bytes.fromhex("0200000000020200000000010800") + bytes(50)
MAX_FRAME = 65536 + 10 + 64


@contextmanager
def veth_pair() -> Iterator[tuple[str, str, str]]:
    """(here, there, namespace): a veth pair, `there` in a namespace of its own."""
    tag = f"{os.getpid() % 100000}"
    netns, here, there = f"pio{tag}", f"pioa{tag}", f"piob{tag}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(
            ["ip", "link", "add", here, "type", "veth", "peer", "name", there, "netns", netns],
            check=True,
        )
        subprocess.run(["ip", "link", "set", here, "up"], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", there, "up"], check=True)
        yield here, there, netns
    finally:
        subprocess.run(["ip", "link", "del", here], check=False, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", netns], check=True)


def packet_socket(ifname: str, *, bind: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    receive_buffer(sock, 64 << 20)
    if bind:
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
    return sock


def fill(sender: socket.socket, frames: int) -> None:
    batch = SendBatch(sender.fileno(), 64)
    for _ in range(frames):
        batch.queue(FRAME)
    batch.flush()


def drain(read: Callable[[], int], frames: int) -> float:
    """Seconds per frame to read `frames` frames already queued (or all there are)."""
    start = last = time.perf_counter()
    got = idle = 0
    while got < frames and idle < 1000:
        n = read()
        if n:
            got += n
            idle = 0
            last = time.perf_counter()
        else:
            idle += 1
    return (last - start) / max(got, 1)


def by_recv(sock: socket.socket) -> Callable[[], int]:
    recv = sock.recv

    def read() -> int:
        n = 0
        for _ in range(64):
            try:
                recv(MAX_FRAME)
            except BlockingIOError:
                break
            n += 1
        return n

    return read


def by_recvmmsg(sock: socket.socket) -> Callable[[], int]:
    batch = ReceiveBatch(sock.fileno(), 64, MAX_FRAME)

    def read() -> int:
        try:
            return len(batch.receive())
        except BlockingIOError:
            return 0

    return read


class Ring:
    """A TPACKET_V3 receive ring on `ifname`, read block by block."""

    def __init__(self, ifname: str) -> None:
        self.sock = packet_socket(ifname, bind=False)
        self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frames = BLOCKS * (BLOCK >> 11)
        self.sock.setsockopt(
            SOL_PACKET, PACKET_RX_RING, TPACKET_REQ3.pack(BLOCK, BLOCKS, 1 << 11, frames, 1, 0, 0)
        )
        self.map = mmap.mmap(self.sock.fileno(), BLOCK * BLOCKS)
        self.view = memoryview(self.map)
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setblocking(False)
        self.block = 0

    def read(self) -> int:
        base = self.block * BLOCK
        # struct tpacket_block_desc: version, offset to private, then block_status,
        # num_pkts, offset_to_first_pkt.
        status, count, offset = struct.unpack_from("III", self.map, base + 8)
        if not status & TP_STATUS_USER:
            return 0
        at = base + offset
        for _ in range(count):
            step, _sec, _nsec, snaplen, _len, _status, mac = TPACKET3_HDR.unpack_from(self.map, at)
            bytes(self.view[at + mac - 10 : at + mac + snaplen])
            at += step
        struct.pack_into("I", self.map, base + 8, 0)  # the block back to the kernel
        self.block = (self.block + 1) % BLOCKS
        return int(count)

    def release_all(self) -> None:
        while self.read():
            pass

    def close(self) -> None:
        self.view.release()
        self.map.close()
        self.sock.close()


def wake_up(sender: socket.socket, fd: int, after: Callable[[], None], count: int = 200) -> float:
    """Median seconds from one frame's send to `fd` polling readable."""
    poll = select.epoll()
    poll.register(fd, select.EPOLLIN)
    samples = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            sender.send(FRAME)
            poll.poll(1.0)
            samples.append(time.perf_counter() - start)
            after()
    finally:
        poll.close()
    return statistics.median(samples)


def send_cost(sock: socket.socket, frames: int, batched: bool) -> float:
    start = time.perf_counter()
    if batched:
        batch = SendBatch(sock.fileno(), 64)
        queue = batch.queue
        for _ in range(frames):
            queue(FRAME)
        batch.flush()
    else:
        send = sock.send
        for _ in range(frames):
            send(FRAME)
    return (time.perf_counter() - start) / frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with veth_pair() as (here, there, netns):
        with entered(netns):
            sender = packet_socket(there, bind=False)
        sender.bind((there, 0))
        receiver = packet_socket(here)
        ring = Ring(here)
        ring.release_all()
        try:
            for _ in range(args.repeat):
                readers = (("recv", by_recv(receiver)), ("recvmmsg", by_recvmmsg(receiver)))
                for name, read in readers:
                    fill(sender, args.frames)
                    results.setdefault(f"receive: {name}", []).append(drain(read, args.frames))
                    ring.release_all()
                fill(sender, args.frames)
                by_recvmmsg(receiver)()  # the plain socket is not timed here
                results.setdefault("receive: TPACKET_V3", []).append(drain(ring.read, args.frames))
                by_recv(receiver)()
            drop_all = by_recvmmsg(receiver)
            results["wake-up: socket"] = [wake_up(sender, receiver.fileno(), lambda: None)]
            while drop_all():
                pass
            results["wake-up: TPACKET_V3"] = [wake_up(sender, ring.sock.fileno(), ring.release_all)]
            ring.close()
            while drop_all():
                pass
            receiver.close()
            for _ in range(args.repeat):
                for batched in (False, True):
                    name = "send: sendmmsg" if batched else "send: send"
                    results.setdefault(name, []).append(send_cost(sender, args.frames, batched))
        finally:
            sender.close()
    print(f"{'measure':<22} {'median µs':>10}  samples (µs)")
    for name, samples in results.items():
        shown = ", ".join(f"{s * 1e6:.2f}" for s in samples)
        print(f"{name:<22} {statistics.median(samples) * 1e6:>10.2f}  {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
