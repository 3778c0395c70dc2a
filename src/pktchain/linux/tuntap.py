"""Creating TUN and TAP devices through ``/dev/net/tun`` (linux/if_tun.h).

One opener for both kinds: :func:`open_tap` for the node's ports (Ethernet
frames, each with a 10-byte ``virtio_net_hdr`` in front) and :func:`open_tun`
for the tunnel (bare IP packets, as TunConnector reads them). A device is
created by ``TUNSETIFF`` on a fresh descriptor, in the network namespace of
the thread that opens ``/dev/net/tun`` (the kernel records it at open), so a
TAP for a host is opened inside the host's namespace (:mod:`pktchain.linux.netns`)
and never exists in the node's own. No device is made persistent: the kernel
removes it, with its addresses and routes, when the descriptor is closed, even
if the process is killed.

For the TAP ports, announcing ``TUN_F_CSUM | TUN_F_TSO*`` with ``TUNSETOFFLOAD``
lets the host's stack hand the node 64 KB TCP segments with a partial
checksum instead of MTU-sized frames with a full one, which is what makes a
Python switch reach kernel-like TCP throughput (docs/benchmarks.md).
"""

from __future__ import annotations

import fcntl
import os
import struct
from enum import IntFlag

from pktchain.linux.netns import NetnsError, entered

__all__ = [
    "DEFAULT_OFFLOADS",
    "IFF_NO_PI",
    "IFF_TAP",
    "IFF_TUN",
    "IFF_VNET_HDR",
    "IFNAMSIZ",
    "TUNSETIFF",
    "TUN_DEVICE",
    "VNET_HDR_LEN",
    "TapError",
    "TunError",
    "TunOffload",
    "TunTapError",
    "check_ifname",
    "open_tap",
    "open_tun",
    "tap_mac",
]

TUN_DEVICE = "/dev/net/tun"
IFNAMSIZ = 16

# ioctl request numbers: _IOW('T', n, int) from linux/if_tun.h.
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
SIOCGIFHWADDR = 0x8927  # also answered by a TUN/TAP descriptor for its device

IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

VNET_HDR_LEN = 10
"""Size of `struct virtio_net_hdr` (no `num_buffers`); AF_PACKET's
`PACKET_VNET_HDR` uses the same size, so frames move between drivers as they are."""

_IFNAME_FORBIDDEN = frozenset("/:") | {chr(c) for c in range(33)} | {chr(127)}


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


class TunTapError(OSError):
    """Creating or configuring a TUN or TAP device failed; keeps the errno, names the device."""


class TapError(TunTapError):
    """Creating or configuring a TAP device failed."""


class TunError(TunTapError):
    """Creating or configuring a TUN device failed."""


def check_ifname(name: str) -> None:
    """Raise ValueError unless `name` is a valid interface name (1-15 bytes, no
    slash, colon or whitespace; net/core/dev.c dev_valid_name)."""
    size = len(name.encode())
    if not 1 <= size < IFNAMSIZ or name in (".", "..") or _IFNAME_FORBIDDEN & set(name):
        raise ValueError(
            f"{name!r} is not an interface name (1-{IFNAMSIZ - 1} bytes, no '/', ':' or whitespace)"
        )


def open_tap(
    ifname: str,
    *,
    netns: str | None = None,
    offloads: TunOffload = DEFAULT_OFFLOADS,
) -> int:
    """Create TAP device `ifname` in `netns` and return its non-blocking descriptor.

    The device carries a virtio-net header on every frame and accepts the
    given offloads. Raises `TapError` (with the errno) when the kernel refuses.
    """
    fd = _create(ifname, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, netns, TapError, "TAP")
    try:
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
        fcntl.ioctl(fd, TUNSETOFFLOAD, int(offloads))
    except OSError as exc:
        os.close(fd)
        raise TapError(exc.errno, f"cannot set up TAP {ifname}: {exc.strerror}") from exc
    return fd


def open_tun(ifname: str, *, netns: str | None = None) -> int:
    """Create TUN device `ifname` (bare IP packets, no packet information) in `netns`.

    Returns its non-blocking descriptor; raises `TunError` (with the errno)
    when the kernel refuses. An existing TUN device of that name that is not
    in use is attached to, as ``TUNSETIFF`` does: a caller that must not do
    that looks the name up first.
    """
    return _create(ifname, IFF_TUN | IFF_NO_PI, netns, TunError, "TUN")


def tap_mac(fd: int) -> str:
    """The MAC address of the TAP device behind `fd` (no netlink, no namespace switch)."""
    ifr = fcntl.ioctl(fd, SIOCGIFHWADDR, bytes(IFNAMSIZ + 16))
    # struct ifreq: name[16], then struct sockaddr {u16 family; char data[14]}.
    return ifr[IFNAMSIZ + 2 : IFNAMSIZ + 8].hex(":")


def _create(ifname: str, flags: int, netns: str | None, error: type[TunTapError], kind: str) -> int:
    check_ifname(ifname)
    where = f" in netns {netns}" if netns else ""
    fd = -1
    try:
        with entered(netns):
            try:
                fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                raise error(exc.errno, f"cannot open {TUN_DEVICE}{where}: {exc.strerror}") from exc
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), flags))
            except OSError as exc:
                os.close(fd)
                raise error(
                    exc.errno, f"cannot create {kind} {ifname}{where}: {exc.strerror}"
                ) from exc
    except NetnsError as exc:
        if fd >= 0:  # made, but the thread could not return: give the device up
            os.close(fd)
        raise error(exc.errno, f"cannot create {kind} {ifname}: {exc}") from exc
    return fd
