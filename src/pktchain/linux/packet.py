"""Packet sockets (``AF_PACKET``, packet(7)): the options pktchain sets on them.

The node's AF_PACKET ports and ``pktchain pipe read`` open raw packet sockets
on existing interfaces with the same options: ``PACKET_VNET_HDR`` (a
``virtio_net_hdr`` before each frame, so that GSO frames pass intact and a
partial checksum is flagged), ``PACKET_IGNORE_OUTGOING`` (the socket does not
see its own transmissions) and promiscuous mode through
``PACKET_ADD_MEMBERSHIP`` (the kernel undoes it when the socket closes, unlike
the interface's own flag). The constants are those of linux/if_packet.h and
linux/if_ether.h.

The kernel takes an 802.1Q tag out of a frame it receives into the packet's
metadata before any packet socket sees the frame; ``PACKET_AUXDATA`` hands it
back beside the frame (`struct tpacket_auxdata`, declared here as words of
the control message that carries it), so that the frame can be read as it
was on the wire.
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
    "TP_STATUS_VLAN_TPID_VALID",
    "TP_STATUS_VLAN_VALID",
    "AuxData",
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

TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_8021Q = 0x8100


class AuxData:
    """Where a ``PACKET_AUXDATA`` control message's fields are, in 32-bit words.

    struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } (16
    bytes on 64-bit Linux), then struct tpacket_auxdata { u32 tp_status;
    u32 tp_len; u32 tp_snaplen; u16 tp_mac; u16 tp_net; u16 tp_vlan_tci;
    u16 tp_vlan_tpid; }.
    """

    SPACE = 40
    """CMSG_SPACE(sizeof(struct tpacket_auxdata)): the room one message needs."""
    LEVEL = 2
    TYPE = 3
    STATUS = 4
    VLAN = 8
    """tp_vlan_tci in the low 16 bits, tp_vlan_tpid in the high (little-endian)."""


# struct packet_mreq { int mr_ifindex; u16 mr_type; u16 mr_alen; u8 mr_address[8]; }
_PACKET_MREQ = struct.Struct("iHH8s")


def set_promiscuous(sock: socket.socket, ifname: str) -> None:
    """Put `ifname` in promiscuous mode for as long as `sock` is open."""
    ifindex = socket.if_nametoindex(ifname)
    mreq = _PACKET_MREQ.pack(ifindex, PACKET_MR_PROMISC, 0, b"")
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
