"""Frames to and from one network interface through AF_PACKET, for `pktchain pipe`.

:class:`Capture` reads every frame of an interface as a :class:`~pktchain.pipe.formats.Frame`
the way libpcap does, so that what a pipe carries is what tcpdump would show:

* the socket is created without a protocol and bound to the interface with
  ``ETH_P_ALL``, so it never queues a frame of another interface (a socket
  made with ``ETH_P_ALL`` receives from every interface until it is bound);
* ``PACKET_VNET_HDR``: frames whose L4 checksum the sender left to offload
  (``CHECKSUM_PARTIAL``, common on veths and for locally sent traffic) have it
  completed here, so that a frame written to another interface is accepted
  by its receiver;
* ``PACKET_AUXDATA``: a VLAN tag the kernel holds outside the frame
  (hardware/veth VLAN offload) is put back in, as libpcap does, so that
  ``8100 ...`` shows in the stream and ``sed`` can remove it;
* ``SO_TIMESTAMPNS``: each frame carries the kernel's receive time;
* ``PACKET_IGNORE_OUTGOING`` for ``--direction in`` (the default), so a pipe
  never reads back what this host, or a ``pktchain pipe write`` on the same
  interface, sends out of it; ``inout`` is tcpdump's view;
* promiscuous mode through ``PACKET_ADD_MEMBERSHIP``, which the kernel undoes
  when the socket closes;
* ``PACKET_STATISTICS``: how many frames the kernel dropped because the
  socket buffer was full (the reader was held up by a slow consumer).

:class:`Injector` sends frames out of an interface. It is bound with protocol
0, so it receives nothing.

The constants come from :mod:`pktchain.node.ports` (the node's AF_PACKET port);
importing it costs a few milliseconds and no third-party module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import time
from enum import Enum
from typing import NamedTuple

from pktchain.node.ports import (
    ETH_P_ALL,
    PACKET_ADD_MEMBERSHIP,
    PACKET_IGNORE_OUTGOING,
    PACKET_MR_PROMISC,
    PACKET_VNET_HDR,
    SOL_PACKET,
)
from pktchain.node.tun import VNET_HDR_LEN
from pktchain.packet.checksum import complete_partial_checksum
from pktchain.packet.headers import VIRTIO_NET_HDR, EtherType
from pktchain.packet.virtio import VIRTIO_NET_HDR_F_NEEDS_CSUM, GsoType
from pktchain.pipe.formats import ETHERNET_HEADER_LEN, MAX_FRAME, Frame

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "Capture",
    "CaptureStats",
    "Direction",
    "Injector",
    "InterfaceError",
    "enter_netns",
]

# linux/if_packet.h, beyond what the node's ports use.
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
_TPACKET_STATS = struct.Struct("II")  # struct tpacket_stats {tp_packets, tp_drops}
# struct tpacket_auxdata {u32 tp_status, tp_len, tp_snaplen; u16 tp_mac, tp_net,
# tp_vlan_tci, tp_vlan_tpid}
_AUXDATA = struct.Struct("IIIHHHH")
# asm-generic/socket.h (x86, ARM, RISC-V): SO_TIMESTAMPNS_OLD, a struct timespec of
# two longs. Python's socket module does not export it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SIOCGIFMTU = 0x8921
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` mounts a named namespace

DEFAULT_BUFFER_SIZE = 2 * 1024 * 1024
"""Socket receive buffer: tcpdump's default (-B 2048)."""

_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUXDATA.size)
_VNET = VNET_HDR_LEN
_VNET_UNPACK = VIRTIO_NET_HDR.struct.unpack_from
_NO_GSO = int(GsoType.NONE)
_VLAN_TAG = struct.Struct("!HH")
# A frame the interface refuses for a full queue (ENOBUFS) is offered again for
# this long, backing off, before it counts as dropped: the kernel gives no
# event to wait for (the socket's own send buffer is not what is full).
_ENOBUFS_PATIENCE = 0.1


class Direction(Enum):
    """Which frames of an interface a capture reads, named as tcpdump's -Q."""

    IN = "in"  # received by the interface
    OUT = "out"  # sent out of it, by this host or by another packet socket
    INOUT = "inout"


class InterfaceError(OSError):
    """Opening or using an interface failed; keeps the errno and names the interface."""

    def __init__(self, code: int, ifname: str, action: str, hint: str = "") -> None:
        message = f"{ifname}: cannot {action}: {os.strerror(code)}"
        super().__init__(code, message + (f" ({hint})" if hint else ""))
        self.ifname = ifname


