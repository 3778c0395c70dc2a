"""Addresses as they travel in packets: MACs and IP addresses as raw bytes.

Views, parse results and flow keys carry addresses as ``bytes`` (6 for a MAC, 4
or 16 for an IP address): cheap to slice out of a frame, hashable, and compared
without conversion. This module converts them to and from the usual text forms
for builders, configuration and display.
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "Buffer",
    "IpLike",
    "MacLike",
    "WritableBuffer",
    "format_ip",
    "format_mac",
    "ip_bytes",
    "mac_bytes",
]

Buffer = bytes | bytearray | memoryview
"""Anything a frame can be read from without a copy."""

WritableBuffer = bytearray | memoryview
"""A frame that can be rewritten in place."""

MacLike = str | bytes
"""A MAC as ``"02:00:00:00:00:01"`` (``-`` also accepted) or 6 raw bytes."""

IpLike = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address
"""An IP address as text, 4/16 raw bytes or an :mod:`ipaddress` object."""


def mac_bytes(mac: MacLike) -> bytes:
    """The 6 bytes of ``mac``; raises ValueError for anything else."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ValueError(f"a MAC address is 6 bytes, got {len(mac)}")
        return mac
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {mac!r}") from None


def format_mac(mac: bytes) -> str:
    """``"02:00:00:00:00:01"`` for 6 raw bytes."""
    return mac.hex(":")


def ip_bytes(ip: IpLike) -> bytes:
    """The 4 or 16 bytes of ``ip``; raises ValueError for anything else."""
    if isinstance(ip, bytes):
        if len(ip) not in (4, 16):
            raise ValueError(f"an IP address is 4 or 16 bytes, got {len(ip)}")
        return ip
    if isinstance(ip, str):
        return ipaddress.ip_address(ip).packed
    return ip.packed


def format_ip(ip: bytes) -> str:
    """Text form of a 4- or 16-byte address (RFC 5952 for IPv6)."""
    return str(ipaddress.ip_address(ip))
