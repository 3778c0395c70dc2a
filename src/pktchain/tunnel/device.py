"""The TUN device of a tunnel end: created by the process, gone when it exits.

The original tool ran ``openvpn --mktun``, ``ip link set up`` and ``ip addr
add`` and, on exit, their reverse. Here the process creates the device with
:func:`pktchain.linux.tuntap.open_tun` (``IFF_TUN | IFF_NO_PI``: bare IP
packets, as the original reads them), then sets its MTU, address and state
over netlink (pyroute2). The device is not made persistent, so the kernel
removes it, with its address and routes, when the descriptor is closed: on a
clean exit, on SIGTERM, and even when the process is killed.

A name that is already taken is refused rather than attached to: the device
would not be ours to remove.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, NetlinkError

from pktchain.lab.links import IFA_F_NODAD
from pktchain.linux.tuntap import IFF_TUN, TunError, check_ifname, open_tun

__all__ = ["IFF_TUN", "Tun", "TunError", "check_ifname"]

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


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
            fd = open_tun(name)
            try:
                index = _configure(ipr, name, address, mtu)
            except OSError as exc:
                os.close(fd)
                raise TunError(exc.errno, f"cannot configure TUN {name}: {exc.strerror}") from exc
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
