"""Packet sockets (``AF_PACKET``, packet(7)): the options pktchain sets on them.

The node's AF_PACKET ports and ``pktchain pipe read`` open raw packet sockets
on existing interfaces with the same options: ``PACKET_VNET_HDR`` (a
``virtio_net_hdr`` before each frame, so that GSO frames pass intact and a
partial checksum is flagged), ``PACKET_IGNORE_OUTGOING`` (the socket does not
see its own transmissions) and promiscuous mode through
``PACKET_ADD_MEMBERSHIP`` (the kernel undoes it when the socket closes, unlike
the interface's own flag). The constants are those of linux/if_packet.h and
linux/if_ether.h.
"""

from __future__ import annotations

import socket
import struct

__all__ = [
    "ETH_P_ALL",
    "PACKET_ADD_MEMBERSHIP",
    "PACKET_AUXDATA",
    "PACKET_IGNORE_OUTGOING",
    "PACKET_MR_PROMISC",
    "PACKET_STATISTICS",
    "PACKET_VNET_HDR",
    "SOL_PACKET",
    "set_promiscuous",
]

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
ETH_P_ALL = 0x0003

# struct packet_mreq { int mr_ifindex; u16 mr_type; u16 mr_alen; u8 mr_address[8]; }
_PACKET_MREQ = struct.Struct("iHH8s")


def set_promiscuous(sock: socket.socket, ifname: str) -> None:
    """Put `ifname` in promiscuous mode for as long as `sock` is open."""
    ifindex = socket.if_nametoindex(ifname)
    mreq = _PACKET_MREQ.pack(ifindex, PACKET_MR_PROMISC, 0, b"")
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
