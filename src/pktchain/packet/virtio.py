"""The ``virtio_net_hdr`` that TAP (``IFF_VNET_HDR``) and AF_PACKET (``PACKET_VNET_HDR``) add.

With vnet headers the kernel hands the node whole GSO frames (up to 64 KB) and
may leave their L4 checksum partial (``VIRTIO_NET_HDR_F_NEEDS_CSUM``, Linux
``CHECKSUM_PARTIAL``); the node reads this header before each frame and writes
one before each frame it sends. The layout is
:data:`pktchain.packet.headers.VIRTIO_NET_HDR`.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import NamedTuple

from pktchain.packet.address import Buffer, WritableBuffer
from pktchain.packet.checksum import complete_partial_checksum
from pktchain.packet.headers import L4_CHECKSUM_OFFSET, VIRTIO_NET_HDR
from pktchain.packet.parse import FrameInfo

__all__ = [
    "NO_OFFLOAD",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_GSO_ECN",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_GSO_UDP",
    "VIRTIO_NET_HDR_GSO_UDP_L4",
    "VIRTIO_NET_HDR_LEN",
    "GsoType",
    "VirtioNetFlag",
    "VirtioNetHdr",
    "complete_checksum",
    "needs_csum_header",
    "parse_virtio_net_hdr",
]


class VirtioNetFlag(IntFlag):
    """``virtio_net_hdr.flags`` (linux/virtio_net.h)."""

    NEEDS_CSUM = 1  # L4 checksum is partial: complete it from csum_start
    DATA_VALID = 2  # checksum already verified (receive side)
    RSC_INFO = 4


class GsoType(IntEnum):
    """``virtio_net_hdr.gso_type`` without the ECN bit (linux/virtio_net.h)."""

    NONE = 0
    TCPV4 = 1
    UDP = 3  # UFO, IPv4/IPv6 fragmentation offload
    TCPV6 = 4
    UDP_L4 = 5  # USO, UDP segmentation offload


VIRTIO_NET_HDR_F_NEEDS_CSUM = int(VirtioNetFlag.NEEDS_CSUM)
VIRTIO_NET_HDR_F_DATA_VALID = int(VirtioNetFlag.DATA_VALID)
VIRTIO_NET_HDR_GSO_NONE = int(GsoType.NONE)
VIRTIO_NET_HDR_GSO_TCPV4 = int(GsoType.TCPV4)
VIRTIO_NET_HDR_GSO_UDP = int(GsoType.UDP)
VIRTIO_NET_HDR_GSO_TCPV6 = int(GsoType.TCPV6)
VIRTIO_NET_HDR_GSO_UDP_L4 = int(GsoType.UDP_L4)
VIRTIO_NET_HDR_GSO_ECN = 0x80
VIRTIO_NET_HDR_LEN = VIRTIO_NET_HDR.size

_STRUCT = VIRTIO_NET_HDR.struct
_new = tuple.__new__


class VirtioNetHdr(NamedTuple):
    """One ``struct virtio_net_hdr``, field for field."""

    flags: int = 0
    gso_type: int = 0
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def needs_csum(self) -> bool:
        """True when the L4 checksum field holds a seed to complete (CHECKSUM_PARTIAL)."""
        return bool(self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)

    @property
    def gso(self) -> GsoType | None:
        """The segmentation type without the ECN bit, or None if unknown."""
        try:
            return GsoType(self.gso_type & ~VIRTIO_NET_HDR_GSO_ECN)
        except ValueError:
            return None

    def pack(self) -> bytes:
        """The 10 wire bytes (little-endian, as the kernel reads them)."""
        return _STRUCT.pack(*self)


NO_OFFLOAD = VirtioNetHdr()
"""The header of a frame with a complete checksum and no segmentation (all zero)."""


def parse_virtio_net_hdr(buf: Buffer, offset: int = 0) -> VirtioNetHdr | None:
    """The header at ``offset``, or None if fewer than 10 bytes are there."""
    if offset < 0 or len(buf) - offset < VIRTIO_NET_HDR_LEN:
        return None
    result: VirtioNetHdr = _new(VirtioNetHdr, _STRUCT.unpack_from(buf, offset))
    return result


def needs_csum_header(info: FrameInfo, gso_type: int = 0, gso_size: int = 0) -> VirtioNetHdr:
    """The header for a frame whose L4 checksum field holds the pseudo-header seed.

    ``csum_start`` is the L4 header, from the frame start; ``csum_offset`` the
    checksum field within it. For GSO, ``hdr_len`` covers every header up to the
    L4 payload. Raises ValueError for a frame without a TCP/UDP/ICMP header.
    """
    if info.error is not None or info.l4 < 0 or info.proto not in L4_CHECKSUM_OFFSET:
        raise ValueError("needs_csum_header needs a well-formed frame with an L4 checksum")
    hdr_len = info.payload - info.start if gso_type else 0
    return VirtioNetHdr(
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len,
        gso_size,
        info.l4 - info.start,
        L4_CHECKSUM_OFFSET[info.proto],
    )


def complete_checksum(buf: WritableBuffer, header: VirtioNetHdr, frame_offset: int = 0) -> bool:
    """Complete a ``NEEDS_CSUM`` frame's checksum in place; False if it did not need it.

    For a frame that leaves through a path without checksum offload (a pcap, a
    pipe, a socket without vnet headers). Raises ValueError if the header's
    offsets fall outside the frame.
    """
    if not header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return False
    complete_partial_checksum(buf, header.csum_start, header.csum_offset, base=frame_offset)
    return True
