"""What a function sends back when it refuses a packet: a TCP RST or an ICMP unreachable.

The answer goes back out of the interface the packet came in on, as a frame
from the station the packet was sent to (the MAC addresses swapped, any VLAN
tags kept) and from the address it was sent to: a firewall (a bump in the wire
without an address of its own) answers as the host would, and a function that
owns the address (the load balancer's VIP) answers as itself. The firewall,
the NAT function and the load balancer use it.

* TCP gets a reset built as RFC 9293 §3.10.7.1 (a segment that reaches a
  CLOSED port) says: if the offending segment has ACK, ``<SEQ=SEG.ACK><CTL=RST>``,
  otherwise ``<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>``; a RST is never
  answered.
* Anything else gets an ICMP destination unreachable (RFC 792) or ICMPv6
  destination unreachable (RFC 4443 §3.1) of the configured kind, quoting as
  much of the packet as RFC 1812 §4.3.2.3 (576 bytes) or RFC 4443 §2.4 (c)
  (1280 bytes) allow, and only when RFC 1812 §4.3.2.7 / RFC 4443 §2.4 (e)
  allow an error at all (not about an error, not to or from a multicast or
  broadcast address, not about a later fragment).
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from pktchain.packet.headers import ETHERNET, IPV6, Icmpv6Type, IpProto, TcpFlag
from pktchain.packet.parse import FrameInfo

if TYPE_CHECKING:
    from pktchain.packet.layers import Ipv4, Ipv6

# The builders (pktchain.packet.layers and the modules that use them) are
# imported when a first answer is made: a firewall that never rejects, and
# every `pktchain fn` start, do without them.

__all__ = [
    "MAX_ICMPV6_ERROR",
    "RejectWith",
    "answer_header",
    "icmp_unreachable",
    "reply_allowed",
    "tcp_reset",
]

MAX_ICMPV6_ERROR = 1280
"""An ICMPv6 error must not exceed the minimum IPv6 MTU (RFC 4443 §2.4 (c))."""

_TTL = 64
_MAC = 6
_ETHERTYPE_AT = ETHERNET.offset("ethertype")
_ICMP = int(IpProto.ICMP)
_ICMPV6 = int(IpProto.ICMPV6)
_TCP = int(IpProto.TCP)
_FIN = int(TcpFlag.FIN)
_SYN = int(TcpFlag.SYN)
_RST = int(TcpFlag.RST)
_ACK = int(TcpFlag.ACK)
_UNREACHABLE = 3  # RFC 792
_REDIRECT = 137  # RFC 4861 §4.5
_V6_QUOTE = MAX_ICMPV6_ERROR - IPV6.size - 8
_SEQ_SPACE = 1 << 32


class RejectWith(Enum):
    """The ICMP unreachable a reject sends for what is not TCP (TCP always gets a RST).

    Each value maps to an ICMP code (RFC 792, RFC 1812 §5.2.7.1) and an ICMPv6
    code (RFC 4443 §3.1).
    """

    ADMIN_PROHIBITED = "admin-prohibited"
    PORT_UNREACHABLE = "port-unreachable"
    HOST_UNREACHABLE = "host-unreachable"
    NET_UNREACHABLE = "net-unreachable"

    @property
    def codes(self) -> tuple[int, int]:
        """(ICMP code, ICMPv6 code)."""
        return _CODES[self]


_CODES = {
    # RFC 1812 §5.2.7.1: code 13 for packets a router filters out; RFC 4443 §3.1 code 1.
    RejectWith.ADMIN_PROHIBITED: (13, 1),
    RejectWith.PORT_UNREACHABLE: (3, 4),
    RejectWith.HOST_UNREACHABLE: (1, 3),  # ICMPv6: address unreachable
    RejectWith.NET_UNREACHABLE: (0, 0),  # ICMPv6: no route to destination
}


def reply_allowed(buf: bytes | bytearray, info: FrameInfo) -> bool:
    """Whether the rejected packet may be answered at all (see the module docstring)."""
    from pktchain.functions.common.icmp import error_allowed, unique_host_address

    l2 = info.l2
    if l2 < 0 or buf[l2] & 1:
        return False  # sent to a link-layer group address (RFC 1812 §4.3.2.7)
    if info.proto == _TCP and info.l4 >= 0:
        if info.tcp_flags & _RST:
            return False  # RFC 9293 §3.10.7.1: a RST is discarded, never answered
        if info.ip_version == 4:
            return unique_host_address(info.src) and unique_host_address(info.dst)
        return _v6_unicast(info.src) and _v6_unicast(info.dst)
    if info.ip_version == 4:
        return error_allowed(buf, info.l3, info.end, link_broadcast=False)
    if info.l4 < 0 and info.fragment:
        return False  # only the first fragment names what it carries
    if not (_v6_unicast(info.src) and _v6_unicast(info.dst)):
        return False  # RFC 4443 §2.4 (e.3), (e.5)
    if info.proto == _ICMPV6 and info.l4 >= 0:
        icmp_type = buf[info.l4]
        # RFC 4443 §2.4 (e.1), (e.2): not about an error, nor about a redirect.
        return icmp_type >= 128 and icmp_type != _REDIRECT
    return True


def _v6_unicast(address: bytes) -> bool:
    """Not the unspecified address (::) and not multicast (ff00::/8)."""
    return address[0] != 0xFF and any(address)


def answer_header(buf: bytes | bytearray, info: FrameInfo) -> bytes:
    """The Ethernet header of an answer to the frame ``info``: back to its sender.

    The MAC addresses swapped, any VLAN tags and the EtherType kept, so that a
    bump in the wire answers as the station the frame was sent to.
    """
    l2 = info.l2
    return (
        bytes(buf[l2 + _MAC : l2 + 2 * _MAC])
        + bytes(buf[l2 : l2 + _MAC])
        + bytes(buf[l2 + _ETHERTYPE_AT : info.l3])
    )


def _ip(info: FrameInfo) -> Ipv4 | Ipv6:
    from pktchain.packet.layers import Ipv4, Ipv6

    if info.ip_version == 4:
        return Ipv4(src=info.dst, dst=info.src, ttl=_TTL)
    return Ipv6(src=info.dst, dst=info.src, hop_limit=_TTL)


def tcp_reset(buf: bytes | bytearray, info: FrameInfo) -> bytes:
    """The RST (an Ethernet frame) answering the TCP segment ``info`` (RFC 9293 §3.10.7.1)."""
    from pktchain.packet.layers import Tcp, build
    from pktchain.packet.views import TcpView

    tcp = TcpView(buf, info.l4)
    flags = tcp.flags
    if flags & _ACK:
        seq, ack, control = tcp.ack, 0, _RST
    else:
        # SEG.LEN counts the payload, and one each for SYN and FIN (§3.4).
        length = info.end - info.payload + bool(flags & _SYN) + bool(flags & _FIN)
        seq, ack, control = 0, (tcp.seq + length) % _SEQ_SPACE, _RST | _ACK
    segment = Tcp(sport=info.dport, dport=info.sport, seq=seq, ack=ack, flags=control, window=0)
    return answer_header(buf, info) + build(_ip(info), segment)


def icmp_unreachable(buf: bytes | bytearray, info: FrameInfo, kind: RejectWith) -> bytes:
    """The ICMP / ICMPv6 destination unreachable (an Ethernet frame) answering ``info``."""
    from pktchain.functions.common.embedded import build_icmp_error
    from pktchain.packet.layers import Icmpv6, build

    code_v4, code_v6 = kind.codes
    if info.ip_version == 4:
        packet = build_icmp_error(
            buf, info.l3, info.end, icmp_type=_UNREACHABLE, code=code_v4, source=info.dst
        )
    else:
        quoted = bytes(buf[info.l3 : min(info.end, info.l3 + _V6_QUOTE)])
        packet = build(_ip(info), Icmpv6(type=Icmpv6Type.DEST_UNREACHABLE, code=code_v6), quoted)
    return answer_header(buf, info) + packet
