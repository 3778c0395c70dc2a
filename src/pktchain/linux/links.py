"""Whether network interfaces are up, asked cheaply and often.

`LinkWatch` keeps one datagram socket per network namespace (made inside it,
so it stays bound to it) and asks the kernel for an interface's flags with one
``SIOCGIFFLAGS`` ioctl (netdevice(7)): no netlink dump, no process. An
interface that is gone, or whose namespace is gone, counts as down.
"""

from __future__ import annotations

import fcntl
import socket
import struct

from pktchain.linux.netns import entered

__all__ = ["IFF_RUNNING", "IFF_UP", "LinkWatch"]

SIOCGIFFLAGS = 0x8913  # linux/sockios.h
IFF_UP = 0x1  # linux/if.h
IFF_RUNNING = 0x40
_IFREQ = struct.Struct("16sH14x")  # struct ifreq: name, then ifr_flags in the union


class LinkWatch:
    """Interfaces' operational state, by (namespace, interface name)."""

    def __init__(self) -> None:
        self._sockets: dict[str | None, socket.socket] = {}

    def is_up(self, netns: str | None, ifname: str) -> bool:
        """Whether `ifname` in `netns` is administratively up with its carrier on."""
        try:
            sock = self._socket(netns)
            reply = fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ.pack(ifname.encode(), 0))
        except OSError:
            self.forget(netns)  # the namespace may be gone: ask afresh next time
            return False
        flags: int = _IFREQ.unpack(reply)[1]
        return flags & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING

    def _socket(self, netns: str | None) -> socket.socket:
        sock = self._sockets.get(netns)
        if sock is None:
            with entered(netns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sockets[netns] = sock
        return sock

    def forget(self, netns: str | None) -> None:
        sock = self._sockets.pop(netns, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for netns in list(self._sockets):
            self.forget(netns)
