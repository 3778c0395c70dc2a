"""The NAPT's tables: mappings (RFC 4787 §4.1) and the sessions that use them.

A :class:`Mapping` binds an internal endpoint (protocol, address, port or ICMP
identifier) to an external port of the NAT's one external address; it is
endpoint-independent (RFC 4787 REQ-1, RFC 5382 REQ-1): every session of the
internal endpoint, whatever its destination, uses it. A :class:`Session` is
one conversation on a mapping with one remote endpoint; it carries the timer
and, for TCP, the state of :mod:`pktchain.functions.common.tcp`. A dynamic mapping
lives as long as one of its sessions does (RFC 7857 §11); a static one (a port
forwarding rule) until it is removed. A :class:`SessionRecord` is a session as
another NAT needs it to translate the same packets the same way (a backup
router's copy, docs/ha-sync.md).

Both classes use ``__slots__`` and share the address objects of their keys, so
that a session costs a few hundred bytes (see docs/nat-conformance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pktchain.functions.common.tcp import TcpSessionState
from pktchain.packet.address import format_ip
from pktchain.packet.headers import IpProto

__all__ = [
    "SYNCED",
    "InboundKey",
    "Mapping",
    "MappingEntry",
    "Session",
    "SessionEntry",
    "SessionKey",
    "SessionRecord",
    "SessionRefusal",
]

SessionKey = tuple[int, bytes, int, bytes, int]
"""(protocol, internal address, internal port, remote address, remote port)."""

InboundKey = tuple[int, int, bytes, int]
"""(protocol, external port, remote address, remote port): how an inbound packet
finds the session (the external address is the NAT's one)."""

SYNCED = 1 << 62
"""``Session.expires`` and ``Session.queued`` of a session copied from another NAT
(:meth:`~pktchain.functions.nat.napt.Nat.install_session`): on no timer of this
NAT, which does not age it; it goes when its master says so, or gets a timer
when this NAT takes it over."""


class Mapping:
    """Internal endpoint → external port of the NAT's address."""

    __slots__ = (
        "external_port",
        "internal_address",
        "internal_port",
        "proto",
        "sessions",
        "static",
    )

    def __init__(
        self,
        proto: int,
        internal_address: bytes,
        internal_port: int,
        external_port: int,
        static: bool,
    ) -> None:
        self.proto = proto
        self.internal_address = internal_address
        self.internal_port = internal_port
        self.external_port = external_port
        self.static = static
        self.sessions = 0

    def __repr__(self) -> str:
        kind = "static" if self.static else "dynamic"
        return (
            f"Mapping({IpProto(self.proto).name} {format_ip(self.internal_address)}:"
            f"{self.internal_port} -> :{self.external_port}, {kind}, {self.sessions} sessions)"
        )


class Session:
    """One conversation of a mapping with one remote endpoint.

    ``expires`` is a whole second of the NAT's clock (rounded up, so a session
    never lives less than its timeout), -1 once the session is removed, or
    :data:`SYNCED` for a copy of another NAT's session that no timer ages;
    ``queued`` is the timer bucket where it waits.
    """

    __slots__ = ("cache_in", "cache_out", "expires", "key", "mapping", "queued", "state")

    def __init__(self, key: SessionKey, mapping: Mapping, state: TcpSessionState | None) -> None:
        self.key = key
        self.mapping = mapping
        self.state = state
        self.expires = 0
        self.queued = 0
        # Set by the router when it forwards a packet of that direction that a
        # flow lease could cover (functions/router/leases.py: a flow is leased
        # from its second packet); the NAT itself never reads them.
        self.cache_out: object = None
        self.cache_in: object = None

    @property
    def alive(self) -> bool:
        """False once the session expired or was removed: evict cached flows using it."""
        return self.expires >= 0

    @property
    def remote(self) -> tuple[bytes, int]:
        """The remote endpoint (address, port or 0 for ICMP)."""
        return self.key[3], self.key[4]

    def __repr__(self) -> str:
        state = self.state.value if self.state is not None else "-"
        return (
            f"Session({self.mapping!r} <-> {format_ip(self.key[3])}:{self.key[4]}, "
            f"{state}, expires {self.expires})"
        )


@dataclass(frozen=True, slots=True)
class MappingEntry:
    """A row of the NAT table as listed to people and the API."""

    proto: IpProto
    internal_address: str
    internal_port: int
    external_address: str
    external_port: int
    static: bool
    sessions: int


@dataclass(frozen=True, slots=True)
class SessionEntry:
    """A row of the session table as listed to people and the API."""

    proto: IpProto
    internal_address: str
    internal_port: int
    external_port: int
    remote_address: str
    remote_port: int
    state: TcpSessionState | None
    expires: int


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as another NAT needs it: both directions' keys, its mapping, its TCP state.

    The internal endpoint and the remote endpoint make the outbound key
    (:attr:`key`); the external port and the remote endpoint the inbound one
    (:attr:`inbound_key`). The mapping is the external port of the internal
    endpoint (dynamic, or the port forward holding that port); the filtering
    state (which remote addresses a mapping has sessions with) follows from the
    sessions. The timer is not part of it: the copy's timer restarts when it is
    taken over, with the lifetime of its state (``ARMED_LIFETIME``).
    """

    proto: int
    """IP protocol number: TCP, UDP or ICMP (echo)."""
    internal_address: bytes
    internal_port: int
    """The port, or the ICMP echo identifier."""
    remote_address: bytes
    remote_port: int
    """The port, 0 for ICMP echo."""
    external_port: int
    """The mapping's port (or echo identifier) on the NAT's external address."""
    state: TcpSessionState | None
    """The TCP session state (RFC 6146 §3.5.2); None for UDP and ICMP."""

    @property
    def key(self) -> SessionKey:
        """The outbound key (the session table's)."""
        return (
            self.proto,
            self.internal_address,
            self.internal_port,
            self.remote_address,
            self.remote_port,
        )

    @property
    def inbound_key(self) -> InboundKey:
        """The inbound key: what a reply from the remote endpoint carries."""
        return (self.proto, self.external_port, self.remote_address, self.remote_port)


class SessionRefusal(StrEnum):
    """Why a NAT did not install a :class:`SessionRecord`."""

    PROTOCOL = "session-protocol"
    """Not TCP, UDP or ICMP."""
    STATE = "session-state"
    """A TCP session without a state, or a state for another protocol."""
    NOT_INTERNAL = "session-not-internal"
    """The internal address is not in this NAT's internal networks."""
    PORT_CONFLICT = "session-port-conflict"
    """A port forward of this NAT holds the external port for another endpoint."""
    SESSION_LIMIT = "session-limit"
    """This NAT's table is full (``max_sessions``)."""
