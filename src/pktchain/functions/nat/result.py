"""What the NAPT answers for each packet: a verdict, a reason, and whether its flow may be leased.

A :class:`NatResult` is one of three things:

* ``TRANSLATED``: the packet was rewritten in place; ``rewrite`` states the
  rewrite as new (address, port) pairs, the same for every packet of the flow
  while its session lasts, and ``session`` is the NAT session to refresh
  through :meth:`~pktchain.functions.nat.napt.Nat.touch` for the packets a
  flow lease let skip the NAT;
* ``DROPPED``: the packet must not be forwarded; ``reason`` says why;
* ``REPLY``: the packet is refused and ``reply`` holds a complete IPv4 packet
  (an ICMP error) to send toward ``reply_to`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import TYPE_CHECKING

from pktchain.functions.common.embedded import Unusable

if TYPE_CHECKING:
    from pktchain.functions.nat.table import Session

__all__ = ["DropReason", "Endpoint", "FlowRewrite", "NatResult", "NatVerdict", "Realm"]

Endpoint = tuple[bytes, int]
"""An IPv4 address (4 bytes) and a port (or ICMP query identifier)."""


class NatVerdict(Enum):
    """What the caller does with the packet."""

    TRANSLATED = "translated"
    DROPPED = "dropped"
    REPLY = "reply"


class Realm(Enum):
    """A side of the NAT: where a reply goes."""

    INTERNAL = "internal"
    EXTERNAL = "external"


class DropReason(StrEnum):
    """Why a packet was not translated; stable names, used as counter names.

    The reasons about the datagram quoted in an ICMP error are those of
    :class:`~pktchain.functions.common.embedded.Unusable`, by value.
    """

    MALFORMED = "malformed"
    NOT_IPV4 = "not-ipv4"
    FRAGMENT = "fragment"  # the NAT core needs an L4 header: the router tracks fragments for it
    UNSUPPORTED_PROTOCOL = "unsupported-protocol"
    UNSUPPORTED_ICMP = Unusable.UNSUPPORTED.value
    LOCAL_DESTINATION = "local-destination"  # an echo request for the NAT's own address
    NOT_INTERNAL_SOURCE = "not-internal-source"
    NOT_EXTERNAL_DESTINATION = "not-external-destination"
    BAD_PORT = "bad-port"
    NO_MAPPING = "no-mapping"
    FILTERED = "filtered"
    TCP_NO_SESSION = "tcp-no-session"
    SYN_HELD = "syn-held"  # RFC 5382 REQ-4: kept, answered later or dropped
    SYN_HOLD_FULL = "syn-hold-full"
    SESSION_LIMIT = "session-limit"
    HOST_SESSION_LIMIT = "host-session-limit"
    HOST_SESSION_RATE = "host-session-rate"  # over new_sessions_per_host_rate: refused silently
    PORTS_EXHAUSTED = "ports-exhausted"
    ICMP_CHECKSUM = "icmp-checksum"  # RFC 5508 REQ-3
    EMBEDDED_CHECKSUM = Unusable.CHECKSUM.value  # RFC 5508 REQ-3a
    EMBEDDED_MALFORMED = Unusable.MALFORMED.value


@dataclass(frozen=True, slots=True)
class FlowRewrite:
    """The translation of one direction of a flow (the packet's own 5-tuple).

    The source and/or destination become the pairs below, the port being the
    ICMP identifier for echo: outbound flows change the source, inbound flows
    the destination, hairpinned flows both. Two packets of a flow with equal
    rewrites were translated alike (what a flow lease made for the first relies on).
    """

    proto: int
    src: Endpoint | None
    dst: Endpoint | None


@dataclass(frozen=True, slots=True)
class NatResult:
    """The outcome of one packet (see the module docstring)."""

    verdict: NatVerdict
    reason: DropReason | None = None
    rewrite: FlowRewrite | None = None
    session: Session | None = None
    cacheable: bool = False
    """True when later packets of this flow may skip the NAT (the cache must still
    hand TCP segments with SYN, FIN or RST back to it)."""
    reply: bytes | None = None
    reply_to: Realm | None = None

    @property
    def translated(self) -> bool:
        """Shorthand for ``verdict is NatVerdict.TRANSLATED``."""
        return self.verdict is NatVerdict.TRANSLATED
