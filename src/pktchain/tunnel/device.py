"""The TUN device of a tunnel end: created by the process, gone when it exits.

The original tool ran ``openvpn --mktun``, ``ip link set up`` and ``ip addr
add`` and, on exit, their reverse. Here the process opens ``/dev/net/tun``
and creates the device with ``TUNSETIFF`` (``IFF_TUN | IFF_NO_PI``: bare IP
packets, as the original reads them), then sets its MTU, address and state
over netlink (pyroute2). The device is not made persistent, so the kernel
removes it, with its address and routes, when the descriptor is closed: on a
clean exit, on SIGTERM, and even when the process is killed.

A name that is already taken is refused rather than attached to: the device
would not be ours to remove.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import struct
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, NetlinkError

from pktchain.lab.links import IFA_F_NODAD
from pktchain.node.tun import IFF_NO_PI, IFNAMSIZ, TUN_DEVICE, TUNSETIFF

__all__ = ["IFF_TUN", "Tun", "TunError", "check_ifname"]

IFF_TUN = 0x0001
"""linux/if_tun.h: a layer-3 device (node/tun.py declares the TAP flags)."""

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_IFNAME_FORBIDDEN = frozenset("/:") | {chr(c) for c in range(33)} | {chr(127)}


class TunError(OSError):
    """Creating or configuring the TUN device failed; keeps the errno and names the device."""


def check_ifname(name: str) -> None:
    """Raise ValueError unless `name` is a valid interface name (1-15 bytes, no
    slash, colon or whitespace; net/core/dev.c dev_valid_name)."""
    size = len(name.encode())
    if not 1 <= size < IFNAMSIZ or name in (".", "..") or _IFNAME_FORBIDDEN & set(name):
        raise ValueError(
            f"{name!r} is not an interface name (1-{IFNAMSIZ - 1} bytes, no '/', ':' or whitespace)"
        )


@dataclass
class Tun:
    """An open TUN device: its name, index and non-blocking descriptor."""

    name: str
    index: int
    fd: int

    @classmethod
    def create(cls, name: str, address: IPInterface, mtu: int) -> Tun:
        """Create TUN `name` in this network namespace, up, with `address` and `mtu`."""
        check_ifname(name)
        with IPRoute() as ipr:
            if ipr.link_lookup(ifname=name):
                raise TunError(errno.EEXIST, f"cannot create TUN {name}: the name is taken")
            try:
                fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                raise TunError(exc.errno, f"cannot open {TUN_DEVICE}: {exc.strerror}") from exc
            try:
                ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
                fcntl.ioctl(fd, TUNSETIFF, ifr)
                index = _configure(ipr, name, address, mtu)
            except OSError as exc:
                os.close(fd)
                raise TunError(exc.errno, f"cannot create TUN {name}: {exc.strerror}") from exc
            except NetlinkError as exc:
                os.close(fd)
                raise TunError(
                    exc.code, f"cannot configure TUN {name}: {os.strerror(exc.code)}"
                ) from exc
        return cls(name, index, fd)

    def close(self) -> None:
        """Close the descriptor: the kernel removes the device."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _configure(ipr: Any, name: str, address: IPInterface, mtu: int) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise TunError(errno.ENODEV, f"TUN {name} vanished after its creation")
    index = int(found[0])
    ipr.link("set", index=index, mtu=mtu)
    extra: dict[str, Any] = {}
    if address.version == 6:
        extra["flags"] = IFA_F_NODAD  # usable at once, no duplicate address detection
    ipr.addr(
        "add",
        index=index,
        address=str(address.ip),
        prefixlen=address.network.prefixlen,
        **extra,
    )
    ipr.link("set", index=index, state="up")
    return index
