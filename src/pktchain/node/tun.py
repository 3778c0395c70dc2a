"""Creating TAP devices with virtio-net headers and offloads (linux/if_tun.h).

The node reads and writes every frame with a 10-byte `virtio_net_hdr` in
front.  Announcing `TUN_F_CSUM | TUN_F_TSO*` with `TUNSETOFFLOAD` lets the
host's stack hand the node 64 KB TCP segments with a partial checksum instead
of MTU-sized frames with a full one, which is what makes a Python switch reach
kernel-like TCP throughput (DESIGN.md, "Linux facts").

A TAP device is created in the network namespace of the process that opens
`/dev/net/tun`, so the node enters the host's namespace for the open and the
`TUNSETIFF`, then returns.  The device never exists in the root namespace and
disappears when the node's descriptor is closed, even if the node is killed.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntFlag

TUN_DEVICE = "/dev/net/tun"
IFNAMSIZ = 16

# ioctl request numbers: _IOW('T', n, int) from linux/if_tun.h.
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
SIOCGIFHWADDR = 0x8927  # also answered by a TUN/TAP descriptor for its device

IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

VNET_HDR_LEN = 10
"""Size of `struct virtio_net_hdr` (no `num_buffers`); AF_PACKET's
`PACKET_VNET_HDR` uses the same size, so frames move between drivers as they are."""


class TunOffload(IntFlag):
    """What the reader of a TAP accepts from the kernel (TUN_F_* in if_tun.h)."""

    CSUM = 0x01
    TSO4 = 0x02
    TSO6 = 0x04
    TSO_ECN = 0x08
    UFO = 0x10
    USO4 = 0x20
    USO6 = 0x40


DEFAULT_OFFLOADS = TunOffload.CSUM | TunOffload.TSO4 | TunOffload.TSO6 | TunOffload.TSO_ECN


class TapError(OSError):
    """Creating or configuring a TAP device failed; keeps the errno and the device."""


@contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the body inside the named network namespace (None: stay where we are)."""
    if netns is None:
        yield
        return
    from pyroute2 import netns as pr_netns

    pr_netns.pushns(netns)
    try:
        yield
    finally:
        pr_netns.popns()


def open_tap(
    ifname: str,
    *,
    netns: str | None = None,
    offloads: TunOffload = DEFAULT_OFFLOADS,
) -> int:
    """Create TAP device `ifname` in `netns` and return its non-blocking descriptor.

    The device carries a virtio-net header on every frame and accepts the
    given offloads.  Raises `TapError` (with the errno) when the kernel refuses.
    """
    if not ifname or len(ifname.encode()) >= IFNAMSIZ:
        raise ValueError(f"interface name {ifname!r} must be 1-{IFNAMSIZ - 1} bytes")
    with in_netns(netns):
        try:
            fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TapError(exc.errno, f"cannot open {TUN_DEVICE}: {exc.strerror}") from exc
    try:
        ifr = struct.pack("16sH", ifname.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        with in_netns(netns):
            fcntl.ioctl(fd, TUNSETIFF, ifr)
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
        fcntl.ioctl(fd, TUNSETOFFLOAD, int(offloads))
    except OSError as exc:
        os.close(fd)
        where = f" in netns {netns}" if netns else ""
        raise TapError(exc.errno, f"cannot create TAP {ifname}{where}: {exc.strerror}") from exc
    return fd


def tap_mac(fd: int) -> str:
    """The MAC address of the TAP device behind `fd` (no netlink, no namespace switch)."""
    ifr = fcntl.ioctl(fd, SIOCGIFHWADDR, bytes(IFNAMSIZ + 16))
    # struct ifreq: name[16], then struct sockaddr {u16 family; char data[14]}.
    return ifr[IFNAMSIZ + 2 : IFNAMSIZ + 8].hex(":")