class CaptureStats(NamedTuple):
    """The kernel's count for a capture socket (``PACKET_STATISTICS``)."""

    received: int  # frames that reached the socket, the dropped ones included
    dropped: int  # frames lost because the socket buffer was full


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into network namespace ``name``.

    ``name`` is a namespace of ``ip netns`` (``/run/netns/NAME``) or a path such
    as ``/proc/PID/ns/net``. Interfaces and sockets opened afterwards are those
    of the namespace, as under ``ip netns exec NAME``.
    """
    path = name if "/" in name else f"{NETNS_RUN_DIR}/{name}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        code = exc.errno or errno.ENOENT
        raise InterfaceError(code, f"netns {name}", "open the namespace", path) from None
    try:
        _setns(fd, CLONE_NEWNET)
    except OSError as exc:
        raise InterfaceError(exc.errno or errno.EPERM, f"netns {name}", "enter it") from None
    finally:
        os.close(fd)


def _setns(fd: int, nstype: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, nstype)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _open_packet_socket(ifname: str, action: str) -> socket.socket:
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


class Capture:
    """Frames arriving at (or leaving) one interface; see the module docstring.

    :meth:`receive` blocks for one frame, then takes what else is already queued,
    up to ``batch`` frames, so a consumer gets frames as soon as they arrive
    and with few writes when they come fast.
    """

    def __init__(
        self,
        ifname: str,
        *,
        direction: Direction = Direction.IN,
        promiscuous: bool = True,
        snaplen: int = MAX_FRAME,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
    ) -> None:
        if not 1 <= snaplen <= MAX_FRAME:
            raise ValueError(f"snaplen {snaplen}: expected 1 to {MAX_FRAME}")
        self.ifname = ifname
        self.direction = direction
        self.snaplen = snaplen
        self.gso_frames = 0  # frames larger than the MTU, merged by GRO/GSO
        self.runts = 0  # frames shorter than an Ethernet header, not passed on
        self._stats = CaptureStats(0, 0)
        sock = _open_packet_socket(ifname, "capture")
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            if direction is Direction.IN:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self._kernel_time = True
            except OSError:
                self._kernel_time = False  # another ABI: stamp frames on receipt
            self._set_buffer(sock, buffer_size)
            if promiscuous:
                ifindex = socket.if_nametoindex(ifname)
                # struct packet_mreq { int ifindex; u16 type; u16 alen; u8 address[8]; }
                mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            sock.bind((ifname, ETH_P_ALL))
        except OSError as exc:
            sock.close()
            raise InterfaceError(exc.errno or errno.EIO, ifname, "capture") from None
        self._sock = sock
        self._buf = bytearray(_VNET + MAX_FRAME)
        self._view = memoryview(self._buf)

    @staticmethod
    def _set_buffer(sock: socket.socket, size: int) -> None:
        try:
            # Root may exceed net.core.rmem_max, as tcpdump -B does.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def fileno(self) -> int:
        return self._sock.fileno()

    def receive(self, batch: int = 64) -> list[Frame]:
        """At least one frame (blocking for it), and up to ``batch`` already queued."""
        frames: list[Frame] = []
        flags = 0
        while len(frames) < batch:
            try:
                frame = self._receive_one(flags)
            except BlockingIOError:
                break
            flags = socket.MSG_DONTWAIT
            if frame is not None:
                frames.append(frame)
        return frames

    def _receive_one(self, flags: int) -> Frame | None:
        size, ancillary, _, address = self._sock.recvmsg_into([self._view], _ANCILLARY_SIZE, flags)
        if self.direction is Direction.OUT and address[2] != socket.PACKET_OUTGOING:
            return None
        stamp = 0
        wire = 0
        tag = b""
        for level, kind, data in ancillary:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status, wire, _, _, _, tci, tpid = _AUXDATA.unpack_from(data)
                if status & TP_STATUS_VLAN_VALID:
                    if not status & TP_STATUS_VLAN_TPID_VALID:
                        tpid = EtherType.VLAN
                    tag = _VLAN_TAG.pack(tpid, tci)
            elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                stamp = seconds * 1_000_000_000 + nanoseconds
        if not self._kernel_time or not stamp:
            stamp = time.time_ns()
        length = size - _VNET
        if length < ETHERNET_HEADER_LEN:
            self.runts += 1
            return None
        buf = self._buf
        flags_, gso_type, _, _, csum_start, csum_offset = _VNET_UNPACK(buf)
        if flags_ & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            # A frame cut short (larger than the buffer) cannot be summed: left as it came.
            with contextlib.suppress(ValueError):
                complete_partial_checksum(buf, csum_start, csum_offset, base=_VNET, end=size)
        if gso_type != _NO_GSO:
            self.gso_frames += 1
        if tag:
            data = bytes(buf[_VNET : _VNET + 12]) + tag + bytes(buf[_VNET + 12 : size])
        else:
            data = bytes(buf[_VNET:size])
        wire = max(wire + len(tag), len(data))
        if len(data) > self.snaplen:
            data = data[: self.snaplen]
        return Frame(data, stamp, wire if wire > len(data) else None)

    def statistics(self) -> CaptureStats:
        """The kernel's counts since the socket was opened."""
        if self._sock.fileno() >= 0:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
            received, dropped = _TPACKET_STATS.unpack(raw)  # reading resets them: keep a sum
            self._stats = CaptureStats(
                self._stats.received + received, self._stats.dropped + dropped
            )
        return self._stats

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self.statistics()
            self._sock.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Injector:
    """Sends frames out of one interface, blocking while the kernel queues are full."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        sock = _open_packet_socket(ifname, "send on it")
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
