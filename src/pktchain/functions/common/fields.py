"""Values that several functions take in their configuration: directions, protocols, MACs.

* :class:`Direction` says which of a bump in the wire's interfaces a setting
  applies to, by the interface a packet came in on (the firewall's rules, the
  mirror's copies, the rate limiter's buckets);
* :data:`PROTOCOLS` is the one table of IP protocol names, read by
  :func:`protocol_number` (configuration, control calls) and written by
  :func:`protocol_name` (status, records);
* :func:`mac_error` checks a MAC address given as text, the way every
  function reports it.
"""

from __future__ import annotations

from enum import Enum

from pktchain.packet.address import mac_bytes
from pktchain.packet.headers import IpProto

__all__ = [
    "PORTED",
    "PROTOCOLS",
    "Direction",
    "mac_error",
    "ported_protocol",
    "protocol_name",
    "protocol_number",
]


class Direction(Enum):
    """Which packets a setting applies to, by the interface they came in on."""

    INGRESS = "ingress"
    """Packets that came in on ``ingress`` (on their way to ``egress``)."""
    EGRESS = "egress"
    """Packets that came in on ``egress`` (the return traffic)."""
    ANY = "any"
    """Packets from either interface."""
    BOTH = "any"
    """Another name of ``ANY``: configurations may say ``both``."""

    @classmethod
    def _missing_(cls, value: object) -> Direction | None:
        return cls.ANY if value == "both" else None


PROTOCOLS: dict[str, int] = {
    **{protocol.name.lower(): int(protocol) for protocol in IpProto},
    "ipv6-icmp": int(IpProto.ICMPV6),  # IANA's keyword for 58
}
"""IP protocol numbers by name (IANA "Assigned Internet Protocol Numbers", lower case)."""

_NAMES = {number: name for name, number in reversed(PROTOCOLS.items())}

PORTED = frozenset((int(IpProto.TCP), int(IpProto.UDP)))
"""The protocols with ports (what a port forward or a port match names)."""


def protocol_number(value: str | int | None) -> int | None:
    """The IP protocol number for a name (``tcp``, ``icmpv6``...) or a number; None for any.

    Raises ValueError, saying what is accepted, for an unknown name or a number
    out of 0..255.
    """
    if value is None:
        return None
    if isinstance(value, int):
        if not 0 <= value <= 255:
            raise ValueError(f"protocol {value} is not in 0..255")
        return value
    number = PROTOCOLS.get(value.lower())
    if number is None:
        raise ValueError(f"{value!r} is not a protocol: use 0-255 or one of {', '.join(PROTOCOLS)}")
    return number


def protocol_name(number: int) -> str:
    """The name of protocol `number` (``tcp``), or the number as text when it has none."""
    return _NAMES.get(number, str(number))


def ported_protocol(name: str) -> IpProto | None:
    """TCP or UDP by name, in any case; None for anything else."""
    number = PROTOCOLS.get(name.lower())
    return IpProto(number) if number in PORTED else None


def mac_error(value: str | None, *, unicast: bool = False) -> str | None:
    """What is wrong with the MAC address `value` (None: nothing, or no value given).

    With `unicast`, the address must name one station: neither a group address
    (the I/G bit of the first octet set, IEEE 802 §8.2) nor all zeros.
    """
    if value is None:
        return None
    try:
        mac = mac_bytes(value)
    except (ValueError, TypeError, AttributeError):
        return f"not a MAC address: {value!r}"
    if unicast and mac[0] & 1:
        return f"{value} is a multicast address; give a unicast MAC"
    if unicast and mac == bytes(6):
        return "the all-zero MAC is not an address"
    return None
