"""Flow keys: the 5-tuple that the flow cache, NAT and load balancing hash on.

A :class:`FlowKey` is a plain tuple of raw addresses and integers, so building,
hashing and comparing one costs a few hundred nanoseconds. It comes straight
from a :class:`~pktchain.packet.parse.FrameInfo`, which already holds the
addresses and ports that parsing read (VLAN tags are skipped; ICMP and ICMPv6
echo use the identifier as both ports, so that a request's reversed key is its
reply's key; other protocols have ports 0).
"""

from __future__ import annotations

from typing import NamedTuple

from pktchain.packet.address import format_ip
from pktchain.packet.parse import FLOW_END, FLOW_START, FrameInfo

__all__ = ["FlowKey", "flow_key"]

_new = tuple.__new__


class FlowKey(NamedTuple):
    """(src ip, dst ip, protocol, src port, dst port), addresses as 4 or 16 raw bytes."""

    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int

    def reverse(self) -> FlowKey:
        """The key of the other direction of the same flow."""
        key: FlowKey = _new(FlowKey, (self.dst, self.src, self.proto, self.dport, self.sport))
        return key

    def canonical(self) -> FlowKey:
        """The same key for both directions: the one whose (src, sport) is the smaller end."""
        if (self.src, self.sport) <= (self.dst, self.dport):
            return self
        return self.reverse()

    @property
    def ip_version(self) -> int:
        """4 or 6, from the address length."""
        return 4 if len(self.src) == 4 else 6

    def __str__(self) -> str:
        src, dst = format_ip(self.src), format_ip(self.dst)
        if self.ip_version == 6:
            src, dst = f"[{src}]", f"[{dst}]"
        return f"{src}:{self.sport} -> {dst}:{self.dport} proto {self.proto}"


# FrameInfo keeps src, dst, proto, sport, dport side by side, so a key is one slice.
if FrameInfo._fields[FLOW_START:FLOW_END] != FlowKey._fields:  # pragma: no cover
    raise ImportError("FrameInfo no longer holds the flow fields in FlowKey order")


def flow_key(info: FrameInfo) -> FlowKey | None:
    """The 5-tuple of a parsed IP frame, or None for a frame that is not IP or is malformed.

    A non-first fragment has no ports: its key has ports 0, like a protocol without ports.
    """
    if info.error is not None or not info.ip_version:
        return None
    key: FlowKey = _new(FlowKey, info[FLOW_START:FLOW_END])
    return key
