"""Capturing the frames of one interface through AF_PACKET, as libpcap does.

:class:`Capture` reads frames as :class:`~pktchain.packet.streams.Frame` so that
what a pipe carries is what tcpdump would show, and what a ``pktchain pipe
write`` can send on:

* the socket is created without a protocol and bound to the interface with
  ``ETH_P_ALL``, so it never queues a frame of another interface (a socket
  made with ``ETH_P_ALL`` receives from every interface until it is bound);
* ``PACKET_VNET_HDR``: a frame whose L4 checksum the sender left to offload
  (``CHECKSUM_PARTIAL``: veths, locally sent traffic) has it completed here,
  so that the frame written to another interface is accepted by its receiver;
* ``PACKET_AUXDATA``: the kernel takes a VLAN tag out of every received frame
  (``skb_vlan_untag``) before packet sockets see it; the tag is put back, as
  libpcap does, so that ``8100 ...`` shows in the stream and ``sed`` can
  remove it;
* ``SO_TIMESTAMPNS``: each frame carries the kernel's receive time;
* ``PACKET_IGNORE_OUTGOING`` for ``CaptureDirection.IN`` (the default of ``pktchain
  pipe read``), so a pipe never reads back what this host, or a ``pktchain pipe
  write`` on the same interface, sends out of it; ``INOUT`` is tcpdump's view;
* promiscuous mode through ``PACKET_ADD_MEMBERSHIP``, which the kernel undoes
  when the socket closes;
* ``PACKET_STATISTICS``: how many frames the kernel dropped because the
  socket buffer was full (the reader was held up by a slow consumer).

The AF_PACKET constants the node's ports already use come from
:mod:`pktchain.node.dataplane.ports`, the virtio-net header's layout and the checksum
completion from :mod:`pktchain.packet`.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import time
from enum import Enum
from typing import NamedTuple

from pktchain.linux.packet import (
    ETH_P_ALL,
    PACKET_AUXDATA,
    PACKET_IGNORE_OUTGOING,
    PACKET_STATISTICS,
    PACKET_VNET_HDR,
    SOL_PACKET,
    set_promiscuous,
)
from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.packet.checksum import complete_partial_checksum
from pktchain.packet.headers import VIRTIO_NET_HDR, EtherType
from pktchain.packet.streams import ETHERNET_HEADER_LEN, MAX_FRAME, Frame
from pktchain.pipe.iface import InterfaceError, open_packet_socket

__all__ = ["DEFAULT_BUFFER_SIZE", "Capture", "CaptureDirection", "CaptureStats"]

# linux/if_packet.h: the auxiliary data of a received frame.
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
# VIRTIO_NET_HDR_F_NEEDS_CSUM (linux/virtio_net.h). pktchain.packet.virtio names it
# too, but importing that module loads the whole frame parser: 5 ms of start-up.
_NEEDS_CSUM = 1

DEFAULT_BUFFER_SIZE = 2 * 1024 * 1024
"""Socket receive buffer: tcpdump's default (-B 2048)."""

_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUXDATA.size)
_VNET = VNET_HDR_LEN
_VNET_UNPACK = VIRTIO_NET_HDR.struct.unpack_from
_VLAN_TAG = struct.Struct("!HH")


class CaptureDirection(Enum):
    """Which frames of an interface a capture reads, named as tcpdump's -Q."""

    IN = "in"  # received by the interface
    OUT = "out"  # sent out of it, by this host or by another packet socket
    INOUT = "inout"


class CaptureStats(NamedTuple):
    """The kernel's count for a capture socket (``PACKET_STATISTICS``)."""

    received: int  # frames that reached the socket, the dropped ones included
    dropped: int  # frames lost because the socket buffer was full


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
        direction: CaptureDirection = CaptureDirection.IN,
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
        sock = open_packet_socket(ifname, "capture")
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            if direction is CaptureDirection.IN:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self._kernel_time = True
            except OSError:
                self._kernel_time = False  # another ABI: stamp frames on receipt
            self._set_buffer(sock, buffer_size)
            if promiscuous:
                set_promiscuous(sock, ifname)
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
        if self.direction is CaptureDirection.OUT and address[2] != socket.PACKET_OUTGOING:
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
        vnet_flags, gso_type, _, _, csum_start, csum_offset = _VNET_UNPACK(buf)
        if vnet_flags & _NEEDS_CSUM:
            # A frame cut short (larger than the buffer) cannot be summed: left as it came.
            with contextlib.suppress(ValueError):
                complete_partial_checksum(buf, csum_start, csum_offset, base=_VNET, end=size)
        if gso_type:  # VIRTIO_NET_HDR_GSO_NONE is 0
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
