"""Network namespaces and AF_PACKET sockets for `pktchain pipe`; sending frames out.

:func:`enter_netns` is ``--netns``: the process moves into the namespace before
opening anything, as under ``ip netns exec`` (:func:`pktchain.linux.netns.enter`).
:class:`Injector` sends frames out of an interface; it is bound with protocol
0, so it receives nothing (no socket buffer fills with frames nobody reads).
Capture, which needs the packet codec, is in :mod:`pktchain.pipe.capture`, so
that ``pktchain pipe write`` does not load it.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from pktchain.linux import netns

__all__ = ["Injector", "InterfaceError", "enter_netns", "open_packet_socket"]

SIOCGIFMTU = 0x8921  # linux/sockios.h

# A frame the interface refuses for a full queue (ENOBUFS) is offered again for
# this long, backing off, before it counts as refused: the kernel gives no
# event to wait for (the socket's own send buffer is not what is full).
_ENOBUFS_PATIENCE = 0.1


class InterfaceError(OSError):
    """Opening or using an interface failed; keeps the errno and names the interface."""

    def __init__(self, code: int, ifname: str, action: str, hint: str = "") -> None:
        message = f"{ifname}: cannot {action}: {os.strerror(code)}"
        super().__init__(code, message + (f" ({hint})" if hint else ""))
        self.ifname = ifname


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into network namespace ``name``.

    ``name`` is a namespace of ``ip netns`` (``/run/netns/NAME``) or a path such
    as ``/proc/PID/ns/net``. Interfaces and sockets opened afterwards are those
    of the namespace, as under ``ip netns exec NAME``.
    """
    try:
        netns.enter(name)
    except netns.NetnsError as exc:
        code = exc.errno or errno.EPERM
        if exc.operation is netns.NetnsOperation.OPEN:
            raise InterfaceError(
                code, f"netns {name}", "open the namespace", netns.netns_path(name)
            ) from None
        raise InterfaceError(code, f"netns {name}", "enter it") from None


def open_packet_socket(ifname: str, action: str) -> socket.socket:
    """An AF_PACKET raw socket for ``ifname``, not yet bound; raises InterfaceError."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        raise InterfaceError(errno.ENODEV, ifname, action, "no such interface here") from None
    try:
        # Protocol 0: nothing is queued until bind() names the interface.
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        hint = "needs CAP_NET_RAW (root)" if exc.errno == errno.EPERM else ""
        raise InterfaceError(exc.errno or errno.EPERM, ifname, action, hint) from None


class Injector:
    """Sends frames out of one interface, blocking while the kernel queues are full."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        sock = open_packet_socket(ifname, "send on it")
        try:
            sock.bind((ifname, 0))  # protocol 0: this socket receives nothing
        except OSError as exc:
            sock.close()
            raise InterfaceError(exc.errno or errno.EIO, ifname, "send on it") from None
        self._sock = sock
        self._send = sock.send

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, data: bytes) -> None:
        """Send one frame; raises OSError if the interface refuses it.

        A full device queue (ENOBUFS) is retried with back-off for up to 0.1 s,
        so that a burst is slowed down rather than lost.
        """
        try:
            self._send(data)
            return
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
        deadline = time.monotonic() + _ENOBUFS_PATIENCE
        pause = 0.0001
        while True:
            time.sleep(pause)
            try:
                self._send(data)
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS or time.monotonic() > deadline:
                    raise
            pause = min(pause * 2, 0.01)

    def mtu(self) -> int | None:
        """The interface's MTU (for error messages), None if the kernel will not say."""
        import fcntl

        request = struct.pack("16si", self.ifname.encode(), 0)
        try:
            reply = fcntl.ioctl(self._sock.fileno(), SIOCGIFMTU, request)
        except OSError:
            return None
        mtu: int = struct.unpack_from("i", reply, 16)[0]
        return mtu

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Injector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
