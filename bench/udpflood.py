"""A small-UDP packet generator that outruns any Python forwarder.

It builds one Ethernet/IPv4/UDP frame per flow once (with scapy, off the hot
path), then hands the kernel batches of them with `sendmmsg(2)` on an AF_PACKET
socket (through ctypes: the socket module has no sendmmsg), so one system call
sends `--batch` frames.  It enters the given namespace itself and stops after
`--seconds` or `--count`, whichever comes first, printing one JSON line.

    python bench/udpflood.py --netns NS --ifname eth0 --dst-mac MAC \
        --src-ip 10.0.0.1 --dst-ip 10.0.0.2 --seconds 5
"""

from __future__ import annotations

import argparse
import ctypes
import json
import socket
import time

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw, raw

from pktchain.linux.netns import enter

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


def build_frames(args: argparse.Namespace, src_mac: str) -> list[bytes]:
    payload = bytes(args.size - 42) if args.size > 42 else b""
    return [
        raw(
            Ether(dst=args.dst_mac, src=src_mac)
            / IP(src=args.src_ip, dst=args.dst_ip, ttl=64)
            / UDP(sport=10000 + flow, dport=args.dport)
            / Raw(payload)
        )
        for flow in range(args.flows)
    ]


def flood(args: argparse.Namespace) -> dict[str, float]:
    libc = ctypes.CDLL(None, use_errno=True)
    enter(args.netns)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    sock.bind((args.ifname, 0))
    src_mac = sock.getsockname()[4].hex(":")
    frames = build_frames(args, src_mac)
    buffers = [ctypes.create_string_buffer(frame, len(frame)) for frame in frames]
    iovecs = (IoVec * args.batch)()
    msgs = (MMsgHdr * args.batch)()
    for i in range(args.batch):
        buf = buffers[i % len(buffers)]
        iovecs[i].iov_base = ctypes.addressof(buf)
        iovecs[i].iov_len = len(frames[i % len(frames)])
        msgs[i].msg_hdr.msg_iov = ctypes.pointer(iovecs[i])
        msgs[i].msg_hdr.msg_iovlen = 1
    fd = sock.fileno()
    sent = 0
    failed = 0
    start = time.monotonic()
    deadline = start + args.seconds
    while sent < args.count:
        n = libc.sendmmsg(fd, msgs, min(args.batch, args.count - sent), 0)
        if n < 0:
            failed += 1  # ENOBUFS while the device queue is full: try again
        else:
            sent += n
        if time.monotonic() >= deadline:
            break
    elapsed = time.monotonic() - start
    sock.close()
    return {
        "sent": sent,
        "busy": failed,
        "seconds": elapsed,
        "pps": sent / elapsed if elapsed else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", required=True)
    parser.add_argument("--ifname", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--src-ip", required=True)
    parser.add_argument("--dst-ip", required=True)
    parser.add_argument("--dport", type=int, default=9)
    parser.add_argument("--flows", type=int, default=8)
    parser.add_argument("--size", type=int, default=60, help="frame size without FCS")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=50_000_000)
    print(json.dumps(flood(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
